import torch
import torch.nn as nn

from resnetbk.layers.common import AddRMSNorm
from resnetbk.models.feed_forward import feed_forward, make_feed_forward


class ShiftBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm1, self.norm2 = AddRMSNorm(cfg.d_model), AddRMSNorm(cfg.d_model)
        self.mix = nn.Linear(cfg.d_model, cfg.d_model)
        self.mix.is_residual_out = True
        self.moe, self.mlp = make_feed_forward(cfg)

    def forward(self, x, cache=None):
        """cache (inference): the last position's h, so that decoding continues the shift one token at a time."""
        x, h = self.norm1(x)
        first = cache["h"] if cache else h.new_zeros(h[:, :1].shape)  # h_{-1} = 0 before the first position
        previous = torch.cat([first, h[:, :-1]], dim=1)  # h_{i-1}
        if cache is not None:
            cache["h"] = h[:, -1:]
        x, h = self.norm2(x, self.mix(h + previous))
        y, balance_loss = feed_forward(self, h)
        return x + y, balance_loss

    def advance(self, x, cache):
        x, h = self.norm1(x)
        previous, cache["h"] = cache["h"], h[:, -1:]
        return x + self.mix(h + previous)

import torch.nn as nn
import torch.nn.functional as F

from resnetbk.layers.common import AddRMSNorm
from resnetbk.models.feed_forward import feed_forward, make_feed_forward


class ShiftBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm1, self.norm2 = AddRMSNorm(cfg.d_model), AddRMSNorm(cfg.d_model)
        self.mix = nn.Linear(cfg.d_model, cfg.d_model)
        self.mix.is_residual_out = True
        self.moe, self.mlp = make_feed_forward(cfg)

    def forward(self, x):
        x, h = self.norm1(x)
        previous = F.pad(h, (0, 0, 1, 0))[:, :-1]  # h_{i-1}, zero before the first position
        x, h = self.norm2(x, self.mix(h + previous))
        y, balance_loss = feed_forward(self, h)
        return x + y, balance_loss

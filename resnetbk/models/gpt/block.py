"""The GPT block: x + CausalSelfAttention(norm(x)), then x + feed_forward(norm(x)) (a dense MLP by default)."""

from __future__ import annotations

import torch.nn as nn

from ...layers.attention import CausalSelfAttention
from ...layers.common import AddRMSNorm
from ..feed_forward import feed_forward, make_feed_forward


class GPTBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm1, self.norm2 = AddRMSNorm(cfg.d_model), AddRMSNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.moe, self.mlp = make_feed_forward(cfg)

    def forward(self, x):
        x, h = self.norm1(x)
        x, h = self.norm2(x, self.attn(h))
        y, balance_loss = feed_forward(self, h)
        return x + y, balance_loss

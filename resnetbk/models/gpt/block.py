"""The GPT block: x + CausalSelfAttention(norm(x)), then x + feed_forward(norm(x)) (a dense MLP by default)."""

from __future__ import annotations

from typing import Optional

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

    def forward(self, x, cache: Optional[dict] = None):
        """x (B, N, d) -> (x, balance loss). cache: the mixer's inference state (models/decoder.py: prefill, decode)."""
        x, h = self.norm1(x)
        x, h = self.norm2(x, self.attn(h, cache))
        y, balance_loss = feed_forward(self, h)
        return x + y, balance_loss

    def advance(self, x, cache: dict):
        """Early exit: the skipped block's mixer still takes the position into its state (cache), so that the tokens
        after it see it; the feed-forward is skipped. Returns x plus the mixer's output."""
        x, h = self.norm1(x)
        return x + self.attn(h, cache)

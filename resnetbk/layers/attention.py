"""Causal self-attention through PyTorch's scaled_dot_product_attention (flash attention on a GPU)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.out.is_residual_out = True
        self.dropout = dropout

    def forward(self, x, cache: Optional[dict] = None):
        """x (B, N, d). cache (inference): {} to start one (a prefill of x), or the dict a previous call filled, whose
        keys and values x's N new positions attend to after their own (the KV cache, grown in place)."""
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        if cache is None or not cache:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:
            k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            past = k.shape[2] - N
            # Query i (at position past + i) sees keys 0..past + i.
            mask = torch.ones(N, k.shape[2], dtype=torch.bool, device=x.device).tril(past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if cache is not None:
            cache.update(k=k, v=v)
        return self.out(y.transpose(1, 2).reshape(B, N, D))

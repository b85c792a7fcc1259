"""GPT, the baseline: blocks of causal self-attention and, by default, a dense GELU MLP, with learned absolute
positions. This module registers the family's spec (torch-free); the block is resnetbk/models/gpt/block.py."""

from __future__ import annotations

from ..registry import ModelSpec, register


def check(m):
    if m.d_model % m.n_heads:
        return "model.n_heads", f"must divide model.d_model={m.d_model} for arch=gpt"
    return None


def mixer_params(m) -> int:
    d = m.d_model
    return (3 * d * d + 3 * d) + (d * d + d)  # qkv and the output projection


def mixer_matmul_params(m) -> int:
    return 4 * m.d_model * m.d_model


def mixing_flops(m, seq_len: int):
    """Causal attention's scores and values: 2 x 2 x d x (N + 1) / 2 per token and layer (the average causal context,
    as flash attention computes it); the backward costs two forwards."""
    forward = 2 * 2 * m.d_model * (seq_len + 1) / 2
    return forward, 2 * forward


SPEC = register(ModelSpec(
    name="gpt", label="GPT", block="resnetbk.models.gpt.block:GPTBlock", feed_forward="mlp", position_table=True,
    check=check, mixer_params=mixer_params, mixer_matmul_params=mixer_matmul_params, mixing_flops=mixing_flops))

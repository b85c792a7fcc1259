"""The blocks' feed-forward, chosen by model.feed_forward (or the family's own): the MoE or a dense MLP."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..layers.common import MLP
from ..layers.moe import DeepSpeedMoE, MoE
from .registry import uses_moe


def make_feed_forward(cfg) -> tuple:
    """(moe, mlp) for a block: one of them, and None for the other (the attribute names are checkpoint keys)."""
    if not uses_moe(cfg):
        return None, MLP(cfg.d_model, cfg.ffn_hidden, cfg.dropout)
    if cfg.moe_impl == "deepspeed":
        return DeepSpeedMoE(cfg.d_model, cfg.ffn_hidden, cfg.moe_experts, cfg.moe_top_k, cfg.moe_ep_size,
                            cfg.moe_capacity_factor, cfg.dropout), None
    return MoE(cfg.d_model, cfg.ffn_hidden, cfg.moe_experts, cfg.moe_top_k, cfg.n_layers, cfg.dropout), None


def feed_forward(block: nn.Module, h: torch.Tensor):
    """(output, balance loss) of the block's MoE or MLP (whose balance loss is 0)."""
    if block.moe is not None:
        return block.moe(h)
    return block.mlp(h), h.new_zeros((), dtype=torch.float32)

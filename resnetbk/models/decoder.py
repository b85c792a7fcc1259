"""The decoder every family shares: token embedding (plus learned positions where the family has a position table),
the family's blocks (resnetbk/models/registry.py), a final norm and an LM head tied to the embedding."""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.common import AddRMSNorm, Monitored, reduce_stats
from ..ops import device
from .registry import get, uses_moe


class LMOutput(NamedTuple):
    logits: torch.Tensor
    loss: torch.Tensor  # lm_loss + moe_balance_coef * balance_loss: what the optimizer sees
    lm_loss: torch.Tensor
    balance_loss: torch.Tensor


class CausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        spec = get(cfg.arch)
        block = spec.block_class()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.max_seq_len, cfg.d_model) if spec.position_table else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(block(cfg) for _ in range(cfg.n_layers))
        self.norm = AddRMSNorm(cfg.d_model)
        self.apply(self._init_weights)
        self.checkpoint_fn, self.checkpoint_interval = None, 0

    def enable_activation_checkpointing(self, checkpoint_fn, interval: int) -> None:
        """Recompute every `interval`-th block in backward: checkpoint_fn(block, x) is
        deepspeed.checkpointing.checkpoint (configured from the DeepSpeed JSON) or torch's equivalent."""
        self.checkpoint_fn, self.checkpoint_interval = checkpoint_fn, interval

    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2 initialisation; residual output projections scaled by 1/sqrt(2 * n_layers).
        if isinstance(module, nn.Linear):
            std = 0.02 / math.sqrt(2 * self.cfg.n_layers) if getattr(module, "is_residual_out", False) else 0.02
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, targets: Optional[torch.Tensor] = None):
        """tokens (B, N) -> logits (B, N, vocab); with targets (B, N), an LMOutput with the losses."""
        n = tokens.shape[1]
        if n > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {n} exceeds model.max_seq_len={self.cfg.max_seq_len}")
        x = self.embed(tokens)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(n, device=tokens.device))
        x = self.drop(x)
        balance_loss = x.new_zeros((), dtype=torch.float32)
        for i, block in enumerate(self.blocks):
            if self.checkpoint_fn is not None and self.training and i % self.checkpoint_interval == 0:
                x, block_balance = self.checkpoint_fn(block, x)
            else:
                x, block_balance = block(x)
            balance_loss = balance_loss + block_balance
        logits = F.linear(self.norm(x)[1], self.embed.weight)  # tied LM head
        if targets is None:
            return logits
        if device.uses_triton(logits):
            from ..ops.loss_triton import cross_entropy  # imports triton, which CPU-only installs need not have

            lm_loss = cross_entropy(logits.flatten(0, 1), targets.flatten())
        else:
            lm_loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        balance_loss = balance_loss / len(self.blocks)
        coef = self.cfg.moe_balance_coef if uses_moe(self.cfg) else 0.0
        return LMOutput(logits, lm_loss + coef * balance_loss, lm_loss, balance_loss)

    def _monitored(self) -> list:
        return [m for m in self.modules() if isinstance(m, Monitored)]

    def record_stats(self, on: bool) -> None:
        """Whether the next forwards record the monitored modules' statistics (layers.common.Monitored)."""
        for module in self._monitored():
            module.record_stats = on

    def stats(self) -> dict:
        """{(prefix, name): value} of the last recorded forward, reduced over layers; {} without monitored modules."""
        return reduce_stats(self._monitored())

    def expert_load(self) -> Optional[torch.Tensor]:
        """Share of routed slots per expert in the last forward, averaged over layers (None without MoE)."""
        loads = [b.moe.last_load for b in self.blocks if getattr(b, "moe", None) is not None]
        return torch.stack(loads).mean(0) if loads else None

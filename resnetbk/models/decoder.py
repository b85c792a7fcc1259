"""The decoder every family shares: token embedding (plus learned positions where the family has a position table),
the family's blocks (resnetbk/models/registry.py), a final norm and an LM head tied to the embedding."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.common import AddRMSNorm, Monitored, reduce_stats
from ..ops import device
from .registry import get, uses_moe


class LMOutput(NamedTuple):
    logits: torch.Tensor
    # lm_loss + moe_balance_coef * balance_loss + exit_loss_weight * exit_loss: what the optimizer sees
    loss: torch.Tensor
    lm_loss: torch.Tensor
    balance_loss: torch.Tensor
    exit_loss: torch.Tensor  # the language-model loss of this forward's early exit (0 without exits)


@dataclass
class DecodeState:
    """What incremental decoding carries from one step to the next: one cache per block (filled by the block's
    mixer), the next position, the batch size and the family that made it."""

    caches: list
    position: int
    batch: int
    arch: str
    layers: int = 0  # blocks run in full by the decode steps so far (fewer than steps x n_layers with early exits)
    steps: int = 0  # decode steps so far

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for c in self.caches for t in c.values() if t is not None)


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
        # Early exits: after block k (cfg.exit_layers) the tied head reads out through a norm of its own.
        self.exit_norms = nn.ModuleList(AddRMSNorm(cfg.d_model) for _ in cfg.exit_layers)
        self.exit_turn = 0  # which exit the next training forward trains: in turn, the same on every rank
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

    def _embed(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Token embeddings (plus learned positions start.. for families with a position table)."""
        n = tokens.shape[1]
        if self.pos_embed is not None and start + n > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {start + n} exceeds model.max_seq_len={self.cfg.max_seq_len} "
                             f"(the {get(self.cfg.arch).label} position table's length)")
        x = self.embed(tokens)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(start, start + n, device=tokens.device))
        return self.drop(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(x)[1], self.embed.weight)  # tied LM head

    def forward(self, tokens: torch.Tensor, targets: Optional[torch.Tensor] = None):
        """tokens (B, N) -> logits (B, N, vocab); with targets (B, N), an LMOutput with the losses. Families without a
        position table take any length."""
        x = self._embed(tokens)
        balance_loss = x.new_zeros((), dtype=torch.float32)
        exit_loss = x.new_zeros((), dtype=torch.float32)
        # One exit per training forward, in turn (the same on every rank: ZeRO-3 needs every rank to call the same
        # modules). Its logits are made right after its block, so that its activations can be freed.
        train_exit = targets is not None and self.training and len(self.exit_norms) > 0
        turn = self.exit_turn % max(len(self.exit_norms), 1)
        for i, block in enumerate(self.blocks):
            if self.checkpoint_fn is not None and self.training and i % self.checkpoint_interval == 0:
                x, block_balance = self.checkpoint_fn(block, x)
            else:
                x, block_balance = block(x)
            balance_loss = balance_loss + block_balance
            if train_exit and i + 1 == self.cfg.exit_layers[turn]:
                exit_loss = self._cross_entropy(F.linear(self.exit_norms[turn](x)[1], self.embed.weight), targets)
        logits = self._logits(x)
        if targets is None:
            return logits
        if train_exit:
            self.exit_turn += 1
        lm_loss = self._cross_entropy(logits, targets)
        balance_loss = balance_loss / len(self.blocks)
        coef = self.cfg.moe_balance_coef if uses_moe(self.cfg) else 0.0
        loss = lm_loss + coef * balance_loss + self.cfg.exit_loss_weight * exit_loss
        return LMOutput(logits, loss, lm_loss, balance_loss, exit_loss)

    @staticmethod
    def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if device.uses_triton(logits):
            from ..ops.loss_triton import cross_entropy  # imports triton, which CPU-only installs need not have

            return cross_entropy(logits.flatten(0, 1), targets.flatten())
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    @torch.no_grad()
    def prefill(self, tokens: torch.Tensor):
        """Incremental decoding, step 1: tokens (B, N) -> (logits (B, N, vocab), DecodeState). The state holds what
        each block's mixer needs to continue: a KV cache for attention (it grows with the context), the recurrences'
        last values for the BK mixer (a few numbers per head, whatever the context)."""
        if tokens.dim() != 2 or tokens.shape[1] == 0:
            raise ValueError(f"prefill needs tokens of shape (batch, N >= 1), got {tuple(tokens.shape)}")
        self._check_ids(tokens)
        caches = [{} for _ in self.blocks]
        x = self._embed(tokens)
        for block, cache in zip(self.blocks, caches):
            x, _ = block(x, cache)
        return self._logits(x), DecodeState(caches, tokens.shape[1], tokens.shape[0], self.cfg.arch)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, state: "DecodeState", exit_threshold: Optional[float] = None):
        """Incremental decoding, each next step: tokens (B, 1) -> (logits (B, 1, vocab), the state advanced). Prefill
        of x[:, :t] then decode of x[:, t:] one token at a time gives model(x)'s logits.

        exit_threshold (with model.exit_layers): at each exit, if every row's most likely token has at least this
        probability, the exit's logits are the step's; the blocks after it only advance their mixers' states
        (block.advance), so later tokens still see this one. state.layers counts the blocks run in full; a threshold
        above 1 never exits and gives the full-depth logits bitwise."""
        if not isinstance(state, DecodeState) or state.arch != self.cfg.arch or len(state.caches) != len(self.blocks):
            raise ValueError("decode: the state was not made by this model's prefill")
        if tokens.dim() != 2 or tokens.shape[0] != state.batch:
            raise ValueError(f"decode: tokens of shape {tuple(tokens.shape)} for a state of batch {state.batch}")
        self._check_ids(tokens)
        exits = dict(zip(self.cfg.exit_layers, self.exit_norms)) if exit_threshold is not None else {}
        x = self._embed(tokens, state.position)
        logits = None
        for i, (block, cache) in enumerate(zip(self.blocks, state.caches)):
            if logits is not None:
                x = block.advance(x, cache)
                continue
            x, _ = block(x, cache)
            state.layers += 1
            if i + 1 in exits:
                early = F.linear(exits[i + 1](x)[1], self.embed.weight)
                if bool((torch.softmax(early.float(), -1).amax(-1) >= exit_threshold).all()):
                    logits = early
        state.position += tokens.shape[1]
        state.steps += 1
        return (self._logits(x) if logits is None else logits), state

    def _check_ids(self, tokens: torch.Tensor) -> None:
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= self.cfg.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"token id {bad} outside the vocabulary (0..{self.cfg.vocab_size - 1})")

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

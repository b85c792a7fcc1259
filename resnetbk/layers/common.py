"""Pieces every block uses: the dense MLP, RMSNorm fused with its residual add, and monitoring buffers."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import device


class MLP(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(d_model, hidden)
        self.proj = nn.Linear(hidden, d_model)
        self.proj.is_residual_out = True
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class AddRMSNorm(nn.RMSNorm):
    """RMSNorm that also returns the residual stream it normalises: forward(x, delta=None) -> (s, norm(s)) with
    s = x + delta, or s = x. On a GPU (device.uses_triton) the add, the norm and, in backward, the sum of the
    stream's own gradient with the norm's are one Triton kernel each way (ops.norm_triton); elsewhere the same as
    PyTorch ops. A subclass of nn.RMSNorm, so checkpoints keep their keys."""

    def forward(self, x: torch.Tensor, delta: Optional[torch.Tensor] = None):
        if device.uses_triton(x):
            from ..ops.norm_triton import add_rms_norm  # imports triton, which CPU-only installs need not have

            # nn.RMSNorm's default eps: that of the float type it computes in (float32 for bf16 and fp16).
            eps = self.eps if self.eps is not None else torch.finfo(torch.promote_types(x.dtype, torch.float32)).eps
            return add_rms_norm(x, delta, self.weight, eps)
        s = x if delta is None else x + delta
        return s, super().forward(s)


def update_in_place(held: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value`, written into `held` when their shapes, dtypes and devices agree. A monitoring buffer updated in
    place is updated by every replay of a CUDA graph too (training/cuda_graphs.py); a replaced one would keep the
    value of the capture. A buffer that DeepSpeed cast to bf16 is replaced by the float32 value once."""
    if (held.shape, held.dtype, held.device) != (value.shape, value.dtype, value.device):
        return value
    return held.copy_(value)


class Monitored(nn.Module):
    """A module that records statistics of its last forward for the logs: `stat_prefix` names the group (the
    trainer logs `<prefix>_<name>` in metrics.jsonl and `<prefix>/<name>` in TensorBoard), `stat_names` the values,
    `last_stats` holds them (float32, updated in place). Forwards fill it only while `record_stats` is set, so that
    ordinary steps pay nothing for it. Over several modules a `*_max` statistic is reduced by max, `*_min` by min,
    the rest by the mean."""

    stat_prefix = ""

    def init_stats(self, names: tuple) -> None:
        self.stat_names = names
        self.record_stats = False
        self.register_buffer("last_stats", torch.zeros(len(names)), persistent=False)

    def store_stats(self, values: list) -> None:
        self.last_stats = update_in_place(self.last_stats, torch.stack(values))


def reduce_stats(modules: list) -> dict:
    """{(prefix, name): value} over Monitored modules, reduced as Monitored says; one read back to the host."""
    out, pending = {}, []
    for prefix in dict.fromkeys(m.stat_prefix for m in modules):
        group = [m for m in modules if m.stat_prefix == prefix]
        stacked = torch.stack([m.last_stats.float() for m in group])
        for i, name in enumerate(group[0].stat_names):
            reduce = torch.max if name.endswith("_max") else torch.min if name.endswith("_min") else torch.mean
            pending.append(((prefix, name), reduce(stacked[:, i])))
    if pending:
        out = dict(zip((key for key, _ in pending), torch.stack([v for _, v in pending]).tolist()))
    return out

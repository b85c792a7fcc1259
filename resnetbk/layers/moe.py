"""Sparse mixture of experts: this repository's dropless top-k MoE and DeepSpeed's MoE layer behind one contract,
forward(x) -> (output, load-balancing loss)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import device
from ..ops.moe import DispatchRows, ExpertBias, Permute, grouped_mm, sort_by_expert
from .common import MLP, update_in_place

# On the padded MoE path (CPU, fp16, fp32) expert batches are padded to a multiple of this many rows. BLAS
# switches kernels (and so rounding) for very small row counts; with padding, a token's expert output does
# not depend on how many other tokens chose that expert, which keeps the model exactly causal: changing
# token t+1 cannot move logits <= t through a different GEMM path. (The grouped GEMM picks its kernel from
# the total row count, which routing does not change; tests/test_model.py checks both on a GPU.)
MOE_ROW_BLOCK = 32


class MoE(nn.Module):
    """Top-k routed experts without capacity limits (no token is dropped).

    Gate weights are the router's softmax probabilities of the chosen experts (renormalised when k > 1),
    so the router gets a gradient even at k = 1. Load-balancing loss (Switch Transformer):
    E * sum_e f_e * P_e, f_e = share of routed slots sent to expert e, P_e = mean router probability;
    it equals 1 for a perfectly uniform router.

    Expert e is the MLP gelu(x W1[e]^T + b1[e]) W2[e]^T + b2[e], with the experts' weights stacked into four
    tensors: DeepSpeed does per-tensor work in backward and in the optimizer step, and one tensor per
    expert and layer made ResNet-BK's optimizer step twice GPT's at the same size (docs/performance.md).
    Under ZeRO-3 the stacked tensors are gathered when this module runs, whichever experts get tokens.
    In bf16 on a GPU the experts run as two grouped GEMMs with no host synchronisation (device.uses_grouped_gemm);
    elsewhere one expert at a time. On a GPU the routing glue around them (bias, gelu, un-sorting, gating) runs as
    fused Triton kernels (device.uses_triton); the PyTorch ops below are the same computation, for CPU and dropout.
    """

    def __init__(self, d_model: int, hidden: int, experts: int, top_k: int, n_layers: int, dropout: float = 0.0):
        super().__init__()
        e, d, f = experts, d_model, hidden
        self.top_k = top_k
        self.router = nn.Linear(d, e, bias=False)
        # GPT-2 initialisation, as MLP gets from CausalLM._init_weights; the output projection is a
        # residual branch, scaled by 1/sqrt(2 * n_layers) (n_layers: the decoder's depth).
        self.fc_weight = nn.Parameter(torch.randn(e, f, d) * 0.02)
        self.fc_bias = nn.Parameter(torch.zeros(e, f))
        self.proj_weight = nn.Parameter(torch.randn(e, d, f) * (0.02 / math.sqrt(2 * n_layers)))
        self.proj_bias = nn.Parameter(torch.zeros(e, d))
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("last_load", torch.zeros(e), persistent=False)

    def forward(self, x: torch.Tensor):
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        probs = F.softmax(self.router(flat).float(), dim=-1)  # (T, E)
        gate, choice = probs.topk(self.top_k, dim=-1)  # (T, k)
        if self.top_k > 1:
            gate = gate / gate.sum(-1, keepdim=True)
        n_experts = probs.shape[-1]
        slots = choice.flatten()  # the expert of each (token, slot) pair
        order, position, counts = sort_by_expert(slots, n_experts)
        load = counts.float() / slots.numel()
        balance_loss = n_experts * torch.sum(load * probs.mean(0))
        self.last_load = update_in_place(self.last_load, load.detach())
        expert_of_row = slots.index_select(0, order)
        # Fused: the same steps, each chain of row-wise ops as one Triton kernel, the output bias added in the combine.
        fused = device.uses_triton(flat) and not (self.training and self.dropout.p > 0)
        if fused:
            from ..ops import moe_triton  # imports triton, which CPU-only installs need not have
        dispatch = moe_triton.dispatch if fused else DispatchRows.apply
        rows = dispatch(flat, order, position, self.top_k)
        grouped = device.uses_grouped_gemm(rows)
        y = self._experts_grouped(rows, counts, expert_of_row, fused) if grouped else self._experts_padded(rows, counts)
        if fused:
            out = moe_triton.combine(y, position, gate, self.proj_bias if grouped else None, slots, expert_of_row)
        else:
            # Back to (token, slot) order; each token's output is the gate-weighted sum over its k slots.
            y = Permute.apply(y, position, order).view(-1, self.top_k, shape[-1])
            out = (y * gate.to(y.dtype)[..., None]).sum(1)
        return out.reshape(shape), balance_loss

    def _experts_grouped(self, rows, counts, expert_of_row, fused: bool):
        """All experts in two grouped GEMMs; the group sizes stay on the GPU, so nothing waits for the host.
        fused: the first bias and gelu in one Triton kernel, and the output bias left to moe_triton.combine."""
        ends = counts.cumsum(0).to(torch.int32)
        h = grouped_mm(rows, self.fc_weight.transpose(1, 2), offs=ends)
        if fused:
            from ..ops import moe_triton

            return grouped_mm(moe_triton.bias_gelu(h, self.fc_bias, expert_of_row), self.proj_weight.transpose(1, 2),
                              offs=ends)
        h = F.gelu(ExpertBias.apply(h, self.fc_bias, expert_of_row))
        y = ExpertBias.apply(grouped_mm(h, self.proj_weight.transpose(1, 2), offs=ends), self.proj_bias, expert_of_row)
        return self.dropout(y)

    def _experts_padded(self, rows, counts):
        """One expert at a time, each batch padded to MOE_ROW_BLOCK rows; the group sizes are read to the host
        once per layer."""
        out, start = [], 0
        for e, count in enumerate(counts.tolist()):
            block = F.pad(rows[start:start + count], (0, 0, 0, -count % MOE_ROW_BLOCK))
            h = F.gelu(F.linear(block, self.fc_weight[e], self.fc_bias[e]))
            out.append(F.linear(h, self.proj_weight[e], self.proj_bias[e])[:count])
            start += count
        return self.dropout(torch.cat(out))


class DeepSpeedMoE(nn.Module):
    """DeepSpeed's MoE layer (GShard top-1/top-2 gating, expert capacity, expert parallelism) with the same
    experts and the same contract as MoE: forward(x) -> (output, balance loss).

    The experts are split over ep_size ranks (all-to-all inside each expert-parallel group);
    DeepSpeed creates the groups when the engine initialises. Gating is deterministic (no noise, no random
    second-expert sampling), so runs are reproducible. Its balance loss is the same Switch loss as MoE's.
    """

    def __init__(self, d_model: int, hidden: int, experts: int, top_k: int, ep_size: int = 1,
                 capacity_factor: float = 0.0, dropout: float = 0.0):
        """capacity_factor 0: no token dropped (capacity = the largest expert load)."""
        super().__init__()
        from deepspeed.moe.layer import MoE as DSMoE

        drop = capacity_factor > 0
        self.layer = DSMoE(d_model, MLP(d_model, hidden, dropout), num_experts=experts, ep_size=ep_size, k=top_k,
                           capacity_factor=capacity_factor or 1.0, eval_capacity_factor=capacity_factor or 1.0,
                           drop_tokens=drop, use_rts=drop, top2_2nd_expert_sampling=False)
        self.register_buffer("last_load", torch.zeros(experts), persistent=False)

    @property
    def router(self) -> nn.Linear:
        return self.layer.deepspeed_moe.gate.wg

    def forward(self, x: torch.Tensor):
        out, balance_loss, counts = self.layer(x)
        self.last_load = counts.float() / counts.sum().clamp(min=1)
        return out, balance_loss

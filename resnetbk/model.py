"""ResNet-BK and the GPT baseline: one decoder skeleton, two kinds of block.

ResNet-BK block: x + BKMixer(norm(x)), then x + MoE(norm(x)).
GPT block:       x + CausalSelfAttention(norm(x)), then x + MLP(norm(x)).
(model.feed_forward swaps the MoE and the MLP between the families.)
(Written as AddRMSNorm calls, which return the residual stream beside its norm so that a GPU fuses the two.)
Both: token embedding (GPT adds learned positions; the causal BK recursion is ordered by itself),
final norm, LM head tied to the embedding.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bk_core import resolvent_diagonal
from .bk_response import diagonal_and_response
from .config import ModelConfig, uses_moe

# torch 2.13 names it F.grouped_mm; older releases (2.8-2.11, the GPU image's) only have the private name.
grouped_mm = getattr(F, "grouped_mm", None) or torch._grouped_mm

H0_DIAGONAL = -2.0  # diagonal of the discrete Laplacian H0 = tridiag(1, -2, 1)
# On the padded MoE path (CPU, fp16, fp32) expert batches are padded to a multiple of this many rows. BLAS
# switches kernels (and so rounding) for very small row counts; with padding, a token's expert output does
# not depend on how many other tokens chose that expert, which keeps the model exactly causal: changing
# token t+1 cannot move logits <= t through a different GEMM path. (The grouped GEMM picks its kernel from
# the total row count, which routing does not change; tests/test_model.py checks both on a GPU.)
MOE_ROW_BLOCK = 32


class LMOutput(NamedTuple):
    logits: torch.Tensor
    loss: torch.Tensor  # lm_loss + moe_balance_coef * balance_loss: what the optimizer sees
    lm_loss: torch.Tensor
    balance_loss: torch.Tensor


class MLP(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(d_model, hidden)
        self.proj = nn.Linear(hidden, d_model)
        self.proj.is_residual_out = True
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class BKMixer(nn.Module):
    """Sequence mixing through the causal resolvent of h tridiagonal systems: its diagonal g and, with
    bk_values = C > 0, its response y to C value channels per head (resnetbk/bk_response.py).

    Head k: a_i = H0_DIAGONAL + v_{i,k} with v = Linear(d, h)(x); couplings b_i = 1 (H0) or, selective,
    b_{i-1} = softplus(w_k . x_i) >= 0 (computed from position i, so g_i still sees positions <= i only);
    z_k = i, or learned x_k + i (softplus(y_k) + im_z_min). Output: Linear(2h, d) of (Re g_k, Im g_k) per head,
    plus Linear(2hC, d) of (Re y, Im y) for the values s = Linear(d, hC)(x), optionally gated by
    silu(Linear(d, 2hC)(x)) as the output gates of GLA and Mamba-2 do.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h, c = cfg.n_heads, cfg.bk_values
        self.potential = nn.Linear(cfg.d_model, h)
        self.coupling = nn.Linear(cfg.d_model, h) if cfg.bk_selective else None
        self.im_z_min = cfg.bk_im_z_min
        if cfg.bk_learned_z:
            self.z_re = nn.Parameter(torch.zeros(h))
            # softplus(y) + im_z_min = 1 at init, i.e. z = i as in the faithful preset.
            self.z_im_raw = nn.Parameter(torch.full((h,), math.log(math.expm1(1.0 - cfg.bk_im_z_min))))
        else:
            self.z_re = self.z_im_raw = None
        self.out = nn.Linear(2 * h, cfg.d_model)
        self.out.is_residual_out = True
        self.values = nn.Linear(cfg.d_model, h * c) if c else None
        self.value_out = nn.Linear(2 * h * c, cfg.d_model, bias=False) if c else None
        if c:
            self.value_out.is_residual_out = True
        self.value_gate = nn.Linear(cfg.d_model, 2 * h * c) if cfg.bk_value_gate else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.stat_names = self.STAT_NAMES + (self.RESPONSE_STAT_NAMES if c else ())
        # Feature statistics of the last forward, for monitoring (stat_names); filled only when record_stats
        # is set, so that ordinary steps pay nothing for them (a CUDA-graphed block fills them every step).
        self.record_stats = False
        self.register_buffer("last_stats", torch.zeros(len(self.stat_names)), persistent=False)

    STAT_NAMES = ("potential_mean", "potential_std", "abs_g_mean", "abs_g_max", "im_z_min")
    RESPONSE_STAT_NAMES = ("abs_y_mean", "abs_y_max")

    def spectral_shift(self) -> torch.Tensor:
        if self.z_re is None:
            return torch.ones(self.potential.out_features, dtype=torch.float32, device=self.potential.weight.device) * 1j
        return torch.complex(self.z_re.float(), F.softplus(self.z_im_raw.float()) + self.im_z_min)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # At least float32 before adding H0: a bf16 sum near -2 would round the potential to steps of 2^-6.
        v = self.potential(x)
        a = (v.to(torch.promote_types(v.dtype, torch.float32)) + H0_DIAGONAL).transpose(1, 2)  # (B, h, N)
        b = 1.0
        if self.coupling is not None:
            b = F.softplus(self.coupling(x[:, 1:]).float()).transpose(1, 2)  # (B, h, N-1)
        z = self.spectral_shift()
        if self.values is None:
            g, y = resolvent_diagonal(a, b, z, causal=True), None  # (B, h, N) complex
        else:
            batch, n, heads = a.shape[0], a.shape[2], a.shape[1]
            s = self.values(x).view(batch, n, heads, -1).transpose(1, 2)  # (B, h, N, C), a view
            # y: (B, h, N, C, 2) real pairs in x's dtype; on a GPU written in (B, N, h, C, 2) order.
            g, y = diagonal_and_response(a, b, z, s, x.dtype)
        if self.record_stats:
            with torch.no_grad():
                v, abs_g = v.detach().float(), g.detach().abs()
                stats = [v.mean(), v.std(), abs_g.mean(), abs_g.max(), z.imag.detach().min()]
                if y is not None:
                    abs_y = torch.linalg.vector_norm(y.detach().float(), dim=-1)
                    stats += [abs_y.mean(), abs_y.max()]
                self.last_stats = update_in_place(self.last_stats, torch.stack(stats))
        # (B, N, 2h) as (Re g, Im g) per head. a is a view of a (B, N, h) tensor and the Triton kernels
        # write g in a's memory order, so on GPU this is a view, not a copy; the same holds for y.
        features = torch.view_as_real(g.transpose(1, 2)).flatten(2).to(x.dtype)
        out = self.out(features)
        if y is not None:
            response = y.transpose(1, 2).flatten(2)  # (B, N, 2hC)
            if self.value_gate is not None:
                response = response * F.silu(self.value_gate(x))
            out = out + self.value_out(response)
        return self.dropout(out)


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
    In bf16 on a GPU the experts run as two grouped GEMMs with no host synchronisation (uses_grouped_gemm);
    elsewhere one expert at a time. On a GPU the routing glue around them (bias, gelu, un-sorting, gating) runs as
    fused Triton kernels (uses_triton); the PyTorch ops below are the same computation, for CPU and dropout.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        e, d, f = cfg.moe_experts, cfg.d_model, cfg.ffn_hidden
        self.top_k = cfg.moe_top_k
        self.router = nn.Linear(d, e, bias=False)
        # GPT-2 initialisation, as MLP gets from CausalLM._init_weights; the output projection is a
        # residual branch, scaled by 1/sqrt(2 * n_layers).
        self.fc_weight = nn.Parameter(torch.randn(e, f, d) * 0.02)
        self.fc_bias = nn.Parameter(torch.zeros(e, f))
        self.proj_weight = nn.Parameter(torch.randn(e, d, f) * (0.02 / math.sqrt(2 * cfg.n_layers)))
        self.proj_bias = nn.Parameter(torch.zeros(e, d))
        self.dropout = nn.Dropout(cfg.dropout)
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
        fused = uses_triton(flat) and not (self.training and self.dropout.p > 0)
        if fused:
            from . import moe_triton  # imports triton, which CPU-only installs need not have
        dispatch = moe_triton.dispatch if fused else _DispatchRows.apply
        rows = dispatch(flat, order, position, self.top_k)
        grouped = uses_grouped_gemm(rows)
        y = self._experts_grouped(rows, counts, expert_of_row, fused) if grouped else self._experts_padded(rows, counts)
        if fused:
            out = moe_triton.combine(y, position, gate, self.proj_bias if grouped else None, slots, expert_of_row)
        else:
            # Back to (token, slot) order; each token's output is the gate-weighted sum over its k slots.
            y = _Permute.apply(y, position, order).view(-1, self.top_k, shape[-1])
            out = (y * gate.to(y.dtype)[..., None]).sum(1)
        return out.reshape(shape), balance_loss

    def _experts_grouped(self, rows, counts, expert_of_row, fused: bool):
        """All experts in two grouped GEMMs; the group sizes stay on the GPU, so nothing waits for the host.
        fused: the first bias and gelu in one Triton kernel, and the output bias left to moe_triton.combine."""
        ends = counts.cumsum(0).to(torch.int32)
        h = grouped_mm(rows, self.fc_weight.transpose(1, 2), offs=ends)
        if fused:
            from . import moe_triton

            return grouped_mm(moe_triton.bias_gelu(h, self.fc_bias, expert_of_row), self.proj_weight.transpose(1, 2),
                              offs=ends)
        h = F.gelu(_ExpertBias.apply(h, self.fc_bias, expert_of_row))
        y = _ExpertBias.apply(grouped_mm(h, self.proj_weight.transpose(1, 2), offs=ends), self.proj_bias, expert_of_row)
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


def update_in_place(held: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value`, written into `held` when their shapes, dtypes and devices agree. A monitoring buffer updated in
    place is updated by every replay of a CUDA graph too (resnetbk/cuda_graphs.py); a replaced one would keep the
    value of the capture. A buffer that DeepSpeed cast to bf16 is replaced by the float32 value once."""
    if (held.shape, held.dtype, held.device) != (value.shape, value.dtype, value.device):
        return value
    return held.copy_(value)


# The routing glue below avoids torch ops that sort or read sizes back to the host on a GPU (argsort, the backward
# of advanced indexing and of embedding): with a dozen layers they left the GPU idle for much of the step.

def sort_by_expert(slots: torch.Tensor, n_experts: int):
    """Stable counting sort of the (token, slot) pairs by expert. Returns order (sorted position -> pair),
    position (pair -> sorted position) and the number of pairs per expert; equal to argsort(slots, stable=True)."""
    # (experts, pairs), scanned along the contiguous last axis: a CUDA cumsum down the first axis of a
    # (pairs, experts) tensor ran sequentially and took 10 ms per layer on an H100.
    hits = torch.arange(n_experts, device=slots.device)[:, None] == slots
    rank = hits.cumsum(1).gather(0, slots[None]).squeeze(0) - 1  # earlier pairs of the same expert
    counts = hits.sum(1)
    position = (counts.cumsum(0) - counts).index_select(0, slots) + rank
    order = torch.empty_like(position).scatter_(0, position, torch.arange(len(slots), device=slots.device))
    return order, position, counts


class _DispatchRows(torch.autograd.Function):
    """rows = x[order // k], each token's row once per slot, grouped by expert. Backward: each token gathers its k
    row gradients and sums them (autograd's default scatter-adds, which sorts the indices)."""

    @staticmethod
    def forward(ctx, x, order, position, k: int):
        ctx.save_for_backward(position)
        ctx.k = k
        return x.index_select(0, torch.div(order, k, rounding_mode="floor"))

    @staticmethod
    def backward(ctx, grad):
        (position,) = ctx.saved_tensors
        return grad.index_select(0, position).view(-1, ctx.k, grad.shape[-1]).sum(1), None, None, None


class _Permute(torch.autograd.Function):
    """x[index] for a permutation whose inverse is given: the backward is a gather as well."""

    @staticmethod
    def forward(ctx, x, index, inverse):
        ctx.save_for_backward(inverse)
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


class _ExpertBias(torch.autograd.Function):
    """h + bias[expert_of_row], with the bias gradient of expert_bias_grad."""

    @staticmethod
    def forward(ctx, h, bias, expert_of_row):
        ctx.save_for_backward(expert_of_row)
        ctx.n_experts = bias.shape[0]
        return h + bias.index_select(0, expert_of_row)

    @staticmethod
    def backward(ctx, grad):
        (expert_of_row,) = ctx.saved_tensors
        return grad, expert_bias_grad(grad, expert_of_row, ctx.n_experts), None


def expert_bias_grad(grad: torch.Tensor, expert_of_row: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Gradient of bias[expert_of_row] for the rows' gradient grad: the sum of each expert's rows, as one matrix
    product of the one-hot expert matrix with grad (embedding's backward sorts the indices and reads their count to
    the host)."""
    one_hot = (torch.arange(n_experts, device=grad.device)[:, None] == expert_of_row).to(grad.dtype)
    return one_hot @ grad


def uses_triton(x: torch.Tensor) -> bool:
    """Whether the fused Triton kernels run: the MoE's routing glue (moe_triton; not under dropout, which acts between
    the output bias and the combine), the norms with their residual adds (norm_triton) and the training loss
    (loss_triton). On any CUDA tensor; elsewhere the same computations run as PyTorch ops."""
    return x.is_cuda


def uses_grouped_gemm(x: torch.Tensor) -> bool:
    """Whether MoE runs its experts as grouped GEMMs: bf16 on a CUDA GPU of compute capability >= 8.0, where
    torch's grouped GEMM kernel exists. Elsewhere (CPU, fp16, fp32) torch's grouped_mm falls back to one
    matrix product per group, whose rounding can depend on the group's row count, so the padded per-expert
    path keeps a token's output independent of other tokens' routing."""
    return x.is_cuda and x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device) >= (8, 0)


class DeepSpeedMoE(nn.Module):
    """DeepSpeed's MoE layer (GShard top-1/top-2 gating, expert capacity, expert parallelism) with the same
    experts and the same contract as MoE: forward(x) -> (output, balance loss).

    The experts are split over model.moe_ep_size ranks (all-to-all inside each expert-parallel group);
    DeepSpeed creates the groups when the engine initialises. Gating is deterministic (no noise, no random
    second-expert sampling), so runs are reproducible. Its balance loss is the same Switch loss as MoE's.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        from deepspeed.moe.layer import MoE as DSMoE

        drop = cfg.moe_capacity_factor > 0
        self.layer = DSMoE(cfg.d_model, MLP(cfg.d_model, cfg.ffn_hidden, cfg.dropout), num_experts=cfg.moe_experts,
                           ep_size=cfg.moe_ep_size, k=cfg.moe_top_k, capacity_factor=cfg.moe_capacity_factor or 1.0,
                           eval_capacity_factor=cfg.moe_capacity_factor or 1.0, drop_tokens=drop, use_rts=drop,
                           top2_2nd_expert_sampling=False)
        self.register_buffer("last_load", torch.zeros(cfg.moe_experts), persistent=False)

    @property
    def router(self) -> nn.Linear:
        return self.layer.deepspeed_moe.gate.wg

    def forward(self, x: torch.Tensor):
        out, balance_loss, counts = self.layer(x)
        self.last_load = counts.float() / counts.sum().clamp(min=1)
        return out, balance_loss


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.out.is_residual_out = True
        self.dropout = cfg.dropout

    def forward(self, x):
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, N, D))


class AddRMSNorm(nn.RMSNorm):
    """RMSNorm that also returns the residual stream it normalises: forward(x, delta=None) -> (s, norm(s)) with
    s = x + delta, or s = x. On a GPU (uses_triton) the add, the norm and, in backward, the sum of the stream's own
    gradient with the norm's are one Triton kernel each way (norm_triton); elsewhere the same as PyTorch ops.
    A subclass of nn.RMSNorm, so checkpoints keep their keys."""

    def forward(self, x: torch.Tensor, delta: Optional[torch.Tensor] = None):
        if uses_triton(x):
            from .norm_triton import add_rms_norm  # imports triton, which CPU-only installs need not have

            # nn.RMSNorm's default eps: that of the float type it computes in (float32 for bf16 and fp16).
            eps = self.eps if self.eps is not None else torch.finfo(torch.promote_types(x.dtype, torch.float32)).eps
            return add_rms_norm(x, delta, self.weight, eps)
        s = x if delta is None else x + delta
        return s, super().forward(s)


def make_feed_forward(cfg: ModelConfig) -> tuple:
    """(moe, mlp): the block's feed-forward, model.feed_forward or the family's own, and None for the other."""
    if not uses_moe(cfg):
        return None, MLP(cfg.d_model, cfg.ffn_hidden, cfg.dropout)
    return (DeepSpeedMoE(cfg) if cfg.moe_impl == "deepspeed" else MoE(cfg)), None


def feed_forward(block: nn.Module, h: torch.Tensor):
    """(output, balance loss) of the block's MoE or MLP (whose balance loss is 0)."""
    if block.moe is not None:
        return block.moe(h)
    return block.mlp(h), h.new_zeros((), dtype=torch.float32)


class ResNetBKBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1, self.norm2 = AddRMSNorm(cfg.d_model), AddRMSNorm(cfg.d_model)
        self.mixer = BKMixer(cfg)
        self.moe, self.mlp = make_feed_forward(cfg)

    def forward(self, x):
        x, h = self.norm1(x)  # x passes through, so that its gradient and the norm's meet in one backward kernel
        x, h = self.norm2(x, self.mixer(h))  # x + mixer(h), and its norm
        y, balance_loss = feed_forward(self, h)
        return x + y, balance_loss


class GPTBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1, self.norm2 = AddRMSNorm(cfg.d_model), AddRMSNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.moe, self.mlp = make_feed_forward(cfg)

    def forward(self, x):
        x, h = self.norm1(x)
        x, h = self.norm2(x, self.attn(h))
        y, balance_loss = feed_forward(self, h)
        return x + y, balance_loss


class CausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        block = {"resnetbk": ResNetBKBlock, "gpt": GPTBlock}[cfg.arch]
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.arch == "gpt" else None
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
        if uses_triton(logits):
            from .loss_triton import cross_entropy  # imports triton, which CPU-only installs need not have

            lm_loss = cross_entropy(logits.flatten(0, 1), targets.flatten())
        else:
            lm_loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        balance_loss = balance_loss / len(self.blocks)
        coef = self.cfg.moe_balance_coef if uses_moe(self.cfg) else 0.0
        return LMOutput(logits, lm_loss + coef * balance_loss, lm_loss, balance_loss)

    def record_bk_stats(self, on: bool) -> None:
        for block in self.blocks:
            if isinstance(block, ResNetBKBlock):
                block.mixer.record_stats = on

    def bk_stats(self) -> Optional[dict]:
        """BKMixer.stat_names of the last recorded forward over layers: the mean, the largest for *_max and the
        smallest for im_z_min."""
        mixers = [b.mixer for b in self.blocks if isinstance(b, ResNetBKBlock)]
        if not mixers:
            return None
        stacked = torch.stack([m.last_stats for m in mixers])
        reduce = {"abs_g_max": torch.max, "abs_y_max": torch.max, "im_z_min": torch.min}
        names = mixers[0].stat_names
        values = torch.stack([reduce.get(name, torch.mean)(stacked[:, i]) for i, name in enumerate(names)])
        return dict(zip(names, values.tolist()))  # one read back to the host

    def expert_load(self) -> Optional[torch.Tensor]:
        """Share of routed slots per expert in the last forward, averaged over layers (None without MoE)."""
        loads = [b.moe.last_load for b in self.blocks if b.moe is not None]
        return torch.stack(loads).mean(0) if loads else None

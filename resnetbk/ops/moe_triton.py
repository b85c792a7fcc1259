"""Triton kernels for the MoE's routing glue: the per-row work around the experts' GEMMs, fused.

As separate PyTorch ops, the glue made a full pass over a (routed rows x width) tensor per op: gather each row's
expert bias, add it, gelu; after the experts, permute the rows back to (token, slot) order, add the output bias,
multiply by the gate, sum the k slots; and as many again in backward. On an H100 (`small`, docs/performance.md)
these passes took more GPU time than the expert GEMMs themselves. Each kernel below does one chain in one pass,
reading its inputs once, computing in float32 and rounding once to the output dtype.

  bias_gelu(h, bias, expert)        a[r] = gelu(h[r] + bias[expert[r]])                      (the first expert layer)
  combine(y, index, gate, bias, e)  out[t] = sum_j gate[t, j] (y[index[t, j]] + bias[e[t, j]])  (back to tokens)
  dispatch(x, order, index, k)      rows[r] = x[order[r] // k]; backward: grad_x[t] = sum_j grad_rows[index[t, j]]

index[t, j] is the sorted row of token t's j-th slot (MoE's `position`); rows are sorted by expert. Bias gradients
are one-hot matrix products (ops.moe.expert_bias_grad): a reduction over rows per expert is what a GEMM does best.

On CPU the kernels run only under TRITON_INTERPRET=1 (tests); the model uses the PyTorch glue there.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .moe import DispatchRows, expert_bias_grad

BLOCK_ROWS = 16
BLOCK_COLS = 256  # along the contiguous axis of a row
SQRT_HALF = tl.constexpr(0.7071067811865476)  # globals read inside kernels must be constexpr
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


@triton.jit
def _biased_rows(h_ptr, bias_ptr, expert_ptr, R, F, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr):
    """This program's tile of h + bias[expert] in float32, its offsets and mask."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    mask = (rows < R)[:, None] & (cols < F)[None, :]
    expert = tl.load(expert_ptr + rows, mask=rows < R, other=0).to(tl.int64)
    at = rows.to(tl.int64)[:, None] * F + cols[None, :]
    x = tl.load(h_ptr + at, mask=mask, other=0.0).to(tl.float32)
    x += tl.load(bias_ptr + expert[:, None] * F + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    return x, at, mask


@triton.jit
def _bias_gelu_fwd(h_ptr, bias_ptr, expert_ptr, out_ptr, R, F, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr):
    x, at, mask = _biased_rows(h_ptr, bias_ptr, expert_ptr, R, F, BLOCK_R, BLOCK_F)
    tl.store(out_ptr + at, (0.5 * x * (1.0 + tl.erf(x * SQRT_HALF))).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bias_gelu_bwd(grad_ptr, h_ptr, bias_ptr, expert_ptr, out_ptr, R, F, BLOCK_R: tl.constexpr,
                   BLOCK_F: tl.constexpr):
    x, at, mask = _biased_rows(h_ptr, bias_ptr, expert_ptr, R, F, BLOCK_R, BLOCK_F)
    slope = 0.5 * (1.0 + tl.erf(x * SQRT_HALF)) + x * tl.exp(-0.5 * x * x) * INV_SQRT_2PI
    grad = tl.load(grad_ptr + at, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + at, (grad * slope).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gather_sum(src_ptr, index_ptr, weight_ptr, bias_ptr, expert_ptr, out_ptr, T, D, K: tl.constexpr,
                HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[t] = sum_j weight[t, j] * (src[index[t, j]] + bias[expert[t, j]]); weight and bias optional."""
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    tmask = tokens < T
    mask = tmask[:, None] & (cols < D)[None, :]
    acc = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    for j in tl.static_range(K):
        row = tl.load(index_ptr + tokens * K + j, mask=tmask, other=0).to(tl.int64)
        value = tl.load(src_ptr + row[:, None] * D + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            expert = tl.load(expert_ptr + tokens * K + j, mask=tmask, other=0).to(tl.int64)
            value += tl.load(bias_ptr + expert[:, None] * D + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_WEIGHT:
            value *= tl.load(weight_ptr + tokens * K + j, mask=tmask, other=0.0).to(tl.float32)[:, None]
        acc += value
    tl.store(out_ptr + tokens.to(tl.int64)[:, None] * D + cols[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _combine_bwd(grad_ptr, src_ptr, index_ptr, weight_ptr, bias_ptr, expert_ptr, grad_src_ptr, grad_weight_ptr,
                 T, D, K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """For slot j = program_id(1): grad_src[index[t, j]] = weight[t, j] grad[t] and
    grad_weight[t, j] = <grad[t], src[index[t, j]] + bias[expert[t, j]]>."""
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    slot = tokens * K + tl.program_id(1)
    tmask = tokens < T
    row = tl.load(index_ptr + slot, mask=tmask, other=0).to(tl.int64)
    weight = tl.load(weight_ptr + slot, mask=tmask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        expert = tl.load(expert_ptr + slot, mask=tmask, other=0).to(tl.int64)
    dot = tl.zeros([BLOCK_T], dtype=tl.float32)
    for start in range(0, D, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)
        mask = tmask[:, None] & (cols < D)[None, :]
        grad = tl.load(grad_ptr + tokens.to(tl.int64)[:, None] * D + cols[None, :], mask=mask, other=0.0)
        grad = grad.to(tl.float32)
        value = tl.load(src_ptr + row[:, None] * D + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            value += tl.load(bias_ptr + expert[:, None] * D + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dot += tl.sum(grad * value, axis=1)
        tl.store(grad_src_ptr + row[:, None] * D + cols[None, :], (grad * weight[:, None]).to(
            grad_src_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_weight_ptr + slot, dot, mask=tmask)


def _row_grid(rows: int, cols: int):
    return triton.cdiv(rows, BLOCK_ROWS), triton.cdiv(cols, BLOCK_COLS)


def _gather_sum_call(src, index, weight, bias, expert, n_tokens: int, k: int) -> torch.Tensor:
    out = torch.empty(n_tokens, src.shape[1], dtype=src.dtype, device=src.device)
    _gather_sum[_row_grid(n_tokens, src.shape[1])](
        src, index, weight if weight is not None else src, bias if bias is not None else src,
        expert if expert is not None else index, out, n_tokens, src.shape[1], K=k, HAS_WEIGHT=weight is not None,
        HAS_BIAS=bias is not None, BLOCK_T=BLOCK_ROWS, BLOCK_D=BLOCK_COLS)
    return out


class _BiasGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, bias, expert_of_row):
        h, bias = h.contiguous(), bias.contiguous()
        ctx.save_for_backward(h, bias, expert_of_row)
        out = torch.empty_like(h)
        _bias_gelu_fwd[_row_grid(*h.shape)](h, bias, expert_of_row, out, *h.shape, BLOCK_R=BLOCK_ROWS,
                                            BLOCK_F=BLOCK_COLS)
        return out

    @staticmethod
    def backward(ctx, grad):
        h, bias, expert_of_row = ctx.saved_tensors
        grad_h = torch.empty_like(h)
        _bias_gelu_bwd[_row_grid(*h.shape)](grad.contiguous(), h, bias, expert_of_row, grad_h, *h.shape,
                                            BLOCK_R=BLOCK_ROWS, BLOCK_F=BLOCK_COLS)
        return grad_h, expert_bias_grad(grad_h, expert_of_row, bias.shape[0]), None


class _Combine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, index, gate, bias, expert_of_pair, expert_of_row):
        y, gate = y.contiguous(), gate.contiguous()
        bias = bias.contiguous() if bias is not None else None
        ctx.save_for_backward(y, index, gate, bias, expert_of_pair, expert_of_row)
        return _gather_sum_call(y, index, gate, bias, expert_of_pair, *gate.shape)

    @staticmethod
    def backward(ctx, grad):
        y, index, gate, bias, expert_of_pair, expert_of_row = ctx.saved_tensors
        n_tokens, k = gate.shape
        grad_y = torch.empty_like(y)
        grad_gate = torch.empty(n_tokens, k, dtype=torch.float32, device=y.device)
        has_bias = bias is not None
        _combine_bwd[(triton.cdiv(n_tokens, BLOCK_ROWS), k)](
            grad.contiguous(), y, index, gate, bias if has_bias else y, expert_of_pair if has_bias else index,
            grad_y, grad_gate, n_tokens, y.shape[1], K=k, HAS_BIAS=has_bias, BLOCK_T=BLOCK_ROWS,
            BLOCK_D=BLOCK_COLS)
        grad_bias = (expert_bias_grad(grad_y, expert_of_row, bias.shape[0]) if has_bias and ctx.needs_input_grad[3]
                     else None)
        return grad_y, None, grad_gate.to(gate.dtype), grad_bias, None, None


class _Dispatch(DispatchRows):
    """DispatchRows with its backward (gather k rows per token, sum them) as one kernel."""

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        n_tokens = index.numel() // ctx.k
        return _gather_sum_call(grad.contiguous(), index, None, None, None, n_tokens, ctx.k), None, None, None


@torch.compiler.disable
def bias_gelu(h: torch.Tensor, bias: torch.Tensor, expert_of_row: torch.Tensor) -> torch.Tensor:
    """gelu(h + bias[expert_of_row]) for h (rows, F), bias (experts, F), expert_of_row (rows,) integer."""
    return _BiasGelu.apply(h, bias, expert_of_row.contiguous())


@torch.compiler.disable
def combine(y: torch.Tensor, index: torch.Tensor, gate: torch.Tensor, bias: torch.Tensor | None,
            expert_of_pair: torch.Tensor, expert_of_row: torch.Tensor) -> torch.Tensor:
    """(tokens, d): sum over j of gate[t, j] (y[index[t, j]] + bias[expert_of_pair[t, j]]), in y's dtype.
    y (rows, d) in expert order; index, expert_of_pair (tokens * k,) in (token, slot) order; gate (tokens, k);
    bias (experts, d) or None; expert_of_row (rows,) the expert of each row of y (for the bias gradient)."""
    return _Combine.apply(y, index.contiguous(), gate, bias, expert_of_pair.contiguous(), expert_of_row.contiguous())


@torch.compiler.disable
def dispatch(x: torch.Tensor, order: torch.Tensor, index: torch.Tensor, k: int) -> torch.Tensor:
    """x[order // k]: each token's row once per slot, in expert order (index is order's inverse)."""
    return _Dispatch.apply(x, order, index.contiguous(), k)

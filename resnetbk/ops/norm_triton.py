"""RMSNorm with the residual add folded in, as two Triton kernels, for the blocks' norms on a GPU.

  add_rms_norm(x, delta, w)  ->  s = x + delta (or s = x when delta is None),  n = s / rms(s) * w

A block's residual stream meets each norm twice: an add makes it (x + delta), the norm reads it, and in backward
autograd adds the stream's own gradient to the norm's input gradient in another pass. As PyTorch ops that is, per
norm, an add, the norm, the norm's backward and the gradient add: on an H100 (`base`, N = 2048, docs/performance.md)
15 ms of a 145 ms step, with torch's norm backward at a third of the memory bandwidth. Here forward reads x and
delta once and writes s and n; backward reads the two incoming gradients, s and the weight once, and writes the
input gradient, which x and delta share. Both compute in float32 and round once. The weight's gradient is summed
per program in float32, then over programs.

Why not a library: Liger-Kernel's LigerFusedAddRMSNorm does the same add and sum of gradients, but its backward runs
one program per multiprocessor over one row at a time: on an H100 at `base`'s width its forward + backward took 2.1x
this one's time, more than torch's own. It also has no form without the add, which each block's first norm uses
(benchmarks/kernels/norm.py, docs/performance.md).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Backward: PROGRAMS_PER_SM programs per multiprocessor each loop over a share of the rows, TILE elements (whole rows)
# at a time, keeping a partial weight gradient. Set on an H100 with benchmarks/kernels/norm.py (docs/performance.md).
PROGRAMS_PER_SM = 8
TILE = 1024


@triton.jit
def _fwd(x_ptr, delta_ptr, w_ptr, s_ptr, n_ptr, rstd_ptr, D, eps, HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < D
    at = row * D + cols
    s = tl.load(x_ptr + at, mask=mask, other=0.0)
    if HAS_DELTA:
        # Rounded to the stream's dtype before the norm reads it, as the separate add would: backward sees this s.
        s = (s.to(tl.float32) + tl.load(delta_ptr + at, mask=mask, other=0.0).to(tl.float32)).to(s_ptr.dtype.element_ty)
        tl.store(s_ptr + at, s, mask=mask)
    s = s.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(s * s, axis=0) / D + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(n_ptr + at, (s * rstd * w).to(n_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def _bwd(grad_n_ptr, grad_s_ptr, s_ptr, w_ptr, rstd_ptr, grad_x_ptr, grad_w_ptr, n_rows, D, rows_per_program,
         HAS_GRAD_S: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    # d n_j / d s_i = rstd * w_j * (delta_ij - s_i s_j rstd^2 / D), so with g = grad_n * w:
    # grad_s = rstd * (g - s * rstd^2 * mean(g * s)), plus the stream's own gradient.
    # A program takes rows_per_program rows (a multiple of ROWS), ROWS at a time.
    program = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    grad_w = tl.zeros([ROWS, BLOCK], tl.float32)
    for first in range(0, rows_per_program, ROWS):
        rows = program * rows_per_program + first + tl.arange(0, ROWS)
        mask = (rows < n_rows)[:, None] & (cols < D)[None, :]
        at = rows[:, None] * D + cols[None, :]
        s = tl.load(s_ptr + at, mask=mask, other=0.0).to(tl.float32)
        grad_n = tl.load(grad_n_ptr + at, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows, mask=rows < n_rows, other=0.0)[:, None]
        g = grad_n * w[None, :]
        grad = rstd * (g - s * (rstd * rstd * tl.sum(g * s, axis=1)[:, None] / D))
        if HAS_GRAD_S:
            grad += tl.load(grad_s_ptr + at, mask=mask, other=0.0).to(tl.float32)
        tl.store(grad_x_ptr + at, grad.to(grad_x_ptr.dtype.element_ty), mask=mask)
        grad_w += grad_n * s * rstd
    tl.store(grad_w_ptr + program * D + cols, tl.sum(grad_w, axis=0), mask=cols < D)


def _launch_options(d: int, rows: int = 1) -> dict:
    block = triton.next_power_of_2(d)
    return {"BLOCK": block, "num_warps": min(16, max(4, rows * block // 256))}


class _AddRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, delta, weight, eps: float):
        d = x.shape[-1]
        rows = x.reshape(-1, d)
        s = torch.empty_like(rows) if delta is not None else rows
        n = torch.empty_like(rows)
        rstd = torch.empty(rows.shape[0], dtype=torch.float32, device=x.device)
        _fwd[(rows.shape[0],)](rows, delta.reshape(-1, d) if delta is not None else rows, weight, s, n, rstd, d, eps,
                               HAS_DELTA=delta is not None, **_launch_options(d))
        ctx.save_for_backward(s, weight, rstd)
        ctx.has_delta, ctx.shape = delta is not None, x.shape
        # With no delta the first output is x itself: autograd routes its gradient into backward's grad_s.
        return (s.view_as(x) if delta is not None else x), n.view_as(x)

    @staticmethod
    def backward(ctx, grad_s, grad_n):
        s, weight, rstd = ctx.saved_tensors
        n_rows, d = s.shape
        if grad_n is None:  # the norm's output did not reach the loss
            return grad_s, grad_s if ctx.has_delta else None, None, None
        grad_n = grad_n.reshape(n_rows, d).contiguous()
        if grad_s is not None:
            grad_s = grad_s.reshape(n_rows, d).contiguous()
        grad_x = torch.empty_like(s)
        sms = torch.cuda.get_device_properties(s.device).multi_processor_count if s.is_cuda else 2  # interpreter
        tile_rows = max(1, TILE // triton.next_power_of_2(d))
        programs = min(triton.cdiv(n_rows, tile_rows), PROGRAMS_PER_SM * sms)
        rows_per_program = triton.cdiv(triton.cdiv(n_rows, programs), tile_rows) * tile_rows
        programs = triton.cdiv(n_rows, rows_per_program)
        grad_w = torch.empty(programs, d, dtype=torch.float32, device=s.device)
        _bwd[(programs,)](grad_n, grad_s if grad_s is not None else grad_n, s, weight, rstd, grad_x, grad_w, n_rows, d,
                          rows_per_program, HAS_GRAD_S=grad_s is not None, ROWS=tile_rows,
                          **_launch_options(d, tile_rows))
        grad_x = grad_x.view(ctx.shape)
        return grad_x, grad_x if ctx.has_delta else None, grad_w.sum(0).to(weight.dtype), None


@torch.compiler.disable
def add_rms_norm(x: torch.Tensor, delta, weight: torch.Tensor, eps: float):
    """(x + delta, rms_norm(x + delta) * weight), or (x, rms_norm(x) * weight) when delta is None; any float dtype,
    normalised over the last axis."""
    return _AddRMSNorm.apply(x.contiguous(), None if delta is None else delta.contiguous(), weight, eps)

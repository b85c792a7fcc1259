"""BK response: the resolvent of the tridiagonal H applied to a value stream, in O(N C).

Same H as resnetbk.bk_core (diagonal a, couplings b, Im z > 0), and sources s (..., N, C), C real channels.

* causal (language models): y_i = [(H[0..i, 0..i] - z)^-1 (s_0, ..., s_i)]_i, the last component of the solve of
  the leading block. Forward elimination of the tridiagonal system, whose pivots are 1 / g_i with g the causal
  diagonal of bk_core, gives it exactly:
      y_0 = g_0 s_0,   y_i = g_i (s_i - b_{i-1} y_{i-1}),
  a first-order linear recurrence with coefficient c_i = -b_{i-1} g_i and input g_i s_i. Closed form
  y_i = sum_{j<=i} G_ij s_j with G_ij = [M_i^-1]_ij, G_ii = g_i. M_i is normal with ||M_i^-1|| <= 1 / Im z, so
  |y_i| <= ||s_0..i||_2 / Im z per channel whatever the inputs (docs/design.md).
* bidirectional (encoders only): the full solve x = (H - z)^-1 s, by back substitution after the elimination:
      x_{N-1} = y_{N-1},   x_i = y_i - g_i b_i x_{i+1}.

Exact backward of the causal recurrence (PyTorch's convention: the gradient of a complex tensor w is
dL/dRe w + i dL/dIm w, and a holomorphic y = f(w) gives wbar = conj(f'(w)) ybar): the adjoint is the same kind of
recurrence run backwards,
      lambda_i = ybar_i + conj(c_{i+1}) lambda_{i+1},   ubar_i = conj(g_i) lambda_i   (u_i = s_i - b_{i-1} y_{i-1}),
      sbar_i = Re ubar_i,   gbar_i = sum_c conj(u_i) lambda_i,   bbar_{i-1} = -sum_c Re(conj(y_{i-1}) ubar_i),
and gbar flows on into the diagonal's own exact backward (bk_core) through autograd.

This file holds the public operator, its validation and the reference implementation (plain PyTorch, any
device). The Triton kernels (bk_response_triton) must agree with it.
"""

from __future__ import annotations

import torch

from .bk_core import _as_z_tensor, _use_triton, causal_resolvent

__all__ = ["resolvent_response", "causal_response"]


class _CausalResponse(torch.autograd.Function):
    """y = causal response from the diagonal: g (O, H, N) complex; b_prev like g's real part (b_prev_i = b_{i-1},
    b_prev_0 ignored) or None with the constant b_const; s (O, H, N, C) real. Returns y as real pairs
    (O, H, N, C, 2) of out_dtype, in s's memory order."""

    @staticmethod
    def forward(ctx, g, b_prev, s, b_const: float, out_dtype: torch.dtype, use_triton: bool):
        coupling = b_prev if b_prev is not None else b_const
        if use_triton:
            from . import bk_response_triton

            y = bk_response_triton.response_forward(g, coupling, s, out_dtype)
        else:
            y = torch.view_as_real(_reference_forward(g, coupling, s)).to(out_dtype)
        ctx.save_for_backward(g, b_prev, s, y)
        ctx.b_const, ctx.use_triton = b_const, use_triton
        return y

    @staticmethod
    def backward(ctx, grad_y):
        g, b_prev, s, y = ctx.saved_tensors
        need_g, need_b, need_s = ctx.needs_input_grad[:3]
        coupling = b_prev if b_prev is not None else ctx.b_const
        if ctx.use_triton:
            from . import bk_response_triton

            grad_g, grad_b, grad_s = bk_response_triton.response_backward(g, coupling, s, y, grad_y, need_b)
        else:
            cdtype = g.dtype
            ybar = torch.view_as_complex(grad_y.to(cdtype.to_real()).contiguous())
            y_c = torch.view_as_complex(y.to(cdtype.to_real()).contiguous())
            grad_g, grad_b, grad_s = _reference_backward(g, coupling, s, y_c, ybar)
            grad_s = grad_s.to(s.dtype)
        return (grad_g if need_g else None, grad_b if need_b else None, grad_s if need_s else None,
                None, None, None)


def _time_major(g: torch.Tensor, b_prev, s: torch.Tensor):
    """(N, R) complex g, (N, R) real b_prev or the float, (N, R, C) s, for row-at-a-time loops."""
    n, c = s.shape[-2], s.shape[-1]
    g_t = g.reshape(-1, n).t()
    b_t = b_prev.reshape(-1, n).t() if isinstance(b_prev, torch.Tensor) else b_prev
    s_t = s.reshape(-1, n, c).transpose(0, 1)
    return g_t, b_t, s_t


def _reference_forward(g: torch.Tensor, b_prev, s: torch.Tensor) -> torch.Tensor:
    g_t, b_t, s_t = _time_major(g, b_prev, s.to(g.dtype.to_real()))
    y = torch.empty(s_t.shape, dtype=g.dtype, device=g.device)
    y[0] = g_t[0, :, None] * s_t[0]  # b_{-1} y_{-1} = 0
    for i in range(1, y.shape[0]):
        b_i = b_t[i, :, None] if isinstance(b_t, torch.Tensor) else b_t
        y[i] = g_t[i, :, None] * (s_t[i] - b_i * y[i - 1])
    return y.transpose(0, 1).reshape(s.shape)


def _reference_backward(g: torch.Tensor, b_prev, s: torch.Tensor, y: torch.Tensor, ybar: torch.Tensor):
    g_t, b_t, s_t = _time_major(g, b_prev, s.to(g.dtype.to_real()))
    n, c = s.shape[-2], s.shape[-1]
    y_t = y.reshape(-1, n, c).transpose(0, 1)
    ybar_t = ybar.reshape(-1, n, c).transpose(0, 1)
    grad_s = torch.empty(s_t.shape, dtype=s_t.dtype, device=s.device)
    grad_g = torch.empty_like(g_t)
    grad_b = torch.zeros(g_t.shape, dtype=s_t.dtype, device=s.device) if isinstance(b_t, torch.Tensor) else None
    carry = torch.zeros_like(ybar_t[0])  # conj(c_{i+1}) lambda_{i+1}, 0 past the end
    for i in range(n - 1, -1, -1):
        b_i = (b_t[i, :, None] if isinstance(b_t, torch.Tensor) else b_t) if i > 0 else 0.0
        lam = ybar_t[i] + carry
        ubar = g_t[i, :, None].conj() * lam
        grad_s[i] = ubar.real
        y_prev = y_t[i - 1] if i > 0 else torch.zeros_like(y_t[0])
        u = s_t[i] - b_i * y_prev
        grad_g[i] = (u.conj() * lam).sum(-1)
        if grad_b is not None and i > 0:
            grad_b[i] = -(y_prev.conj() * ubar).real.sum(-1)
        carry = -b_i * ubar  # conj(c_i) lambda_i = -b_{i-1} conj(g_i) lambda_i
    grad_g = grad_g.t().reshape(g.shape)
    grad_b = grad_b.t().reshape(g.shape) if grad_b is not None else None
    return grad_g, grad_b, grad_s.transpose(0, 1).reshape(s.shape)


class _LinearScan(torch.autograd.Function):
    """h_i = coef_i h_{i-1} + x_i along N (h_{-1} = 0): coef (R, N) complex, x (R, N, C) complex; exact adjoint
    mu_i = hbar_i + conj(coef_{i+1}) mu_{i+1}, xbar = mu, coefbar_i = sum_c conj(h_{i-1}) mu_i. The back
    substitution of the bidirectional solve (reference loop on every backend)."""

    @staticmethod
    def forward(ctx, coef, x):
        h = torch.empty_like(x)
        h[:, 0] = x[:, 0]
        for i in range(1, x.shape[1]):
            h[:, i] = coef[:, i, None] * h[:, i - 1] + x[:, i]
        ctx.save_for_backward(coef, h)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        coef, h = ctx.saved_tensors
        mu = torch.empty_like(grad_h)
        grad_coef = torch.zeros_like(coef)
        carry = torch.zeros_like(grad_h[:, 0])
        for i in range(grad_h.shape[1] - 1, -1, -1):
            mu[:, i] = grad_h[:, i] + carry
            if i > 0:
                grad_coef[:, i] = (h[:, i - 1].conj() * mu[:, i]).sum(-1)
            carry = coef[:, i, None].conj() * mu[:, i]
        return grad_coef, mu


def causal_response(g: torch.Tensor, b_prev, s: torch.Tensor, out_dtype: torch.dtype, backend: str = "auto"):
    """The causal response of validated inputs from their causal diagonal g (O, H, N) complex: b_prev (O, H, N)
    real with b_prev_i = b_{i-1} (b_prev_0 ignored) or a float; s (O, H, N, C) real. Returns y as real pairs
    (O, H, N, C, 2) of out_dtype in s's memory order: the mixer reads them as features without a copy."""
    use_triton = _use_triton(g.real, backend)
    if isinstance(b_prev, torch.Tensor):
        return _CausalResponse.apply(g, b_prev, s, 0.0, out_dtype, use_triton)
    return _CausalResponse.apply(g, None, s, float(b_prev), out_dtype, use_triton)


def _shifted_couplings(b, a: torch.Tensor):
    """b_prev_i = b_{i-1} as (..., N) in a's memory order with b_prev_0 = 0, or a float for a constant coupling."""
    n = a.shape[-1]
    if isinstance(b, (int, float)):
        return float(b)
    if not isinstance(b, torch.Tensor) or b.is_complex() or not b.is_floating_point():
        raise TypeError("b must be a real floating-point tensor or a Python float")
    if b.shape[-1:] != (max(n - 1, 0),):
        raise ValueError(f"b must have shape (..., N-1) = (..., {n - 1}), got {tuple(b.shape)}")
    try:
        b = torch.broadcast_to(b.to(a.dtype), a.shape[:-1] + (n - 1,))
    except RuntimeError:
        raise ValueError(f"b of shape {tuple(b.shape)} does not broadcast to the batch shape "
                         f"{tuple(a.shape[:-1])}") from None
    b_prev = torch.zeros_like(a)  # a's memory order: the kernels read a, b and s the same way
    b_prev[..., 1:] = b
    return b_prev


def diagonal_and_response(a: torch.Tensor, b, z, s: torch.Tensor, out_dtype: torch.dtype, backend: str = "auto"):
    """The mixer's pair from validated inputs: the causal diagonal g (O, H, N) complex and the causal response y
    as real pairs (O, H, N, C, 2) of out_dtype in s's memory order. a (O, H, N) real; b (O, H, N-1) real or a
    float; z complex, broadcastable to (O, H); s (O, H, N, C) real."""
    zt = _as_z_tensor(z, a.shape[:-1], a).reshape(-1)
    b_prev = _shifted_couplings(b, a)
    g = causal_resolvent(a, b_prev * b_prev if isinstance(b_prev, torch.Tensor) else b_prev ** 2, zt, backend)
    return g, causal_response(g, b_prev, s, out_dtype, backend)


# Outside torch.compile graphs, as resolvent_diagonal.
@torch.compiler.disable
def resolvent_response(a: torch.Tensor, b, z, s: torch.Tensor, causal: bool = True,
                       backend: str = "auto") -> torch.Tensor:
    """The resolvent of the tridiagonal H(a, b) at spectral shift z applied to the sources s, shape (..., N, C).

    a: real (..., N) diagonal. b: real (..., N-1) couplings or a Python float (constant coupling).
    z: complex number or complex tensor broadcastable to the batch shape, with Im z > 0.
    s: real (..., N, C) sources, C channels sharing each system; its batch shape broadcasts with a's.
    causal=True: y_i = [(H[0..i, 0..i] - z)^-1 s_0..i]_i (depends on positions <= i only).
    causal=False: x = (H - z)^-1 s, the full solve (depends on the whole sequence).
    Returns complex128 for float64 a and s, complex64 otherwise (half precisions are upcast).
    backend: "auto" (Triton kernels for CUDA float32 inputs, the PyTorch reference otherwise), "reference",
    or "triton" (float32; on CPU only under TRITON_INTERPRET=1). The bidirectional back substitution runs as
    a PyTorch loop on every backend.
    """
    if not isinstance(a, torch.Tensor) or a.is_complex() or not a.is_floating_point():
        raise TypeError("a must be a real floating-point tensor")
    if a.dim() == 0:
        raise ValueError("a must have at least one dimension (..., N)")
    if not isinstance(s, torch.Tensor) or s.is_complex() or not s.is_floating_point():
        raise TypeError("s must be a real floating-point tensor (..., N, C)")
    n = a.shape[-1]
    if s.dim() < 2 or s.shape[-2] != n:
        raise ValueError(f"s must have shape (..., N, C) with N = {n} (a's last dimension), got {tuple(s.shape)}")
    dtype = torch.float64 if a.dtype == torch.float64 and s.dtype == torch.float64 else torch.float32
    try:
        batch = torch.broadcast_shapes(a.shape[:-1], s.shape[:-2])
    except RuntimeError:
        raise ValueError(f"s of shape {tuple(s.shape)} does not broadcast to a's batch shape "
                         f"{tuple(a.shape[:-1])}") from None
    a = a.to(dtype).expand(*batch, n)
    s = s.to(dtype).expand(*batch, n, s.shape[-1])
    zt = _as_z_tensor(z, batch, a)
    b_prev = _shifted_couplings(b, a)
    if n == 0 or s.shape[-1] == 0:
        return torch.empty(s.shape, dtype=zt.dtype, device=a.device)
    # (outer, inner, N) and (outer, inner, N, C): views for the usual layouts, e.g. (B, heads, N) of (B, N, heads).
    inner = batch[-1] if batch else 1
    a3, s4, z3 = a.reshape(-1, inner, n), s.reshape(-1, inner, n, s.shape[-1]), zt.reshape(-1, inner)
    b3 = b_prev.reshape(a3.shape)[..., 1:] if isinstance(b_prev, torch.Tensor) else b_prev
    g, y = diagonal_and_response(a3, b3, z3, s4, dtype, backend)
    y = torch.view_as_complex(y)
    if not causal:
        y = _back_substitute(g, _shifted_couplings(b3, a3), y)
    return y.reshape(s.shape)


def _back_substitute(g: torch.Tensor, b_prev, y: torch.Tensor) -> torch.Tensor:
    """x_i = y_i - g_i b_i x_{i+1}: the causal scan over flipped positions with coefficients -g_i b_i."""
    n, c = y.shape[-2], y.shape[-1]
    if isinstance(b_prev, torch.Tensor):
        b_next = torch.cat([b_prev[..., 1:], torch.zeros_like(b_prev[..., :1])], -1)  # b_i, 0 at i = N-1
    else:
        b_next = torch.full(g.shape, float(b_prev), dtype=g.real.dtype, device=g.device)
        b_next[..., -1] = 0.0
    coef = (-g * b_next).reshape(-1, n).flip(-1)
    x = _LinearScan.apply(coef, y.reshape(-1, n, c).flip(1))
    return x.flip(1).reshape(y.shape)

"""BK-Core: the diagonal of the resolvent (H - z)^-1 of a symmetric tridiagonal H, in O(N).

H has diagonal ``a`` (real, length N) and off-diagonal couplings ``b`` (real, length N-1); Im z > 0.

* causal (language models): g_i = [(H[0..i, 0..i] - z)^-1]_{ii}, which depends on positions 0..i only:
      g_0 = 1 / (a_0 - z),   g_i = 1 / (a_i - z - b_{i-1}^2 g_{i-1}).
  By induction Im g_i > 0 and |g_i| <= 1 / Im z, so the recursion can neither overflow nor divide by
  zero; no clamps are needed (docs/design.md).
* bidirectional (encoders only): G_ii = 1 / (a_i - z - b_{i-1}^2 gL_{i-1} - b_i^2 gR_{i+1}) with gL the
  causal recursion from the left and gR the same recursion from the right.

The backward of the causal recursion is exact: a linear first-order scan run backwards (the adjoint),
then elementwise input gradients. The bidirectional form is composed from two causal scans, so
autograd differentiates it exactly through the same adjoint.

This file is the reference implementation (plain PyTorch, any device). Fast kernels must agree with it.
"""

from __future__ import annotations

import torch

__all__ = ["resolvent_diagonal", "causal_resolvent"]


def _complex_dtype(real_dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if real_dtype == torch.float64 else torch.complex64


class _CausalResolvent(torch.autograd.Function):
    """g = causal resolvent diagonal along the last axis: a (O, H, N) real; beta like a (beta_i = b_{i-1}^2,
    beta_0 ignored) or None with the constant beta_const; z (O * H,) complex. Returns g (O, H, N) complex."""

    @staticmethod
    def forward(ctx, a, beta, z, beta_const: float, use_triton: bool):
        if use_triton:
            from . import bk_triton

            g = bk_triton.causal_forward(a, beta if beta is not None else beta_const, z)
        else:
            rows = a.reshape(-1, a.shape[-1])
            coupling = beta.reshape(rows.shape) if beta is not None else beta_const
            g = _reference_forward(rows, coupling, z).reshape(a.shape)
        ctx.save_for_backward(g, beta)
        ctx.beta_const, ctx.use_triton = beta_const, use_triton
        return g

    @staticmethod
    def backward(ctx, grad_g):
        g, beta = ctx.saved_tensors
        need_a, need_beta, need_z = ctx.needs_input_grad[:3]
        coupling = beta if beta is not None else ctx.beta_const
        if ctx.use_triton:
            from . import bk_triton

            grad_a, grad_beta, grad_z = bk_triton.causal_backward(g, grad_g, coupling, need_beta)
        else:
            n = g.shape[-1]
            coupling = coupling.reshape(-1, n) if beta is not None else coupling
            grad_a, grad_beta, grad_z = _reference_backward(g.reshape(-1, n), grad_g.reshape(-1, n), coupling)
            grad_a = grad_a.reshape(g.shape)
            grad_beta = grad_beta.reshape(g.shape) if grad_beta is not None else None
        return (grad_a if need_a else None, grad_beta if need_beta else None, grad_z if need_z else None,
                None, None)


def _reference_forward(a: torch.Tensor, beta, z: torch.Tensor) -> torch.Tensor:
    # Time-major layout so that every step touches one contiguous row.
    shift = (a.t() - z).contiguous()  # (N, M) complex: a_i - z
    beta_t = beta.t().contiguous() if isinstance(beta, torch.Tensor) else None
    g = torch.empty_like(shift)
    g[0] = torch.reciprocal(shift[0])  # beta_0 multiplies g_{-1} = 0
    for i in range(1, shift.shape[0]):
        g[i] = torch.reciprocal(shift[i] - (beta_t[i] if beta_t is not None else beta) * g[i - 1])
    return g.t()


def _reference_backward(g: torch.Tensor, grad_g: torch.Tensor, beta):
    g, grad_t = g.t(), grad_g.t()  # (N, M)
    n = g.shape[0]
    beta_t = beta.t() if isinstance(beta, torch.Tensor) else None
    # PyTorch's complex convention: for holomorphic y = f(w), grad_w = conj(f'(w)) * grad_y.
    # dg_i/dg_{i-1} = beta_i g_i^2, so lambda_i = gbar_i + conj(beta_{i+1} g_{i+1}^2) lambda_{i+1}.
    g2c = (g * g).conj()
    delta = torch.empty_like(g)  # gradient w.r.t. D_i = a_i - z - beta_i g_{i-1} (dg_i/dD_i = -g_i^2)
    lam = torch.zeros_like(g[0])
    for i in range(n - 1, -1, -1):
        lam = grad_t[i] + lam
        delta[i] = -g2c[i] * lam
        lam = -(beta_t[i] if beta_t is not None else (beta if i > 0 else 0.0)) * delta[i]  # conj(-beta_i) delta_i
    grad_a = delta.real.t()
    grad_beta = None
    if beta_t is not None:
        # dD_i/dbeta_i = -g_{i-1} (real beta): grad = Re(conj(-g_{i-1}) delta_i); beta_0 has no g_{-1}.
        g_prev = torch.cat([torch.zeros_like(g[:1]), g[:-1]])
        grad_beta = -(g_prev.conj() * delta).real.t()
    grad_z = -delta.sum(0)  # dD_i/dz = -1
    return grad_a, grad_beta, grad_z


def causal_resolvent(a: torch.Tensor, beta, z: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Causal recursion along the last axis of validated inputs: a (O, H, N), beta like a (beta_0 ignored)
    or a float (constant b^2), z (O * H,). backend: "auto", "reference" or "triton"."""
    use_triton = _use_triton(a, backend)
    if isinstance(beta, torch.Tensor):
        return _CausalResolvent.apply(a, beta, z, 0.0, use_triton)
    return _CausalResolvent.apply(a, None, z, float(beta), use_triton)


BACKENDS = ("auto", "reference", "triton")


def _use_triton(a: torch.Tensor, backend: str) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return a.is_cuda and a.dtype == torch.float32
    if backend == "triton" and a.dtype != torch.float32:
        raise ValueError("the Triton backend computes in float32; pass float32 inputs or backend='reference'")
    return backend == "triton"


def _as_z_tensor(z, batch_shape: torch.Size, a: torch.Tensor) -> torch.Tensor:
    cdtype = _complex_dtype(a.dtype)
    message = "Im z must be > 0 (the resolvent is only bounded off the real axis)"
    if isinstance(z, torch.Tensor):
        if not z.is_complex():
            raise TypeError(f"z must be complex, got dtype {z.dtype}")
        zt = z.to(device=a.device, dtype=cdtype)
        if zt.is_cuda:
            # Checked on the device: a host check would stall the CPU at every layer until the GPU caught up.
            torch._assert_async((zt.imag > 0).all(), message)
        elif bool((zt.imag <= 0).any()):
            raise ValueError(message)
    elif isinstance(z, (complex, float, int)):
        if complex(z).imag <= 0:
            raise ValueError(message)
        zt = torch.tensor(complex(z), dtype=cdtype, device=a.device)
    else:
        raise TypeError(f"z must be a complex number or tensor, got {type(z).__name__}")
    try:
        return torch.broadcast_to(zt, batch_shape)
    except RuntimeError:
        raise ValueError(f"z of shape {tuple(zt.shape)} does not broadcast to the batch shape "
                         f"{tuple(batch_shape)} of a") from None


def _coupling_squares(b, a: torch.Tensor):
    """beta_i = b_{i-1}^2 as (..., N) with beta_0 = 0, or a float for a constant coupling."""
    n = a.shape[-1]
    if isinstance(b, (int, float)):
        return float(b) ** 2
    if not isinstance(b, torch.Tensor) or b.is_complex():
        raise TypeError("b must be a real tensor or a Python float")
    if b.shape[-1:] != (max(n - 1, 0),):
        raise ValueError(f"b must have shape (..., N-1) = (..., {n - 1}), got {tuple(b.shape)}")
    b = b.to(a.dtype)
    try:
        b = torch.broadcast_to(b, a.shape[:-1] + (n - 1,))
    except RuntimeError:
        raise ValueError(f"b of shape {tuple(b.shape)} does not broadcast to a's batch shape "
                         f"{tuple(a.shape[:-1])}") from None
    beta = torch.zeros_like(a)  # same memory order as a: the kernels then read both the same way
    beta[..., 1:] = b * b
    return beta


# Outside torch.compile graphs: inductor has no complex-number code generation, and it failed to compile
# the Triton kernels (bk_triton) when it traced into them (torch 2.11, H100).
@torch.compiler.disable
def resolvent_diagonal(a: torch.Tensor, b, z, causal: bool = True, backend: str = "auto") -> torch.Tensor:
    """Diagonal of the resolvent of the tridiagonal H(a, b) at spectral shift z, shape (..., N).

    a: real (..., N) diagonal. b: real (..., N-1) couplings or a Python float (constant coupling).
    z: complex number or complex tensor broadcastable to a.shape[:-1], with Im z > 0.
    causal=True: g_i of the leading (i+1)x(i+1) block (depends on positions <= i only).
    causal=False: diagonal of the full resolvent (depends on the whole sequence).
    float64 inputs compute in complex128, everything else in complex64 (half precisions are upcast).
    backend: "auto" (Triton kernels for CUDA float32 inputs, the PyTorch reference otherwise),
    "reference", or "triton" (float32 only; on CPU only under TRITON_INTERPRET=1).
    """
    if not isinstance(a, torch.Tensor) or a.is_complex() or not a.is_floating_point():
        raise TypeError("a must be a real floating-point tensor")
    if a.dim() == 0:
        raise ValueError("a must have at least one dimension (..., N)")
    if a.dtype != torch.float64:
        a = a.float()
    batch_shape, n = a.shape[:-1], a.shape[-1]
    zt = _as_z_tensor(z, batch_shape, a)
    beta = _coupling_squares(b, a)
    if n == 0:
        return torch.empty(a.shape, dtype=zt.dtype, device=a.device)
    # (outer, inner, N): a view for the usual layouts, e.g. (B, heads, N) transposed from (B, N, heads).
    shape3 = (-1, a.shape[-2] if a.dim() > 1 else 1, n)
    a3, z1 = a.reshape(shape3), zt.reshape(-1)
    beta3 = beta.reshape(shape3) if isinstance(beta, torch.Tensor) else beta
    if causal:
        g = causal_resolvent(a3, beta3, z1, backend)
    else:
        g = _bidirectional(a3, beta3, z1, backend)
    return g.reshape(a.shape)


def _bidirectional(a: torch.Tensor, beta, z: torch.Tensor, backend: str) -> torch.Tensor:
    g_left = causal_resolvent(a, beta, z, backend)
    zero = torch.zeros_like(g_left[..., :1])
    if isinstance(beta, torch.Tensor):
        # The right-to-left recursion couples position i to i+1 through b_i, i.e. beta_{i+1}: flipping the
        # rows turns it into the causal recursion with couplings flip(beta[1:]) (and an ignored beta_0).
        beta_right = torch.cat([torch.zeros_like(beta[..., :1]), beta[..., 1:].flip(-1)], dim=-1)
        beta_prev, beta_next = beta, torch.cat([beta[..., 1:], torch.zeros_like(beta[..., :1])], dim=-1)
    else:
        beta_right = beta_prev = beta_next = beta
    g_right = causal_resolvent(a.flip(-1), beta_right, z, backend).flip(-1)
    from_left = beta_prev * torch.cat([zero, g_left[..., :-1]], dim=-1)  # b_{i-1}^2 gL_{i-1} (0 at i = 0)
    from_right = beta_next * torch.cat([g_right[..., 1:], zero], dim=-1)  # b_i^2 gR_{i+1} (0 at i = N-1)
    return torch.reciprocal(a - z.reshape(a.shape[:-1])[..., None] - from_left - from_right)

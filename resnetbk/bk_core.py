"""BK-Core: the diagonal of the resolvent (H - z)^-1 of a symmetric tridiagonal H, in O(N).

H has diagonal ``a`` (real, length N) and off-diagonal couplings ``b`` (real, length N-1); Im z > 0.

* causal (language models): g_i = [(H[0..i, 0..i] - z)^-1]_{ii}, which depends on positions 0..i only:
      g_0 = 1 / (a_0 - z),   g_i = 1 / (a_i - z - b_{i-1}^2 g_{i-1}).
  By induction Im g_i > 0 and |g_i| <= 1 / Im z, so the recursion can neither overflow nor divide by
  zero; no clamps are needed (see ../shared/design/bk-core.md).
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
    """g = causal resolvent diagonal of rows: a (M, N) real, beta (M, N) real with beta[:, 0] = 0
    (beta_i = b_{i-1}^2), z (M,) complex. Returns g (M, N) complex."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, beta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # Time-major layout so that every step touches one contiguous row.
        shift = (a.t() - z).contiguous()  # (N, M) complex: a_i - z
        beta_t = beta.t().contiguous()
        g = torch.empty_like(shift)
        prev = torch.zeros_like(shift[0])
        for i in range(shift.shape[0]):
            prev = torch.reciprocal(shift[i] - beta_t[i] * prev)
            g[i] = prev
        ctx.save_for_backward(g, beta_t)
        return g.t()

    @staticmethod
    def backward(ctx, grad_g: torch.Tensor):
        g, beta_t = ctx.saved_tensors  # (N, M)
        grad_t = grad_g.t()
        n = g.shape[0]
        # PyTorch's complex convention: for holomorphic y = f(w), grad_w = conj(f'(w)) * grad_y.
        # dg_i/dg_{i-1} = beta_i g_i^2, so lambda_i = gbar_i + conj(beta_{i+1} g_{i+1}^2) lambda_{i+1}.
        g2c = (g * g).conj()
        delta = torch.empty_like(g)  # gradient w.r.t. D_i = a_i - z - beta_i g_{i-1} (dg_i/dD_i = -g_i^2)
        lam = torch.zeros_like(g[0])
        for i in range(n - 1, -1, -1):
            lam = grad_t[i] + lam
            delta[i] = -g2c[i] * lam
            lam = -beta_t[i] * delta[i]  # carried to g_{i-1}: conj(-beta_i) * delta_i
        grad_a = delta.real.t() if ctx.needs_input_grad[0] else None
        grad_beta = None
        if ctx.needs_input_grad[1]:
            # dD_i/dbeta_i = -g_{i-1} (real beta): grad = Re(conj(-g_{i-1}) delta_i); beta_0 has no g_{-1}.
            g_prev = torch.cat([torch.zeros_like(g[:1]), g[:-1]])
            grad_beta = -(g_prev.conj() * delta).real.t()
        grad_z = -delta.sum(0) if ctx.needs_input_grad[2] else None  # dD_i/dz = -1
        return grad_a, grad_beta, grad_z


def causal_resolvent(a: torch.Tensor, beta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Row-wise causal recursion on already validated, flattened inputs (see _CausalResolvent)."""
    return _CausalResolvent.apply(a, beta, z)


def _as_z_tensor(z, batch_shape: torch.Size, a: torch.Tensor) -> torch.Tensor:
    cdtype = _complex_dtype(a.dtype)
    if isinstance(z, torch.Tensor):
        if not z.is_complex():
            raise TypeError(f"z must be complex, got dtype {z.dtype}")
        zt = z.to(device=a.device, dtype=cdtype)
    elif isinstance(z, (complex, float, int)):
        zt = torch.tensor(complex(z), dtype=cdtype, device=a.device)
    else:
        raise TypeError(f"z must be a complex number or tensor, got {type(z).__name__}")
    if bool((zt.imag <= 0).any()):
        raise ValueError("Im z must be > 0 (the resolvent is only bounded off the real axis)")
    try:
        return torch.broadcast_to(zt, batch_shape)
    except RuntimeError:
        raise ValueError(f"z of shape {tuple(zt.shape)} does not broadcast to the batch shape {tuple(batch_shape)} of a") from None


def _coupling_squares(b, a: torch.Tensor) -> torch.Tensor:
    """beta (..., N) with beta_0 = 0 and beta_i = b_{i-1}^2."""
    n = a.shape[-1]
    if isinstance(b, (int, float)):
        beta = torch.full_like(a, float(b) ** 2)
        beta[..., 0] = 0
        return beta
    if not isinstance(b, torch.Tensor) or b.is_complex():
        raise TypeError("b must be a real tensor or a Python float")
    if b.shape[-1:] != (max(n - 1, 0),):
        raise ValueError(f"b must have shape (..., N-1) = (..., {n - 1}), got {tuple(b.shape)}")
    b = b.to(a.dtype)
    try:
        b = torch.broadcast_to(b, a.shape[:-1] + (n - 1,))
    except RuntimeError:
        raise ValueError(f"b of shape {tuple(b.shape)} does not broadcast to a's batch shape {tuple(a.shape[:-1])}") from None
    return torch.cat([torch.zeros_like(a[..., :1]), b * b], dim=-1)


def resolvent_diagonal(a: torch.Tensor, b, z, causal: bool = True) -> torch.Tensor:
    """Diagonal of the resolvent of the tridiagonal H(a, b) at spectral shift z, shape (..., N).

    a: real (..., N) diagonal. b: real (..., N-1) couplings or a Python float (constant coupling).
    z: complex number or complex tensor broadcastable to a.shape[:-1], with Im z > 0.
    causal=True: g_i of the leading (i+1)x(i+1) block (depends on positions <= i only).
    causal=False: diagonal of the full resolvent (depends on the whole sequence).
    float64 inputs compute in complex128, everything else in complex64 (half precisions are upcast).
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
    rows = batch_shape.numel()
    a2, beta2, z2 = a.reshape(rows, n), beta.reshape(rows, n), zt.reshape(rows)
    if causal:
        g = causal_resolvent(a2, beta2, z2)
    else:
        g = _bidirectional(a2, beta2, z2)
    return g.reshape(*batch_shape, n)


def _bidirectional(a: torch.Tensor, beta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    g_left = causal_resolvent(a, beta, z)
    # The right-to-left recursion couples position i to i+1 through b_i, i.e. beta_{i+1}:
    # flipping the rows turns it into the causal recursion with couplings flip(beta[1:]) and a leading 0.
    beta_right = torch.cat([torch.zeros_like(beta[:, :1]), beta[:, 1:].flip(-1)], dim=-1)
    g_right = causal_resolvent(a.flip(-1), beta_right, z).flip(-1)
    zero = torch.zeros_like(g_left[:, :1])
    from_left = beta * torch.cat([zero, g_left[:, :-1]], dim=-1)  # b_{i-1}^2 gL_{i-1}
    from_right = torch.cat([beta[:, 1:], beta[:, :1]], dim=-1) * torch.cat([g_right[:, 1:], zero], dim=-1)  # b_i^2 gR_{i+1}
    return torch.reciprocal(a - z[:, None] - from_left - from_right)

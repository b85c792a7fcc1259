"""Triton kernels for the causal resolvent diagonal (forward and exact backward).

The causal recursion g_i = 1 / (alpha_i - beta_i g_{i-1}), alpha_i = a_i - z, is a Moebius map per
position: in projective coordinates (p, q) with g = p / q, one step is
    [p, q] <- [q, alpha_i q - beta_i p],  the 2x2 matrix [[0, 1], [-beta_i, alpha_i]].
Rows (batch x heads) are independent; along a row the sequence is cut into chunks of CHUNK positions:
  1. chunk_maps: each (row, chunk) multiplies its CHUNK matrices in float64 (rescaled as it goes, which
     a projective map ignores), so no overflow and no float32 loss however long the row;
  2. chunk_scan: per row, the chunks' maps are applied in order to find the g entering each chunk;
  3. chunk_outputs: each (row, chunk) runs the float32 recursion from its exact entering value.
The backward is the same three steps on the adjoint, a linear recurrence run from the end:
  mu_i = k_i + m_i mu_{i+1},  k_i = conj(g_i^2) gbar_i,  m_i = beta_{i+1} conj(g_i^2),
with grad a_i = -Re mu_i, grad beta_i = Re(conj(g_{i-1}) mu_i), grad z = sum_i mu_i (this is the
adjoint of resnetbk.bk_core written with mu_i = -delta_i).

Every row needs only O(N / CHUNK) float64 summaries in memory. Complex values are (re, im) float pairs.
Tensors are 3-D (outer, inner, N) with arbitrary strides (row r = (r // inner, r % inner)), and outputs
are allocated in the input's memory order. The BK mixer passes its potentials as a (B, heads, N) view
of a (B, N, heads) tensor: nothing is copied, and at each position the lanes of a warp touch
consecutive heads, so loads and stores are contiguous.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Chosen by `benchmarks/bk_core.py --sweep-only` on an H100 (docs/performance.md): longer chunks mean fewer
# float64 map summaries and a shorter scan across chunks; 64 rows per program keep enough programs in flight.
CHUNK = 128
BLOCK_ROWS = 64


@triton.jit
def _row_offset(rows, inner, s0, s1):
    return (rows // inner) * s0 + (rows % inner) * s1


@triton.jit
def _chunk_maps_fwd(a_ptr, beta_ptr, zr_ptr, zi_ptr, maps_ptr, R, N, n_chunks, inner,
                    s_a0, s_a1, s_an, s_b0, s_b1, s_bn, beta_const,
                    HAS_BETA: tl.constexpr, CHUNK: tl.constexpr, BLOCK_ROWS: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    c = tl.program_id(1)
    rmask = rows < R
    a_row = a_ptr + _row_offset(rows, inner, s_a0, s_a1)
    b_row = beta_ptr + _row_offset(rows, inner, s_b0, s_b1)
    zr = tl.load(zr_ptr + rows, mask=rmask, other=0.0).to(tl.float64)
    zi = tl.load(zi_ptr + rows, mask=rmask, other=1.0).to(tl.float64)
    # P = identity; P <- M_i P for each position of the chunk. Row 0 of P is (A, B), row 1 is (C, D).
    one = tl.full([BLOCK_ROWS], 1.0, tl.float64)
    zero = tl.zeros([BLOCK_ROWS], tl.float64)
    ar, ai, br, bi = one, zero, zero, zero
    cr, ci, dr, di = zero, zero, one, zero
    start = c * CHUNK
    for j in range(CHUNK):
        i = start + j
        m = rmask & ((rows * 0 + i) < N)  # broadcast explicitly (the interpreter rejects scalar masks)
        alr = tl.load(a_row + i * s_an, mask=m, other=0.0).to(tl.float64) - zr
        ali = -zi
        if HAS_BETA:
            beta = tl.load(b_row + i * s_bn, mask=m, other=0.0).to(tl.float64)
        else:
            beta = tl.where(i == 0, 0.0, beta_const).to(tl.float64)
        # new row 0 = old row 1; new row 1 = -beta * row 0 + alpha * row 1
        ncr = -beta * ar + (alr * cr - ali * ci)
        nci = -beta * ai + (alr * ci + ali * cr)
        ndr = -beta * br + (alr * dr - ali * di)
        ndi = -beta * bi + (alr * di + ali * dr)
        ar = tl.where(m, cr, ar)
        ai = tl.where(m, ci, ai)
        br = tl.where(m, dr, br)
        bi = tl.where(m, di, bi)
        cr = tl.where(m, ncr, cr)
        ci = tl.where(m, nci, ci)
        dr = tl.where(m, ndr, dr)
        di = tl.where(m, ndi, di)
        if j % 4 == 3:
            # Rescale every 4 steps (projectively free): entries grow at most by about |alpha| + beta per
            # step, nowhere near float64's range in 4 steps, and stay near 1 whatever the potentials.
            s = tl.maximum(tl.maximum(tl.abs(cr) + tl.abs(ci), tl.abs(dr) + tl.abs(di)),
                           tl.maximum(tl.abs(ar) + tl.abs(ai), tl.abs(br) + tl.abs(bi)))
            inv = 1.0 / tl.where(s > 0, s, 1.0)
            ar, ai, br, bi = ar * inv, ai * inv, br * inv, bi * inv
            cr, ci, dr, di = cr * inv, ci * inv, dr * inv, di * inv
    base = maps_ptr + (rows * n_chunks + c) * 8
    tl.store(base + 0, ar, mask=rmask)
    tl.store(base + 1, ai, mask=rmask)
    tl.store(base + 2, br, mask=rmask)
    tl.store(base + 3, bi, mask=rmask)
    tl.store(base + 4, cr, mask=rmask)
    tl.store(base + 5, ci, mask=rmask)
    tl.store(base + 6, dr, mask=rmask)
    tl.store(base + 7, di, mask=rmask)


@triton.jit
def _chunk_scan_fwd(maps_ptr, gin_ptr, R, n_chunks, BLOCK_ROWS: tl.constexpr):
    """g entering chunk c = (maps of chunks c-1 ... 0) applied to g_{-1} = 0, as (A g + B) / (C g + D)."""
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    rmask = rows < R
    gr = tl.zeros([BLOCK_ROWS], tl.float64)
    gi = tl.zeros([BLOCK_ROWS], tl.float64)
    for c in range(n_chunks):
        out = gin_ptr + (rows * n_chunks + c) * 2
        tl.store(out, gr.to(tl.float32), mask=rmask)
        tl.store(out + 1, gi.to(tl.float32), mask=rmask)
        base = maps_ptr + (rows * n_chunks + c) * 8
        ar = tl.load(base + 0, mask=rmask, other=1.0)
        ai = tl.load(base + 1, mask=rmask, other=0.0)
        br = tl.load(base + 2, mask=rmask, other=0.0)
        bi = tl.load(base + 3, mask=rmask, other=0.0)
        cr = tl.load(base + 4, mask=rmask, other=0.0)
        ci = tl.load(base + 5, mask=rmask, other=0.0)
        dr = tl.load(base + 6, mask=rmask, other=1.0)
        di = tl.load(base + 7, mask=rmask, other=0.0)
        nr = ar * gr - ai * gi + br
        ni = ar * gi + ai * gr + bi
        er = cr * gr - ci * gi + dr
        ei = cr * gi + ci * gr + di
        den = er * er + ei * ei
        gr = (nr * er + ni * ei) / den
        gi = (ni * er - nr * ei) / den


@triton.jit
def _chunk_outputs_fwd(a_ptr, beta_ptr, zr_ptr, zi_ptr, gin_ptr, g_ptr, R, N, n_chunks, inner,
                       s_a0, s_a1, s_an, s_b0, s_b1, s_bn, s_g0, s_g1, s_gn, beta_const,
                       HAS_BETA: tl.constexpr, CHUNK: tl.constexpr, BLOCK_ROWS: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    c = tl.program_id(1)
    rmask = rows < R
    a_row = a_ptr + _row_offset(rows, inner, s_a0, s_a1)
    b_row = beta_ptr + _row_offset(rows, inner, s_b0, s_b1)
    g_row = g_ptr + _row_offset(rows, inner, s_g0, s_g1)
    zr = tl.load(zr_ptr + rows, mask=rmask, other=0.0)
    zi = tl.load(zi_ptr + rows, mask=rmask, other=1.0)
    gin = gin_ptr + (rows * n_chunks + c) * 2
    gr = tl.load(gin, mask=rmask, other=0.0)
    gi = tl.load(gin + 1, mask=rmask, other=0.0)
    start = c * CHUNK
    for j in range(CHUNK):
        i = start + j
        m = rmask & ((rows * 0 + i) < N)  # broadcast explicitly (the interpreter rejects scalar masks)
        a = tl.load(a_row + i * s_an, mask=m, other=0.0)
        if HAS_BETA:
            beta = tl.load(b_row + i * s_bn, mask=m, other=0.0)
        else:
            beta = tl.where(i == 0, 0.0, beta_const)
        dr = a - zr - beta * gr
        di = -zi - beta * gi
        inv = 1.0 / (dr * dr + di * di)
        gr = dr * inv
        gi = -di * inv
        out = g_row + i * s_gn
        tl.store(out, gr, mask=m)
        tl.store(out + 1, gi, mask=m)


@triton.jit
def _load_adjoint_coeffs(g_row, gbar_row, b_row, rows, i, N, m, s_gn, s_un, s_bn, beta_const,
                         HAS_BETA: tl.constexpr):
    """k_i = conj(g_i^2) gbar_i and m_i = beta_{i+1} conj(g_i^2), float32, plus g_i."""
    gp = g_row + i * s_gn
    gr = tl.load(gp, mask=m, other=0.0)
    gi = tl.load(gp + 1, mask=m, other=0.0)
    up = gbar_row + i * s_un
    ur = tl.load(up, mask=m, other=0.0)
    ui = tl.load(up + 1, mask=m, other=0.0)
    m_next = m & ((rows * 0 + i + 1) < N)
    if HAS_BETA:
        beta_next = tl.load(b_row + (i + 1) * s_bn, mask=m_next, other=0.0)
    else:
        beta_next = tl.where(m_next, beta_const, 0.0)
    sr = gr * gr - gi * gi  # conj(g^2) = sr - i si
    si = 2.0 * gr * gi
    kr = sr * ur + si * ui
    ki = sr * ui - si * ur
    return gr, gi, kr, ki, beta_next * sr, -beta_next * si


@triton.jit
def _chunk_maps_bwd(g_ptr, gbar_ptr, beta_ptr, maps_ptr, R, N, n_chunks, inner,
                    s_g0, s_g1, s_gn, s_u0, s_u1, s_un, s_b0, s_b1, s_bn, beta_const,
                    HAS_BETA: tl.constexpr, CHUNK: tl.constexpr, BLOCK_ROWS: tl.constexpr):
    """Affine map of chunk c from end to start: mu_start = A mu_in + B (mu_in = mu at the next chunk's start)."""
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    c = tl.program_id(1)
    rmask = rows < R
    g_row = g_ptr + _row_offset(rows, inner, s_g0, s_g1)
    u_row = gbar_ptr + _row_offset(rows, inner, s_u0, s_u1)
    b_row = beta_ptr + _row_offset(rows, inner, s_b0, s_b1)
    Ar = tl.full([BLOCK_ROWS], 1.0, tl.float64)
    Ai = tl.zeros([BLOCK_ROWS], tl.float64)
    Br = tl.zeros([BLOCK_ROWS], tl.float64)
    Bi = tl.zeros([BLOCK_ROWS], tl.float64)
    start = c * CHUNK
    for jj in range(CHUNK):
        i = start + CHUNK - 1 - jj
        m = rmask & ((rows * 0 + i) < N)  # broadcast explicitly (the interpreter rejects scalar masks)
        _, _, kr, ki, mr, mi = _load_adjoint_coeffs(g_row, u_row, b_row, rows, i, N, m, s_gn, s_un, s_bn,
                                                    beta_const, HAS_BETA)
        kr, ki, mr, mi = kr.to(tl.float64), ki.to(tl.float64), mr.to(tl.float64), mi.to(tl.float64)
        # mu_i = k_i + m_i (A mu_in + B)
        nAr = mr * Ar - mi * Ai
        nAi = mr * Ai + mi * Ar
        nBr = kr + mr * Br - mi * Bi
        nBi = ki + mr * Bi + mi * Br
        Ar = tl.where(m, nAr, Ar)
        Ai = tl.where(m, nAi, Ai)
        Br = tl.where(m, nBr, Br)
        Bi = tl.where(m, nBi, Bi)
    base = maps_ptr + (rows * n_chunks + c) * 4
    tl.store(base + 0, Ar, mask=rmask)
    tl.store(base + 1, Ai, mask=rmask)
    tl.store(base + 2, Br, mask=rmask)
    tl.store(base + 3, Bi, mask=rmask)


@triton.jit
def _chunk_scan_bwd(maps_ptr, muin_ptr, R, n_chunks, BLOCK_ROWS: tl.constexpr):
    """mu entering chunk c from the right = (maps of chunks c+1 ... last) applied to mu_N = 0."""
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    rmask = rows < R
    ur = tl.zeros([BLOCK_ROWS], tl.float64)
    ui = tl.zeros([BLOCK_ROWS], tl.float64)
    for cc in range(n_chunks):
        c = n_chunks - 1 - cc
        out = muin_ptr + (rows * n_chunks + c) * 2
        tl.store(out, ur.to(tl.float32), mask=rmask)
        tl.store(out + 1, ui.to(tl.float32), mask=rmask)
        base = maps_ptr + (rows * n_chunks + c) * 4
        Ar = tl.load(base + 0, mask=rmask, other=1.0)
        Ai = tl.load(base + 1, mask=rmask, other=0.0)
        Br = tl.load(base + 2, mask=rmask, other=0.0)
        Bi = tl.load(base + 3, mask=rmask, other=0.0)
        nr = Ar * ur - Ai * ui + Br
        ni = Ar * ui + Ai * ur + Bi
        ur = nr
        ui = ni


@triton.jit
def _chunk_outputs_bwd(g_ptr, gbar_ptr, beta_ptr, muin_ptr, grad_a_ptr, grad_beta_ptr, grad_z_ptr,
                       R, N, n_chunks, inner, s_g0, s_g1, s_gn, s_u0, s_u1, s_un, s_b0, s_b1, s_bn,
                       s_d0, s_d1, s_dn, s_e0, s_e1, s_en, beta_const,
                       HAS_BETA: tl.constexpr, CHUNK: tl.constexpr, BLOCK_ROWS: tl.constexpr):
    """grad a (strides s_d*) and grad beta (strides s_e*) for chunk c, and its partial sum for grad z."""
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    c = tl.program_id(1)
    rmask = rows < R
    g_row = g_ptr + _row_offset(rows, inner, s_g0, s_g1)
    u_row = gbar_ptr + _row_offset(rows, inner, s_u0, s_u1)
    b_row = beta_ptr + _row_offset(rows, inner, s_b0, s_b1)
    da_row = grad_a_ptr + _row_offset(rows, inner, s_d0, s_d1)
    db_row = grad_beta_ptr + _row_offset(rows, inner, s_e0, s_e1)
    mu_in = muin_ptr + (rows * n_chunks + c) * 2
    ur = tl.load(mu_in, mask=rmask, other=0.0)
    ui = tl.load(mu_in + 1, mask=rmask, other=0.0)
    zsr = tl.zeros([BLOCK_ROWS], tl.float32)
    zsi = tl.zeros([BLOCK_ROWS], tl.float32)
    start = c * CHUNK
    # mu_{i+1} times conj(g_i) gives grad beta_{i+1}: carry (mu_{i+1}) while walking backwards.
    for jj in range(CHUNK):
        i = start + CHUNK - 1 - jj
        m = rmask & ((rows * 0 + i) < N)  # broadcast explicitly (the interpreter rejects scalar masks)
        gr, gi, kr, ki, mr, mi = _load_adjoint_coeffs(g_row, u_row, b_row, rows, i, N, m, s_gn, s_un, s_bn,
                                                      beta_const, HAS_BETA)
        if HAS_BETA:
            # grad beta_{i+1} = Re(conj(g_i) mu_{i+1})
            tl.store(db_row + (i + 1) * s_en, gr * ur + gi * ui, mask=m & ((rows * 0 + i + 1) < N))
        nur = kr + mr * ur - mi * ui
        nui = ki + mr * ui + mi * ur
        ur = tl.where(m, nur, ur)
        ui = tl.where(m, nui, ui)
        tl.store(da_row + i * s_dn, -ur, mask=m)
        zsr += tl.where(m, ur, 0.0)
        zsi += tl.where(m, ui, 0.0)
    if HAS_BETA:
        # beta_0 multiplies g_{-1} = 0: its gradient is 0 (written by the chunk holding position 0).
        tl.store(db_row, tl.zeros([BLOCK_ROWS], tl.float32), mask=rmask & ((rows * 0 + c) == 0))
    zp = grad_z_ptr + (rows * n_chunks + c) * 2
    tl.store(zp, zsr, mask=rmask)
    tl.store(zp + 1, zsi, mask=rmask)


def _grid(R: int, n_chunks: int, block_rows: int):
    return (triton.cdiv(R, block_rows), n_chunks)


def _block_rows(R: int) -> int:
    # Fewer rows than a block leave lanes idle; small row counts get narrower blocks.
    return max(16, min(BLOCK_ROWS, triton.next_power_of_2(R)))


def _warps(block_rows: int) -> int:
    return max(1, block_rows // 32)  # one row per thread


def _empty_like_order(a: torch.Tensor, trailing: tuple = (), dtype=torch.float32) -> torch.Tensor:
    """An uninitialised tensor shaped like `a` (+ trailing dims) laid out in a's memory order."""
    order = sorted(range(a.dim()), key=lambda d: -a.stride(d))
    t = torch.empty([a.shape[d] for d in order] + list(trailing), dtype=dtype, device=a.device)
    inverse = [order.index(d) for d in range(a.dim())] + [a.dim() + k for k in range(len(trailing))]
    return t.permute(inverse)


def causal_forward(a: torch.Tensor, beta, z: torch.Tensor, chunk: int | None = None,
                   block_rows: int | None = None) -> torch.Tensor:
    """a (outer, inner, N) float32, any strides; beta the same shape (beta[..., 0] ignored) or a float
    (constant b^2); z (outer * inner,) complex. Returns g (outer, inner, N) complex64 in a's memory order."""
    O, H, N = a.shape
    R = O * H
    chunk = chunk or CHUNK
    n_chunks = triton.cdiv(N, chunk)
    rows_per_block = block_rows or _block_rows(R)
    has_beta = isinstance(beta, torch.Tensor)
    beta_t = beta if has_beta else a
    zr, zi = z.real.float().contiguous(), z.imag.float().contiguous()
    maps = torch.empty(R, n_chunks, 8, dtype=torch.float64, device=a.device)
    gin = torch.empty(R, n_chunks, 2, dtype=torch.float32, device=a.device)
    g = _empty_like_order(a, (2,))
    beta_const = 0.0 if has_beta else float(beta)
    grid = _grid(R, n_chunks, rows_per_block)
    ab = (*a.stride(), *beta_t.stride())
    if n_chunks > 1:
        _chunk_maps_fwd[grid](a, beta_t, zr, zi, maps, R, N, n_chunks, H, *ab, beta_const,
                              HAS_BETA=has_beta, CHUNK=chunk, BLOCK_ROWS=rows_per_block, num_warps=_warps(rows_per_block))
        _chunk_scan_fwd[(grid[0],)](maps, gin, R, n_chunks, BLOCK_ROWS=rows_per_block, num_warps=_warps(rows_per_block))
    else:
        gin.zero_()
    _chunk_outputs_fwd[grid](a, beta_t, zr, zi, gin, g, R, N, n_chunks, H, *ab, *g.stride()[:3], beta_const,
                             HAS_BETA=has_beta, CHUNK=chunk, BLOCK_ROWS=rows_per_block, num_warps=_warps(rows_per_block))
    return torch.view_as_complex(g)


def causal_backward(g: torch.Tensor, grad_g: torch.Tensor, beta, need_beta: bool, chunk: int | None = None,
                    block_rows: int | None = None):
    """g, grad_g (outer, inner, N) complex; beta as in causal_forward. Returns (grad_a float32 in g's
    memory order, grad_beta in beta's memory order or None, grad_z (outer * inner,) complex64)."""
    O, H, N = g.shape
    R = O * H
    chunk = chunk or CHUNK
    n_chunks = triton.cdiv(N, chunk)
    rows_per_block = block_rows or _block_rows(R)
    has_beta = isinstance(beta, torch.Tensor)
    g_real = torch.view_as_real(g)
    gbar = torch.view_as_real(grad_g.to(torch.complex64).resolve_conj())
    beta_t = beta if has_beta else g_real[..., 0]
    beta_const = 0.0 if has_beta else float(beta)
    maps = torch.empty(R, n_chunks, 4, dtype=torch.float64, device=g.device)
    muin = torch.empty(R, n_chunks, 2, dtype=torch.float32, device=g.device)
    grad_a = _empty_like_order(g_real[..., 0])
    grad_beta = _empty_like_order(beta_t) if has_beta else grad_a
    zpart = torch.empty(R, n_chunks, 2, dtype=torch.float32, device=g.device)
    grid = _grid(R, n_chunks, rows_per_block)
    gub = (*g_real.stride()[:3], *gbar.stride()[:3], *beta_t.stride())
    if n_chunks > 1:
        _chunk_maps_bwd[grid](g_real, gbar, beta_t, maps, R, N, n_chunks, H, *gub, beta_const,
                              HAS_BETA=has_beta, CHUNK=chunk, BLOCK_ROWS=rows_per_block, num_warps=_warps(rows_per_block))
        _chunk_scan_bwd[(grid[0],)](maps, muin, R, n_chunks, BLOCK_ROWS=rows_per_block, num_warps=_warps(rows_per_block))
    else:
        muin.zero_()
    _chunk_outputs_bwd[grid](g_real, gbar, beta_t, muin, grad_a, grad_beta, zpart, R, N, n_chunks, H, *gub,
                             *grad_a.stride(), *grad_beta.stride(), beta_const,
                             HAS_BETA=has_beta, CHUNK=chunk, BLOCK_ROWS=rows_per_block, num_warps=_warps(rows_per_block))
    grad_z = torch.view_as_complex(zpart.sum(1))
    return grad_a, (grad_beta if has_beta and need_beta else None), grad_z

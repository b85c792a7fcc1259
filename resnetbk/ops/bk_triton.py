"""Triton kernels for the causal resolvent diagonal (forward and exact backward).

The causal recursion g_i = 1 / (alpha_i - beta_i g_{i-1}), alpha_i = a_i - z, is a Moebius map per
position: in projective coordinates (p, q) with g = p / q, one step is
    [p, q] <- [q, alpha_i q - beta_i p],  the 2x2 matrix [[0, 1], [-beta_i, alpha_i]].
Rows (batch x heads) are independent; along a row the sequence is cut into chunks of CHUNK positions, one
program per (block of rows, chunk), each reading its inputs once and writing its outputs once.

Forward. A chunk needs the g entering it. Im z > 0 and beta >= 0 keep every g in the upper half plane, and
the map T of the HALO positions before the chunk sends the whole upper half plane into a disk: its centre
is the entering g to within the disk's radius, a certificate computed from T alone (float64). Where the
radius is below CERT_TOL x |centre| (contracting rows: large Im z, disordered potentials) the chunk
starts at once. Elsewhere the halo grows 4x per round up to MAX_HALO, and if that fails too the chunk
waits for its predecessor's last g, as the sequential recursion would. Either way the chunk then runs
the float32 recursion and publishes its last g.

Backward. The adjoint is a linear recurrence run from the end:
  mu_i = k_i + m_i mu_{i+1},  k_i = conj(g_i^2) gbar_i,  m_i = beta_{i+1} conj(g_i^2),
with grad a_i = -Re mu_i, grad beta_i = Re(conj(g_{i-1}) mu_i), grad z = sum_i mu_i (the adjoint of
resnetbk.bk_core written with mu_i = -delta_i). No certificate bounds mu, so chunks use a decoupled
look-back: each computes its affine map mu_start = A mu_in + B in float64; if its successor's mu is
not out yet it publishes (A, B), then walks back over published maps until it meets a published mu.

Programs take tickets from an atomic counter in an order where everything a program waits for holds
an earlier ticket, so waiting cannot deadlock. Under TRITON_INTERPRET=1 programs run one after another,
so the look-back never sees an unfinished chunk; LOOKBACK_TEST hides published values to test it.

Complex values are (re, im) float pairs. Tensors are 3-D (outer, inner, N) with arbitrary strides
(row r = (r // inner, r % inner)), and outputs are allocated in the input's memory order. The BK mixer
passes (B, heads, N) views of (B, N, heads) tensors: nothing is copied, and at each position the lanes
of a warp touch consecutive heads, so loads and stores are contiguous.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Chosen by `benchmarks/kernels/bk_core.py --sweep` on an H100 (docs/performance.md).
CHUNK = 256
BLOCK_ROWS = 32
HALO = 32
MAX_HALO = 2048  # uncertified rows extend their halo up to this length before waiting
CERT_TOL = 2.0**-24  # a float32 half-ulp: a certified entering g is as good as the sequential one
GROUP = 8  # positions whose loads are issued together (see _fwd_outputs)


@triton.jit
def _row_offset(rows, inner, s0, s1):
    return (rows // inner) * s0 + (rows % inner) * s1


@triton.jit
def _load_at(row, i, s_n, rows, rmask, N):
    return tl.load(row + i * s_n, mask=rmask & ((rows * 0 + i) < N), other=0.0)


@triton.jit
def _beta_at(b_row, i, s_bn, rows, rmask, N, beta_const, HAS_BETA: tl.constexpr):
    if HAS_BETA:
        return _load_at(b_row, i, s_bn, rows, rmask, N)
    else:
        return tl.where(i == 0, 0.0, beta_const)


@triton.jit
def _cmul(xr, xi, yr, yi):
    return xr * yr - xi * yi, xr * yi + xi * yr


@triton.jit
def _cdiv(xr, xi, yr, yi):
    den = yr * yr + yi * yi
    return (xr * yr + xi * yi) / den, (xi * yr - xr * yi) / den


# ---------------------------------------------------------------------------------------------- forward


@triton.jit
def _mobius_step(ar, ai, br, bi, cr, ci, dr, di, alr, ali, beta):
    """P <- M_i P with M_i = [[0, 1], [-beta_i, alpha_i]]: row 0 takes row 1, row 1 = -beta row 0 + alpha row 1."""
    return (cr, ci, dr, di,
            -beta * ar + (alr * cr - ali * ci), -beta * ai + (alr * ci + ali * cr),
            -beta * br + (alr * dr - ali * di), -beta * bi + (alr * di + ali * dr))


@triton.jit
def _pow2_rescale(ar, ai, br, bi, cr, ci, dr, di):
    """Divide by the power of two at or below the largest entry: exact, and free for a projective map."""
    s = tl.maximum(tl.maximum(tl.maximum(tl.abs(ar), tl.abs(ai)), tl.maximum(tl.abs(br), tl.abs(bi))),
                   tl.maximum(tl.maximum(tl.abs(cr), tl.abs(ci)), tl.maximum(tl.abs(dr), tl.abs(di))))
    e = (s.to(tl.int64, bitcast=True) >> 52) & 0x7FF
    inv = ((2046 - e) << 52).to(tl.float64, bitcast=True)
    return ar * inv, ai * inv, br * inv, bi * inv, cr * inv, ci * inv, dr * inv, di * inv


@triton.jit
def _mobius_step_at(a_row, b_row, i, zr, zi, rows, rmask, N, s_an, s_bn, beta_const, ar, ai, br, bi, cr, ci, dr, di,
                    HAS_BETA: tl.constexpr):
    """_mobius_step with position i's alpha and beta loaded (i < N), in float64."""
    alr = tl.load(a_row + i * s_an, mask=rmask, other=0.0).to(tl.float64) - zr
    beta = _beta_at(b_row, i, s_bn, rows, rmask, N, beta_const, HAS_BETA).to(tl.float64)
    return _mobius_step(ar, ai, br, bi, cr, ci, dr, di, alr, -zi, beta)


@triton.jit
def _mobius_map(a_row, b_row, zr, zi, rows, rmask, start, count, N, s_an, s_bn, beta_const,
                HAS_BETA: tl.constexpr, BLOCK_ROWS: tl.constexpr):
    """The float64 map of positions [start, start + count) (all < N), as rows (A, B), (C, D)."""
    one = tl.full([BLOCK_ROWS], 1.0, tl.float64)
    zero = tl.zeros([BLOCK_ROWS], tl.float64)
    ar, ai, br, bi = one, zero, zero, zero
    cr, ci, dr, di = zero, zero, one, zero
    n_full = count // 8 * 8
    for j0 in range(0, n_full, 8):
        for u in tl.static_range(8):
            ar, ai, br, bi, cr, ci, dr, di = _mobius_step_at(a_row, b_row, start + j0 + u, zr, zi, rows, rmask, N,
                                                             s_an, s_bn, beta_const, ar, ai, br, bi, cr, ci, dr, di,
                                                             HAS_BETA)
        # Entries change by at most a factor of about |alpha| + beta per step: 8 steps stay far inside float64.
        ar, ai, br, bi, cr, ci, dr, di = _pow2_rescale(ar, ai, br, bi, cr, ci, dr, di)
    for j in range(n_full, count):
        ar, ai, br, bi, cr, ci, dr, di = _mobius_step_at(a_row, b_row, start + j, zr, zi, rows, rmask, N, s_an, s_bn,
                                                         beta_const, ar, ai, br, bi, cr, ci, dr, di, HAS_BETA)
    return _pow2_rescale(ar, ai, br, bi, cr, ci, dr, di)


@triton.jit
def _matmul(ar, ai, br, bi, cr, ci, dr, di, pr, pi, qr, qi, ur, ui, vr, vi):
    """[[A, B], [C, D]] @ [[P, Q], [U, V]], complex."""
    t1r, t1i = _cmul(ar, ai, pr, pi)
    t2r, t2i = _cmul(br, bi, ur, ui)
    t3r, t3i = _cmul(ar, ai, qr, qi)
    t4r, t4i = _cmul(br, bi, vr, vi)
    t5r, t5i = _cmul(cr, ci, pr, pi)
    t6r, t6i = _cmul(dr, di, ur, ui)
    t7r, t7i = _cmul(cr, ci, qr, qi)
    t8r, t8i = _cmul(dr, di, vr, vi)
    return t1r + t2r, t1i + t2i, t3r + t4r, t3i + t4i, t5r + t6r, t5i + t6i, t7r + t8r, t7i + t8i


@triton.jit
def _certificate(ar, ai, br, bi, cr, ci, dr, di, zi, rmask, cert_tol):
    """The centre of T(upper half plane) and whether its radius is below cert_tol x |centre|.

    T maps the upper half plane onto the disk with centre T(-conj(D / C)) and radius
    |AD - BC| / |C conj(D) - conj(C) D|; the entering g lies inside it. A singular T (a zero coupling in
    the halo, or position 0 in it) is constant: its value anywhere, e.g. at i, is exact, so it is always
    certified (AD - BC can also cancel to exactly 0 when T is rank one to float64 precision). NaN or infinite
    radii fail the strict test; so does Im z <= 0 (no invariant half plane). cert_tol < 0 certifies nothing."""
    d1r, d1i = _cmul(ar, ai, dr, di)
    d2r, d2i = _cmul(br, bi, cr, ci)
    det = tl.sqrt((d1r - d2r) * (d1r - d2r) + (d1i - d2i) * (d1i - d2i))
    gap = 2.0 * tl.abs(ci * dr - cr * di)  # |C conj(D) - conj(C) D| = 2 |Im(C conj(D))|
    singular = det == 0
    qr, qi = _cdiv(dr, di, tl.where(singular, 1.0, cr), ci)
    wr = tl.where(singular, 0.0, -qr)
    wi = tl.where(singular, 1.0, qi)
    nr, ni = _cmul(ar, ai, wr, wi)
    er, ei = _cmul(cr, ci, wr, wi)
    gr, gi = _cdiv(nr + br, ni + bi, er + dr, ei + di)
    radius = tl.where(singular, 0.0, det / gap)
    ok = singular | (radius < cert_tol * tl.sqrt(gr * gr + gi * gi))
    return gr, gi, rmask & (zi > 0) & (cert_tol >= 0) & ok


@triton.jit
def _fwd_step(g_row, i, s_gn, a, beta, gr, gi, zr, zi, rows, rmask, N):
    xr = a - zr - beta * gr
    xi = -zi - beta * gi
    inv = 1.0 / (xr * xr + xi * xi)
    gr = xr * inv
    gi = -xi * inv
    m = rmask & ((rows * 0 + i) < N)
    out = g_row + i * s_gn
    tl.store(out, gr, mask=m)
    tl.store(out + 1, gi, mask=m)
    return gr, gi


@triton.jit
def _fwd_outputs(a_row, b_row, g_row, gr, gi, zr, zi, rows, rmask, start, N, s_an, s_bn, s_gn, beta_const,
                 HAS_BETA: tl.constexpr, CHUNK: tl.constexpr):
    """The float32 recursion over the chunk from the entering g, storing every g; returns the last one.

    The compiler may not move a load above a store that could alias it, so a plain loop waits a full
    memory latency per position; here the 8 loads of a group are written out before its stores."""
    for j0 in range(0, CHUNK, 8):
        i = start + j0
        a0 = _load_at(a_row, i, s_an, rows, rmask, N)
        a1 = _load_at(a_row, i + 1, s_an, rows, rmask, N)
        a2 = _load_at(a_row, i + 2, s_an, rows, rmask, N)
        a3 = _load_at(a_row, i + 3, s_an, rows, rmask, N)
        a4 = _load_at(a_row, i + 4, s_an, rows, rmask, N)
        a5 = _load_at(a_row, i + 5, s_an, rows, rmask, N)
        a6 = _load_at(a_row, i + 6, s_an, rows, rmask, N)
        a7 = _load_at(a_row, i + 7, s_an, rows, rmask, N)
        b0 = _beta_at(b_row, i, s_bn, rows, rmask, N, beta_const, HAS_BETA)
        b1 = _beta_at(b_row, i + 1, s_bn, rows, rmask, N, beta_const, HAS_BETA)
        b2 = _beta_at(b_row, i + 2, s_bn, rows, rmask, N, beta_const, HAS_BETA)
        b3 = _beta_at(b_row, i + 3, s_bn, rows, rmask, N, beta_const, HAS_BETA)
        b4 = _beta_at(b_row, i + 4, s_bn, rows, rmask, N, beta_const, HAS_BETA)
        b5 = _beta_at(b_row, i + 5, s_bn, rows, rmask, N, beta_const, HAS_BETA)
        b6 = _beta_at(b_row, i + 6, s_bn, rows, rmask, N, beta_const, HAS_BETA)
        b7 = _beta_at(b_row, i + 7, s_bn, rows, rmask, N, beta_const, HAS_BETA)
        gr, gi = _fwd_step(g_row, i, s_gn, a0, b0, gr, gi, zr, zi, rows, rmask, N)
        gr, gi = _fwd_step(g_row, i + 1, s_gn, a1, b1, gr, gi, zr, zi, rows, rmask, N)
        gr, gi = _fwd_step(g_row, i + 2, s_gn, a2, b2, gr, gi, zr, zi, rows, rmask, N)
        gr, gi = _fwd_step(g_row, i + 3, s_gn, a3, b3, gr, gi, zr, zi, rows, rmask, N)
        gr, gi = _fwd_step(g_row, i + 4, s_gn, a4, b4, gr, gi, zr, zi, rows, rmask, N)
        gr, gi = _fwd_step(g_row, i + 5, s_gn, a5, b5, gr, gi, zr, zi, rows, rmask, N)
        gr, gi = _fwd_step(g_row, i + 6, s_gn, a6, b6, gr, gi, zr, zi, rows, rmask, N)
        gr, gi = _fwd_step(g_row, i + 7, s_gn, a7, b7, gr, gi, zr, zi, rows, rmask, N)
    return gr, gi


@triton.jit
def _causal_fwd(a_ptr, beta_ptr, zr_ptr, zi_ptr, g_ptr, last_ptr, flag_ptr, ticket_ptr,
                R, N, n_chunks, n_rb, inner, s_a0, s_a1, s_an, s_b0, s_b1, s_bn, s_g0, s_g1, s_gn,
                beta_const, cert_tol,
                HAS_BETA: tl.constexpr, CHUNK: tl.constexpr, BLOCK_ROWS: tl.constexpr, HALO: tl.constexpr,
                MAX_HALO: tl.constexpr):
    # Chunk-major tickets: a chunk's predecessor (same rows) always holds an earlier ticket.
    t = tl.atomic_add(ticket_ptr, 1)
    c = t // n_rb
    rows = (t % n_rb) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    rmask = rows < R
    a_row = a_ptr + _row_offset(rows, inner, s_a0, s_a1)
    b_row = beta_ptr + _row_offset(rows, inner, s_b0, s_b1)
    zr = tl.load(zr_ptr + rows, mask=rmask, other=0.0)
    zi = tl.load(zi_ptr + rows, mask=rmask, other=1.0)
    start = c * CHUNK
    gin_r = tl.zeros([BLOCK_ROWS], tl.float64)  # g_{-1} = 0 enters chunk 0
    gin_i = tl.zeros([BLOCK_ROWS], tl.float64)
    certified = rmask
    if c > 0:
        zr64, zi64 = zr.to(tl.float64), zi.to(tl.float64)
        h0 = tl.maximum(start - HALO, 0)
        ar, ai, br, bi, cr, ci, dr, di = _mobius_map(a_row, b_row, zr64, zi64, rows,
                                                     rmask, h0, start - h0, N, s_an, s_bn, beta_const,
                                                     HAS_BETA, BLOCK_ROWS)
        gin_r, gin_i, ok = _certificate(ar, ai, br, bi, cr, ci, dr, di, zi, rmask, cert_tol)
        # Rows left uncertified extend their halo back, 4x longer each round, before they resort to waiting.
        h = h0
        while (tl.sum((rmask & ~ok).to(tl.int32)) > 0) & (h > 0) & (start - h < MAX_HALO):
            h1 = tl.maximum(h - 3 * (start - h), 0)
            pr, pi, qr, qi, ur, ui, vr, vi = _mobius_map(a_row, b_row, zr64, zi64, rows,
                                                         rmask, h1, h - h1, N, s_an, s_bn, beta_const,
                                                         HAS_BETA, BLOCK_ROWS)
            ar, ai, br, bi, cr, ci, dr, di = _matmul(ar, ai, br, bi, cr, ci, dr, di, pr, pi, qr, qi, ur, ui, vr, vi)
            ar, ai, br, bi, cr, ci, dr, di = _pow2_rescale(ar, ai, br, bi, cr, ci, dr, di)
            gin_r, gin_i, ok = _certificate(ar, ai, br, bi, cr, ci, dr, di, zi, rmask, cert_tol)
            h = h1
        certified = ok
        # The other rows wait for the predecessor's last g (no-ops when every row is certified).
        waiting = rmask & ~certified
        prev = flag_ptr + rows * n_chunks + c - 1
        f = tl.atomic_add(prev, 0, mask=waiting)
        while tl.sum((waiting & (f == 0)).to(tl.int32)) > 0:
            f = tl.atomic_add(prev, 0, mask=waiting)
        # Reading f after the loop is a no-op here, but Triton 3.6 miscompiles a while loop whose result is
        # never used (RemoveLayoutConversions fails).
        waiting = waiting & (f != 0)
        lp = last_ptr + (rows * n_chunks + c - 1) * 2
        gin_r = tl.where(waiting, tl.load(lp, mask=waiting, other=0.0).to(tl.float64), gin_r)
        gin_i = tl.where(waiting, tl.load(lp + 1, mask=waiting, other=0.0).to(tl.float64), gin_i)
    g_row = g_ptr + _row_offset(rows, inner, s_g0, s_g1)
    gr, gi = _fwd_outputs(a_row, b_row, g_row, gin_r.to(tl.float32), gin_i.to(tl.float32), zr, zi, rows, rmask,
                          start, N, s_an, s_bn, s_gn, beta_const, HAS_BETA, CHUNK)
    own = rows * n_chunks + c
    tl.store(last_ptr + own * 2, gr, mask=rmask)
    tl.store(last_ptr + own * 2 + 1, gi, mask=rmask)
    # 1: the chunk started from the certificate (or is chunk 0); 2: it waited for its predecessor.
    tl.atomic_xchg(flag_ptr + own, 2 - certified.to(tl.int32), mask=rmask)


# --------------------------------------------------------------------------------------------- backward


@triton.jit
def _adj_load(g_row, u_row, b_row, i, rows, rmask, N, s_gn, s_un, s_bn, beta_const, HAS_BETA: tl.constexpr):
    """g_i, gbar_i and beta_{i+1} (0 past the end)."""
    m = rmask & ((rows * 0 + i) < N)
    gr = tl.load(g_row + i * s_gn, mask=m, other=0.0)
    gi = tl.load(g_row + i * s_gn + 1, mask=m, other=0.0)
    ur = tl.load(u_row + i * s_un, mask=m, other=0.0)
    ui = tl.load(u_row + i * s_un + 1, mask=m, other=0.0)
    m_next = m & ((rows * 0 + i + 1) < N)
    if HAS_BETA:
        bn = tl.load(b_row + (i + 1) * s_bn, mask=m_next, other=0.0)
    else:
        bn = tl.where(m_next, beta_const, 0.0)
    return gr, gi, ur, ui, bn


@triton.jit
def _adj_coeffs(gr, gi, ur, ui, bn):
    """k = conj(g^2) gbar and m = beta_next conj(g^2)."""
    sr = gr * gr - gi * gi
    si = 2.0 * gr * gi
    return sr * ur + si * ui, sr * ui - si * ur, bn * sr, -bn * si


@triton.jit
def _affine_step(g_row, u_row, b_row, i, rows, rmask, N, s_gn, s_un, s_bn, beta_const, Ar, Ai, Br, Bi,
                 HAS_BETA: tl.constexpr):
    """(A, B) <- (m_i A, k_i + m_i B), in float64."""
    gr, gi, ur, ui, bn = _adj_load(g_row, u_row, b_row, i, rows, rmask, N, s_gn, s_un, s_bn, beta_const, HAS_BETA)
    kr, ki, mr, mi = _adj_coeffs(gr, gi, ur, ui, bn)
    kr, ki, mr, mi = kr.to(tl.float64), ki.to(tl.float64), mr.to(tl.float64), mi.to(tl.float64)
    return mr * Ar - mi * Ai, mr * Ai + mi * Ar, kr + mr * Br - mi * Bi, ki + mr * Bi + mi * Br


@triton.jit
def _affine_map(g_row, u_row, b_row, rows, rmask, start, count, N, s_gn, s_un, s_bn, beta_const,
                HAS_BETA: tl.constexpr, BLOCK_ROWS: tl.constexpr):
    """The float64 map of positions [start, start + count) from end to start: mu_start = A mu_in + B."""
    Ar = tl.full([BLOCK_ROWS], 1.0, tl.float64)
    Ai = tl.zeros([BLOCK_ROWS], tl.float64)
    Br = tl.zeros([BLOCK_ROWS], tl.float64)
    Bi = tl.zeros([BLOCK_ROWS], tl.float64)
    last = start + count - 1
    n_full = count // 8 * 8
    for j0 in range(0, n_full, 8):  # unrolled so that the loads of 8 positions are in flight together
        for u in tl.static_range(8):
            Ar, Ai, Br, Bi = _affine_step(g_row, u_row, b_row, last - j0 - u, rows, rmask, N, s_gn, s_un, s_bn,
                                          beta_const, Ar, Ai, Br, Bi, HAS_BETA)
    for j in range(n_full, count):
        Ar, Ai, Br, Bi = _affine_step(g_row, u_row, b_row, last - j, rows, rmask, N, s_gn, s_un, s_bn,
                                      beta_const, Ar, Ai, Br, Bi, HAS_BETA)
    return Ar, Ai, Br, Bi


@triton.jit
def _bwd_step(da_row, db_row, i, s_dn, s_en, gr, gi, ur, ui, bn, mur, mui, zsr, zsi, rows, rmask, N,
              HAS_BETA: tl.constexpr):
    """mu_i from mu_{i+1}; stores grad a_i and grad beta_{i+1}, adds mu_i to the grad z partial sum."""
    m = rmask & ((rows * 0 + i) < N)
    kr, ki, mr, mi = _adj_coeffs(gr, gi, ur, ui, bn)
    if HAS_BETA:
        # grad beta_{i+1} = Re(conj(g_i) mu_{i+1})
        tl.store(db_row + (i + 1) * s_en, gr * mur + gi * mui, mask=m & ((rows * 0 + i + 1) < N))
    nur = kr + mr * mur - mi * mui
    nui = ki + mr * mui + mi * mur
    mur = tl.where(m, nur, mur)
    mui = tl.where(m, nui, mui)
    tl.store(da_row + i * s_dn, -mur, mask=m)
    return mur, mui, zsr + tl.where(m, mur, 0.0), zsi + tl.where(m, mui, 0.0)


@triton.jit
def _bwd_outputs(g_row, u_row, b_row, da_row, db_row, mur, mui, rows, rmask, start, N,
                 s_gn, s_un, s_bn, s_dn, s_en, beta_const, HAS_BETA: tl.constexpr, CHUNK: tl.constexpr,
                 BLOCK_ROWS: tl.constexpr):
    """The float32 adjoint down the chunk from mu entering at its end; returns the chunk's sum of mu."""
    zsr = tl.zeros([BLOCK_ROWS], tl.float32)
    zsi = tl.zeros([BLOCK_ROWS], tl.float32)
    for j0 in range(0, CHUNK, 8):  # loads of 8 positions written out before their stores, as forward
        i = start + CHUNK - 1 - j0
        g0r, g0i, u0r, u0i, n0 = _adj_load(g_row, u_row, b_row, i, rows, rmask, N, s_gn, s_un, s_bn,
                                           beta_const, HAS_BETA)
        g1r, g1i, u1r, u1i, n1 = _adj_load(g_row, u_row, b_row, i - 1, rows, rmask, N, s_gn, s_un, s_bn,
                                           beta_const, HAS_BETA)
        g2r, g2i, u2r, u2i, n2 = _adj_load(g_row, u_row, b_row, i - 2, rows, rmask, N, s_gn, s_un, s_bn,
                                           beta_const, HAS_BETA)
        g3r, g3i, u3r, u3i, n3 = _adj_load(g_row, u_row, b_row, i - 3, rows, rmask, N, s_gn, s_un, s_bn,
                                           beta_const, HAS_BETA)
        g4r, g4i, u4r, u4i, n4 = _adj_load(g_row, u_row, b_row, i - 4, rows, rmask, N, s_gn, s_un, s_bn,
                                           beta_const, HAS_BETA)
        g5r, g5i, u5r, u5i, n5 = _adj_load(g_row, u_row, b_row, i - 5, rows, rmask, N, s_gn, s_un, s_bn,
                                           beta_const, HAS_BETA)
        g6r, g6i, u6r, u6i, n6 = _adj_load(g_row, u_row, b_row, i - 6, rows, rmask, N, s_gn, s_un, s_bn,
                                           beta_const, HAS_BETA)
        g7r, g7i, u7r, u7i, n7 = _adj_load(g_row, u_row, b_row, i - 7, rows, rmask, N, s_gn, s_un, s_bn,
                                           beta_const, HAS_BETA)
        mur, mui, zsr, zsi = _bwd_step(da_row, db_row, i, s_dn, s_en, g0r, g0i, u0r, u0i, n0, mur, mui, zsr, zsi,
                                       rows, rmask, N, HAS_BETA)
        mur, mui, zsr, zsi = _bwd_step(da_row, db_row, i - 1, s_dn, s_en, g1r, g1i, u1r, u1i, n1, mur, mui, zsr, zsi,
                                       rows, rmask, N, HAS_BETA)
        mur, mui, zsr, zsi = _bwd_step(da_row, db_row, i - 2, s_dn, s_en, g2r, g2i, u2r, u2i, n2, mur, mui, zsr, zsi,
                                       rows, rmask, N, HAS_BETA)
        mur, mui, zsr, zsi = _bwd_step(da_row, db_row, i - 3, s_dn, s_en, g3r, g3i, u3r, u3i, n3, mur, mui, zsr, zsi,
                                       rows, rmask, N, HAS_BETA)
        mur, mui, zsr, zsi = _bwd_step(da_row, db_row, i - 4, s_dn, s_en, g4r, g4i, u4r, u4i, n4, mur, mui, zsr, zsi,
                                       rows, rmask, N, HAS_BETA)
        mur, mui, zsr, zsi = _bwd_step(da_row, db_row, i - 5, s_dn, s_en, g5r, g5i, u5r, u5i, n5, mur, mui, zsr, zsi,
                                       rows, rmask, N, HAS_BETA)
        mur, mui, zsr, zsi = _bwd_step(da_row, db_row, i - 6, s_dn, s_en, g6r, g6i, u6r, u6i, n6, mur, mui, zsr, zsi,
                                       rows, rmask, N, HAS_BETA)
        mur, mui, zsr, zsi = _bwd_step(da_row, db_row, i - 7, s_dn, s_en, g7r, g7i, u7r, u7i, n7, mur, mui, zsr, zsi,
                                       rows, rmask, N, HAS_BETA)
    return zsr, zsi


@triton.jit
def _causal_bwd(g_ptr, gbar_ptr, beta_ptr, grad_a_ptr, grad_beta_ptr, grad_z_ptr, agg_ptr, incl_ptr, flag_ptr,
                ticket_ptr, R, N, n_chunks, n_rb, inner, s_g0, s_g1, s_gn, s_u0, s_u1, s_un, s_b0, s_b1, s_bn,
                s_d0, s_d1, s_dn, s_e0, s_e1, s_en, beta_const,
                HAS_BETA: tl.constexpr, CHUNK: tl.constexpr, BLOCK_ROWS: tl.constexpr,
                LOOKBACK_TEST: tl.constexpr):
    t = tl.atomic_add(ticket_ptr, 1)
    c = n_chunks - 1 - t // n_rb  # last chunk first: the adjoint runs from the end
    rows = (t % n_rb) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    rmask = rows < R
    g_row = g_ptr + _row_offset(rows, inner, s_g0, s_g1)
    u_row = gbar_ptr + _row_offset(rows, inner, s_u0, s_u1)
    b_row = beta_ptr + _row_offset(rows, inner, s_b0, s_b1)
    start = c * CHUNK
    Ar, Ai, Br, Bi = _affine_map(g_row, u_row, b_row, rows, rmask, start, tl.minimum(N - start, CHUNK), N,
                                 s_gn, s_un, s_bn, beta_const, HAS_BETA, BLOCK_ROWS)
    own = rows * n_chunks + c
    in_r = tl.zeros([BLOCK_ROWS], tl.float64)  # mu_N = 0 enters the last chunk
    in_i = tl.zeros([BLOCK_ROWS], tl.float64)
    j = c + 1
    has_next = rmask & ((rows * 0 + j) < n_chunks)
    f = tl.where(has_next, tl.atomic_add(flag_ptr + rows * n_chunks + j, 0, mask=has_next), 2)
    if (tl.min(f) < 2) | (LOOKBACK_TEST > 0):
        # The next chunk's mu is not out yet: publish this chunk's map for the chunks before it.
        tl.store(agg_ptr + own * 4, Ar, mask=rmask)
        tl.store(agg_ptr + own * 4 + 1, Ai, mask=rmask)
        tl.store(agg_ptr + own * 4 + 2, Br, mask=rmask)
        tl.store(agg_ptr + own * 4 + 3, Bi, mask=rmask)
        tl.atomic_xchg(flag_ptr + own, 1, mask=rmask)
    if c < n_chunks - 1:
        # mu entering this chunk = P x_j + Q, with x_j the mu at the start of chunk j.
        Pr = tl.full([BLOCK_ROWS], 1.0, tl.float64)
        Pi = tl.zeros([BLOCK_ROWS], tl.float64)
        Qr = tl.zeros([BLOCK_ROWS], tl.float64)
        Qi = tl.zeros([BLOCK_ROWS], tl.float64)
        done = ~rmask
        while (j < n_chunks) & (tl.sum((~done).to(tl.int32)) > 0):
            while tl.sum((~done & (f == 0)).to(tl.int32)) > 0:
                f = tl.atomic_add(flag_ptr + rows * n_chunks + j, 0, mask=~done)
            ready = ~done & (f == 2)
            ip = incl_ptr + (rows * n_chunks + j) * 2
            yr, yi = _cmul(Pr, Pi, tl.load(ip, mask=ready, other=0.0), tl.load(ip + 1, mask=ready, other=0.0))
            in_r = tl.where(ready, yr + Qr, in_r)
            in_i = tl.where(ready, yi + Qi, in_i)
            done = done | ready
            more = ~done
            mp = agg_ptr + (rows * n_chunks + j) * 4
            t1r, t1i = _cmul(Pr, Pi, tl.load(mp + 2, mask=more, other=0.0), tl.load(mp + 3, mask=more, other=0.0))
            t2r, t2i = _cmul(Pr, Pi, tl.load(mp, mask=more, other=1.0), tl.load(mp + 1, mask=more, other=0.0))
            Qr = tl.where(more, t1r + Qr, Qr)
            Qi = tl.where(more, t1i + Qi, Qi)
            Pr = tl.where(more, t2r, Pr)
            Pi = tl.where(more, t2i, Pi)
            j += 1
            f = tl.atomic_add(flag_ptr + rows * n_chunks + j, 0, mask=more & ((rows * 0 + j) < n_chunks))
        in_r = tl.where(done, in_r, Qr)  # rows that walked past the last chunk: mu_N = 0
        in_i = tl.where(done, in_i, Qi)
    o1r, o1i = _cmul(Ar, Ai, in_r, in_i)
    tl.store(incl_ptr + own * 2, o1r + Br, mask=rmask)
    tl.store(incl_ptr + own * 2 + 1, o1i + Bi, mask=rmask)
    hide = (LOOKBACK_TEST == 2) | ((LOOKBACK_TEST == 1) & ((n_chunks - 1 - c) % 2 == 1))
    tl.atomic_xchg(flag_ptr + own, 2, mask=rmask & ((rows * 0 + hide.to(tl.int32)) == 0))
    da_row = grad_a_ptr + _row_offset(rows, inner, s_d0, s_d1)
    db_row = grad_beta_ptr + _row_offset(rows, inner, s_e0, s_e1)
    zsr, zsi = _bwd_outputs(g_row, u_row, b_row, da_row, db_row, in_r.to(tl.float32), in_i.to(tl.float32), rows,
                            rmask, start, N, s_gn, s_un, s_bn, s_dn, s_en, beta_const, HAS_BETA, CHUNK, BLOCK_ROWS)
    if HAS_BETA:
        # beta_0 multiplies g_{-1} = 0: its gradient is 0 (written by the chunk holding position 0).
        tl.store(db_row, tl.zeros([BLOCK_ROWS], tl.float32), mask=rmask & ((rows * 0 + c) == 0))
    tl.store(grad_z_ptr + own * 2, zsr, mask=rmask)
    tl.store(grad_z_ptr + own * 2 + 1, zsi, mask=rmask)


# ------------------------------------------------------------------------------------------------ wrappers


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


def _grid(shape, chunk: int | None, block_rows: int | None):
    """(rows, chunk, chunks per row, rows per program, row blocks) for an (outer, inner, N) tensor."""
    chunk = chunk or CHUNK
    if chunk <= 0 or chunk % GROUP:
        raise ValueError(f"chunk must be a positive multiple of {GROUP}, got {chunk}")
    rows = shape[0] * shape[1]
    rows_per_block = block_rows or _block_rows(rows)
    return rows, chunk, triton.cdiv(shape[2], chunk), rows_per_block, triton.cdiv(rows, rows_per_block)


def causal_forward(a: torch.Tensor, beta, z: torch.Tensor, chunk: int | None = None,
                   block_rows: int | None = None, cert_tol: float | None = None, return_flags: bool = False):
    """a (outer, inner, N) float32, any strides; beta the same shape (beta[..., 0] ignored) or a float
    (constant b^2 >= 0); z (outer * inner,) complex with Im z > 0. Returns g (outer, inner, N) complex64 in
    a's memory order; with return_flags also the (rows, chunks) int32 flags: 1 where a chunk started from
    its certificate (or is the first), 2 where it waited for its predecessor. cert_tol < 0 makes every
    chunk after the first wait (for tests)."""
    H, N = a.shape[1:]
    R, chunk, n_chunks, rows_per_block, n_rb = _grid(a.shape, chunk, block_rows)
    has_beta = isinstance(beta, torch.Tensor)
    beta_t = beta if has_beta else a
    zr, zi = z.real.float().contiguous(), z.imag.float().contiguous()
    last = torch.empty(R, n_chunks, 2, dtype=torch.float32, device=a.device)
    sync = torch.zeros(R * n_chunks + 1, dtype=torch.int32, device=a.device)  # flags, then the ticket counter
    g = _empty_like_order(a, (2,))
    _causal_fwd[(n_rb * n_chunks,)](
        a, beta_t, zr, zi, g, last, sync, sync[R * n_chunks:], R, N, n_chunks, n_rb, H,
        *a.stride(), *beta_t.stride(), *g.stride()[:3], 0.0 if has_beta else float(beta),
        CERT_TOL if cert_tol is None else cert_tol,
        HAS_BETA=has_beta, CHUNK=chunk, BLOCK_ROWS=rows_per_block, HALO=HALO, MAX_HALO=MAX_HALO,
        num_warps=_warps(rows_per_block))
    g = torch.view_as_complex(g)
    return (g, sync[:R * n_chunks].view(R, n_chunks)) if return_flags else g


def causal_backward(g: torch.Tensor, grad_g: torch.Tensor, beta, need_beta: bool, chunk: int | None = None,
                    block_rows: int | None = None, lookback_test: int = 0):
    """g, grad_g (outer, inner, N) complex; beta as in causal_forward. Returns (grad_a float32 in g's
    memory order, grad_beta in beta's memory order or None, grad_z (outer * inner,) complex64).
    lookback_test (tests only): 1 hides every other chunk's mu, 2 all of them, forcing the look-back."""
    H, N = g.shape[1:]
    R, chunk, n_chunks, rows_per_block, n_rb = _grid(g.shape, chunk, block_rows)
    has_beta = isinstance(beta, torch.Tensor)
    g_real = torch.view_as_real(g)
    gbar = torch.view_as_real(grad_g.to(torch.complex64).resolve_conj())
    beta_t = beta if has_beta else g_real[..., 0]
    agg = torch.empty(R, n_chunks, 4, dtype=torch.float64, device=g.device)
    incl = torch.empty(R, n_chunks, 2, dtype=torch.float64, device=g.device)
    sync = torch.zeros(R * n_chunks + 1, dtype=torch.int32, device=g.device)
    grad_a = _empty_like_order(g_real[..., 0])
    grad_beta = _empty_like_order(beta_t) if has_beta else grad_a
    zpart = torch.empty(R, n_chunks, 2, dtype=torch.float32, device=g.device)
    _causal_bwd[(n_rb * n_chunks,)](
        g_real, gbar, beta_t, grad_a, grad_beta, zpart, agg, incl, sync, sync[R * n_chunks:],
        R, N, n_chunks, n_rb, H, *g_real.stride()[:3], *gbar.stride()[:3], *beta_t.stride(),
        *grad_a.stride(), *grad_beta.stride(), 0.0 if has_beta else float(beta),
        HAS_BETA=has_beta, CHUNK=chunk, BLOCK_ROWS=rows_per_block, LOOKBACK_TEST=lookback_test,
        num_warps=_warps(rows_per_block))
    grad_z = torch.view_as_complex(zpart.sum(1))
    return grad_a, (grad_beta if has_beta and need_beta else None), grad_z

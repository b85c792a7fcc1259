"""Triton kernels for the causal BK response y_i = g_i (s_i - b_{i-1} y_{i-1}) (forward and exact backward).

Rows r = (outer, head), as in bk_triton; the C channels of a row share its g and b. A program owns a tile of
BLOCK_R rows x BLOCK_C channels (all C channels of each row, so the backward's sums over channels stay in
registers) and one chunk of CHUNK positions; at each position the tile is BLOCK_R x C consecutive values in the
mixer's (B, N, heads, C) layout, so loads and stores are contiguous.

Forward. With c_i = -b_{i-1} g_i and x_i = g_i s_i, a chunk maps the y entering it affinely:
y_end = P y_in + Q, P = prod c_i (one complex number per row), Q the chunk's recurrence from y_in = 0. Decoupled
look-back: each program computes (P, Q) in a first pass over its chunk and publishes them, walks back to the
nearest chunk that has published its inclusive (leaving) y, or to position 0, applies the published maps of the
chunks in between in order, publishes its own inclusive y, and runs the chunk again from the right y_in, storing
y. Applying the maps in sequence order repeats the float operations of a sequential chain of chunks, so the
result does not depend on which chunks were done first. The second pass reads what the first just read, mostly
from L2.
Backward. The adjoint lambda_i = ybar_i + q_i with the carry q_i = conj(c_{i+1}) lambda_{i+1} runs from the end:
a chunk maps q affinely (q_out = A q_in + B, A = prod conj(c_i)), with the same look-back in reverse, then its
second pass stores sbar_i = Re(conj(g_i) lambda_i) and the per-row sums gbar_i = sum_c conj(u_i) lambda_i and
bbar_{i-1} = -sum_c Re(conj(y_{i-1}) conj(g_i) lambda_i), u_i = s_i - b_{i-1} y_{i-1} (resnetbk/ops/bk_response.py).

Accuracy in float32. The chunked recurrence performs the sequential one's operations regrouped: a rounding error
made at position j reaches y_i multiplied by prod_{k=j+1..i} c_k = G_ij / g_j, and |G_ij| <= 1 / Im z, while
|g_j| >= 1 / (|a_j - z| + b_{j-1}^2 / Im z). So the relative error is at most a few float32 ulps times
(|a| + |z| + b^2 / Im z) / Im z summed over the positions that matter; the row of G is l2-bounded, so in practice
the error stays near the diagonal's. tests/test_bk_response.py measures it down to Im z = bk_im_z_min.

Programs take tickets from an atomic counter in an order where everything a program waits for holds an earlier
ticket, so waiting cannot deadlock. A flag covers a whole tile, stored by every thread of the program and raised
by one: a barrier comes before raising it and after reading it (CUB's decoupled look-back does the same). Under
TRITON_INTERPRET=1 programs run one after another; LOOKBACK_TEST hides published inclusive values so that the tests
walk the look-back over aggregates. Complex values are (re, im) float pairs; y and its gradient are real pairs in
the output dtype (the mixer's compute dtype), so the mixer's features are a view of the kernel's output.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .bk_triton import _empty_like_order, _row_offset

TILE = 256  # rows x channels per program
CHUNKS = (256, 128, 64, 32)  # the longest that still gives every multiprocessor several programs is used
GROUP = tl.constexpr(4)  # positions per unrolled group (their loads issued before their stores: _fwd_outputs)


@triton.jit
def _coeffs(g_row, b_row, i, s_gn, s_bn, rows, rmask, N, b_const, HAS_B: tl.constexpr):
    """g_i, b_{i-1} and c_i = -b_{i-1} g_i of the rows; past the end c = 1, so a chunk's map carries y through."""
    at = rows * 0 + i  # the position as a vector, so that masks combine elementwise
    valid = rmask & (at < N)
    gr = tl.load(g_row + i * s_gn, mask=valid, other=0.0)
    gi = tl.load(g_row + i * s_gn + 1, mask=valid, other=0.0)
    if HAS_B:
        bp = tl.load(b_row + i * s_bn, mask=valid & (at > 0), other=0.0)
    else:
        bp = tl.where(valid & (at > 0), b_const, 0.0)
    cr = tl.where(valid, -bp * gr, 1.0)
    ci = tl.where(valid, -bp * gi, 0.0)
    return gr, gi, bp, cr, ci


@triton.jit
def _at_position(tmask, i, lo, hi):
    """tmask where lo <= i < hi (the position broadcast to the tile, so that masks combine elementwise)."""
    at = tmask.to(tl.int32) * 0 + i
    return tmask & (at >= lo) & (at < hi)


@triton.jit
def _tile_load(tile, i, s_n, tmask, N):
    return tl.load(tile + i * s_n, mask=_at_position(tmask, i, 0, N), other=0.0).to(tl.float32)


@triton.jit
def _cmul(xr, xi, yr, yi):
    return xr * yr - xi * yi, xr * yi + xi * yr


# ---------------------------------------------------------------------------------------------- forward


@triton.jit
def _fwd_map(g_row, b_row, s_tile, rows, rmask, tmask, start, N, s_gn, s_bn, s_sn, b_const,
             HAS_B: tl.constexpr, CHUNK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """(P, Q) of the chunk: P = prod c_i per row, Q the recurrence from y_in = 0 (no stores: loads pipeline)."""
    Pr = tl.full([BLOCK_R], 1.0, tl.float32)
    Pi = tl.zeros([BLOCK_R], tl.float32)
    Qr = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    Qi = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    for j0 in range(0, CHUNK, GROUP):
        for u in tl.static_range(GROUP):
            i = start + j0 + u
            gr, gi, bp, cr, ci = _coeffs(g_row, b_row, i, s_gn, s_bn, rows, rmask, N, b_const, HAS_B)
            sv = _tile_load(s_tile, i, s_sn, tmask, N)
            Qr, Qi = _cmul(cr[:, None], ci[:, None], Qr, Qi)
            Qr += gr[:, None] * sv
            Qi += gi[:, None] * sv
            Pr, Pi = _cmul(cr, ci, Pr, Pi)
    return Pr, Pi, Qr, Qi


@triton.jit
def _fwd_step(y_tile, i, s_yn, tmask, N, yr, yi, gr, gi, cr, ci, sv):
    yr, yi = _cmul(cr[:, None], ci[:, None], yr, yi)
    yr += gr[:, None] * sv
    yi += gi[:, None] * sv
    out = y_tile + i * s_yn
    m = _at_position(tmask, i, 0, N)
    tl.store(out, yr.to(y_tile.dtype.element_ty), mask=m)
    tl.store(out + 1, yi.to(y_tile.dtype.element_ty), mask=m)
    return yr, yi


@triton.jit
def _fwd_outputs(g_row, b_row, s_tile, y_tile, yr, yi, rows, rmask, tmask, start, N, s_gn, s_bn, s_sn, s_yn,
                 b_const, HAS_B: tl.constexpr, CHUNK: tl.constexpr):
    """The recurrence over the chunk from y_in, storing y. The compiler may not move a load above a store that
    could alias it, so the GROUP positions' loads are written out before their stores."""
    for j0 in range(0, CHUNK, GROUP):
        i = start + j0
        g0r, g0i, b0, c0r, c0i = _coeffs(g_row, b_row, i, s_gn, s_bn, rows, rmask, N, b_const, HAS_B)
        g1r, g1i, b1, c1r, c1i = _coeffs(g_row, b_row, i + 1, s_gn, s_bn, rows, rmask, N, b_const, HAS_B)
        g2r, g2i, b2, c2r, c2i = _coeffs(g_row, b_row, i + 2, s_gn, s_bn, rows, rmask, N, b_const, HAS_B)
        g3r, g3i, b3, c3r, c3i = _coeffs(g_row, b_row, i + 3, s_gn, s_bn, rows, rmask, N, b_const, HAS_B)
        s0 = _tile_load(s_tile, i, s_sn, tmask, N)
        s1 = _tile_load(s_tile, i + 1, s_sn, tmask, N)
        s2 = _tile_load(s_tile, i + 2, s_sn, tmask, N)
        s3 = _tile_load(s_tile, i + 3, s_sn, tmask, N)
        yr, yi = _fwd_step(y_tile, i, s_yn, tmask, N, yr, yi, g0r, g0i, c0r, c0i, s0)
        yr, yi = _fwd_step(y_tile, i + 1, s_yn, tmask, N, yr, yi, g1r, g1i, c1r, c1i, s1)
        yr, yi = _fwd_step(y_tile, i + 2, s_yn, tmask, N, yr, yi, g2r, g2i, c2r, c2i, s2)
        yr, yi = _fwd_step(y_tile, i + 3, s_yn, tmask, N, yr, yi, g3r, g3i, c3r, c3i, s3)
    return yr, yi


@triton.jit
def _publish(ptr, vr, vi, offsets, mask):
    tl.store(ptr + offsets * 2, vr, mask=mask)
    tl.store(ptr + offsets * 2 + 1, vi, mask=mask)


@triton.jit
def _published(ptr, offsets, mask):
    # volatile: written by another program of this launch after the flag this program read.
    return (tl.load(ptr + offsets * 2, mask=mask, other=0.0, volatile=True),
            tl.load(ptr + offsets * 2 + 1, mask=mask, other=0.0, volatile=True))


@triton.jit
def _look_back(flag_ptr, agg_p_ptr, agg_q_ptr, incl_ptr, rb, n_chunks, own, step, stop, r_loc, t_loc, tmask,
               BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """The carry entering chunk `own` from its neighbours own + step, own + 2 step, ... (each maps its entering
    carry to its leaving one: P x + Q). Walks to the nearest chunk that has published its leaving carry (or to
    `stop`, the boundary, where the carry is 0), then applies the maps of the chunks in between in sequence
    order: the same float operations as the sequential chain of chunks, whichever chunk it met, so results do
    not depend on timing."""
    j = own + step
    f = j * 0  # the flag met last (an int32 scalar, as the loop carries it)
    while (j != stop) & (f != 2):
        f = tl.atomic_add(flag_ptr + rb * n_chunks + j, 0)
        while f == 0:
            f = tl.atomic_add(flag_ptr + rb * n_chunks + j, 0)
        if f != 2:
            j += step
    # The flags were read by one thread for the whole tile: the barrier orders every thread's loads after them.
    tl.debug_barrier()
    met = tmask & ((tmask.to(tl.int32) * 0 + j) != stop)  # else the boundary, where the carry is 0
    xr, xi = _published(incl_ptr, (rb * n_chunks + j) * BLOCK_R * BLOCK_C + t_loc, met)
    m = j - step
    while m != own:
        slot = rb * n_chunks + m
        qr, qi = _published(agg_q_ptr, slot * BLOCK_R * BLOCK_C + t_loc, tmask)
        pr, pi = _published(agg_p_ptr, slot * BLOCK_R + r_loc, r_loc < BLOCK_R)
        xr, xi = _cmul(pr[:, None], pi[:, None], xr, xi)
        xr += qr
        xi += qi
        m -= step
    return xr, xi


@triton.jit
def _tile(rb, R, C, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """The program's rows and channels: local indices, global rows, masks, and each element's place in a tile."""
    r_loc = tl.arange(0, BLOCK_R)
    ch = tl.arange(0, BLOCK_C)
    rows = rb * BLOCK_R + r_loc
    rmask = rows < R
    tmask = rmask[:, None] & (ch < C)[None, :]
    return r_loc, ch, rows, rmask, tmask, r_loc[:, None] * BLOCK_C + ch[None, :]


@triton.jit
def _tile_ptrs(ptr, rows, ch, inner, s0, s1, s_c):
    return ptr + _row_offset(rows, inner, s0, s1)[:, None] + ch[None, :] * s_c


@triton.jit
def _carry_in(flag_ptr, agg_p_ptr, agg_q_ptr, incl_ptr, rb, n_chunks, c, step, stop, order, Pr, Pi, Qr, Qi, r_loc,
              t_loc, tmask, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, LOOKBACK_TEST: tl.constexpr):
    """Publishes the chunk's map (P, Q), finds the carry entering it (_look_back), publishes the carry leaving it
    (flag 2; with LOOKBACK_TEST the flag stays 1 for every other chunk in `order`, or all) and returns the first."""
    slot = rb * n_chunks + c
    _publish(agg_q_ptr, Qr, Qi, slot * BLOCK_R * BLOCK_C + t_loc, tmask)
    _publish(agg_p_ptr, Pr, Pi, slot * BLOCK_R + r_loc, r_loc < BLOCK_R)
    tl.debug_barrier()  # every thread's share of the tile is stored before one thread raises the flag
    tl.atomic_xchg(flag_ptr + slot, 1)
    in_r, in_i = _look_back(flag_ptr, agg_p_ptr, agg_q_ptr, incl_ptr, rb, n_chunks, c, step, stop, r_loc, t_loc, tmask,
                            BLOCK_R, BLOCK_C)
    er, ei = _cmul(Pr[:, None], Pi[:, None], in_r, in_i)
    _publish(incl_ptr, er + Qr, ei + Qi, slot * BLOCK_R * BLOCK_C + t_loc, tmask)
    hide = (LOOKBACK_TEST == 2) | ((LOOKBACK_TEST == 1) & (order % 2 == 1))
    tl.debug_barrier()
    tl.atomic_xchg(flag_ptr + slot, 2 - hide.to(tl.int32))
    return in_r, in_i


@triton.jit
def _resp_fwd(g_ptr, b_ptr, s_ptr, y_ptr, agg_p_ptr, agg_q_ptr, incl_ptr, flag_ptr, ticket_ptr,
              R, N, C, n_chunks, n_rb, inner,
              s_g0, s_g1, s_gn, s_b0, s_b1, s_bn, s_s0, s_s1, s_sn, s_sc, s_y0, s_y1, s_yn, s_yc, b_const,
              HAS_B: tl.constexpr, CHUNK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
              LOOKBACK_TEST: tl.constexpr):
    # Chunk-major tickets: the chunks before this one (same rows) hold earlier tickets.
    t = tl.atomic_add(ticket_ptr, 1)
    c = t // n_rb
    rb = t % n_rb
    r_loc, ch, rows, rmask, tmask, t_loc = _tile(rb, R, C, BLOCK_R, BLOCK_C)
    g_row = g_ptr + _row_offset(rows, inner, s_g0, s_g1)
    b_row = b_ptr + _row_offset(rows, inner, s_b0, s_b1)
    s_tile = _tile_ptrs(s_ptr, rows, ch, inner, s_s0, s_s1, s_sc)
    y_tile = _tile_ptrs(y_ptr, rows, ch, inner, s_y0, s_y1, s_yc)
    start = c * CHUNK
    Pr, Pi, Qr, Qi = _fwd_map(g_row, b_row, s_tile, rows, rmask, tmask, start, N, s_gn, s_bn, s_sn, b_const,
                              HAS_B, CHUNK, BLOCK_R, BLOCK_C)
    in_r, in_i = _carry_in(flag_ptr, agg_p_ptr, agg_q_ptr, incl_ptr, rb, n_chunks, c, -1, -1, c, Pr, Pi, Qr, Qi, r_loc,
                           t_loc, tmask, BLOCK_R, BLOCK_C, LOOKBACK_TEST)
    _fwd_outputs(g_row, b_row, s_tile, y_tile, in_r, in_i, rows, rmask, tmask, start, N, s_gn, s_bn, s_sn, s_yn,
                 b_const, HAS_B, CHUNK)


# --------------------------------------------------------------------------------------------- backward


@triton.jit
def _bwd_map(g_row, b_row, u_tile, rows, rmask, tmask, start, N, s_gn, s_bn, s_un, b_const,
             HAS_B: tl.constexpr, CHUNK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """(A, B) of the chunk from its end: q_out = A q_in + B, A = prod conj(c_i), step q <- conj(c_i)(ybar_i + q)."""
    Ar = tl.full([BLOCK_R], 1.0, tl.float32)
    Ai = tl.zeros([BLOCK_R], tl.float32)
    Br = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    Bi = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    last = start + CHUNK - 1
    for j0 in range(0, CHUNK, GROUP):
        for u in tl.static_range(GROUP):
            i = last - j0 - u
            gr, gi, bp, cr, ci = _coeffs(g_row, b_row, i, s_gn, s_bn, rows, rmask, N, b_const, HAS_B)
            ur = _tile_load(u_tile, i, s_un, tmask, N)
            ui = _tile_load(u_tile + 1, i, s_un, tmask, N)
            Br, Bi = _cmul(cr[:, None], -ci[:, None], Br + ur, Bi + ui)
            Ar, Ai = _cmul(cr, -ci, Ar, Ai)
    return Ar, Ai, Br, Bi


@triton.jit
def _bwd_step(u_tile, s_tile, y_tile, ds_tile, dg_row, db_row, i, s_un, s_sn, s_yn, s_dn, s_dgn, s_dbn, rows, rmask,
              tmask, N, qr, qi, gr, gi, bp, HAS_B: tl.constexpr):
    """lambda_i from the carry q_i; stores sbar_i, gbar_i, bbar_{i-1}; returns q_{i-1} = -b_{i-1} conj(g_i) lambda_i."""
    lr = _tile_load(u_tile, i, s_un, tmask, N) + qr
    li = _tile_load(u_tile + 1, i, s_un, tmask, N) + qi
    ubr = gr[:, None] * lr + gi[:, None] * li  # conj(g) lambda
    ubi = gr[:, None] * li - gi[:, None] * lr
    m = _at_position(tmask, i, 0, N)
    tl.store(ds_tile + i * s_dn, ubr.to(ds_tile.dtype.element_ty), mask=m)
    pm = _at_position(tmask, i, 1, N + 1)  # y_{i-1} exists
    ypr = tl.load(y_tile + (i - 1) * s_yn, mask=pm, other=0.0).to(tl.float32)
    ypi = tl.load(y_tile + (i - 1) * s_yn + 1, mask=pm, other=0.0).to(tl.float32)
    sv = _tile_load(s_tile, i, s_sn, tmask, N)
    wr = sv - bp[:, None] * ypr  # u_i = s_i - b_{i-1} y_{i-1}
    wi = -bp[:, None] * ypi
    rm = rmask & ((rows * 0 + i) < N)
    tl.store(dg_row + i * s_dgn, tl.sum(wr * lr + wi * li, axis=1), mask=rm)
    tl.store(dg_row + i * s_dgn + 1, tl.sum(wr * li - wi * lr, axis=1), mask=rm)
    if HAS_B:
        tl.store(db_row + i * s_dbn, -tl.sum(ypr * ubr + ypi * ubi, axis=1), mask=rm)
    return -bp[:, None] * ubr, -bp[:, None] * ubi


@triton.jit
def _bwd_outputs(g_row, b_row, u_tile, s_tile, y_tile, ds_tile, dg_row, db_row, qr, qi, rows, rmask, tmask, start,
                 N, s_gn, s_bn, s_un, s_sn, s_yn, s_dn, s_dgn, s_dbn, b_const, HAS_B: tl.constexpr,
                 CHUNK: tl.constexpr):
    """The adjoint down the chunk from the carry entering at its end, storing the gradients."""
    for j0 in range(0, CHUNK, GROUP):
        i = start + CHUNK - 1 - j0
        g0r, g0i, b0, c0r, c0i = _coeffs(g_row, b_row, i, s_gn, s_bn, rows, rmask, N, b_const, HAS_B)
        g1r, g1i, b1, c1r, c1i = _coeffs(g_row, b_row, i - 1, s_gn, s_bn, rows, rmask, N, b_const, HAS_B)
        g2r, g2i, b2, c2r, c2i = _coeffs(g_row, b_row, i - 2, s_gn, s_bn, rows, rmask, N, b_const, HAS_B)
        g3r, g3i, b3, c3r, c3i = _coeffs(g_row, b_row, i - 3, s_gn, s_bn, rows, rmask, N, b_const, HAS_B)
        qr, qi = _bwd_step(u_tile, s_tile, y_tile, ds_tile, dg_row, db_row, i, s_un, s_sn, s_yn, s_dn, s_dgn, s_dbn,
                           rows, rmask, tmask, N, qr, qi, g0r, g0i, b0, HAS_B)
        qr, qi = _bwd_step(u_tile, s_tile, y_tile, ds_tile, dg_row, db_row, i - 1, s_un, s_sn, s_yn, s_dn, s_dgn,
                           s_dbn, rows, rmask, tmask, N, qr, qi, g1r, g1i, b1, HAS_B)
        qr, qi = _bwd_step(u_tile, s_tile, y_tile, ds_tile, dg_row, db_row, i - 2, s_un, s_sn, s_yn, s_dn, s_dgn,
                           s_dbn, rows, rmask, tmask, N, qr, qi, g2r, g2i, b2, HAS_B)
        qr, qi = _bwd_step(u_tile, s_tile, y_tile, ds_tile, dg_row, db_row, i - 3, s_un, s_sn, s_yn, s_dn, s_dgn,
                           s_dbn, rows, rmask, tmask, N, qr, qi, g3r, g3i, b3, HAS_B)


@triton.jit
def _resp_bwd(g_ptr, b_ptr, s_ptr, y_ptr, u_ptr, ds_ptr, dg_ptr, db_ptr, agg_p_ptr, agg_q_ptr, incl_ptr, flag_ptr,
              ticket_ptr, R, N, C, n_chunks, n_rb, inner,
              s_g0, s_g1, s_gn, s_b0, s_b1, s_bn, s_s0, s_s1, s_sn, s_sc, s_y0, s_y1, s_yn, s_yc,
              s_u0, s_u1, s_un, s_uc, s_d0, s_d1, s_dn, s_dc, s_dg0, s_dg1, s_dgn, s_db0, s_db1, s_dbn, b_const,
              HAS_B: tl.constexpr, CHUNK: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
              LOOKBACK_TEST: tl.constexpr):
    t = tl.atomic_add(ticket_ptr, 1)
    c = n_chunks - 1 - t // n_rb  # last chunk first: the adjoint runs from the end
    rb = t % n_rb
    r_loc, ch, rows, rmask, tmask, t_loc = _tile(rb, R, C, BLOCK_R, BLOCK_C)
    g_row = g_ptr + _row_offset(rows, inner, s_g0, s_g1)
    b_row = b_ptr + _row_offset(rows, inner, s_b0, s_b1)
    dg_row = dg_ptr + _row_offset(rows, inner, s_dg0, s_dg1)
    db_row = db_ptr + _row_offset(rows, inner, s_db0, s_db1)
    s_tile = _tile_ptrs(s_ptr, rows, ch, inner, s_s0, s_s1, s_sc)
    y_tile = _tile_ptrs(y_ptr, rows, ch, inner, s_y0, s_y1, s_yc)
    u_tile = _tile_ptrs(u_ptr, rows, ch, inner, s_u0, s_u1, s_uc)
    ds_tile = _tile_ptrs(ds_ptr, rows, ch, inner, s_d0, s_d1, s_dc)
    start = c * CHUNK
    Ar, Ai, Br, Bi = _bwd_map(g_row, b_row, u_tile, rows, rmask, tmask, start, N, s_gn, s_bn, s_un, b_const,
                              HAS_B, CHUNK, BLOCK_R, BLOCK_C)
    in_r, in_i = _carry_in(flag_ptr, agg_p_ptr, agg_q_ptr, incl_ptr, rb, n_chunks, c, 1, n_chunks, n_chunks - 1 - c,
                           Ar, Ai, Br, Bi, r_loc, t_loc, tmask, BLOCK_R, BLOCK_C, LOOKBACK_TEST)
    _bwd_outputs(g_row, b_row, u_tile, s_tile, y_tile, ds_tile, dg_row, db_row, in_r, in_i, rows, rmask, tmask,
                 start, N, s_gn, s_bn, s_un, s_sn, s_yn, s_dn, s_dgn, s_dbn, b_const, HAS_B, CHUNK)


# ------------------------------------------------------------------------------------------------ wrappers


def _grid(R: int, N: int, C: int, device: torch.device, chunk: int | None, tile: int | None):
    """(BLOCK_R, BLOCK_C, chunk, chunks per row, row blocks, warps) for R rows of C channels and length N."""
    block_c = triton.next_power_of_2(max(C, 1))
    block_r = max(1, min(triton.next_power_of_2(R), (tile or TILE) // block_c))
    n_rb = triton.cdiv(R, block_r)
    if chunk is None:
        # Enough programs for every multiprocessor, and chunks as long as that allows: the look-back and the
        # first pass cost a fixed amount per chunk.
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
        chunk = next((c for c in CHUNKS if n_rb * triton.cdiv(N, c) >= 4 * sms), CHUNKS[-1])
    if chunk <= 0 or chunk % GROUP.value:
        raise ValueError(f"chunk must be a positive multiple of {GROUP.value}, got {chunk}")
    warps = max(1, min(8, block_r * block_c // 64))
    return block_r, block_c, chunk, triton.cdiv(N, chunk), n_rb, warps


def _scratch(R: int, n_rb: int, n_chunks: int, block_r: int, block_c: int, device):
    slots = n_rb * n_chunks
    agg_p = torch.empty(slots * block_r * 2, dtype=torch.float32, device=device)
    agg_q = torch.empty(slots * block_r * block_c * 2, dtype=torch.float32, device=device)
    incl = torch.empty_like(agg_q)
    sync = torch.zeros(slots + 1, dtype=torch.int32, device=device)  # flags, then the ticket counter
    return agg_p, agg_q, incl, sync


def response_forward(g: torch.Tensor, b_prev, s: torch.Tensor, out_dtype: torch.dtype, chunk: int | None = None,
                     tile: int | None = None, lookback_test: int = 0) -> torch.Tensor:
    """g (outer, inner, N) complex64; b_prev like g's real part (b_prev_i = b_{i-1}) or a float; s (outer, inner,
    N, C) real, any strides and float dtype. Returns y as real pairs (outer, inner, N, C, 2) of out_dtype in s's
    memory order. lookback_test (tests only): 1 hides every other chunk's inclusive y, 2 all of them."""
    H, N, C = s.shape[1:]
    R = s.shape[0] * H
    block_r, block_c, chunk, n_chunks, n_rb, warps = _grid(R, N, C, s.device, chunk, tile)
    g_real = torch.view_as_real(g)
    has_b = isinstance(b_prev, torch.Tensor)
    b_t = b_prev if has_b else g_real[..., 0]
    y = _empty_like_order(s, (2,), out_dtype)
    agg_p, agg_q, incl, sync = _scratch(R, n_rb, n_chunks, block_r, block_c, s.device)
    _resp_fwd[(n_rb * n_chunks,)](
        g_real, b_t, s, y, agg_p, agg_q, incl, sync, sync[n_rb * n_chunks:], R, N, C, n_chunks, n_rb, H,
        *g_real.stride()[:3], *b_t.stride(), *s.stride(), *y.stride()[:4], 0.0 if has_b else float(b_prev),
        HAS_B=has_b, CHUNK=chunk, BLOCK_R=block_r, BLOCK_C=block_c, LOOKBACK_TEST=lookback_test, num_warps=warps)
    return y


def response_backward(g: torch.Tensor, b_prev, s: torch.Tensor, y: torch.Tensor, grad_y: torch.Tensor,
                      need_b: bool, chunk: int | None = None, tile: int | None = None, lookback_test: int = 0):
    """The exact adjoint of response_forward: y its output, grad_y like y (any strides). Returns (grad g complex64 in
    g's memory order, grad b_prev float32 in b_prev's memory order or None, grad s in s's dtype and memory order)."""
    H, N, C = s.shape[1:]
    R = s.shape[0] * H
    block_r, block_c, chunk, n_chunks, n_rb, warps = _grid(R, N, C, s.device, chunk, tile)
    g_real = torch.view_as_real(g)
    has_b = isinstance(b_prev, torch.Tensor)
    b_t = b_prev if has_b else g_real[..., 0]
    if grad_y.stride(-1) != 1:
        grad_y = grad_y.contiguous()
    grad_s = _empty_like_order(s, (), s.dtype)
    grad_g = _empty_like_order(g_real[..., 0], (2,))
    grad_b = _empty_like_order(b_t) if has_b else grad_g[..., 0]
    agg_p, agg_q, incl, sync = _scratch(R, n_rb, n_chunks, block_r, block_c, s.device)
    _resp_bwd[(n_rb * n_chunks,)](
        g_real, b_t, s, y, grad_y, grad_s, grad_g, grad_b, agg_p, agg_q, incl, sync, sync[n_rb * n_chunks:],
        R, N, C, n_chunks, n_rb, H, *g_real.stride()[:3], *b_t.stride(), *s.stride(), *y.stride()[:4],
        *grad_y.stride()[:4], *grad_s.stride(), *grad_g.stride()[:3], *grad_b.stride(),
        0.0 if has_b else float(b_prev),
        HAS_B=has_b, CHUNK=chunk, BLOCK_R=block_r, BLOCK_C=block_c, LOOKBACK_TEST=lookback_test, num_warps=warps)
    return torch.view_as_complex(grad_g), (grad_b if has_b and need_b else None), grad_s

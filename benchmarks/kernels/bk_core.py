"""BK-Core speed on a GPU: Triton kernels (the diagonal and the value response) vs a streaming floor, the PyTorch
reference, and a whole BK mixer layer vs causal SDPA attention. Prints tables and writes JSON.

    python -m benchmarks.kernels.bk_core [--out bk_core.json] [--quick] [--response-only]

Elements = rows x N = 64M (rows = batch x heads). Floors are Triton copy kernels measured in the same run
that move the same bytes per element as the pass they bound:
  forward   reads a (+ beta), writes g                          12 B (16 B with per-position couplings)
  backward  reads g, dL/dg (+ beta), writes dL/da (+ dL/dbeta)  20 B (28 B)
Layouts: "rows" = (rows, N) contiguous (the API's plain layout); "model" = (B, heads, N) views of
(B, N, heads) tensors with 16 heads, which is what the BK mixer passes.
Response kernels (bk_response_triton): elements = rows x N x C = 64M, the mixer's (B, N, heads, C) layout, y and
its gradient in the named dtype (float32 as resolvent_response returns, bf16 as the mixer uses), per element
  forward   reads s, writes y (2 values)                                  + per row and position g, b
  backward  reads dL/dy (2 values), s, y (2 values), writes dL/ds          + per row and position g, b, dL/dg, dL/db
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

from resnetbk.ops import bk_triton
from resnetbk.ops.bk_core import _coupling_squares, resolvent_diagonal

ELEMENTS = 1 << 26
HEADS = 16


@triton.jit
def _stream(x_ptr, y_ptr, n_read, n_write, BLOCK: tl.constexpr):
    """Reads n_read floats from x and writes n_write floats to y, both contiguous."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    v = tl.load(x_ptr + offs, mask=offs < n_read, other=1.0)
    tl.store(y_ptr + offs, v, mask=offs < n_write)


def floor_ms(bytes_in: float, bytes_out: float, n: int) -> float:
    """Time of a streaming kernel that reads bytes_in and writes bytes_out bytes per element, n elements."""
    x = torch.randn(int(n * bytes_in / 4), device="cuda")
    y = torch.empty(int(n * bytes_out / 4), device="cuda")
    block = 4096
    grid = (triton.cdiv(max(x.numel(), y.numel()), block),)
    t = do_bench(lambda: _stream[grid](x, y, x.numel(), y.numel(), BLOCK=block), return_mode="median")
    return t


def make_inputs(n_pos: int, layout: str, per_position_b: bool, gen: torch.Generator, im_z: float = 0.5):
    rows = ELEMENTS // n_pos
    if layout == "rows":
        a = torch.empty(rows, 1, n_pos, device="cuda").uniform_(-4, 4, generator=gen)
        b = (2 * torch.rand(rows, 1, n_pos - 1, device="cuda", generator=gen)) if per_position_b else 1.0
    else:
        B = rows // HEADS
        a = torch.empty(B, n_pos, HEADS, device="cuda").uniform_(-4, 4, generator=gen).transpose(1, 2)
        b = ((2 * torch.rand(B, n_pos - 1, HEADS, device="cuda", generator=gen)).transpose(1, 2) if per_position_b
             else 1.0)
    z = torch.complex(torch.zeros(a.shape[1], device="cuda"), torch.full((a.shape[1],), im_z, device="cuda"))
    return a, b, z


def time_kernels(n_pos, layout, per_pos, im_z, gen, chunk=None, rows=None):
    """Forward and backward times (ms) and the fraction of forward chunks that started from their certificate."""
    a, b, z = make_inputs(n_pos, layout, per_pos, gen, im_z)
    beta = _coupling_squares(b, a)  # a tensor like a, or the float b^2
    zrows = z.repeat(a.shape[0]) if layout == "model" else z.expand(a.shape[0]).contiguous()
    a3 = a.reshape(-1, a.shape[1], n_pos)
    fwd = do_bench(lambda: bk_triton.causal_forward(a3, beta, zrows, chunk, rows), return_mode="median")
    g, flags = bk_triton.causal_forward(a3, beta, zrows, chunk, rows, return_flags=True)
    gbar = torch.randn_like(g)
    bwd = do_bench(lambda: bk_triton.causal_backward(g, gbar, beta, per_pos, chunk, rows), return_mode="median")
    return fwd, bwd, (flags == 1).float().mean().item()


def kernel_rows(quick: bool):
    gen = torch.Generator(device="cuda").manual_seed(0)
    results = []
    cases = [(n, layout, per, 0.5) for n in (1024, 16384) for layout in ("model", "rows") for per in (False, True)]
    cases += [(n, "model", False, im) for n in (1024, 16384) for im in (0.1, 0.01)]
    for n_pos, layout, per_pos, im_z in cases:
        if quick and layout == "rows":
            continue
        fwd, bwd, certified = time_kernels(n_pos, layout, per_pos, im_z, gen)
        fb_in, fb_out = (8, 8) if per_pos else (4, 8)
        bb_in, bb_out = (20, 8) if per_pos else (16, 4)
        floor_f = floor_ms(fb_in, fb_out, ELEMENTS)
        floor_b = floor_ms(bb_in, bb_out, ELEMENTS)
        row = {"N": n_pos, "rows": ELEMENTS // n_pos, "layout": layout,
               "couplings": "per-position" if per_pos else "constant", "im_z": im_z, "certified": certified,
               "fwd_ms": fwd, "fwd_floor_ms": floor_f, "fwd_x_floor": fwd / floor_f,
               "fwd_GBps": (fb_in + fb_out) * ELEMENTS / fwd / 1e6,
               "bwd_ms": bwd, "bwd_floor_ms": floor_b, "fwdbwd_ms": fwd + bwd,
               "fwdbwd_x_floor": (fwd + bwd) / (floor_f + floor_b)}
        results.append(row)
        print(f"  N={n_pos:>6} {layout:>5} {row['couplings']:>12} Im z {im_z}: fwd {fwd:.3f} ms "
              f"({row['fwd_x_floor']:.2f}x floor {floor_f:.3f}, {certified:.0%} certified), "
              f"fwd+bwd {fwd + bwd:.3f} ms ({row['fwdbwd_x_floor']:.2f}x floor)", flush=True)
    return results


def sweep_rows():
    """Chunk length x rows per program x halo length, model layout, constant couplings, Im z = 0.5."""
    gen = torch.Generator(device="cuda").manual_seed(1)
    out = []
    default_halo = bk_triton.HALO
    for n_pos in (1024, 16384):
        for chunk, rows, halo in [(c, r, default_halo) for c in (128, 256, 512) for r in (32, 64)] + \
                                 [(256, 32, h) for h in (16, 64)]:
            bk_triton.HALO = halo
            f, bw, certified = time_kernels(n_pos, "model", False, 0.5, gen, chunk, rows)
            out.append({"N": n_pos, "chunk": chunk, "block_rows": rows, "halo": halo, "fwd_ms": f, "bwd_ms": bw,
                        "certified": certified})
            print(f"  sweep N={n_pos:>6} chunk {chunk:>3} rows {rows:>3} halo {halo:>2}: fwd {f:.3f} bwd {bw:.3f} "
                  f"({certified:.0%} certified)", flush=True)
    bk_triton.HALO = default_halo
    return out


def response_rows(quick: bool):
    """The response kernels at N = 1k and 16k, C = 16..64, float32 and bf16 values, per-position couplings, against
    streaming kernels that move the same bytes."""
    from resnetbk.ops import bk_response_triton

    gen = torch.Generator(device="cuda").manual_seed(2)
    out = []
    cases = [(n, c, dt) for n in (1024, 16384) for c in (16, 32, 64) for dt in (torch.float32, torch.bfloat16)]
    for n_pos, c, dtype in cases:
        if quick and c == 32:
            continue
        rows = ELEMENTS // (n_pos * c)
        B = rows // HEADS
        s = torch.randn(B, n_pos, HEADS, c, device="cuda", generator=gen).to(dtype).transpose(1, 2)
        a = torch.empty(B, n_pos, HEADS, device="cuda").uniform_(-4, 4, generator=gen).transpose(1, 2)
        b = (2 * torch.rand(B, n_pos - 1, HEADS, device="cuda", generator=gen)).transpose(1, 2)
        beta = _coupling_squares(b, a)
        b_prev = beta.sqrt()
        z = torch.complex(torch.zeros(HEADS, device="cuda"), torch.full((HEADS,), 0.5, device="cuda")).repeat(B)
        g = bk_triton.causal_forward(a, beta, z)
        fwd = do_bench(lambda: bk_response_triton.response_forward(g, b_prev, s, dtype), return_mode="median")
        y = bk_response_triton.response_forward(g, b_prev, s, dtype)
        ybar = torch.randn_like(y)
        bwd = do_bench(lambda: bk_response_triton.response_backward(g, b_prev, s, y, ybar, True), return_mode="median")
        v = s.element_size()
        per_row = 12 / c  # g (8 B) and b (4 B) per position, shared by the row's C channels
        fwd_in, fwd_out = v + per_row, 2 * v
        bwd_in, bwd_out = 5 * v + per_row, v + per_row
        floor_f = floor_ms(fwd_in, fwd_out, ELEMENTS)
        floor_b = floor_ms(bwd_in, bwd_out, ELEMENTS)
        row = {"N": n_pos, "C": c, "dtype": str(dtype).replace("torch.", ""), "rows": rows, "fwd_ms": fwd,
               "fwd_floor_ms": floor_f, "fwd_x_floor": fwd / floor_f, "bwd_ms": bwd, "bwd_floor_ms": floor_b,
               "fwdbwd_x_floor": (fwd + bwd) / (floor_f + floor_b),
               "fwd_GBps": (fwd_in + fwd_out) * ELEMENTS / fwd / 1e6}
        out.append(row)
        print(f"  response N={n_pos:>6} C={c:>2} {row['dtype']:>8}: fwd {fwd:.3f} ms "
              f"({row['fwd_x_floor']:.2f}x floor), fwd+bwd {fwd + bwd:.3f} ms ({row['fwdbwd_x_floor']:.2f}x floor)",
              flush=True)
    return out


def response_sweep_rows():
    """Rows x channels per program (tile) x chunk length for the response kernels, C = 32, bf16, the mixer layout."""
    from resnetbk.ops import bk_response_triton

    gen = torch.Generator(device="cuda").manual_seed(3)
    out = []
    for n_pos in (1024, 16384):
        c = 32
        B = ELEMENTS // (n_pos * c * HEADS)
        s = torch.randn(B, n_pos, HEADS, c, device="cuda", generator=gen).to(torch.bfloat16).transpose(1, 2)
        g = torch.complex(torch.randn(B, HEADS, n_pos, device="cuda", generator=gen) * 0.3,
                          torch.rand(B, HEADS, n_pos, device="cuda", generator=gen) * 0.3)
        b_prev = torch.rand(B, HEADS, n_pos, device="cuda", generator=gen)
        for tile in (128, 256, 512):
            for chunk in (None, 32, 64, 128, 256):
                f = do_bench(lambda: bk_response_triton.response_forward(g, b_prev, s, torch.bfloat16, chunk, tile),
                             return_mode="median")
                y = bk_response_triton.response_forward(g, b_prev, s, torch.bfloat16, chunk, tile)
                ybar = torch.randn_like(y)
                bw = do_bench(lambda: bk_response_triton.response_backward(g, b_prev, s, y, ybar, True, chunk, tile),
                              return_mode="median")
                out.append({"N": n_pos, "C": c, "tile": tile, "chunk": chunk or "auto", "fwd_ms": f, "bwd_ms": bw})
                print(f"  response sweep N={n_pos:>6} tile {tile:>3} chunk {chunk or 'auto':>4}: "
                      f"fwd {f:.3f} bwd {bw:.3f}", flush=True)
    return out


def reference_rows(quick: bool):
    """The PyTorch reference (a Python loop over positions) on the same 64M elements, timed once after a warm-up."""
    out = []
    for n_pos in ((1024,) if quick else (1024, 16384)):
        rows = ELEMENTS // n_pos
        a = torch.empty(rows, n_pos, device="cuda").uniform_(-4, 4).requires_grad_()
        z = torch.complex(torch.zeros(rows, device="cuda"), torch.full((rows,), 0.5, device="cuda"))
        times = {}
        for what in ("fwd", "fwdbwd"):
            for rep in range(2):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                g = resolvent_diagonal(a, 1.0, z, backend="reference")
                if what == "fwdbwd":
                    g.real.sum().backward()
                torch.cuda.synchronize()
                times[what] = (time.perf_counter() - t0) * 1e3
        out.append({"N": n_pos, "rows": rows, "ref_fwd_ms": times["fwd"], "ref_fwdbwd_ms": times["fwdbwd"]})
        print(f"  reference N={n_pos}: fwd {times['fwd']:.1f} ms, fwd+bwd {times['fwdbwd']:.1f} ms", flush=True)
    return out


def layer_rows(quick: bool):
    """A BK mixer layer vs a causal SDPA attention layer, d_model 1024, bf16, forward + backward, 64k tokens."""
    from resnetbk.config import ModelConfig
    from resnetbk.layers.attention import CausalSelfAttention
    from resnetbk.layers.bk_mixer import BKMixer

    d = 1024
    out = []
    for n_pos in ((1024, 4096, 16384) if quick else (1024, 2048, 4096, 16384, 65536)):
        B = max(1, 65536 // n_pos)
        row = {"N": n_pos, "batch": B, "d_model": d}
        for name, cfg in (("bk", ModelConfig(d_model=d, n_heads=HEADS, max_seq_len=n_pos)),
                          ("bk_response", ModelConfig(d_model=d, n_heads=HEADS, max_seq_len=n_pos, bk_values=32)),
                          ("attention", ModelConfig(arch="gpt", d_model=d, n_heads=d // 64, max_seq_len=n_pos))):
            torch.manual_seed(0)
            layer = (CausalSelfAttention(cfg) if name == "attention" else BKMixer(cfg)).cuda().to(torch.bfloat16)
            x = torch.randn(B, n_pos, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            dy = torch.randn_like(x)

            def step():
                y = layer(x)
                y.backward(dy)

            row[f"{name}_fwdbwd_ms"] = do_bench(step, return_mode="median")
        row["attention_over_bk"] = row["attention_fwdbwd_ms"] / row["bk_fwdbwd_ms"]
        out.append(row)
        row["attention_over_bk_response"] = row["attention_fwdbwd_ms"] / row["bk_response_fwdbwd_ms"]
        print(f"  layer N={n_pos:>6} B={B:>3}: BK {row['bk_fwdbwd_ms']:.2f} ms, BK + response (C = 32) "
              f"{row['bk_response_fwdbwd_ms']:.2f} ms, attention {row['attention_fwdbwd_ms']:.2f} ms", flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bk_core.json")
    parser.add_argument("--quick", action="store_true", help="fewer sizes")
    parser.add_argument("--sweep", action="store_true", help="also time chunk lengths x rows per program x halos")
    parser.add_argument("--sweep-only", action="store_true", help="only the sweep (to choose the kernels' defaults)")
    parser.add_argument("--response-only", action="store_true", help="only the response kernels and the layers")
    parser.add_argument("--response-sweep", action="store_true", help="also time the response kernels' tile x chunk")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: benchmarks/kernels/bk_core.py needs a CUDA GPU")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}", flush=True)
    copy = floor_ms(4, 4, ELEMENTS)
    print(f"  copy floor: {8 * ELEMENTS / copy / 1e6:.0f} GB/s (read + write)", flush=True)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "date": time.strftime("%Y-%m-%d"), "elements": ELEMENTS, "copy_GBps": 8 * ELEMENTS / copy / 1e6,
              "sweep": sweep_rows() if args.sweep or args.sweep_only else [],
              "kernels": [] if args.sweep_only or args.response_only else kernel_rows(args.quick),
              "response_sweep": response_sweep_rows() if args.response_sweep else [],
              "response": [] if args.sweep_only else response_rows(args.quick),
              "reference": [] if args.sweep_only or args.response_only else reference_rows(args.quick),
              "layers": [] if args.sweep_only else layer_rows(args.quick)}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)

    print("\nBK-Core Triton kernels, 64M elements (times in ms; floor = streaming kernel moving the same bytes)")
    print(f"{'N':>6} {'layout':>6} {'couplings':>12} {'Im z':>5} {'cert':>5} | "
          f"{'fwd':>7} {'floor':>7} {'x':>5} {'GB/s':>6} | {'fwd+bwd':>8} {'floor':>7} {'x':>5}")
    for r in report["kernels"]:
        print(f"{r['N']:>6} {r['layout']:>6} {r['couplings']:>12} {r['im_z']:>5} {r['certified']:5.0%} | "
              f"{r['fwd_ms']:7.3f} {r['fwd_floor_ms']:7.3f} {r['fwd_x_floor']:5.2f} {r['fwd_GBps']:6.0f} | "
              f"{r['fwdbwd_ms']:8.3f} {r['bwd_floor_ms'] + r['fwd_floor_ms']:7.3f} {r['fwdbwd_x_floor']:5.2f}")
    print("\nBK response kernels, 64M elements = rows x N x C, per-position couplings (ms)")
    print(f"{'N':>6} {'C':>3} {'dtype':>8} | {'fwd':>7} {'floor':>7} {'x':>5} {'GB/s':>6} | "
          f"{'fwd+bwd':>8} {'floor':>7} {'x':>5}")
    for r in report["response"]:
        print(f"{r['N']:>6} {r['C']:>3} {r['dtype']:>8} | {r['fwd_ms']:7.3f} {r['fwd_floor_ms']:7.3f} "
              f"{r['fwd_x_floor']:5.2f} {r['fwd_GBps']:6.0f} | {r['fwd_ms'] + r['bwd_ms']:8.3f} "
              f"{r['fwd_floor_ms'] + r['bwd_floor_ms']:7.3f} {r['fwdbwd_x_floor']:5.2f}")
    print("\nPyTorch reference (Python loop), same 64M elements, constant couplings")
    for r in report["reference"]:
        print(f"N={r['N']:>6}: fwd {r['ref_fwd_ms']:.1f} ms, fwd+bwd {r['ref_fwdbwd_ms']:.1f} ms")
    print("\nLayer forward+backward, d_model 1024, bf16, 65536 tokens per batch (ms)")
    print(f"{'N':>6} {'batch':>5} | {'BK mixer':>9} {'+response':>9} {'attention':>9} | attention / BK, / BK+response")
    for r in report["layers"]:
        print(f"{r['N']:>6} {r['batch']:>5} | {r['bk_fwdbwd_ms']:9.2f} {r['bk_response_fwdbwd_ms']:9.2f} "
              f"{r['attention_fwdbwd_ms']:9.2f} | {r['attention_over_bk']:.2f}, {r['attention_over_bk_response']:.2f}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

"""BK-Core Triton kernels vs the float64 reference: relative errors of g and of the gradients of a, b, z.

    python -m benchmarks.kernels.bk_core_accuracy [--out bk_core_accuracy.json]

Random potentials in [-4, 4], couplings in [0, 2], N in {1, 7, 64, 1000, 4096, 65536}, Im z in {1, 0.1, 0.01},
both modes; error = max |fast - ref| / max |ref| per quantity, a random cotangent for the backward. Runs on CUDA
(or on CPU under TRITON_INTERPRET=1 with --max-n to keep it short). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from resnetbk.ops.bk_core import resolvent_diagonal


def errors(n, im_z, causal, device, rows=2, seed=0):
    gen = torch.Generator().manual_seed(seed + n)
    a = torch.empty(rows, n, dtype=torch.float64).uniform_(-4, 4, generator=gen)
    b = 2 * torch.rand(rows, max(n - 1, 0), dtype=torch.float64, generator=gen)
    z = torch.complex(torch.randn(rows, dtype=torch.float64, generator=gen),
                      torch.full((rows,), im_z, dtype=torch.float64))
    w = torch.complex(torch.randn(rows, n, dtype=torch.float64, generator=gen),
                      torch.randn(rows, n, dtype=torch.float64, generator=gen))
    out = []
    for dtype, backend in ((torch.float64, "reference"), (torch.float32, "triton")):
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        a_, b_ = (t.to(device, dtype).detach().clone().requires_grad_() for t in (a, b))
        z_ = z.to(device, cdtype).detach().clone().requires_grad_()
        g = resolvent_diagonal(a_, b_, z_, causal=causal, backend=backend)
        (g * w.to(device, cdtype)).real.sum().backward()
        out.append([g.detach(), a_.grad, b_.grad, z_.grad])

    def rel(x, r):
        if r is None or x is None or r.numel() == 0:  # no couplings at N = 1
            return 0.0
        x, r = x.cpu().to(r.dtype), r.cpu()
        return ((x - r).abs().max() / r.abs().max()).item()

    return dict(zip(("g", "grad_a", "grad_b", "grad_z"), (rel(f, r) for f, r in zip(out[1], out[0]))))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bk_core_accuracy.json")
    parser.add_argument("--max-n", type=int, default=65536)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("error: without CUDA, run with TRITON_INTERPRET=1 (and a small --max-n)")
    rows = []
    for n in (n for n in (1, 7, 64, 1000, 4096, 65536) if n <= args.max_n):
        for im_z in (1.0, 0.1, 0.01):
            for causal in (True, False):
                t0 = time.time()
                e = errors(n, im_z, causal, device)
                rows.append({"N": n, "im_z": im_z, "mode": "causal" if causal else "bidirectional", **e})
                print(f"N={n:>6} Im z={im_z:<5} {rows[-1]['mode']:>13}: "
                      + " ".join(f"{k} {v:.1e}" for k, v in e.items()) + f"  ({time.time() - t0:.0f} s)", flush=True)
    worst = max(max(r[k] for k in ("g", "grad_a", "grad_b", "grad_z")) for r in rows)
    at = max(rows, key=lambda r: max(r[k] for k in ("g", "grad_a", "grad_b", "grad_z")))
    print(f"\nworst relative error: {worst:.2e} (N={at['N']}, Im z={at['im_z']}, {at['mode']})")
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu (Triton interpreter)",
                   "date": time.strftime("%Y-%m-%d"), "rows": rows, "worst": worst}, f, indent=2)


if __name__ == "__main__":
    main()

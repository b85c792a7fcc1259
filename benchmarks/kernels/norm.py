"""The blocks' residual add + RMSNorm on a GPU: PyTorch ops against the fused Triton kernels
(resnetbk/ops/norm_triton.py), and against Liger-Kernel's LigerFusedAddRMSNorm when liger-kernel is installed (not a
dependency of this repository), forward and forward + backward, with the bandwidth each reaches. Prints a table and
writes JSON.

    python -m benchmarks.kernels.norm [--out norm_kernel.json]

What is timed is one norm as a block uses it: s = x + delta, n = rms_norm(s) * w, then backward with an upstream
gradient for both s (the residual stream) and n, so that autograd (PyTorch) or the kernel (Triton) adds the two.
Bytes moved, at the floor: forward reads x, delta and writes s, n (4 tensors); backward reads grad_s, grad_n, s and
writes the input gradient (4 tensors), plus what is per row or per column (ignored).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys

import torch
import torch.nn.functional as F
from triton.testing import do_bench_cudagraph

from resnetbk.ops.norm_triton import add_rms_norm

SHAPES = [(32768, 768), (32768, 1024), (32768, 2048), (16384, 4096)]  # tokens x d_model: small, base, 1b, 7b


def torch_add_rms_norm(x, delta, w, eps):
    s = x + delta
    return s, F.rms_norm(s, (s.shape[-1],), w, eps)


def liger_add_rms_norm(x, delta, w, eps):
    from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction

    # "gemma" casting computes in float32 throughout, as nn.RMSNorm and this repository's kernel do.
    n, s = LigerFusedAddRMSNormFunction.apply(delta, x, w, eps, 0.0, "gemma", False)
    return s, n


def time_one(fn, rows, d, dtype):
    """Median ms of forward and of forward + backward, each replayed as a CUDA graph: a graph takes the host's launch
    cost out, as the trainer's graphed blocks do (at these sizes Python's launches would otherwise be timed)."""
    x, delta = (torch.randn(rows, d, device="cuda", dtype=dtype, requires_grad=True) for _ in range(2))
    w = torch.randn(d, device="cuda", dtype=dtype, requires_grad=True)
    grads = [torch.randn(rows, d, device="cuda", dtype=dtype) for _ in range(2)]
    eps = torch.finfo(torch.float32).eps

    def forward():
        with torch.no_grad():
            fn(x, delta, w, eps)

    def forward_backward():
        torch.autograd.grad(fn(x, delta, w, eps), [x, delta, w], grads)

    return (do_bench_cudagraph(forward, return_mode="median"),
            do_bench_cudagraph(forward_backward, return_mode="median"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--out", default="norm_kernel.json")
    a = p.parse_args()
    dtype = getattr(torch, a.dtype)
    size = torch.finfo(dtype).bits // 8
    rows_out = []
    print(f"{'rows':>6} {'d':>5} {'impl':<7} {'fwd ms':>7} {'fwd GB/s':>8} {'fwd+bwd ms':>10} {'fwd+bwd GB/s':>12}")
    impls = [("torch", torch_add_rms_norm), ("triton", add_rms_norm)]
    if importlib.util.find_spec("liger_kernel") is not None:
        impls.append(("liger", liger_add_rms_norm))
    for rows, d in SHAPES:
        tensor_bytes = rows * d * size
        for name, fn in impls:
            fwd, both = time_one(fn, rows, d, dtype)
            row = {"rows": rows, "d": d, "impl": name, "fwd_ms": fwd, "fwd_bwd_ms": both,
                   "fwd_GBps": 4 * tensor_bytes / fwd / 1e6, "fwd_bwd_GBps": 8 * tensor_bytes / both / 1e6}
            rows_out.append(row)
            print(f"{rows:>6} {d:>5} {name:<7} {fwd:>7.3f} {row['fwd_GBps']:>8.0f} {both:>10.3f} "
                  f"{row['fwd_bwd_GBps']:>12.0f}")
    with open(a.out, "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(), "dtype": a.dtype, "torch": torch.__version__, "rows": rows_out},
                  f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

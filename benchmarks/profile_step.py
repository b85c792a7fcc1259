"""Where a training step's GPU time goes: forward + backward of a preset in bf16 under torch.profiler, without
DeepSpeed or the optimizer. Prints tokens/s and the top operators by CUDA time; writes JSON.

    python benchmarks/profile_step.py --config configs/small.yaml --micro-batch 32 --seq-len 1024 --out prof.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def main() -> int:
    from omegaconf import OmegaConf

    from resnetbk.config import ModelConfig
    from resnetbk.model import CausalLM

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--micro-batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("error: needs CUDA", file=sys.stderr)
        return 2
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(a.config).model,
                          {"max_seq_len": max(a.seq_len, 2048)})
    model = CausalLM(cfg).cuda().to(torch.bfloat16)
    tokens = torch.randint(0, cfg.vocab_size, (a.micro_batch, a.seq_len + 1), device="cuda")

    def step():
        out = model(tokens[:, :-1], tokens[:, 1:])
        out.loss.backward()

    for _ in range(3):  # compile the Triton kernels, warm the allocator
        step()
    torch.cuda.synchronize()
    start = time.time()
    for _ in range(a.steps):
        step()
    torch.cuda.synchronize()
    wall_ms = (time.time() - start) / a.steps * 1e3
    tok_per_s = a.micro_batch * a.seq_len / wall_ms * 1e3

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    events = sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)
    total = sum(e.self_device_time_total for e in events)
    rows = [{"op": e.key, "cuda_ms": e.device_time_total / 1e3, "self_cuda_ms": e.self_device_time_total / 1e3,
             "calls": e.count} for e in events[:a.top]]
    print(f"{a.config}: micro-batch {a.micro_batch} x {a.seq_len}: {tok_per_s:,.0f} tokens/s forward+backward (bf16, "
          f"no optimizer); a step takes {wall_ms:.1f} ms, the GPU is busy {total / 1e3:.1f} ms of it")
    print(f"{'operator':<60} {'CUDA ms':>9} {'self ms':>9} {'calls':>6}")
    for r in rows:
        print(f"{r['op'][:60]:<60} {r['cuda_ms']:>9.2f} {r['self_cuda_ms']:>9.2f} {r['calls']:>6}")
    with open(a.out, "w") as f:
        json.dump({"config": a.config, "micro_batch": a.micro_batch, "seq_len": a.seq_len, "tokens_per_sec": tok_per_s,
                   "step_wall_ms": wall_ms, "gpu_busy_ms": total / 1e3, "gpu": torch.cuda.get_device_name(), "top": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

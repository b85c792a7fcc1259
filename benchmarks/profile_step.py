"""Where a training step's GPU time goes: a preset in bf16 under torch.profiler. Prints tokens/s and the top
operators by CUDA time; writes JSON.

    python benchmarks/profile_step.py --config configs/small.yaml --micro-batch 32 --seq-len 1024 --out prof.json

--engine: the step the trainer takes (DeepSpeed engine from ds_configs/h100/zero2.json, FusedAdam:
forward, backward, optimizer step) instead of the model alone (forward and backward, no optimizer).
--compile: each block through torch.compile (an experiment: the trainer does not compile; docs/performance.md
says why).
Random tokens; one process, one GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def build_engine(model, micro_batch: int):
    import deepspeed

    from resnetbk.optim import param_groups
    from resnetbk.profiles import strategy_config
    from resnetbk.train import _single_process_env

    _single_process_env()
    ds = strategy_config("h100", "zero2")  # what ds_configs/h100/zero2.json holds (a test keeps them equal)
    ds.update(train_micro_batch_size_per_gpu=micro_batch, train_batch_size=micro_batch, gradient_accumulation_steps=1,
              optimizer={"type": "AdamW", "params": {"lr": 1e-4, "weight_decay": 0.1}})
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=param_groups(model, 0.1), config=ds)
    return engine


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
    p.add_argument("--engine", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("error: needs CUDA", file=sys.stderr)
        return 2
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(a.config).model,
                          {"max_seq_len": max(a.seq_len, 2048)})
    torch.manual_seed(0)
    model = CausalLM(cfg)
    if a.compile:
        for block in model.blocks:
            block.compile()
    if a.engine:
        engine = build_engine(model, a.micro_batch)
    else:
        model = model.cuda().to(torch.bfloat16)
    tokens = torch.randint(0, cfg.vocab_size, (a.micro_batch, a.seq_len + 1), device="cuda")

    def step():
        if a.engine:
            engine.backward(engine(tokens[:, :-1], tokens[:, 1:]).loss)
            engine.step()
        else:
            model(tokens[:, :-1], tokens[:, 1:]).loss.backward()

    started = time.time()
    for _ in range(3):  # compile (Triton kernels, torch.compile), warm the allocator
        step()
    torch.cuda.synchronize()
    warmup_s = time.time() - started
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
    what = ("engine: forward, backward, optimizer step" if a.engine else "model: forward+backward, no optimizer") + (
        ", blocks compiled" if a.compile else "")
    print(f"{a.config}: micro-batch {a.micro_batch} x {a.seq_len} ({what}): {tok_per_s:,.0f} tokens/s; a step takes "
          f"{wall_ms:.1f} ms, the GPU is busy {total / 1e3:.1f} ms of it; first 3 steps {warmup_s:.0f} s; "
          f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"{'operator':<60} {'CUDA ms':>9} {'self ms':>9} {'calls':>6}")
    for r in rows:
        print(f"{r['op'][:60]:<60} {r['cuda_ms']:>9.2f} {r['self_cuda_ms']:>9.2f} {r['calls']:>6}")
    with open(a.out, "w") as f:
        json.dump({"config": a.config, "micro_batch": a.micro_batch, "seq_len": a.seq_len, "engine": a.engine,
                   "compile": a.compile, "tokens_per_sec": tok_per_s, "step_wall_ms": wall_ms, "warmup_s": warmup_s,
                   "gpu_busy_ms": total / 1e3, "max_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
                   "gpu": torch.cuda.get_device_name(), "top": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a training step's GPU time goes: a preset in bf16 under torch.profiler. Prints tokens/s, how long the
GPU sat idle in each phase of the step, the longest idle gaps, and the operators whose kernels took the most
GPU time; writes JSON.

    python -m benchmarks.training.profile_step --config configs/small.yaml --micro-batch 32 --seq-len 1024 \\
        --out prof.json

--engine: the step the trainer takes (DeepSpeed engine from ds_configs/h100/zero2.json, FusedAdam:
forward, backward, optimizer step) instead of the model alone (forward and backward, no optimizer).
The engine is configured as the trainer configures one rank (overlap_comm off, DeepSpeed's per-tensor gradient
checks replaced: resnetbk/training/engine.py, resnetbk/training/workarounds.py). To compare:
--ds KEY=VALUE (with --engine, repeatable): change that DeepSpeed config, e.g. --ds timers.throughput.enabled=true
--ds zero_optimization.overlap_comm=true (VALUE is JSON, or a string).
--deepspeed-checks (with --engine): keep DeepSpeed's own per-tensor gradient checks.
--compile: each block through torch.compile (an experiment: the trainer does not compile; docs/performance.md
says why).
--cuda-graphs: each block replayed as CUDA graphs (resnetbk/training/cuda_graphs.py), as the trainer does by default.
Random tokens (a different draw on each rank). One process on one GPU, or with --engine one per GPU under a
launcher, to see what data parallelism adds to the step (rank 0 reports; micro-batch per GPU):
    torchrun --nproc_per_node 2 -m benchmarks.training.profile_step --engine --config configs/small.yaml \\
        --out prof2.json

GPU busy time is the union of kernel and memory-copy intervals in the profiled steps' trace, so nothing is
counted twice; idle = wall - busy, attributed to the phase (forward, backward, optimizer) the CPU was in when
the GPU ran out of work. Operators: each kernel's time goes to the operator that launched it (innermost).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import gzip
import json
import os
import sys
import tempfile
import time

import torch

PHASES = ("forward", "backward", "optimizer")
BUSY_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


def set_key(config: dict, dotted: str, raw: str) -> None:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    *parents, leaf = dotted.split(".")
    for key in parents:
        config = config.setdefault(key, {})
    config[leaf] = value


def engine_config(micro_batch: int, world_size: int, ds_overrides: list[str]) -> dict:
    """The h100 zero2 JSON as the trainer completes it for world_size ranks, with the --ds changes."""
    from resnetbk.training.ds_config import drop_single_rank_overlap
    from resnetbk.training.profiles import strategy_config

    ds = strategy_config("h100", "zero2")  # what ds_configs/h100/zero2.json holds (a test keeps them equal)
    ds.update(train_micro_batch_size_per_gpu=micro_batch, train_batch_size=micro_batch * world_size,
              gradient_accumulation_steps=1, optimizer={"type": "AdamW", "params": {"lr": 1e-4, "weight_decay": 0.1}})
    drop_single_rank_overlap(ds["zero_optimization"], world_size)
    for item in ds_overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --ds {item!r}: expected KEY=VALUE")
        set_key(ds, key, raw)
    return ds


def merge(intervals):
    out = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


def timeline(trace: dict, top_gaps: int = 12, top_ops: int = 25, phases=PHASES) -> dict:
    """GPU busy and idle time of the traced steps, idle per CPU phase (profiler ranges named in phases), the
    longest gaps and the operators whose kernels took the most time, from a torch.profiler chrome trace."""
    names = phases
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    gpu = [e for e in events if e.get("cat") in BUSY_CATEGORIES]
    cpu_ops = [e for e in events if e.get("cat") == "cpu_op"]
    phases = [e for e in events if e.get("cat") == "user_annotation" and e["name"] in names]
    if not gpu or not phases:
        raise RuntimeError("the trace holds no GPU activity or no phase annotations")
    busy = merge([e["ts"], e["ts"] + e["dur"]] for e in gpu)
    start, end = min(p["ts"] for p in phases), max(p["ts"] + p["dur"] for p in phases)
    end = max(end, busy[-1][1])  # the GPU finishes after the CPU has queued everything
    busy_us = sum(min(b, end) - max(a, start) for a, b in busy if b > start and a < end)
    # Gaps: before the first kernel of the window, between busy intervals.
    edges = [start] + [x for a, b in busy if b > start and a < end for x in (a, b)] + [end]
    gaps = [(edges[i], edges[i + 1]) for i in range(0, len(edges) - 1, 2) if edges[i + 1] > edges[i]]

    def phase_at(t):
        for p in phases:
            if p["ts"] <= t < p["ts"] + p["dur"]:
                return p["name"]
        return "between phases"

    by_id = {e["args"].get("External id"): e for e in cpu_ops if "External id" in e.get("args", {})}
    # Backward ops are named after the autograd node that ran them (e.g. "MmBackward0 > aten::mm").
    nodes = sorted((e["ts"], e["ts"] + e["dur"], e["tid"], e["name"].split(": ")[-1]) for e in cpu_ops
                   if e["name"].startswith("autograd::engine::evaluate_function"))
    starts = [n[0] for n in nodes]

    def label(op):
        dims = op.get("args", {}).get("Input Dims")
        name = op["name"] + (f" {dims}" if dims else "")
        last = bisect.bisect_right(starts, op["ts"])
        for _, node_end, tid, node in reversed(nodes[max(0, last - 64):last]):  # the innermost node holding the op
            if tid == op["tid"] and op["ts"] < node_end:
                return f"{node} > {name}"
        return name

    launches = {}  # kernel -> the op that launched it
    for e in gpu:
        op = by_id.get(e.get("args", {}).get("External id"))
        launches[id(e)] = label(op) if op else f"(no op) {e['name'][:50]}"
    next_kernel = sorted(gpu, key=lambda e: e["ts"])
    idle_by_phase = collections.Counter()
    gap_rows = []
    j = 0
    for a, b in gaps:
        phase = phase_at(a)
        idle_by_phase[phase] += b - a
        while j < len(next_kernel) and next_kernel[j]["ts"] < b:
            j += 1
        after = launches[id(next_kernel[j])] if j < len(next_kernel) else "(end)"
        gap_rows.append({"idle_ms": (b - a) / 1e3, "phase": phase, "next_kernel_from": after})
    gap_rows.sort(key=lambda r: -r["idle_ms"])
    op_time, op_calls = collections.Counter(), collections.Counter()
    for e in gpu:
        op_time[launches[id(e)]] += e["dur"]
        op_calls[launches[id(e)]] += 1
    phase_ms = collections.Counter()
    for p in phases:
        phase_ms[p["name"]] += p["dur"] / 1e3
    return {"wall_ms": (end - start) / 1e3, "gpu_busy_ms": busy_us / 1e3, "gpu_idle_ms": (end - start - busy_us) / 1e3,
            "idle_ms_by_phase": {k: v / 1e3 for k, v in idle_by_phase.most_common()},
            "cpu_ms_by_phase": dict(phase_ms), "longest_gaps": gap_rows[:top_gaps],
            "ops": [{"op": op, "gpu_ms": t / 1e3, "kernels": op_calls[op]} for op, t in op_time.most_common(top_ops)]}


def main() -> int:
    from resnetbk.config import load_config
    from resnetbk.models.decoder import CausalLM

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--micro-batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--profiled-steps", type=int, default=2)
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--engine", action="store_true")
    p.add_argument("--ds", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--deepspeed-checks", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--cuda-graphs", action="store_true")
    p.add_argument("--trace", help="also keep the chrome trace here (gzipped)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("error: needs CUDA", file=sys.stderr)
        return 2
    if (a.ds or a.deepspeed_checks) and not a.engine:
        print("error: --ds and --deepspeed-checks change the DeepSpeed engine; they need --engine", file=sys.stderr)
        return 2
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not a.engine:
        print("error: several ranks need --engine (the model alone has no gradient reduction)", file=sys.stderr)
        return 2
    rank = int(os.environ.get("RANK", "0"))
    # The preset's model; random tokens stand in for its data, and seed 0 gives every rank the same weights.
    run = load_config(a.config, ["data.train=-", "data.val=-", "data.tokenizer=-", "train.seed=0",
                                 f"model.max_seq_len={max(a.seq_len, 2048)}"])
    cfg = run.model
    if a.engine:
        import deepspeed

        from resnetbk.training.engine import build_engine, single_process_env

        single_process_env()  # without a launcher: a world of one
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        deepspeed.init_distributed(dist_backend="nccl")
        engine = build_engine(run, engine_config(a.micro_batch, world, a.ds), a.deepspeed_checks)
        model = engine.module
    else:
        torch.manual_seed(0)
        model = CausalLM(cfg).cuda().to(torch.bfloat16)
    if a.compile:
        for block in model.blocks:
            block.compile()
    if a.cuda_graphs:
        from resnetbk.training.cuda_graphs import graph_blocks

        graph_blocks(model, a.micro_batch, a.seq_len)
    torch.manual_seed(1 + rank)
    tokens = torch.randint(0, cfg.vocab_size, (a.micro_batch, a.seq_len + 1), device="cuda")
    record = torch.profiler.record_function

    def step():
        if a.engine:
            with record("forward"):
                loss = engine(tokens[:, :-1], tokens[:, 1:]).loss
            with record("backward"):
                engine.backward(loss)
            with record("optimizer"):
                engine.step()
        else:
            with record("forward"):
                loss = model(tokens[:, :-1], tokens[:, 1:]).loss
            with record("backward"):
                loss.backward()

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

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA],
                                record_shapes=True) as prof:
        for _ in range(a.profiled_steps):
            step()
        torch.cuda.synchronize()
    if rank != 0:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
        if a.trace:
            with open(path, "rb") as f, gzip.open(a.trace, "wb") as g:
                g.write(f.read())
    tl = timeline(trace, top_ops=a.top)
    n = a.profiled_steps
    peak_allocated, peak_reserved = torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30
    what = (f"{world} GPUs, rank 0: " if world > 1 else "") + (
        "engine: forward, backward, optimizer step" if a.engine else "model: forward+backward, no optimizer") + (
        ", blocks compiled" if a.compile else "") + (", CUDA graphs" if a.cuda_graphs else "") + "".join(
        f", {o}" for o in a.ds) + (", DeepSpeed's gradient checks" if a.deepspeed_checks else "")
    print(f"{a.config}: micro-batch {a.micro_batch} x {a.seq_len} ({what}): {tok_per_s:,.0f} tokens/s per GPU; "
          f"a step takes {wall_ms:.1f} ms; first 3 steps {warmup_s:.0f} s; peak {peak_allocated:.1f} GiB allocated, "
          f"{peak_reserved:.1f} GiB reserved")
    print(f"profiled ({n} steps, per step): wall {tl['wall_ms'] / n:.1f} ms, GPU busy {tl['gpu_busy_ms'] / n:.1f} ms, "
          f"idle {tl['gpu_idle_ms'] / n:.1f} ms: "
          + ", ".join(f"{k} {v / n:.1f}" for k, v in tl["idle_ms_by_phase"].items())
          + " | CPU time per phase: " + ", ".join(f"{k} {v / n:.1f}" for k, v in tl["cpu_ms_by_phase"].items()))
    print("longest idle gaps (ms, phase, the op whose kernel ended it): " + "; ".join(
        f"{g['idle_ms']:.2f} {g['phase']} {g['next_kernel_from'][:40]}" for g in tl["longest_gaps"][:8]))
    print(f"{'operator (launching the kernels)':<90} {'GPU ms/step':>11} {'kernels':>8}")
    for r in tl["ops"]:
        print(f"{r['op'][:90]:<90} {r['gpu_ms'] / n:>11.2f} {r['kernels'] / n:>8.0f}")
    with open(a.out, "w") as f:
        json.dump({"config": a.config, "micro_batch": a.micro_batch, "seq_len": a.seq_len, "engine": a.engine,
                   "world_size": world, "ds_overrides": a.ds, "deepspeed_checks": a.deepspeed_checks,
                   "compile": a.compile, "cuda_graphs": a.cuda_graphs, "tokens_per_sec": tok_per_s,
                   "step_wall_ms": wall_ms, "warmup_s": warmup_s, "max_allocated_gib": peak_allocated,
                   "max_reserved_gib": peak_reserved, "gpu": torch.cuda.get_device_name(), "profiled_steps": n,
                   "timeline": tl}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

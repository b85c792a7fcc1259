"""Trains one preset under several DeepSpeed strategies and GPU counts; prints a table and writes JSON.

    python -m benchmarks.training.ds_strategies --config configs/small.yaml --strategies zero1,zero2,zero3 \\
        --ngpus 1 --steps 50 --out docs/results/strategies.json data.train=... data.val=... data.tokenizer=...

Each (GPU count, strategy) is one `deepspeed --num_gpus N --module resnetbk.train` run. From its
metrics.jsonl: tokens/s and model TFLOP/s per GPU (mean over logged intervals after the first, which holds
start-up), peak GPU memory (torch's max allocated, rank 0), host RSS of rank 0, and the loss curve. Each run
is compared with the same strategy's run at the first GPU count:
- scaling/GPU: its tokens/s per GPU over the first count's. Weak scaling, with a fixed micro-batch per GPU and
  train.global_batch unset, so the global batch grows with the GPU count and every rank does the same work per
  step at any count: the cost of going parallel. With train.global_batch=... fixed instead, the first count
  accumulates micro-batches, which also spreads its optimizer step over more tokens.
- vs 1st: the largest |loss difference| along the curve, only when both runs trained on the same batches
  (equal global batch, so equal tokens per step); "-" otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time


def run_one(args, ngpus: int, strategy: str) -> dict:
    run_dir = os.path.join(args.work_dir, f"{ngpus}gpu-{strategy}")
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time, not a continuation of an older one
    beside = os.path.join(os.path.dirname(sys.executable), "deepspeed")
    cmd = [beside if os.path.exists(beside) else shutil.which("deepspeed"), "--num_gpus", str(ngpus), "--module",
           "resnetbk.train", "--config", args.config, f"deepspeed.strategy={strategy}",
           f"train.max_steps={args.steps}", f"train.log_interval={args.log_interval}",
           f"train.eval_interval={args.steps}", "train.save_interval=0", "train.eval_max_batches=4",
           "sample.max_new_tokens=0", f"optim.warmup_steps={min(10, args.steps - 1)}", f"run_dir={run_dir}",
           *args.overrides]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    row = {"ngpus": ngpus, "strategy": strategy, "wall_sec": round(time.time() - start, 1), "ok": proc.returncode == 0}
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() + proc.stdout.splitlines()
                 if "Error" in line or line.startswith("error")]
        row["error"] = (lines[-1] if lines else proc.stderr[-300:]).strip()[:300]
        return row
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    steady = records[1:] or records
    mean = lambda key: sum(r[key] for r in steady) / len(steady)  # noqa: E731
    row.update(tokens_per_sec=mean("tokens_per_sec"), tokens_per_sec_per_gpu=mean("tokens_per_sec") / ngpus,
               tflops_per_gpu=mean("tflops_per_gpu"), mfu=mean("mfu") if "mfu" in steady[0] else None,
               max_allocated_gib=max(r.get("max_allocated_gib", 0.0) for r in records),
               max_reserved_gib=max(r.get("max_reserved_gib", 0.0) for r in records),
               host_rss_gib=max(r["host_rss_gib"] for r in records), losses=[r["loss"] for r in records],
               final_loss=records[-1]["loss"], tokens=records[-1]["tokens"], val_loss=records[-1].get("val_loss"),
               micro_batch=records[-1].get("micro_batch"))  # after any start-up OOM halving
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--strategies", default="zero1,zero2,zero3,zero2-offload,zero3-offload")
    parser.add_argument("--ngpus", default="1", help="comma-separated GPU counts")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--work-dir", default="/tmp/ds_strategies")
    parser.add_argument("--out", required=True, help="JSON results file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="run config overrides for every run")
    args = parser.parse_args()

    rows = []
    header = (f"{'GPUs':>4} {'strategy':<14} {'tok/s':>10} {'tok/s/GPU':>10} {'scaling':>8} {'TFLOP/s/GPU':>11} "
              f"{'MFU':>6} {'GPU GiB':>8} {'resv GiB':>8} {'host GiB':>8} {'loss':>7} {'vs 1st':>8} {'wall s':>7}")
    print(header, flush=True)
    first = {}  # strategy -> its row at the first GPU count
    for strategy in args.strategies.split(","):
        for ngpus in (int(n) for n in args.ngpus.split(",")):
            row = run_one(args, ngpus, strategy)
            if row["ok"]:
                ref = first.setdefault(strategy, row)
                row["scaling_per_gpu"] = row["tokens_per_sec_per_gpu"] / ref["tokens_per_sec_per_gpu"]
                same_batches = row["tokens"] == ref["tokens"]
                row["max_loss_diff_vs_first"] = (max(abs(a - b) for a, b in zip(row["losses"], ref["losses"]))
                                                 if same_batches else None)
                mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "-"
                diff = f"{row['max_loss_diff_vs_first']:.4f}" if same_batches else "-"
                print(f"{ngpus:>4} {strategy:<14} {row['tokens_per_sec']:>10,.0f} "
                      f"{row['tokens_per_sec_per_gpu']:>10,.0f} {row['scaling_per_gpu']:>8.1%} "
                      f"{row['tflops_per_gpu']:>11.1f} {mfu:>6} {row['max_allocated_gib']:>8.1f} "
                      f"{row['max_reserved_gib']:>8.1f} {row['host_rss_gib']:>8.1f} {row['final_loss']:>7.3f} "
                      f"{diff:>8} {row['wall_sec']:>7.0f}", flush=True)
            else:
                print(f"{ngpus:>4} {strategy:<14} FAILED: {row['error']}", flush=True)
            rows.append(row)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"config": args.config, "overrides": args.overrides, "steps": args.steps, "rows": rows}, f, indent=2)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

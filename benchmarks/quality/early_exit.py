"""Early exit: what training with exit losses costs at full depth, and held-out perplexity against the blocks run per
token when decoding exits at a confidence threshold. Prints a table and writes JSON.

    python -m benchmarks.quality.early_exit --out early_exit.json                     # CPU: the demo's model, 250 steps
    python -m benchmarks.quality.early_exit --out early_exit.json deepspeed.profile=auto train.micro_batch=32

Two runs from configs/tiny.yaml with the same seed and data: without exits, and with exits after blocks 1, 2 and 3 of
4 (model.exit_layers, one exit's loss per forward in turn). Each is exported; `python -m resnetbk.evaluate` then gives
both full-depth validation losses and, for the run with exits, the loss and the blocks run per token at each
threshold (teacher-forced incremental decoding, one window at a time, --windows of them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from benchmarks.common import ROOT, run, train_once, write_result

ARMS = {"full depth": [], "exits 1,2,3": ["model.exit_layers=[1,2,3]"]}


def evaluate(export: str, data: str, extra: list, log: str) -> dict:
    run([sys.executable, "-m", "resnetbk.evaluate", export, "--data", data, "--device", "cpu", *extra], log)
    with open(log) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/kjv")
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--thresholds", default="0.2,0.4,0.6,0.8,2")
    p.add_argument("--windows", type=int, default=48, help="validation windows for the early-exit evaluations")
    p.add_argument("--work-dir", default="runs/early_exit")
    p.add_argument("--out", required=True)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    a = p.parse_args()
    data = [f"data.train={a.data}/train", f"data.val={a.data}/val", f"data.tokenizer={a.data}/tokenizer.model"]
    os.makedirs(a.work_dir, exist_ok=True)
    if a.data == "data/kjv" and not os.path.isfile(os.path.join(ROOT, a.data, "val", "manifest.json")):
        run([sys.executable, "-m", "data_prep", "kjv", "--out", a.data], os.path.join(a.work_dir, "data_prep.log"))
    rows = []
    for arm, extra in ARMS.items():
        cmd = [sys.executable, "-m", "resnetbk.train", "--config", "configs/tiny.yaml", *data, *extra, *a.overrides,
               f"train.max_steps={a.steps}", "sample.max_new_tokens=0"]
        run_dir = train_once(cmd, a.work_dir, arm.replace(" ", "_").replace(",", ""))
        export = os.path.join(run_dir, "export")
        run([sys.executable, "-m", "resnetbk.export", run_dir, "--out", export], run_dir + ".export.log")
        full = evaluate(export, f"{a.data}/val", [], run_dir + ".eval.log")
        rows.append({"arm": arm, "threshold": None, "loss": full["loss"], "ppl": full["ppl"],
                     "layers_per_token": 4.0, "tokens": full["tokens"]})
        print(f"{arm:<12} full depth: val loss {full['loss']:.4f} (ppl {full['ppl']:.1f})", flush=True)
        if not extra:
            continue
        for threshold in (float(t) for t in a.thresholds.split(",")):
            r = evaluate(export, f"{a.data}/val", ["--exit-threshold", str(threshold), "--batch-size", "1",
                                                   "--max-batches", str(a.windows)], run_dir + f".exit{threshold}.log")
            rows.append({"arm": arm, "threshold": threshold, **{k: r[k] for k in ("loss", "ppl", "layers_per_token",
                                                                                  "tokens")}})
            print(f"{arm:<12} exit at {threshold:<4g}: val loss {r['loss']:.4f} (ppl {r['ppl']:.1f}), "
                  f"{r['layers_per_token']:.2f} of 4 blocks per token", flush=True)
    print(f"\n{'arm':<12} {'threshold':>9} {'val loss':>9} {'ppl':>7} {'blocks/token':>12} {'tokens':>8}")
    for r in rows:
        threshold = "-" if r["threshold"] is None else f"{r['threshold']:g}"
        print(f"{r['arm']:<12} {threshold:>9} {r['loss']:>9.4f} {r['ppl']:>7.1f} {r['layers_per_token']:>12.2f} "
              f"{r['tokens']:>8,}")
    write_result(a.out, {"steps": a.steps, "overrides": a.overrides, "windows": a.windows, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

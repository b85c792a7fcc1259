"""Does curriculum or active-learning data selection help? Uniform vs curriculum vs active learning at an equal
compute budget counted in FLOPs (active learning's scoring forwards included), several seeds, on real text.
Prints a table and writes JSON.

    python -m benchmarks.quality.data_selection --out docs/results/sampling.json            # CPU, small budget
    python -m benchmarks.quality.data_selection --steps 600 --out sampling_h100.json        # one GPU

1. A reference model (same config, another seed, --ref-steps steps on the training split) is trained and
   exported; `python -m data_prep difficulty --reference` stores length, rarity and its per-document loss
   beside the training shards. Its cost is reported apart: it is paid once, not per run.
2. Each arm trains from scratch for each seed. Uniform and curriculum get --steps optimizer steps; an
   active arm with keep fraction f scores micro_batch / f candidates with one forward each per micro-step,
   so it gets the number of steps that spends the same FLOPs (resnetbk/models/counts.py).
3. The target validation loss is the uniform arm's mean final validation loss. For each run: the first
   evaluation at or below the target (tokens, FLOPs, wall time), and the final validation loss.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from benchmarks.common import ROOT, read_metrics, run, train_once, write_result

ARMS = {
    "uniform": [],
    "curriculum-ref_loss": ["data.curriculum.metric=ref_loss", "data.curriculum.start_percent=20"],
    "curriculum-rarity": ["data.curriculum.metric=rarity", "data.curriculum.start_percent=20"],
    "active-reducible": ["data.active.score=reducible", "data.active.keep_fraction=0.5"],
    "active-loss": ["data.active.score=loss", "data.active.keep_fraction=0.5"],
}


def active_steps(config: str, overrides: list[str], steps: int, keep: float) -> int:
    """Steps of an active arm that cost what `steps` uniform steps cost."""
    from resnetbk.config import load_config
    from resnetbk.models.counts import forward_flops_per_token, training_flops_per_token

    cfg = load_config(config, overrides)
    n = cfg.train.seq_len
    train, score = training_flops_per_token(cfg.model, n), forward_flops_per_token(cfg.model, n) / keep
    return int(steps * train / (train + score))


def summarize(runs: list[dict], arms: list[str], target: float, why: str) -> list[dict]:
    """Per arm: final validation loss (mean, std) and, over the runs that reach `target`, the tokens, FLOPs and
    seconds to the first evaluation at or below it. Prints the table; returns its rows."""
    for r in runs:
        hit = next((c for c in r["curve"] if c["val_loss"] <= target), None)
        r["to_target"] = hit and {k: hit[k] for k in ("step", "tokens", "flops", "elapsed_sec")}
    summary = []
    print(f"\ntarget validation loss {target:.4f} ({why})\n")
    print(f"{'arm':<20} {'steps':>5} {'final val loss':>17} {'TFLOP':>7} {'scoring':>7} {'reached':>7} "
          f"{'tokens to target':>16} {'TFLOP to target':>15} {'s to target':>11}")
    for arm in arms:
        rs = [r for r in runs if r["arm"] == arm]
        finals = [r["final_val_loss"] for r in rs]
        hits = [r["to_target"] for r in rs if r["to_target"]]
        mean = lambda key: statistics.mean(h[key] for h in hits) if hits else None  # noqa: E731
        row = {"arm": arm, "steps": rs[0]["steps"], "final_val_loss_mean": statistics.mean(finals),
               "final_val_loss_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
               "flops_mean": statistics.mean(r["flops"] for r in rs),
               "scoring_share": statistics.mean(r["scoring_flops"] / r["flops"] for r in rs),
               "scoring_sec_mean": statistics.mean(r["scoring_sec"] for r in rs),
               "reached": len(hits), "runs": len(rs), "tokens_to_target": mean("tokens"),
               "flops_to_target": mean("flops"), "sec_to_target": mean("elapsed_sec")}
        summary.append(row)
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        print(f"{arm:<20} {row['steps']:>5} {row['final_val_loss_mean']:>9.4f} ± {row['final_val_loss_std']:.4f} "
              f"{row['flops_mean'] / 1e12:>7.1f} {row['scoring_share']:>7.1%} {row['reached']:>3}/{row['runs']:<3} "
              f"{fmt(row['tokens_to_target'], ',.0f'):>16} "
              f"{fmt(row['flops_to_target'] and row['flops_to_target'] / 1e12, '.1f'):>15} "
              f"{fmt(row['sec_to_target'], '.0f'):>11}")
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--data", default="data/kjv", help="prepared corpus (python -m data_prep kjv)")
    p.add_argument("--arms", default="uniform,curriculum-ref_loss,active-reducible", help=", ".join(ARMS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=200, help="optimizer steps of the uniform arm (the budget)")
    p.add_argument("--ref-steps", type=int, default=100)
    p.add_argument("--evals", type=int, default=10, help="validation points per run")
    p.add_argument("--work-dir", default="runs/sampling_experiment")
    p.add_argument("--out", help="JSON results (required unless --table)")
    p.add_argument("--target", type=float, help="validation loss target (default: uniform's mean final)")
    p.add_argument("--table", metavar="JSON", help="print the table of earlier results (with --target) and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="for every run, e.g. deepspeed.profile=cpu")
    a = p.parse_args()
    if a.table:
        with open(a.table) as f:
            runs = json.load(f)["runs"]
        summarize(runs, list(dict.fromkeys(r["arm"] for r in runs)), a.target or 0.0, "--target")
        return 0
    if not a.out:
        p.error("--out is required")
    arms = a.arms.split(",")
    for arm in arms:
        if arm not in ARMS:
            p.error(f"--arms: unknown arm '{arm}' ({', '.join(ARMS)})")
    os.makedirs(a.work_dir, exist_ok=True)
    data = [f"data.train={a.data}/train", f"data.val={a.data}/val", f"data.tokenizer={a.data}/tokenizer.model"]
    py = sys.executable
    if not os.path.isfile(os.path.join(ROOT, a.data, "val", "manifest.json")):
        run([py, "-m", "data_prep", "kjv", "--out", a.data], os.path.join(a.work_dir, "data_prep.log"))

    # 1. Reference model and difficulty metrics.
    interval = max(1, a.ref_steps // 2)
    common = [py, "-m", "resnetbk.train", "--config", a.config, *data, *a.overrides, "sample.max_new_tokens=0"]
    started = time.time()
    ref_dir = train_once([*common, "train.seed=999", f"train.max_steps={a.ref_steps}", f"train.log_interval={interval}",
                          f"train.eval_interval={interval}", f"optim.warmup_steps={a.ref_steps // 10}"],
                         a.work_dir, "reference")
    export = os.path.join(ref_dir, "export")
    if not os.path.isfile(os.path.join(export, "tokenizer.model")):  # the last file resnetbk.export writes
        run([py, "-m", "resnetbk.export", ref_dir, "--out", export], os.path.join(a.work_dir, "export.log"))
    run([py, "-m", "data_prep", "difficulty", f"{a.data}/train", "--reference", export],
        os.path.join(a.work_dir, "difficulty.log"))
    ref_metrics = read_metrics(ref_dir)
    reference = {"steps": a.ref_steps, "flops": ref_metrics[-1]["flops"], "val_loss": ref_metrics[-1]["val_loss"],
                 "wall_sec": time.time() - started}
    print(f"reference: {a.ref_steps} steps, val loss {reference['val_loss']:.4f}, {reference['flops'] / 1e12:.1f} "
          f"TFLOP (incl. export and difficulty: {reference['wall_sec']:.0f} s)", flush=True)

    # 2. The arms.
    runs = []
    for arm in arms:
        extra = list(ARMS[arm])
        steps = a.steps
        if arm.startswith("active"):
            keep = float(next(o for o in extra if "keep_fraction" in o).split("=")[1])
            steps = active_steps(a.config, [*data, *a.overrides], a.steps, keep)
        if arm.startswith("curriculum"):
            extra.append(f"data.curriculum.total_steps={max(1, steps // 2)}")
        every = max(1, steps // a.evals)
        for seed in range(1, a.seeds + 1):
            run_dir = train_once([*common, *extra, f"train.seed={seed}", f"train.max_steps={steps}",
                                  f"train.log_interval={every}", f"train.eval_interval={every}"],
                                 a.work_dir, f"{arm}-seed{seed}")
            records = read_metrics(run_dir)
            curve = [{k: r.get(k) for k in ("step", "tokens", "flops", "elapsed_sec", "val_loss")}
                     for r in records if "val_loss" in r]
            runs.append({"arm": arm, "seed": seed, "steps": steps, "curve": curve,
                         "final_val_loss": curve[-1]["val_loss"], "flops": records[-1]["flops"],
                         "scoring_flops": records[-1].get("scoring_flops", 0.0),
                         "scoring_sec": records[-1].get("scoring_sec", 0.0), "wall_sec": records[-1]["elapsed_sec"]})
            print(f"{arm:<20} seed {seed}: {steps} steps, final val loss {runs[-1]['final_val_loss']:.4f}, "
                  f"{runs[-1]['flops'] / 1e12:.1f} TFLOP, {runs[-1]['wall_sec']:.0f} s", flush=True)
            with open(a.out, "w") as f:  # partial results survive an interrupted experiment
                json.dump({"command": " ".join(sys.argv), "reference": reference, "runs": runs}, f, indent=2)

    # 3. Target and table.
    uniform = [r["final_val_loss"] for r in runs if r["arm"] == "uniform"]
    target = a.target or (statistics.mean(uniform) if uniform else min(r["final_val_loss"] for r in runs))
    summary = summarize(runs, arms, target, "--target" if a.target else "uniform's mean final")
    write_result(a.out, {"config": a.config, "overrides": a.overrides, "target_val_loss": target,
                         "reference": reference, "summary": summary, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The quality protocol every architecture is judged by: equal parameters and tokens, each arm at its best learning
rate of a grid, several seeds, GPT in the same run, paired per-seed differences. Prints a table and writes JSON
(curves included; benchmarks/quality/plot.py draws them).

    python -m benchmarks.quality.compare --out quality_tiny.json                       # KJV, d = 192, N = 128
    python -m benchmarks.quality.compare --out quality_d384.json model.d_model=384 model.n_layers=6 \\
        model.ffn_hidden=1024
    python -m benchmarks.quality.compare --data data/docs --arms bk-response,gpt --out docs.json \\
        train.seq_len=1024 model.max_seq_len=1024 model.vocab_size=16384 ...

Protocol:
- arms (ARMS below; a new family or variant is one more entry): each starts from configs/tiny.yaml or
  configs/tiny-gpt.yaml, then the arm's own overrides, then the command line's (the same for every arm);
- equal parameters: each arm's model.ffn_hidden (the expert width, or GPT's MLP width) is set so that its
  parameter count is the --match arm's, within 0.5%;
- equal tokens: the same steps, batch and sequence length for every arm; the data order is fixed by the seed,
  so seed k of every arm sees the same batches;
- a learning-rate grid (--lrs): an arm's best rate is the one with the lowest mean final validation loss; a best
  rate on the grid's edge is reported as such (a rate beyond it might be better);
- --seeds seeds per (arm, rate); mean +- standard deviation, and for each arm the paired difference to GPT's final
  validation loss seed by seed (each at its best rate) with a 95% t interval;
- --parallel runs at a time (small models leave a GPU mostly idle: one H200 trains many at once; tokens/s are
  then shared and compare arms only roughly).
Runs are keyed by their command and reused when done (benchmarks/common.train_once); --reuse reads
the runs of earlier JSON results, so that a grid can be completed across calls. The JSON is rewritten after
every run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import math
import os
import statistics
import sys
import threading

from benchmarks.common import ROOT, read_metrics, run, train_once, write_result

BK, GPT = "configs/tiny.yaml", "configs/tiny-gpt.yaml"
RESPONSE = ["model.bk_values=16"]
ARMS = {  # name: (config, overrides)
    "bk-response": (BK, RESPONSE),  # ResNet-BK reading the resolvent's response to 16 value channels per head
    "bk-diagonal": (BK, ["model.bk_values=0"]),  # the diagonal alone (8 heads, learned z)
    "faithful": (BK, ["model.n_heads=1", "model.bk_learned_z=false", "model.bk_selective=false", "model.bk_values=0"]),
    "gpt": (GPT, []),
    "gpt-moe": (GPT, ["model.feed_forward=moe", "model.moe_experts=4", "model.moe_top_k=2"]),  # GPT with BK's MoE
    # Ablations of the response mixer.
    "bk-response-c8": (BK, ["model.bk_values=8"]),
    "bk-response-c32": (BK, ["model.bk_values=32"]),
    "bk-response-h4": (BK, [*RESPONSE, "model.n_heads=4"]),
    "bk-response-h16": (BK, [*RESPONSE, "model.n_heads=16"]),
    "bk-response-selective": (BK, [*RESPONSE, "model.bk_selective=true"]),
    "bk-response-fixed-z": (BK, [*RESPONSE, "model.bk_learned_z=false"]),
    "bk-response-gate": (BK, [*RESPONSE, "model.bk_value_gate=true"]),
    "bk-response-mlp": (BK, [*RESPONSE, "model.feed_forward=mlp"]),  # the mixer without MoE sparsity
}
MAIN_ARMS = "bk-response,bk-diagonal,faithful,gpt,gpt-moe"
PARAM_TOLERANCE = 0.005
MOE_WIDTH_MULTIPLE = 8
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # t_{0.975, dof}


def matched_width(arm: str, match: str, overrides: list) -> tuple[int, int, int]:
    """(ffn_hidden, its parameter count, the target count): the width whose count is nearest the match arm's
    (every arm's count is linear in the width)."""
    from resnetbk.config import load_config
    from resnetbk.models.counts import param_count

    def params(name: str, width=None) -> int:
        config, extra = ARMS[name]
        return param_count(load_config(config, [*extra, *overrides,
                                                *([f"model.ffn_hidden={width}"] if width else [])]).model)

    from resnetbk.models.registry import uses_moe

    target = params(match)
    per_unit = params(arm, 2) - params(arm, 1)
    # Experts' widths a multiple of MOE_WIDTH_MULTIPLE: the bf16 grouped GEMMs need 16-byte aligned rows.
    step = MOE_WIDTH_MULTIPLE if uses_moe(load_config(ARMS[arm][0], [*ARMS[arm][1], *overrides]).model) else 1
    width = max(1, round((1 + (target - params(arm, 1)) / per_unit) / step)) * step
    got = params(arm, width)
    if abs(got - target) > PARAM_TOLERANCE * target:
        raise SystemExit(f"error: --arms: {arm} cannot match {match}'s {target:,} parameters within 0.5% "
                         f"(closest {got:,} at model.ffn_hidden={width})")
    return width, got, target


def interval(diffs: list) -> tuple:
    """Mean and 95% t-interval half-width of paired differences."""
    mean = statistics.mean(diffs)
    half = (T95.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1
            else math.nan)
    return mean, half


def run_record(arm, lr, seed, params, run_dir) -> dict:
    records = read_metrics(run_dir)
    evals = [r for r in records if "val_loss" in r]
    curve = [{k: r[k] for k in ("step", "tokens", "val_loss", "val_bpb") if k in r} for r in evals]
    timed = [r["tokens_per_sec"] for r in records[1:] or records if r.get("tokens_per_sec")]
    return {"arm": arm, "lr": lr, "seed": seed, "params": params, "curve": curve,
            "final_val_loss": evals[-1]["val_loss"], "final_val_bpb": evals[-1].get("val_bpb"),
            "tokens": records[-1]["tokens"], "flops": records[-1]["flops"],
            "tokens_per_sec": statistics.median(timed) if timed else None, "run_dir": os.path.basename(run_dir)}


def paired(row: dict, reference: dict) -> tuple:
    """(mean, 95% half-width, pairs) of row's final losses minus reference's, seed by seed."""
    pairs = dict(zip(reference["seeds"], reference["final_val_losses"]))
    diffs = [loss - pairs[seed] for seed, loss in zip(row["seeds"], row["final_val_losses"]) if seed in pairs]
    return (*interval(diffs), len(diffs)) if diffs else (math.nan, math.nan, 0)


def summarize(runs: list, arms: list, lrs: list, match: str = "") -> list:
    """Per arm: each rate's mean final loss, the best rate (and whether it is on the grid's edge), the seeds at that
    rate, and the paired differences per seed to GPT and to the match arm (for ablations)."""
    rows = []
    for arm in arms:
        by_lr = {lr: [r for r in runs if r["arm"] == arm and r["lr"] == lr] for lr in lrs}
        means = {lr: statistics.mean(r["final_val_loss"] for r in rs) for lr, rs in by_lr.items() if rs}
        if not means:
            continue
        best = min(means, key=means.get)
        chosen = sorted(by_lr[best], key=lambda r: r["seed"])
        finals = [r["final_val_loss"] for r in chosen]
        bpbs = [r["final_val_bpb"] for r in chosen if r.get("final_val_bpb") is not None]
        rows.append({"arm": arm, "params": chosen[0]["params"], "lr_grid": {f"{lr:g}": m for lr, m in means.items()},
                     "best_lr": best, "best_lr_on_edge": len(means) > 1 and best in (min(means), max(means)),
                     "seeds": [r["seed"] for r in chosen], "final_val_losses": finals,
                     "final_val_loss_mean": statistics.mean(finals),
                     "final_val_loss_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
                     "val_ppl_mean": statistics.mean(math.exp(v) for v in finals),
                     "val_bpb_mean": statistics.mean(bpbs) if bpbs else None,
                     "tokens": chosen[0]["tokens"], "flops": chosen[0]["flops"],
                     "tokens_per_sec": statistics.mean(r["tokens_per_sec"] for r in chosen if r["tokens_per_sec"])})
    gpt = next((r for r in rows if r["arm"] == "gpt"), None)
    reference = next((r for r in rows if r["arm"] == match), None)
    for r in rows:
        if gpt is not None:
            r["ppl_ratio_vs_gpt"] = r["val_ppl_mean"] / gpt["val_ppl_mean"]
            if r is not gpt:
                r["paired_diff_vs_gpt"], r["paired_diff_ci95"], r["paired_seeds"] = paired(r, gpt)
        if reference is not None and r is not reference:
            r["paired_diff_vs_match"], r["paired_diff_vs_match_ci95"], _ = paired(r, reference)
    return rows


def print_table(rows: list) -> None:
    print(f"\n{'arm':<22} {'params':>8} {'best lr':>8} {'val loss':>17} {'ppl':>7} {'bpb':>6} {'ppl/GPT':>8} "
          f"{'Δ vs GPT (95%)':>18} {'Δ vs match':>18} {'TFLOP':>6} {'tok/s':>8}")
    for r in rows:
        edge = "*" if r["best_lr_on_edge"] else " "
        bpb = f"{r['val_bpb_mean']:.3f}" if r["val_bpb_mean"] is not None else "-"
        ratio = f"{r['ppl_ratio_vs_gpt']:.3f}x" if "ppl_ratio_vs_gpt" in r else "-"
        diff = f"{r['paired_diff_vs_gpt']:+.4f} ± {r['paired_diff_ci95']:.4f}" if "paired_diff_vs_gpt" in r else "-"
        vs_match = f"{r['paired_diff_vs_match']:+.4f} ± {r['paired_diff_vs_match_ci95']:.4f}" \
            if "paired_diff_vs_match" in r else "-"
        print(f"{r['arm']:<22} {r['params'] / 1e6:>7.2f}M {r['best_lr']:>7g}{edge} {r['final_val_loss_mean']:>9.4f} ± "
              f"{r['final_val_loss_std']:.4f} {r['val_ppl_mean']:>7.1f} {bpb:>6} {ratio:>8} {diff:>18} {vs_match:>18} "
              f"{r['flops'] / 1e12:>6.1f} {r['tokens_per_sec']:>8,.0f}")
    print("(* best rate on the edge of the grid; Δ: final validation loss minus GPT's or the --match arm's, paired by "
          "seed, nats, with a 95% t interval)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/kjv", help="a data_prep output directory (train/, val/, tokenizer.model)")
    p.add_argument("--arms", default=MAIN_ARMS, help=f"comma-separated, from: {', '.join(ARMS)}")
    p.add_argument("--match", default="bk-response", help="the arm whose parameter count every arm matches")
    p.add_argument("--lrs", default="3e-4,1e-3,3e-3", help="learning-rate grid, the same for every arm")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--evals", type=int, default=12, help="validation points per run")
    p.add_argument("--parallel", type=int, default=1, help="training runs at a time")
    p.add_argument("--reuse", action="append", default=[], metavar="JSON",
                   help="an earlier result whose runs need not run again (repeatable)")
    p.add_argument("--work-dir", default="runs/quality_compare")
    p.add_argument("--out", required=True)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every arm")
    a = p.parse_args()
    arms = a.arms.split(",")
    for arm in arms + [a.match]:
        if arm not in ARMS:
            p.error(f"--arms: unknown arm '{arm}' ({', '.join(ARMS)})")
    lrs = [float(x) for x in a.lrs.split(",")]
    if a.seeds < 1 or a.steps < 1 or a.parallel < 1:
        p.error("--seeds, --steps and --parallel must be >= 1")

    data = [f"data.train={a.data}/train", f"data.val={a.data}/val", f"data.tokenizer={a.data}/tokenizer.model"]
    os.makedirs(a.work_dir, exist_ok=True)
    if a.data == "data/kjv" and not os.path.isfile(os.path.join(ROOT, a.data, "val", "manifest.json")):
        run([sys.executable, "-m", "data_prep", "kjv", "--out", a.data], os.path.join(a.work_dir, "data_prep.log"))
    every = max(1, a.steps // a.evals)
    common = [*data, *a.overrides]
    jobs, widths = [], {}
    for arm in arms:
        width, params, target = matched_width(arm, a.match, common)
        widths[arm] = {"ffn_hidden": width, "params": params, "target": target}
        config, extra = ARMS[arm]
        for lr in lrs:
            for seed in range(1, a.seeds + 1):
                options = [*extra, *common, f"model.ffn_hidden={width}", f"optim.lr={lr}"]  # the last value wins
                cmd = [sys.executable, "-m", "resnetbk.train", "--config", config, *options, f"train.seed={seed}",
                       f"train.max_steps={a.steps}", f"train.log_interval={every}", f"train.eval_interval={every}",
                       "sample.max_new_tokens=0"]
                jobs.append((arm, lr, seed, params, cmd))
    reused = {}
    for path in a.reuse:
        with open(path) as f:
            for r in json.load(f)["runs"]:
                reused[r["command_sha"]] = r
    runs, lock = [], threading.Lock()

    def save():
        write_result(a.out, {"arms": arms, "lrs": lrs, "seeds": a.seeds, "steps": a.steps, "overrides": a.overrides,
                             "data": a.data, "parallel": a.parallel, "widths": widths,
                             "summary": summarize(runs, arms, lrs, a.match), "runs": runs}, quiet=True)

    failed = []

    def one(job):
        arm, lr, seed, params, cmd = job
        sha = hashlib.sha1("\0".join(cmd[1:]).encode()).hexdigest()
        try:
            if sha in reused:
                record = {**reused[sha], "arm": arm, "lr": lr, "seed": seed}
            else:
                run_dir = train_once(cmd, a.work_dir, f"{arm}-lr{lr:g}-seed{seed}")
                record = {**run_record(arm, lr, seed, params, run_dir), "command_sha": sha}
        except (SystemExit, Exception) as e:  # one failed run must not stop the others
            with lock:
                failed.append(f"{arm} lr {lr:g} seed {seed}")
                print(f"{arm:<22} lr {lr:<6g} seed {seed}: FAILED {str(e)[:2000]}", flush=True)
            return
        with lock:
            runs.append(record)
            save()
            print(f"{arm:<22} lr {lr:<6g} seed {seed}: val loss {record['final_val_loss']:.4f} "
                  f"({len(runs)}/{len(jobs)})", flush=True)

    # Threads only wait on training subprocesses; each of those is told to use a share of the cores.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // a.parallel)))
    with concurrent.futures.ThreadPoolExecutor(a.parallel) as pool:
        for future in [pool.submit(one, job) for job in jobs]:
            future.result()
    runs.sort(key=lambda r: (arms.index(r["arm"]), r["lr"], r["seed"]))
    save()
    print_table(summarize(runs, arms, lrs, a.match))
    print(f"\nwrote {a.out}")
    if failed:
        print(f"error: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

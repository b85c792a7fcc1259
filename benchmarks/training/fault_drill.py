"""Fault drill on real hardware: an uninterrupted run against the same run killed (SIGKILL, whole job) at a
step and resumed with resume=auto; then the export evaluated without DeepSpeed. Prints a table, writes JSON.

    python -m benchmarks.training.fault_drill --config configs/small.yaml --ngpus 1 --steps 30 --kill-at 17 \\
        --out drill.json data.train=... data.val=... data.tokenizer=...

tests/test_faults.py proves bitwise equality on CPU; on GPUs, kernels that are not deterministic (atomics,
autotuned reductions) may make the two curves differ in the last bits, and the drill reports by how much.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time


def launcher(ngpus: int, config: str, run_dir: str, steps: int, overrides: list[str]) -> list[str]:
    deepspeed = shutil.which("deepspeed") or os.path.join(os.path.dirname(sys.executable), "deepspeed")
    return [deepspeed, "--num_gpus", str(ngpus), "--module", "resnetbk.train", "--config", config, *overrides,
            f"train.max_steps={steps}", "train.log_interval=1", f"train.eval_interval={steps}",
            "train.save_interval=5", "sample.max_new_tokens=0", f"run_dir={run_dir}"]


def metrics(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def run(args: list[str]) -> float:
    start = time.time()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.time() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--ngpus", type=int, default=1)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--kill-at", type=int, default=17, help="kill once this step is logged")
    p.add_argument("--work-dir", default="/tmp/fault_drill")
    p.add_argument("--out", default="fault_drill.json")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    shutil.rmtree(a.work_dir, ignore_errors=True)
    ref_dir, drill_dir = os.path.join(a.work_dir, "reference"), os.path.join(a.work_dir, "drill")

    ref_sec = run(launcher(a.ngpus, a.config, ref_dir, a.steps, a.overrides))
    job = subprocess.Popen(launcher(a.ngpus, a.config, drill_dir, a.steps, a.overrides), stdout=subprocess.DEVNULL,
                           start_new_session=True)
    while job.poll() is None and (metrics(drill_dir) or [{"step": 0}])[-1]["step"] < a.kill_at:
        time.sleep(0.05)
    killed_after = (metrics(drill_dir) or [{"step": 0}])[-1]["step"]
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    resumed_from = open(os.path.join(drill_dir, "checkpoints", "latest")).read().strip()
    resume_sec = run(launcher(a.ngpus, a.config, drill_dir, a.steps, [*a.overrides, "resume=auto"]))

    ref, drill = metrics(ref_dir), metrics(drill_dir)
    same_steps = [r["step"] for r in ref] == [r["step"] for r in drill]
    diffs = [abs(x["loss"] - y["loss"]) for x, y in zip(ref, drill)]
    export_dir = os.path.join(a.work_dir, "export")
    subprocess.run([sys.executable, "-m", "resnetbk.export", drill_dir, "--out", export_dir], check=True,
                   stdout=subprocess.DEVNULL)
    summary = json.load(open(os.path.join(drill_dir, "summary.json")))
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(os.path.join(drill_dir, "config.yaml"))  # as resolved by the trainer
    t = cfg.train
    # The windows the training run evaluated: the first eval_max_batches x micro-batch x ranks.
    ev = subprocess.run([sys.executable, "-m", "resnetbk.evaluate", export_dir, "--data", cfg.data.val,
                         "--seq-len", str(t.seq_len), "--batch-size", str(t.micro_batch * a.ngpus),
                         "--max-batches", str(t.eval_max_batches)], capture_output=True, text=True)
    result = {"config": a.config, "ngpus": a.ngpus, "overrides": a.overrides, "steps": a.steps,
              "killed_after_step": killed_after, "resumed_from": resumed_from, "same_steps": same_steps,
              "max_abs_loss_diff": max(diffs) if diffs else None, "bitwise_equal": same_steps and max(diffs) == 0.0,
              "reference_sec": ref_sec, "resume_sec": resume_sec, "train_val_loss": summary["val_loss"],
              "export_eval": json.loads(ev.stdout.strip().splitlines()[-1]) if ev.returncode == 0 else ev.stderr[-500:]}
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"{'killed after step':>20} {'resumed from':>14} {'same steps':>10} {'max |dloss|':>12} {'bitwise':>8}")
    print(f"{killed_after:>20} {resumed_from:>14} {str(same_steps):>10} {result['max_abs_loss_diff']:>12.3g} "
          f"{str(result['bitwise_equal']):>8}")
    print(f"export evaluated without DeepSpeed: {result['export_eval']} "
          f"(training run's val loss {summary['val_loss']:.6f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

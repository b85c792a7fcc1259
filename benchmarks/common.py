"""What the experiment scripts share: the repository root, running a training command into a run directory of its
own (reused when it finished before), reading its metrics, and writing a result JSON with its provenance."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, log):
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"error: {' '.join(cmd[:6])} ... failed (exit {proc.returncode}); {log}:\n{tail}")


def train_once(cmd: list, work_dir: str, name: str) -> str:
    """Run a training command in run_dir = work_dir/name-<hash of the command> and return that directory. A run
    that finished before (summary.json) is reused, a killed one continues from its checkpoint; keying by the
    command means a changed option trains afresh instead of reporting an old result."""
    run_dir = os.path.join(work_dir, f"{name}-{hashlib.sha1(chr(0).join(cmd[1:]).encode()).hexdigest()[:8]}")
    if not os.path.isfile(os.path.join(run_dir, "summary.json")):
        run([*cmd, f"run_dir={run_dir}"], run_dir + ".log")
    return run_dir


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def write_result(path: str, result: dict, quiet: bool = False) -> None:
    """Writes an experiment's JSON with the date, machine, device and command that produced it (through a
    temporary file, so that a reader never sees half of it)."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    result = {"date": time.strftime("%Y-%m-%d"), "machine": platform.node(), "device": device,
              "command": " ".join(sys.argv), **result}
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(path + ".tmp", path)
    if not quiet:
        print(f"\nwrote {path}")

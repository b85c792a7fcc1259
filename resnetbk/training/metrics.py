"""Training metrics: metrics.jsonl (one JSON object per logged step) and TensorBoard scalars.

TensorBoard goes through DeepSpeed's monitor, so a run has a single event file; the monitor itself
writes only on global rank 0 and flushes after each call.
"""

from __future__ import annotations

import json
import os


class MetricsLogger:
    def __init__(self, run_dir: str, monitor, is_main: bool):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.monitor, self.is_main = monitor, is_main

    def log(self, record: dict, scalars: dict) -> None:
        """record -> one line of metrics.jsonl; scalars {tensorboard name: value} at optimizer step record['step']."""
        if not self.is_main:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.monitor is not None and self.monitor.enabled:
            self.monitor.write_events([(name, float(v), record["step"]) for name, v in scalars.items()])

    def truncate(self, step: int) -> None:
        """Drops records after `step` (a resume recomputes them), so each step appears once."""
        if not self.is_main or not os.path.isfile(self.path):
            return
        with open(self.path) as f:
            keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, self.path)

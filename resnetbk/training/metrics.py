"""Training metrics: metrics.jsonl (one JSON object per logged step) and TensorBoard scalars.

TensorBoard goes through DeepSpeed's monitor, so a run has a single event file; the monitor itself
writes only on global rank 0 and flushes after each call.
"""

from __future__ import annotations

import json
import os

# metrics.jsonl's fields: (key, what it holds, the TensorBoard name it is also written under, or None). The trainer
# writes them; README.md's outputs table is generated from this (resnetbk/doc_tables.py).
RECORD_FIELDS = (
    ("step", "the optimizer step", None),
    ("loss", "mean training loss over the applied steps since the last log, all ranks; null when all were skipped",
     "train/loss"),
    ("lm_loss", "its language-model part", "train/lm_loss"),
    ("moe_balance_loss", "the MoE's load-balancing loss (blocks with MoE)", "moe/load_balance_loss"),
    ("exit_loss", "the early exits' language-model loss, one exit per forward in turn (model.exit_layers)",
     "train/exit_loss"),
    ("lr", "the learning rate of the step's update", "train/lr"),
    ("tokens", "tokens seen so far, all ranks", "train/tokens_seen"),
    ("epoch", "passes over the training windows", None),
    ("skipped_steps", "steps whose gradients were not finite, so far", "train/skipped_steps"),
    ("micro_batch", "per rank, after any start-up out-of-memory halving", None),
    ("seq_len", "the window length, shorter during a sequence-length warm-up", "data/seq_len"),
    ("flops", "everything the model computed so far, all ranks, active-learning scoring included", None),
    ("tokens_per_sec", "training time only (evaluation and saves left out), all ranks; TensorBoard per GPU",
     "perf/tokens_per_sec_per_gpu"),
    ("tflops_per_gpu", "model FLOPs (resnetbk/models/counts.py) per second and GPU", "perf/tflops_per_gpu"),
    ("mfu", "model FLOPs utilisation against the GPU's data-sheet peak (known GPUs)", "perf/mfu"),
    ("max_allocated_gib", "torch's peak GPU allocation", "mem/max_allocated_gib"),
    ("max_reserved_gib", "torch's peak GPU reservation, CUDA graph pools included", "mem/max_reserved_gib"),
    ("host_rss_gib", "rank 0's resident host memory", "mem/host_rss_gib"),
    ("elapsed_sec", "wall time since the run (or its resume) started", None),
    ("grad_norm", "the global gradient norm", "train/grad_norm"),
    ("loss_scale", "fp16's dynamic loss scale", "train/loss_scale"),
    ("curriculum_percent", "data selection (docs/data_selection.md): the curriculum's pool, percent of the windows",
     "data/curriculum_percent"),
    ("curriculum_threshold", "the difficulty at the pool's edge", "data/curriculum_threshold"),
    ("pool_size", "windows in the pool", "data/pool_size"),
    ("kept_fraction", "active learning: the share of scored candidates trained on", "data/kept_fraction"),
    ("score_kept", "mean score of the kept candidates", "data/score_kept"),
    ("score_dropped", "mean score of the dropped ones", "data/score_dropped"),
    ("scoring_flops", "FLOPs spent scoring candidates so far", "data/scoring_flops"),
    ("scoring_sec", "wall time spent scoring so far", None),
    ("val_loss", "validation loss (evaluation steps)", "val/loss"),
    ("val_ppl", "its perplexity", "val/ppl"),
    ("val_bpb", "its bits per byte (shards with byte counts)", "val/bpb"),
)
PER_GPU = {"tokens_per_sec"}  # divided by the number of ranks for TensorBoard


def tensorboard_scalars(record: dict, world: int, stat_keys: dict, expert_load) -> dict:
    """{TensorBoard name: value} for a metrics.jsonl record: RECORD_FIELDS' names, the monitored statistics
    (stat_keys: record key -> TensorBoard name) and the MoE's share of routed slots per expert."""
    scalars = {}
    for key, _, name in RECORD_FIELDS:
        if name is not None and record.get(key) is not None:
            scalars[name] = record[key] / world if key in PER_GPU else record[key]
    scalars.update({name: record[key] for key, name in stat_keys.items() if key in record})
    if expert_load is not None:
        scalars.update({f"moe/expert_load/{i}": float(v) for i, v in enumerate(expert_load)})
    return scalars


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

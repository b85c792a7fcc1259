"""Where the trainer's own step loses GPU time: `python -m resnetbk.train` with a few of its steps under
torch.profiler. Unlike profile_step.py (the engine fed one random batch), this includes what the trainer does
around the engine: sampling, and the data phase (reading the batch, copying it to the GPU). Rank 0 prints how long
the GPU sat idle in each phase of the step (data, forward, backward, optimizer) and the longest idle gaps, and
writes JSON.

    deepspeed --num_gpus 2 --module benchmarks.training.profile_trainer --at 12 --steps 2 --out prof.json -- \\
        --config configs/small.yaml train.max_steps=16 train.micro_batch=64 data.train=... data.val=...

Arguments after `--` go to the trainer as they are. --at: the first profiled optimizer step (after graph capture
and warm-up); the run must reach at + steps - 1 (train.max_steps).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch

from benchmarks.training.profile_step import timeline
from resnetbk import train
from resnetbk.training.trainer import Trainer


def annotate(obj, name: str, phase: str) -> None:
    """obj.name, called inside a profiler range named phase."""
    original = getattr(obj, name)

    def wrapped(*args, **kwargs):
        with torch.profiler.record_function(phase):
            return original(*args, **kwargs)

    setattr(obj, name, wrapped)


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--at", type=int, default=12)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--out", required=True)
    p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    a = p.parse_args(argv[:split])
    trainer_args = argv[split + 1:]
    if not torch.cuda.is_available():
        print("error: needs CUDA", file=sys.stderr)
        return 2

    rank = int(os.environ.get("RANK", "0"))
    original_step = Trainer._optimizer_step
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                  torch.profiler.ProfilerActivity.CUDA])
    result = {}

    def profiled_step(self, sampler, step, state):
        if step == a.at:
            # Reading the batch and copying it to the GPU, and the engine's three calls: the timeline's phases.
            annotate(self.train_data, "rows", "data")
            annotate(self, "_to_device", "data")
            annotate(self.engine, "forward", "forward")
            annotate(self.engine, "backward", "backward")
            annotate(self.engine, "step", "optimizer")
            torch.cuda.synchronize()
            profiler.start()
        sums = original_step(self, sampler, step, state)
        if step == a.at + a.steps - 1:
            torch.cuda.synchronize()
            profiler.stop()
            if rank == 0:
                with tempfile.TemporaryDirectory() as tmp:
                    path = os.path.join(tmp, "trace.json")
                    profiler.export_chrome_trace(path)
                    with open(path) as f:
                        result.update(timeline(json.load(f), phases=("data", "forward", "backward", "optimizer")))
        return sums

    Trainer._optimizer_step = profiled_step
    code = train.main(trainer_args)
    if rank != 0 or code != 0:
        return code
    if not result:
        print(f"error: the run ended before step {a.at + a.steps - 1} (train.max_steps)", file=sys.stderr)
        return 2
    n, world = a.steps, int(os.environ.get("WORLD_SIZE", "1"))
    print(f"trainer, {world} rank(s), steps {a.at}..{a.at + n - 1} (per step): wall {result['wall_ms'] / n:.1f} ms, "
          f"GPU busy {result['gpu_busy_ms'] / n:.1f} ms, idle {result['gpu_idle_ms'] / n:.1f} ms: "
          + ", ".join(f"{k} {v / n:.1f}" for k, v in result["idle_ms_by_phase"].items())
          + " | CPU time per phase: " + ", ".join(f"{k} {v / n:.1f}" for k, v in result["cpu_ms_by_phase"].items()))
    print("longest idle gaps (ms, phase, the op whose kernel ended it): " + "; ".join(
        f"{g['idle_ms']:.2f} {g['phase']} {g['next_kernel_from'][:50]}" for g in result["longest_gaps"][:10]))
    with open(a.out, "w") as f:
        json.dump({"trainer_args": trainer_args, "world_size": world, "first_step": a.at, "profiled_steps": n,
                   "gpu": torch.cuda.get_device_name(), "timeline": result}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

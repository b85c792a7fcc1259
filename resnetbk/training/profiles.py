"""Hardware profiles and ZeRO strategies: the source of the JSON files in ds_configs/, and GPU autodetection.

    python -m resnetbk.training.profiles [DIR]     # (re)writes DIR/<profile>/<strategy>.json (default: ds_configs)

The JSON files are plain DeepSpeed configs, usable as they are by any DeepSpeed script; the test suite checks
that they equal what this module generates, so the numbers below are the one place to change them.
Only the standard library is imported: autodetection runs before torch loads (it asks nvidia-smi).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import List, NamedTuple, Optional

STRATEGIES = ("zero1", "zero2", "zero3", "zero2-offload", "zero3-offload", "zero3-offload-partial", "zero3-nvme")
GPU_ONLY_STRATEGIES = ("zero3-offload-partial", "zero3-nvme")
NVME_PLACEHOLDER = "/local_nvme"  # replaced by deepspeed.nvme_path in the run config
# zero3-offload-partial: parameters stay on the GPU; this share of the optimizer (fp32 master weights, Adam
# moments and fp32 gradients, 16 bytes per parameter) goes to the host, the rest steps on the GPU (DeepSpeed's
# partial offload, offload_optimizer.ratio). 0.7 fits the 7b preset (7.1B) on one 80 GB GPU with 128 GiB of host
# memory, where zero3-offload needs about 20 bytes per parameter on the host (docs/performance.md).
PARTIAL_OFFLOAD_RATIO = 0.7


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    precision: str  # "fp32", "fp16" or "bf16"
    micro_batch: int  # default micro-batch per GPU; the run config's train.micro_batch overrides it
    bucket: int  # ZeRO communication bucket (elements): smaller on small cards, it is a memory buffer
    default_strategy: str
    # Activation checkpoints (the blocks' inputs) kept in host memory: frees GPU memory on small cards at the
    # cost of a copy per block. DeepSpeed's partition_activations is off everywhere: it splits checkpoints
    # across tensor-parallel ranks, and this trainer has none.
    cpu_checkpointing: bool = False


PROFILES = {p.name: p for p in (
    Profile("cpu", "no GPU: fp32 on CPU ranks (gloo)", "fp32", 8, int(5e7), "zero2"),
    Profile("t4", "NVIDIA T4 16 GB (Turing: fp16, no bf16)", "fp16", 4, int(2e8), "zero2", cpu_checkpointing=True),
    Profile("v100", "NVIDIA V100 16/32 GB (Volta: fp16, no bf16)", "fp16", 8, int(5e8), "zero2"),
    Profile("a100", "NVIDIA A100 40/80 GB (Ampere, bf16)", "bf16", 16, int(5e8), "zero2"),
    Profile("h100", "NVIDIA H100/H200 (Hopper, bf16)", "bf16", 16, int(5e8), "zero2"),
    Profile("rtx24", "24 GB consumer or workstation card, Ampere or newer (bf16)", "bf16", 8, int(2e8), "zero2"),
    Profile("rtx10", "10-12 GB consumer card, Ampere or newer (bf16, optimizer on CPU)", "bf16", 4, int(1e8),
            "zero2-offload", cpu_checkpointing=True),
)}

# fp16 dynamic loss scaling, chosen deliberately (DeepSpeed's defaults, stated so that they are visible):
# start at 2^16 (large enough that small gradients do not underflow, and an overflow on the first steps
# only costs skipped steps while the scale halves); double after 1000 clean steps; halve only after 2
# consecutive overflows (hysteresis), so one outlier batch does not cost half the scale; never below 1,
# where the trainer's NaN guard takes over instead of scaling down forever.
FP16 = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000,
        "hysteresis": 2, "consecutive_hysteresis": False, "min_loss_scale": 1}


def strategy_names(profile: str) -> List[str]:
    # CPU ranks have no NVMe offload path (DeepSpeed's async I/O op needs libaio and a GPU to stage into) and
    # no GPU to keep part of the optimizer on; stage 0 (plain data parallel) is kept for the CPU equivalence tests.
    if profile == "cpu":
        return ["zero0", *(s for s in STRATEGIES if s not in GPU_ONLY_STRATEGIES)]
    return list(STRATEGIES)


def strategy_config(profile: str, strategy: str) -> dict:
    """The DeepSpeed config for one (profile, strategy) pair."""
    p = PROFILES[profile]
    if strategy not in strategy_names(profile):
        raise KeyError(f"no strategy '{strategy}' for profile '{profile}'")
    stage = int(strategy[4])
    on_gpu = profile != "cpu"
    zero = {"stage": stage}
    if stage >= 1:
        # overlap_comm runs reductions on a side stream: a GPU feature; on CPU it only adds buffers.
        zero.update(overlap_comm=on_gpu, contiguous_gradients=True, reduce_bucket_size=p.bucket)
    if stage in (1, 2):
        zero.update(allgather_bucket_size=p.bucket, reduce_scatter=True)
    if stage == 3:
        zero.update(stage3_prefetch_bucket_size=p.bucket, stage3_param_persistence_threshold=int(1e5),
                    stage3_max_live_parameters=int(1e9), stage3_max_reuse_distance=int(1e9),
                    stage3_gather_16bit_weights_on_model_save=True,
                    # Otherwise zero.Init replaces torch.nn.functional.linear, for the whole process, with a Python
                    # autograd function (DeepSpeed's default; its mem_efficient_linear argument loses to this key).
                    # Plain autograd already holds the partitioned parameter, which ZeRO-3 gathers for backward.
                    memory_efficient_linear=False)
    if strategy.endswith("-offload"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    if strategy.endswith("-partial"):
        # Sub-groups of 1e8 elements (DeepSpeed's default is 1e9) are the granularity of the split.
        zero.update(sub_group_size=int(1e8),
                    offload_optimizer={"device": "cpu", "pin_memory": True, "ratio": PARTIAL_OFFLOAD_RATIO})
    if strategy.endswith("-nvme"):
        zero["offload_optimizer"] = {"device": "nvme", "nvme_path": NVME_PLACEHOLDER, "pin_memory": True,
                                     "buffer_count": 4, "fast_init": False}
        zero["offload_param"] = {"device": "nvme", "nvme_path": NVME_PLACEHOLDER, "pin_memory": True,
                                 "buffer_count": 5, "buffer_size": int(1e8), "max_in_cpu": int(1e9)}
    config = {
        "train_micro_batch_size_per_gpu": p.micro_batch,
        "gradient_accumulation_steps": 1,
        "zero_optimization": zero,
        "fp16": FP16 if p.precision == "fp16" else {"enabled": False},
        "bf16": {"enabled": p.precision == "bf16"},
        "gradient_clipping": 1.0,
        "activation_checkpointing": {"partition_activations": False, "cpu_checkpointing": p.cpu_checkpointing,
                                     "contiguous_memory_optimization": False, "synchronize_checkpoint_boundary": False,
                                     "profile": False},
        "steps_per_print": 1000000,  # the trainer logs; DeepSpeed's own step lines would duplicate them
        "wall_clock_breakdown": False,
        # DeepSpeed's throughput timer only feeds its own step lines, and it synchronizes the GPU at every forward
        # and step: the trainer measures throughput itself.
        "timers": {"throughput": {"enabled": False}},
    }
    if strategy.endswith("-nvme"):
        config["aio"] = {"block_size": 1048576, "queue_depth": 8, "intra_op_parallelism": 1,
                         "single_submit": False, "overlap_events": True}
    return config


def config_path(profile: str, strategy: str, root: str = "ds_configs") -> str:
    return os.path.join(root, profile, f"{strategy}.json")


def write_all(root: str) -> List[str]:
    paths = []
    for profile in PROFILES:
        for strategy in strategy_names(profile):
            path = config_path(profile, strategy, root)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(json.dumps(strategy_config(profile, strategy), indent=2) + "\n")
            paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------- detection

class GPU(NamedTuple):
    name: str
    memory_gib: float
    compute_capability: float


def detect_gpus() -> List[GPU]:
    """The node's NVIDIA GPUs from nvidia-smi (empty without one); no torch import, so it is instant."""
    if os.environ.get("DS_ACCELERATOR", "") == "cpu" or shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,compute_cap",
                              "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        name, memory_mib, cc = (part.strip() for part in line.rsplit(",", 2))
        gpus.append(GPU(name, float(memory_mib) / 1024, float(cc)))
    return gpus


def pick_profile(gpus: List[GPU]) -> tuple:
    """(profile name, the reason in words) for the node's GPUs; the smallest GPU decides."""
    if not gpus:
        return "cpu", "no CUDA GPU found"
    gpu = min(gpus, key=lambda g: g.memory_gib)
    what = f"{len(gpus)} x {gpu.name}, {gpu.memory_gib:.0f} GiB, compute capability {gpu.compute_capability:g}"
    cc, mem, name = gpu.compute_capability, gpu.memory_gib, gpu.name.upper()
    if cc < 7.0:
        raise ValueError(f"{what}: GPUs before Volta (compute capability 7.0) are not supported")
    if cc < 7.5:
        return "v100", f"{what}: Volta, fp16 only"
    if cc < 8.0:
        return "t4", f"{what}: Turing, fp16 only"
    if cc >= 9.0 and mem >= 60:
        return "h100", f"{what}: Hopper or newer, bf16"
    if ("A100" in name or "A800" in name or "H100" in name) or mem >= 36:
        return "a100", f"{what}: bf16 data-centre card"
    if mem >= 20:
        return "rtx24", f"{what}: bf16, about 24 GiB"
    return "rtx10", f"{what}: bf16, under 20 GiB: optimizer offloaded to CPU"


def has_bf16(gpus: List[GPU]) -> bool:
    return all(g.compute_capability >= 8.0 for g in gpus)


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = args[0] if args else "ds_configs"
    for path in write_all(root):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

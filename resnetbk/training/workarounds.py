"""What DeepSpeed 0.19.8 and torch's extension builds need worked around, in one place. Each function says what it
repairs and how it was found; the trainer, the engine and the profilers call them."""

from __future__ import annotations

import glob
import os
import sys
import time
import types
import warnings

from .errors import TrainingError


def fix_cuda_arch_list() -> None:
    """DeepSpeed 0.19.8's op builder parses TORCH_CUDA_ARCH_LIST entries as numbers: some CUDA images set
    '9.0a', which fails the FusedAdam/CPUAdam build with "invalid literal for int() with base 10: '0a'".
    The architecture-specific suffix only adds Hopper-only instructions that these ops do not use."""
    value = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    fixed = " ".join(part.rstrip("af") if part[:1].isdigit() else part for part in value.replace(";", " ").split())
    if value and fixed != value:
        print(f"note: TORCH_CUDA_ARCH_LIST='{value}' breaks DeepSpeed's op builder; using '{fixed}'", file=sys.stderr)
        os.environ["TORCH_CUDA_ARCH_LIST"] = fixed


STALE_BUILD_LOCK_MIN = 30


def check_op_build_locks() -> None:
    """torch compiles DeepSpeed's ops (CPUAdam, the CPU shared-memory allreduce, FusedAdam) on first use, holding a
    `lock` file in the op's build directory; a build killed mid-way leaves that file, and every later run waits on it
    forever without a word. A lock older than any build takes is reported instead of waited on."""
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    for lock in glob.glob(os.path.join(root, "*", "*", "lock")) + glob.glob(os.path.join(root, "*", "lock")):
        try:
            age_min = (time.time() - os.path.getmtime(lock)) / 60
        except FileNotFoundError:  # released meanwhile
            continue
        if age_min > STALE_BUILD_LOCK_MIN:
            raise TrainingError(f"{lock}: a DeepSpeed op build left this lock {age_min:.0f} min ago and every run "
                                f"would wait on it; delete it if no build is running")


SHM_ALLREDUCE_BUFFER = "/dev/shm/deepspeed_allreduce_buffer"  # DeepSpeed's shm.cpp: <this>_<uid>_<addr>_<port>_<rank>


def unlink_shm_allreduce_buffer(dist) -> None:
    """DeepSpeed 0.19.8's CPU shared-memory allreduce (ranks of one machine under its launcher) creates a 66 MiB
    /dev/shm file per rank and never unlinks it: every such run left ranks x 66 MiB of RAM behind until reboot
    (one day of test runs filled a 24 GB machine's memory). DeepSpeed's shm init returns only after this rank has
    mapped every peer's file, so after a barrier each rank can unlink its own name; the mappings stay valid."""
    name = "{}_{}_{}_{}_{}".format(SHM_ALLREDUCE_BUFFER, os.getuid(), os.environ.get("MASTER_ADDR", ""),
                                   os.environ.get("MASTER_PORT", ""), dist.get_rank())
    if dist.get_world_size() > 1:
        dist.barrier()
    try:
        os.remove(name)
    except FileNotFoundError:  # not a CPU run of one machine's ranks, or the shm op was not built
        pass


def share_partial_offload_groups(zero_optimizer) -> None:
    """DeepSpeed 0.19.8's partial offload (offload_optimizer.ratio < 1) steps the GPU-resident sub-groups with a
    torch AdamW of its own, built before the LR scheduler. Its group 0 is a new dict holding the initial lr, so
    the schedule never reached it; groups 1.. are the CPU optimizer's own dicts. Group 0 is the decay group,
    and the GPU sub-groups are the first ones, so without this the matrices on the GPU would train at a
    constant lr with no warmup. Shares the CPU optimizer's group 0 (torch's defaults filled in) instead."""
    backup = getattr(zero_optimizer, "backup_optimizer", None)
    if backup is None:
        return
    group = zero_optimizer.optimizer.param_groups[0]
    for key, value in backup.param_groups[0].items():
        group.setdefault(key, value)
    backup.param_groups[0] = group


def batch_gradient_checks(zero_optimizer) -> bool:
    """DeepSpeed 0.19.8's ZeRO-1/2 optimizer checks the gradients for inf/NaN and takes their norm one tensor at a
    time: about ten small kernels per parameter tensor, some 1,500 per step for `small`, whose launches kept the GPU
    idle for about a quarter of the step (docs/performance.md). This computes both from one torch._foreach_norm
    per call, accumulated in float64 as DeepSpeed does: a float64 sum of squares of bf16/fp16/fp32 values cannot
    overflow, so a norm is non-finite exactly when its tensor holds an inf or NaN, which is DeepSpeed's overflow
    test. Applies to the non-offloaded ZeRO-1/2 optimizer without model parallelism (the trainer's case); returns
    whether it did."""
    import torch
    from deepspeed import comm as dist
    from deepspeed.runtime.utils import mask_nan_or_inf_with_val_inplace
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    opt = zero_optimizer
    if type(opt) is not DeepSpeedZeroOptimizer or opt.cpu_offload or opt.mpu is not None:
        return False
    device = torch.device(opt.device)

    def norms(grads):
        return torch._foreach_norm(grads, 2, dtype=torch.float64) if grads else []

    def has_overflow_partitioned_grads_serial():
        grads = [g for i in range(len(opt.bit16_groups)) for g in opt.averaged_gradients[i] if g is not None]
        if not grads:
            return torch.zeros(1, dtype=torch.bool, device=device)
        return (~torch.isfinite(torch.stack(norms(grads)))).any().reshape(1)

    original_norm = opt.get_grad_norm_direct

    def get_grad_norm_direct(gradients, params, norm_type=2):
        if norm_type != 2:
            return original_norm(gradients, params, norm_type)
        grads = [g.detach() for g in gradients if not getattr(g, "_zero_padding", False)]
        per_tensor = norms(grads)
        total = torch.stack(per_tensor).square().sum().float() if per_tensor else torch.zeros((), device=device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=opt.dp_process_group)
        total = total.sqrt()
        mask_nan_or_inf_with_val_inplace(total, device=device)
        return total

    opt.has_overflow_partitioned_grads_serial = has_overflow_partitioned_grads_serial
    opt.get_grad_norm_direct = get_grad_norm_direct
    return True


def stand_in_for_deepspeed_muon() -> None:
    """DeepSpeed 0.19.8 imports its Muon optimizer's modules to ask whether the optimizer is Muon: once when the engine
    starts, and in every ZeRO-1/2 gradient epilogue. Importing them runs torch.compile on three functions: 2 s of
    every rank's start-up on a 2-core CPU (a 10-step `tiny` run: 13.2 s -> 10.9 s, mean of three). The run config
    owns the optimizer (ds_config.py refuses an "optimizer" section in the JSON) and it is never Muon, so modules
    whose Muon class nothing is an instance of give DeepSpeed the same answers. Modules already imported stay."""
    def unavailable(*args, **kwargs):
        raise RuntimeError("DeepSpeed's Muon is not available in resnetbk (resnetbk.optim.stand_in_for_deepspeed_muon)")

    muon_class = type("MuonWithAuxAdam", (), {"__doc__": "stand-in: no optimizer is an instance of it"})
    for name in ("deepspeed.runtime.zero.muon.original_muon", "deepspeed.runtime.zero.muon.muon_optimizer"):
        if name not in sys.modules:
            module = types.ModuleType(name, "stand-in from resnetbk.optim.stand_in_for_deepspeed_muon")
            module.MuonWithAuxAdam, module.muon_update, module.adam_update = muon_class, unavailable, unavailable
            sys.modules[name] = module


def quiet_deprecated_collectives() -> None:
    """DeepSpeed 0.19.8's ZeRO calls torch.distributed collectives that newer torch deprecates
    (all_gather_into_tensor, reduce_scatter_tensor); not ours to fix, and repeated on every rank."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")

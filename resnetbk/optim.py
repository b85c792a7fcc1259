"""Optimizer parameter groups, the learning-rate schedule, two repairs to DeepSpeed 0.19.8's ZeRO optimizer, and a
stand-in for its Muon modules.

The schedule is a torch LambdaLR handed to deepspeed.initialize, which steps it once per optimizer
update and saves it in checkpoints. DeepSpeed's own WarmupCosineLR is not used: in 0.19.8 its ratio is
0 before its first step() and again at iteration 0, so the first two updates of every run happen at
lr = 0, and it rejects warmup_num_steps = 0.
"""

from __future__ import annotations

import math
import sys
import types

import torch
from torch.optim.lr_scheduler import LambdaLR


def param_groups(model, weight_decay: float):
    """Weight decay on matrices (linear weights, embeddings, stacked expert weights), none on norms, biases
    (stacked expert biases included) and z parameters.

    With DeepSpeed's MoE layer, expert parameters go to groups of their own: DeepSpeed reduces their
    gradients over the expert-data-parallel group instead of all ranks, and finds them by these groups."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        shape = getattr(p, "ds_shape", p.shape)  # a ZeRO-3 partitioned parameter's own shape is (0,)
        (decay if len(shape) >= 2 and not name.endswith("bias") else no_decay).append(p)
    groups = [{"name": "decay", "params": decay, "weight_decay": weight_decay},
              {"name": "no_decay", "params": no_decay, "weight_decay": 0.0}]
    if any(getattr(p, "allreduce", True) is False for p in model.parameters()):  # DeepSpeed's mark on experts
        from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer

        groups = split_params_into_different_moe_groups_for_optimizer(groups)
    return groups


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


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier for update number `step` (0-based): linear warmup reaching 1 at update warmup_steps-1,
    then a cosine from 1 down to min_ratio at the last update."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_scheduler_factory(warmup_steps: int, total_steps: int, min_ratio: float):
    """A callable DeepSpeed invokes with the optimizer it built."""
    return lambda optimizer: LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup_steps, total_steps, min_ratio))

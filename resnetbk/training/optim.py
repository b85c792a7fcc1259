"""Optimizer parameter groups and the learning-rate schedule (DeepSpeed's repairs: workarounds.py).

The schedule is a torch LambdaLR handed to deepspeed.initialize, which steps it once per optimizer
update and saves it in checkpoints. DeepSpeed's own WarmupCosineLR is not used: in 0.19.8 its ratio is
0 before its first step() and again at iteration 0, so the first two updates of every run happen at
lr = 0, and it rejects warmup_num_steps = 0.
"""

from __future__ import annotations

import math

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

"""The DeepSpeed config: a strategy JSON from ds_configs/ completed with what the run config owns.

The JSON file owns the engine strategy (ZeRO stage, offload, precision, gradient clipping, activation
checkpointing). The run config owns batch sizes, optimizer, LR schedule (resnetbk/optim.py) and where TensorBoard writes;
the JSON must not set those, so there is one source of truth for each number.

DeepSpeed silently ignores an unknown top-level key (a misspelled "zero_optimisation" runs as stage 0),
so top-level keys are checked against the keys DeepSpeed 0.19.8 reads (from deepspeed/runtime/config.py
and the sub-configs it parses).
"""

from __future__ import annotations

import json
import os

from .config import ConfigError, RunConfig

DEEPSPEED_TOP_LEVEL_KEYS = frozenset({
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "optimizer", "scheduler",
    "fp16", "bf16", "torch_autocast", "data_types", "communication_data_type", "seq_parallel_communication_data_type",
    "gradient_clipping", "gradient_predivide_factor", "prescale_gradients", "gradient_allreduce_op",
    "zero_optimization", "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "activation_checkpointing",
    "aio", "checkpoint", "steps_per_print", "wall_clock_breakdown", "memory_breakdown", "dump_state", "timers",
    "tensorboard", "wandb", "csv_monitor", "comet", "flops_profiler", "data_efficiency", "compile", "autotuning",
    "pipeline", "hybrid_engine", "weight_quantization", "dataloader_drop_last", "disable_allgather",
    "disable_python_gc", "expert_parallel", "use_data_before_expert_parallelism", "log_level", "legacy_fusion",
    "lower_precision_safe_modules", "managed_gradient_accumulation",
})
OWNED_BY_RUN_CONFIG = {
    "train_batch_size": "train.micro_batch and train.grad_accum",
    "train_micro_batch_size_per_gpu": "train.micro_batch",
    "gradient_accumulation_steps": "train.grad_accum",
    "optimizer": "optim.*",
    "scheduler": "optim.* and train.max_steps (see resnetbk/optim.py)",
    "tensorboard": "run_dir and tb_enabled",
}


def load_strategy(path: str) -> dict:
    """Reads and checks a ds_configs JSON file. Errors name the file and the key."""
    if not os.path.isfile(path):
        raise ConfigError(f"deepspeed.config: {path}: file not found")
    try:
        with open(path) as f:
            strategy = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(strategy, dict):
        raise ConfigError(f"{path}: must hold a JSON object")
    for key in strategy:
        if key not in DEEPSPEED_TOP_LEVEL_KEYS:
            raise ConfigError(f"{path}: unknown DeepSpeed key '{key}' (DeepSpeed would silently ignore it)")
        if key in OWNED_BY_RUN_CONFIG:
            raise ConfigError(f"{path}: key '{key}' is set by the run config ({OWNED_BY_RUN_CONFIG[key]}); remove it")
    if "gradient_clipping" not in strategy:
        # DeepSpeed 0.19 changed its default from 0.0 to 1.0; an implicit value is a silent behaviour change.
        raise ConfigError(f"{path}: set 'gradient_clipping' explicitly (0 disables it)")
    if strategy.get("fp16", {}).get("enabled") and strategy.get("bf16", {}).get("enabled"):
        raise ConfigError(f"{path}: 'fp16' and 'bf16' are both enabled; choose one")
    return strategy


def build_ds_config(cfg: RunConfig, strategy: dict, world_size: int, on_cuda: bool) -> dict:
    """The full dict passed to deepspeed.initialize. Global batch = micro x accumulation x world."""
    t, o = cfg.train, cfg.optim
    ds = dict(strategy)
    ds["train_micro_batch_size_per_gpu"] = t.micro_batch
    ds["gradient_accumulation_steps"] = t.grad_accum
    ds["train_batch_size"] = t.micro_batch * t.grad_accum * world_size
    ds["optimizer"] = {
        "type": "AdamW",
        # FusedAdam needs CUDA; on CPU DeepSpeed must use torch's AdamW.
        "params": {"lr": o.lr, "betas": list(o.betas), "eps": o.eps, "weight_decay": o.weight_decay,
                   "torch_adam": not on_cuda},
    }
    if cfg.tb_enabled:
        # DeepSpeed's monitor writes the event file; the trainer adds its own scalars through the same writer.
        ds["tensorboard"] = {"enabled": True, "output_path": os.path.join(cfg.run_dir, "tensorboard"), "job_name": "train"}
    return ds

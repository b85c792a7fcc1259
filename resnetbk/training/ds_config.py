"""The DeepSpeed config: a JSON from ds_configs/ (picked by profile and strategy) completed by the run config.

The JSON file owns the engine strategy (ZeRO stage, offload, precision, gradient clipping, activation
checkpointing) and default batch sizes, which train.micro_batch / grad_accum / global_batch override. The run
config owns the optimizer, the LR schedule (resnetbk/training/optim.py) and where TensorBoard writes; the JSON must
not set those, so there is one source of truth for each number.

DeepSpeed silently ignores an unknown top-level key (a misspelled "zero_optimisation" runs as stage 0),
so top-level keys are checked against the keys DeepSpeed 0.19.8 reads (from deepspeed/runtime/config.py
and the sub-configs it parses).
"""

from __future__ import annotations

import json
import os
from typing import List, NamedTuple, Optional

from ..config import ConfigError, RunConfig
from ..models import registry
from ..models.registry import uses_moe
from .profiles import GPU, PROFILES, STRATEGIES, config_path, has_bf16, pick_profile, strategy_names

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
    "optimizer": "optim.*",
    "scheduler": "optim.* and train.max_steps (see resnetbk/training/optim.py)",
    "tensorboard": "run_dir and tb_enabled",
}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Strategy(NamedTuple):
    path: str
    config: dict
    profile: Optional[str]  # None for a JSON named by deepspeed.config
    reason: str  # how it was chosen, in words


def load_strategy(path: str) -> dict:
    """Reads and checks a DeepSpeed JSON file. Errors name the file and the key."""
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


def resolve_strategy(cfg: RunConfig, gpus: List[GPU]) -> Strategy:
    """The DeepSpeed JSON this run uses, checked against the run config and the hardware."""
    d = cfg.deepspeed
    if d.profile != "auto" and d.profile not in PROFILES:
        raise ConfigError(f"deepspeed.profile: unknown profile '{d.profile}' (auto, {', '.join(PROFILES)})")
    if d.strategy is not None and d.strategy not in ("zero0", *STRATEGIES):
        raise ConfigError(f"deepspeed.strategy: unknown strategy '{d.strategy}' ({', '.join(STRATEGIES)})")
    if d.config:
        path, profile, reason = d.config, None, "from deepspeed.config; profile and strategy not used"
    else:
        if d.profile == "auto":
            try:
                profile, why = pick_profile(gpus)
            except ValueError as e:
                raise ConfigError(f"deepspeed.profile: {e}") from None
            reason = f"profile {profile} autodetected ({why})"
        else:
            profile, reason = d.profile, f"profile {d.profile} from deepspeed.profile"
            if profile != "cpu" and not gpus:
                raise ConfigError(f"deepspeed.profile: '{profile}' is a GPU profile but no CUDA GPU was found; "
                                  "use deepspeed.profile=cpu (or auto)")
        strategy = d.strategy or PROFILES[profile].default_strategy
        if strategy not in strategy_names(profile):
            raise ConfigError(f"deepspeed.strategy: profile '{profile}' has no strategy '{strategy}' "
                              f"({', '.join(strategy_names(profile))})")
        reason += f", strategy {strategy}" + ("" if d.strategy else " (the profile's default)")
        path = os.path.relpath(config_path(profile, strategy, os.path.join(REPO_ROOT, "ds_configs")))
    config = load_strategy(path)
    _check_against_run(config, path, cfg, gpus)
    return Strategy(path, config, profile, reason)


def _check_against_run(config: dict, path: str, cfg: RunConfig, gpus: List[GPU]) -> None:
    zero = config.get("zero_optimization", {})
    stage = zero.get("stage", 0)
    offload_param, offload_optim = offload_device(zero, "offload_param"), offload_device(zero, "offload_optimizer")
    if offload_param != "none" and stage != 3:
        raise ConfigError(f"{path}: zero_optimization.offload_param needs ZeRO stage 3 (stage is {stage})")
    if offload_optim != "none" and stage == 0:
        raise ConfigError(f"{path}: zero_optimization.offload_optimizer needs ZeRO stage 1, 2 or 3")
    if "nvme" in (offload_param, offload_optim):
        nvme = cfg.deepspeed.nvme_path or zero.get("offload_param", zero.get("offload_optimizer", {})).get("nvme_path")
        if not nvme or not os.path.isdir(nvme) or not os.access(nvme, os.W_OK):
            raise ConfigError(f"deepspeed.nvme_path: '{nvme}' is not a writable directory ({path} swaps parameters "
                              "and optimizer states there; point it at a local NVMe drive)")
    if config.get("fp16", {}).get("enabled") and not gpus:
        raise ConfigError(f"{path}: fp16 needs a CUDA GPU and this run has none; use an fp32 or bf16 config")
    if config.get("bf16", {}).get("enabled") and gpus and not has_bf16(gpus):
        gpu = min(gpus, key=lambda g: g.compute_capability)
        raise ConfigError(f"{path}: bf16 is enabled but {gpu.name} (compute capability {gpu.compute_capability:g}) "
                          "has no bf16; use an fp16 profile (deepspeed.profile=t4 or v100)")
    if not gpus and cfg.train.activation_checkpoint_interval and \
            config.get("activation_checkpointing", {}).get("cpu_checkpointing"):
        # On CPU ranks DeepSpeed 0.19.8's copy "to CPU" returns the same tensor, which it then frees.
        raise ConfigError(f"{path}: activation_checkpointing.cpu_checkpointing needs a GPU (it loses the "
                          "checkpoints on CPU ranks); set it to false")
    m = cfg.model
    if uses_moe(m) and m.moe_impl == "deepspeed" and stage == 3:
        raise ConfigError(f"model.moe_impl: DeepSpeed 0.19.8 refuses its MoE layer under ZeRO stage 3 ({path}); "
                          "use model.moe_impl=native there")


def resolve_batch(cfg: RunConfig, strategy: Strategy, world_size: int) -> None:
    """Fills cfg.train.micro_batch and grad_accum so that global = micro x accumulation x world."""
    t, ds, path = cfg.train, strategy.config, strategy.path
    micro = t.micro_batch or ds.get("train_micro_batch_size_per_gpu")
    if not micro:
        raise ConfigError(f"train.micro_batch: not set, and {path} has no train_micro_batch_size_per_gpu")
    global_batch = t.global_batch or ds.get("train_batch_size")
    if global_batch:
        if global_batch % (micro * world_size):
            raise ConfigError(f"train.global_batch: {global_batch} is not a multiple of micro-batch x ranks "
                              f"= {micro} x {world_size}")
        accum = global_batch // (micro * world_size)
        if t.grad_accum and t.grad_accum != accum:
            raise ConfigError(f"train.grad_accum: {t.grad_accum} disagrees with global batch {global_batch} = "
                              f"{micro} x {accum} x {world_size} ranks")
    else:
        accum = t.grad_accum or ds.get("gradient_accumulation_steps", 1)
    m = cfg.model
    if uses_moe(m) and m.moe_impl == "deepspeed" and world_size % m.moe_ep_size:
        raise ConfigError(f"model.moe_ep_size: {m.moe_ep_size} does not divide the {world_size} ranks")
    t.micro_batch, t.grad_accum = int(micro), int(accum)
    t.global_batch = t.micro_batch * t.grad_accum * world_size


def offload_device(zero: dict, key: str) -> str:
    """Where zero_optimization.<key> (offload_param or offload_optimizer) sends its state: none, cpu or nvme."""
    return zero.get(key, {}).get("device", "none")


def drop_single_rank_overlap(zero: dict, world_size: int) -> None:
    """One rank has no gradient reduction to overlap, and ZeRO-1/2's overlap path costs host time in every
    parameter's backward hook, which the GPU waited for (docs/performance.md): off for one rank of ZeRO-1/2
    without offload (with offload it also overlaps the copies to the host)."""
    if world_size == 1 and zero.get("stage") in (1, 2) and offload_device(zero, "offload_optimizer") == "none":
        zero["overlap_comm"] = False


def build_ds_config(cfg: RunConfig, strategy: Strategy, on_cuda: bool, world_size: int) -> dict:
    """The full dict passed to deepspeed.initialize (after resolve_batch)."""
    t, o = cfg.train, cfg.optim
    ds = json.loads(json.dumps(strategy.config))  # a deep copy
    ds["train_micro_batch_size_per_gpu"] = t.micro_batch
    ds["gradient_accumulation_steps"] = t.grad_accum
    ds["train_batch_size"] = t.global_batch
    zero = ds.get("zero_optimization", {})
    offload = offload_device(zero, "offload_optimizer") != "none"
    drop_single_rank_overlap(zero, world_size)
    if zero.get("stage", 0) == 3 and "leaf_module" not in zero:
        # ZeRO-3 gathers, releases and reduces each block as one unit (DeepSpeed's leaf modules) instead of through
        # hooks on each of its submodules (norms, mixer, its projections, router, MoE: about ten per block). Same
        # weights gathered, same losses; the per-module hooks' host time was most of ZeRO-3's step
        # (docs/performance.md). DeepSpeed finds them by class name: the family's block.
        zero["leaf_module"] = {"classes": [registry.get(cfg.model.arch).block_class_name]}
    if cfg.deepspeed.nvme_path:
        for key in ("offload_param", "offload_optimizer"):
            if offload_device(zero, key) == "nvme":
                zero[key]["nvme_path"] = cfg.deepspeed.nvme_path
    ds["optimizer"] = {
        "type": "AdamW",
        # FusedAdam needs CUDA: on CPU ranks DeepSpeed must use torch's AdamW, except with offload, where
        # it uses its own CPU Adam (DeepSpeedCPUAdam) on any machine.
        "params": {"lr": o.lr, "betas": list(o.betas), "eps": o.eps, "weight_decay": o.weight_decay,
                   "torch_adam": not on_cuda and not offload},
    }
    if cfg.tb_enabled:
        # DeepSpeed's monitor writes the event file; the trainer adds its own scalars through the same writer.
        ds["tensorboard"] = {"enabled": True, "output_path": os.path.join(cfg.run_dir, "tensorboard"),
                             "job_name": "train"}
    return ds

"""The trainer's DeepSpeed engine, built in one function that the trainer and the profilers call."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_env() -> None:
    """Lets `python -m resnetbk.train` run without a launcher: a world of one on a free local port."""
    if "RANK" in os.environ:
        return
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))


def construct_model(model_cfg, ds_config: dict):
    """CausalLM; under ZeRO-3 built inside deepspeed.zero.Init.

    There each module's weights are partitioned (and offloaded) as soon as the module is built, so no rank
    ever holds the whole model (a 7B model built plainly is 28 GB of fp32 on every rank before ZeRO splits it).
    DeepSpeed gathers the weights around module.apply, so CausalLM's initialisation still writes them, and
    the weights equal those of a plain build from the same seed. Whether DeepSpeed replaces
    torch.nn.functional.linear is the JSON's zero_optimization.memory_efficient_linear (false in ds_configs/).
    """
    import deepspeed

    from ..models import registry
    from ..models.decoder import CausalLM

    # The family's block module is imported here, not inside zero.Init: zero.Init replaces torch.Tensor.__new__, and
    # torch._dynamo, first imported by the BK ops, refuses to initialise under that replacement (TypeError).
    registry.get(model_cfg.arch).block_class()
    stage = ds_config.get("zero_optimization", {}).get("stage", 0)
    with deepspeed.zero.Init(config_dict_or_path=ds_config, enabled=stage == 3):
        return CausalLM(model_cfg)


def build_engine(cfg, ds_config: dict, deepspeed_checks: bool = False):
    """The engine for a run config and its completed DeepSpeed config (ds_config.build_ds_config): the model (under
    ZeRO-3 inside zero.Init), activation checkpointing, AdamW groups and the warmup-cosine schedule, and the repairs
    this DeepSpeed version needs (workarounds.py); deepspeed_checks keeps DeepSpeed's own per-tensor gradient
    checks (for profiling them). The initial weights come from train.seed, the same on every rank."""
    import deepspeed
    import torch

    from .optim import lr_scheduler_factory, param_groups
    from .workarounds import batch_gradient_checks, share_partial_offload_groups, stand_in_for_deepspeed_muon

    stand_in_for_deepspeed_muon()
    torch.manual_seed(cfg.train.seed)
    model = construct_model(cfg.model, ds_config)
    if cfg.train.activation_checkpoint_interval:
        # Configured from the JSON's "activation_checkpointing" section (CPU checkpointing on small cards).
        deepspeed.checkpointing.configure(None, deepspeed_config=ds_config)
        model.enable_activation_checkpointing(deepspeed.checkpointing.checkpoint,
                                              cfg.train.activation_checkpoint_interval)
    o = cfg.optim
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=param_groups(model, o.weight_decay), config=ds_config,
        lr_scheduler=lr_scheduler_factory(o.warmup_steps, cfg.train.max_steps, o.min_lr_ratio))
    share_partial_offload_groups(engine.optimizer)
    if not deepspeed_checks:
        batch_gradient_checks(engine.optimizer)
    return engine

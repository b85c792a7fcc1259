"""ds_configs/: generated, accepted by DeepSpeed, picked by GPU, and checked against the run config."""

import json
import os

import pytest

from resnetbk.config import ConfigError, load_config
from resnetbk.models import registry
from resnetbk.training.ds_config import build_ds_config, resolve_batch, resolve_strategy
from resnetbk.training.profiles import (
    GPU,
    PROFILES,
    STRATEGIES,
    pick_profile,
    strategy_config,
    strategy_names,
    write_all,
)

from conftest import ROOT

T4 = GPU("Tesla T4", 15.0, 7.5)
H100 = GPU("NVIDIA H100 80GB HBM3", 79.6, 9.0)


def committed_configs():
    root = os.path.join(ROOT, "ds_configs")
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root)
                  for f in files if f.endswith(".json"))


def test_committed_configs_are_what_the_generator_writes(tmp_path):
    written = sorted(os.path.relpath(p, tmp_path) for p in write_all(str(tmp_path)))
    assert committed_configs() == written
    for rel in written:
        assert open(os.path.join(ROOT, "ds_configs", rel)).read() == open(tmp_path / rel).read(), rel
    # every profile has every strategy (cpu: no NVMe, plus stage 0)
    assert len(written) == 6 * len(STRATEGIES) + 6


def test_every_config_is_accepted_by_deepspeed_as_is():
    from deepspeed.runtime.config import DeepSpeedConfig

    for rel in committed_configs():
        config = DeepSpeedConfig(json.load(open(os.path.join(ROOT, "ds_configs", rel))))
        profile, strategy = os.path.dirname(rel), os.path.basename(rel)[:-5]
        assert config.zero_optimization_stage == int(strategy[4]), rel
        assert config.bfloat16_config.enabled == (PROFILES[profile].precision == "bf16"), rel
        assert config.float16_config.enabled == (PROFILES[profile].precision == "fp16"), rel


def test_fp16_profiles_scale_the_loss_dynamically():
    fp16 = strategy_config("t4", "zero2")["fp16"]
    assert fp16["loss_scale"] == 0 and fp16["initial_scale_power"] == 16 and fp16["min_loss_scale"] == 1


@pytest.mark.parametrize("gpu,profile", [
    (T4, "t4"),
    (GPU("Tesla V100-SXM2-32GB", 32.0, 7.0), "v100"),
    (GPU("NVIDIA A100-SXM4-40GB", 39.4, 8.0), "a100"),
    (GPU("NVIDIA A100-SXM4-80GB", 79.2, 8.0), "a100"),
    (H100, "h100"),
    (GPU("NVIDIA H200", 139.8, 9.0), "h100"),
    (GPU("NVIDIA GeForce RTX 4090", 23.5, 8.9), "rtx24"),
    (GPU("NVIDIA RTX A5000", 24.0, 8.6), "rtx24"),
    (GPU("NVIDIA GeForce RTX 3060", 12.0, 8.6), "rtx10"),
    (GPU("NVIDIA GeForce RTX 3080", 10.0, 8.6), "rtx10"),
])
def test_profile_autodetection(gpu, profile):
    picked, why = pick_profile([gpu])
    assert picked == profile and gpu.name in why


def test_autodetection_without_a_gpu_and_with_an_old_one():
    assert pick_profile([])[0] == "cpu"
    with pytest.raises(ValueError, match="compute capability 7.0"):
        pick_profile([GPU("Tesla P100", 16.0, 6.0)])
    assert pick_profile([H100, GPU("NVIDIA GeForce RTX 3060", 12.0, 8.6)])[0] == "rtx10"  # the smallest decides


def run_config(*overrides):
    return load_config(os.path.join(ROOT, "configs", "tiny.yaml"), list(overrides))


def test_autodetected_strategy_and_batch_derivation():
    cfg = run_config("deepspeed.profile=auto", "deepspeed.strategy=null", "train.micro_batch=null")
    strategy = resolve_strategy(cfg, [H100])
    assert strategy.path.endswith(os.path.join("ds_configs", "h100", "zero2.json"))
    assert "autodetected" in strategy.reason and "default" in strategy.reason
    resolve_batch(cfg, strategy, world_size=4)  # micro-batch from the JSON (16), accumulation 1
    assert (cfg.train.micro_batch, cfg.train.grad_accum, cfg.train.global_batch) == (16, 1, 64)

    cfg = run_config("deepspeed.profile=rtx10", "deepspeed.strategy=null", "train.micro_batch=2",
                     "train.grad_accum=null", "train.global_batch=64")
    strategy = resolve_strategy(cfg, [GPU("NVIDIA GeForce RTX 3060", 12.0, 8.6)])
    assert strategy.path.endswith("rtx10/zero2-offload.json")
    resolve_batch(cfg, strategy, world_size=2)
    assert (cfg.train.micro_batch, cfg.train.grad_accum) == (2, 16)
    ds = build_ds_config(cfg, strategy, on_cuda=True, world_size=2)
    assert ds["train_batch_size"] == 64 == ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 2
    assert ds["optimizer"]["params"]["torch_adam"] is False


@pytest.mark.parametrize("strategy,world,overlap", [("zero2", 1, False), ("zero2", 2, True), ("zero1", 1, False),
                                                    ("zero3", 1, True), ("zero2-offload", 1, True)])
def test_overlap_comm_is_turned_off_only_for_one_rank_of_zero_1_or_2(strategy, world, overlap):
    cfg = run_config("deepspeed.profile=h100", f"deepspeed.strategy={strategy}", "train.micro_batch=4",
                     "train.global_batch=null", "train.grad_accum=1")
    resolved = resolve_strategy(cfg, [H100])
    resolve_batch(cfg, resolved, world_size=world)
    assert resolved.config["zero_optimization"]["overlap_comm"] is True  # the JSON keeps DeepSpeed's multi-GPU setting
    assert (build_ds_config(cfg, resolved, on_cuda=True, world_size=world)["zero_optimization"]["overlap_comm"]
            is overlap)


@pytest.mark.parametrize("overrides,gpus,fragment", [
    (["deepspeed.profile=a100"], [T4], "has no bf16"),
    (["deepspeed.profile=h100"], [], "no CUDA GPU"),
    (["deepspeed.profile=t4", "deepspeed.strategy=zero2"], [], "no CUDA GPU"),
    (["deepspeed.config=ds_configs/t4/zero2.json"], [], "fp16 needs a CUDA GPU"),
    (["deepspeed.profile=h100", "deepspeed.strategy=zero3-nvme", "deepspeed.nvme_path=/no/such/dir"], [H100],
     "deepspeed.nvme_path: '/no/such/dir'"),
    (["deepspeed.profile=h100", "deepspeed.strategy=zero3", "model.moe_impl=deepspeed"], [H100], "model.moe_impl"),
    (["deepspeed.profile=cpu", "deepspeed.strategy=zero3-nvme"], [], "profile 'cpu' has no strategy 'zero3-nvme'"),
])
def test_impossible_combinations_name_the_setting(overrides, gpus, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        resolve_strategy(run_config(*overrides), gpus)


def test_offload_rules_in_a_hand_written_config(tmp_path):
    config = json.load(open(os.path.join(ROOT, "ds_configs", "cpu", "zero2.json")))
    config["zero_optimization"]["offload_param"] = {"device": "cpu"}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="offload_param needs ZeRO stage 3"):
        resolve_strategy(run_config(f"deepspeed.config={path}"), [])
    config = strategy_config("cpu", "zero2")
    config["activation_checkpointing"]["cpu_checkpointing"] = True
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="cpu_checkpointing needs a GPU"):
        resolve_strategy(run_config(f"deepspeed.config={path}",
                                    "train.activation_checkpoint_interval=1"), [])


@pytest.mark.parametrize("overrides,world,fragment", [
    (["train.micro_batch=16", "train.global_batch=48"], 2, "train.global_batch: 48 is not a multiple"),
    (["train.micro_batch=8", "train.global_batch=64", "train.grad_accum=2"], 2, "train.grad_accum: 2 disagrees"),
    (["model.moe_impl=deepspeed", "model.moe_ep_size=4", "model.moe_experts=4"], 2, "model.moe_ep_size"),
])
def test_batch_and_expert_parallel_sizes_must_fit_the_world(overrides, world, fragment):
    cfg = run_config(*overrides)
    with pytest.raises(ConfigError, match=fragment):
        resolve_batch(cfg, resolve_strategy(cfg, []), world)


def test_each_profile_lists_its_strategies():
    assert strategy_names("cpu") == ["zero0", "zero1", "zero2", "zero3", "zero2-offload", "zero3-offload"]
    for name, profile in PROFILES.items():
        assert profile.default_strategy in strategy_names(name)


@pytest.mark.parametrize("arch", registry.names())
def test_zero3_leaf_modules_are_the_model_blocks(arch):
    """DeepSpeed finds leaf modules by class name and skips a name that matches nothing, so a renamed block would
    silently bring back the per-submodule hooks: the run's DeepSpeed config names the family's block, and every
    block, and nothing else, matches it. The JSON files leave the name to the run."""
    from deepspeed.runtime.zero.leaf_module_config import DeepSpeedZeroLeafModuleConfig
    from deepspeed.utils.z3_leaf_module import apply_zero_leaf_module_config

    from resnetbk.models.decoder import CausalLM

    assert "leaf_module" not in strategy_config("h100", "zero3")["zero_optimization"]
    cfg = run_config(f"model.arch={arch}", "model.d_model=32", "model.n_layers=2", "model.n_heads=4",
                     "model.ffn_hidden=64", "deepspeed.profile=h100", "deepspeed.strategy=zero3", "train.micro_batch=4",
                     "train.global_batch=null", "train.grad_accum=1")
    strategy = resolve_strategy(cfg, [H100])
    resolve_batch(cfg, strategy, world_size=1)
    leaf = build_ds_config(cfg, strategy, on_cuda=True, world_size=1)["zero_optimization"]["leaf_module"]
    assert leaf == {"classes": [registry.get(arch).block_class_name]}
    model = CausalLM(cfg.model)
    matched = apply_zero_leaf_module_config(model, DeepSpeedZeroLeafModuleConfig(**leaf))
    assert [id(m) for m in matched] == [id(b) for b in model.blocks]

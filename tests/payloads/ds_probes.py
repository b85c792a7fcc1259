"""DeepSpeed checks that need an initialised process group, run by tests under the deepspeed launcher.

moe (2 ranks): does each MoE path train its router, and does the load-balancing loss reach the optimizer? For
each (moe_impl, ZeRO stage), two fresh engines from the same seed: one takes an optimizer step on the balance
loss alone, the other on the full loss. Writes, per path, how far the router and the experts' weights moved.

zero3 (2 ranks): both architectures built by the trainer's construct_model under ZeRO-3 (deepspeed.zero.Init)
against a plain build from the same seed. Writes, per architecture, the largest weight difference (gathered), the
share of the weights each rank holds, whether the weight-decay groups agree, and whether zero.Init replaced
torch.nn.functional.linear (the committed ZeRO-3 settings, persistence threshold 0). Then an engine with DeepSpeed's
partial optimizer offload and the trainer's LR schedule: the lr of each of its GPU-side optimizer's groups against
the CPU optimizer's, over a few scheduler steps.

checks (2 ranks): ZeRO-2 in bf16 with DeepSpeed's per-tensor gradient checks and with the trainer's batched
replacement (resnetbk/training/optim.py: batch_gradient_checks), from the same seed: a clean step, then a step whose
loss is NaN on one rank, then one with an inf in a single gradient element on one rank. Writes, per variant, the
gradient norms, whether each step was applied, and the weights after the three steps.

checkpointing (1 rank): the gradients of both architectures with DeepSpeed activation checkpointing at
intervals 1 and 2 against no checkpointing, dropout on. Writes the largest absolute difference per case.
(CPU checkpointing is a GPU feature: on CPU ranks DeepSpeed 0.19.8's "copy to CPU" is a no-op and it then
frees the only copy; resnetbk/training/ds_config.py refuses that combination.)
"""

import argparse
import json
import os

import deepspeed
import torch
from deepspeed.utils import safe_get_full_fp32_param

from resnetbk.config import ModelConfig
from resnetbk.models import registry
from resnetbk.models.decoder import CausalLM
from resnetbk.training.optim import param_groups
from resnetbk.training.workarounds import stand_in_for_deepspeed_muon, unlink_shm_allreduce_buffer

PATHS = [("deepspeed", 1), ("deepspeed", 2), ("native", 3)]


def engine_for(impl: str, stage: int):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, max_seq_len=16, d_model=32, n_layers=1, n_heads=2, ffn_hidden=64,
                      moe_experts=4, moe_top_k=2, moe_impl=impl, moe_ep_size=2 if impl == "deepspeed" else 1)
    model = CausalLM(cfg)
    zero = {"stage": stage}
    if stage == 3:
        zero["stage3_param_persistence_threshold"] = 0  # partition even these tiny weights
    ds = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, "gradient_clipping": 0.0,
          "zero_optimization": zero, "steps_per_print": 10**6,
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "weight_decay": 0.0, "torch_adam": True}}}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=param_groups(model, 0.0), config=ds)
    return engine


def weights(engine):
    """The router's weight and the first layer of every expert on this rank, as full fp32 tensors."""
    moe = engine.module.blocks[0].moe
    if hasattr(moe, "fc_weight"):  # native: the experts' first layers stacked in one tensor
        first_layers = [moe.fc_weight]
    else:
        first_layers = [e.fc.weight for e in moe.layer.deepspeed_moe.experts.deepspeed_experts]
    full = [safe_get_full_fp32_param(p).detach().clone() for p in (moe.router.weight, *first_layers)]
    return [full[0], torch.stack(full[1:]).flatten(0, 1)]


def checkpointing_probe() -> dict:
    from resnetbk import build_model

    results = {}
    for arch in registry.names():
        for cpu in (False, True) if torch.cuda.is_available() else (False,):
            deepspeed.checkpointing.configure(None, partition_activations=False, checkpoint_in_cpu=cpu)
            grads = []
            for interval in (0, 1, 2):
                torch.manual_seed(0)
                model = build_model(arch, vocab_size=50, max_seq_len=16, d_model=32, n_layers=3, n_heads=4,
                                    ffn_hidden=64, dropout=0.1)
                if interval:
                    model.enable_activation_checkpointing(deepspeed.checkpointing.checkpoint, interval)
                tokens = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(1))
                torch.manual_seed(5)  # the same dropout masks; DeepSpeed replays the RNG state when recomputing
                model(tokens, tokens.roll(-1, 1)).loss.backward()
                grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
            for interval, g in zip((1, 2), grads[1:]):
                results[f"{arch}/interval{interval}/cpu_checkpointing={cpu}"] = float((g - grads[0]).abs().max())
    return results


def moe_probe(rank: int) -> dict:
    results = {}
    tokens = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(rank))
    for impl, stage in PATHS:
        result = {}
        for loss in ("balance", "full"):
            engine = engine_for(impl, stage)
            before = weights(engine)
            out = engine(tokens, tokens.roll(-1, 1))
            # The balance loss alone gives only the router a gradient.
            engine.backward(out.balance_loss if loss == "balance" else out.loss)
            engine.step()
            after = weights(engine)
            result.update({"balance_loss": float(out.balance_loss),
                           f"router_moved_by_{loss}": float((after[0] - before[0]).abs().max()),
                           f"experts_moved_by_{loss}": float((after[1] - before[1]).abs().max())})
        results[f"{impl}/zero{stage}"] = result
    return results


def zero3_probe(world: int) -> dict:
    from resnetbk.training.engine import construct_model
    from resnetbk.training.profiles import strategy_config

    results = {}
    zero = {**strategy_config("cpu", "zero3")["zero_optimization"], "stage3_param_persistence_threshold": 0}
    ds = {"train_micro_batch_size_per_gpu": 1, "train_batch_size": world, "gradient_accumulation_steps": 1,
          "zero_optimization": zero}
    linear = torch.nn.functional.linear
    for arch in registry.names():
        cfg = ModelConfig(arch=arch, vocab_size=64, max_seq_len=16, d_model=32, n_layers=2, n_heads=4, ffn_hidden=64)
        torch.manual_seed(3)
        plain = CausalLM(cfg)
        torch.manual_seed(3)
        model = construct_model(cfg, ds)
        params = list(model.parameters())
        held = sum(p.ds_tensor.numel() for p in params) / sum(p.ds_numel for p in params)
        empty = all(p.numel() == 0 for p in params)  # outside a gather no rank holds a whole weight
        names = {id(p): n for n, p in model.named_parameters()} | {id(p): n for n, p in plain.named_parameters()}
        groups = [[sorted(names[id(p)] for p in g["params"]) for g in param_groups(m, 0.1)] for m in (model, plain)]
        with deepspeed.zero.GatheredParameters(params):
            diff = max(float((a - b).abs().max()) for a, b in zip(plain.parameters(), params))
            shapes_equal = [p.shape for p in plain.parameters()] == [p.shape for p in params]
        results[arch] = {"max_abs_diff": diff, "shapes_equal": shapes_equal, "share_held": held,
                         "partitioned": empty, "decay_groups_equal": groups[0] == groups[1]}
    results["linear_replaced"] = torch.nn.functional.linear is not linear
    results["partial_offload"] = partial_offload_lrs(model, ds)
    return results


def partial_offload_lrs(model, ds: dict) -> dict:
    from resnetbk.training.optim import lr_scheduler_factory
    from resnetbk.training.workarounds import share_partial_offload_groups

    zero = {**ds["zero_optimization"], "offload_optimizer": {"device": "cpu", "ratio": 0.5}}
    config = {**ds, "zero_optimization": zero, "gradient_clipping": 1.0,
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "weight_decay": 0.1}}}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=param_groups(model, 0.1), config=config,
                                      lr_scheduler=lr_scheduler_factory(4, 10, 0.1))
    share_partial_offload_groups(engine.optimizer)
    lrs = {"cpu": [], "gpu_side": []}
    for _ in range(3):
        engine.lr_scheduler.step()
        lrs["cpu"].append([g["lr"] for g in engine.optimizer.optimizer.param_groups])
        lrs["gpu_side"].append([g["lr"] for g in engine.optimizer.backup_optimizer.param_groups])
    return lrs


def checks_probe(rank: int) -> dict:
    from resnetbk.training.workarounds import batch_gradient_checks

    results = {}
    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(rank))
    for variant in ("deepspeed", "batched"):
        torch.manual_seed(0)
        model = CausalLM(ModelConfig(vocab_size=64, max_seq_len=16, d_model=32, n_layers=2, n_heads=4, ffn_hidden=64))
        ds = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
              "bf16": {"enabled": True}, "zero_optimization": {"stage": 2}, "steps_per_print": 10**6,
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "weight_decay": 0.1, "torch_adam": True}}}
        engine, *_ = deepspeed.initialize(model=model, model_parameters=param_groups(model, 0.1), config=ds)
        replaced = batch_gradient_checks(engine.optimizer) if variant == "batched" else False
        norms, applied, hook = [], [], None
        for fault in ("none", "nan_loss", "inf_grad"):
            loss = engine(tokens, tokens.roll(-1, 1)).loss
            if fault == "nan_loss" and rank == 1:
                loss = loss * float("nan")
            if fault == "inf_grad" and rank == 1:
                hook = engine.module.blocks[1].moe.fc_weight.register_hook(
                    lambda g: g.index_put((torch.tensor([0]),) * 3, torch.tensor(float("inf"), dtype=g.dtype)))
            engine.backward(loss)
            engine.step()
            norm = engine.get_global_grad_norm()
            norms.append(None if norm is None else float(norm))
            applied.append(bool(engine.was_step_applied()))
            if hook is not None:
                hook.remove()
        weights = torch.cat([safe_get_full_fp32_param(p).flatten() for p in engine.module.parameters()])
        opt = engine.optimizer
        results[variant] = {"replaced": replaced, "grad_norms": norms, "applied": applied,
                            "methods": [opt.has_overflow_partitioned_grads_serial.__qualname__,
                                        opt.get_grad_norm_direct.__qualname__],
                            "weights": weights.tolist()}
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("probe", choices=["moe", "checkpointing", "zero3", "checks"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--local_rank", type=int, default=0)
    args = parser.parse_args()
    stand_in_for_deepspeed_muon()  # as the trainer does
    deepspeed.init_distributed()
    unlink_shm_allreduce_buffer(torch.distributed)  # as the trainer does
    rank = torch.distributed.get_rank()
    probes = {"moe": lambda: moe_probe(rank), "checkpointing": checkpointing_probe,
              "zero3": lambda: zero3_probe(torch.distributed.get_world_size()), "checks": lambda: checks_probe(rank)}
    results = probes[args.probe]()
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    main()

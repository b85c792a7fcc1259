"""CUDA-graphed blocks (resnetbk/training/cuda_graphs.py): when the trainer may graph them, and on a GPU that a graphed
model trains exactly like the eager one."""

import json
import sys

import pytest
import torch

from resnetbk import build_model
from resnetbk.config import ModelConfig
from resnetbk.training.cuda_graphs import graph_blocks_unsupported

from conftest import run_cli

SMALL = dict(vocab_size=97, d_model=64, n_layers=2, n_heads=4, ffn_hidden=128, max_seq_len=256)


@pytest.mark.parametrize("change,fragment", [
    ({}, None),
    ({"on_cuda": False}, "no CUDA"),
    ({"zero_stage": 3}, "ZeRO-3"),
    ({"checkpointing": True}, "checkpointing"),
    ({"dropout": 0.1}, "dropout"),
    ({"moe_impl": "deepspeed"}, "DeepSpeed's MoE"),
    ({"dtype": torch.float16}, "per-expert path"),
    ({"capability": (7, 0)}, "per-expert path"),
    ({"arch": "gpt", "dtype": torch.float16, "capability": (7, 0)}, None),  # GPT's blocks have no host sync
])
def test_graph_blocks_unsupported_names_what_stops_graphing(change, fragment):
    model_keys = {"arch", "dropout", "moe_impl"}
    cfg = ModelConfig(**{k: v for k, v in change.items() if k in model_keys})
    run = dict(on_cuda=True, zero_stage=2, checkpointing=False, dtype=torch.bfloat16, capability=(9, 0))
    run.update({k: v for k, v in change.items() if k not in model_keys})
    why = graph_blocks_unsupported(cfg, **run)
    assert why is None if fragment is None else fragment in why


def test_monitoring_buffers_are_updated_in_place():
    """A graph replay writes into the tensors the capture wrote: the BK statistics and the expert load must be
    the same tensors from one forward to the next (and float32 in a bf16 model)."""
    model = build_model("resnetbk", **SMALL).to(torch.bfloat16)
    model.record_stats(True)
    tokens = torch.randint(0, 97, (2, 40))
    model(tokens)
    mixer, moe = model.blocks[0].mixer, model.blocks[0].moe
    held = mixer.last_stats, moe.last_load
    assert held[0].dtype == held[1].dtype == torch.float32
    before = [t.clone() for t in held]
    model(torch.randint(0, 97, (2, 40)))
    assert mixer.last_stats is held[0] and moe.last_load is held[1]
    assert not torch.equal(before[0], held[0])


def _loss_and_grads(model, batches):
    """Two micro-steps accumulated into .grad, as the trainer's engine accumulates them."""
    model.zero_grad(set_to_none=True)
    losses = []
    for tokens in batches:
        loss = model(tokens[:, :-1], tokens[:, 1:]).loss
        loss.backward()
        losses.append(loss.detach())
    return torch.stack(losses), [p.grad.clone() for p in model.parameters()]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("arch,extra", [("resnetbk", {}), ("resnetbk", {"bk_values": 8}), ("gpt", {})])
def test_graphed_blocks_train_like_eager_blocks(arch, extra):
    """Same losses and accumulated gradients over two micro-steps (a graphed backward hands its gradients out in
    its own buffers: without the copy the second micro-step would overwrite the first's); another shape and
    eval mode run eagerly; the logged statistics follow the replays."""
    from resnetbk.training.cuda_graphs import graph_blocks

    torch.manual_seed(0)
    model = build_model(arch, **SMALL, **extra).cuda().bfloat16()
    batches = [torch.randint(0, 97, (4, 129), device="cuda") for _ in range(2)]
    eager_losses, eager_grads = _loss_and_grads(model, batches)
    model.record_stats(True)
    model(batches[1][:, :-1])
    eager_stats = model.stats()

    release = graph_blocks(model, 4, 128)
    graphed_losses, graphed_grads = _loss_and_grads(model, batches)
    assert torch.equal(eager_losses, graphed_losses)
    for e, g in zip(eager_grads, graphed_grads):
        assert torch.equal(e, g)
    if arch == "resnetbk":
        assert model.stats() == pytest.approx(eager_stats)  # the last replay saw batches[1]
    other_shape = torch.randint(0, 97, (2, 65), device="cuda")
    with torch.no_grad():
        graphed_other = model(other_shape[:, :-1], other_shape[:, 1:]).loss
        model.eval()
        graphed_eval = model(batches[0][:, :-1], batches[0][:, 1:]).loss
        model.train()
    release()
    with torch.no_grad():
        assert torch.equal(graphed_other, model(other_shape[:, :-1], other_shape[:, 1:]).loss)
        assert torch.equal(graphed_eval, model.eval()(batches[0][:, :-1], batches[0][:, 1:]).loss)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trainer_with_graphed_blocks_logs_the_eager_loss_curve(kjv_data, tmp_path):
    """The trainer on one GPU (DeepSpeed ZeRO-2, bf16, two micro-steps per step): graphed and eager blocks give
    the same losses, step by step, and the same validation loss (evaluation runs the blocks eagerly)."""
    curves = {}
    for graphs in ("true", "false"):
        run_dir = tmp_path / graphs
        proc = run_cli([sys.executable, "-m", "resnetbk.train", "--config", "configs/tiny.yaml",
                        f"data.train={kjv_data}/train", f"data.val={kjv_data}/val",
                        f"data.tokenizer={kjv_data}/tokenizer.model", "model.vocab_size=512",
                        "deepspeed.profile=h100", "deepspeed.strategy=zero2", "train.micro_batch=8",
                        "train.grad_accum=2", "train.max_steps=12", "optim.warmup_steps=2", "train.log_interval=1",
                        "train.eval_interval=12", "train.eval_max_batches=4", "train.save_interval=-1",
                        "sample.max_new_tokens=4",
                        f"train.cuda_graphs={graphs}", f"run_dir={run_dir}"], env={"DS_ACCELERATOR": "cuda"})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert ("cuda graphs: 4 blocks at micro-batch 8 x 128" in proc.stdout) == (graphs == "true")
        with open(run_dir / "metrics.jsonl") as f:
            records = [json.loads(line) for line in f]
        curves[graphs] = [(r["loss"], r.get("val_loss"), r["bk_abs_g_mean"]) for r in records]
    assert len(curves["true"]) == 12
    assert curves["true"] == curves["false"]

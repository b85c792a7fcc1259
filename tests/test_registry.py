"""The model registry: every family through one spec, and a family from outside the package (tests/families/shift,
through RESNETBK_FAMILIES) that trains on 2 CPU ranks under ZeRO-3 with its own block as the leaf module and its own
FLOPs, with nothing under resnetbk/ changed for it."""

import json
import os
import subprocess
import sys

import pytest

from resnetbk.config import ConfigError, ModelConfig, validate_model
from resnetbk.models import registry
from resnetbk.models.counts import param_count

from conftest import ROOT, TINY, cpu_strategy_json, data_args, deepspeed_launcher, read_metrics, run_cli

FAMILIES = {"RESNETBK_FAMILIES": "families.shift",
            "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH", "")])}


def test_every_family_builds_its_spec_block_and_counts_its_parameters():
    from resnetbk import build_model

    for name in registry.names():
        spec = registry.get(name)
        model = build_model(name, vocab_size=97, d_model=32, n_layers=2, n_heads=4, ffn_hidden=64, max_seq_len=16)
        assert all(type(b).__name__ == spec.block_class_name for b in model.blocks)
        cfg = ModelConfig(arch=name, vocab_size=97, d_model=32, n_layers=2, n_heads=4, ffn_hidden=64, max_seq_len=16)
        assert param_count(cfg) == sum(p.numel() for p in model.parameters())
        assert (model.pos_embed is not None) == spec.position_table


def test_an_unknown_family_is_one_line_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"model.arch: unknown model family 'lstm' \(resnetbk, gpt"):
        validate_model(ModelConfig(arch="lstm"))


def test_the_registry_is_torch_free():
    """Config checks must stay fast: importing the registry and every family's spec loads no torch."""
    code = "import sys; from resnetbk.models import registry; registry.names(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.distributed
def test_a_family_registered_from_outside_trains_on_two_ranks_under_zero3(kjv_data, tmp_path):
    run_dir, steps = tmp_path / "shift", 4
    config = cpu_strategy_json(tmp_path, "zero3", "zero3")
    proc = run_cli([*deepspeed_launcher(), "--module", "resnetbk.train", "--config", "configs/tiny.yaml",
                    *data_args(kjv_data), *TINY, "model.arch=shift", f"deepspeed.config={config}",
                    f"train.max_steps={steps}", "train.log_interval=1", "train.eval_interval=4", "optim.warmup_steps=1",
                    "sample.max_new_tokens=0", f"run_dir={run_dir}"], env={**FAMILIES, "DEEPSPEED_TIMEOUT": "5"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # TINY: d = 64, 2 layers, MLP width 128, vocabulary 512, 64 tokens per sequence.
    d, f, layers, vocab = 64, 128, 2, 512
    params = vocab * d + layers * (2 * d + (d * d + d) + (d * f + f + f * d + d)) + d
    assert f"Token shift: {params / 1e6:.2f}M parameters | 2 rank(s)" in proc.stdout
    matmul = layers * (d * d + 2 * d * f) + vocab * d
    per_token = 6 * matmul + layers * (d + d)  # three passes of the matrix products, the shift's two adds
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    for r in records:
        assert r["flops"] == pytest.approx(r["tokens"] * per_token)
    assert records[-1]["loss"] < records[0]["loss"] and "val_loss" in records[-1]
    saved = json.load(open(run_dir / "summary.json"))
    assert saved["step"] == steps


def test_a_family_from_outside_decodes_incrementally_through_the_same_protocol():
    import torch

    from resnetbk import build_model

    import families.shift  # noqa: F401  (registers "shift" in this process)

    torch.manual_seed(0)
    model = build_model("shift", vocab_size=97, d_model=32, n_layers=2, n_heads=4, ffn_hidden=64,
                        max_seq_len=16).double().eval()
    tokens = torch.randint(0, 97, (2, 30))  # longer than max_seq_len: the family has no position table
    with torch.no_grad():
        full = model(tokens)
    logits, state = model.prefill(tokens[:, :11])
    steps = [logits] + [model.decode(tokens[:, i:i + 1], state)[0] for i in range(11, 30)]
    assert (torch.cat(steps, 1) - full).abs().max().item() < 1e-10

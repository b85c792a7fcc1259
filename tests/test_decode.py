"""Incremental decoding (models/decoder.py: prefill, decode) for every family: exactly the logits of the full forward,
constant memory for the BK mixer, sampling with and without the state alike, and one-line errors for bad input."""

import pytest
import torch

from resnetbk import build_model
from resnetbk.generate import sample
from resnetbk.models import registry

SMALL = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, ffn_hidden=64, max_seq_len=48)
VARIANTS = [(name, {}) for name in registry.names()] + [
    ("resnetbk", {"bk_selective": True, "bk_value_gate": True}),  # per-position couplings through the state
    ("resnetbk", {"bk_values": 0}),  # the diagonal alone
    ("resnetbk", {"feed_forward": "mlp", "moe_top_k": 1}),
]


@pytest.mark.parametrize("arch,extra", VARIANTS)
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_prefill_then_decode_gives_the_full_forwards_logits(arch, extra, dtype, tolerance):
    torch.manual_seed(0)
    model = build_model(arch, **SMALL, **extra).to(dtype).eval()
    tokens = torch.randint(0, 97, (3, 40))
    with torch.no_grad():
        full = model(tokens)
    for t in (1, 9, 39):
        logits, state = model.prefill(tokens[:, :t])
        steps = [logits]
        for i in range(t, tokens.shape[1]):
            logits, state = model.decode(tokens[:, i:i + 1], state)
            steps.append(logits)
        got = torch.cat(steps, dim=1)
        assert ((got - full).abs().max() / full.abs().max()).item() < tolerance, t
        assert state.position == tokens.shape[1]


def test_the_bk_state_does_not_grow_with_the_context_and_attentions_does():
    torch.manual_seed(0)
    sizes = {}
    for arch in ("resnetbk", "gpt"):
        model = build_model(arch, **SMALL).eval()
        _, state = model.prefill(torch.randint(0, 97, (2, 8)))
        before = state.nbytes()
        for _ in range(24):
            _, state = model.decode(torch.randint(0, 97, (2, 1)), state)
        sizes[arch] = (before, state.nbytes())
    assert sizes["resnetbk"][0] == sizes["resnetbk"][1]
    assert sizes["gpt"][1] == sizes["gpt"][0] * 32 // 8  # keys and values for every position


def test_families_without_a_position_table_take_any_length():
    model = build_model("resnetbk", **SMALL).eval()
    long = torch.randint(0, 97, (1, 3 * SMALL["max_seq_len"]))
    with torch.no_grad():
        assert model(long).shape == (1, 144, 97)
    logits, state = model.prefill(long[:, :100])
    logits, state = model.decode(long[:, 100:101], state)
    assert logits.shape == (1, 1, 97) and state.position == 101
    gpt = build_model("gpt", **SMALL)
    with pytest.raises(ValueError, match="exceeds model.max_seq_len=48"):
        gpt(long)


@pytest.mark.parametrize("arch", registry.names())
def test_sampling_with_and_without_the_state_draws_the_same_tokens(arch):
    torch.manual_seed(0)
    model = build_model(arch, **SMALL).double()
    prompt = torch.randint(0, 97, (2, 5))
    draws = [sample(model, prompt, 30, SMALL["max_seq_len"], temperature=0.9, top_k=20,
                    generator=torch.Generator().manual_seed(7), use_cache=cached) for cached in (True, False)]
    assert torch.equal(draws[0], draws[1]) and draws[0].shape == (2, 35)


def test_gpt_samples_past_its_position_table_by_recomputing_windows():
    torch.manual_seed(0)
    model = build_model("gpt", **SMALL).double()
    out = sample(model, torch.randint(0, 97, (1, 40)), 20, SMALL["max_seq_len"],
                 generator=torch.Generator().manual_seed(1))
    assert out.shape == (1, 60)


def test_bad_input_is_one_clear_error():
    model = build_model("resnetbk", **SMALL).eval()
    with pytest.raises(ValueError, match="at least one token"):
        sample(model, torch.zeros(1, 0, dtype=torch.long), 4, 48)
    with pytest.raises(ValueError, match="N >= 1"):
        model.prefill(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="token id 97 outside the vocabulary"):
        model.prefill(torch.tensor([[1, 97]]))
    _, state = model.prefill(torch.randint(0, 97, (2, 4)))
    with pytest.raises(ValueError, match="batch 2"):
        model.decode(torch.randint(0, 97, (3, 1)), state)
    gpt = build_model("gpt", **SMALL).eval()
    with pytest.raises(ValueError, match="not made by this model"):
        gpt.decode(torch.randint(0, 97, (2, 1)), state)


def make_export(directory, arch, kjv):
    """An export directory of a small random model (what python -m resnetbk.export writes), on the KJV tokenizer."""
    import shutil

    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from resnetbk.config import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, vocab_size=512, d_model=32, n_layers=2, n_heads=4, ffn_hidden=64, max_seq_len=64)
    model = build_model(**{**OmegaConf.to_container(OmegaConf.structured(cfg))})
    directory.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    config = OmegaConf.create({"model": cfg, "tokenizer": "tokenizer.model"})
    (directory / "config.yaml").write_text(OmegaConf.to_yaml(config))
    shutil.copyfile(kjv / "tokenizer.model", directory / "tokenizer.model")
    return directory


@pytest.mark.parametrize("arch", ["resnetbk", "gpt"])
def test_evaluate_reports_the_loss_past_the_training_length(arch, kjv_data, tmp_path, capsys):
    import json

    from resnetbk.evaluate import main

    export = make_export(tmp_path / arch, arch, kjv_data)
    assert main([str(export), "--data", f"{kjv_data}/val", "--seq-len", "32", "--lengths", "1,2,4",
                 "--max-batches", "2", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["buckets"] == ["0-31", "32-63", "64-127"]
    assert list(result["lengths"]["32"]["loss_by_bucket"]) == ["0-31"]
    assert list(result["lengths"]["64"]["loss_by_bucket"]) == ["0-31", "32-63"]
    if arch == "gpt":  # 128 positions are past GPT's table of 64: said, not failed
        assert "position table" in result["lengths"]["128"]["skipped"]
    else:
        assert len(result["lengths"]["128"]["loss_by_bucket"]) == 3


@pytest.mark.parametrize("args,fragment", [
    (["--batch-size", "0"], "--batch-size"),
    (["--max-batches", "-1"], "--max-batches"),
    (["--lengths", "1,x"], "--lengths"),
    (["--lengths", "0,1"], "--lengths"),
])
def test_evaluate_bad_arguments_are_one_line(args, fragment, kjv_data, tmp_path, capsys):
    from resnetbk.evaluate import main

    export = make_export(tmp_path / "e", "resnetbk", kjv_data)
    assert main([str(export), "--data", f"{kjv_data}/val", "--device", "cpu", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]


def test_generate_with_an_empty_prompt_or_a_missing_gpu_is_one_line(kjv_data, tmp_path, capsys):
    from resnetbk.generate import main

    export = make_export(tmp_path / "e", "resnetbk", kjv_data)
    assert main([str(export), "--prompt", "", "--device", "cpu"]) == 2
    assert "--prompt: empty" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([str(export), "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    assert main([str(export), "--prompt", "And God", "--max-new-tokens", "5", "--device", "cpu"]) == 0


def test_early_exit_trains_its_exits_in_turn_and_decodes_at_less_depth():
    from resnetbk.config import ModelConfig
    from resnetbk.models.counts import param_count

    torch.manual_seed(0)
    cfg = dict(SMALL, n_layers=4, exit_layers=[1, 3])
    model = build_model("resnetbk", **cfg).double()
    assert param_count(ModelConfig(arch="resnetbk", **cfg)) == sum(p.numel() for p in model.parameters())
    tokens = torch.randint(0, 97, (2, 30))
    losses = []
    for _ in range(2):  # exit 1, then exit 3
        out = model(tokens[:, :-1], tokens[:, 1:])
        out.loss.backward()
        losses.append(out.exit_loss.item())
        assert torch.allclose(out.loss, out.lm_loss + 0.01 * out.balance_loss + 0.5 * out.exit_loss)
    assert losses[0] != losses[1] and model.exit_turn == 2
    assert all(norm.weight.grad.abs().sum() > 0 for norm in model.exit_norms)
    model.eval()
    runs = {}
    for threshold in (None, 2.0, 0.0):
        logits, state = model.prefill(tokens[:, :10])
        steps = [model.decode(tokens[:, i:i + 1], state, exit_threshold=threshold)[0] for i in range(10, 30)]
        runs[threshold] = (torch.cat(steps, 1), state.layers / state.steps)
    assert torch.equal(runs[None][0], runs[2.0][0]) and runs[2.0][1] == 4  # above 1: never exits, bitwise
    assert runs[0.0][1] == 1  # threshold 0: always the first exit
    assert not torch.allclose(runs[0.0][0], runs[None][0])

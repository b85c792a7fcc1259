"""Model-level properties: causality, MoE router gradient, load-balancing loss, build_model API."""

import pytest
import torch

from resnetbk import build_model
from resnetbk.config import ConfigError, ModelConfig
from resnetbk.model import CausalLM

SMALL = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, ffn_hidden=64, max_seq_len=48)


@pytest.mark.parametrize("arch,extra", [
    ("resnetbk", {}),
    ("resnetbk", {"bk_selective": True, "moe_top_k": 1}),
    ("resnetbk", {"n_heads": 1, "bk_learned_z": False}),  # the faithful one-head, z = i layout
    ("gpt", {}),
])
def test_changing_token_t_plus_1_leaves_logits_up_to_t_unchanged(arch, extra):
    torch.manual_seed(0)
    model = build_model(arch, **{**SMALL, **extra}).eval()
    tokens = torch.randint(0, 97, (2, 40))
    for t in range(0, 39, 3):
        changed = tokens.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1) % 97
        with torch.no_grad():
            before, after = model(tokens), model(changed)
        assert torch.equal(before[:, : t + 1], after[:, : t + 1])
        assert not torch.equal(before[:, t + 1], after[:, t + 1])


@pytest.mark.parametrize("arch", ["resnetbk", "gpt"])
def test_forward_shapes_and_loss(arch):
    model = build_model(arch, **SMALL)
    tokens = torch.randint(0, 97, (3, 20))
    assert model(tokens).shape == (3, 20, 97)
    out = model(tokens[:, :-1], tokens[:, 1:])
    assert out.logits.shape == (3, 19, 97)
    assert abs(out.lm_loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.5  # near uniform at init
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.randint(0, 97, (1, 49)))


@pytest.mark.parametrize("top_k", [1, 2])
def test_router_receives_gradient_from_lm_loss(top_k):
    torch.manual_seed(0)
    model = build_model("resnetbk", **SMALL, moe_top_k=top_k, moe_balance_coef=0.0)
    tokens = torch.randint(0, 97, (2, 30))
    model(tokens[:, :-1], tokens[:, 1:]).loss.backward()
    for block in model.blocks:
        assert block.moe.router.weight.grad.abs().sum() > 0


def test_balance_loss_is_in_the_training_loss_and_reaches_the_router():
    torch.manual_seed(0)
    model = build_model("resnetbk", **SMALL, moe_balance_coef=0.5)
    tokens = torch.randint(0, 97, (2, 30))
    out = model(tokens[:, :-1], tokens[:, 1:])
    assert torch.allclose(out.loss, out.lm_loss + 0.5 * out.balance_loss)
    assert out.balance_loss.item() >= 1.0 - 1e-6  # E * sum f_e P_e >= 1, equality only when balanced
    model.zero_grad()
    out.balance_loss.backward()
    assert all(block.moe.router.weight.grad.abs().sum() > 0 for block in model.blocks)
    load = model.expert_load()
    assert load.shape == (4,) and abs(load.sum().item() - 1) < 1e-6


def test_learned_z_and_couplings_train():
    model = build_model("resnetbk", **SMALL, bk_selective=True)
    tokens = torch.randint(0, 97, (2, 30))
    model(tokens[:, :-1], tokens[:, 1:]).loss.backward()
    mixer = model.blocks[0].mixer
    for p in (mixer.z_re, mixer.z_im_raw, mixer.coupling.weight, mixer.potential.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert (mixer.spectral_shift().imag > 0).all()


def test_build_model_rejects_bad_arguments():
    with pytest.raises(TypeError, match="d_modle"):
        build_model("resnetbk", d_modle=3)
    with pytest.raises(ConfigError, match="model.arch"):
        build_model("lstm")
    with pytest.raises(ConfigError, match="model.moe_top_k"):
        build_model("resnetbk", moe_top_k=5)


@pytest.mark.parametrize("arch,extra", [("resnetbk", {}), ("resnetbk", {"bk_selective": True, "bk_learned_z": False}),
                                        ("gpt", {})])
def test_param_count_from_the_config_matches_the_model(arch, extra):
    from resnetbk.config import ModelConfig
    from resnetbk.flops import param_count, training_flops_per_token

    model = build_model(arch, vocab_size=97, max_seq_len=32, d_model=48, n_layers=3, n_heads=4, ffn_hidden=80, **extra)
    cfg = ModelConfig(arch=arch, vocab_size=97, max_seq_len=32, d_model=48, n_layers=3, n_heads=4, ffn_hidden=80, **extra)
    assert param_count(cfg) == sum(p.numel() for p in model.parameters())
    flops = training_flops_per_token(cfg, 32)
    assert flops > 6 * 97 * 48  # at least the LM head
    if arch == "gpt":  # attention grows with the context, the BK recursion does not
        assert training_flops_per_token(cfg, 64) > flops
    else:
        assert training_flops_per_token(cfg, 64) == flops


@pytest.mark.parametrize("arch,selective", [("gpt", False), ("resnetbk", False), ("resnetbk", True)])
def test_flops_agree_with_deepspeeds_flops_profiler(arch, selective):
    """The model FLOPs behind MFU (resnetbk/flops.py) against DeepSpeed's profiler on a real forward.
    The profiler also counts norms, activations, softmax and the router (we leave them out: memory-bound,
    a few percent at this width), the native MoE's padding of each expert's rows to a block of 32, and the
    full N x N attention of SDPA where we count the causal half that flash attention computes."""
    from deepspeed.profiling.flops_profiler import get_model_profile

    from resnetbk.flops import forward_flops_per_token, training_flops_per_token

    b, n = 4, 128
    cfg = ModelConfig(arch=arch, vocab_size=512, max_seq_len=n, d_model=64, n_layers=2, n_heads=4, ffn_hidden=256,
                      bk_selective=selective)
    tokens = torch.randint(0, 512, (b, n), generator=torch.Generator().manual_seed(0))
    flops, _, _ = get_model_profile(CausalLM(cfg).eval(), args=[tokens], print_profile=False, as_string=False)
    measured = flops / (b * n)
    ours = forward_flops_per_token(cfg, n)
    assert training_flops_per_token(cfg, n) == pytest.approx(3 * ours)  # backward = two forwards, BK included
    if arch == "gpt":
        ours += cfg.n_layers * 2 * 2 * cfg.d_model * (n - 1) / 2  # the masked half the profiler counts too
    assert 1.0 <= measured / ours <= 1.08, (measured, ours)

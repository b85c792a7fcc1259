"""Model-level properties: causality, MoE router gradient, load-balancing loss, build_model API."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from resnetbk import build_model
from resnetbk.config import ConfigError, ModelConfig
from resnetbk.layers.moe import MoE
from resnetbk.models import registry
from resnetbk.models.decoder import CausalLM
from resnetbk.ops import device

SMALL = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, ffn_hidden=64, max_seq_len=48)


@pytest.mark.parametrize("arch,extra", [
    ("resnetbk", {}),
    ("resnetbk", {"bk_selective": True, "moe_top_k": 1}),
    ("resnetbk", {"n_heads": 1, "bk_learned_z": False}),  # the faithful one-head, z = i layout
    ("resnetbk", {"bk_values": 3}),  # the response mixer
    ("resnetbk", {"bk_values": 2, "bk_selective": True, "bk_value_gate": True}),
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


@pytest.mark.parametrize("arch", registry.names())
def test_forward_shapes_and_loss(arch):
    model = build_model(arch, **SMALL)
    tokens = torch.randint(0, 97, (3, 20))
    assert model(tokens).shape == (3, 20, 97)
    out = model(tokens[:, :-1], tokens[:, 1:])
    assert out.logits.shape == (3, 19, 97)
    assert abs(out.lm_loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.5  # near uniform at init
    if registry.get(arch).position_table:  # families without one take any length (tests/test_decode.py)
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


def test_learned_z_couplings_and_values_train():
    model = build_model("resnetbk", **SMALL, bk_selective=True, bk_values=3, bk_value_gate=True)
    tokens = torch.randint(0, 97, (2, 30))
    model(tokens[:, :-1], tokens[:, 1:]).loss.backward()
    mixer = model.blocks[0].mixer
    for p in (mixer.z_re, mixer.z_im_raw, mixer.coupling.weight, mixer.potential.weight, mixer.values.weight,
              mixer.value_out.weight, mixer.value_gate.weight):
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
                                        ("resnetbk", {"bk_values": 5, "bk_value_gate": True}), ("gpt", {})])
def test_param_count_from_the_config_matches_the_model(arch, extra):
    from resnetbk.config import ModelConfig
    from resnetbk.models.counts import param_count, training_flops_per_token

    model = build_model(arch, vocab_size=97, max_seq_len=32, d_model=48, n_layers=3, n_heads=4, ffn_hidden=80, **extra)
    cfg = ModelConfig(arch=arch, vocab_size=97, max_seq_len=32, d_model=48, n_layers=3, n_heads=4, ffn_hidden=80,
                      **extra)
    assert param_count(cfg) == sum(p.numel() for p in model.parameters())
    flops = training_flops_per_token(cfg, 32)
    assert flops > 6 * 97 * 48  # at least the LM head
    if arch == "gpt":  # attention grows with the context, the BK recursion does not
        assert training_flops_per_token(cfg, 64) > flops
    else:
        assert training_flops_per_token(cfg, 64) == flops


@pytest.mark.parametrize("arch,selective,values", [("gpt", False, 0), ("resnetbk", False, 0), ("resnetbk", True, 0),
                                                   ("resnetbk", True, 8)])
def test_flops_agree_with_deepspeeds_flops_profiler(arch, selective, values):
    """The model FLOPs behind MFU (resnetbk/models/counts.py) against DeepSpeed's profiler on a real forward.
    The profiler also counts norms, activations, softmax and the router (we leave them out: memory-bound,
    a few percent at this width), the native MoE's padding of each expert's rows to a block of 32, and the
    full N x N attention of SDPA where we count the causal half that flash attention computes."""
    from deepspeed.profiling.flops_profiler import get_model_profile

    from resnetbk.models.counts import forward_flops_per_token, training_flops_per_token

    b, n = 4, 128
    cfg = ModelConfig(arch=arch, vocab_size=512, max_seq_len=n, d_model=64, n_layers=2, n_heads=4, ffn_hidden=256,
                      bk_selective=selective, bk_values=values, bk_value_gate=values > 0)
    tokens = torch.randint(0, 512, (b, n), generator=torch.Generator().manual_seed(0))
    flops, _, _ = get_model_profile(CausalLM(cfg).eval(), args=[tokens], print_profile=False, as_string=False)
    measured = flops / (b * n)
    ours = forward_flops_per_token(cfg, n)
    # backward = two forwards, up to the recurrences' own counts (resnetbk/models/counts.py)
    assert training_flops_per_token(cfg, n) == pytest.approx(3 * ours, rel=1e-3)
    if arch == "gpt":
        ours += cfg.n_layers * 2 * 2 * cfg.d_model * (n - 1) / 2  # the masked half the profiler counts too
    assert 1.0 <= measured / ours <= 1.08, (measured, ours)


def dense_moe_reference(moe, x):
    """Every token through every expert in float64 (moe is a float64 copy), weighted by its top-k router
    probabilities (renormalised when k > 1)."""
    flat = x.double().reshape(-1, x.shape[-1])
    probs = torch.softmax(moe.router(flat), -1)
    gate, choice = probs.topk(moe.top_k, -1)
    if moe.top_k > 1:
        gate = gate / gate.sum(-1, keepdim=True)
    h = torch.nn.functional.gelu(torch.einsum("td,efd->tef", flat, moe.fc_weight) + moe.fc_bias)
    y = torch.einsum("tef,edf->ted", h, moe.proj_weight) + moe.proj_bias  # (T, E, d)
    picked = y.gather(1, choice[..., None].expand(-1, -1, y.shape[-1]))
    return (picked * gate[..., None]).sum(1).reshape(x.shape)


@pytest.mark.parametrize("glue", ["torch", "triton"])
@pytest.mark.parametrize("path", ["padded", "grouped"])
@pytest.mark.parametrize("top_k", [1, 2])
def test_moe_paths_match_a_dense_float64_reference(monkeypatch, glue, path, top_k):
    """Both expert paths and both kinds of routing glue, forward and backward. On CPU the grouped path runs torch's
    grouped_mm fallback: it checks the sorting, offsets, bias gathering and un-sorting around the GEMMs that the GPU
    path shares; the Triton glue runs through Triton's interpreter."""
    monkeypatch.setattr(device, "uses_grouped_gemm", lambda x: path == "grouped")
    monkeypatch.setattr(device, "uses_triton", lambda x: glue == "triton")
    torch.manual_seed(0)
    moe = MoE(d_model=16, hidden=24, experts=4, top_k=top_k, n_layers=2)
    with torch.no_grad():  # non-zero biases, so that a bias given to the wrong expert shows
        moe.fc_bias.normal_()
        moe.proj_bias.normal_()
    ref_moe = copy.deepcopy(moe).double()
    x = torch.randn(3, 37, 16, requires_grad=True)  # 111 tokens: group sizes that are not multiples of anything
    x64 = x.detach().double().requires_grad_()
    out, _ = moe(x)
    reference = dense_moe_reference(ref_moe, x64)
    assert torch.allclose(out.double(), reference, atol=1e-5)

    def weights(m):
        return [m.fc_weight, m.fc_bias, m.proj_weight, m.proj_bias, m.router.weight]
    grads = torch.autograd.grad(out.sum(), [x, *weights(moe)])
    ref_grads = torch.autograd.grad(reference.sum(), [x64, *weights(ref_moe)])
    for name, g, r in zip(["x", "fc_weight", "fc_bias", "proj_weight", "proj_bias", "router"], grads, ref_grads):
        assert torch.allclose(g.double(), r, atol=1e-4), name


@pytest.mark.parametrize("arch", registry.names())
def test_triton_kernels_give_the_pytorch_loss_and_gradients(monkeypatch, arch):
    """The whole model with its Triton kernels (the MoE glue and the loss, as on a GPU; here through Triton's
    interpreter) against the same model with PyTorch ops, float32."""
    torch.manual_seed(0)
    model = build_model(arch, **SMALL)
    tokens = torch.randint(0, 97, (2, 30))
    results = []
    for triton in (False, True):
        monkeypatch.setattr(device, "uses_triton", lambda x, t=triton: t)
        model.zero_grad()
        out = model(tokens[:, :-1], tokens[:, 1:])
        out.loss.backward()
        results.append([out.loss.detach(), *(p.grad.clone() for p in model.parameters())])
    for torch_value, triton_value in zip(*results):
        assert torch.allclose(torch_value, triton_value, atol=1e-6, rtol=1e-5)


def test_moe_under_dropout_keeps_the_torch_glue(monkeypatch):
    """Dropout acts on each expert's output before the combine, which the fused kernels do not do: in training with
    dropout the MoE takes the PyTorch glue, in eval (dropout off) the fused one."""
    monkeypatch.setattr(device, "uses_triton", lambda x: True)
    import resnetbk.ops.moe_triton as moe_triton

    calls, combine = [], moe_triton.combine
    monkeypatch.setattr(moe_triton, "combine", lambda *args: calls.append(1) or combine(*args))
    moe = MoE(d_model=16, hidden=24, experts=4, top_k=1, n_layers=2, dropout=0.5)
    x = torch.randn(2, 5, 16)
    moe.train()(x)
    assert calls == []
    moe.eval()(x)
    assert calls == [1]


def assert_gpu_moe_paths_agree(monkeypatch, switch: str, dtype=torch.bfloat16):
    """The MoE in dtype on a GPU with ops.device.<switch> returning True, then False: outputs and gradients agree to
    bf16 rounding."""
    torch.manual_seed(0)
    moe = MoE(d_model=256, hidden=512, experts=4, top_k=2, n_layers=2)
    moe = moe.cuda().to(dtype)
    with torch.no_grad():
        moe.fc_bias.normal_(std=0.1)
        moe.proj_bias.normal_(std=0.1)
    x = torch.randn(4, 1000, 256, device="cuda", dtype=dtype, requires_grad=True)
    assert getattr(device, switch)(x)
    results = []
    for on in (True, False):
        monkeypatch.setattr(device, switch, lambda _, on=on: on)
        out, _ = moe(x)
        grads = torch.autograd.grad(out.float().square().sum(), [x, *moe.parameters()])
        results.append([out, *grads])
    for got, want in zip(*results):
        assert ((got.float() - want.float()).norm() / want.float().norm()).item() < 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_glue_on_gpu_matches_the_torch_glue(monkeypatch, dtype):
    """The Triton glue against the PyTorch ops (the fused kernels round once, the ops after each step): bf16 on the
    grouped GEMMs, fp16 (the t4 and v100 profiles) on the padded per-expert path."""
    assert_gpu_moe_paths_agree(monkeypatch, "uses_triton", dtype)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_grouped_moe_on_gpu_matches_the_padded_path_in_bf16(monkeypatch):
    """The CUTLASS grouped GEMMs against one GEMM per expert, same bf16 weights and routing."""
    assert_gpu_moe_paths_agree(monkeypatch, "uses_grouped_gemm")


@pytest.mark.parametrize("arch", registry.names())
def test_compiled_blocks_give_the_same_loss_and_gradients(arch):
    """torch.compile (benchmarks/training/profile_step.py --compile) captures each block, the BK resolvent left outside
    the graph. aot_eager runs the captured graphs without inductor's code generation: fast on CPU."""
    torch.manual_seed(0)
    model = build_model(arch, **SMALL)
    tokens = torch.randint(0, 97, (2, 30))

    def loss_and_grads():
        model.zero_grad()
        loss = model(tokens[:, :-1], tokens[:, 1:]).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss, grads = loss_and_grads()
    for block in model.blocks:
        block.compile(backend="aot_eager")
    compiled_loss, compiled_grads = loss_and_grads()
    assert torch.allclose(loss, compiled_loss, atol=1e-6)
    for g, c in zip(grads, compiled_grads):
        assert torch.allclose(g, c, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_model_on_gpu_is_exactly_causal():
    """The GPU path (grouped GEMMs, Triton resolvent, bf16): changing token t+1 moves the routing of later
    tokens, and so the group sizes of the grouped GEMMs, but leaves every logit up to t bitwise unchanged."""
    from resnetbk.ops.device import uses_grouped_gemm

    torch.manual_seed(0)
    model = build_model("resnetbk", vocab_size=97, d_model=64, n_layers=2, n_heads=4, ffn_hidden=128,
                        max_seq_len=600).cuda().bfloat16().eval()
    assert uses_grouped_gemm(model.embed.weight)
    tokens = torch.randint(0, 97, (2, 600), device="cuda")
    with torch.no_grad():
        before = model(tokens)
        for t in (0, 255, 256, 400, 598):
            changed = tokens.clone()
            changed[:, t + 1] = (changed[:, t + 1] + 1) % 97
            after = model(changed)
            assert torch.equal(before[:, : t + 1], after[:, : t + 1]), t
            assert not torch.equal(before[:, t + 1], after[:, t + 1]), t


@settings(max_examples=40, deadline=None)
@given(pairs=st.lists(st.integers(0, 5), min_size=0, max_size=300))
def test_counting_sort_by_expert_equals_stable_argsort(pairs):
    """The MoE's routing sort against torch's stable argsort: same order, its inverse, and the group sizes."""
    from resnetbk.ops.moe import sort_by_expert

    slots = torch.tensor(pairs, dtype=torch.long)
    order, position, counts = sort_by_expert(slots, 6)
    assert torch.equal(order, torch.argsort(slots, stable=True))
    assert torch.equal(position[order], torch.arange(len(pairs)))
    assert torch.equal(counts, torch.bincount(slots, minlength=6))


@pytest.mark.parametrize("values", [0, 4])
def test_bk_mixer_adds_h0_to_a_bf16_potential_in_float32(monkeypatch, values):
    """In a bf16 model the diagonal a = H0 + v reaching the resolvent is exact in float32: a bf16 sum near -2
    would round v to multiples of 2^-6 (errors up to 0.008)."""
    import resnetbk.layers.bk_mixer as mixer_module

    seen = {}

    def capture(a, b, z, causal=True):
        seen["a"] = a
        return torch.zeros(a.shape, dtype=torch.complex64)

    def capture_with_response(a, b, z, s, out_dtype):
        return capture(a, b, z), torch.zeros(*s.shape, 2, dtype=out_dtype)

    monkeypatch.setattr(mixer_module, "resolvent_diagonal", capture)
    monkeypatch.setattr(mixer_module, "diagonal_and_response", capture_with_response)
    torch.manual_seed(0)
    mixer = mixer_module.BKMixer(32, 4, values=values).bfloat16()
    x = torch.randn(2, 16, 32, dtype=torch.bfloat16)
    mixer(x)
    v = mixer.potential(x).double().transpose(1, 2)
    assert seen["a"].dtype == torch.float32
    assert (seen["a"].double() - (v + mixer_module.H0_DIAGONAL)).abs().max() < 1e-6

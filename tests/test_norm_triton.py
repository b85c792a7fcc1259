"""The fused add + RMSNorm (resnetbk/ops/norm_triton.py) against float64 PyTorch, forward and backward. Without CUDA it
runs through Triton's interpreter (TRITON_INTERPRET=1, set in conftest) at small sizes: widths that are not powers of
two, and row counts that do not divide among the backward's programs and tiles."""

import pytest
import torch
import torch.nn.functional as F

from resnetbk.layers.common import AddRMSNorm
from resnetbk.ops import norm_triton

from conftest import HAS_CUDA, close

DEVICE = "cuda" if HAS_CUDA else "cpu"
EPS = 1e-6


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    """On CPU, backward tiles of one or two rows: several programs, each over several tiles, the last one partial."""
    if not HAS_CUDA:
        monkeypatch.setattr(norm_triton, "TILE", 128)


def reference(x, delta, weight):
    s = x if delta is None else x + delta
    return s, F.rms_norm(s, (s.shape[-1],), weight, EPS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("with_delta", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 9, 48), (3, 7, 100)])
def test_add_rms_norm_matches_float64(dtype, with_delta, shape):
    gen = torch.Generator().manual_seed(shape[-1])
    tensors = [torch.randn(shape, generator=gen), torch.randn(shape, generator=gen),
               1 + torch.randn(shape[-1], generator=gen)]
    # Both outputs reach the loss with their own upstream gradients, as in a block: s feeds the next residual add,
    # n the mixer or the MoE. With no delta, s is x itself and its gradient must still arrive.
    grad_s, grad_n = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    got_x, got_delta, got_w = (t.to(DEVICE, dtype).clone().requires_grad_() for t in tensors)
    s, n = norm_triton.add_rms_norm(got_x, got_delta if with_delta else None, got_w, EPS)
    assert s.dtype == n.dtype == dtype and s.shape == n.shape == shape
    torch.autograd.backward([s, n], [grad_s.to(DEVICE, dtype), grad_n.to(DEVICE, dtype)])
    want_x, want_delta, want_w = (t.to(dtype).double().clone().requires_grad_() for t in tensors)
    want_s, want_n = reference(want_x, want_delta if with_delta else None, want_w)
    torch.autograd.backward([want_s, want_n], [grad_s.to(dtype).double(), grad_n.to(dtype).double()])
    assert close(s, want_s, dtype) and close(n, want_n, dtype)
    assert got_x.grad.dtype == got_w.grad.dtype == dtype
    assert close(got_x.grad, want_x.grad, dtype), "x"
    assert close(got_w.grad, want_w.grad, dtype), "weight"
    if with_delta:
        assert close(got_delta.grad, want_delta.grad, dtype), "delta"
    else:
        assert got_delta.grad is None


def test_unused_sum_and_unused_norm():
    """The final norm drops s; a caller may drop n: backward gets None for that output."""
    x, w = torch.randn(5, 40, device=DEVICE, requires_grad=True), torch.randn(40, device=DEVICE, requires_grad=True)
    _, n = norm_triton.add_rms_norm(x, None, w, EPS)
    n.sum().backward()
    want_x, want_w = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    F.rms_norm(want_x, (40,), want_w, EPS).sum().backward()
    assert close(x.grad, want_x.grad, torch.float32) and close(w.grad, want_w.grad, torch.float32)
    delta = torch.randn(5, 40, device=DEVICE, requires_grad=True)
    x.grad = None
    s, _ = norm_triton.add_rms_norm(x, delta, w, EPS)
    (2 * s).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 2.0)) and torch.equal(delta.grad, torch.full_like(x, 2.0))


def test_module_uses_the_kernel_with_nn_rmsnorms_default_eps(monkeypatch):
    """AddRMSNorm on the Triton path (forced here) gives nn.RMSNorm's result, eps left at its default (the float32
    epsilon for a bf16 input, which is what torch computes in), and keeps nn.RMSNorm's checkpoint keys."""
    from resnetbk.ops import device

    norm = AddRMSNorm(64).to(DEVICE)
    with torch.no_grad():
        norm.weight.normal_()
    x = (1e-3 * torch.randn(3, 64)).to(DEVICE, torch.bfloat16)  # small enough for eps to matter if it were bf16's
    calls, fused = [], norm_triton.add_rms_norm
    monkeypatch.setattr(norm_triton, "add_rms_norm", lambda *args: calls.append(args[-1]) or fused(*args))
    monkeypatch.setattr(device, "uses_triton", lambda t: True)
    s, n = norm.bfloat16()(x)
    assert calls == [torch.finfo(torch.float32).eps] and torch.equal(s, x)
    want = torch.nn.RMSNorm(64).to(DEVICE, torch.bfloat16)
    want.load_state_dict(norm.state_dict())
    assert close(n, want(x).double(), torch.bfloat16)
    assert list(norm.state_dict()) == ["weight"]

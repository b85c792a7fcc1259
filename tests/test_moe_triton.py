"""The fused MoE glue kernels (resnetbk/ops/moe_triton.py) against the same computation in float64 PyTorch, forward and
backward. Without CUDA they run through Triton's interpreter (TRITON_INTERPRET=1, set in conftest) at small sizes,
with widths that are not multiples of the kernels' blocks."""

import pytest
import torch
import torch.nn.functional as F

from resnetbk.ops import moe_triton
from resnetbk.ops.moe import sort_by_expert

from conftest import HAS_CUDA, close

DEVICE = "cuda" if HAS_CUDA else "cpu"


def routing(n_tokens, k, n_experts, seed):
    """A random top-k routing: gates (tokens, k), the expert of each (token, slot) pair, its sorted row, and the
    expert of each sorted row."""
    gen = torch.Generator().manual_seed(seed)
    choice = torch.rand(n_tokens, n_experts, generator=gen).argsort(-1)[:, :k]
    slots = choice.flatten().to(DEVICE)
    order, position, _ = sort_by_expert(slots, n_experts)
    gate = torch.rand(n_tokens, k, generator=gen).to(DEVICE)
    return gate, slots, order, position, slots.index_select(0, order)


def leaves(*tensors, dtype):
    return [t.to(DEVICE, dtype).detach().requires_grad_() for t in tensors]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])  # fp16: the t4 and v100 profiles
@pytest.mark.parametrize("rows,width", [(1, 1), (37, 300), (70, 20)])
def test_bias_gelu(dtype, rows, width):
    gen = torch.Generator().manual_seed(rows)
    h, bias = torch.randn(rows, width, generator=gen), torch.randn(3, width, generator=gen)
    expert = torch.randint(0, 3, (rows,), generator=gen).sort().values.to(DEVICE)
    grad = torch.randn(rows, width, generator=gen)
    h_, bias_ = leaves(h, bias, dtype=dtype)
    out = moe_triton.bias_gelu(h_, bias_, expert)
    assert out.dtype == dtype
    h64, bias64 = leaves(h, bias, dtype=torch.float64)
    ref = F.gelu(h64 + bias64.index_select(0, expert))
    assert close(out, ref, dtype)
    got = torch.autograd.grad(out, [h_, bias_], grad.to(DEVICE, dtype))
    want = torch.autograd.grad(ref, [h64, bias64], grad.to(DEVICE, torch.float64))
    for g, w in zip(got, want):
        assert close(g, w, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])  # fp16: the t4 and v100 profiles
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("with_bias", [True, False])
def test_combine(dtype, k, with_bias):
    n_tokens, width, n_experts = 45, 300, 4
    gate, slots, order, position, expert_of_row = routing(n_tokens, k, n_experts, seed=k)
    gen = torch.Generator().manual_seed(1)
    y, bias = torch.randn(n_tokens * k, width, generator=gen), torch.randn(n_experts, width, generator=gen)
    grad = torch.randn(n_tokens, width, generator=gen)
    y_, bias_ = leaves(y, bias, dtype=dtype)
    (gate_,) = leaves(gate, dtype=torch.float32)
    out = moe_triton.combine(y_, position, gate_, bias_ if with_bias else None, slots, expert_of_row)
    assert out.shape == (n_tokens, width) and out.dtype == dtype
    y64, bias64, gate64 = leaves(y, bias, gate, dtype=torch.float64)
    per_slot = y64.index_select(0, position) + (bias64.index_select(0, slots) if with_bias else 0)
    ref = (per_slot.view(n_tokens, k, width) * gate64[..., None]).sum(1)
    assert close(out, ref, dtype)
    inputs, inputs64 = [y_, gate_] + [bias_] * with_bias, [y64, gate64] + [bias64] * with_bias
    got = torch.autograd.grad(out, inputs, grad.to(DEVICE, dtype))
    want = torch.autograd.grad(ref, inputs64, grad.to(DEVICE, torch.float64))
    for name, g, w in zip(["y", "gate", "bias"], got, want):
        assert close(g, w, dtype), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])  # fp16: the t4 and v100 profiles
@pytest.mark.parametrize("k", [1, 2])
def test_dispatch(dtype, k):
    n_tokens, width = 45, 300
    _, _, order, position, _ = routing(n_tokens, k, 4, seed=k)
    gen = torch.Generator().manual_seed(2)
    x, grad = torch.randn(n_tokens, width, generator=gen), torch.randn(n_tokens * k, width, generator=gen)
    (x_,) = leaves(x, dtype=dtype)
    rows = moe_triton.dispatch(x_, order, position, k)
    assert torch.equal(rows, x_.detach().index_select(0, order // k))
    (x64,) = leaves(x, dtype=torch.float64)
    ref = x64.index_select(0, order // k)
    (got,) = torch.autograd.grad(rows, [x_], grad.to(DEVICE, dtype))
    (want,) = torch.autograd.grad(ref, [x64], grad.to(DEVICE, torch.float64))
    assert close(got, want, dtype)

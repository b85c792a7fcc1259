"""The BK response against float64 dense solves, its exact gradient, its bound, and the Triton kernels.

Without CUDA the kernels run through Triton's interpreter (TRITON_INTERPRET=1, set in conftest) at small sizes with
short chunks, so that every path runs: several chunks, the look-back over published maps (LOOKBACK_TEST hides the
inclusive values), padding past the end. With CUDA they run compiled, in float32 and bf16.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from resnetbk import resolvent_response
from resnetbk.ops import bk_response_triton
from resnetbk.ops.bk_response import _reference_backward, _reference_forward

from conftest import HAS_CUDA

DEVICE = "cuda" if HAS_CUDA else "cpu"
Z_VALUES = [1j, 0.3 + 0.1j, -1.5 + 0.01j, 2.0 + 3.0j]


def hamiltonian(a, b, z):
    n = a.shape[-1]
    h = torch.diag(a.to(torch.complex128))
    if n > 1:
        b = b.to(torch.complex128)
        h = h + torch.diag(b, 1) + torch.diag(b, -1)
    return h - z * torch.eye(n, dtype=torch.complex128)


def dense_reference(a, b, z, s, causal):
    """(H - z)^-1 s by torch.linalg.solve in complex128: the full system, or each leading block's last row."""
    m, s = hamiltonian(a, b, z), s.to(torch.complex128)
    if not causal:
        return torch.linalg.solve(m, s)
    return torch.stack([torch.linalg.solve(m[: i + 1, : i + 1], s[: i + 1])[i] for i in range(a.shape[-1])])


def rel_err(x, ref):
    return 0.0 if ref.numel() == 0 else ((x.to(torch.complex128).cpu() - ref.cpu()).abs().max()
                                         / ref.abs().max()).item()


@pytest.mark.parametrize("n", [1, 2, 3, 17, 256])
@pytest.mark.parametrize("z", Z_VALUES)
@pytest.mark.parametrize("constant_b", [False, True])
@pytest.mark.parametrize("causal", [True, False])
def test_matches_dense_solve(n, z, constant_b, causal):
    gen = torch.Generator().manual_seed(n * 7 + int(abs(z) * 100))
    a = torch.empty(n, dtype=torch.float64).uniform_(-4, 4, generator=gen)
    b = 0.8 if constant_b else 2 * torch.rand(max(n - 1, 0), dtype=torch.float64, generator=gen)
    s = torch.randn(n, 5, dtype=torch.float64, generator=gen)
    ref = dense_reference(a, torch.full((max(n - 1, 0),), 0.8, dtype=torch.float64) if constant_b else b, z, s, causal)
    y = resolvent_response(a, b, z, s, causal=causal)
    assert y.dtype == torch.complex128 and rel_err(y, ref) < 1e-10
    y32 = resolvent_response(a.float(), b if constant_b else b.float(), z, s.float(), causal=causal)
    assert y32.dtype == torch.complex64 and rel_err(y32, ref) < 1e-4


def test_unit_source_reads_the_diagonal_and_causality():
    """s = e_i gives y_i = g_i (the diagonal mixer is this special case), and y_t sees positions <= t only."""
    from resnetbk import resolvent_diagonal

    gen = torch.Generator().manual_seed(2)
    a = torch.randn(3, 30, dtype=torch.float64, generator=gen)
    b = torch.rand(3, 29, dtype=torch.float64, generator=gen)
    eye = torch.eye(30, dtype=torch.float64).expand(3, 30, 30)
    assert torch.allclose(torch.diagonal(resolvent_response(a, b, 0.5j, eye), dim1=-2, dim2=-1),
                          resolvent_diagonal(a, b, 0.5j))
    s = torch.randn(3, 30, 4, dtype=torch.float64, generator=gen)
    y = resolvent_response(a, b, 0.5j, s)
    a2, b2, s2 = a.clone(), b.clone(), s.clone()
    a2[:, 15:] += 1.0
    b2[:, 14:] += 0.5
    s2[:, 15:] += 1.0
    y2 = resolvent_response(a2, b2, 0.5j, s2)
    assert torch.equal(y[:, :15], y2[:, :15]) and not torch.allclose(y[:, 15:], y2[:, 15:])


def test_batch_broadcasting_and_per_head_z():
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(3, 9, dtype=torch.float64, generator=gen)  # one system per head, shared by the batch
    s = torch.randn(2, 3, 9, 4, dtype=torch.float64, generator=gen)
    z = torch.tensor([0.5 + 1j, -0.2 + 0.3j, 1.0 + 0.05j], dtype=torch.complex128)
    y = resolvent_response(a, 0.7, z, s)
    assert y.shape == (2, 3, 9, 4)
    for i in range(2):
        for h in range(3):
            ref = dense_reference(a[h], torch.full((8,), 0.7, dtype=torch.float64), complex(z[h]), s[i, h], True)
            assert rel_err(y[i, h], ref) < 1e-10


@pytest.mark.parametrize("causal", [True, False])
def test_gradcheck_a_b_z_s(causal):
    gen = torch.Generator().manual_seed(3)
    a = torch.empty(2, 7, dtype=torch.float64).uniform_(-3, 3, generator=gen).requires_grad_()
    b = (torch.rand(2, 6, dtype=torch.float64, generator=gen) * 1.5).requires_grad_()
    z = torch.tensor([0.2 + 0.7j, -0.4 + 0.3j], dtype=torch.complex128, requires_grad=True)
    s = torch.randn(2, 7, 3, dtype=torch.float64, generator=gen).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, z, s: resolvent_response(a, b, z, s, causal=causal), (a, b, z, s))
    z0 = torch.tensor(0.1 + 0.5j, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, z, s: resolvent_response(a, 1.0, z, s, causal=causal), (a, z0, s))


@pytest.mark.parametrize("im_z", [1e-2, 1e-3])
def test_float32_long_sequence_down_to_the_smallest_im_z(im_z):
    """float32 against the float64 recursion (itself checked against dense solves above), N = 4096, down to the
    configured minimum Im z (model.bk_im_z_min = 1e-3): the error bound grows like 1 / Im z (design note)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.empty(4, 4096, dtype=torch.float64).uniform_(-4, 4, generator=gen)
    b = 2 * torch.rand(4, 4095, dtype=torch.float64, generator=gen)
    s = torch.randn(4, 4096, 8, dtype=torch.float64, generator=gen)
    ref = resolvent_response(a, b, complex(0, im_z), s)
    assert rel_err(resolvent_response(a.float(), b.float(), complex(0, im_z), s.float()), ref) < 1e-4


@settings(max_examples=60, deadline=None)
@given(
    a=st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=40),
    b_scale=st.floats(0, 1e2),
    re_z=st.floats(-1e3, 1e3),
    im_z=st.floats(1e-3, 1e3),
    s_scale=st.floats(1e-3, 1e3),
)
def test_any_finite_input_gives_bounded_output(a, b_scale, re_z, im_z, s_scale):
    """|y_i| <= ||s_0..i||_2 / Im z per channel, whatever the real inputs."""
    a = torch.tensor(a, dtype=torch.float64)
    gen = torch.Generator().manual_seed(len(a))
    b = b_scale * torch.rand(len(a) - 1, dtype=torch.float64, generator=gen)
    s = s_scale * torch.randn(len(a), 3, dtype=torch.float64, generator=gen)
    y = resolvent_response(a.float(), b.float(), complex(re_z, im_z), s.float())
    assert torch.isfinite(torch.view_as_real(y)).all()
    bound = torch.sqrt(torch.cumsum(s * s, 0)) / im_z
    assert (y.abs().double() <= bound * (1 + 1e-4) + 1e-30).all()


def test_rejects_bad_inputs():
    a = torch.randn(2, 5)
    with pytest.raises(TypeError, match="s must be a real"):
        resolvent_response(a, 1.0, 1j, torch.randn(2, 5, 3, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"s must have shape \(\.\.\., N, C\) with N = 5"):
        resolvent_response(a, 1.0, 1j, torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"s must have shape"):
        resolvent_response(a, 1.0, 1j, torch.randn(5))
    with pytest.raises(ValueError, match="does not broadcast"):
        resolvent_response(a, 1.0, 1j, torch.randn(3, 5, 2))
    with pytest.raises(ValueError, match="N-1"):
        resolvent_response(a, torch.rand(2, 5), 1j, torch.randn(2, 5, 2))
    with pytest.raises(ValueError, match="Im z"):
        resolvent_response(a, 1.0, 0.5, torch.randn(2, 5, 2))
    with pytest.raises(TypeError, match="a must be"):
        resolvent_response(torch.arange(5), 1.0, 1j, torch.randn(5, 2))
    with pytest.raises(ValueError, match="backend"):
        resolvent_response(a, 1.0, 1j, torch.randn(2, 5, 2), backend="cuda")
    assert resolvent_response(torch.randn(2, 0), 1.0, 1j, torch.randn(2, 0, 3)).shape == (2, 0, 3)


# ------------------------------------------------------------------------------------------ Triton kernels


@pytest.fixture
def kernel_sizes():
    """Chunks of 4 or 8 positions on CPU (several per row at interpreter-friendly lengths); the wrapper's own
    choice on a GPU."""
    return {} if HAS_CUDA else {"chunk": 4, "tile": 16}


def kernel_case(rows, n, c, constant_b, im_z, s_dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    o, h = rows
    a = torch.empty(o, h, n, dtype=torch.float64).uniform_(-4, 4, generator=gen)
    z = torch.complex(torch.randn(h, dtype=torch.float64, generator=gen), torch.full((h,), im_z, dtype=torch.float64))
    from resnetbk import resolvent_diagonal

    g = resolvent_diagonal(a, 1.0, z.expand(o, h))
    b = 1.3 if constant_b else 2 * torch.rand(o, h, n, dtype=torch.float64, generator=gen)
    s = torch.randn(o, h, n, c, dtype=torch.float64, generator=gen).to(s_dtype).double()
    ybar = torch.randn(o, h, n, c, 2, dtype=torch.float64, generator=gen)
    return g, b, s, ybar


@pytest.mark.parametrize("n,c", [(1, 3), (5, 1), (8, 8), (23, 3)])  # one chunk, padding, whole chunks, six chunks
@pytest.mark.parametrize("constant_b", [False, True])
@pytest.mark.parametrize("lookback_test", [0, 1, 2])
def test_kernels_match_reference(n, c, constant_b, lookback_test, kernel_sizes):
    g, b, s, ybar = kernel_case((2, 3), n, c, constant_b, 0.1, torch.float32, seed=n + 10 * c)
    y_ref = _reference_forward(g, b, s)
    grads_ref = _reference_backward(g, b, s, y_ref, torch.view_as_complex(ybar))
    dev = lambda t: t.to(DEVICE) if isinstance(t, torch.Tensor) else t  # noqa: E731
    g32, b32 = dev(g.to(torch.complex64)), dev(b if constant_b else b.float())
    s32, ybar32 = dev(s.float()), dev(ybar.float())
    y = bk_response_triton.response_forward(g32, b32, s32, torch.float32, lookback_test=lookback_test, **kernel_sizes)
    assert rel_err(torch.view_as_complex(y), y_ref) < 1e-5
    grad_g, grad_b, grad_s = bk_response_triton.response_backward(g32, b32, s32, y, ybar32, True,
                                                                  lookback_test=lookback_test, **kernel_sizes)
    assert rel_err(grad_g, grads_ref[0]) < 1e-5
    assert rel_err(grad_s.double(), grads_ref[2]) < 1e-5
    if not constant_b:
        assert grad_b is not None and rel_err(grad_b[..., 1:].double(), grads_ref[1][..., 1:]) < 1e-5


def test_kernels_do_not_depend_on_which_chunks_finished_first(kernel_sizes):
    """Whether a chunk meets its neighbour's inclusive value or walks further back over published maps, it applies
    the maps in sequence order: bitwise the same result (bitwise resume and graph replays rely on it)."""
    g, b, s, ybar = kernel_case((2, 3), 23, 3, False, 0.1, torch.float32, seed=9)
    g, b, s, ybar = g.to(DEVICE, torch.complex64), b.to(DEVICE).float(), s.to(DEVICE).float(), ybar.to(DEVICE).float()
    outs = []
    for lookback_test in (0, 1, 2):
        y = bk_response_triton.response_forward(g, b, s, torch.float32, lookback_test=lookback_test, **kernel_sizes)
        grads = bk_response_triton.response_backward(g, b, s, y, ybar, True, lookback_test=lookback_test,
                                                     **kernel_sizes)
        outs.append((y, *grads))
    for other in outs[1:]:
        assert all(torch.equal(x, y) for x, y in zip(outs[0], other))


@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
def test_kernels_in_half_precision(out_dtype, kernel_sizes):
    """s, y and their gradients in bf16 / fp16 (the mixer's compute dtype), computed in float32."""
    g, b, s, ybar = kernel_case((2, 3), 21, 4, False, 0.5, out_dtype, seed=5)
    ybar = ybar.to(out_dtype).double()
    y_ref = _reference_forward(g, b, s)
    grads_ref = _reference_backward(g, b, s, y_ref, torch.view_as_complex(ybar))
    g32, b32 = g.to(DEVICE, torch.complex64), b.to(DEVICE, torch.float32)
    s_h, ybar_h = s.to(DEVICE, out_dtype), ybar.to(DEVICE, out_dtype)
    y = bk_response_triton.response_forward(g32, b32, s_h, out_dtype, **kernel_sizes)
    assert y.dtype == out_dtype and rel_err(torch.view_as_complex(y.float()), y_ref) < 1e-2
    grad_g, grad_b, grad_s = bk_response_triton.response_backward(g32, b32, s_h, y, ybar_h, True, **kernel_sizes)
    assert grad_s.dtype == out_dtype and rel_err(grad_s.double(), grads_ref[2]) < 1e-2
    assert rel_err(grad_g, grads_ref[0]) < 2e-2  # uses the rounded y of the forward


def test_mixer_layout_is_read_in_place():
    """The mixer passes (B, heads, N, C) views of (B, N, heads, C) tensors: y comes back in that memory order,
    so its features are a view, and the result does not depend on the layout."""
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(2, 13, 3, 4, generator=gen).to(DEVICE)  # (B, N, h, C)
    s = base.transpose(1, 2)
    a = torch.empty(2, 13, 3).uniform_(-4, 4, generator=gen).to(DEVICE).transpose(1, 2)
    z = torch.complex(torch.zeros(3), torch.full((3,), 0.5)).to(DEVICE)
    y = resolvent_response(a, 1.0, z, s, backend="triton")
    ref = resolvent_response(a.double(), 1.0, z.to(torch.complex128), s.double(), backend="reference")
    assert rel_err(y, ref) < 1e-5
    assert y.transpose(1, 2).is_contiguous()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("n,c", [(1024, 16), (4096, 64), (16384, 32)])
def test_kernels_at_model_sizes_on_gpu(n, c):
    """The wrapper's own chunk and tile choice at the lengths the benchmarks use, forward and backward, against the
    float64 reference on the GPU, Im z down to model.bk_im_z_min."""
    g, b, s, ybar = kernel_case((4, 4), n, c, False, 1e-3, torch.float32, seed=n)
    g, b, s, ybar = g.cuda(), b.cuda(), s.cuda(), ybar.cuda()
    y_ref = _reference_forward(g, b, s)
    grads_ref = _reference_backward(g, b, s, y_ref, torch.view_as_complex(ybar))
    y = bk_response_triton.response_forward(g.to(torch.complex64), b.float(), s.float(), torch.float32)
    assert rel_err(torch.view_as_complex(y), y_ref) < 1e-4
    grad_g, grad_b, grad_s = bk_response_triton.response_backward(g.to(torch.complex64), b.float(), s.float(), y,
                                                                  ybar.float(), True)
    for got, want in ((grad_g, grads_ref[0]), (grad_s.double(), grads_ref[2]),
                      (grad_b[..., 1:].double(), grads_ref[1][..., 1:])):
        assert rel_err(got, want) < 1e-4


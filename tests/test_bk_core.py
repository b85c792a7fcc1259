"""BK-Core against a float64 dense inverse, exact gradients, and the stability bound."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from resnetbk.ops.bk_core import resolvent_diagonal

Z_VALUES = [1j, 0.3 + 0.1j, -1.5 + 0.01j, 2.0 + 3.0j]


def dense_reference(a, b, z, causal):
    """Diagonal of (H - z)^-1 by torch.linalg.inv in complex128: full matrix, or each leading block."""
    n = a.shape[-1]
    h = torch.diag(a.to(torch.complex128))
    if n > 1:
        b = b.to(torch.complex128)
        h = h + torch.diag(b, 1) + torch.diag(b, -1)
    shifted = h - z * torch.eye(n, dtype=torch.complex128)
    if not causal:
        return torch.diagonal(torch.linalg.inv(shifted))
    return torch.stack([torch.linalg.inv(shifted[: i + 1, : i + 1])[i, i] for i in range(n)])


def rel_err(x, ref):
    return ((x.to(torch.complex128) - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("n", [1, 2, 3, 17, 256])
@pytest.mark.parametrize("z", Z_VALUES)
@pytest.mark.parametrize("causal", [True, False])
def test_matches_dense_inverse(n, z, causal):
    gen = torch.Generator().manual_seed(n * 7 + int(abs(z) * 100))
    a = torch.empty(n, dtype=torch.float64).uniform_(-4, 4, generator=gen)
    b = 2 * torch.rand(max(n - 1, 0), dtype=torch.float64, generator=gen)
    ref = dense_reference(a, b, z, causal)
    assert rel_err(resolvent_diagonal(a, b, z, causal=causal), ref) < 1e-10
    assert rel_err(resolvent_diagonal(a.float(), b.float(), z, causal=causal), ref) < 1e-4


def test_causal_entry_depends_only_on_the_past():
    a = torch.randn(3, 40, dtype=torch.float64)
    b = torch.rand(3, 39, dtype=torch.float64)
    g = resolvent_diagonal(a, b, 1j)
    a2, b2 = a.clone(), b.clone()
    a2[:, 20:] += 1.0
    b2[:, 19:] += 0.5
    g2 = resolvent_diagonal(a2, b2, 1j)
    assert torch.equal(g[:, :20], g2[:, :20])
    assert not torch.allclose(g[:, 20:], g2[:, 20:])
    # ... while the bidirectional diagonal sees the whole sequence.
    assert not torch.allclose(resolvent_diagonal(a, b, 1j, causal=False)[:, :20],
                              resolvent_diagonal(a2, b2, 1j, causal=False)[:, :20])


def test_batch_shapes_constant_coupling_and_per_row_z():
    a = torch.randn(2, 3, 9, dtype=torch.float64)
    z = torch.tensor([0.5 + 1j, -0.2 + 0.3j, 1.0 + 0.05j], dtype=torch.complex128)  # one z per "head"
    g = resolvent_diagonal(a, 0.7, z)
    assert g.shape == (2, 3, 9) and g.dtype == torch.complex128
    for i in range(2):
        for h in range(3):
            ref = dense_reference(a[i, h], torch.full((8,), 0.7, dtype=torch.float64), complex(z[h]), True)
            assert rel_err(g[i, h], ref) < 1e-10
    b = torch.full((2, 3, 8), 0.7, dtype=torch.float64)
    assert torch.allclose(resolvent_diagonal(a, b, z), g)


@pytest.mark.parametrize("causal", [True, False])
def test_gradcheck_a_b_z(causal):
    gen = torch.Generator().manual_seed(3)
    a = torch.empty(2, 7, dtype=torch.float64).uniform_(-3, 3, generator=gen).requires_grad_()
    b = (torch.rand(2, 6, dtype=torch.float64, generator=gen) * 1.5).requires_grad_()
    z = torch.tensor([0.2 + 0.7j, -0.4 + 0.3j], dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, z: resolvent_diagonal(a, b, z, causal=causal), (a, b, z))
    # z broadcast from a scalar tensor: the gradient is summed over the batch.
    z0 = torch.tensor(0.1 + 0.5j, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, z: resolvent_diagonal(a, 1.0, z, causal=causal), (a, z0))


def test_float32_long_sequence_small_im_z():
    """float32 stays within 1e-4 of the float64 recursion (itself checked against the dense inverse)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.empty(4, 4096, dtype=torch.float64).uniform_(-4, 4, generator=gen)
    b = 2 * torch.rand(4, 4095, dtype=torch.float64, generator=gen)
    for causal in (True, False):
        ref = resolvent_diagonal(a, b, 0.01j, causal=causal)
        assert rel_err(resolvent_diagonal(a.float(), b.float(), 0.01j, causal=causal), ref) < 1e-4


@pytest.mark.parametrize("z", [0.5, 1 - 1j, complex(0, 0)])
def test_rejects_im_z_not_positive(z):
    with pytest.raises(ValueError, match="Im z"):
        resolvent_diagonal(torch.randn(5), 1.0, z)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="N-1"):
        resolvent_diagonal(torch.randn(2, 5), torch.rand(2, 5), 1j)
    with pytest.raises(ValueError, match="broadcast"):
        resolvent_diagonal(torch.randn(2, 5), 1.0, torch.tensor([1j, 1j, 1j]))
    with pytest.raises(TypeError):
        resolvent_diagonal(torch.randn(5, dtype=torch.complex64), 1.0, 1j)


@settings(max_examples=60, deadline=None)
@given(
    a=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=40),
    b_scale=st.floats(0, 1e3),
    re_z=st.floats(-1e3, 1e3),
    im_z=st.floats(1e-3, 1e3),
    causal=st.booleans(),
)
def test_any_finite_input_gives_bounded_output(a, b_scale, re_z, im_z, causal):
    a = torch.tensor(a, dtype=torch.float32)
    b = b_scale * torch.rand(len(a) - 1, generator=torch.Generator().manual_seed(len(a)))
    g = resolvent_diagonal(a, b, complex(re_z, im_z), causal=causal)
    assert torch.isfinite(g.real).all() and torch.isfinite(g.imag).all()
    assert (g.abs() <= (1 / im_z) * (1 + 1e-5)).all()
    assert (g.imag >= 0).all()

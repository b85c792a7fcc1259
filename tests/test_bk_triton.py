"""The Triton kernels against the float64 reference, forward and backward.

Without CUDA they run through Triton's interpreter (TRITON_INTERPRET=1, set in conftest) at small sizes
with short chunks and halos, so that every path runs: the forward's certified start and its wait for the
previous chunk, the backward's look-back over published maps. With CUDA they run compiled, also at the
sizes the issue names.
"""

import pytest
import torch

from resnetbk.ops import bk_triton
from resnetbk.ops.bk_core import resolvent_diagonal

from conftest import HAS_CUDA

DEVICE = "cuda" if HAS_CUDA else "cpu"


@pytest.fixture(autouse=True)
def short_chunks(monkeypatch):
    if not HAS_CUDA:
        monkeypatch.setattr(bk_triton, "CHUNK", 8)  # several chunks at interpreter-friendly lengths
        monkeypatch.setattr(bk_triton, "HALO", 16)  # halos that start after position 0 from N = 24 on


def rel(x, ref):
    return 0.0 if ref.numel() == 0 else ((x.double().cpu() - ref.cpu()).abs().max() / ref.abs().max().cpu()).item()


def compare(n, im_z, constant_b, causal, rows=(3, 2), seed=0):
    """Max relative error of (g, grad a, grad b, grad z) between Triton float32 and the float64 reference."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.empty(*rows, n, dtype=torch.float64).uniform_(-4, 4, generator=gen)
    b = 1.3 if constant_b else 2 * torch.rand(*rows, max(n - 1, 0), dtype=torch.float64, generator=gen)
    z = torch.complex(torch.randn(rows[-1], dtype=torch.float64, generator=gen),
                      torch.full((rows[-1],), im_z, dtype=torch.float64))
    w = torch.complex(torch.randn(*rows, n, dtype=torch.float64, generator=gen),
                      torch.randn(*rows, n, dtype=torch.float64, generator=gen))
    errors = []
    grads = []
    for dtype, backend in ((torch.float64, "reference"), (torch.float32, "triton")):
        a_ = a.to(DEVICE, dtype).detach().clone().requires_grad_()
        b_ = b if constant_b else b.to(DEVICE, dtype).detach().clone().requires_grad_()
        z_ = z.to(DEVICE,
                  torch.complex128 if dtype == torch.float64 else torch.complex64).detach().clone().requires_grad_()
        g = resolvent_diagonal(a_, b_, z_, causal=causal, backend=backend)
        (g * w.to(DEVICE, g.dtype)).real.sum().backward()
        grads.append([g.detach(), a_.grad, z_.grad] + ([] if constant_b else [b_.grad]))
    for fast, ref in zip(grads[1], grads[0]):
        errors.append(rel(torch.view_as_real(fast) if fast.is_complex() else fast,
                          torch.view_as_real(ref) if ref.is_complex() else ref))
    return max(errors)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 40])
@pytest.mark.parametrize("im_z", [1.0, 0.1, 0.01])
@pytest.mark.parametrize("constant_b", [False, True])
def test_causal_matches_reference(n, im_z, constant_b):
    assert compare(n, im_z, constant_b, causal=True) < 1e-4


@pytest.mark.parametrize("n", [1, 9, 40])
@pytest.mark.parametrize("constant_b", [False, True])
def test_bidirectional_matches_reference(n, constant_b):
    assert compare(n, 0.05, constant_b, causal=False) < 1e-4


def test_model_layout_is_read_in_place_and_written_in_the_same_order():
    """The mixer passes (B, heads, N) views of (B, N, heads) tensors: results must not depend on layout."""
    gen = torch.Generator().manual_seed(1)
    base = torch.empty(2, 17, 4).uniform_(-4, 4, generator=gen).to(DEVICE)  # (B, N, h)
    a = base.transpose(1, 2)  # (B, h, N) view
    b = (2 * torch.rand(2, 16, 4, generator=gen)).to(DEVICE).transpose(1, 2)
    z = torch.complex(torch.zeros(4), torch.full((4,), 0.5)).to(DEVICE)
    g = resolvent_diagonal(a, b, z, backend="triton")
    ref = resolvent_diagonal(a.contiguous().double(), b.contiguous().double(), z.to(torch.complex128),
                             backend="reference")
    assert rel(torch.view_as_real(g), torch.view_as_real(ref)) < 1e-5
    assert g.transpose(1, 2).is_contiguous()  # (B, N, h) memory order, so the mixer's features are a view


def test_auto_backend_and_errors():
    a = torch.randn(2, 5)
    with pytest.raises(ValueError, match="backend"):
        resolvent_diagonal(a, 1.0, 1j, backend="cuda")
    with pytest.raises(ValueError, match="float32"):
        resolvent_diagonal(a.double(), 1.0, 1j, backend="triton")


def random_rows(n, im_z, rows=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.empty(1, rows, n).uniform_(-4, 4, generator=gen)
    beta = torch.nn.functional.pad((2 * torch.rand(1, rows, n - 1, generator=gen)) ** 2, (1, 0))
    z = torch.complex(torch.randn(rows, generator=gen), torch.full((rows,), im_z))
    return a.to(DEVICE), beta.to(DEVICE), z.to(DEVICE)


def reference_of(a, beta, z):
    """The float64 reference for random_rows' (a, beta = b^2, z)."""
    return resolvent_diagonal(a.double().cpu(), beta[..., 1:].sqrt().double().cpu(), z.cpu().to(torch.complex128)[None],
                              backend="reference")


@pytest.mark.parametrize("im_z", [1.0, 0.01])
def test_forward_certified_and_waiting_chunks_agree_with_the_reference(im_z, monkeypatch):
    """Chunks start from the halo's certificate where it holds and wait for their predecessor otherwise;
    both give the sequential answer. cert_tol < 0 makes every chunk after the first wait."""
    monkeypatch.setattr(bk_triton, "MAX_HALO", bk_triton.HALO)  # no halo extension: waiting must happen
    a, beta, z = random_rows(96, im_z)
    ref = reference_of(a, beta, z)
    for tol in (bk_triton.CERT_TOL, -1.0):
        g, flags = bk_triton.causal_forward(a, beta, z, cert_tol=tol, return_flags=True)
        assert rel(torch.view_as_real(g), torch.view_as_real(ref)) < 1e-5
        assert (flags[:, 0] == 1).all()
        if tol < 0:
            assert (flags[:, 1:] == 2).all()
        else:
            exact = torch.arange(flags.shape[1]) * bk_triton.CHUNK <= bk_triton.HALO  # halos reaching position 0
            assert (flags[:, exact] == 1).all()
            if im_z == 1.0 and not HAS_CUDA:
                # Im z = 1 contracts fast enough for a 16-position halo to certify every chunk.
                assert (flags == 1).all()


def test_uncertified_rows_extend_their_halo_instead_of_waiting():
    """With a halo too short for Im z = 0.01, extension (4x per round, up to MAX_HALO) certifies every chunk."""
    a, beta, z = random_rows(96, 0.01)
    ref = reference_of(a, beta, z)
    g, flags = bk_triton.causal_forward(a, beta, z, cert_tol=0.0, return_flags=True)  # only rank-one maps certify
    assert (flags == 1).all()
    assert rel(torch.view_as_real(g), torch.view_as_real(ref)) < 1e-5


def test_zero_couplings_certify_at_once():
    """With b = 0 every position is independent: the halo's map is constant and no chunk waits."""
    a, _, z = random_rows(96, 0.01)
    g, flags = bk_triton.causal_forward(a, 0.0, z, return_flags=True)
    assert (flags == 1).all()
    expected = 1 / (a.cpu().double() - z.cpu().to(torch.complex128)[None, :, None])
    assert rel(torch.view_as_real(g), torch.view_as_real(expected)) < 1e-6


def test_backward_look_back_over_published_maps_gives_the_same_gradients():
    """Hiding every other chunk's mu (or all of them) makes chunks compose published maps: same result."""
    a, beta, z = random_rows(61, 0.1)
    g = bk_triton.causal_forward(a, beta, z)
    gbar = torch.complex(torch.randn(g.shape), torch.randn(g.shape)).to(DEVICE)
    base = bk_triton.causal_backward(g, gbar, beta, True)
    for mode in (1, 2):
        other = bk_triton.causal_backward(g, gbar, beta, True, lookback_test=mode)
        for x, y in zip(base, other):
            assert rel(torch.view_as_real(y) if y.is_complex() else y,
                       (torch.view_as_real(x) if x.is_complex() else x).double()) < 1e-6


def test_chunk_must_be_a_multiple_of_the_group():
    a, beta, z = random_rows(16, 1.0)
    with pytest.raises(ValueError, match="multiple of 8"):
        bk_triton.causal_forward(a, beta, z, chunk=12)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("n", [1000, 4096, 65536])
@pytest.mark.parametrize("im_z", [1.0, 0.1, 0.01])
def test_long_sequences_on_gpu(n, im_z):
    for causal in (True, False):
        assert compare(n, im_z, False, causal=causal, rows=(1, 2)) < 1e-4


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_model_gradients_agree_between_backends_on_gpu(monkeypatch):
    """The multi-head selective mixer trains through the kernels: same loss and gradients as the reference."""
    import resnetbk.layers.bk_mixer as mixer_module
    from resnetbk import build_model

    torch.manual_seed(0)
    model = build_model("resnetbk", vocab_size=101, d_model=64, n_layers=2, n_heads=8, ffn_hidden=128,
                        max_seq_len=300, bk_selective=True).cuda()
    tokens = torch.randint(0, 101, (4, 300), device="cuda")
    results = []
    for backend in ("triton", "reference"):
        monkeypatch.setattr(mixer_module, "resolvent_diagonal",
                            lambda a, b, z, causal=True, _b=backend: resolvent_diagonal(a, b, z, causal, backend=_b))
        model.zero_grad()
        loss = model(tokens[:, :-1], tokens[:, 1:]).loss
        loss.backward()
        results.append((loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])))
    (loss_t, grad_t), (loss_r, grad_r) = results
    assert abs(loss_t - loss_r) < 1e-5
    assert ((grad_t - grad_r).norm() / grad_r.norm()).item() < 1e-4

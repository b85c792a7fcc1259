"""The fused cross-entropy (resnetbk/ops/loss_triton.py) against F.cross_entropy in float64, forward and backward.
Without CUDA it runs through Triton's interpreter (TRITON_INTERPRET=1, set in conftest) with a short vocabulary
block, so that rows span several blocks and end in a partial one."""

import pytest
import torch
import torch.nn.functional as F

from resnetbk.ops import loss_triton

from conftest import HAS_CUDA

DEVICE = "cuda" if HAS_CUDA else "cpu"


@pytest.fixture(autouse=True)
def short_blocks(monkeypatch):
    if not HAS_CUDA:
        monkeypatch.setattr(loss_triton, "BLOCK_V", 64)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("vocab", [1, 63, 200])
@pytest.mark.parametrize("ignored", [False, True])
def test_cross_entropy_matches_float64(dtype, tolerance, vocab, ignored):
    gen = torch.Generator().manual_seed(vocab)
    logits = 4 * torch.randn(37, vocab, generator=gen)
    targets = torch.randint(0, vocab, (37,), generator=gen)
    if ignored:
        targets[::3] = loss_triton.IGNORE_INDEX
    upstream = 0.7  # the gradient the loss receives, e.g. 1 / gradient accumulation steps
    got_logits = logits.to(DEVICE, dtype).detach().clone().requires_grad_()
    loss = loss_triton.cross_entropy(got_logits, targets.to(DEVICE))
    assert loss.dtype == torch.float32
    (loss * upstream).backward()
    want_logits = logits.to(DEVICE, dtype).double().detach().requires_grad_()
    want = F.cross_entropy(want_logits, targets.to(DEVICE))
    (want * upstream).backward()
    assert abs(loss.item() - want.item()) < tolerance * max(1.0, abs(want.item()))
    assert got_logits.grad.dtype == dtype
    error = (got_logits.grad.double() - want_logits.grad).abs().max() / want_logits.grad.abs().max().clamp(min=1e-12)
    assert error.item() < tolerance


def test_rows_with_a_stride_and_the_last_logit_as_target():
    logits = torch.randn(6, 130, generator=torch.Generator().manual_seed(0)).to(DEVICE)[:, :100]  # rows 130 apart
    targets = torch.tensor([99, 0, 50, 99, 1, 98], device=DEVICE)
    assert loss_triton.cross_entropy(logits, targets).item() == pytest.approx(F.cross_entropy(logits, targets).item(),
                                                                           rel=1e-6)

"""Cross-entropy of the LM head's logits as two Triton kernels, for the training loss on a GPU.

`F.cross_entropy(logits.float(), targets)` makes four passes over a (tokens x vocabulary) tensor in forward (the
float32 copy, log-softmax, the loss's gather) and as many in backward, and keeps two float32 copies of the logits for
it: at `small`'s 32 x 1024 tokens and 32k vocabulary, 23 ms of a 89 ms step on an H100 and 8 GiB (docs/performance.md).
Here forward reads the logits once and keeps one float per token (the log-sum-exp); backward reads them once more
and writes their gradient, softmax - one_hot, scaled by the incoming gradient over the number of targets. Both
compute in float32 whatever the logits' dtype. Targets equal to IGNORE_INDEX count for nothing, as in F.cross_entropy.

Why not a library: Liger-Kernel's cross-entropy writes the gradient over the logits in forward (the model returns
them) and reads the incoming gradient on the host in backward (a synchronisation per step).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_V = 2048
IGNORE_INDEX = -100  # F.cross_entropy's default


@triton.jit
def _ce_fwd(logits_ptr, targets_ptr, loss_ptr, lse_ptr, V, stride, IGNORE: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = logits_ptr + row.to(tl.int64) * stride
    cols = tl.arange(0, BLOCK)
    # Online log-sum-exp per lane: a running maximum and the sum of exp(x - maximum). Lanes past V load -inf (a finite
    # fill would overflow to it in fp16 anyway), adding exp(-inf) = 0; the maximum starts finite, so no inf - inf.
    best = tl.full([BLOCK], -1e30, tl.float32)
    total = tl.zeros([BLOCK], tl.float32)
    for start in range(0, V, BLOCK):
        x = tl.load(base + start + cols, mask=start + cols < V, other=float("-inf")).to(tl.float32)
        new_best = tl.maximum(best, x)
        total = total * tl.exp(best - new_best) + tl.exp(x - new_best)
        best = new_best
    top = tl.max(best, axis=0)
    lse = top + tl.log(tl.sum(total * tl.exp(best - top), axis=0))
    target = tl.load(targets_ptr + row)
    valid = target != IGNORE
    picked = tl.load(base + tl.where(valid, target, 0)).to(tl.float32)
    tl.store(loss_ptr + row, tl.where(valid, lse - picked, 0.0))
    tl.store(lse_ptr + row, lse)


@triton.jit
def _ce_bwd(logits_ptr, targets_ptr, lse_ptr, scale_ptr, grad_ptr, V, stride, grad_stride, IGNORE: tl.constexpr,
            BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = logits_ptr + row.to(tl.int64) * stride
    out = grad_ptr + row.to(tl.int64) * grad_stride
    cols = tl.arange(0, BLOCK)
    target = tl.load(targets_ptr + row)
    lse = tl.load(lse_ptr + row)
    scale = tl.where(target != IGNORE, tl.load(scale_ptr).to(tl.float32), 0.0)  # d loss / d (this row's loss)
    for start in range(0, V, BLOCK):
        at = start + cols
        x = tl.load(base + at, mask=at < V, other=0.0).to(tl.float32)
        grad = (tl.exp(x - lse) - (at == target).to(tl.float32)) * scale
        tl.store(out + at, grad.to(grad_ptr.dtype.element_ty), mask=at < V)


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets):
        n_rows, vocab = logits.shape
        losses = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(losses)
        _ce_fwd[(n_rows,)](logits, targets, losses, lse, vocab, logits.stride(0), IGNORE=IGNORE_INDEX, BLOCK=BLOCK_V,
                           num_warps=8)
        count = (targets != IGNORE_INDEX).sum()  # stays on the device: no synchronisation
        ctx.save_for_backward(logits, targets, lse, count)
        return losses.sum() / count

    @staticmethod
    def backward(ctx, grad):
        logits, targets, lse, count = ctx.saved_tensors
        scale = grad.float() / count
        grad_logits = torch.empty_like(logits)
        _ce_bwd[(logits.shape[0],)](logits, targets, lse, scale, grad_logits, logits.shape[1], logits.stride(0),
                                    grad_logits.stride(0), IGNORE=IGNORE_INDEX, BLOCK=BLOCK_V, num_warps=8)
        return grad_logits, None


@torch.compiler.disable
def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (float32) of logits (rows, vocabulary), any float dtype, against targets (rows,)."""
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    return _CrossEntropy.apply(logits, targets.contiguous())

"""The MoE's routing glue in PyTorch: sort (token, slot) pairs by expert, dispatch rows, permute them back, add
per-expert biases. moe_triton fuses the same steps on a GPU.

None of these sorts or reads sizes back to the host on a GPU (argsort, the backward of advanced indexing and of
embedding do): with a dozen layers those left the GPU idle for much of the step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# torch 2.13 names it F.grouped_mm; older releases (2.8-2.11, the GPU image's) only have the private name.
grouped_mm = getattr(F, "grouped_mm", None) or torch._grouped_mm


def sort_by_expert(slots: torch.Tensor, n_experts: int):
    """Stable counting sort of the (token, slot) pairs by expert. Returns order (sorted position -> pair),
    position (pair -> sorted position) and the number of pairs per expert; equal to argsort(slots, stable=True)."""
    # (experts, pairs), scanned along the contiguous last axis: a CUDA cumsum down the first axis of a
    # (pairs, experts) tensor ran sequentially and took 10 ms per layer on an H100.
    hits = torch.arange(n_experts, device=slots.device)[:, None] == slots
    rank = hits.cumsum(1).gather(0, slots[None]).squeeze(0) - 1  # earlier pairs of the same expert
    counts = hits.sum(1)
    position = (counts.cumsum(0) - counts).index_select(0, slots) + rank
    order = torch.empty_like(position).scatter_(0, position, torch.arange(len(slots), device=slots.device))
    return order, position, counts


class DispatchRows(torch.autograd.Function):
    """rows = x[order // k], each token's row once per slot, grouped by expert. Backward: each token gathers its k
    row gradients and sums them (autograd's default scatter-adds, which sorts the indices)."""

    @staticmethod
    def forward(ctx, x, order, position, k: int):
        ctx.save_for_backward(position)
        ctx.k = k
        return x.index_select(0, torch.div(order, k, rounding_mode="floor"))

    @staticmethod
    def backward(ctx, grad):
        (position,) = ctx.saved_tensors
        return grad.index_select(0, position).view(-1, ctx.k, grad.shape[-1]).sum(1), None, None, None


class Permute(torch.autograd.Function):
    """x[index] for a permutation whose inverse is given: the backward is a gather as well."""

    @staticmethod
    def forward(ctx, x, index, inverse):
        ctx.save_for_backward(inverse)
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


class ExpertBias(torch.autograd.Function):
    """h + bias[expert_of_row], with the bias gradient of expert_bias_grad."""

    @staticmethod
    def forward(ctx, h, bias, expert_of_row):
        ctx.save_for_backward(expert_of_row)
        ctx.n_experts = bias.shape[0]
        return h + bias.index_select(0, expert_of_row)

    @staticmethod
    def backward(ctx, grad):
        (expert_of_row,) = ctx.saved_tensors
        return grad, expert_bias_grad(grad, expert_of_row, ctx.n_experts), None


def expert_bias_grad(grad: torch.Tensor, expert_of_row: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Gradient of bias[expert_of_row] for the rows' gradient grad: the sum of each expert's rows, as one matrix
    product of the one-hot expert matrix with grad (embedding's backward sorts the indices and reads their count to
    the host)."""
    one_hot = (torch.arange(n_experts, device=grad.device)[:, None] == expert_of_row).to(grad.dtype)
    return one_hot @ grad

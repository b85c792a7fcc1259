"""Which implementation a tensor gets. Layers ask through this module (`device.uses_triton(x)`), so that a test can
switch every caller at once."""

from __future__ import annotations

import torch


def uses_triton(x: torch.Tensor) -> bool:
    """Whether the fused Triton kernels run: the MoE's routing glue (moe_triton; not under dropout, which acts between
    the output bias and the combine), the norms with their residual adds (norm_triton) and the training loss
    (loss_triton). On any CUDA tensor; elsewhere the same computations run as PyTorch ops."""
    return x.is_cuda


def uses_grouped_gemm(x: torch.Tensor) -> bool:
    """Whether MoE runs its experts as grouped GEMMs: bf16 on a CUDA GPU of compute capability >= 8.0, where
    torch's grouped GEMM kernel exists. Elsewhere (CPU, fp16, fp32) torch's grouped_mm falls back to one
    matrix product per group, whose rounding can depend on the group's row count, so the padded per-expert
    path keeps a token's output independent of other tokens' routing."""
    return x.is_cuda and x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device) >= (8, 0)

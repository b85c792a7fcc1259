"""ResNet-BK: blocks of a BK mixer (the causal resolvent of tridiagonal systems, its diagonal and its response to
values; docs/design.md) and, by default, the sparse MoE. This module registers the family's spec (torch-free); the
block is resnetbk/models/resnetbk/block.py."""

from __future__ import annotations

from ..registry import ModelSpec, register

# Estimates from the operations of the causal recursion in ops/bk_core.py with complex arithmetic expanded into
# real FLOPs (a complex division is about 11): about 32 forward, and the adjoint sweep about twice that. Per token
# this is n_layers x n_heads x 96, under 0.1% of the matrix products of any preset.
BK_FLOPS_PER_ELEMENT = 32
BK_BACKWARD_FLOPS_PER_ELEMENT = 64
# The response recurrence (ops/bk_response_triton.py) per (position, head, value channel), counted from its
# operations: forward c y + g s is 10; backward 21 (lambda 2, conj(g) lambda 6, u 3, conj(u) lambda summed
# over channels 8, the carry 2), plus 4 for the coupling gradient of the selective variant.
RESPONSE_FLOPS_PER_ELEMENT = 10
RESPONSE_BACKWARD_FLOPS_PER_ELEMENT = 21
RESPONSE_SELECTIVE_BACKWARD_FLOPS = 4


def check(m):
    if m.bk_im_z_min <= 0:
        return "model.bk_im_z_min", "must be > 0 (Im z > 0 keeps the resolvent bounded)"
    if m.bk_values < 0:
        return "model.bk_values", "must be >= 0 (0: the diagonal alone)"
    if m.bk_value_gate and not m.bk_values:
        return "model.bk_value_gate", "gates the response: needs model.bk_values > 0"
    return None


def mixer_params(m) -> int:
    d, h = m.d_model, m.n_heads
    hc = h * m.bk_values
    diagonal = (d * h + h) + (d * h + h if m.bk_selective else 0) + (2 * h if m.bk_learned_z else 0) + (2 * h * d + d)
    response = (d * hc + hc) + 2 * hc * d + ((d + 1) * 2 * hc if m.bk_value_gate else 0)  # values, value_out, gate
    return diagonal + response


def mixer_matmul_params(m) -> int:
    d, h = m.d_model, m.n_heads
    hc = h * m.bk_values
    return (d * h * (2 if m.bk_selective else 1) + 2 * h * d + d * hc + 2 * hc * d
            + (d * 2 * hc if m.bk_value_gate else 0))


def mixing_flops(m, seq_len: int):
    """The recursions per token: n_heads systems, each with bk_values response channels (independent of N)."""
    backward = RESPONSE_BACKWARD_FLOPS_PER_ELEMENT + (RESPONSE_SELECTIVE_BACKWARD_FLOPS if m.bk_selective else 0)
    return (m.n_heads * (BK_FLOPS_PER_ELEMENT + m.bk_values * RESPONSE_FLOPS_PER_ELEMENT),
            m.n_heads * (BK_BACKWARD_FLOPS_PER_ELEMENT + m.bk_values * backward))


SPEC = register(ModelSpec(
    name="resnetbk", label="ResNet-BK", block="resnetbk.models.resnetbk.block:ResNetBKBlock", feed_forward="moe",
    position_table=False, check=check, mixer_params=mixer_params, mixer_matmul_params=mixer_matmul_params,
    mixing_flops=mixing_flops))

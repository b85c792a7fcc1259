"""Parameter and FLOP counts from the model config, without building the model (torch-free).

Training FLOPs per token = 3 x forward (backward costs two forwards), counting everything the model computes:
- matrix products at 2 FLOPs per multiply-add, for the parameters a token actually uses (the router and top_k
  experts of each MoE layer, not all of them), the tied LM head included;
- each family's sequence mixing beyond its matrix products (the spec's mixing_flops: causal attention's scores and
  values, the BK recursions), forward and backward counted as the family says.
Norms, activations, softmax and the loss are left out, as is usual for MFU (they are memory-bound and small).
"""

from __future__ import annotations

from .registry import get, uses_moe


def feed_forward_params(m) -> int:
    """One block's feed-forward: a GELU MLP, or the router and every expert."""
    d, f = m.d_model, m.ffn_hidden
    mlp = d * f + f + f * d + d
    return d * m.moe_experts + m.moe_experts * mlp if uses_moe(m) else mlp


def feed_forward_matmul_params(m) -> int:
    """Weights one token multiplies by in one block's feed-forward: the router and its top_k experts, or the MLP."""
    mlp = 2 * m.d_model * m.ffn_hidden
    return m.d_model * m.moe_experts + m.moe_top_k * mlp if uses_moe(m) else mlp


def param_count(m) -> int:
    """Total parameters, as sum(p.numel() for p in CausalLM(m).parameters())."""
    spec, d = get(m.arch), m.d_model
    block = 2 * d + spec.mixer_params(m) + feed_forward_params(m)  # two norms, the mixer, the feed-forward
    positions = m.max_seq_len * d if spec.position_table else 0
    return m.vocab_size * d + positions + m.n_layers * block + d + d * len(m.exit_layers)  # and one norm per exit


def active_matmul_params(m) -> int:
    """Weights one token multiplies by: embedding lookups excluded, the tied LM head included."""
    per_layer = get(m.arch).mixer_matmul_params(m) + feed_forward_matmul_params(m)
    return m.n_layers * per_layer + m.vocab_size * m.d_model


def forward_flops_per_token(m, seq_len: int) -> float:
    """Forward-only FLOPs per token (what an active-learning scoring pass costs)."""
    return 2 * active_matmul_params(m) + m.n_layers * get(m.arch).mixing_flops(m, seq_len)[0]


def training_flops_per_token(m, seq_len: int) -> float:
    """Forward + backward FLOPs per training token at sequence length seq_len; with early exits, the one exit that
    reads out through the tied head each forward."""
    exit_head = 6 * m.vocab_size * m.d_model if m.exit_layers else 0
    return 6 * active_matmul_params(m) + m.n_layers * sum(get(m.arch).mixing_flops(m, seq_len)) + exit_head

"""Parameter and FLOP counts from the model config, without building the model.

Training FLOPs per token = 3 x forward (backward costs two forwards), counting everything the model computes:
- matrix products at 2 FLOPs per multiply-add, for the parameters a token actually uses (the router and
  top_k experts of each MoE layer, not all of them), the tied LM head included;
- GPT: causal attention scores and values, 2 x 2 x d x (N + 1) / 2 per token and layer (the average causal
  context, as flash attention computes it);
- ResNet-BK: the BK recursion, BK_FLOPS_PER_ELEMENT per (position, head), forward and backward counted
  separately (its backward is one adjoint recursion plus the forward's recomputation, not two forwards).
Norms, activations, softmax and the loss are left out, as is usual for MFU (they are memory-bound and small).
"""

from __future__ import annotations

from .config import ModelConfig, uses_moe

# An estimate from the operations of the causal recursion in bk_core.py with complex arithmetic expanded
# into real FLOPs (a complex division is about 11): about 32 forward, and the adjoint sweep about twice
# that. Per token this is n_layers x n_heads x 96, under 0.1% of the matrix products of any preset.
BK_FLOPS_PER_ELEMENT = 32
BK_BACKWARD_FLOPS_PER_ELEMENT = 64
# The response recurrence (bk_response_triton.py) per (position, head, value channel), counted from its
# operations: forward c y + g s is 10; backward 21 (lambda 2, conj(g) lambda 6, u 3, conj(u) lambda summed
# over channels 8, the carry 2), plus 4 for the coupling gradient of the selective variant.
RESPONSE_FLOPS_PER_ELEMENT = 10
RESPONSE_BACKWARD_FLOPS_PER_ELEMENT = 21
RESPONSE_SELECTIVE_BACKWARD_FLOPS = 4


def param_count(m: ModelConfig) -> int:
    """Total parameters, as sum(p.numel() for p in CausalLM(m).parameters())."""
    d, f, h = m.d_model, m.ffn_hidden, m.n_heads
    mlp = d * f + f + f * d + d
    ffn = d * m.moe_experts + m.moe_experts * mlp if uses_moe(m) else mlp  # router and experts, or one MLP
    if m.arch == "gpt":
        block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + ffn
        return m.vocab_size * d + m.max_seq_len * d + m.n_layers * block + d
    mixer = (d * h + h) + (d * h + h if m.bk_selective else 0) + (2 * h if m.bk_learned_z else 0) + (2 * h * d + d)
    hc = h * m.bk_values
    mixer += (d * hc + hc) + 2 * hc * d + ((d + 1) * 2 * hc if m.bk_value_gate else 0)  # values, value_out, gate
    block = 2 * d + mixer + ffn
    return m.vocab_size * d + m.n_layers * block + d


def active_matmul_params(m: ModelConfig) -> int:
    """Weights one token multiplies by: embedding lookups excluded, the tied LM head included."""
    d, f, h = m.d_model, m.ffn_hidden, m.n_heads
    mlp = 2 * d * f
    ffn = d * m.moe_experts + m.moe_top_k * mlp if uses_moe(m) else mlp  # the router and top_k experts
    if m.arch == "gpt":
        per_layer = 3 * d * d + d * d + ffn
    else:
        hc = h * m.bk_values
        response = d * hc + 2 * hc * d + (d * 2 * hc if m.bk_value_gate else 0)
        per_layer = d * h * (2 if m.bk_selective else 1) + 2 * h * d + response + ffn
    return m.n_layers * per_layer + m.vocab_size * d


def forward_flops_per_token(m: ModelConfig, seq_len: int) -> float:
    """Forward-only FLOPs per token (what an active-learning scoring pass costs)."""
    if m.arch == "gpt":
        mixing = m.n_layers * 2 * 2 * m.d_model * (seq_len + 1) / 2
    else:
        mixing = m.n_layers * m.n_heads * (BK_FLOPS_PER_ELEMENT + m.bk_values * RESPONSE_FLOPS_PER_ELEMENT)
    return 2 * active_matmul_params(m) + mixing


def training_flops_per_token(m: ModelConfig, seq_len: int) -> float:
    """Forward + backward FLOPs per training token at sequence length seq_len."""
    matmul = 6 * active_matmul_params(m)
    if m.arch == "gpt":
        mixing = 3 * m.n_layers * 2 * 2 * m.d_model * (seq_len + 1) / 2
    else:
        response = RESPONSE_FLOPS_PER_ELEMENT + RESPONSE_BACKWARD_FLOPS_PER_ELEMENT + \
            (RESPONSE_SELECTIVE_BACKWARD_FLOPS if m.bk_selective else 0)
        mixing = m.n_layers * m.n_heads * (BK_FLOPS_PER_ELEMENT + BK_BACKWARD_FLOPS_PER_ELEMENT + m.bk_values * response)
    return matmul + mixing


# Dense bf16 peak per GPU (NVIDIA data sheets, without sparsity), for MFU. Keys match nvidia-smi names.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0,
               "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0, "T4": 65.0}


def peak_tflops(gpu_name: str):
    """The data-sheet dense peak for a GPU name, or None when unknown (MFU is then not reported)."""
    for key, value in PEAK_TFLOPS.items():
        if key in gpu_name.upper():
            return value
    return None

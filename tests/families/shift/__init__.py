"""A third family for the registry's acceptance test: each block mixes a position with the one before it (a token
shift), h_i + h_{i-1} through one d x d projection, then the dense MLP. Torch-free, as a family's spec must be."""

from resnetbk.models.registry import ModelSpec, register


def check(m):
    return ("model.max_seq_len", "must be >= 2 for a token shift") if m.max_seq_len < 2 else None


def mixer_params(m):
    return m.d_model * m.d_model + m.d_model


def mixer_matmul_params(m):
    return m.d_model * m.d_model


def mixing_flops(m, seq_len):
    return m.d_model, m.d_model  # the add, and its gradient's add


SPEC = register(ModelSpec(
    name="shift", label="Token shift", block="families.shift.block:ShiftBlock", feed_forward="mlp",
    position_table=False, check=check, mixer_params=mixer_params, mixer_matmul_params=mixer_matmul_params,
    mixing_flops=mixing_flops))

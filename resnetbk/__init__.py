"""resnetbk: a DeepSpeed trainer for causal ResNet-BK language models and a GPT baseline."""

from __future__ import annotations

__all__ = ["build_model", "resolvent_diagonal", "resolvent_response"]


def __getattr__(name: str):
    # The operators load torch on first use, so that `import resnetbk` (e.g. for a config check) stays light.
    if name == "resolvent_diagonal":
        from .ops.bk_core import resolvent_diagonal

        return resolvent_diagonal
    if name == "resolvent_response":
        from .ops.bk_response import resolvent_response

        return resolvent_response
    raise AttributeError(f"module 'resnetbk' has no attribute {name!r}")


def build_model(arch: str = "resnetbk", **overrides):
    """A fresh model of a registered family ("resnetbk", "gpt", ...: resnetbk/models/registry.py); overrides are
    ModelConfig fields (d_model, n_layers, ...).

    forward(tokens: LongTensor (B, N)) -> logits (B, N, vocab_size); forward(tokens, targets) -> LMOutput.
    """
    import dataclasses

    from .config import ModelConfig, validate_model
    from .models.decoder import CausalLM

    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown model config field '{unknown[0]}' (known: {', '.join(sorted(fields))})")
    cfg = ModelConfig(arch=arch, **overrides)
    validate_model(cfg)
    return CausalLM(cfg)

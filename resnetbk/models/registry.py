"""The model families: one ModelSpec per family, looked up by `model.arch`. Torch-free, so that a config is checked
in well under a second.

A family is a package that calls `register(ModelSpec(...))` when imported: resnetbk.models.resnetbk and
resnetbk.models.gpt here; more from the modules named in the environment variable RESNETBK_FAMILIES (comma
separated, imported on first use). docs/design.md, "How to add a model family", walks through one.

Everything outside resnetbk/models asks the spec: the block class (also DeepSpeed's ZeRO-3 leaf module), whether
the blocks use the MoE, the position table, the family's config checks, and its terms of the parameter and FLOP
counts (resnetbk/models/counts.py).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

BUILT_IN = ("resnetbk.models.resnetbk", "resnetbk.models.gpt")
FAMILIES_ENV = "RESNETBK_FAMILIES"


@dataclass(frozen=True)
class ModelSpec:
    """One family. The callables take the ModelConfig (and, for FLOPs, the sequence length) and work without torch.

    name                  model.arch
    label                 what the trainer prints ("ResNet-BK")
    block                 "module:Class" of the decoder block, Class(cfg); imported only when a model is built
    feed_forward          the blocks' feed-forward when model.feed_forward is null: "moe" or "mlp"
    position_table        whether the decoder adds a learned position embedding (max_seq_len x d_model)
    check                 the family's config checks: None, or (key, why) for the first problem
    mixer_params          parameters of one block's sequence mixer (its norms and feed-forward are counted apart)
    mixer_matmul_params   weights one token multiplies by in one block's mixer
    mixing_flops          (forward, backward) FLOPs per token of one block's mixer beyond its matrix products
    """

    name: str
    label: str
    block: str
    feed_forward: str
    position_table: bool
    check: Callable
    mixer_params: Callable
    mixer_matmul_params: Callable
    mixing_flops: Callable

    @property
    def block_class_name(self) -> str:
        return self.block.rsplit(":", 1)[1]

    def block_class(self):
        module, name = self.block.rsplit(":", 1)
        return getattr(importlib.import_module(module), name)


_SPECS: Dict[str, ModelSpec] = {}
_loaded = False


def register(spec: ModelSpec) -> ModelSpec:
    if spec.feed_forward not in ("moe", "mlp"):
        raise ValueError(f"{spec.name}: feed_forward must be 'moe' or 'mlp', got {spec.feed_forward!r}")
    _SPECS[spec.name] = spec
    return spec


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    extra = [m.strip() for m in os.environ.get(FAMILIES_ENV, "").split(",") if m.strip()]
    for module in (*BUILT_IN, *extra):
        importlib.import_module(module)


def names() -> Tuple[str, ...]:
    _load()
    return tuple(_SPECS)


def get(name: str) -> ModelSpec:
    """The spec of a registered family; a ValueError naming the known ones otherwise."""
    _load()
    if name not in _SPECS:
        raise ValueError(f"unknown model family '{name}' (known: {', '.join(_SPECS)})")
    return _SPECS[name]


def feed_forward(m) -> str:
    """The blocks' feed-forward, "moe" or "mlp": model.feed_forward, or the family's own."""
    return m.feed_forward or get(m.arch).feed_forward


def uses_moe(m) -> bool:
    return feed_forward(m) == "moe"


def first_problem(m) -> Optional[Tuple[str, str]]:
    """The family's config checks for a model config whose arch is registered."""
    return get(m.arch).check(m)

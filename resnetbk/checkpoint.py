"""Checkpoints through DeepSpeed: <run_dir>/checkpoints/<tag>/ plus the `latest` file DeepSpeed writes.

Client state carries what DeepSpeed does not know: step, tokens seen, samples consumed by the sampler.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

from .config import ConfigError


def checkpoint_root(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def resolve_resume(resume: str, run_dir: str) -> Optional[Tuple[str, Optional[str]]]:
    """(load_dir, tag) to resume from, or None to start fresh. tag None means DeepSpeed's `latest`."""
    if resume == "none":
        return None
    if resume == "auto":
        root = checkpoint_root(run_dir)
        return (root, None) if os.path.isfile(os.path.join(root, "latest")) else None
    path = os.path.normpath(resume)
    if not os.path.isfile(os.path.join(path, "mp_rank_00_model_states.pt")):
        raise ConfigError(f"resume: {path} is not a DeepSpeed checkpoint tag directory (no mp_rank_00_model_states.pt)")
    return os.path.dirname(path), os.path.basename(path)


def save(engine, run_dir: str, step: int, client_state: dict) -> str:
    """Saves on every rank (DeepSpeed requires it). An existing tag is never rewritten."""
    root, tag = checkpoint_root(run_dir), tag_for(step)
    path = os.path.join(root, tag)
    if not os.path.isdir(path):
        # The converter to DeepSpeed's universal format (other world sizes) needs this entry. With MoE layers
        # DeepSpeed writes it itself and refuses it in client state.
        state = dict(client_state)
        if not getattr(engine, "has_moe_layers", False):
            state["universal_checkpoint_info"] = {"universal_checkpoint_version": 0.4}
        engine.save_checkpoint(root, tag=tag, client_state=state)
    return path


def load(engine, load_dir: str, tag: Optional[str]) -> dict:
    path, client_state = engine.load_checkpoint(load_dir, tag=tag)
    if path is None:
        raise ConfigError(f"resume: no loadable checkpoint in {load_dir}" + (f" (tag {tag})" if tag else ""))
    return client_state

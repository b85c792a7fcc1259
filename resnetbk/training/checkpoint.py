"""Checkpoints through DeepSpeed, made atomic: <run_dir>/checkpoints/<tag>/ plus the `latest` file.

A save writes every rank's files under a hidden temporary tag (`.tmp-<tag>`), then rank 0 flushes them to
disk, renames the directory to its final tag and only then rewrites `latest` (write-then-rename). A kill
at any moment therefore leaves `latest` naming a complete checkpoint. Temporary tags left by a kill are
removed at the next start; only the newest `keep` published tags are kept.

Client state carries what DeepSpeed does not know: step, tokens seen, samples consumed by the sampler,
skipped steps, and the RNG states of every rank (restored when the world size is unchanged).

A checkpoint saved by N data-parallel ranks resumes on M != N ranks through DeepSpeed's universal format:
the trainer converts it once (`deepspeed.checkpoint.ds_to_universal`) into <run_dir>/universal/<tag>/ and
loads that with `checkpoint.load_universal`.
"""

from __future__ import annotations

import glob
import os
import random
import re
import shutil
import subprocess
import sys
from typing import NamedTuple, Optional

from ..config import ConfigError

TAG_RE = re.compile(r"^step\d{8}$")
TMP_PREFIX = ".tmp-"


class Resume(NamedTuple):
    load_dir: str  # the directory that holds the tag directory
    tag: str
    saved_world: int  # data-parallel ranks that wrote it; 0 when unknown (ZeRO stage 0 writes no rank files)


def checkpoint_root(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def published_tags(root: str) -> list[str]:
    """Complete checkpoints, oldest first (temporary tags are hidden and never match)."""
    if not os.path.isdir(root):
        return []
    return sorted(t for t in os.listdir(root) if TAG_RE.match(t) and os.path.isdir(os.path.join(root, t)))


def saved_world_size(tag_dir: str) -> int:
    """Data-parallel ranks of a checkpoint, from its per-rank ZeRO files; 0 for stage 0 (no rank files)."""
    return len(glob.glob(os.path.join(tag_dir, "zero_pp_rank_*_mp_rank_00_optim_states.pt")))


def is_tag_dir(path: str) -> bool:
    """A DeepSpeed checkpoint tag directory: model states of rank 0 (stages 0-2) or of ZeRO-3 partition 0."""
    return any(os.path.isfile(os.path.join(path, name))
               for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt"))


def resolve_resume(resume: str, run_dir: str) -> Optional[Resume]:
    """The checkpoint to resume from, or None to start fresh. Raises ConfigError naming `resume`."""
    if resume == "none":
        return None
    if resume == "auto":
        root = checkpoint_root(run_dir)
        tag = _read_latest(root)
        if tag is None:  # `latest` lost or never written: the newest published tag is still complete
            tags = published_tags(root)
            tag = tags[-1] if tags else None
        return None if tag is None else Resume(root, tag, saved_world_size(os.path.join(root, tag)))
    path = os.path.normpath(resume)
    if not is_tag_dir(path):
        raise ConfigError(f"resume: {path} is not a DeepSpeed checkpoint tag directory "
                          f"(no *mp_rank_00_model_states.pt)")
    return Resume(os.path.dirname(path), os.path.basename(path), saved_world_size(path))


def _read_latest(root: str) -> Optional[str]:
    try:
        with open(os.path.join(root, "latest")) as f:
            tag = f.read().strip()
    except (FileNotFoundError, NotADirectoryError):  # no checkpoint yet, or not a run directory at all
        return None
    return tag if os.path.isdir(os.path.join(root, tag)) else None


def remove_stale_temporaries(run_dir: str) -> None:
    """Rank 0, before the first save: temporary tags of a save that was killed."""
    for path in glob.glob(os.path.join(checkpoint_root(run_dir), TMP_PREFIX + "*")):
        shutil.rmtree(path, ignore_errors=True)


def save(engine, run_dir: str, step: int, client_state: dict, keep: int) -> str:
    """Saves on every rank (DeepSpeed requires it), publishes atomically, prunes to the newest `keep`
    (0 keeps all). An existing tag is never rewritten."""
    import torch.distributed as dist

    root, tag = checkpoint_root(run_dir), tag_for(step)
    path = os.path.join(root, tag)
    if os.path.isdir(path):
        return path
    tmp_tag = TMP_PREFIX + tag
    state = {**client_state, "rng": _gather_rng_states()}
    # The converter to DeepSpeed's universal format (other world sizes) needs this entry. With MoE layers
    # DeepSpeed writes it itself and refuses it in client state.
    if not getattr(engine, "has_moe_layers", False):
        state["universal_checkpoint_info"] = {"universal_checkpoint_version": 0.4}
    engine.save_checkpoint(root, tag=tmp_tag, client_state=state, save_latest=False)
    dist.barrier()  # every rank's files are written
    if dist.get_rank() == 0:
        _fsync_tree(os.path.join(root, tmp_tag))
        os.rename(os.path.join(root, tmp_tag), path)
        _write_atomic(os.path.join(root, "latest"), tag)
        if keep:
            for old in published_tags(root)[:-keep]:
                shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    dist.barrier()  # nobody returns before the checkpoint is published
    return path


def _fsync_tree(path: str) -> None:
    for directory, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def universal_dir(run_dir: str, tag: str) -> str:
    return os.path.join(run_dir, "universal", tag)


def convert_to_universal(tag_dir: str, out_dir: str) -> None:
    """DeepSpeed's ds_to_universal, into a temporary directory renamed when complete (rank 0 only)."""
    if os.path.isdir(out_dir):
        return
    tmp = out_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", tag_dir,
                           "--output_folder", os.path.join(tmp, os.path.basename(out_dir)),
                           "--num_extract_workers", "1", "--num_merge_workers", "1", "--no_strict"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"resume: converting {tag_dir} to DeepSpeed's universal format failed: {tail}")
    os.rename(os.path.join(tmp, os.path.basename(out_dir)), out_dir)
    shutil.rmtree(tmp, ignore_errors=True)


def load(engine, load_dir: str, tag: str) -> dict:
    path, client_state = engine.load_checkpoint(load_dir, tag=tag)
    if path is None:
        raise ConfigError(f"resume: no loadable checkpoint in {load_dir} (tag {tag})")
    return client_state or {}


def _rng_state() -> dict:
    """This rank's generators as tensors and plain lists (nothing that needs unpickling beyond weights)."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                       gauss], "python": _python_rng_to_lists(random.getstate())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _python_rng_to_lists(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _gather_rng_states() -> list:
    """Every rank's RNG state, gathered to all (DeepSpeed writes client state from rank 0 only)."""
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, _rng_state())
    return out


def restore_rng(states: Optional[list], rank: int, world: int) -> bool:
    """Restores this rank's generators when the checkpoint has one state per rank of this world size."""
    import numpy as np
    import torch

    if not states or len(states) != world:
        return False
    s = states[rank]
    torch.set_rng_state(s["torch"])
    kind, keys, pos, has_gauss, gauss = s["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss = s["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])
    return True

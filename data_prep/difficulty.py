"""Per-document difficulty metrics, stored beside a shard directory for the curriculum and active-learning
samplers (resnetbk/sampling.py).

SPLIT/difficulty/length.npy    tokens per document (EOS excluded)
SPLIT/difficulty/rarity.npy    sum over the document's tokens of -log p(token), p the unigram distribution of
                               SPLIT's own token counts (add-one smoothing)
SPLIT/difficulty/ref_loss.npy  mean next-token loss (nats) of a reference model (a `python -m resnetbk.export`
                               directory) on the document's tokens and its EOS, in the packed windows the
                               trainer uses (context may reach into the previous document)
SPLIT/difficulty/info.json     the metrics present, the shard counts they were computed for, the reference

One float32 per document, in document order. Each file is written under a temporary name and renamed.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .readers import InputError
from .shards import write_json_atomic


def _per_document_sums(offsets: np.ndarray, positions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sums of `values` by the document each stream position belongs to."""
    docs = np.searchsorted(offsets, positions, side="right") - 1
    return np.bincount(docs, weights=values, minlength=len(offsets) - 1)


def rarity(shards) -> np.ndarray:
    """Sum of -log p_unigram over each document's tokens, streamed in chunks."""
    counts = shards.token_counts().astype(np.float64) + 1.0
    neg_log_p = -np.log(counts / counts.sum())
    out = []
    for stream, offsets in zip(shards.streams, shards.offsets):
        offsets = np.asarray(offsets)
        sums = np.zeros(len(offsets) - 1)
        for lo in range(0, len(stream), 1 << 22):
            chunk = np.asarray(stream[lo:lo + (1 << 22)])
            sums += _per_document_sums(offsets, np.arange(lo, lo + len(chunk)), neg_log_p[chunk])
        out.append(sums - neg_log_p[shards.eos_id])  # every document ends with exactly one EOS
    return np.concatenate(out)


def reference_loss(shards, model, seq_len: int, batch_size: int, device: str) -> np.ndarray:
    """Mean loss of `model` per document: windows of seq_len inputs cut from each shard's stream, the last
    one padded (the model is causal, so padding changes no earlier position); the first token of a shard
    has no context and is not scored."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    jobs = [(s, lo) for s, stream in enumerate(shards.streams) for lo in range(0, len(stream) - 1, seq_len)]
    sums = [np.zeros(len(o) - 1) for o in shards.offsets]
    counts = [np.zeros(len(o) - 1) for o in shards.offsets]
    model.eval()
    with torch.no_grad():
        for first in tqdm(range(0, len(jobs), batch_size), desc=f"ref_loss {shards.directory}", unit="batch"):
            batch = jobs[first:first + batch_size]
            rows = np.full((len(batch), seq_len + 1), shards.eos_id, dtype=np.int64)
            lengths = []
            for r, (s, lo) in enumerate(batch):
                window = np.asarray(shards.streams[s][lo:lo + seq_len + 1], dtype=np.int64)
                rows[r, :len(window)] = window
                lengths.append(len(window) - 1)  # scored targets of this row
            x = torch.from_numpy(rows[:, :-1]).to(device)
            logits = model(x).float()
            losses = F.cross_entropy(logits.flatten(0, 1), torch.from_numpy(rows[:, 1:]).to(device).flatten(),
                                     reduction="none").view(len(batch), seq_len).double().cpu().numpy()
            for r, (s, lo) in enumerate(batch):
                positions = np.arange(lo + 1, lo + 1 + lengths[r])
                offsets = np.asarray(shards.offsets[s])
                sums[s] += _per_document_sums(offsets, positions, losses[r, :lengths[r]])
                counts[s] += _per_document_sums(offsets, positions, np.ones(lengths[r]))
    sums, counts = np.concatenate(sums), np.concatenate(counts)
    # Only a shard's first document can lack a scored position (a one-token shard): give it the mean.
    return np.where(counts > 0, sums / np.maximum(counts, 1), sums.sum() / counts.sum())


def _save(directory: str, name: str, values: np.ndarray) -> None:
    path = os.path.join(directory, name + ".npy")
    with open(path + ".tmp", "wb") as f:
        np.save(f, values.astype(np.float32))
    os.replace(path + ".tmp", path)


def write_metrics(split_dir: str, reference: str | None, seq_len: int | None, batch_size: int, device: str) -> dict:
    """Computes length and rarity (and ref_loss with a reference export) for split_dir; returns info.json."""
    from resnetbk.data import DIFFICULTY_DIR, DataError, IndexedShards

    try:
        shards = IndexedShards(split_dir)
    except DataError as e:
        raise InputError(str(e)) from None
    out = os.path.join(split_dir, DIFFICULTY_DIR)
    os.makedirs(out, exist_ok=True)
    info_path = os.path.join(out, "info.json")
    counts = {"documents": len(shards), "tokens": shards.num_tokens}
    info = {"shards": counts, "metrics": {}}
    if os.path.isfile(info_path):
        with open(info_path) as f:
            old = json.load(f)
        if old.get("shards") == counts:  # still describes these shards: keep the metrics not recomputed
            info = old
    _save(out, "length", shards.document_lengths())
    _save(out, "rarity", rarity(shards))
    info["metrics"].update(length={}, rarity={"unigram": "this split, add-one smoothing"})
    if reference:
        model, ref_loss_info = _load_reference(reference, shards, device)
        seq_len = seq_len or ref_loss_info["seq_len"]
        if not 1 <= seq_len <= ref_loss_info["seq_len"]:
            raise InputError(f"--seq-len: must be in [1, {ref_loss_info['seq_len']}] (the reference's max_seq_len)")
        _save(out, "ref_loss", reference_loss(shards, model, seq_len, batch_size, device))
        info["metrics"]["ref_loss"] = {"reference": os.path.abspath(reference), "seq_len": seq_len}
    write_json_atomic(info_path, info)
    return info


def _load_reference(reference: str, shards, device: str):
    from resnetbk.config import ConfigError
    from resnetbk.exported import TOKENIZER, load_exported

    from .tokenizer import file_sha256

    tokenizer = os.path.join(reference, TOKENIZER)
    if not os.path.isfile(tokenizer):
        raise InputError(f"--reference: {reference}: not an export directory (no {TOKENIZER}; make one with "
                         f"python -m resnetbk.export)")
    if file_sha256(tokenizer) != shards.manifest["tokenizer_sha256"]:
        raise InputError(f"--reference: {reference} was trained with another tokenizer than {shards.directory}")
    try:
        model, cfg, _ = load_exported(reference, device)
    except (ConfigError, OSError) as e:
        raise InputError(f"--reference: {e}") from None
    except Exception as e:  # safetensors and load_state_dict report a damaged or foreign file in their own types
        raise InputError(f"--reference: {reference}: cannot load the model "
                         f"({str(e).strip().splitlines()[0]})") from None
    return model, {"seq_len": cfg.max_seq_len}

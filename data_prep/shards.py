"""Indexed token shards: the on-disk format that resnetbk.data.IndexedShards reads.

SPLIT/manifest.json  format, dtype, vocab_size, eos_id, tokenizer checksum, totals, and per shard its
                     files, counts and sha256. text_bytes (per shard and in total) is the UTF-8 size of the
                     documents' text, which bits per byte divide by; shards written without it have none.
SPLIT/NAME.bin       token stream, documents separated by EOS (uint16 when the vocabulary fits, else uint32).
SPLIT/NAME.idx       int64 offsets, one per document plus the end: document i is bin[idx[i] : idx[i+1] - 1]
                     and bin[idx[i+1] - 1] is its EOS.
Shard files are written under a temporary name and renamed when complete; the manifest is written last,
through a rename, so a directory with a manifest is complete.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import List, Optional, Sequence

import numpy as np

from .tokenizer import file_sha256

FORMAT = "resnetbk-shards/1"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def write_json_atomic(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


class ShardWriter:
    """Writes documents to NAME.bin / NAME.idx in out_dir (NAME-001... when a shard exceeds shard_tokens)."""

    def __init__(self, out_dir: str, name: str, vocab_size: int, eos_id: int, shard_tokens: int = 1 << 28):
        self.out_dir, self.name, self.eos_id = out_dir, name, eos_id
        self.dtype = token_dtype(vocab_size)
        self.shard_tokens = shard_tokens
        self.shards: List[dict] = []
        self._buf: List[np.ndarray] = []
        self._offsets = [0]
        self._text_bytes = 0
        os.makedirs(out_dir, exist_ok=True)

    def add(self, tokens: Sequence[int], text_bytes: Optional[int] = None) -> None:
        self.add_many([tokens], text_bytes)

    def add_many(self, docs: Sequence[Sequence[int]], text_bytes: Optional[int] = None) -> None:
        """Appends documents (token id lists), each followed by EOS, converting the batch in one pass.
        text_bytes is the UTF-8 size of their text; a shard given documents without it records none."""
        if not docs:
            return
        self._text_bytes = None if text_bytes is None or self._text_bytes is None else self._text_bytes + text_bytes
        lengths = np.fromiter((len(d) + 1 for d in docs), dtype=np.int64, count=len(docs))
        flat = np.empty(int(lengths.sum()), dtype=self.dtype)
        ends = np.cumsum(lengths)
        flat[ends - 1] = self.eos_id
        mask = np.ones(len(flat), dtype=bool)
        mask[ends - 1] = False
        flat[mask] = np.fromiter(itertools.chain.from_iterable(docs), dtype=self.dtype, count=len(flat) - len(docs))
        self._buf.append(flat)
        self._offsets.extend((self._offsets[-1] + ends).tolist())
        if self._offsets[-1] >= self.shard_tokens:
            self._flush()

    def _flush(self) -> None:
        if len(self._offsets) == 1:
            return
        name = self.name if not self.shards else f"{self.name}-{len(self.shards):03d}"
        for ext, array in ((".bin", np.concatenate(self._buf)), (".idx", np.asarray(self._offsets, dtype=np.int64))):
            path = os.path.join(self.out_dir, name + ext)
            array.tofile(path + ".tmp")
            os.replace(path + ".tmp", path)
        shard = {"bin": name + ".bin", "idx": name + ".idx", "documents": len(self._offsets) - 1,
                 "tokens": self._offsets[-1]}
        if self._text_bytes is not None:
            shard["text_bytes"] = self._text_bytes
        shard["sha256"] = file_sha256(os.path.join(self.out_dir, name + ".bin"))
        self.shards.append(shard)
        self._buf, self._offsets, self._text_bytes = [], [0], 0

    def close(self) -> List[dict]:
        self._flush()
        return self.shards


def write_manifest(out_dir: str, shards: List[dict], vocab_size: int, eos_id: int, tokenizer_sha256: str,
                   extra: dict | None = None) -> dict:
    manifest = {
        "format": FORMAT, "dtype": token_dtype(vocab_size).name, "vocab_size": vocab_size, "eos_id": eos_id,
        "tokenizer_sha256": tokenizer_sha256,
        "documents": sum(s["documents"] for s in shards), "tokens": sum(s["tokens"] for s in shards),
    }
    if all("text_bytes" in s for s in shards):
        manifest["text_bytes"] = sum(s["text_bytes"] for s in shards)
    manifest.update(shards=shards, **(extra or {}))
    os.makedirs(out_dir, exist_ok=True)
    write_json_atomic(os.path.join(out_dir, "manifest.json"), manifest)
    return manifest

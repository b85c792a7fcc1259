"""Indexed token shards: the on-disk format that resnetbk.data.IndexedShards reads.

DIR/manifest.json  format, dtype, vocab_size, eos_id, tokenizer checksum, totals, and per shard its
                   files, counts and sha256.
DIR/NNNNN.bin      token stream, documents separated by EOS (uint16 when the vocabulary fits, else uint32).
DIR/NNNNN.idx      int64 offsets, one per document plus the end: document i is bin[idx[i] : idx[i+1] - 1]
                   and bin[idx[i+1] - 1] is its EOS.
The manifest is written last, through a rename, so a directory with a manifest is complete.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, List

import numpy as np

from .tokenizer import file_sha256

FORMAT = "resnetbk-shards/1"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


class ShardWriter:
    def __init__(self, out_dir: str, vocab_size: int, eos_id: int, tokenizer_path: str,
                 shard_tokens: int = 1 << 28):
        self.out_dir, self.vocab_size, self.eos_id = out_dir, vocab_size, eos_id
        self.tokenizer_sha256 = file_sha256(tokenizer_path)
        self.dtype = token_dtype(vocab_size)
        self.shard_tokens = shard_tokens
        self.shards: List[dict] = []
        self._buf: List[np.ndarray] = []
        self._offsets = [0]
        os.makedirs(out_dir, exist_ok=True)

    def add(self, tokens: Iterable[int]) -> None:
        doc = np.fromiter(tokens, dtype=np.int64)
        doc = np.append(doc, self.eos_id).astype(self.dtype)
        self._buf.append(doc)
        self._offsets.append(self._offsets[-1] + len(doc))
        if self._offsets[-1] >= self.shard_tokens:
            self._flush()

    def _flush(self) -> None:
        if len(self._offsets) == 1:
            return
        name = f"{len(self.shards):05d}"
        bin_path, idx_path = (os.path.join(self.out_dir, name + ext) for ext in (".bin", ".idx"))
        np.concatenate(self._buf).tofile(bin_path)
        np.asarray(self._offsets, dtype=np.int64).tofile(idx_path)
        self.shards.append({"bin": name + ".bin", "idx": name + ".idx", "documents": len(self._offsets) - 1,
                            "tokens": self._offsets[-1], "sha256": file_sha256(bin_path)})
        self._buf, self._offsets = [], [0]

    def close(self, extra: dict | None = None) -> dict:
        self._flush()
        manifest = {
            "format": FORMAT, "dtype": self.dtype.name, "vocab_size": self.vocab_size, "eos_id": self.eos_id,
            "tokenizer_sha256": self.tokenizer_sha256,
            "documents": sum(s["documents"] for s in self.shards), "tokens": sum(s["tokens"] for s in self.shards),
            "shards": self.shards, **(extra or {}),
        }
        tmp = os.path.join(self.out_dir, "manifest.json.tmp")
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=2)
        os.replace(tmp, os.path.join(self.out_dir, "manifest.json"))
        return manifest

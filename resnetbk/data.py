"""Reading indexed token shards (written by data_prep.shards) and turning them into training batches.

Nothing reads a whole corpus into memory: token streams are memory-mapped and only the windows of a
batch are copied out.
"""

from __future__ import annotations

import json
import os
from typing import Iterator, List, Optional

import numpy as np
import torch

SHARD_FORMAT = "resnetbk-shards/1"
DIFFICULTY_DIR = "difficulty"  # per-document metrics written by `python -m data_prep difficulty`


class DataError(ValueError):
    """A problem with a shard directory; the message names the file."""


def read_manifest(directory: str) -> dict:
    path = os.path.join(directory, "manifest.json")
    if not os.path.isfile(path):
        raise DataError(f"{path}: not found (prepare the data first, e.g. `python -m data_prep kjv`)")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable manifest ({e})") from None
    if manifest.get("format") == "resnetbk-corpus/1":
        raise DataError(f"{path}: a corpus directory; point at its train/ or val/ shard directory")
    if manifest.get("format") != SHARD_FORMAT:
        raise DataError(f"{path}: format {manifest.get('format')!r} is not {SHARD_FORMAT!r}")
    return manifest


class IndexedShards:
    """The documents of a shard directory: len() = number of documents, [i] = token ids of document i."""

    def __init__(self, directory: str):
        self.directory = directory
        self.manifest = read_manifest(directory)
        self.vocab_size: int = self.manifest["vocab_size"]
        self.eos_id: int = self.manifest["eos_id"]
        dtype = np.dtype(self.manifest["dtype"])
        self.streams: List[np.ndarray] = []
        self.offsets: List[np.ndarray] = []
        for shard in self.manifest["shards"]:
            bin_path = os.path.join(directory, shard["bin"])
            idx_path = os.path.join(directory, shard["idx"])
            for path in (bin_path, idx_path):
                if not os.path.isfile(path):
                    raise DataError(f"{path}: listed in the manifest but missing")
            stream = np.memmap(bin_path, dtype=dtype, mode="r")
            offsets = np.memmap(idx_path, dtype=np.int64, mode="r")
            if len(stream) != shard["tokens"] or len(offsets) != shard["documents"] + 1 or offsets[-1] != len(stream):
                raise DataError(f"{bin_path}: size does not match the manifest (truncated or overwritten?)")
            self.streams.append(stream)
            self.offsets.append(offsets)
        self._first_doc = np.cumsum([0] + [len(o) - 1 for o in self.offsets])

    def __len__(self) -> int:
        return int(self._first_doc[-1])

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"document {i} out of range for {len(self)} documents")
        i %= len(self)
        s = int(np.searchsorted(self._first_doc, i, side="right")) - 1
        j = i - self._first_doc[s]
        lo, hi = self.offsets[s][j], self.offsets[s][j + 1] - 1  # drop the trailing EOS
        return np.asarray(self.streams[s][lo:hi])

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.streams)

    @property
    def text_bytes_per_token(self) -> Optional[List[float]]:
        """Per shard, UTF-8 bytes of document text per token (EOS included); None for shards written before
        data_prep recorded text bytes."""
        shards = self.manifest["shards"]
        if not shards or not all("text_bytes" in s for s in shards):
            return None
        return [s["text_bytes"] / s["tokens"] if s["tokens"] else 0.0 for s in shards]

    def document_lengths(self) -> np.ndarray:
        """Tokens per document, EOS excluded, in document order."""
        return np.concatenate([np.diff(np.asarray(o)) - 1 for o in self.offsets])

    def difficulty(self, metric: str) -> np.ndarray:
        """The per-document values of a difficulty metric stored beside the shards (float64, document order)."""
        path = os.path.join(self.directory, DIFFICULTY_DIR, metric + ".npy")
        how = (f"python -m data_prep difficulty {self.directory}"
               + (" --reference EXPORT_DIR" if metric == "ref_loss" else ""))
        if not os.path.isfile(path):
            raise DataError(f"{path}: metric '{metric}' not found beside the shards (write it with `{how}`)")
        try:
            values = np.load(path).astype(np.float64)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: unreadable ({e})") from None
        info_path = os.path.join(self.directory, DIFFICULTY_DIR, "info.json")
        if os.path.isfile(info_path):  # written for other shards (same document count, other tokens)?
            with open(info_path) as f:
                counts = json.load(f).get("shards", {})
            if counts.get("tokens") not in (None, self.num_tokens):
                raise DataError(f"{info_path}: computed for {counts['tokens']} tokens, "
                                f"the shards hold {self.num_tokens} (stale: re-run `{how}`)")
        if values.shape != (len(self),) or not np.isfinite(values).all():
            raise DataError(f"{path}: expected {len(self)} finite values, one per document (stale? re-run `{how}`)")
        return values

    def token_counts(self) -> np.ndarray:
        """Occurrences of each token id over all shards (EOS included), streamed in chunks."""
        counts = np.zeros(self.vocab_size, dtype=np.int64)
        for stream in self.streams:
            for lo in range(0, len(stream), 1 << 24):
                counts += np.bincount(stream[lo:lo + (1 << 24)], minlength=self.vocab_size)[: self.vocab_size]
        return counts


class Windows:
    """Batches of a dataset's windows, sample k being self.window(k): seq_len + 1 tokens."""

    def rows(self, indices) -> torch.Tensor:
        """The windows as one (len(indices), seq_len + 1) int64 tensor."""
        return torch.from_numpy(np.stack([self.window(int(k)) for k in indices]))

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (each window's first seq_len tokens) and targets (its last seq_len)."""
        rows = self.rows(indices)
        return rows[:, :-1], rows[:, 1:]


class PackedSequences(Windows):
    """Fixed-length training samples cut from the EOS-separated token stream of each shard.

    Sample k is the window stream[k*L : k*L + L + 1] of its shard (inputs are its first L tokens, targets
    its last L): consecutive, non-overlapping windows that may span document boundaries, never shards.
    """

    def __init__(self, shards: IndexedShards, seq_len: int):
        self.shards, self.seq_len = shards, seq_len
        per_shard = [max(len(s) - 1, 0) // seq_len for s in shards.streams]
        self._first = np.cumsum([0] + per_shard)
        if len(self) == 0:
            raise DataError(f"{shards.directory}: fewer than seq_len+1 = {seq_len + 1} tokens in every shard")

    def __len__(self) -> int:
        return int(self._first[-1])

    def window(self, k: int) -> np.ndarray:
        s = int(np.searchsorted(self._first, k, side="right")) - 1
        lo = (k - self._first[s]) * self.seq_len
        return np.asarray(self.shards.streams[s][lo:lo + self.seq_len + 1], dtype=np.int64)

    def target_bytes(self, n_windows: int) -> Optional[float]:
        """UTF-8 bytes of text behind the target tokens of windows 0..n_windows-1: each shard's targets times
        that shard's bytes per token (so a partial evaluation, which covers the first shards, is weighed by
        their own ratio). None when the shards carry no byte counts."""
        ratios = self.shards.text_bytes_per_token
        if ratios is None:
            return None
        windows = np.clip(n_windows - self._first[:-1], 0, np.diff(self._first))
        return float(np.dot(windows * self.seq_len, ratios))


    def window_difficulty(self, metric: str) -> np.ndarray:
        """One value per window: the token-weighted mean, over the window's target tokens, of the per-token
        difficulty of the document each token belongs to (its EOS included). Per token, a document's difficulty
        is its length for `length`, its rarity divided by its length for `rarity` (so a window's value is its mean
        rarity per token) and its mean reference loss for `ref_loss`."""
        per_doc = self.shards.difficulty(metric)
        if metric == "rarity":
            per_doc = per_doc / np.maximum(self.shards.document_lengths(), 1)
        first_doc, L, out = self.shards._first_doc, self.seq_len, []
        for s, offsets in enumerate(self.shards.offsets):
            offsets = np.asarray(offsets)
            v = per_doc[first_doc[s]:first_doc[s + 1]]
            mass_before = np.concatenate([[0.0], np.cumsum(v * np.diff(offsets))])

            def mass(p):  # the sum of the per-token values over stream positions [0, p)
                d = np.minimum(np.searchsorted(offsets, p, side="right") - 1, len(v) - 1)
                return mass_before[d] + v[d] * (p - offsets[d])

            lo = np.arange(self._first[s + 1] - self._first[s]) * L + 1  # a window's targets are [kL+1, kL+L+1)
            out.append((mass(lo + L) - mass(lo)) / L)
        return np.concatenate(out)


class MixedSequences(Windows):
    """Several PackedSequences as one index space, each taking a share of the samples by weight.

    Source d owns a block of round(w_d * total) consecutive indices (total = the sources' combined size),
    cycling through its own samples when its share exceeds its size. The sampler's per-epoch permutation
    then interleaves the blocks, so the mixture's state is the sampler's position alone.
    """

    def __init__(self, sources: List[PackedSequences], weights: List[float]):
        if len(sources) != len(weights) or not sources:
            raise DataError("one weight per training directory is needed")
        total = sum(len(s) for s in sources)
        wsum = float(sum(weights))
        sizes = [max(1, round(w / wsum * total)) for w in weights]
        self.sources, self.seq_len = sources, sources[0].seq_len
        self._first = np.cumsum([0] + sizes)

    def __len__(self) -> int:
        return int(self._first[-1])

    def window(self, k: int) -> np.ndarray:
        d = int(np.searchsorted(self._first, k, side="right")) - 1
        source = self.sources[d]
        return source.window(int(k - self._first[d]) % len(source))


    def window_difficulty(self, metric: str) -> np.ndarray:
        """PackedSequences.window_difficulty over the mixture's index space."""
        out = []
        for d, source in enumerate(self.sources):
            values = source.window_difficulty(metric)
            out.append(values[np.arange(self._first[d + 1] - self._first[d]) % len(source)])
        return np.concatenate(out)


class ResumableSampler:
    """Sample indices for one rank, deterministic for (seed, world size) and resumable from a position.

    The global order is an endless sequence of epochs, each a permutation of range(n) drawn from
    numpy's Generator seeded with (seed, epoch). Each micro-step consumes the next micro_batch x world
    samples of that order; rank r takes the r-th contiguous slice. `consumed` (global samples consumed)
    is the whole state: a run restarted with the same consumed count sees exactly the same batches.
    """

    def __init__(self, n: int, micro_batch: int, rank: int, world: int, seed: int, consumed: int = 0):
        self.n, self.micro_batch, self.rank, self.world, self.seed = n, micro_batch, rank, world, seed
        self.consumed = consumed
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perm

    def next_indices(self) -> np.ndarray:
        start = self.consumed + self.rank * self.micro_batch
        positions = np.arange(start, start + self.micro_batch)
        out = np.empty(self.micro_batch, dtype=np.int64)
        for epoch in np.unique(positions // self.n):
            sel = positions // self.n == epoch
            out[sel] = self._permutation(int(epoch))[positions[sel] % self.n]
        self.consumed += self.micro_batch * self.world
        return out

    @property
    def epoch(self) -> float:
        return self.consumed / self.n


def eval_batches(n: int, micro_batch: int, rank: int, world: int,
                 max_batches: int = 0) -> Iterator[tuple[np.ndarray, int]]:
    """Evaluation order for one rank: (indices, n_valid) per batch, samples 0..n-1 split evenly.

    Every rank yields the same number of batches (short ones are padded with sample 0 and n_valid
    tells how many rows count), so collectives stay in step across ranks.
    """
    per_step = micro_batch * world
    steps = -(-n // per_step)
    if max_batches:
        steps = min(steps, max_batches)
    for step in range(steps):
        lo = step * per_step + rank * micro_batch
        idx = np.arange(lo, lo + micro_batch)
        valid = int(np.clip(n - lo, 0, micro_batch))
        yield np.where(idx < n, idx, 0), valid

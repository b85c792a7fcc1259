"""Shards, packing, the resumable sampler, evaluation order, bits per byte, and the KJV split."""

import json
import math
import os

import numpy as np
import pytest

from data_prep import kjv
from data_prep.shards import ShardWriter, write_manifest
from resnetbk.data import DataError, IndexedShards, MixedSequences, PackedSequences, ResumableSampler, eval_batches
from resnetbk.evaluate import bits_per_byte


def write_docs(tmp_path, docs, shard_tokens=1 << 20, vocab=1000, name="shards"):
    out = str(tmp_path / name)
    writer = ShardWriter(out, "00000", vocab, eos_id=2, shard_tokens=shard_tokens)
    for d in docs:
        writer.add(d)
    write_manifest(out, writer.close(), vocab, 2, tokenizer_sha256="0" * 64)
    return out


@pytest.mark.parametrize("shard_tokens", [1 << 20, 7])  # one shard, or a new shard every few documents
def test_indexed_shards_round_trip(tmp_path, shard_tokens):
    rng = np.random.default_rng(0)
    docs = [rng.integers(3, 1000, size=rng.integers(0, 20)).tolist() for _ in range(50)]
    shards = IndexedShards(write_docs(tmp_path, docs, shard_tokens))
    assert len(shards) == 50
    for i, d in enumerate(docs):
        assert shards[i].tolist() == d
    assert shards[-1].tolist() == docs[-1]
    with pytest.raises(IndexError):
        shards[50]
    assert shards.num_tokens == sum(len(d) + 1 for d in docs)
    counts = shards.token_counts()
    assert counts[2] == 50 and counts.sum() == shards.num_tokens


def test_uint32_when_vocab_exceeds_uint16(tmp_path):
    directory = write_docs(tmp_path, [[70000, 3], [5]], vocab=100_000)
    assert json.load(open(os.path.join(directory, "manifest.json")))["dtype"] == "uint32"
    assert IndexedShards(directory)[0].tolist() == [70000, 3]


def test_truncated_shard_and_missing_manifest_are_named(tmp_path):
    directory = write_docs(tmp_path, [[5, 6, 7]] * 10)
    bin_path = os.path.join(directory, "00000.bin")
    with open(bin_path, "r+b") as f:
        f.truncate(6)
    with pytest.raises(DataError, match="00000.bin"):
        IndexedShards(directory)
    with pytest.raises(DataError, match="manifest.json: not found"):
        IndexedShards(str(tmp_path / "nowhere"))


def test_corpus_root_is_refused_with_a_hint(kjv_data):
    with pytest.raises(DataError, match="train/ or val/"):
        IndexedShards(str(kjv_data))


def test_packed_windows_are_consecutive_and_shifted(tmp_path):
    docs = [list(range(3, 40)), list(range(100, 160))]
    data = PackedSequences(IndexedShards(write_docs(tmp_path, docs)), seq_len=8)
    stream = np.concatenate([docs[0], [2], docs[1], [2]])
    assert len(data) == (len(stream) - 1) // 8
    x, y = data.batch([0, 3])
    assert x[1].tolist() == stream[24:32].tolist() and y[1].tolist() == stream[25:33].tolist()
    assert data.rows([0, 3])[1].tolist() == stream[24:33].tolist()  # what the trainer copies to the device


def test_sampler_ranks_partition_each_epoch_and_resume_exactly():
    n, micro, world = 37, 3, 2
    ranks = [ResumableSampler(n, micro, r, world, seed=5) for r in range(world)]
    seen = [np.concatenate([s.next_indices() for s in ranks]) for _ in range(40)]
    flat = np.concatenate(seen)
    for epoch in range(3):  # each epoch is a permutation of range(n)
        assert sorted(flat[epoch * n:(epoch + 1) * n].tolist()) == list(range(n))
    assert not np.array_equal(flat[:n], flat[n:2 * n])  # reshuffled per epoch
    # Restart at consumed = 7 micro-steps: the same batches follow.
    again = [ResumableSampler(n, micro, r, world, seed=5, consumed=7 * micro * world) for r in range(world)]
    for step in range(7, 40):
        assert np.array_equal(np.concatenate([s.next_indices() for s in again]), seen[step])


def test_eval_batches_cover_every_sample_once_with_equal_counts():
    n, micro, world = 23, 4, 3
    per_rank = [list(eval_batches(n, micro, r, world)) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1
    valid = sorted(int(i) for batches in per_rank for idx, v in batches for i in idx[:v])
    assert valid == list(range(n))


def test_kjv_validation_books_are_held_out(kjv_data):
    markers = [json.load(open(p)) for p in sorted((kjv_data / ".done").glob("*.json"))]
    assert len(markers) == 66
    held_out = {os.path.basename(m["input"])[:-5] for m in markers if m["documents"].get("val")}
    assert held_out == set(kjv.VAL_BOOKS)
    for m in markers:  # each book lands wholly in one split
        assert len(m["documents"]) == 1
    train = json.load(open(kjv_data / "train" / "manifest.json"))
    val = json.load(open(kjv_data / "val" / "manifest.json"))
    assert train["tokenizer_sha256"] == val["tokenizer_sha256"]
    assert IndexedShards(str(kjv_data / "val")).num_tokens > 20_000
    for split, manifest in (("train", train), ("val", val)):  # the bytes of the chapters in each split
        assert manifest["text_bytes"] == sum(len(text.encode("utf-8")) for _, text in kjv.iter_chapters(split))


def test_bits_per_byte_weighs_each_shard_by_its_own_bytes(tmp_path):
    """bpb = loss x targets / (ln 2 x bytes), the bytes of the evaluated targets taken at each shard's own bytes per
    token, so an evaluation of the first windows only is not weighed by the other shards' ratio."""
    out = str(tmp_path / "split")
    shards = []
    for name, text_bytes in (("00000", 300), ("00001", 100)):  # 100 tokens each (99 + EOS): 3 and 1 bytes a token
        writer = ShardWriter(out, name, 1000, eos_id=2)
        writer.add(list(range(3, 102)), text_bytes=text_bytes)
        shards += writer.close()
    write_manifest(out, shards, 1000, 2, "0" * 64)
    assert json.load(open(os.path.join(out, "manifest.json")))["text_bytes"] == 400
    data = PackedSequences(IndexedShards(out), seq_len=9)  # 11 windows (99 targets) per shard
    assert len(data) == 22
    assert bits_per_byte(2.0, data, 22) == pytest.approx(2.0 * 198 / (math.log(2) * (99 * 3 + 99 * 1)))
    assert bits_per_byte(2.0, data, 5) == pytest.approx(2.0 / (math.log(2) * 3))  # shard 0 only
    assert bits_per_byte(2.0, data, 16) == pytest.approx(2.0 * 144 / (math.log(2) * (99 * 3 + 45 * 1)))
    old = PackedSequences(IndexedShards(write_docs(tmp_path, [list(range(3, 50))])), seq_len=9)
    assert bits_per_byte(2.0, old, 3) is None  # shards without byte counts: no bpb


def test_mixture_shares_follow_the_weights(tmp_path):
    a = PackedSequences(IndexedShards(write_docs(tmp_path, [list(range(3, 403))], name="a")), seq_len=4)
    b = PackedSequences(IndexedShards(write_docs(tmp_path, [list(range(500, 540))], name="b")), seq_len=4)
    assert (len(a), len(b)) == (100, 10)  # 400 + EOS and 40 + EOS tokens
    mix = MixedSequences([a, b], [1.0, 10.0])
    assert len(mix) == 10 + 100
    assert sum(int(mix.window(k)[0]) >= 500 for k in range(len(mix))) == 100  # b's share, cycling its 10 windows
    assert mix.window(10).tolist() == b.window(0).tolist() == mix.window(20).tolist()
    assert mix.window(9).tolist() == a.window(9).tolist()

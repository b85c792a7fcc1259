"""Curriculum and active-learning sampling: difficulty metrics against brute force, DeepSpeed's pacing,
global top-k selection that every rank agrees on, and exact resume through the trainer on 2 CPU ranks."""

import json
import os
import shutil
import sys
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from data_prep.difficulty import rarity, reference_loss, write_metrics
from data_prep.shards import ShardWriter, write_manifest
from resnetbk.config import DataConfig
from resnetbk.data import IndexedShards, PackedSequences, ResumableSampler
from resnetbk.data_selection import Pacing, WindowSampler

from conftest import assert_one_line_error, deepspeed_launcher, run_cli

VOCAB, EOS = 50, 2


def make_shards(directory, docs_per_shard):
    """Shard directory with the given documents (lists of token ids), one shard per list."""
    shards = []
    for i, docs in enumerate(docs_per_shard):
        writer = ShardWriter(str(directory), f"{i:05d}", VOCAB, EOS)
        writer.add_many(docs)
        shards += writer.close()
    write_manifest(str(directory), shards, VOCAB, EOS, "0" * 64)
    return IndexedShards(str(directory))


def random_docs(rng, n_shards=2, max_docs=6, max_len=30):
    return [[rng.integers(3, VOCAB, size=rng.integers(0, max_len)).tolist() for _ in range(rng.integers(1, max_docs))]
            for _ in range(n_shards)]


def token_streams(shards):
    """Per shard: the stream and the document id of every position (EOS belongs to its document)."""
    out = []
    for stream, offsets in zip(shards.streams, shards.offsets):
        doc = np.searchsorted(np.asarray(offsets), np.arange(len(stream)), side="right") - 1
        out.append((np.asarray(stream), doc))
    return out


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), seq_len=st.integers(1, 12))
def test_window_difficulty_is_the_token_weighted_mean_of_the_documents(tmp_path_factory, seed, seq_len):
    rng = np.random.default_rng(seed)
    directory = tmp_path_factory.mktemp("shards")
    docs = random_docs(rng)
    if sum(len(d) + 1 for shard in docs for d in shard) < 2 * (seq_len + 1):
        docs[0].append(list(range(3, 3 + 2 * seq_len)))
    shards = make_shards(directory, docs)
    try:
        data = PackedSequences(shards, seq_len)
    except ValueError:
        return  # every shard shorter than a window: nothing to sample
    values = {"length": shards.document_lengths().astype(np.float64), "rarity": rng.uniform(0, 50, len(shards)),
              "ref_loss": rng.uniform(0, 8, len(shards))}
    os.makedirs(directory / "difficulty")
    for name, v in values.items():
        np.save(directory / "difficulty" / f"{name}.npy", v.astype(np.float32))
    lengths = np.maximum(shards.document_lengths(), 1)
    for metric in values:
        per_token_of_doc = np.load(directory / "difficulty" / f"{metric}.npy").astype(np.float64)
        if metric == "rarity":
            per_token_of_doc = per_token_of_doc / lengths
        expected, first_doc = [], 0
        for s, (stream, doc) in enumerate(token_streams(shards)):
            for k in range((len(stream) - 1) // seq_len):
                targets = np.arange(k * seq_len + 1, k * seq_len + seq_len + 1)
                expected.append(per_token_of_doc[first_doc + doc[targets]].mean())
            first_doc += len(shards.offsets[s]) - 1
        np.testing.assert_allclose(data.window_difficulty(metric), expected, rtol=1e-6, atol=1e-6)


def test_rarity_and_reference_loss_match_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    shards = make_shards(tmp_path, random_docs(rng, n_shards=3, max_docs=5, max_len=20))
    counts = np.bincount(np.concatenate([np.asarray(s) for s in shards.streams]), minlength=VOCAB) + 1.0
    neg_log_p = -np.log(counts / counts.sum())
    np.testing.assert_allclose(rarity(shards), [neg_log_p[shards[i]].sum() for i in range(len(shards))], rtol=1e-9)

    table = torch.randn(VOCAB, VOCAB, generator=torch.Generator().manual_seed(1))

    class Bigram(torch.nn.Module):  # logits depend on the previous token only: brute force is easy
        def forward(self, x):
            return table[x]

    log_probs = torch.log_softmax(table, -1).numpy()
    expected, counts = np.zeros(len(shards)), np.zeros(len(shards))
    first_doc = 0
    for s, (stream, doc) in enumerate(token_streams(shards)):
        for p in range(1, len(stream)):  # the first token of a shard has no context
            expected[first_doc + doc[p]] -= log_probs[stream[p - 1], stream[p]]
            counts[first_doc + doc[p]] += 1
        first_doc += len(shards.offsets[s]) - 1
    got = reference_loss(shards, Bigram(), seq_len=4, batch_size=3, device="cpu")  # padded last windows too
    scored = counts > 0
    np.testing.assert_allclose(got[scored], expected[scored] / counts[scored], rtol=1e-6)


def data_cfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(DataConfig), {"train": "x", "val": "x", "tokenizer": "x", **kw})


def curriculum(**kw):
    return data_cfg(curriculum=kw).curriculum


def test_pacing_follows_deepspeeds_formulas():
    linear = Pacing(curriculum(total_steps=100), 10, 100, 1)
    assert [linear(s) for s in (0, 1, 50, 99, 100, 500)] == [10, 10, 55, 99, 100, 100]  # floor(10 + 90 s / 100)
    root = Pacing(curriculum(schedule="fixed_root", total_steps=100, root_degree=2), 10, 100, 1)
    assert [root(s) for s in (0, 25, 64, 100)] == [10, 55, 82, 100]  # floor(10 + 90 sqrt(s / 100))
    discrete = Pacing(curriculum(schedule="fixed_discrete", discrete_steps=[5, 9]), 10, 100, 1, [20, 50, 100])
    assert [discrete(s) for s in (1, 5, 6, 9, 10, 1000)] == [20, 20, 50, 50, 100, 100]
    seqlen = Pacing(curriculum(total_steps=10), 16, 128, 8)  # lengths are multiples of 8
    assert [seqlen(s) for s in (0, 3, 5, 10)] == [16, 48, 72, 128]


class FakeData:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def test_uniform_sampling_is_the_resumable_permutation_unchanged():
    sampler = WindowSampler(FakeData(50), data_cfg(), 8, seed=3, rank=1, world=2, micro_batch=4)
    reference = ResumableSampler(50, 4, rank=1, world=2, seed=3)
    for step in range(1, 30):
        np.testing.assert_array_equal(sampler.next_indices(step), reference.next_indices())


def test_curriculum_draws_from_the_easiest_share_and_resumes_from_the_consumed_count():
    n = 1000
    difficulty = np.random.default_rng(0).permutation(n).astype(np.float64)  # window i has difficulty rank d[i]
    cfg = data_cfg(curriculum={"metric": "rarity", "start_percent": 10, "total_steps": 20})
    sampler = WindowSampler(FakeData(n), cfg, 8, 0, rank=0, world=1, micro_batch=16, difficulty=difficulty)
    first = sampler.next_indices(1)
    assert difficulty[first].max() < 0.15 * n  # pool at step 1: floor(10 + 90/20) = 14%
    late = np.concatenate([sampler.next_indices(20) for _ in range(20)])
    assert difficulty[late].max() > 0.9 * n  # every window is in the pool at total_steps
    stats = sampler.pop_stats()
    assert 10 <= stats["curriculum_percent"] <= 100 and "curriculum_threshold" in stats
    again = WindowSampler(FakeData(n), cfg, 8, 0, rank=0, world=1, micro_batch=16, difficulty=difficulty, consumed=16)
    sampler = WindowSampler(FakeData(n), cfg, 8, 0, rank=0, world=1, micro_batch=16, difficulty=difficulty)
    sampler.next_indices(1)
    np.testing.assert_array_equal(sampler.next_indices(5), again.next_indices(5))


def run_ranks(world, micro_batch, keep, scores_of, n=97, steps=3, score="loss", ref_loss=None):
    """Runs one WindowSampler per rank in threads with a real all-gather (a barrier); returns per step the
    candidates and selections of every rank."""
    barrier, slots = threading.Barrier(world), [None] * world
    results = [[None] * steps for _ in range(world)]
    cfg = data_cfg(active={"score": score, "keep_fraction": keep})

    def rank_main(rank):
        def gather(array):
            slots[rank] = array
            barrier.wait()
            out = list(slots)
            barrier.wait()  # nobody overwrites a slot before everyone has read it
            return out

        sampler = WindowSampler(FakeData(n), cfg, 8, 7, rank, world, micro_batch, ref_loss=ref_loss, gather=gather)
        for step in range(steps):
            seen = []
            kept = sampler.next_indices(step + 1, lambda idx: (seen.append(idx), scores_of(idx))[1])
            results[rank][step] = (seen[0], kept)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


@settings(max_examples=25, deadline=None)
@given(world=st.integers(1, 4), micro_batch=st.integers(1, 6), keep=st.sampled_from([0.1, 0.25, 0.5, 0.7, 1.0]),
       coarse=st.booleans())
def test_every_rank_trains_on_its_share_of_one_global_top_k(world, micro_batch, keep, coarse):
    scores = np.random.default_rng(world * 100 + micro_batch).normal(size=97)
    if coarse:
        scores = np.round(scores)  # many ties
    results = run_ranks(world, micro_batch, keep, lambda idx: scores[idx])
    for step in range(3):
        pool = np.concatenate([results[r][step][0] for r in range(world)])  # global pool, in pool order
        kept = np.concatenate([results[r][step][1] for r in range(world)])
        assert all(len(results[r][step][1]) == micro_batch for r in range(world))
        order = sorted(range(len(pool)), key=lambda p: (-scores[pool[p]], p))  # ties: earlier pool position
        expected = pool[sorted(order[:micro_batch * world])]
        np.testing.assert_array_equal(kept, expected)


def test_the_global_selection_does_not_depend_on_the_world_size():
    scores = np.random.default_rng(5).normal(size=97)
    one = run_ranks(1, 8, 0.25, lambda idx: scores[idx])
    two = run_ranks(2, 4, 0.25, lambda idx: scores[idx])
    for step in range(3):
        np.testing.assert_array_equal(one[0][step][1], np.concatenate([two[0][step][1], two[1][step][1]]))


def test_reducible_loss_subtracts_the_reference_loss():
    loss = np.linspace(1, 2, 97)
    ref = loss - np.arange(97) % 5  # reducible part = 0..4 by window index
    kept = run_ranks(1, 4, 0.5, lambda idx: loss[idx], score="reducible", ref_loss=ref, steps=1)[0][0]
    candidates, chosen = kept
    reducible = (loss - ref)[candidates]
    assert sorted(reducible[np.isin(candidates, chosen)]) == sorted(reducible)[-4:]


def test_difficulty_command_writes_the_metrics_and_refuses_a_foreign_reference(kjv_data, tmp_path):
    split = tmp_path / "train"
    shutil.copytree(kjv_data / "train", split)
    info = write_metrics(str(split), None, None, 8, "cpu")
    assert (set(info["metrics"]) == {"length", "rarity"}
            and info["shards"]["documents"] == len(IndexedShards(str(split))))
    export = tmp_path / "export"
    os.makedirs(export)
    (export / "model.safetensors").write_bytes(b"")
    (export / "config.yaml").write_text("model: {}\n")
    (export / "tokenizer.model").write_bytes(b"not the tokenizer")
    proc = run_cli([sys.executable, "-m", "data_prep", "difficulty", str(split), "--reference", str(export)])
    assert_one_line_error(proc, "--reference")
    proc = run_cli([sys.executable, "-m", "data_prep", "difficulty", str(tmp_path / "nowhere")])
    assert_one_line_error(proc, "manifest.json")

    # A real export (an untrained model): its reference loss is near ln V for every document.
    from safetensors.torch import save_file

    from resnetbk.config import ModelConfig
    from resnetbk.models.decoder import CausalLM

    model_cfg = OmegaConf.structured(ModelConfig(vocab_size=512, max_seq_len=64, d_model=32, n_layers=1, n_heads=2,
                                                 ffn_hidden=64, moe_experts=2, moe_top_k=1))
    torch.manual_seed(0)
    save_file(CausalLM(model_cfg).state_dict(), str(export / "model.safetensors"))
    (export / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create({"model": model_cfg})))
    shutil.copyfile(kjv_data / "tokenizer.model", export / "tokenizer.model")
    proc = run_cli([sys.executable, "-m", "data_prep", "difficulty", str(split), "--reference", str(export),
                    "--batch-size", "32"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    ref_loss = IndexedShards(str(split)).difficulty("ref_loss")
    assert np.all(np.abs(ref_loss - np.log(512)) < 1.0)
    info = json.load(open(split / "difficulty" / "info.json"))
    assert set(info["metrics"]) == {"length", "rarity", "ref_loss"} and info["metrics"]["ref_loss"]["seq_len"] == 64

    info["shards"]["tokens"] += 1  # as if the shards had been rebuilt since
    (split / "difficulty" / "info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="stale"):
        IndexedShards(str(split)).difficulty("length")


@pytest.mark.distributed
def test_curriculum_and_active_learning_resume_exactly_on_two_ranks(kjv_data, tmp_path):
    """Curriculum by rarity with a sequence-length warm-up, and RHO-LOSS selection, on 2 CPU ranks: a run
    saving at step 6 and one resumed from there log the same losses, selections and statistics, bitwise."""
    from conftest import TINY, read_metrics

    data = tmp_path / "kjv"
    shutil.copytree(kjv_data, data)
    write_metrics(str(data / "train"), None, None, 8, "cpu")
    # A stand-in reference loss (a reference checkpoint is exercised by the difficulty command itself).
    lengths = IndexedShards(str(data / "train")).document_lengths()
    np.save(data / "train" / "difficulty" / "ref_loss.npy", (3 + np.log1p(lengths)).astype(np.float32))
    common = [*deepspeed_launcher(), "--module", "resnetbk.train", "--config", "configs/tiny.yaml",
              f"data.train={data}/train", f"data.val={data}/val", f"data.tokenizer={data}/tokenizer.model", *TINY,
              "train.max_steps=12", "train.log_interval=2", "train.eval_interval=12", "sample.max_new_tokens=0",
              "data.curriculum.metric=rarity", "data.curriculum.total_steps=8", "data.curriculum.start_percent=20",
              "data.curriculum.seqlen_start=16", "data.active.score=reducible", "data.active.keep_fraction=0.5"]
    full = run_cli([*common, "train.save_interval=6", f"run_dir={tmp_path / 'full'}"])
    assert full.returncode == 0, full.stdout[-3000:] + full.stderr[-3000:]
    assert "active learning (reducible): top 8 of 16 candidates per rank" in full.stdout
    resumed = run_cli([*common, f"resume={tmp_path / 'full' / 'checkpoints' / 'step00000006'}",
                       f"run_dir={tmp_path / 'resumed'}"])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "resumed")
    compared = ("step", "loss", "lr", "tokens", "flops", "seq_len", "epoch", "curriculum_percent",
                "curriculum_threshold", "pool_size", "kept_fraction", "score_kept", "score_dropped", "scoring_flops")
    assert [{k: r[k] for k in compared} for r in a[3:]] == [{k: r[k] for k in compared} for r in b]
    warmup = Pacing(curriculum(total_steps=8), 16, 64, 8)  # 16 -> train.seq_len=64 over 8 steps
    assert [r["seq_len"] for r in a] == [warmup(s) for s in range(2, 13, 2)] == [24, 40, 48, 64, 64, 64]
    assert [r["tokens"] for r in a] == [16 * sum(warmup(i) for i in range(1, s + 1)) for s in range(2, 13, 2)]
    assert all(r["score_kept"] > r["score_dropped"] for r in a)
    assert a[-1]["curriculum_percent"] == 100 and a[0]["curriculum_percent"] < 50

    import glob

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = glob.glob(str(tmp_path / "full" / "tensorboard" / "**" / "events.out.tfevents.*"), recursive=True)
    acc = EventAccumulator(events[0])
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for name in ("data/curriculum_percent", "data/curriculum_threshold", "data/pool_size", "data/kept_fraction",
                 "data/score_kept", "data/score_dropped", "data/seq_len"):
        assert name in tags, name

"""data_prep: formats, the bad-input policy, determinism across workers, idempotence and resume."""

import gzip
import json
import os
import sys

import pytest
import zstandard

from data_prep import kjv  # noqa: E402
from data_prep.corpus import hash_fraction
from data_prep.readers import Skips, read_documents
from resnetbk.data import IndexedShards

from conftest import assert_one_line_error, run_cli

DOCS = [text for _, text in kjv.iter_chapters("train")][:60]  # real text: chapters of the KJV


def write_c4(path, records, raw_lines=()):
    with gzip.open(path, "wb") as f:
        for r in records:
            f.write((json.dumps(r) + "\n").encode())
        for line in raw_lines:
            f.write(line)


def write_pile(path, frames):
    """Each frame a separately compressed chunk of JSON lines: a multi-frame .zst like The Pile's."""
    with open(path, "wb") as f:
        for records in frames:
            f.write(zstandard.ZstdCompressor().compress("".join(json.dumps(r) + "\n" for r in records).encode()))


def data_prep(*args):
    return run_cli([sys.executable, "-m", "data_prep", *args], timeout=300,
                   env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})


@pytest.fixture()
def c4_files(tmp_path):
    paths = []
    for k in range(3):
        p = tmp_path / f"c4-train.{k:05d}-of-01024.json.gz"
        write_c4(p, [{"text": t, "timestamp": "2019-04-25", "url": f"https://example.org/{i}"}
                     for i, t in enumerate(DOCS[k * 20:(k + 1) * 20])])
        paths.append(p)
    return paths


def test_formats_are_read(tmp_path):
    skips = Skips()
    write_c4(tmp_path / "a.json.gz", [{"text": "one", "url": "u"}, {"text": "two"}])
    assert [d.text for d in read_documents(str(tmp_path / "a.json.gz"), "c4", skips)] == ["one", "two"]
    write_pile(tmp_path / "00.jsonl.zst", [[{"text": "a", "meta": {"pile_set_name": "Pile-CC"}}],
                                            [{"text": "b", "meta": {"pile_set_name": "ArXiv"}},
                                             {"text": "c", "meta": {}}]])
    docs = list(read_documents(str(tmp_path / "00.jsonl.zst"), "pile", skips))
    assert [(d.text, d.subset) for d in docs] == [("a", "Pile-CC"), ("b", "ArXiv"), ("c", "unknown")]
    (tmp_path / "x.jsonl").write_text(json.dumps({"body": "field"}) + "\n")
    assert [d.text for d in read_documents(str(tmp_path / "x.jsonl"), "jsonl", skips, text_field="body")] == ["field"]
    (tmp_path / "t.txt").write_text("first para\nstill first\n\n\nsecond\n")
    assert ([d.text for d in read_documents(str(tmp_path / "t.txt"), "text", skips)]
            == ["first para\nstill first", "second"])
    assert not skips.counts


def test_bad_records_are_skipped_counted_and_located(tmp_path, kjv_data):
    bad = tmp_path / "bad.json.gz"
    write_c4(bad, [{"text": DOCS[0]}, {"url": "no text"}, {"text": 5}, {"text": "   "}, {"text": "x" * 30_000}],
             raw_lines=[b"{not json\n", b'{"text": "caf\xe9"}\n', ("%s\n" % json.dumps({"text": DOCS[1]})).encode()])
    out = tmp_path / "out"
    proc = data_prep("shards", "--format", "c4", "--input", str(bad), "--tokenizer", str(kjv_data / "tokenizer.model"),
                     "--out", str(out), "--max-chars", "20000")
    assert proc.returncode == 0, proc.stderr
    m = json.load(open(out / "manifest.json"))
    assert m["documents"] == 2
    assert m["skipped"] == {"empty": 1, "invalid_json": 1, "invalid_utf8": 1, "missing_text": 1, "non_string_text": 1,
                            "too_long": 1}
    assert m["skipped_first"]["invalid_json"] == f"{bad}:6" and m["skipped_first"]["missing_text"] == f"{bad}:2"


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_truncated_archives_stop_with_the_file_named(tmp_path, kjv_data, kind):
    path = tmp_path / ("cut.json.gz" if kind == "gz" else "cut.jsonl.zst")
    if kind == "gz":
        write_c4(path, [{"text": t} for t in DOCS])
    else:
        write_pile(path, [[{"text": t} for t in DOCS]])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    proc = data_prep("shards", "--format", "c4" if kind == "gz" else "pile", "--input", str(path),
                     "--tokenizer", str(kjv_data / "tokenizer.model"), "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, str(path), "truncated")


def test_empty_glob_and_unwritable_output(tmp_path, kjv_data, c4_files):
    tok = str(kjv_data / "tokenizer.model")
    assert_one_line_error(data_prep("shards", "--format", "c4", "--input", str(tmp_path / "none*.gz"),
                                    "--tokenizer", tok, "--out", str(tmp_path / "o")), "none*.gz", "no input file")
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should go")
    assert_one_line_error(data_prep("shards", "--format", "c4", "--input", str(c4_files[0]), "--tokenizer", tok,
                                    "--out", str(blocker / "sub")), str(blocker / "sub"))
    assert_one_line_error(data_prep("shards", "--format", "c4", "--input", str(c4_files[0]), "--tokenizer",
                                    str(tmp_path / "missing.model"), "--out", str(tmp_path / "o")), "missing.model")


def test_workers_rerun_and_resume_give_identical_output(tmp_path, kjv_data, c4_files):
    tok = str(kjv_data / "tokenizer.model")
    glob = str(c4_files[0].parent / "c4-train.*.json.gz")
    common = ["shards", "--format", "c4", "--input", glob, "--tokenizer", tok, "--val-fraction", "0.2"]
    one, two = tmp_path / "w1", tmp_path / "w2"
    assert data_prep(*common, "--out", str(one)).returncode == 0
    assert data_prep(*common, "--out", str(two), "--workers", "2").returncode == 0
    manifest = (one / "manifest.json").read_text()
    assert json.loads(manifest)["shard_sha256"] == json.loads((two / "manifest.json").read_text())["shard_sha256"]
    m = json.loads(manifest)
    assert m["documents"] == 60 and m["splits"]["val"]["documents"] == sum(hash_fraction(t) < 0.2 for t in DOCS)
    val = IndexedShards(str(one / "val"))
    assert len(val) == m["splits"]["val"]["documents"] and m["splits"]["val"]["documents"] > 0
    # A repeated run is a no-op with the same result.
    again = data_prep(*common, "--out", str(one))
    assert "already done" in again.stderr and (one / "manifest.json").read_text() == manifest
    # An interrupted run (one input unfinished: no marker, a half-written shard) resumes to the same result.
    os.remove(one / ".done" / "00001.json")
    with open(one / "train" / "00001.bin", "r+b") as f:
        f.truncate(10)
    assert data_prep(*common, "--out", str(one)).returncode == 0
    assert (one / "manifest.json").read_text() == manifest


def test_split_manifests_count_the_bytes_of_their_own_documents(tmp_path, kjv_data, c4_files):
    """text_bytes per shard, per split and in the corpus summary: the UTF-8 size of exactly the documents that
    went into each split (what bits per byte divide by). A marker from before byte counts is redone."""
    out = tmp_path / "out"
    args = ["shards", "--format", "c4", "--input", str(c4_files[0].parent / "c4-train.*.json.gz"), "--tokenizer",
            str(kjv_data / "tokenizer.model"), "--out", str(out), "--val-fraction", "0.2"]
    assert data_prep(*args).returncode == 0
    expected = {split: sum(len(t.encode("utf-8")) for t in DOCS if (hash_fraction(t) < 0.2) == (split == "val"))
                for split in ("train", "val")}
    summary = json.load(open(out / "manifest.json"))
    for split in ("train", "val"):
        m = json.load(open(out / split / "manifest.json"))
        assert m["text_bytes"] == expected[split] == summary["splits"][split]["text_bytes"] > 0
        assert sum(s["text_bytes"] for s in m["shards"]) == m["text_bytes"] and len(m["shards"]) == 3
    assert summary["text_bytes"] == sum(expected.values())

    marker = out / ".done" / "00001.json"
    old = json.load(open(marker))
    for shards in old["shards"].values():
        for shard in shards:
            del shard["text_bytes"]
    marker.write_text(json.dumps(old))
    again = data_prep(*args)
    assert "2 of 3 inputs already done" in again.stderr
    assert json.load(open(out / "manifest.json")) == summary


def test_pile_subsets_across_frames(tmp_path, kjv_data):
    path = tmp_path / "00.jsonl.zst"
    write_pile(path, [[{"text": t, "meta": {"pile_set_name": "Pile-CC"}} for t in DOCS[:30]],
                      [{"text": t, "meta": {"pile_set_name": "Github"}} for t in DOCS[30:]]])
    out = tmp_path / "out"
    assert data_prep("shards", "--format", "pile", "--input", str(path),
                     "--tokenizer", str(kjv_data / "tokenizer.model"), "--out", str(out)).returncode == 0
    m = json.load(open(out / "manifest.json"))
    assert m["subsets"] == {"Github": 30, "Pile-CC": 30} and m["documents"] == 60


def test_datasets_streaming_path_on_local_files(tmp_path, kjv_data):
    path = tmp_path / "local.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCS[:25]))
    out = tmp_path / "out"
    proc = data_prep("shards", "--format", "hf", "--input", "json", "--hf-data-files", str(path),
                     "--tokenizer", str(kjv_data / "tokenizer.model"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.load(open(out / "manifest.json"))["documents"] == 25


def test_tokenizer_command(tmp_path, c4_files):
    import sentencepiece as spm

    model = tmp_path / "tok.model"
    proc = data_prep("tokenizer", "--format", "c4", "--input", str(c4_files[0].parent / "*.json.gz"),
                     "--vocab-size", "512", "--out", str(model))
    assert proc.returncode == 0, proc.stderr
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert sp.get_piece_size() == 512
    assert sp.decode(sp.encode("day 2024 \u00e9\u00e8")) == "day 2024 \u00e9\u00e8"  # byte fallback: nothing lost
    too_big = data_prep("tokenizer", "--format", "c4", "--input", str(c4_files[0]), "--vocab-size", "50000",
                        "--out", str(tmp_path / "big.model"))
    assert_one_line_error(too_big, "big.model", "SentencePiece")

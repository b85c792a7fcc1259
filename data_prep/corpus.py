"""From input files to train/ and val/ shard directories, one job per input file.

Each job tokenizes one input and writes OUT/train/NNNNN.bin and OUT/val/NNNNN.bin (NNNNN = the input's
position in the sorted input list), then a marker OUT/.done/NNNNN.json with its counts. Markers make the
run resumable (an interrupted run redoes only inputs without one) and the manifests are merged from the
markers in input order, so the output is the same for any number of workers and for a repeated run.

The validation split is decided per document by a hash of its text (stable across runs and worker
counts); the KJV instead holds out whole books.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import sys
import threading
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import List, Optional

from tqdm import tqdm

from . import kjv
from .readers import Skips, read_documents
from .shards import ShardWriter, write_json_atomic, write_manifest
from .tokenizer import file_sha256

CORPUS_FORMAT = "resnetbk-corpus/1"
ENCODE_BATCH = 512


def hash_fraction(text: str | bytes) -> float:
    """A number in [0, 1) fixed by the document's text (UTF-8 bytes)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") / 2.0 ** 64


@dataclass
class Job:
    index: int
    path: str
    fmt: str
    out: str
    tokenizer: str
    val_fraction: float
    text_field: str = "text"
    max_chars: int = 1_000_000
    hf_data_files: Optional[List[str]] = None
    hf_split: str = "train"
    hf_config: Optional[str] = None


def _input_identity(job: Job) -> dict:
    ident = {"input": job.path, "format": job.fmt, "val_fraction": job.val_fraction, "text_field": job.text_field,
             "max_chars": job.max_chars}
    if os.path.isfile(job.path):
        st = os.stat(job.path)
        ident.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
    return ident


def marker_path(out: str, index: int) -> str:
    return os.path.join(out, ".done", f"{index:05d}.json")


def _documents(job: Job, skips: Skips):
    """(text, subset, split, UTF-8 size) per document of the job's input."""
    if job.fmt == "kjv":  # one book per input; its split is the book's
        split = "val" if os.path.basename(job.path)[:-5] in kjv.VAL_BOOKS else "train"
        for _, text in kjv.chapters_of(job.path):
            yield text, None, split, len(text.encode("utf-8"))
        return
    for doc in read_documents(job.path, job.fmt, skips, job.text_field, job.max_chars, job.hf_data_files,
                              job.hf_split, job.hf_config):
        data = doc.text.encode("utf-8")
        yield doc.text, doc.subset, "val" if hash_fraction(data) < job.val_fraction else "train", len(data)


def _prefetched_batches(items, size: int, depth: int = 4):
    """Batches of `size` items, produced by a background thread: reading, decompressing and parsing the
    next batch overlap with encoding this one (SentencePiece releases the GIL while it encodes)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = object()

    def produce():
        try:
            batch = []
            for item in items:
                batch.append(item)
                if len(batch) == size:
                    q.put(batch)
                    batch = []
            if batch:
                q.put(batch)
            q.put(stop)
        except BaseException as e:  # handed to the consumer, which raises it in its own thread
            q.put(e)

    threading.Thread(target=produce, daemon=True).start()
    while True:
        batch = q.get()
        if batch is stop:
            return
        if isinstance(batch, BaseException):
            raise batch
        yield batch


def process(job: Job, tokenizer_sha256: str) -> dict:
    """Tokenizes one input into its train/val shards and writes its marker. Runs in a worker process."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=job.tokenizer)
    name = f"{job.index:05d}"
    writers = {s: ShardWriter(os.path.join(job.out, s), name, sp.get_piece_size(), sp.eos_id())
               for s in ("train", "val")}
    skips, subsets = Skips(), Counter()
    docs = Counter()
    text_bytes = 0
    batch = []

    for batch in _prefetched_batches(_documents(job, skips), ENCODE_BATCH):
        ids = sp.encode([b[0] for b in batch], num_threads=1)
        for split, writer in writers.items():
            chosen = [i for i, b in enumerate(batch) if b[2] == split]
            if chosen:
                writer.add_many([ids[i] for i in chosen], sum(batch[i][3] for i in chosen))
                docs[split] += len(chosen)
        subsets.update(b[1] for b in batch if b[1] is not None)
        text_bytes += sum(b[3] for b in batch)
    result = {**_input_identity(job), "tokenizer_sha256": tokenizer_sha256, "text_bytes": text_bytes,
              "documents": dict(docs), "skipped": dict(skips.counts), "skipped_first": skips.first,
              "subsets": dict(subsets), "shards": {s: w.close() for s, w in writers.items()}}
    os.makedirs(os.path.dirname(marker_path(job.out, job.index)), exist_ok=True)
    write_json_atomic(marker_path(job.out, job.index), result)
    return result


def _reusable(job: Job, tokenizer_sha256: str) -> Optional[dict]:
    path = marker_path(job.out, job.index)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        done = json.load(f)
    ident = {**_input_identity(job), "tokenizer_sha256": tokenizer_sha256}
    if not all(done.get(k) == v for k, v in ident.items()):
        return None
    # Written before shards recorded their text bytes: redone, so that every split has bits per byte.
    return done if all("text_bytes" in s for shards in done["shards"].values() for s in shards) else None


def build(jobs: List[Job], workers: int = 1, progress: bool = True) -> dict:
    """Runs the jobs not already done, then writes OUT/{train,val}/manifest.json and OUT/manifest.json."""
    import sentencepiece as spm

    out = jobs[0].out
    tok_sha = file_sha256(jobs[0].tokenizer)
    sp = spm.SentencePieceProcessor(model_file=jobs[0].tokenizer)
    results = {}
    todo = []
    for job in jobs:
        done = _reusable(job, tok_sha)
        if done is None:
            todo.append(job)
        else:
            results[job.index] = done
    if results:
        state = "all already done" if not todo else "already done, resuming with the rest"
        print(f"data_prep: {len(results)} of {len(jobs)} inputs {state}", file=sys.stderr)
    # disable=None: a bar on a terminal only, so logs and pipes get clean lines.
    with tqdm(total=len(todo), desc="inputs", unit="file", disable=None if progress and todo else True) as bar:
        if workers <= 1 or len(todo) <= 1:
            for job in todo:
                results[job.index] = process(job, tok_sha)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(process, job, tok_sha): job for job in todo}
                for future in futures:
                    results[futures[future].index] = future.result()
                    bar.update()
    return _write_manifests(out, [results[j.index] for j in jobs], sp.get_piece_size(), sp.eos_id(), tok_sha)


def _write_manifests(out: str, results: List[dict], vocab_size: int, eos_id: int, tok_sha: str) -> dict:
    skipped, subsets = Counter(), Counter()
    first: dict = {}
    for r in results:
        skipped.update(r["skipped"])
        subsets.update(r["subsets"])
        for k, v in r["skipped_first"].items():
            first.setdefault(k, v)
    splits = {}
    for split in ("train", "val"):
        shards = [s for r in results for s in r["shards"][split]]
        m = write_manifest(os.path.join(out, split), shards, vocab_size, eos_id, tok_sha)
        splits[split] = {"documents": m["documents"], "tokens": m["tokens"], "text_bytes": m.get("text_bytes"),
                         "shards": len(shards)}
    summary = {
        "format": CORPUS_FORMAT, "tokenizer_sha256": tok_sha, "vocab_size": vocab_size,
        "inputs": [r["input"] for r in results], "text_bytes": sum(r["text_bytes"] for r in results),
        "documents": sum(s["documents"] for s in splits.values()), "tokens": sum(s["tokens"] for s in splits.values()),
        "skipped": dict(sorted(skipped.items())), "skipped_first": dict(sorted(first.items())),
        "subsets": dict(sorted(subsets.items())), "splits": splits,
        "shard_sha256": {f"{split}/{s['bin']}": s["sha256"] for split in ("train", "val")
                         for r in results for s in r["shards"][split]},
    }
    write_json_atomic(os.path.join(out, "manifest.json"), summary)
    return summary


def make_jobs(inputs: List[str], fmt: str, out: str, tokenizer: str, val_fraction: float, **options) -> List[Job]:
    return [Job(i, path, fmt, out, tokenizer, val_fraction, **options) for i, path in enumerate(inputs)]


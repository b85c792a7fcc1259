"""Data preparation and loader speed. Prints a table and writes JSON.

    python -m benchmarks.data.prep [--copies 16] [--files 4] [--repeats 3] [--out data_prep.json]

Corpus: the KJV's chapters (real text) repeated --copies times, each copy's documents given distinct ids,
written as --files C4-style .json.gz files. The tokenizer is the embedded corpus's (data/kjv, 4096
pieces; prepared if missing). Measured:
  * raw encode: SentencePiece encode of the same documents, one thread, already in memory, in the
    pipeline's batches;
  * end to end: `data_prep shards` on the files (read + gunzip + JSON parse + encode + write + checksum),
    at 1 and 2 workers; MB/s of raw UTF-8 text;
  * loader: time to fetch one training batch from memory-mapped shards, next to a training step.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import tempfile
import time

from data_prep import kjv
from data_prep.__main__ import main as data_prep_main
from data_prep.corpus import ENCODE_BATCH, build, make_jobs
from resnetbk.data import IndexedShards, PackedSequences, ResumableSampler


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--out", default="data_prep.json")
    args = parser.parse_args()
    import sentencepiece as spm

    tok = "data/kjv/tokenizer.model"
    if not os.path.isfile(tok):
        data_prep_main(["kjv", "--out", "data/kjv"])
    chapters = [text for _, text in kjv.iter_chapters("train")] + [text for _, text in kjv.iter_chapters("val")]
    docs = [f"[{c}] {text}" for c in range(args.copies) for text in chapters]
    text_mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    work = tempfile.mkdtemp(prefix="bench-data-")
    try:
        per_file = -(-len(docs) // args.files)
        for k in range(args.files):
            with gzip.open(os.path.join(work, f"c4-train.{k:05d}-of-{args.files:05d}.json.gz"), "wt",
                           encoding="utf-8") as f:
                for i, d in enumerate(docs[k * per_file:(k + 1) * per_file]):
                    f.write(json.dumps({"text": d, "timestamp": "2019-04-25T00:00:00Z",
                                        "url": f"https://example.org/{k}/{i}"}) + "\n")
        sp = spm.SentencePieceProcessor(model_file=tok)
        # Best of --repeats: this 2-core machine's timings vary by 20% or more from run to run.
        # Raw encode uses the same batches of ENCODE_BATCH documents as the pipeline.
        raw_times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for lo in range(0, len(docs), ENCODE_BATCH):
                sp.encode(docs[lo:lo + ENCODE_BATCH], num_threads=1)
            raw_times.append(time.perf_counter() - t0)
        raw = text_mb / min(raw_times)
        print(f"corpus {text_mb:.1f} MB of text in {len(docs):,} documents, {args.files} files; "
              f"raw encode {raw:.2f} MB/s", flush=True)
        inputs = sorted(os.path.join(work, f) for f in os.listdir(work) if f.endswith(".json.gz"))
        rows = []
        for workers in (1, 2):
            times = []
            for rep in range(args.repeats):
                out = os.path.join(work, f"out{workers}-{rep}")
                t0 = time.perf_counter()
                summary = build(make_jobs(inputs, "c4", out, tok, 0.005), workers=workers, progress=False)
                times.append(time.perf_counter() - t0)
            secs = min(times)
            mbps = summary["text_bytes"] / 1e6 / secs
            rows.append({"workers": workers, "seconds": secs, "MBps": mbps, "MBps_per_worker": mbps / workers,
                         "per_worker_vs_raw_encode": mbps / workers / raw})
            print(f"  {workers} worker(s): {secs:.1f} s, {mbps:.2f} MB/s, {mbps / workers:.2f} MB/s per worker "
                  f"({mbps / workers / raw:.0%} of raw encode)", flush=True)
        data = PackedSequences(IndexedShards(os.path.join(work, "out1-0", "train")), 1024)
        sampler = ResumableSampler(len(data), 8, 0, 1, seed=0)
        fetch = []
        for _ in range(50):
            t0 = time.perf_counter()
            data.batch(sampler.next_indices())
            fetch.append(time.perf_counter() - t0)
        fetch_ms = sorted(fetch)[len(fetch) // 2] * 1e3
        print(f"  loader: batch of 8 x 1024 tokens in {fetch_ms:.3f} ms (median of 50)", flush=True)
    finally:
        shutil.rmtree(work)
    report = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "repeats": args.repeats, "text_MB": text_mb,
              "documents": len(docs), "files": args.files, "raw_encode_MBps": raw, "end_to_end": rows,
              "loader_batch_8x1024_ms": fetch_ms}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\n{'workers':>7} | {'MB/s':>6} | {'MB/s/worker':>11} | vs raw encode ({raw:.2f} MB/s, 1 thread)")
    for r in rows:
        print(f"{r['workers']:>7} | {r['MBps']:6.2f} | {r['MBps_per_worker']:11.2f} | "
              f"{r['per_worker_vs_raw_encode']:.0%}")
    print(f"loader: {fetch_ms:.3f} ms per 8 x 1024-token batch\nwrote {args.out}")


if __name__ == "__main__":
    main()

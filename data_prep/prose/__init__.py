"""Plain text from documentation markup: HTML pages, POD, man pages and info manuals.

Each reader turns one file's text into documents: one per page, or one per node for info manuals. Prose
is reflowed to one line per paragraph with single spaces; code blocks keep their lines and indentation;
markup, navigation, tables of contents and boilerplate are dropped (see each reader).
"""

from __future__ import annotations

import gzip
import re
from typing import Iterator, Optional, Tuple

from .html_pages import html_to_text
from .info_nodes import info_to_nodes
from .man_pages import man_to_text
from .pod_pages import pod_to_text

KINDS = ("html", "pod", "man", "info")

_MAN_PATH = re.compile(r"/man/man[1-9][^/]*/[^/]+\.[1-9][a-z]*(\.gz)?$")
_INFO_PATH = re.compile(r"\.info(-[0-9]+)?(\.gz)?$")


def kind_of(path: str) -> Optional[str]:
    """The markup of a file, from its name (None: not a documentation page)."""
    name = path[:-3] if path.endswith(".gz") else path
    if name.endswith((".html", ".htm")):
        return "html"
    if name.endswith(".pod"):
        return "pod"
    if _MAN_PATH.search(path):
        return "man"
    if _INFO_PATH.search(path):
        return "info"
    return None


def read_text(path: str) -> str:
    """A file's text, gunzipped when it ends in .gz: UTF-8, else the charset an HTML page declares, else cp1252."""
    with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    declared = re.search(rb"charset=[\"']?([A-Za-z0-9_.:-]+)", data[:4096])
    for encoding in ([declared.group(1).decode("ascii")] if declared else []) + ["cp1252"]:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")  # decodes any bytes


def documents(text: str, kind: str) -> Iterator[Tuple[str, str]]:
    """(anchor, text) per document of one file's text: anchor "" for a whole page, the node name for info."""
    if kind == "html":
        yield "", html_to_text(text)
    elif kind == "pod":
        yield "", pod_to_text(text)
    elif kind == "man":
        yield "", man_to_text(text)
    elif kind == "info":
        yield from info_to_nodes(text)
    else:
        raise ValueError(f"unknown markup {kind!r}; expected one of {KINDS}")

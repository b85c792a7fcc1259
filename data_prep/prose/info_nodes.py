"""Prose from an Info manual (makeinfo output, as in /usr/share/info): one document per node.

A file holds nodes separated by the character 0x1f, each starting with a header line
("File: grep.info,  Node: Usage,  Next: ...,  Up: ..."). Dropped: that header (navigation), the menu at a
node's end ("* Menu:" and its entries), heading underlines, the tag table, indirect-file lists and the
preamble before the first node (the dir entry). Cross references "*Note Name::" read "See Name". Blocks
that start at the left margin (paragraphs, list items, definitions) are reflowed; blocks indented five or
more spaces throughout (makeinfo's examples) are kept as code.
"""

from __future__ import annotations

import re
from typing import Iterator, Tuple

from .layout import Layout

_HEADER = re.compile(r"^File: [^,]*,\s+Node: ([^,\t\n]+)")
_UNDERLINE = re.compile(r"^\s*([*=\-.])\1+\s*$")
_XREF = re.compile(r"\*([Nn])ote(\s+)([^:]*?)::")  # *Note Node::
_XREF_LABEL = re.compile(r"\*([Nn])ote(\s+)([^:]*?):\s*(?:\([^)]*\))?[^.,:]*([.,])")  # *note Label: (manual)Node.
EXAMPLE_INDENT = 5


def _see(m: re.Match) -> str:
    punctuation = m.group(4) if m.re is _XREF_LABEL else ""
    return ("See" if m.group(1) == "N" else "see") + m.group(2) + m.group(3) + punctuation


def _references(text: str) -> str:
    return _XREF_LABEL.sub(_see, _XREF.sub(_see, text))


def _is_underline(lines, k: int) -> bool:
    """Whether line k is the rule under a heading: a run of one of * = - . as long as the line above."""
    return (k > 0 and bool(_UNDERLINE.match(lines[k])) and bool(lines[k - 1].strip())
            and len(lines[k].strip()) == len(lines[k - 1].strip()))


def _node_text(body: str) -> str:
    lines = body.split("\n")
    menu = next((k for k, line in enumerate(lines) if line.startswith("* Menu:")), None)
    if menu is not None:
        lines = lines[:menu]
    out = Layout()
    block = []

    def flush():
        if not block:
            return
        indents = [len(line) - len(line.lstrip()) for line in block]
        if min(indents) >= EXAMPLE_INDENT:  # cross references too: indented definitions' prose has them
            out.verbatim(_references("\n".join(block)))
        else:
            out.words(_references(" ".join(line.strip() for line in block)))
            out.end_paragraph()
        block.clear()

    for k, line in enumerate(lines):
        if _is_underline(lines, k):
            continue  # the line above was a heading: keep it, drop the rule
        if line.strip():
            block.append(line.rstrip())
            if k + 1 < len(lines) and _is_underline(lines, k + 1):
                flush()  # a heading is a paragraph of its own
        else:
            flush()
    flush()
    return out.text()


def info_to_nodes(text: str) -> Iterator[Tuple[str, str]]:
    """(node name, text) per node of one Info file (an indirect file's parts are read one by one)."""
    for chunk in text.split("\x1f")[1:]:
        chunk = chunk.lstrip("\n\x0c")
        first, _, body = chunk.partition("\n")
        header = _HEADER.match(first)
        if header is None:
            continue  # Tag Table, Indirect:, End Tag Table, Local Variables
        yield header.group(1).strip(), _node_text(body)

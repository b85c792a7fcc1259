"""Prose from Perl's POD (perlpodspec): headings, items, ordinary paragraphs, verbatim code.

Ordinary paragraphs are reflowed and their formatting codes replaced by their text (B<bold> -> bold,
L<text|target> -> text, L<perlfunc/open> -> "open" in perlfunc, E<gt> -> >, X<> and Z<> dropped);
verbatim paragraphs (indented) are kept as code; =begin/=for blocks for other formatters are dropped,
as is everything outside POD (code between =cut and the next command).
"""

from __future__ import annotations

import html
import re
from typing import List, Tuple

from .layout import Layout

_ESCAPES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/"}
_CODE_START = re.compile(r"([A-Z])(<+)")


def _escape(name: str) -> str:
    name = name.strip()
    if name in _ESCAPES:
        return _ESCAPES[name]
    if re.fullmatch(r"0[xX][0-9a-fA-F]+|0[0-7]*|[0-9]+", name):
        base = 16 if name[:2].lower() == "0x" else 8 if name.startswith("0") and len(name) > 1 else 10
        return chr(int(name, base))
    decoded = html.unescape(f"&{name};")
    return "" if decoded == f"&{name};" else decoded


def _link(content: str) -> str:
    """L<...>: the text shown for a link."""
    if "|" in content:
        return content.split("|", 1)[0]
    if re.match(r"\w+:[^:\s]\S*$", content):  # a URL
        return content
    name, _, section = content.partition("/")
    section = section.strip('"')
    if section and name:
        return f'"{section}" in {name}'
    return section or name


def _expand(text: str, pos: int = 0, closer: str = "") -> Tuple[str, int]:
    """Formatting codes expanded in text[pos:] up to `closer`: "" (the end), ">" (a code with one bracket) or
    ">>..." (a code with several, whose content ends at whitespace followed by them). Returns (text, end)."""
    out: List[str] = []
    while pos < len(text):
        if closer == ">" and text[pos] == ">":
            return "".join(out), pos + 1
        if len(closer) > 1 and text[pos].isspace():
            end = pos
            while end < len(text) and text[end].isspace():
                end += 1
            if text.startswith(closer, end):
                return "".join(out), end + len(closer)
        m = _CODE_START.match(text, pos)
        if m and len(m.group(2)) == 1:
            inner, pos = _expand(text, m.end(), ">")
            out.append(_apply(m.group(1), inner))
        elif m and m.end() < len(text) and text[m.end()].isspace():
            inner, pos = _expand(text, m.end(), ">" * len(m.group(2)))
            out.append(_apply(m.group(1), inner.strip()))
        elif m:  # "X<<" without the space is no code: the letter and brackets are text
            out.append(m.group(0))
            pos = m.end()
        else:
            out.append(text[pos])
            pos += 1
    return "".join(out), pos


def _apply(letter: str, inner: str) -> str:
    if letter == "E":
        return _escape(inner)
    if letter == "L":
        return _link(inner)
    if letter in ("X", "Z"):
        return ""
    return inner  # B, I, C, F, S and unknown codes: their text


def expand_codes(text: str) -> str:
    return _expand(text)[0]


def pod_to_text(pod: str) -> str:
    """The POD of a file (a .pod, or a Perl module with embedded POD) as plain text."""
    out = Layout()
    in_pod, skipping = False, None  # skipping: the format name of a =begin block being dropped
    paragraphs = re.split(r"\n[ \t]*\n", pod.replace("\r\n", "\n"))
    for para in paragraphs:
        if not para.strip():
            continue
        command = re.match(r"=([a-zA-Z]\w*)\s*(.*)", para, re.S)
        if command:
            name, arg = command.group(1), command.group(2).strip()
            in_pod = name != "cut"
            if skipping:
                if name == "end" and arg.split()[:1] == [skipping]:
                    skipping = None
                continue
            if name == "begin":
                fmt = (arg.split() or [""])[0]
                if fmt.lower() not in ("text", ":text"):
                    skipping = fmt
                continue
            if name in ("head1", "head2", "head3", "head4", "head5", "head6"):
                out.end_paragraph()
                out.words(expand_codes(arg))
                out.end_paragraph()
            elif name == "item":
                out.end_paragraph()
                label = re.sub(r"^\*(\s+|$)", "", arg)  # "=item *" is a bullet: its text follows, if any
                if label:
                    out.words(expand_codes(label))
                    out.end_paragraph()
            # =pod, =cut, =over, =back, =encoding, =for (another formatter's paragraph), =end: no text
            continue
        if not in_pod or skipping:
            continue
        if para[:1] in (" ", "\t"):
            out.verbatim(para.expandtabs(8))
        else:
            out.words(expand_codes(para))
            out.end_paragraph()
    return out.text()

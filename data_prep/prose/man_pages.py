"""Prose from a man page written with the man(7) macros (roff source, as in /usr/share/man).

A small reader in place of groff, which a fresh machine may lack: section headings (.SH, .SS), filled
paragraphs (.PP, .TP, .IP, ...), the font macros (.B, .IR, ...) and escapes (\\fB, \\-, \\(em, \\[u00E9])
become plain text; no-fill regions (.nf/.fi, .EX/.EE) are kept as code; tables (.TS/.TE) become rows
with cells separated by " | ". Macro definitions, conditionals, comments and formatting requests are
dropped. Pages in the mdoc(7) macros (BSD) are not read: ManError.
"""

from __future__ import annotations

import re
from typing import List

from .layout import Layout

# roff's named glyphs, \(xx and \[xx], that documentation uses (groff_char(7)); others become nothing.
GLYPHS = {
    "em": "\u2014", "en": "\u2013", "hy": "-", "mi": "-", "aq": "'", "dq": '"', "lq": "\u201c", "rq": "\u201d",
    "oq": "\u2018", "cq": "\u2019", "bu": "\u2022", "co": "\u00a9", "rg": "\u00ae", "tm": "\u2122", "mu": "\u00d7",
    "de": "\u00b0", "+-": "\u00b1", "<=": "\u2264", ">=": "\u2265", "!=": "\u2260", "==": "\u2261", "->": "\u2192",
    "<-": "\u2190", "ha": "^", "ti": "~", "ga": "`", "rs": "\\", "sl": "/", "ba": "|", "or": "|", "at": "@",
    "sh": "#", "Do": "$", "ct": "\u00a2", "Po": "\u00a3", "Eu": "\u20ac", "ss": "\u00df", "ae": "\u00e6",
    "o:": "\u00f6", "a:": "\u00e4", "u:": "\u00fc", "e'": "\u00e9", "e`": "\u00e8", "ua": "\u2191", "da": "\u2193",
    "fm": "\u2032", "sc": "\u00a7", "ps": "\u00b6", "dg": "\u2020", "lh": "\u261c", "rh": "\u261e", "sq": "\u25a1",
    "Fo": "\u00ab", "Fc": "\u00bb", "fo": "\u2039", "fc": "\u203a", "char46": ".", "char39": "'",
}
# Strings, \*(xx and \*[xx], that man pages commonly define or that man(7) provides.
STRINGS = {"lq": "\u201c", "rq": "\u201d", "R": "\u00ae", "Tm": "\u2122", "S": "", "aq": "'", "dq": '"'}
FONT_MACROS = {"B", "I", "SB", "SM", "BI", "BR", "IB", "IR", "RB", "RI", "CW", "CR"}
PARAGRAPH = {"PP", "LP", "P", "HP", "sp", "br", "RS", "RE", "in", "ti", "ne", "bp", "TQ", "PD", "ns", "rs"}

_ESCAPE = re.compile(r"""\\(?:
    \((?P<glyph2>..) | \[(?P<glyph>[^\]]*)\] |
    \*(?:\((?P<string2>..)|\[(?P<string>[^\]]*)\]|(?P<string1>.)) |
    f(?:\(..|\[[^\]]*\]|.) | s[-+]?(?:\d|\(\d\d|\[\d*\]|'\d*') | [mMF](?:\(..|\[[^\]]*\]|.) |
    [hvwlLoDbxXZRNSCAB]'[^']*' | n[-+]?(?:\(..|\[[^\]]*\]|.) | k(?:\(..|\[[^\]]*\]|.) | g(?:\(..|\[[^\]]*\]|.) |
    \$(?:\d|\*|@) | (?P<char>.) )""", re.X | re.S)
_SIMPLE = {"-": "-", "e": "\\", "\\": "\\", "&": "", ":": "", "|": "", "^": "", "0": " ", " ": " ", "~": " ",
           "c": "", "%": "", ")": "", "/": "", ",": "", "'": "\u00b4", "`": "`", ".": ".", "t": "\t", "z": "",
           "!": "", "p": "", "r": "", "u": "", "d": "", "{": "", "}": "", "a": "", "E": "", "?": "", "_": "_",
           "\"": ""}


class ManError(ValueError):
    """A page this reader does not handle."""


def unescape(text: str) -> str:
    """roff escapes replaced by the characters they print (comments removed first)."""
    text = re.sub(r'\\".*', "", text)

    def sub(m):
        glyph = m.group("glyph2") or m.group("glyph")
        if glyph is not None:
            if re.fullmatch(r"u[0-9A-Fa-f]{4,6}(_[0-9A-Fa-f]{4,6})*", glyph):
                return "".join(chr(int(part.lstrip("u"), 16)) for part in glyph.split("_"))
            return GLYPHS.get(glyph, "")
        string = m.group("string2") or m.group("string") or m.group("string1")
        if string is not None:
            return STRINGS.get(string, "")
        char = m.group("char")
        if char is not None:
            return _SIMPLE.get(char, char)
        return ""  # font, size, motion, colour, register and width escapes print nothing here

    return _ESCAPE.sub(sub, text)


def _arguments(line: str) -> List[str]:
    """A macro line's arguments, with roff's double-quote rules ("" inside quotes is a quote)."""
    args, pos = [], 0
    while pos < len(line):
        while pos < len(line) and line[pos] in " \t":
            pos += 1
        if pos >= len(line):
            break
        if line[pos] == '"':
            pos += 1
            arg = []
            while pos < len(line):
                if line.startswith('""', pos):
                    arg.append('"')
                    pos += 2
                elif line[pos] == '"':
                    pos += 1
                    break
                else:
                    arg.append(line[pos])
                    pos += 1
            args.append("".join(arg))
        else:
            end = pos
            while end < len(line) and line[end] not in " \t":
                end += 1 + (line[end] == "\\")  # an escape's next character is not a separator
            args.append(line[pos:end])
            pos = end
    return args


def _table(lines: List[str], out: Layout) -> None:
    """A tbl(1) table: options and format lines skipped, each row a line of cells joined by " | "."""
    i = 0
    if i < len(lines) and lines[i].rstrip().endswith(";"):
        i += 1
    while i < len(lines) and not lines[i].rstrip().endswith("."):
        i += 1
    i += 1
    tab = "\t"
    row: List[str] = []
    text_block = None
    for line in lines[i:]:
        if text_block is not None:
            if line.startswith("T}"):
                row.append(" ".join(text_block))
                text_block = None
                rest = line[2:].lstrip(tab)
                if rest:
                    row.extend(rest.split(tab))
                if not line[2:]:
                    out.words(" | ".join(unescape(c).strip() for c in row))
                    out.end_paragraph()
                    row = []
            elif not line.startswith("."):
                text_block.append(line)
            continue
        if line.startswith(".") or line.strip() in ("_", "=", ""):
            continue
        cells = line.split(tab)
        if cells[-1].endswith("T{"):
            cells[-1] = cells[-1][:-2]
            row = [c for c in cells[:-1]] + ([cells[-1]] if cells[-1] else [])
            text_block = []
            continue
        out.words(" | ".join(unescape(c).strip() for c in cells))
        out.end_paragraph()


def man_to_text(source: str) -> str:
    """The page as plain text; an alias page (.so) gives an empty text."""
    lines = source.replace("\r\n", "\n").split("\n")
    if any(re.match(r"\.(Dd|Dt|Sh)\b", line) for line in lines[:50]):
        raise ManError("an mdoc(7) page")
    out = Layout()
    fill, code, pending_tag = True, [], False
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line[:1] in (".", "'"):
            m = re.match(r"[.'][ \t]*([^ \t]*)[ \t]*(.*)", line)
            name, rest = m.group(1), m.group(2)
            if name.startswith('\\"') or name == "":
                continue
            if name in ("de", "de1", "am", "ig"):  # a macro definition or ignored block, up to ".." or its end
                end = ".." if name != "ig" or not rest.strip() else "." + rest.split()[0]
                while i < len(lines) and lines[i].strip() != end:
                    i += 1
                i += 1
                continue
            if name == "TS":
                start = i
                while i < len(lines) and not lines[i].startswith(".TE"):
                    i += 1
                out.end_paragraph()
                _table(lines[start:i], out)
                i += 1
                continue
            if name in ("nf", "EX"):
                out.end_paragraph()
                fill = False
                continue
            if name in ("fi", "EE"):
                if code:
                    out.verbatim("\n".join(code))
                    code = []
                fill = True
                continue
            if name in ("SH", "SS"):
                out.end_paragraph()
                if rest.strip():
                    out.words(unescape(" ".join(_arguments(rest))))
                    out.end_paragraph()
                else:
                    pending_tag = True  # the heading is the next text line
                continue
            if name == "TP":
                out.end_paragraph()
                pending_tag = True
                continue
            if name == "IP":
                out.end_paragraph()
                args = _arguments(rest)
                if args and unescape(args[0]).strip() not in ("", "\u2022", "*", "-"):
                    out.words(unescape(args[0]) + " ")
                continue
            if name in PARAGRAPH:
                if fill:
                    out.end_paragraph()
                elif name in ("sp", "br"):
                    code.append("")
                continue
            if name in FONT_MACROS:
                args = _arguments(rest)
                if not args:  # the text is on the next line
                    continue
                joiner = " " if name in ("B", "I", "SB", "SM", "CW") else ""
                text = unescape(joiner.join(args))
            elif name in ("SY", "OP", "UR", "MT", "UE", "ME"):
                args = _arguments(rest)
                if name == "SY":
                    out.end_paragraph()
                    text = unescape(" ".join(args))
                elif name == "OP":
                    text = "[" + unescape(" ".join(args)) + "]"
                elif name in ("UE", "ME"):
                    text = unescape("".join(args))
                else:
                    continue  # the link text follows; the address is not prose
            else:
                continue  # .TH, .so, .if, .ds, .nr, .ft, .ad, .na, .hy, .ce, .IX, ... print nothing here
        else:
            text = unescape(line)
        if not fill:
            code.append(text)
        elif pending_tag:
            out.words(text)
            out.end_paragraph()
            pending_tag = False
        else:
            if text[:1] in (" ", "\t") and line[:1] in (" ", "\t"):
                out.end_paragraph()  # roff breaks the line before text that starts with a space
            out.words(text + " ")
    if code:
        out.verbatim("\n".join(code))
    return out.text()

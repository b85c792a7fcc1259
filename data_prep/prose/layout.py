"""The text layout every reader produces: prose paragraphs on one line each, code blocks line by line."""

from __future__ import annotations

import re
import textwrap
from typing import List

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACE = re.compile(r"\s+")


class Layout:
    """Blocks of a document in order: prose (whitespace collapsed to single spaces) or verbatim (code,
    examples: lines and their relative indentation kept), joined by newlines."""

    def __init__(self):
        self.blocks: List[str] = []
        self._prose: List[str] = []

    def words(self, text: str) -> None:
        """Inline prose, appended to the paragraph in progress."""
        self._prose.append(text)

    def end_paragraph(self) -> None:
        text = _SPACE.sub(" ", _CONTROL.sub(" ", "".join(self._prose))).strip()
        self._prose = []
        if text:
            self.blocks.append(text)

    def verbatim(self, text: str) -> None:
        """A code block: ends the paragraph in progress; trailing spaces and blank edge lines are dropped."""
        self.end_paragraph()
        lines = [line.rstrip() for line in _CONTROL.sub("", text.replace("\r\n", "\n").replace("\f", "")).split("\n")]
        while lines and not lines[0]:
            lines.pop(0)
        while lines and not lines[-1]:
            lines.pop()
        if lines:
            self.blocks.append(textwrap.dedent("\n".join(lines)))

    def text(self) -> str:
        self.end_paragraph()
        return "\n".join(self.blocks)

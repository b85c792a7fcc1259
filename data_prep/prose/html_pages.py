"""Prose from an HTML documentation page (Sphinx, DocBook, Texinfo, AsciiDoc and hand-written pages).

The page is parsed into a small tree with the standard library's html.parser, then written out without:
* what is never prose: <head>, scripts, styles, forms, images, <nav>, <header>, <footer>;
* navigation the generators mark: ARIA roles (navigation, banner, search, contentinfo) and the classes
  and ids in DROP_CLASSES / DROP_IDS (sidebars, breadcrumbs, previous/next bars, tables of contents,
  language pickers, taglines);
* permalinks: a link to an anchor of the page whose text is one symbol (Sphinx's pilcrow, a "#");
* link lists: a block whose text is mostly link text (LINK_DENSITY), which is how tables of contents,
  indexes and menus that no class names look.
Code (<pre>) is kept line by line; everything else becomes paragraphs, a table row a line with its cells
separated by " | ".
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Dict, List, Optional, Union

from .layout import Layout

DROP_TAGS = {"head", "script", "style", "noscript", "template", "nav", "header", "footer", "form", "button",
             "select", "textarea", "input", "iframe", "object", "embed", "svg", "math", "map", "img", "canvas"}
DROP_ROLES = {"navigation", "banner", "search", "contentinfo", "menu", "menubar", "toolbar"}
DROP_CLASSES = {
    "headerlink", "sphinxsidebar", "related", "breadcrumbs", "wy-breadcrumbs", "rst-footer-buttons",
    "toctree-wrapper", "contents", "topic-contents",  # Sphinx
    "navheader", "navfooter", "toc", "list-of-tables", "list-of-figures", "list-of-examples", "docnav",  # DocBook
    "header", "nav-panel", "menu", "mini-toc", "section-toc", "contents-heading", "shortcontents",  # Texinfo
    "toplang", "bottomlang", "up", "searchmenu", "submenu", "mainmenu", "navigation", "sidebar-nav", "tagline",
}
DROP_IDS = {"footer", "footer-text", "page-header", "path", "banner", "searchbox", "toc", "gtoc", "column2",
            "sidebar", "navigation", "quick-links", "toctitle"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track",
        "wbr"}
BLOCKS = {"address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details", "dir",
          "div", "dl", "dt", "fieldset", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "html",
          "li", "main", "menu", "ol", "p", "section", "summary", "table", "tbody", "tfoot", "thead", "tr", "ul",
          "br"}
# Opening one of these closes an open element of the listed tags (HTML's optional end tags).
CLOSES = {"p": {"p"}, "li": {"li"}, "dt": {"dt", "dd"}, "dd": {"dt", "dd"}, "tr": {"tr", "td", "th"},
          "td": {"td", "th"}, "th": {"td", "th"}, "option": {"option"}}
# A block (other than code) whose link text is at least this share of its text is navigation.
LINK_DENSITY = 0.7
LINK_DENSITY_TAGS = {"div", "ul", "ol", "dl", "table", "p", "section", "blockquote", "center", "dir", "menu",
                     "aside", "td"}


class Element:
    __slots__ = ("tag", "attrs", "children", "parent", "_sizes")

    def __init__(self, tag: str, attrs: Dict[str, str], parent: Optional["Element"]):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: List[Union["Element", str]] = []
        self._sizes = None

    def dropped(self) -> bool:
        if self.tag in DROP_TAGS:
            return True
        a = self.attrs
        if self.tag == "a" and a.get("href", "").startswith("#") and _is_symbol(self):
            return True
        if a.get("role") in DROP_ROLES or a.get("id") in DROP_IDS or a.get("aria-hidden") == "true":
            return True
        return any(c in DROP_CLASSES for c in a.get("class", "").split())

    def sizes(self) -> tuple:
        """(characters of text, characters of it inside links) of what would be written; code never counts
        as link text, so a code block full of cross-referenced names is not mistaken for navigation."""
        if self._sizes is None:
            total = links = 0
            for child in self.children:
                if isinstance(child, str):
                    total += len(child.strip())
                elif not child.dropped():
                    t, link_chars = child.sizes()
                    total, links = total + t, links + link_chars
            if self.tag == "a" and "href" in self.attrs:
                links = total
            elif self.tag == "pre":
                links = 0
            self._sizes = (total, links)
        return self._sizes


def _is_symbol(node: Element) -> bool:
    """Whether the element's whole text is a single character that is not a letter or digit."""
    text = "".join(c for c in node.children if isinstance(c, str)).strip()
    return len(text) == 1 and not text.isalnum() and all(isinstance(c, str) for c in node.children)


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#root", {}, None)
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        closes = CLOSES.get(tag)
        if tag in BLOCKS and self.stack[-1].tag == "p":
            self.stack.pop()
        elif closes and self.stack[-1].tag in closes:
            self.stack.pop()
        node = Element(tag, {k: v or "" for k, v in attrs}, self.stack[-1])
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID and self.stack[-1].tag == tag:
            self.stack.pop()

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return
        # an end tag with no open element of its kind is ignored, as browsers do

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def _write(node: Element, out: Layout) -> None:
    for child in node.children:
        if isinstance(child, str):
            out.words(child)
            continue
        if child.dropped():
            continue
        tag = child.tag
        if tag in LINK_DENSITY_TAGS:
            total, links = child.sizes()
            if total and links >= LINK_DENSITY * total:
                continue
        if tag == "pre":
            out.verbatim(_raw_text(child))
        elif tag in ("td", "th"):  # a cell's paragraphs stay on its row's line
            cell = Layout()
            _write(child, cell)
            out.words((" | " if _has_cell_before(child) else "") + " ".join(cell.text().split("\n")))
        elif tag in BLOCKS:
            out.end_paragraph()
            _write(child, out)
            out.end_paragraph()
        else:
            _write(child, out)


def _has_cell_before(cell: Element) -> bool:
    siblings = cell.parent.children
    return any(isinstance(s, Element) and s.tag in ("td", "th") for s in siblings[:siblings.index(cell)])


def _raw_text(node: Element) -> str:
    parts = []
    for child in node.children:
        if isinstance(child, str):
            parts.append(child)
        elif child.tag == "br":
            parts.append("\n")
        elif not child.dropped():
            parts.append(_raw_text(child))
    return "".join(parts)


def html_to_text(html: str) -> str:
    """The page's prose and code as plain text (see the module docstring for what is dropped)."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    out = Layout()
    _write(builder.root, out)
    return out.text()

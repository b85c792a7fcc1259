"""The debian-docs corpus: text from documentation markup, and the pipeline on packages built here (no network)."""

import os

import pytest

from data_prep import prose
from data_prep.prose.man_pages import ManError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "docs")


def fixture_text(name):
    return prose.read_text(os.path.join(FIXTURES, name))


def only_document(name, kind):
    docs = list(prose.documents(fixture_text(name), kind))
    assert len(docs) == 1 and docs[0][0] == ""
    return docs[0][1]


def test_html_keeps_prose_and_code_and_drops_navigation():
    text = only_document("page.html", "html")
    lines = text.split("\n")
    assert lines[0] == "Ring buffers"  # the heading, without its pilcrow link
    assert ("A ring buffer keeps the most recent N items in a fixed block of memory: when it is full, the oldest "
            "item is overwritten.") in lines  # a paragraph reflowed onto one line, inline markup dropped
    code = "struct ring *r = ring_new(64);\nfor (int i = 0; i < n; i++)\n    ring_push(r, items[i]);   /* never blocks */"
    assert code in text  # code keeps its lines, indentation and spacing; entities decoded
    assert "Function | Cost" in lines and "ring_push | constant time" in lines
    assert "Usage" in lines and "The capacity is fixed at creation & cannot grow." in lines
    assert "See also queues, which grow on demand." in lines  # a link inside prose is kept
    for gone in ("SEARCH_INDEX", "font-family", "Example Manual", "Installation", "Prev", "Next", "Home",
                 "Contents", "\u00b6", "Usage#", "\u00a9", "generator"):
        assert gone not in text, gone


def test_pod_keeps_prose_and_verbatim_code():
    text = only_document("ring.pod", "pod")
    lines = text.split("\n")
    assert lines[:2] == ["NAME", "Ring::Buffer - keep the last N items"]
    assert "use Ring::Buffer;\nmy $r = Ring::Buffer->new(64);\n$r->push($_) for @items;" in text
    assert ('A ring buffer keeps the most recent N items; see "push" in perlfunc and the queue module. Comparisons '
            "such as $a->[0] > $b and <angle brackets> are written with escapes.") in lines
    assert "new(SIZE)" in lines and "Creates a buffer of SIZE slots." in lines
    assert lines[-2:] == ["AUTHOR", "The Example Authors."]
    for gone in ("B<", "C<", "L<", "E<", "=head", "=over", "HTML formatters", "sub new", "escapes.ring"):
        assert gone not in text, gone


def test_man_page_keeps_prose_and_synopsis():
    text = only_document("ring.3", "man")
    lines = text.split("\n")
    assert lines[:2] == ["NAME", "ring_new, ring_push - keep the last N items"]
    assert "#include <ring.h>" in lines and "struct ring *ring_new(size_t n);" in lines
    assert ("The ring_new() function allocates a ring buffer of n slots. When the buffer is full, ring_push() "
            "overwrites the oldest item\u2014it never blocks.") in lines
    assert "RING_MAX" in lines and "The largest capacity, in items." in lines and lines[-1] == "queue(3)"
    for gone in ("\\f", "\\(", ".TH", ".B", "Copyright", "Library Functions Manual"):
        assert gone not in text, gone
    with pytest.raises(ManError):  # BSD's mdoc macros are not read (the page is skipped and counted)
        prose.man_to_text(".Dd January 1, 2024\n.Dt RING 3\n.Sh NAME\n")


def test_info_gives_one_document_per_node_without_menus_or_headers():
    nodes = dict(prose.documents(fixture_text("ring.info"), "info"))
    assert list(nodes) == ["Top", "Overview"]  # not the preamble, the tag table or its end
    top, overview = nodes["Top"].split("\n"), nodes["Overview"]
    assert top == ["Ring buffers", "This manual documents the ring buffer library, which keeps the most recent "
                   "items in a fixed block of memory. See Overview, for a tour."]
    assert "struct ring *r = ring_new (64);\nring_push (r, item);" in overview
    assert "For the capacity, see Limits." in overview
    for gone in ("File:", "Menu", "Limits::", "INFO-DIR", "****", "====", "Tag Table"):
        assert gone not in nodes["Top"] + overview, gone


def test_kinds_come_from_the_file_names():
    kinds = {path: prose.kind_of(path) for path in (
        "usr/share/doc/x/html/a.html", "usr/share/doc/x/a.htm.gz", "usr/share/perl/5.36.0/pod/perlre.pod",
        "usr/share/man/man3/printf.3.gz", "usr/share/man/man3/IO::Dir.3perl.gz", "usr/share/info/grep.info.gz",
        "usr/share/info/find.info-2.gz", "usr/share/doc/x/changelog.gz", "usr/share/doc/x/README")}
    assert list(kinds.values()) == ["html", "html", "pod", "man", "man", "info", "info", None, None]

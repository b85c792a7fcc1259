"""The debian-docs corpus: text from documentation markup, and the pipeline on packages built here (no network)."""

import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest

from data_prep import debian_docs, kjv, prose
from data_prep.debian_packages import Package, fetch, license_of
from data_prep.prose.man_pages import ManError
from data_prep.readers import InputError

from conftest import assert_one_line_error, run_cli

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "docs")
CHAPTERS = [text for _, text in kjv.iter_chapters("train")][:40]  # real prose to fill the fake packages


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
    code = ("struct ring *r = ring_new(64);\nfor (int i = 0; i < n; i++)\n"
            "    ring_push(r, items[i]);   /* never blocks */")
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


# A fake package tree: pages in every markup, pages that must be left out, and a copyright file.
def write_tree(root, name, pages, copyright_text):
    for rel, data in pages.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(data.encode(), mtime=0) if rel.endswith(".gz") else data.encode())
    doc = root / "usr" / "share" / "doc" / name
    doc.mkdir(parents=True, exist_ok=True)
    (doc / "copyright").write_text(copyright_text)
    for path in root.rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000))


def html_page(title, text):
    return (f"<html><head><title>{title}</title></head><body><nav><a href='i.html'>Index</a></nav>"
            f"<h1>{title}</h1><p>{text}</p><footer>Footer text</footer></body></html>")


def info_file(chapters):
    nodes = "".join(f"\x1f\nFile: book.info,  Node: Chapter {i},  Up: Top\n\n{text}\n\n"
                    for i, text in enumerate(chapters))
    return "preamble\n\n" + nodes + "\x1f\nTag Table:\n\x1f\nEnd Tag Table\n"


def fake_packages(tmp_path):
    """Two package trees and their entries: (packages, {package name: tree})."""
    html_root = tmp_path / "trees" / "fake-html-doc"
    pages = {f"usr/share/doc/fake-html-doc/html/ch{i:02d}.html": html_page(f"Chapter {i}", t)
             for i, t in enumerate(CHAPTERS[:20])}
    pages.update({
        "usr/share/doc/fake-html-doc/html/page.html": fixture_text("page.html"),
        "usr/share/doc/fake-html-doc/html/copy.html": html_page("Chapter 3", CHAPTERS[3]),  # same text as ch03
        "usr/share/doc/fake-html-doc/html/tiny.html": html_page("Tiny", "Too short to keep."),
        "usr/share/doc/fake-html-doc/html/genindex.html": html_page("Index", CHAPTERS[30]),  # an index page
        "usr/share/doc/fake-html-doc/html/fr/ch00.html": html_page("Chapitre", CHAPTERS[31]),  # not included
        "usr/share/man/man3/ring.3.gz": fixture_text("ring.3"),
        "usr/share/man/man3/bsd.3.gz": ".Dd January 1, 2024\n.Dt BSD 3\n.Sh NAME\n",  # mdoc: skipped, counted
        "usr/share/perl/5.36.0/pod/ring.pod": fixture_text("ring.pod"),
    })
    write_tree(html_root, "fake-html-doc", pages, "Format: https://www.debian.org/doc/packaging-manuals/"
               "copyright-format/1.0/\n\nFiles: *\nCopyright: 2024 Example\nLicense: GPL-2+\n")
    whole = gzip.compress((".TH BROKEN 3\n.SH NAME\n" + CHAPTERS[32]).encode())
    (html_root / "usr/share/man/man3/broken.3.gz").write_bytes(whole[:len(whole) // 2])  # truncated: skipped
    os.symlink("ch00.html", html_root / "usr/share/doc/fake-html-doc/html/link.html")  # a link: not read twice
    info_root = tmp_path / "trees" / "fake-info"
    write_tree(info_root, "fake-info", {"usr/share/info/book.info.gz": info_file(CHAPTERS[20:40]),
                                         "usr/share/info/ring.info": fixture_text("ring.info")},
               "This manual is free software; you can redistribute it under the terms of the GNU General Public "
               "License as published by the Free Software Foundation; either version 3 of the License, or\n(at "
               "your option) any later version.\n")
    packages = (Package("fake-html-doc", "1.0-1", (r"^usr/share/doc/fake-html-doc/html/[^/]*\.html$",
                                                   r"^usr/share/man/man3/", r"\.pod$")),
                Package("fake-info", "2:3.0-1", (r"^usr/share/info/",)))
    return packages, {"fake-html-doc": html_root, "fake-info": info_root}


@pytest.fixture()
def built_debs(tmp_path):
    """A download step that hands out .deb files built here from the fake trees (dpkg-deb, as apt would fetch)."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not installed")
    packages, trees = fake_packages(tmp_path)
    debs = {}
    for package in packages:
        tree = trees[package.name]
        (tree / "DEBIAN").mkdir()
        (tree / "DEBIAN" / "control").write_text(
            f"Package: {package.name}\nVersion: {package.version}\nArchitecture: all\nMaintainer: Example "
            f"<example@example.org>\nDescription: test package\n")
        debs[package.name] = tmp_path / f"{package.key}_all.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(debs[package.name])], check=True,
                       capture_output=True)
    calls = []

    def download(package, directory):
        calls.append(package.name)
        target = os.path.join(directory, debs[package.name].name)
        shutil.copy(debs[package.name], target)
        return target

    return packages, download, calls


def test_pipeline_is_deterministic_resumable_and_records_each_package(tmp_path, built_debs):
    packages, download, calls = built_debs
    cache = tmp_path / "cache"

    def build(out):
        return debian_docs.build_corpus(str(out), str(cache), packages, vocab_size=400, val_fraction=0.2,
                                        progress=False, download=download)

    first = build(tmp_path / "a")
    assert calls == ["fake-html-doc", "fake-info"]  # fetched once: the second build reads the cache
    second = build(tmp_path / "b")
    assert calls == ["fake-html-doc", "fake-info"]
    assert (tmp_path / "a" / "manifest.json").read_text() != ""
    assert first["shard_sha256"] == second["shard_sha256"]
    for name in ("tokenizer.model", "json/fake-html-doc_1.0-1.json.gz", "json/fake-info_2%3a3.0-1.json.gz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name

    html, info = first["packages"]
    assert (html["name"], html["version"], html["license"]) == ("fake-html-doc", "1.0-1", "GPL-2+")
    assert (info["name"], info["version"], info["license"]) == ("fake-info", "2:3.0-1", "GPL-3+")
    assert len(html["deb_sha256"]) == 64 and html["deb_sha256"] != info["deb_sha256"]
    # 20 chapters + page.html + ring.3 + ring.pod; copy.html (a duplicate), tiny.html (short) and bsd.3 and
    # broken.3 (unparsable) skipped; genindex.html, fr/ and the symlink never read.
    assert html["pages"] == {"html": 23, "man": 3, "pod": 1} and html["documents"] == 23
    assert html["skipped"] == {"duplicate": 1, "short": 1, "unparsable_man": 2}
    assert html["skipped_first"]["unparsable_man"].startswith("fake-html-doc/usr/share/man/man3/b")
    assert info["pages"] == {"info": 2} and info["documents"] == 21  # 20 chapters and ring.info's Overview node
    assert (info["skipped"] == {"short": 1}
            and info["skipped_first"]["short"] == "fake-info/usr/share/info/ring.info#Top")
    assert sum(p["tokens"]["train"] + p["tokens"]["val"] for p in first["packages"]) == first["tokens"]
    assert first["splits"]["val"]["documents"] > 0 and first["splits"]["train"]["documents"] > 0

    with gzip.open(tmp_path / "a" / "json" / "fake-info_2%3a3.0-1.json.gz", "rt") as f:
        records = [json.loads(line) for line in f]
    assert records[0]["url"] == "fake-info/usr/share/info/book.info.gz#Chapter 0"
    assert records[0]["timestamp"] == "2023-11-14T22:13:20Z"  # the file's time in the package, not the clock
    assert records[0]["text"] == CHAPTERS[20]

    # Interrupted while extracting one package (no marker, a half-written file): only that package is redone.
    json_dir = tmp_path / "a" / "json"
    os.remove(json_dir / "fake-info_2%3a3.0-1.json")
    (json_dir / "fake-info_2%3a3.0-1.json.gz").write_bytes(b"\x1f\x8b")
    kept = os.stat(json_dir / "fake-html-doc_1.0-1.json.gz").st_mtime_ns
    again = build(tmp_path / "a")
    assert again["shard_sha256"] == first["shard_sha256"]
    assert os.stat(json_dir / "fake-html-doc_1.0-1.json.gz").st_mtime_ns == kept


def test_cache_keeps_packages_and_licenses_are_read(tmp_path, built_debs):
    packages, download, calls = built_debs
    unpacked = fetch(packages[0], str(tmp_path / "cache"), download)
    assert os.path.isfile(os.path.join(unpacked.root, "usr/share/doc/fake-html-doc/html/page.html"))
    assert fetch(packages[0], str(tmp_path / "cache"), download) == unpacked and calls == ["fake-html-doc"]
    doc = tmp_path / "linked" / "usr" / "share" / "doc"
    doc.mkdir(parents=True)
    os.symlink("other-package", doc / "linked")
    assert license_of(str(tmp_path / "linked"), "linked") == "as other-package (usr/share/doc/linked links there)"


def test_too_large_a_vocabulary_stops_with_one_line(tmp_path, built_debs):
    packages, download, _ = built_debs
    with pytest.raises(InputError, match="tokenizer.model: SentencePiece training failed"):
        debian_docs.build_corpus(str(tmp_path / "out"), str(tmp_path / "cache"), packages, vocab_size=60000,
                                 progress=False, download=download)


def test_unavailable_package_stops_with_one_line(tmp_path):
    """apt-get replaced by a script that answers as apt does for a version the archive no longer has."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text("#!/bin/sh\necho \"E: Can't find a source to download version '$3' of 'package'\" >&2\nexit 100\n")
    fake.chmod(0o755)
    first = debian_docs.PACKAGES[0]
    proc = run_cli([sys.executable, "-m", "data_prep", "debian-docs", "--out", str(tmp_path / "out"),
                    "--cache", str(tmp_path / "cache")], env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}, timeout=120)
    assert_one_line_error(proc, f"{first.name}={first.version}", "apt-get download failed", "Can't find a source")
    assert proc.returncode == 1

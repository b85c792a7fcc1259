"""python -m data_prep debian-docs: English technical prose from Debian's documentation packages.

Real text at a scale the KJV (0.97M tokens) cannot give, built offline from what a package registry
carries: no machine here can download C4 or The Pile. Four steps, each resumable:

1. fetch   each package of PACKAGES (pinned versions) with apt-get download into the cache and unpack it
           (data_prep.debian_packages); a package apt cannot fetch stops the run with one line, since a
           corpus without it would be another corpus (other documents, tokenizer and validation split).
2. extract its pages (HTML, POD, man, info: data_prep.prose) to OUT/json/NAME_VERSION.json.gz in C4's
           format ({"text", "url": "package/path[#node]", "timestamp": the file's time in the package}),
           one document per page or info node, documents under MIN_CHARS characters and exact duplicates
           left out; a page that cannot be parsed is skipped and counted. Each file is written whole (a
           rename) with a marker beside it, so an interrupted run redoes only the packages without one.
3. tokenizer  SentencePiece (VOCAB_SIZE pieces, whitespace kept, see train_sentencepiece) on a sample of
           the training documents, reused while the inputs and settings are the same.
4. shards  the C4 path (data_prep.corpus): OUT/train, OUT/val, documents held out by a hash of their text
           (VAL_FRACTION), and OUT/manifest.json with each package's version, .deb sha256, license and counts.

The output is the same on every run with the same packages (gzip without timestamps, sorted pages, a
seeded tokenizer), and its size is set by which packages are listed: PACKAGES is the cap.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import os
import re
from collections import Counter
from typing import Callable, Iterator, List, Sequence

from tqdm import tqdm

from . import prose
from .corpus import build, hash_fraction, make_jobs, marker_path
from .debian_packages import Package, Unpacked, apt_download, fetch
from .readers import InputError, Skips
from .shards import write_json_atomic
from .tokenizer import file_sha256, train_sentencepiece

# 8192 pieces: the corpus is 75 MB of technical English and code, the models trained on it have 20M-100M
# parameters, and the embedding is tied: vocab x d_model parameters (8192 x 512 = 4.2M). Measured on this
# corpus, 16384 pieces would take 8.4M (over 40% of a 20M model) to save 8% of the tokens (3.77 bytes per
# token against 3.47) and leave the median piece 182 occurrences in the training split (559 with 8192).
VOCAB_SIZE = 8192
# 2% of the documents: about 400k validation tokens (documents vary in size, so the share of tokens does
# too), enough for a stable loss and quick to evaluate.
VAL_FRACTION = 0.02
MIN_CHARS = 200
TOKENIZER_SAMPLE_CHARS = 40_000_000  # about half the training text; SentencePiece takes about a minute on 2 cores

MAX_CHARS = 1_000_000  # the C4 reader's default --max-chars: longer documents would be skipped there
# Full license texts (the GFDL closes most GNU manuals): boilerplate, and the same text in many packages.
LICENSE_TEXT = "Everyone is permitted to copy and distribute verbatim copies of this license document"

# Pages that are indexes, search forms or copies of other pages, in any package.
COMMON_EXCLUDE = (r"/_sources/", r"/_static/", r"/_images/", r"/(genindex|search|py-modindex|searchindex)[^/]*\.html$")

# The packages, their pinned versions and the pages read from each: English only (no translations), one
# format per text (the info manual where a package has info and HTML, the POD where there is POD and man),
# no indexes, tables of contents or single-page copies of multi-page manuals. Measured with this list
# (README.md): 31 packages, 75 MB of text, 21.6M tokens (21.3M of them training). The list is also the cap:
# these candidates were read and left out to keep the training shards within 45 MB (uint16 tokens) for a
# 64 MiB transfer to a GPU machine: vim-doc (3.3M tokens), perl-doc's module man pages (1.2M) and
# maxima-doc (0.8M); the Python documentation was left out on purpose.
PACKAGES: Sequence[Package] = (
    Package("linux-doc-6.1", "6.1.192-3", (r"^usr/share/doc/linux-doc-6\.1/html/.*\.html$",),
            (r"/translations/", r"/admin-guide/abi-[^/]*\.html$", r"/process/maintainers\.html$")),
    Package("perl-doc", "5.36.0-7+deb12u4", (r"^usr/share/perl/[^/]+/pod/.*\.pod$",), (r"/perl(toc|uniprops)\.pod$",)),
    Package("postgresql-doc-15", "15.20-0+deb12u1", (r"^usr/share/doc/postgresql-doc-15/html/.*\.html$",),
            (r"/bookindex\.html$",)),
    Package("git-doc", "1:2.39.5-0+deb12u3", (r"^usr/share/doc/git-doc/.*\.html$",)),
    Package("manpages-dev", "6.03-2", (r"^usr/share/man/man[23]/",)),
    Package("manpages", "6.03-2", (r"^usr/share/man/man[1-8]/",)),
    Package("debian-handbook", "11.20220922", (r"^usr/share/doc/debian-handbook/html/en-US/.*\.html$",)),
    Package("sqlite3-doc", "3.40.1-2+deb12u2", (r"^usr/share/doc/sqlite3/.*\.html$",),
            (r"/releaselog/", r"/(requirements|capi3ref|doc_\w+_crossref|keyword_index|sitemap|doclist|docs)\.html$")),
    Package("nodejs-doc", "18.20.4+dfsg-1~deb12u3", (r"^usr/share/doc/nodejs/api/.*\.html$",), (r"/all\.html$",)),
    Package("r-doc-info", "4.2.2.20221110-2", (r"^usr/share/info/",)),
    Package("coreutils", "9.1-1", (r"^usr/share/info/",)),
    Package("bash-doc", "5.2.15-2", (r"^usr/share/info/",)),
    Package("binutils-doc", "2.40-2", (r"^usr/share/info/",)),
    Package("autoconf-doc", "2.71-3", (r"^usr/share/info/",)),
    Package("gnu-standards", "2022.03.23-0.1", (r"^usr/share/info/",)),
    Package("sed", "4.9-1+deb12u1", (r"^usr/share/info/",)),
    Package("grep", "3.8-5", (r"^usr/share/info/",)),
    Package("findutils", "4.9.0-4", (r"^usr/share/info/",)),
    Package("diffutils", "1:3.8-4", (r"^usr/share/info/",)),
    Package("texinfo", "6.8-6+b1", (r"^usr/share/info/",)),
    Package("gettext-doc", "0.21-12", (r"^usr/share/doc/gettext/.*\.html$",)),
    Package("octave-doc", "7.3.0-2", (r"^usr/share/info/",)),
    Package("zsh-doc", "5.9-4", (r"^usr/share/info/",)),
    Package("gnuplot-doc", "5.4.4+dfsg1-2", (r"^usr/share/info/",)),
    Package("cmake-doc", "3.25.1-1", (r"^usr/share/doc/cmake-data/html/.*\.html$",)),
    Package("apache2-doc", "2.4.71-1~deb12u1", (r"^usr/share/doc/apache2-doc/manual/en/.*\.html$",),
            (r"/(quickreference|sitemap|directives)\.html$",)),
    Package("debian-policy", "4.6.2.0", (r"^usr/share/doc/debian-policy/.*\.html$",)),
    Package("developers-reference", "12.18", (r"^usr/share/developers-reference/.*\.html$",)),
    Package("debian-reference-en", "2.100", (r"^usr/share/debian-reference/.*\.en\.html$",)),
    Package("maint-guide", "1.2.53", (r"^usr/share/doc/maint-guide/html/.*\.en\.html$",)),
    Package("debian-faq", "11.1", (r"^usr/share/doc/debian/FAQ/.*\.en\.html$",)),
)


def _extractor_id(package: Package) -> str:
    """What a package's json.gz depends on besides the package: the readers' code and the selection."""
    h = hashlib.sha256(repr((package, MIN_CHARS, MAX_CHARS, LICENSE_TEXT, COMMON_EXCLUDE)).encode())
    reader_dir = os.path.dirname(prose.__file__)
    for name in sorted(os.listdir(reader_dir)):
        if name.endswith(".py"):
            with open(os.path.join(reader_dir, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


def _pages(unpacked: Unpacked) -> List[str]:
    """Paths (relative to the unpacked tree) of the package's pages to read, sorted; links are not followed."""
    pages = []
    for directory, dirs, files in os.walk(unpacked.root):
        dirs.sort()
        for name in files:
            full = os.path.join(directory, name)
            rel = os.path.relpath(full, unpacked.root).replace(os.sep, "/")
            if (not os.path.islink(full) and prose.kind_of(rel) and unpacked.package.wants(rel)
                    and not any(re.search(p, "/" + rel) for p in COMMON_EXCLUDE)):
                pages.append(rel)
    return sorted(pages)


def _timestamp(path: str) -> str:
    """The file's modification time as unpacked from the package (fixed by the package, not by the clock)."""
    t = datetime.datetime.fromtimestamp(int(os.stat(path).st_mtime), datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _documents(unpacked: Unpacked, pages: List[str], skips: Skips, progress: bool) -> Iterator[dict]:
    seen = set()
    name = unpacked.package.name
    for rel in tqdm(pages, desc=f"extract {name}", unit="page", disable=None if progress else True, leave=False):
        path = os.path.join(unpacked.root, rel)
        kind = prose.kind_of(rel)
        try:
            docs = list(prose.documents(prose.read_text(path), kind))
        except Exception as e:  # any failure of a reader on one page (malformed markup, bad gzip) skips that page
            skips.add(f"unparsable_{kind}", f"{name}/{rel}: {type(e).__name__}")
            continue
        stamp = _timestamp(path)
        for anchor, text in docs:
            where = f"{name}/{rel}" + (f"#{anchor}" if anchor else "")
            if len(text) < MIN_CHARS:
                skips.add("short", where)
                continue
            if len(text) > MAX_CHARS:
                skips.add("too_long", where)
                continue
            if LICENSE_TEXT in " ".join(text.split()):  # info manuals wrap and indent it
                skips.add("license_text", where)
                continue
            digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
            if digest in seen:
                skips.add("duplicate", where)
                continue
            seen.add(digest)
            yield {"text": text, "url": where, "timestamp": stamp}


def extract(unpacked: Unpacked, json_dir: str, progress: bool = True) -> dict:
    """Writes json_dir/NAME_VERSION.json.gz (C4 format) and its marker NAME_VERSION.json; returns the marker."""
    pkg = unpacked.package
    out = os.path.join(json_dir, pkg.key + ".json.gz")
    marker = os.path.join(json_dir, pkg.key + ".json")
    ident = _extractor_id(pkg)
    if os.path.isfile(marker) and os.path.isfile(out):
        with open(marker) as f:
            done = json.load(f)
        if done.get("extractor") == ident and done.get("json_sha256") == file_sha256(out):
            return done
    os.makedirs(json_dir, exist_ok=True)
    pages = _pages(unpacked)
    skips = Skips()
    kinds, documents, text_bytes = Counter(prose.kind_of(p) for p in pages), 0, 0
    tmp = out + ".tmp"
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        for doc in _documents(unpacked, pages, skips, progress):
            f.write((json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8"))
            documents += 1
            text_bytes += len(doc["text"].encode("utf-8"))
    os.replace(tmp, out)
    done = {"name": pkg.name, "version": pkg.version, "deb_sha256": unpacked.deb_sha256, "license": unpacked.license,
            "pages": dict(sorted(kinds.items())), "documents": documents, "text_bytes": text_bytes,
            "skipped": dict(sorted(skips.counts.items())), "skipped_first": dict(sorted(skips.first.items())),
            "json": os.path.basename(out), "json_sha256": file_sha256(out), "extractor": ident}
    write_json_atomic(marker, done)
    return done


def _read_json_gz(path: str) -> Iterator[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]


def _tokenizer(json_files: List[str], out: str, vocab_size: int, val_fraction: float) -> str:
    """OUT/tokenizer.model, trained on a sample of the training documents (never a validation one); kept
    while OUT/tokenizer.json shows the same inputs and settings."""
    model = os.path.join(out, "tokenizer.model")
    ident = {"vocab_size": vocab_size, "val_fraction": val_fraction, "sample_chars": TOKENIZER_SAMPLE_CHARS,
             "inputs": [file_sha256(p) for p in json_files]}
    info_path = os.path.join(out, "tokenizer.json")
    if os.path.isfile(model) and os.path.isfile(info_path):
        with open(info_path) as f:
            if json.load(f) == {**ident, "model_sha256": file_sha256(model)}:
                return model
    train_chars = sum(len(t) for p in json_files for t in _read_json_gz(p) if hash_fraction(t) >= val_fraction)
    share = min(1.0, TOKENIZER_SAMPLE_CHARS / max(train_chars, 1))

    def sample():  # training documents whose hash falls in a band of width `share` above the validation band
        for p in json_files:
            for text in _read_json_gz(p):
                if val_fraction <= hash_fraction(text) < val_fraction + share * (1 - val_fraction):
                    yield text

    print(f"data_prep: training a {vocab_size}-piece SentencePiece tokenizer on {share:.0%} of the "
          f"{train_chars:,} characters of the training documents")
    try:
        train_sentencepiece(sample(), vocab_size, model, keep_whitespace=True)
    except RuntimeError as e:  # SentencePiece reports e.g. a vocabulary too large for the text
        raise InputError(f"{model}: SentencePiece training failed: {str(e).strip().splitlines()[-1]}") from None
    write_json_atomic(info_path, {**ident, "model_sha256": file_sha256(model)})
    return model


def build_corpus(out: str, cache: str, packages: Sequence[Package] = PACKAGES, vocab_size: int = VOCAB_SIZE,
                 val_fraction: float = VAL_FRACTION, workers: int = 1, progress: bool = True,
                 download: Callable[[Package, str], str] = apt_download) -> dict:
    """The four steps of the module docstring; returns the corpus summary (OUT/manifest.json)."""
    unpacked = [fetch(p, cache, download) for p in tqdm(packages, desc="fetch", unit="package",
                                                        disable=None if progress else True)]
    json_dir = os.path.join(out, "json")
    extracted = [extract(u, json_dir, progress) for u in tqdm(unpacked, desc="extract", unit="package",
                                                              disable=None if progress else True)]
    json_files = [os.path.join(json_dir, e["json"]) for e in extracted]
    tokenizer = _tokenizer(json_files, out, vocab_size, val_fraction)
    jobs = make_jobs(json_files, "c4", out, tokenizer, val_fraction)
    summary = build(jobs, workers, progress)
    for i, e in enumerate(extracted):  # per package: what its shards hold
        with open(marker_path(out, i)) as f:
            shards = json.load(f)["shards"]
        e["tokens"] = {s: sum(x["tokens"] for x in shards[s]) for s in ("train", "val")}
    per_package = [{k: v for k, v in e.items() if k != "extractor"} for e in extracted]
    summary.update(source="debian-docs", packages=per_package)
    write_json_atomic(os.path.join(out, "manifest.json"), summary)
    return summary

"""Debian packages in a local cache: fetched with `apt-get download`, unpacked with `dpkg -x`, never installed.

Cache layout, one entry per (name, version):
  CACHE/NAME_VERSION.deb    the package as apt fetched it
  CACHE/NAME_VERSION/       its files (dpkg -x), renamed into place once complete
  CACHE/NAME_VERSION.json   sha256 of the .deb and the license, written last: an entry without it is redone
Both steps work as an ordinary user (apt-get download and dpkg -x write only into the cache) and as root.
A cache filled elsewhere (the same layout, e.g. on a machine without apt) is used as it is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Callable, Tuple

from .readers import InputError
from .shards import write_json_atomic
from .tokenizer import file_sha256


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    include: Tuple[str, ...]  # regular expressions; a file is read when its path in the package matches one
    exclude: Tuple[str, ...] = ()  # ... and none of these

    @property
    def key(self) -> str:
        return f"{self.name}_{self.version.replace(':', '%3a')}"  # apt's file name spelling of an epoch

    def wants(self, path: str) -> bool:
        return any(re.search(p, path) for p in self.include) and not any(re.search(p, path) for p in self.exclude)


@dataclass(frozen=True)
class Unpacked:
    package: Package
    root: str  # the unpacked tree
    deb_sha256: str
    license: str


def apt_download(package: Package, directory: str) -> str:
    """Fetches NAME=VERSION into directory (apt-get download writes into its working directory); returns the
    .deb's path. Raises InputError with apt's own reason when the version is not available."""
    if shutil.which("apt-get") is None:
        raise InputError(f"{package.name}={package.version}: apt-get not found (a Debian machine is needed to fetch "
                         f"the packages, or a cache filled on one)")
    proc = subprocess.run(["apt-get", "download", "-q", f"{package.name}={package.version}"], cwd=directory,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    debs = [f for f in os.listdir(directory) if f.startswith(package.name + "_") and f.endswith(".deb")]
    if proc.returncode != 0 or len(debs) != 1:
        reasons = [line[2:].strip() for line in proc.stderr.splitlines() if line.startswith("E:")]
        reason = reasons[0] if reasons else (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise InputError(f"{package.name}={package.version}: apt-get download failed: {reason} (run apt-get update, "
                         f"or pin the version apt-cache policy {package.name} lists in data_prep/debian_docs.py)")
    return os.path.join(directory, debs[0])


# Licenses named in prose (copyright files that are not machine-readable), as SPDX-style identifiers.
_LICENSE_NAMES = ((r"GNU Free Documentation License", "GFDL"),
                  (r"GNU Lesser General Public License|GNU Library General "
                   r"Public License|Lesser General Public License", "LGPL"), (r"GNU General Public License", "GPL"),
                  (r"Artistic License", "Artistic"), (r"public domain", "public-domain"))


def license_of(root: str, name: str) -> str:
    """The package's license from usr/share/doc/NAME/copyright (followed when NAME links to another directory):
    the License field of the "Files: *" stanza of a machine-readable file, else its first License field, else
    the first license named in the text (GPL-3+ for "GNU General Public License ... version 3 ... any later")."""
    doc = os.path.join(root, "usr", "share", "doc", name)
    path = os.path.join(doc, "copyright")
    if os.path.islink(doc) and not os.path.isfile(path):  # the copyright file belongs to the package linked to
        return f"as {os.path.basename(os.readlink(doc))} (usr/share/doc/{name} links there)"
    if not os.path.isfile(path):
        return f"unknown (no usr/share/doc/{name}/copyright in the package)"
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    for stanza in re.split(r"\n\s*\n", text):
        if re.search(r"^Files:\s*\*\s*$", stanza, re.M):
            m = re.search(r"^License:[ \t]*(\S.*)$", stanza, re.M)
            if m:
                return m.group(1).strip()
    m = re.search(r"^License:[ \t]*(\S.*)$", text, re.M)
    if m and not m.group(1).strip().startswith("<"):
        return m.group(1).strip()
    flat = " ".join(text.split())
    found = [(m.start(), m.end(), ident) for pattern, ident in _LICENSE_NAMES
             for m in [re.search(pattern, flat, re.I)] if m]
    if not found:
        return f"unknown (no license named in usr/share/doc/{name}/copyright)"
    _, end, ident = min(found)
    after = flat[end:end + 300]
    version = re.search(r"[Vv]ersion (\d+(?:\.\d+)?)", after)
    if version and ident != "public-domain":
        ident += "-" + version.group(1) + ("+" if re.search(r"any later version", after) else "")
    return ident


def _unpack(deb: str, dest: str) -> None:
    if shutil.which("dpkg") is None:
        raise InputError(f"{deb}: dpkg not found (needed to unpack the package)")
    tmp = dest + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    proc = subprocess.run(["dpkg", "-x", deb, tmp], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise InputError(f"{deb}: dpkg -x failed: {reason}")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def fetch(package: Package, cache: str, download: Callable[[Package, str], str] = apt_download) -> Unpacked:
    """The package unpacked in the cache, downloading and unpacking only what an earlier run did not finish."""
    base = os.path.join(cache, package.key)
    info_path = base + ".json"
    if os.path.isfile(info_path) and os.path.isdir(base):
        with open(info_path) as f:
            info = json.load(f)
        return Unpacked(package, base, info["deb_sha256"], info["license"])
    os.makedirs(cache, exist_ok=True)
    deb = base + ".deb"
    if not os.path.isfile(deb):
        with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as incoming:
            os.replace(download(package, incoming), deb)  # whole or not at all
    _unpack(deb, base)
    info = {"name": package.name, "version": package.version, "deb_sha256": file_sha256(deb),
            "license": license_of(base, package.name)}
    write_json_atomic(info_path, info)
    return Unpacked(package, base, info["deb_sha256"], info["license"])

"""Fashion-MNIST for a user who is not root or not on Debian: fetched into a user cache, checked.

``download_dataset("fashion-mnist")`` puts the four IDX ``.gz`` files of Zalando's public source
into ``$VISIONZOO_DATA/fashion-mnist`` (else ``~/.cache/visionzoo/fashion-mnist``), where the
``fashion-mnist`` keyword of ``visionzoo.data.datasets`` looks. When Debian's package
``dataset-fashion-mnist`` already holds them in ``/usr/share/datasets/fashion-mnist`` it says so
and fetches nothing.

Why it is careful about half-written files: a training run trusts whatever sits under the final
file names, so a file reaches its final name only after its MD5 matches the published one. Each
file is streamed to ``NAME.part`` and renamed over the final name (an atomic ``os.replace``) only
then; a wrong or truncated download is deleted and reported in one line with the expected and
the received checksums. A file already there with the right checksum is not fetched again, and a
file already there is never removed unless a verified copy replaces it (a failure on the third
file keeps the first two). The published MD5s are those of the Fashion-MNIST README's table
(also in Debian's copy of it, /usr/share/doc/dataset-fashion-mnist/README.md.gz). Debian's own
``.gz`` files do *not* match them: Debian's build normalised their gzip headers (dropped the
stored file name, replaced the time stamp) and kept the compressed data; putting the header back
gives the published MD5 for all four (tests/test_download.py checks it).

Only the standard library (urllib) is used; ``file://`` URLs work too, so a local mirror (or a
test) needs no web server.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from visionzoo.data import datasets
from visionzoo.data.datasets import KEYWORDS, DataError, default_download_root
from visionzoo.progress import Progress

__all__ = ["REMOTES", "Remote", "download_dataset", "md5sum"]

CHUNK = 1 << 16
TIMEOUT_S = 60


@dataclass(frozen=True)
class Remote:
    """A dataset's files on the web: base URLs tried in order, each file's published MD5."""

    title: str
    urls: tuple[str, ...]
    md5: Mapping[str, str]
    debian_package: str = ""


REMOTES: dict[str, Remote] = {
    "fashion-mnist": Remote(
        title="Fashion-MNIST",
        # Zalando's own bucket, then the GitHub copy in the dataset's repository
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
              "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/"
              "fashion/"),
        # the README's "MD5 Checksum" column
        md5={"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
             "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
             "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
             "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        debian_package="dataset-fashion-mnist"),
}


def md5sum(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _system_copy(folder: str, files: Mapping[str, str]) -> Path | None:
    """The system data root (Debian's /usr/share/datasets) that already holds every file."""
    for root in datasets.DATA_ROOTS:  # looked up now: tests hide Debian's copy
        cand = Path(root) / folder
        if all((cand / name).is_file() for name in files):
            return cand
    return None


def _kb(n: int) -> int:
    return -(-n // 1024)  # rounded up: a 300-byte file is 1 kB, and its last chunk 100 %


def _fetch(url: str, part: Path, name: str, progress: str) -> tuple[str, int, int | None]:
    """Stream ``url`` into ``part``; returns (md5, bytes received, bytes announced or None)."""
    h = hashlib.md5(usedforsecurity=False)
    req = urllib.request.Request(url, headers={"User-Agent": "visionzoo"})
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp, open(part, "wb") as out:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        bar = Progress(_kb(total or 0), name, progress)  # in kB: short numbers
        done, t0 = 0, time.monotonic()
        try:
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                elapsed = time.monotonic() - t0
                bar.update(min(_kb(done), bar.total), elapsed,
                           f"kB, {done / 1e6 / max(elapsed, 1e-3):.1f} MB/s")
        finally:
            bar.close()
    return h.hexdigest(), done, total


def _reason(e: BaseException) -> str:
    """Why a fetch failed, in a few words ("HTTP Error 404: Not Found", "timed out")."""
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        return str(e.reason)
    return str(e) or type(e).__name__


def _download_file(name: str, expected: str, urls: tuple[str, ...], dest: Path,
                   progress: str) -> None:
    """One file: each URL in turn until one gives the published checksum; else DataError."""
    part = dest.with_name(dest.name + ".part")
    failures = []
    for base in urls:
        url = base.rstrip("/") + "/" + name
        try:
            got, size, announced = _fetch(url, part, name, progress)
        except BaseException as e:  # Ctrl-C too: nothing half-written is left behind
            part.unlink(missing_ok=True)
            if not isinstance(e, (OSError, ValueError, http.client.HTTPException)):
                raise
            failures.append(f"{url}: {_reason(e)}")
            continue
        if got != expected:
            part.unlink(missing_ok=True)
            of = f" of {announced}" if announced is not None and size != announced else ""
            failures.append(f"{url}: checksum mismatch (expected md5 {expected}, got {got}; "
                            f"{size}{of} bytes), deleted")
            continue
        os.replace(part, dest)
        return
    raise DataError(f"could not download {name}: " + "; ".join(failures))


def download_dataset(name: str = "fashion-mnist", root: str | Path | None = None, *,
                     base_url: str | None = None, progress: str = "auto",
                     log: Callable[[str], None] | None = None) -> Path:
    """Fetch dataset ``name`` (``fashion-mnist``) into ``root/<name>``; returns that folder.

    ``root`` defaults to the first $VISIONZOO_DATA entry, else ``~/.cache/visionzoo``; with no
    ``root``, a complete system copy (Debian's ``/usr/share/datasets/fashion-mnist``) is
    returned instead and nothing is fetched. ``base_url`` replaces the public sources (a mirror,
    ``file:///...``). ``progress``: "auto" (a bar on a terminal, a line per quarter in a log),
    "bar", "lines" or "off". ``log`` receives the one-line messages (default: stderr, none
    when ``progress="off"``). Raises DataError naming the file, and the expected and received
    checksums, when no source gives a file with the published MD5."""
    if progress not in ("auto", "bar", "lines", "off"):
        raise ValueError(f"progress must be auto, bar, lines or off; got {progress!r}")
    folder = KEYWORDS.get(name.lower())
    if folder not in REMOTES:
        raise DataError(f"cannot download {name!r}: only {', '.join(REMOTES)} can be "
                        f"downloaded; other datasets are read from a folder (--data PATH)")
    if log is None:
        log = (lambda msg: None) if progress == "off" else \
            (lambda msg: print(msg, file=sys.stderr, flush=True))
    remote = REMOTES[folder]
    if root is None:
        system = _system_copy(folder, remote.md5)
        if system is not None:
            pkg = f" (Debian package {remote.debian_package})" if remote.debian_package else ""
            log(f"{remote.title} is already in {system}{pkg}: nothing to download")
            return system
        root = default_download_root()
    dest_dir = Path(root).expanduser() / folder
    dest_dir.mkdir(parents=True, exist_ok=True)
    urls = (base_url,) if base_url else remote.urls
    try:
        for fname, expected in remote.md5.items():
            dest = dest_dir / fname
            if dest.is_file():
                have = md5sum(dest)
                if have == expected:
                    continue
                log(f"{dest}: md5 {have}, expected {expected}: fetching it again (the file is "
                    f"replaced only by a verified copy)")
            log(f"downloading {fname} into {dest_dir}")
            _download_file(fname, expected, urls, dest, progress)
    except BaseException:
        # an empty folder left by a first attempt would be found by the keyword
        with contextlib.suppress(OSError):
            dest_dir.rmdir()  # only if empty
        raise
    return dest_dir

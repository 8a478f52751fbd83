"""`visionzoo download fashion-mnist`: checksummed downloads into a user cache, served from this
machine only (a local HTTP server on 127.0.0.1 and file:// URLs; never the network), with small
fake IDX files whose MD5s replace the published ones for the test."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from test_data import write_fashion_mnist
from visionzoo.cli import main
from visionzoo.data import datasets, download
from visionzoo.data.datasets import DataError, open_dataset
from visionzoo.data.download import Remote, download_dataset

NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass
class Served:
    """What the local server holds: ``files`` by name; ``truncate[name] = n`` announces the
    whole length but sends n bytes and closes; ``requests`` logs every path asked for."""

    files: dict[str, bytes]
    truncate: dict[str, int] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Four small gzipped IDX files (20 train / 10 test images) in ``tmp/source``, their MD5s
    put in place of the published ones; Debian's copy, the user's cache and $VISIONZOO_DATA
    hidden, so nothing outside tmp_path is found or written."""
    src = write_fashion_mnist(tmp_path / "source", 20, 10)
    md5 = {n: _md5((src / n).read_bytes()) for n in NAMES}
    fake = Remote(title="Fashion-MNIST", urls=("http://127.0.0.1:9/unused/",), md5=md5)
    monkeypatch.setitem(download.REMOTES, "fashion-mnist", fake)
    monkeypatch.setattr(datasets, "DATA_ROOTS", ())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("VISIONZOO_DATA", raising=False)
    return src


@pytest.fixture
def server(source: Path) -> Iterator[tuple[str, Served]]:
    served = Served({n: (source / n).read_bytes() for n in NAMES})

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            served.requests.append(self.path)
            name = self.path.rsplit("/", 1)[-1]
            if not self.path.startswith("/data/") or name not in served.files:
                self.send_error(404)
                return
            body = served.files[name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:served.truncate.get(name, len(body))])
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/data/", served
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_http_download_is_checked_and_the_keyword_then_finds_it(
        tmp_path: Path, source: Path, server: tuple[str, Served],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    url, served = server
    monkeypatch.setenv("VISIONZOO_DATA", str(tmp_path / "data"))
    with pytest.raises(DataError, match="visionzoo download fashion-mnist"):
        open_dataset("fashion-mnist")  # the not-found error says how to get it

    folder = download_dataset("fashion-mnist", base_url=url, progress="lines")
    assert folder == tmp_path / "data" / "fashion-mnist"
    assert sorted(served.requests) == sorted(f"/data/{n}" for n in NAMES)
    for n in NAMES:
        assert (folder / n).read_bytes() == (source / n).read_bytes()
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)  # no .part left
    err = capsys.readouterr().err.splitlines()
    for n in NAMES:  # the progress display (a bar on a terminal, lines in a log)
        assert any(ln.startswith(f"{n} 100% ") for ln in err), err

    src = open_dataset("fashion-mnist")
    assert src.root == str(folder) and src.layout == "idx"
    assert (len(src.split("train")), len(src.split("test"))) == (20, 10)

    # files already there with the right checksum are not fetched again
    served.requests.clear()
    assert download_dataset("fashion_mnist", base_url=url, progress="off") == folder
    assert served.requests == []


def test_file_url_into_the_user_cache(tmp_path: Path, source: Path) -> None:
    with pytest.raises(DataError, match="could not download"):
        download_dataset(base_url=(tmp_path / "nothing").as_uri(), progress="off")
    # the empty folder of a failed first attempt is not left for the keyword to find
    assert not (tmp_path / "xdg" / "visionzoo" / "fashion-mnist").exists()
    with pytest.raises(DataError, match="not found"):
        open_dataset("fashion-mnist")

    folder = download_dataset(base_url=source.as_uri(), progress="off")
    assert folder == tmp_path / "xdg" / "visionzoo" / "fashion-mnist"  # $XDG_CACHE_HOME
    assert open_dataset("fashion-mnist").root == str(folder)
    assert all((folder / n).read_bytes() == (source / n).read_bytes() for n in NAMES)


def test_home_cache_without_xdg(tmp_path: Path, source: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = download_dataset(base_url=source.as_uri(), progress="off")
    assert folder == tmp_path / "home" / ".cache" / "visionzoo" / "fashion-mnist"
    assert open_dataset("fashion-mnist").root == str(folder)


def test_a_corrupt_file_is_refused_and_nothing_saved_is_lost(
        tmp_path: Path, server: tuple[str, Served]) -> None:
    url, served = server
    bad = "t10k-images-idx3-ubyte.gz"
    good = served.files[bad]
    corrupt = good[:-20] + bytes(b ^ 0xFF for b in good[-20:])  # same length, other bytes
    served.files[bad] = corrupt
    with pytest.raises(DataError) as e:
        download_dataset(root=tmp_path / "dl", base_url=url, progress="off")
    msg = str(e.value)
    assert "\n" not in msg and bad in msg
    assert download.REMOTES["fashion-mnist"].md5[bad] in msg and _md5(corrupt) in msg
    folder = tmp_path / "dl" / "fashion-mnist"
    assert not (folder / bad).exists() and not list(folder.glob("*.part"))
    # the files fetched before it stay, verified; the keyword's folder is still incomplete
    assert (folder / "train-images-idx3-ubyte.gz").is_file()
    with pytest.raises(DataError, match="missing .*`visionzoo download fashion-mnist --root"):
        open_dataset(str(folder))

    # a file already saved under a final name is not removed by a failed attempt
    served.files.pop(bad)  # now a 404
    (folder / bad).write_bytes(b"a copy the user put here")
    with pytest.raises(DataError, match="404"):
        download_dataset(root=tmp_path / "dl", base_url=url, progress="off")
    assert (folder / bad).read_bytes() == b"a copy the user put here"
    # and is replaced once a verified copy arrives
    served.files[bad] = good
    download_dataset(root=tmp_path / "dl", base_url=url, progress="off")
    assert (folder / bad).read_bytes() == good
    assert len(open_dataset(str(folder)).split("test")) == 10


def test_truncated_and_partial_files_are_not_mistaken_for_good_ones(
        tmp_path: Path, server: tuple[str, Served]) -> None:
    url, served = server
    name = "train-images-idx3-ubyte.gz"
    full = served.files[name]
    served.truncate[name] = len(full) // 2  # the connection drops halfway
    folder = tmp_path / "dl" / "fashion-mnist"
    with pytest.raises(DataError, match=name):
        download_dataset(root=tmp_path / "dl", base_url=url, progress="off")
    assert not folder.exists()  # nothing in it, no .part: removed

    # what a killed download or an interrupted copy leaves: a .part, and a half file under the
    # final name beside three good ones; the half file is refused when read, and re-fetched
    folder.mkdir(parents=True)
    for n in NAMES[1:]:
        (folder / n).write_bytes(served.files[n])
    (folder / (name + ".part")).write_bytes(full[: len(full) // 3])
    (folder / name).write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="cannot read"):
        open_dataset(str(folder))
    served.truncate.clear()
    served.requests.clear()
    download_dataset(root=tmp_path / "dl", base_url=url, progress="off")
    assert served.requests == [f"/data/{name}"]  # only the half file was fetched again
    assert (folder / name).read_bytes() == full
    assert not list(folder.glob("*.part"))
    with gzip.open(folder / name) as f:
        assert len(f.read()) == 16 + 20 * 28 * 28


def test_the_mirror_is_tried_when_the_first_source_fails(
        tmp_path: Path, source: Path, server: tuple[str, Served],
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, served = server
    remote = download.REMOTES["fashion-mnist"]
    monkeypatch.setitem(download.REMOTES, "fashion-mnist",
                        Remote(remote.title, (url.replace("/data/", "/gone/"), url), remote.md5))
    folder = download_dataset(root=tmp_path / "dl", progress="off")
    assert served.requests[:2] == [f"/gone/{NAMES[0]}", f"/data/{NAMES[0]}"]
    assert all((folder / n).is_file() for n in NAMES)


def test_a_system_copy_is_used_as_it_is(tmp_path: Path, source: Path,
                                        server: tuple[str, Served],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    url, served = server
    system = write_fashion_mnist(tmp_path / "usr-share" / "fashion-mnist", 10, 10)
    monkeypatch.setattr(datasets, "DATA_ROOTS", (str(tmp_path / "usr-share"),))
    said: list[str] = []
    assert download_dataset(base_url=url, log=said.append) == system
    assert served.requests == [] and "already in" in said[0] and str(system) in said[0]
    assert not (tmp_path / "xdg").exists()  # nothing written to the cache


def test_cli_download_and_its_errors(tmp_path: Path, source: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    assert main(["download", "fashion-mnist", "--root", str(tmp_path / "r"), "--base-url",
                 source.as_uri(), "-q"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == f"fashion-mnist: {tmp_path / 'r' / 'fashion-mnist'}"
    assert out.err == ""  # -q
    # without -q, a --root the keyword does not search is pointed out
    assert main(["download", "fashion-mnist", "--root", str(tmp_path / "r"), "--base-url",
                 source.as_uri()]) == 0
    assert f"pass --data {tmp_path / 'r' / 'fashion-mnist'}" in capsys.readouterr().err
    assert main(["download", "cifar10"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot download 'cifar10'" in err
    assert main(["download", "fashion-mnist", "--root", str(tmp_path / "s"), "--base-url",
                 (tmp_path / "empty").as_uri()]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("visionzoo download: error: could not download "
                              "train-images-idx3-ubyte.gz")


def test_the_published_checksums_are_the_readme_table() -> None:
    # Debian's package carries the Fashion-MNIST README with the MD5 column; its .gz files
    # themselves differ from the originals (normalised gzip headers), so they cannot be used
    readme = Path("/usr/share/doc/dataset-fashion-mnist/README.md.gz")
    assert readme.is_file(), "needs Debian's dataset-fashion-mnist (.ci/run installs it)"
    text = gzip.decompress(readme.read_bytes()).decode()
    rows = {ln.split("|")[1].strip(" `"): ln.split("|")[-2].strip(" `")
            for ln in text.splitlines() if ln.startswith("| `") and "ubyte.gz" in ln}
    assert rows == dict(download.REMOTES["fashion-mnist"].md5)


def test_published_md5s_are_debians_files_with_their_gzip_header_restored() -> None:
    # Debian's build rewrote each .gz header (the stored file name dropped, the time stamp
    # replaced) and kept the compressed data: putting back the name and Zalando's time stamps
    # (read from the label files in the dataset's git repository) gives the published bytes
    root = Path("/usr/share/datasets/fashion-mnist")
    assert root.is_dir(), "apt-get install dataset-fashion-mnist (see .ci/run)"
    stamps = {"train": 0x59A7E9DE, "t10k": 0x59A7E9F3}
    for name, md5 in download.REMOTES["fashion-mnist"].md5.items():
        debian = (root / name).read_bytes()
        assert debian[:4] == b"\x1f\x8b\x08\x00"  # gzip, deflate, no flags (no file name)
        original = (b"\x1f\x8b\x08\x08" + stamps[name.split("-")[0]].to_bytes(4, "little")
                    + debian[8:10] + name.removesuffix(".gz").encode() + b"\x00" + debian[10:])
        assert _md5(original) == md5, name
        assert _md5(debian) != md5  # why a Debian copy cannot stand in the user cache

"""Catalog: resolution order, downloads from a local server, checksums and the offline message."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import socket
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from privrank.data import catalog
from privrank.data.catalog import CatalogEntry
from privrank.errors import ConfigError, DataError, DatasetUnavailableError

U_DATA = b"1\t10\t4\t100\n2\t10\t5\t200\n2\t11\t3\t300\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path):
    """A local HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields ``(root, base_url)``."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def dirs(tmp_path: Path, privrank_home: Path, monkeypatch: pytest.MonkeyPatch):
    """An empty PRIVRANK_DATA_DIR and download cache; yields ``(data_dir, cache_dir)``."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("PRIVRANK_DATA_DIR", str(data))
    return data, tmp_path / "cache"


def toy_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("toy/README", "a toy data set\n")
        archive.writestr("toy/u.data", U_DATA)
    return buffer.getvalue()


def toy_entry(base_url: str, archive: bytes, **changes) -> CatalogEntry:
    fields = {
        "name": "toy",
        "folder": "toy",
        "file": "u.data",
        "format": "ml-100k",
        "url": f"{base_url}/toy.zip",
        "member": "toy/u.data",
        "archive_sha256": sha256(archive),
        "archive_size": len(archive),
        "file_sha256": sha256(U_DATA),
    }
    return CatalogEntry(**(fields | changes))


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# -------------------------------------------------------------------- downloads
def test_download_verifies_extracts_and_caches(server, dirs) -> None:
    root, base = server
    _, cache = dirs
    archive = toy_zip()
    (root / "toy.zip").write_bytes(archive)
    entry = toy_entry(base, archive)
    path = catalog.resolve(entry)
    assert path == cache / "toy" / "u.data"
    assert path.read_bytes() == U_DATA
    assert files_under(cache) == ["toy/u.data", "toy/u.data.source.json"]
    sidecar = json.loads((cache / "toy" / "u.data.source.json").read_text())
    assert sidecar["download_sha256"] == sha256(archive)
    assert sidecar["file_sha256"] == sha256(U_DATA)
    # the cache is used from now on: the source can go away
    (root / "toy.zip").unlink()
    assert catalog.resolve(entry) == path
    result = catalog.load(entry)
    assert len(result.interactions) == 3
    assert result.interactions.metadata.name == "toy"
    assert result.interactions.metadata.source_sha256 == sha256(U_DATA)


def test_download_of_a_plain_file(server, dirs) -> None:
    root, base = server
    _, cache = dirs
    (root / "Video.txt").write_bytes(b"1 2\n1 3\n2 3\n")
    entry = CatalogEntry(
        name="pairs-toy",
        folder="pairs-toy",
        file="Video.txt",
        format="pairs",
        url=f"{base}/Video.txt",
        file_sha256=sha256(b"1 2\n1 3\n2 3\n"),
    )
    result = catalog.load(entry)
    assert result.interactions.timestamps().tolist() == [0, 1, 0]
    assert files_under(cache) == ["pairs-toy/Video.txt", "pairs-toy/Video.txt.source.json"]


def test_archive_checksum_mismatch_is_refused_and_nothing_kept(server, dirs) -> None:
    root, base = server
    _, cache = dirs
    archive = toy_zip()
    (root / "toy.zip").write_bytes(archive)
    entry = toy_entry(base, archive, archive_sha256="0" * 64)
    with pytest.raises(DataError, match="checksum mismatch") as info:
        catalog.resolve(entry)
    assert info.value.value == sha256(archive)
    assert info.value.expected.startswith("0" * 64)
    assert files_under(cache) == []
    assert not (cache / "toy").exists()


def test_extracted_file_checksum_mismatch_is_refused(server, dirs) -> None:
    root, base = server
    _, cache = dirs
    archive = toy_zip()
    (root / "toy.zip").write_bytes(archive)
    entry = toy_entry(base, archive, file_sha256=sha256(b"something else"))
    with pytest.raises(DataError, match=r"checksum mismatch in toy/u.data"):
        catalog.resolve(entry)
    assert files_under(cache) == []


def test_archive_size_mismatch_is_refused(server, dirs) -> None:
    root, base = server
    archive = toy_zip()
    (root / "toy.zip").write_bytes(archive)
    with pytest.raises(DataError, match="checksum mismatch"):
        catalog.resolve(toy_entry(base, archive, archive_size=len(archive) + 1))


# -------------------------------------------------------------------- resolution order
def test_data_dir_comes_before_the_cache(dirs) -> None:
    data_dir, cache = dirs
    entry = toy_entry("http://127.0.0.1:9", b"unused")
    (cache / "toy").mkdir(parents=True)
    (cache / "toy" / "u.data").write_bytes(U_DATA)
    assert catalog.resolve(entry, download=False) == cache / "toy" / "u.data"
    (data_dir / "toy").mkdir()
    (data_dir / "toy" / "u.data").write_bytes(U_DATA)
    assert catalog.resolve(entry, download=False) == data_dir / "toy" / "u.data"


def test_a_file_that_is_not_the_official_one_is_refused(dirs) -> None:
    data_dir, _ = dirs
    entry = toy_entry("http://127.0.0.1:9", b"unused")
    (data_dir / "toy").mkdir()
    (data_dir / "toy" / "u.data").write_bytes(U_DATA + b"3\t12\t1\t400\n")
    with pytest.raises(DataError, match="checksum mismatch, the file is not the official one"):
        catalog.load(entry)
    assert len(catalog.load(entry, verify=False).interactions) == 4


# -------------------------------------------------------------------- offline
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_error_says_where_to_put_the_file(dirs) -> None:
    data_dir, cache = dirs
    url = f"http://127.0.0.1:{_closed_port()}/toy.zip"
    entry = toy_entry("unused", b"unused", url=url)
    with pytest.raises(DatasetUnavailableError) as info:
        catalog.resolve(entry, timeout=5)
    message = str(info.value)
    assert str(data_dir / "toy" / "u.data") in message
    assert str(cache / "toy" / "u.data") in message
    assert url in message
    assert "toy/u.data inside the archive" in message
    assert "download failed" in message
    assert not cache.exists() or files_under(cache) == []


def test_missing_on_the_server_is_unavailable(server, dirs) -> None:
    _, base = server
    with pytest.raises(DatasetUnavailableError, match="download failed: HTTP 404"):
        catalog.resolve(toy_entry(base, b"x"))


def test_downloads_disabled_and_no_data_dir(privrank_home, monkeypatch) -> None:
    monkeypatch.delenv("PRIVRANK_DATA_DIR", raising=False)
    with pytest.raises(DatasetUnavailableError) as info:
        catalog.resolve("ml-1m", download=False)
    message = str(info.value)
    assert "$PRIVRANK_DATA_DIR/ml-1m/ratings.dat (PRIVRANK_DATA_DIR is not set)" in message
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in message
    assert "downloads are disabled" in message


# -------------------------------------------------------------------- the catalog itself
def test_catalog_names_and_layout() -> None:
    assert {
        "ml-100k",
        "ml-1m",
        "ml-20m",
        "ml-25m",
        "ml-latest-small",
        "beauty",
        "video",
    } <= set(catalog.names())
    assert catalog.entry("ml-100k").relative_path == Path("ml-100k/u.data")
    assert catalog.entry("beauty").relative_path == Path("amazon-seqrec-s3rec/Beauty.txt")
    assert catalog.entry("video").relative_path == Path("sasrec-amazon-video/Video.txt")
    assert catalog.entry("ml-20m").format == "ml-csv"
    for name in catalog.names():
        item = catalog.entry(name)
        assert item.url.startswith("https://")
        for digest in (item.archive_sha256, item.file_sha256):
            assert digest is None or (len(digest) == 64 and int(digest, 16) >= 0)
        assert item.checksums


def test_unknown_name_lists_the_catalog() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'nope'; the catalog has beauty"):
        catalog.entry("nope")


def test_an_entry_must_pin_its_download() -> None:
    with pytest.raises(ConfigError, match="pinned SHA-256"):
        CatalogEntry(name="x", folder="x", file="x", format="pairs", url="https://x/x")

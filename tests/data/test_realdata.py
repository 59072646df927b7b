"""The real data sets under PRIVRANK_DATA_DIR: counts must equal their README.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privrank.data import catalog
from privrank.data.readers import ReadOptions, layout_for, read_interactions, validate_file
from privrank.data.validation import diagnose_text

pytestmark = pytest.mark.realdata


@pytest.fixture
def data_dir(real_data_dir: Path, privrank_home: Path, monkeypatch) -> Path:
    monkeypatch.setenv("PRIVRANK_DATA_DIR", str(real_data_dir))
    return real_data_dir


def test_ml_100k(data_dir: Path) -> None:
    result = catalog.load("ml-100k")  # also verifies the pinned SHA-256
    data = result.interactions
    assert (data.n_users, data.n_items, len(data)) == (943, 1682, 100_000)
    assert result.rejected == 0
    assert data.metadata.source_path == str((data_dir / "ml-100k" / "u.data").resolve())
    # the rating histogram of the official release (README.md)
    histogram = np.bincount(data.values().astype(int), minlength=6)[1:]
    assert histogram.tolist() == [6110, 11370, 27145, 34174, 21201]
    assert data.user_counts().min() >= 20


def test_beauty(data_dir: Path) -> None:
    data = catalog.load("beauty").interactions
    assert (data.n_users, data.n_items, len(data)) == (22_363, 12_101, 198_502)
    assert data.user_counts().min() >= 5
    # ids are 1-based and consecutive; user 1's line is "1 1 2 3 4 5"
    assert data.user_ids.to_pylist() == list(range(1, 22_364))
    indptr, items = data.sequences()
    assert data.item_ids.to_numpy()[items[indptr[0] : indptr[1]]].tolist() == [1, 2, 3, 4, 5]


def test_video(data_dir: Path) -> None:
    data = catalog.load("video").interactions
    assert (data.n_users, data.n_items, len(data)) == (31_013, 23_715, 287_107)


def test_quarantine_on_real_data_rejects_nothing(data_dir: Path, tmp_path: Path) -> None:
    rejects = tmp_path / "rejects.tsv"
    result = catalog.load("video", on_error="quarantine", rejects_path=rejects)
    assert result.rejected == 0
    assert rejects.read_text() == "line\treason\traw\n"


@pytest.mark.parametrize(
    ("folder", "fmt"),
    [("ml-100k/u.data", "ml-100k"), ("amazon-seqrec-s3rec/Beauty.txt", "sequences")],
)
def test_slow_pass_agrees_with_the_fast_path(data_dir: Path, folder: str, fmt: str) -> None:
    path = data_dir / folder
    assert validate_file(path, fmt).ok
    layout = layout_for(path, ReadOptions(format=fmt))
    slow = diagnose_text(path, layout, collect=True)
    assert slow.report.ok
    data = read_interactions(path, fmt).interactions
    np.testing.assert_array_equal(data.user_ids.to_numpy()[data.users()], slow.columns["user"])
    np.testing.assert_array_equal(data.item_ids.to_numpy()[data.items()], slow.columns["item"])
    if fmt == "ml-100k":
        np.testing.assert_array_equal(data.timestamps(), slow.columns["timestamp"])
        np.testing.assert_array_equal(data.values(), np.float32(slow.columns["value"]))

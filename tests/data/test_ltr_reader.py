"""The LightGBM / LETOR learning-to-rank reader: real files, and every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privrank.data.readers.ltr import read_ltr
from privrank.errors import DataError


def _write(tmp_path: Path, text: str, query: str | None = None) -> Path:
    path = tmp_path / "rank.train"
    path.write_text(text)
    if query is not None:
        (tmp_path / "rank.train.query").write_text(query)
    return path


def test_reads_groups_from_the_query_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "2 1:0.5 3:1\n0 2:0.25\n1 1:1 # doc 7\n", "2\n1\n")
    groups = read_ltr(path)
    assert groups.group_sizes.tolist() == [2, 1]
    assert groups.labels.tolist() == [2.0, 0.0, 1.0]
    expected = np.array([[0, 0.5, 0, 1], [0, 0, 0.25, 0], [0, 1, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(groups.features, expected)


def test_reads_groups_from_qid_runs(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 qid:7 1:1\n0 qid:7 1:2\n2 qid:3 2:1\n")
    assert read_ltr(path).group_sizes.tolist() == [2, 1]


@pytest.mark.parametrize(
    ("text", "line", "field", "value"),
    [
        ("1 1:0.5\nabc 1:1\n", 2, "label", "abc"),
        ("1 1:0.5\n-1 1:1\n", 2, "label", "-1"),
        ("1 1:0.5\n1 x:1\n", 2, "feature", "x:1"),
        ("1 2:0.5 1:1\n1 1:1\n", 1, "feature", "1:1"),
        ("1 1:nan\n1 1:1\n", 1, "feature", "1:nan"),
        ("1 1:1\n\n", 2, "label", ""),
    ],
)
def test_bad_lines_name_file_line_field_and_value(
    tmp_path: Path, text: str, line: int, field: str, value: str
) -> None:
    path = _write(tmp_path, text, "2\n")
    with pytest.raises(DataError) as caught:
        read_ltr(path)
    error = caught.value
    assert error.path == str(path)
    assert (error.line, error.field) == (line, field)
    assert str(error.value) == value or repr(value) in str(error)


def test_group_sizes_must_sum_to_the_rows(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 1:1\n0 1:2\n", "3\n")
    with pytest.raises(DataError, match=r"rank.train.query.*expected 2 \(the rows"):
        read_ltr(path)


def test_bad_group_size_is_located(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 1:1\n0 1:2\n", "1\nzero\n")
    with pytest.raises(DataError) as caught:
        read_ltr(path)
    assert (caught.value.line, caught.value.field) == (2, "group size")


def test_no_groups_at_all_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 1:1\n0 1:2\n")
    with pytest.raises(DataError, match="no query groups"):
        read_ltr(path)


def test_every_bad_line_is_counted(tmp_path: Path) -> None:
    path = _write(tmp_path, "x 1:1\ny 1:1\n1 1:1\n", "3\n")
    with pytest.raises(DataError, match=r"2 problems .* 2 of 3 lines rejected"):
        read_ltr(path)


@pytest.mark.realdata
def test_reads_lightgbm_lambdarank_example(real_data_dir: Path) -> None:
    folder = real_data_dir / "ltr-lightgbm-lambdarank"
    train, test = read_ltr(folder / "rank.train"), read_ltr(folder / "rank.test")
    # Counts verified in the data set's README.md.
    assert (train.n_rows, train.n_queries) == (3005, 201)
    assert (test.n_rows, test.n_queries) == (768, 50)
    assert np.bincount(train.labels.astype(int)).tolist() == [645, 1211, 858, 222, 69]
    assert train.n_features <= 301

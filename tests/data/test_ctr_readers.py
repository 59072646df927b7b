"""CTR readers: verified counts of the real files, strict errors, quarantine, feature tables."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from privrank.data.ctr_datasets import CTR_DATASETS, CTRSplit, load_ctr_parts, split_ctr
from privrank.data.features import CTRFrame, FeatureEncoder
from privrank.data.readers.ctr import FRAPPE_FIELD_SIZES, read_ctr
from privrank.errors import ConfigError, DataError

FRAPPE_LINE = "1 42:1 1572:1 5042:1 5047:1 5053:1 5055:1 5058:1 5060:1 5070:1 5150:1"


@pytest.fixture(scope="module")
def real_parts() -> dict[str, dict[str, CTRFrame]]:
    if not os.environ.get("PRIVRANK_DATA_DIR"):
        pytest.skip("PRIVRANK_DATA_DIR is not set")
    return {name: load_ctr_parts(name) for name in CTR_DATASETS}


@pytest.mark.realdata
@pytest.mark.parametrize("name", list(CTR_DATASETS))
def test_real_files_have_the_readme_counts(
    real_parts: dict[str, dict[str, CTRFrame]], name: str
) -> None:
    parts = real_parts[name]
    for part, (rows, clicks) in CTR_DATASETS[name].counts.items():
        assert len(parts[part]) == rows
        assert int(parts[part].labels.sum()) == clicks


@pytest.mark.realdata
def test_frappe_fields_and_the_re_split(real_parts: dict[str, dict[str, CTRFrame]]) -> None:
    parts = real_parts["frappe"]
    frame = parts["validation"]
    assert frame.user_field == "user"
    # every field's values lie in its index range (the reader checks it; recount here)
    bounds = np.concatenate([[0], np.cumsum(FRAPPE_FIELD_SIZES)])
    for k, name in enumerate(frame.categorical):
        values = np.asarray(frame.table.column(name).to_pylist(), dtype=np.int64)
        assert values.min() >= bounds[k] and values.max() < bounds[k + 1]
    split = split_ctr(parts, CTRSplit(pool=("validation", "test"), train=0.7, validation=0.1))
    counts = split.counts()
    assert [counts[p]["rows"] for p in ("train", "validation", "test")] == [60_607, 8_658, 17_317]
    assert sum(c["clicks"] for c in counts.values()) == 19_063 + 9_536
    again = split_ctr(parts, CTRSplit(pool=("validation", "test"), train=0.7, validation=0.1))
    assert again.test.table.equals(split.test.table)  # seeded


def _write(tmp_path: Path, text: str, name: str = "x.libfm") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_strict_error_names_line_field_value_and_expectation(tmp_path: Path) -> None:
    bad = FRAPPE_LINE.replace("5042:1", "42:1")  # a user index in the daytime position
    path = _write(tmp_path, f"{FRAPPE_LINE}\n{bad}\n2 1:1\n")
    with pytest.raises(DataError) as info:
        read_ctr(path, "frappe")
    error = info.value
    assert error.line == 2 and error.column == 4 and error.field == "daytime"
    assert error.value == "42:1" and "5039" in (error.expected or "")
    assert "2 problems" in str(error) and str(path) in str(error)


def test_quarantine_keeps_good_lines_and_writes_every_reject(tmp_path: Path) -> None:
    path = _write(tmp_path, f"{FRAPPE_LINE}\n0 1:1\n{FRAPPE_LINE.replace('1 ', '-1 ', 1)}\n")
    rejects = tmp_path / "rejects.tsv"
    result = read_ctr(path, "frappe", on_error="quarantine", rejects_path=rejects)
    assert len(result.frame) == 2 and result.rejected == 1 and result.source_rows == 3
    lines = rejects.read_text().splitlines()
    assert lines[0] == "line\treason\traw" and lines[1].startswith("2\t")
    assert result.frame.labels.tolist() == [1.0, 0.0]


def test_criteo_and_avazu_layouts(tmp_path: Path) -> None:
    header = "label," + ",".join(f"I{i}" for i in range(1, 14)) + ","
    header += ",".join(f"C{i}" for i in range(1, 27))
    row = "1,," + ",".join(["3.0"] * 12) + "," + ",".join(["ab"] * 26)
    bad = "0,x," + ",".join([""] * 12) + "," + ",".join(["ab"] * 26)
    path = _write(tmp_path, f"{header}\n{row}\n{bad}\n", "c.txt")
    with pytest.raises(DataError) as info:
        read_ctr(path, "criteo")
    assert info.value.line == 3 and info.value.field == "I1" and info.value.value == "x"
    frame = read_ctr(path, "criteo", on_error="quarantine", rejects_path=tmp_path / "r").frame
    assert frame.table.column("I1").null_count == 1  # missing stays missing
    wrong = _write(tmp_path, "id,click\n1,0\n", "a.txt")
    with pytest.raises(DataError, match="header"):
        read_ctr(wrong, "avazu")


def _frame(values: dict[str, list[str]], labels: list[int]) -> CTRFrame:
    table = pa.table({"label": pa.array(labels, pa.int8()), **values})
    return CTRFrame(table, tuple(values))


def test_vocabulary_is_fitted_on_train_and_hashes_unseen_values() -> None:
    train = _frame({"a": ["x", "y", "x"], "b": ["p", "p", "q"]}, [1, 0, 1])
    test = _frame({"a": ["y", "new1", "new2"], "b": ["q", "p", "zzz"]}, [0, 0, 1])
    vocab = FeatureEncoder(hash_buckets=4).fit(train)
    assert vocab.field_sizes == (2 + 4, 2 + 4)
    codes = vocab.transform(test).codes
    assert codes[0].tolist() == [1, 6 + 1]  # "y" is code 1 of a; "q" code 1 of b (offset 6)
    assert 2 <= codes[1, 0] < 6 and 6 + 2 <= codes[2, 1] < 12  # unseen: a hashed bucket
    # the bucket of a value is stable (crc32, not Python's salted hash)
    assert vocab.transform(test).codes.tolist() == codes.tolist()
    with pytest.raises(ConfigError):
        FeatureEncoder(hash_buckets=0)

"""Readers: every format on small hand-written files with known answers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic
import pytest

from privrank.data.readers import (
    ReadOptions,
    default_rejects_path,
    layout_for,
    read_interactions,
)
from privrank.data.readers import _fast as fast_module
from privrank.data.readers._fast import read_fast
from privrank.data.readers._text import to_arrow
from privrank.data.validation import diagnose_text
from privrank.errors import DataError

# Four ratings by users 196, 186, 22 on items 242, 302, 377 (u.data's first lines, reordered).
ROWS = [
    (196, 242, 3.0, 881250949),
    (186, 302, 3.0, 891717742),
    (22, 377, 1.0, 878887116),
    (196, 377, 5.0, 881250950),
]
# Codes follow sorted external ids: users 22 -> 0, 186 -> 1, 196 -> 2; items 242, 302, 377.
USER_CODES = [2, 1, 0, 2]
ITEM_CODES = [0, 1, 2, 2]


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def assert_rows(result, *, values=True, timestamps=True) -> None:
    data = result.interactions
    assert data.user_ids.to_pylist() == [22, 186, 196]
    assert data.item_ids.to_pylist() == [242, 302, 377]
    assert data.users().tolist() == USER_CODES
    assert data.items().tolist() == ITEM_CODES
    if timestamps:
        assert data.timestamps().tolist() == [r[3] for r in ROWS]
    if values:
        assert data.values().tolist() == [r[2] for r in ROWS]
    assert result.source_rows == 4
    assert result.rejected == 0
    assert result.rejects_path is None


def test_ml_100k(tmp_path: Path) -> None:
    text = "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in ROWS)
    path = write(tmp_path / "u.data", text)
    result = read_interactions(path, "ml-100k")
    assert_rows(result)
    meta = result.interactions.metadata
    assert meta.source_sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert meta.source_format == "ml-100k"
    assert meta.source_rows == 4
    assert meta.rejected_rows == 0
    assert meta.source_path == str(path.resolve())
    assert meta.name == "u"


def test_ml_1m_double_colon(tmp_path: Path) -> None:
    text = "".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in ROWS)
    assert_rows(read_interactions(write(tmp_path / "ratings.dat", text), "ml-1m"))


def test_ml_csv_with_crlf_and_no_final_newline(tmp_path: Path) -> None:
    lines = ["userId,movieId,rating,timestamp"] + [f"{u},{i},{r},{t}" for u, i, r, t in ROWS]
    path = write(tmp_path / "ratings.csv", "\r\n".join(lines))
    assert_rows(read_interactions(path, "ml-csv"))


def test_ml_csv_half_stars_and_bom(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.csv", "\ufeffuserId,movieId,rating,timestamp\n1,2,0.5,10\n1,3,4.5,11\n"
    )
    data = read_interactions(path, "ml-csv").interactions
    assert data.values().tolist() == [0.5, 4.5]


def test_sequences_positions_are_timestamps(tmp_path: Path) -> None:
    # user 1 appears on two lines: its positions continue in file order
    path = write(tmp_path / "Beauty.txt", "1 10 11 12\n2 11\n3 12 10\n1 13\n")
    result = read_interactions(path, "sequences")
    data = result.interactions
    assert result.source_rows == 4  # lines
    assert len(data) == 7
    users = data.user_ids.to_numpy()[data.users()].tolist()
    items = data.item_ids.to_numpy()[data.items()].tolist()
    assert users == [1, 1, 1, 2, 3, 3, 1]
    assert items == [10, 11, 12, 11, 12, 10, 13]
    assert data.timestamps().tolist() == [0, 1, 2, 0, 0, 1, 3]
    assert not data.has_values
    indptr, seq = data.sequences()
    assert data.item_ids.to_numpy()[seq[indptr[0] : indptr[1]]].tolist() == [10, 11, 12, 13]


def test_pairs_positions_are_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path / "Video.txt", "1 10\n1 11\n2 10\n1 12\n")
    data = read_interactions(path, "pairs").interactions
    assert data.user_ids.to_pylist() == [1, 2]
    assert data.timestamps().tolist() == [0, 1, 0, 2]
    assert data.items().tolist() == [0, 1, 0, 2]


def test_csv_column_mapping_by_name_with_quotes_and_extra_columns(tmp_path: Path) -> None:
    text = (
        "ts,who,what,note,stars\n"
        '5,"alice",B0001,"a, quoted note",4.5\n'
        "3,bob,0042,,2\n"
        '9,alice,0042,"x",1\n'
    )
    options = ReadOptions(
        format="csv", user_col="who", item_col="what", time_col="ts", value_col="stars"
    )
    data = read_interactions(write(tmp_path / "log.csv", text), options).interactions
    assert data.user_ids.to_pylist() == ["alice", "bob"]
    # "B0001" is not an integer, so the item column is text and keeps "0042" as written
    assert data.item_ids.to_pylist() == ["0042", "B0001"]
    assert data.users().tolist() == [0, 1, 0]
    assert data.items().tolist() == [1, 0, 0]
    assert data.timestamps().tolist() == [5, 3, 9]
    assert data.values().tolist() == [4.5, 2.0, 1.0]


def test_csv_integer_ids_and_id_type_str(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "u,i\n10,7\n9,007\n")
    data = read_interactions(path, "csv", user_col="u", item_col="i").interactions
    assert data.user_ids.to_pylist() == [9, 10]
    assert data.item_ids.to_pylist() == [7]  # 7 and 007 are the same integer id
    text = read_interactions(path, "csv", user_col="u", item_col="i", id_type="str")
    assert text.interactions.user_ids.to_pylist() == ["10", "9"]
    assert text.interactions.item_ids.to_pylist() == ["007", "7"]


def test_tsv_without_header_by_position(tmp_path: Path) -> None:
    path = write(tmp_path / "log.tsv", "x\t3\t30\t0.5\nx\t1\t10\t1.5\n")
    options = ReadOptions(format="tsv", has_header=False, user_col=2, item_col=3, value_col=4)
    data = read_interactions(path, options).interactions
    assert data.user_ids.to_pylist() == [1, 3]
    assert data.users().tolist() == [1, 0]
    assert data.values().tolist() == [0.5, 1.5]
    assert not data.has_timestamps


def test_csv_custom_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "u;i\n1;2\n")
    data = read_interactions(path, "csv", user_col="u", item_col="i", delimiter=";").interactions
    assert len(data) == 1


def test_parquet_with_timestamp_type_and_string_ids(tmp_path: Path) -> None:
    table = pa.table(
        {
            "user": ["b", "a", "b"],
            "item": pa.array([3, 1, 2], pa.int16()),
            "when": pa.array([1_000_000, 2_000_500, 3_000_000], pa.timestamp("ms")),
            "rating": pa.array([1, 2, 3], pa.int8()),
        }
    )
    path = tmp_path / "log.parquet"
    pq.write_table(table, path)
    options = ReadOptions(
        format="parquet", user_col="user", item_col="item", time_col="when", value_col="rating"
    )
    result = read_interactions(path, options)
    data = result.interactions
    assert data.user_ids.to_pylist() == ["a", "b"]
    assert data.item_ids.to_pylist() == [1, 2, 3]
    assert data.timestamps().tolist() == [1000, 2000, 3000]  # milliseconds -> seconds
    assert data.values().tolist() == [1.0, 2.0, 3.0]
    assert result.source_rows == 3
    assert data.metadata.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_many_blocks_and_ids_beyond_int32(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 30_000
    users = rng.integers(1, 500, n)
    users[-1] = 2**40  # one id beyond int32, in the last block
    items = rng.integers(1, 3000, n)
    ratings = rng.integers(1, 6, n)
    times = rng.integers(0, 2**31, n)
    text = "".join(
        f"{a}\t{b}\t{c}\t{d}\n" for a, b, c, d in zip(users, items, ratings, times, strict=True)
    )
    path = write(tmp_path / "u.data", text)
    data = read_interactions(path, "ml-100k", block_size=1 << 16).interactions
    assert len(data) == n
    np.testing.assert_array_equal(data.user_ids.to_numpy()[data.users()], users)
    np.testing.assert_array_equal(data.item_ids.to_numpy()[data.items()], items)
    np.testing.assert_array_equal(data.values(), ratings.astype(np.float32))
    np.testing.assert_array_equal(data.timestamps(), times)
    assert data.user_ids.to_pylist() == sorted(set(users.tolist()))


@pytest.mark.parametrize(
    ("fmt", "text", "extra"),
    [
        ("ml-100k", "1\t2\t3\t4\n 5\t6 \t4.0\t7\n", {}),
        ("ml-1m", "1::2::3::4\n5::6::4.5::7\n", {}),
        ("ml-csv", "userId,movieId,rating,timestamp\n1,2,3,4\n5,6,.5,7", {}),
        ("sequences", "1 2 3\n4 5\n1 6\n", {}),
        ("pairs", "1 2\n3 4\n1 5\n", {}),
        ("csv", 'u,i,t\n"a",1,5\nb,2,6\n', {"user_col": "u", "item_col": "i", "time_col": "t"}),
        (
            "tsv",
            "u\ti\tv\n1\tx\t1e2\n2\ty\t-3\n",
            {"user_col": "u", "item_col": "i", "value_col": "v"},
        ),
    ],
)
def test_fast_path_and_slow_pass_agree(tmp_path: Path, fmt: str, text: str, extra: dict) -> None:
    """The slow pass (the oracle for every message) parses valid files exactly as pyarrow does."""
    path = write(tmp_path / "data", text)
    options = ReadOptions(format=fmt, **extra)
    layout = layout_for(path, options)
    fast = read_fast(path, layout, block_size=options.block_size)
    assert fast is not None
    slow = diagnose_text(path, layout, collect=True)
    assert slow.report.ok
    assert fast.rows == slow.report.source_rows
    assert set(fast.columns) == set(slow.columns)
    for role, column in fast.columns.items():
        expected = to_arrow(slow.columns[role])
        got = pa.chunked_array([column]) if isinstance(column, pa.Array) else column
        if role == "value":
            expected = expected.cast(pa.float32())
        else:
            got = got.cast(expected.type)
        assert got.to_pylist() == expected.to_pylist(), role


def test_default_rejects_path_is_in_the_workspace(tmp_path: Path, privrank_home: Path) -> None:
    path = write(tmp_path / "u.data", "1\t2\t3\t4\n1\t2\tx\t4\n")
    result = read_interactions(path, "ml-100k", on_error="quarantine")
    assert result.rejects_path == default_rejects_path(path)
    assert result.rejects_path.is_relative_to(privrank_home)
    assert result.rejects_path.is_file()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"format": "csv", "item_col": "i"},  # no user column
        {"format": "ml-100k", "user_col": "u"},  # fixed layouts take no mapping
        {"format": "ml-100k", "has_header": True},
        {"format": "csv", "user_col": "u", "item_col": "u"},
        {"format": "csv", "user_col": "u", "item_col": "i", "delimiter": "ab"},
        {"format": "csv", "user_col": "u", "item_col": "i", "has_header": False},
        {"format": "ml-csv", "min_value": 5, "max_value": 1},
        {"format": "ml-csv", "bogus": 1},
    ],
)
def test_invalid_options_are_refused(kwargs: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        ReadOptions(**kwargs)


def test_value_range_defaults() -> None:
    assert ReadOptions(format="ml-100k").value_range == (1.0, 5.0)
    assert ReadOptions(format="ml-csv").value_range == (0.5, 5.0)
    low, high = ReadOptions(format="pairs").value_range
    assert np.isinf(low) and np.isinf(high)
    assert ReadOptions(format="ml-csv", min_value=0).value_range == (0.0, 5.0)


@pytest.mark.parametrize("fmt", ["ml-csv", "sequences"])
def test_parallel_byte_ranges_give_the_same_result(tmp_path: Path, monkeypatch, fmt: str) -> None:
    rng = np.random.default_rng(1)
    n = 20_000
    users, items = rng.integers(1, 300, n), rng.integers(1, 900, n)
    users[n // 2 :] += 2**33  # the second range needs int64 ids, the first does not
    if fmt == "ml-csv":
        lines = [
            f"{u},{i},{(i % 10 + 1) / 2},{u % 1000}" for u, i in zip(users, items, strict=True)
        ]
        text = "userId,movieId,rating,timestamp\n" + "\n".join(lines) + "\n"
    else:
        text = "".join(f"{u} {i} {i + 1}\n" for u, i in zip(users, items, strict=True))
    path = write(tmp_path / "data", text)
    single = read_interactions(path, fmt, block_size=1 << 16).interactions
    monkeypatch.setattr(fast_module, "_PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(fast_module, "_cores", lambda: 2)
    assert len(fast_module._ranges(path)) == 2
    parallel = read_interactions(path, fmt, block_size=1 << 16).interactions
    assert parallel.table.equals(single.table)
    assert parallel.user_ids.equals(single.user_ids)
    assert parallel.item_ids.equals(single.item_ids)
    assert len(parallel) == (n if fmt == "ml-csv" else 2 * n)


def test_parallel_byte_ranges_find_a_problem_in_the_second_range(tmp_path, monkeypatch) -> None:
    lines = [f"{u}\t{u + 1}\t3\t{u}" for u in range(1, 5001)]
    lines[4000] = "4001\t4002\tbad\t4001"
    path = write(tmp_path / "u.data", "\n".join(lines) + "\n")
    monkeypatch.setattr(fast_module, "_PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(fast_module, "_cores", lambda: 2)
    with pytest.raises(DataError) as info:
        read_interactions(path, "ml-100k", block_size=1 << 16)
    assert (info.value.line, info.value.column, info.value.value) == (4001, 3, "bad")

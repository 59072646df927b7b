"""Validation: one test per kind of bad input, quarantine, and the fast/slow contract.

Every strict failure must name the line and the column (or field) of the problem, and leave
nothing behind: the folder holds only the input file afterwards.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privrank.data.readers import ReadOptions, layout_for, read_interactions, validate_file
from privrank.data.readers import _text as text_module
from privrank.data.readers._fast import read_fast
from privrank.data.validation import TextLayout, diagnose_text
from privrank.errors import DataError

HEADER = "userId,movieId,rating,timestamp\n"


def refuse(tmp_path: Path, fmt: str, content: str | bytes, name: str = "input", **options):
    """Read ``content`` strictly; expect a DataError and nothing written. Returns the error."""
    folder = tmp_path / "work"
    folder.mkdir()
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    rejects = folder / "rejects.tsv"
    with pytest.raises(DataError) as info:
        read_interactions(path, fmt, rejects_path=rejects, **options)
    assert sorted(p.name for p in folder.iterdir()) == [name], "a strict failure wrote a file"
    error = info.value
    assert str(path) in str(error)
    report = validate_file(path, fmt, **options)  # same verdict, nothing written either
    assert not report.ok
    assert report.problems[0].line == error.line
    assert sorted(p.name for p in folder.iterdir()) == [name]
    return error


def assert_located(error: DataError, line: int, column: int | None, field: str | None) -> None:
    assert error.line == line
    assert f"line {line}" in str(error)
    if column is not None:
        assert error.column == column
        assert f"column {column}" in str(error)
    if field is not None:
        assert error.field == field
        assert f"({field})" in str(error)


# -------------------------------------------------------------------- one test per kind
def test_wrong_number_of_fields(tmp_path: Path) -> None:
    error = refuse(tmp_path, "ml-100k", "1\t2\t3\t4\n1\t2\t3\n1\t2\t3\t4\n")
    assert_located(error, 2, 4, "timestamp")
    assert "wrong number of fields (3 instead of 4)" in str(error)
    assert error.value == "1\t2\t3"


def test_too_many_fields(tmp_path: Path) -> None:
    error = refuse(tmp_path, "pairs", "1 2\n1 2 3\n")
    assert_located(error, 2, 3, None)
    assert "wrong number of fields (3 instead of 2)" in str(error)


def test_non_numeric_rating(tmp_path: Path) -> None:
    error = refuse(tmp_path, "ml-csv", HEADER + "1,2,4,5\n1,2,abc,5\n")
    assert_located(error, 3, 3, "rating")
    assert "non-numeric rating: got 'abc', expected a finite rating in [0.5, 5]" in str(error)


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-Infinity", "1e400"])
def test_non_finite_rating(tmp_path: Path, value: str) -> None:
    error = refuse(tmp_path, "ml-1m", f"1::2::3::4\n5::6::{value}::7\n")
    assert_located(error, 2, 3, "rating")
    assert "non-finite rating" in str(error)
    assert error.value == value


def test_negative_value(tmp_path: Path) -> None:
    error = refuse(tmp_path, "ml-100k", "1\t2\t-3\t4\n")
    assert_located(error, 1, 3, "rating")
    assert "negative rating: got '-3'" in str(error)


def test_out_of_range_value(tmp_path: Path) -> None:
    error = refuse(tmp_path, "ml-100k", "1\t2\t3\t4\n1\t2\t6\t4\n")
    assert_located(error, 2, 3, "rating")
    assert "rating out of range: got '6', expected a finite rating in [1, 5]" in str(error)


def test_value_range_options_and_float32_limit(tmp_path: Path) -> None:
    error = refuse(
        tmp_path, "csv", "u,i,w\n1,2,0.5\n1,3,11\n", user_col="u", item_col="i", value_col="w",
        max_value=10,
    )  # fmt: skip
    assert_located(error, 3, 3, "w")
    assert "value out of range: got '11', expected a finite value in <= 10" in str(error)


def test_value_beyond_float32_is_out_of_range(tmp_path: Path) -> None:
    error = refuse(
        tmp_path, "tsv", "u\ti\tw\n1\t2\t1e39\n", user_col="u", item_col="i", value_col="w"
    )
    assert_located(error, 2, 3, "w")
    assert "float32" in str(error)


def test_unparsable_timestamp(tmp_path: Path) -> None:
    error = refuse(tmp_path, "ml-csv", HEADER + "1,2,4,2015-01-01\n")
    assert_located(error, 2, 4, "timestamp")
    assert "unparsable timestamp: got '2015-01-01', expected integer Unix seconds" in str(error)


@pytest.mark.parametrize(("stamp", "word"), [("-1", "negative"), ("4102444801", "out-of-range")])
def test_timestamp_out_of_range(tmp_path: Path, stamp: str, word: str) -> None:
    error = refuse(tmp_path, "ml-100k", f"1\t2\t3\t{stamp}\n")
    assert_located(error, 1, 4, "timestamp")
    assert f"{word} timestamp: got '{stamp}'" in str(error)
    assert "2100-01-01" in str(error)


def test_empty_file(tmp_path: Path) -> None:
    error = refuse(tmp_path, "ml-100k", "")
    assert_located(error, 1, None, None)
    assert "empty file" in str(error)


def test_header_where_none_is_expected(tmp_path: Path) -> None:
    error = refuse(tmp_path, "ml-100k", "user\titem\trating\ttimestamp\n1\t2\t3\t4\n")
    assert_located(error, 1, 1, "user")
    assert "header line where none is expected" in str(error)


def test_missing_header(tmp_path: Path) -> None:
    error = refuse(tmp_path, "ml-csv", "1,2,3.5,4\n5,6,4,7\n")
    assert_located(error, 1, 1, "header")
    assert "missing header line: got '1,2,3.5,4'" in str(error)
    assert "userId,movieId,rating,timestamp" in str(error)


def test_wrong_header(tmp_path: Path) -> None:
    error = refuse(tmp_path, "ml-csv", "user,item,rating,time\n5,6,4,7\n")
    assert_located(error, 1, 1, "header")
    assert "unexpected header" in str(error)


def test_header_only(tmp_path: Path) -> None:
    error = refuse(tmp_path, "ml-csv", HEADER)
    assert_located(error, 2, None, None)
    assert "no data lines after the header" in str(error)


def test_invalid_utf8_names_the_byte_offset(tmp_path: Path) -> None:
    content = b"1 2\n3 4\xff5\n"  # byte 7 (0-based) is 0xff, in line 2, field 2
    error = refuse(tmp_path, "pairs", content)
    assert_located(error, 2, 2, "item")
    assert "invalid UTF-8 at byte offset 7" in str(error)
    assert error.value == b"\xff"


def test_invalid_utf8_in_an_ignored_column_is_found(tmp_path: Path) -> None:
    content = b"u,i,note\n1,2,ok\n1,3,caf\xe9\n"  # latin-1, in a column the reader skips
    error = refuse(tmp_path, "csv", content, user_col="u", item_col="i")
    assert_located(error, 3, 3, "note")
    assert "invalid UTF-8 at byte offset 23" in str(error)


def test_truncated_last_line(tmp_path: Path) -> None:
    error = refuse(tmp_path, "ml-100k", "1\t2\t3\t4\n5\t6\t")
    assert_located(error, 2, 4, "timestamp")
    assert "truncated last line (no newline at the end of the file" in str(error)


def test_missing_final_newline_on_a_complete_line_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text("1\t2\t3\t4\n5\t6\t4\t8")
    assert len(read_interactions(path, "ml-100k").interactions) == 2


def test_non_integer_id(tmp_path: Path) -> None:
    error = refuse(tmp_path, "sequences", "1 2 3\n4 5 x7 6\n")
    assert_located(error, 2, 3, "item")
    assert "non-integer item id: got 'x7', expected an integer id" in str(error)


def test_float_user_id(tmp_path: Path) -> None:
    error = refuse(tmp_path, "ml-csv", HEADER + "1.5,2,3,4\n")
    assert_located(error, 2, 1, "user")
    assert "non-integer user id: got '1.5'" in str(error)


def test_blank_line(tmp_path: Path) -> None:
    error = refuse(tmp_path, "ml-100k", "1\t2\t3\t4\n\n5\t6\t4\t8\n")
    assert_located(error, 2, 1, "user")
    assert "blank line" in str(error)


def test_trailing_blank_line(tmp_path: Path) -> None:
    error = refuse(tmp_path, "pairs", "1 2\n3 4\n\n")
    assert_located(error, 3, 1, "user")


def test_sequence_without_items(tmp_path: Path) -> None:
    error = refuse(tmp_path, "sequences", "1 2 3\n4\n")
    assert_located(error, 2, 2, "item")
    assert "wrong number of fields (1 instead of at least 2)" in str(error)


def test_mapped_column_missing_from_header(tmp_path: Path) -> None:
    error = refuse(tmp_path, "csv", "a,b\n1,2\n", user_col="user", item_col="b")
    assert_located(error, 1, None, None)
    assert "column 'user' (the user column) not found" in str(error)


# -------------------------------------------------------------------- reporting many problems
def test_strict_error_lists_the_first_problems_and_counts_all(tmp_path: Path) -> None:
    lines = ["1\t2\t3\t4"] + [f"1\t2\tbad{i}\t4" for i in range(30)] + ["1\t2\n"]
    error = refuse(tmp_path, "ml-100k", "\n".join(lines))
    message = str(error)
    assert_located(error, 2, 3, "rating")
    assert "31 problems" in message
    assert "31 of 32 lines rejected (30 not_a_number, 1 field_count)" in message
    assert "the first 20:" in message
    assert "line 21, column 3 (rating)" in message
    assert "line 22," not in message
    assert len(error.report.problems) == 20


# -------------------------------------------------------------------- quarantine
def test_quarantine_keeps_good_lines_and_writes_every_reject(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_bytes(b"1\t10\t3\t4\n2\t20\tnan\t5\n\n3\t30\t4\t6\n4\t40\t9\t7\n5\t50\t\xff\t8\n")
    rejects = tmp_path / "out" / "rejects.tsv"
    result = read_interactions(path, "ml-100k", on_error="quarantine", rejects_path=rejects)
    assert result.source_rows == 6
    assert result.rejected == 4
    assert result.kept_rows == 2
    assert result.source_rows == result.kept_rows + result.rejected
    data = result.interactions
    assert data.user_ids.to_pylist() == [1, 3]
    assert data.values().tolist() == [3.0, 4.0]
    assert data.metadata.rejected_rows == 4
    assert data.metadata.source_rows == 6
    assert result.rejects_path == rejects
    rows = [line.split("\t") for line in rejects.read_text().splitlines()]
    assert rows[0] == ["line", "reason", "raw"]
    assert [r[0] for r in rows[1:]] == ["2", "3", "5", "6"]
    assert "non-finite rating" in rows[1][1]
    assert rows[1][2] == "2\\t20\\tnan\\t5"  # tabs escaped, one TSV field
    assert "blank line" in rows[2][1]
    assert "rating out of range" in rows[3][1]
    assert "invalid UTF-8 at byte offset" in rows[4][1]
    assert rows[4][2] == "5\\t50\\t\\\\xff\\t8"
    assert sorted(p.name for p in rejects.parent.iterdir()) == ["rejects.tsv"]  # no temp file


def test_quarantine_of_a_valid_file_writes_an_empty_rejects_file(tmp_path: Path) -> None:
    path = tmp_path / "Video.txt"
    path.write_text("1 2\n1 3\n")
    rejects = tmp_path / "rejects.tsv"
    result = read_interactions(path, "pairs", on_error="quarantine", rejects_path=rejects)
    assert result.rejected == 0
    assert rejects.read_text() == "line\treason\traw\n"


def test_quarantine_still_refuses_a_file_level_problem(tmp_path: Path) -> None:
    error = refuse(tmp_path, "ml-csv", "1,2,3,4\n", on_error="quarantine")
    assert "missing header line" in str(error)


def test_quarantine_with_nothing_left_is_refused_after_writing_rejects(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text("a\tb\tc\td\ne\tf\tg\th\n")
    rejects = tmp_path / "rejects.tsv"
    with pytest.raises(DataError, match="no valid line: all 2 were rejected"):
        read_interactions(path, "ml-100k", on_error="quarantine", rejects_path=rejects)
    assert len(rejects.read_text().splitlines()) == 3


def test_quarantine_sequences_rejects_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "Beauty.txt"
    path.write_text("1 5 6\n2 7 oops 8\n1 9\n")
    result = read_interactions(
        path, "sequences", on_error="quarantine", rejects_path=tmp_path / "r.tsv"
    )
    data = result.interactions
    assert result.rejected == 1
    assert data.user_ids.to_pylist() == [1]
    assert data.item_ids.to_numpy()[data.items()].tolist() == [5, 6, 9]
    assert data.timestamps().tolist() == [0, 1, 2]


def test_quarantine_auto_ids_ignore_rejected_lines(tmp_path: Path) -> None:
    # the only non-integer user id is on a rejected line: the kept ids stay integers
    path = tmp_path / "log.csv"
    path.write_text("u,i,v\n1,2,3\nabc,2,nan\n10,3,4\n")
    result = read_interactions(
        path, "csv", user_col="u", item_col="i", value_col="v", on_error="quarantine",
        rejects_path=tmp_path / "r.tsv",
    )  # fmt: skip
    assert result.interactions.user_ids.to_pylist() == [1, 10]


# -------------------------------------------------------------------- parquet
def test_parquet_bad_rows_are_located_by_row(tmp_path: Path) -> None:
    path = tmp_path / "work" / "log.parquet"
    path.parent.mkdir()
    table = pa.table(
        {
            "u": pa.array([1, 2, None, 4]),
            "i": pa.array([1, 1, 1, 1]),
            "v": pa.array([1.0, float("nan"), 2.0, -1.0]),
        }
    )
    pq.write_table(table, path)
    options = {"user_col": "u", "item_col": "i", "value_col": "v", "min_value": 0}
    with pytest.raises(DataError) as info:
        read_interactions(path, "parquet", rejects_path=path.parent / "r.tsv", **options)
    error = info.value
    assert sorted(p.name for p in path.parent.iterdir()) == ["log.parquet"]
    assert "row 2, column 3 (v): non-finite value: got 'nan'" in str(error)
    assert "row 3, column 1 (u): missing user id (null)" in str(error)
    assert "row 4, column 3 (v): negative value" in str(error)
    result = read_interactions(
        path, "parquet", on_error="quarantine", rejects_path=path.parent / "r.tsv", **options
    )
    assert result.source_rows == 4
    assert result.rejected == 3
    assert result.interactions.user_ids.to_pylist() == [1]
    rows = (path.parent / "r.tsv").read_text().splitlines()
    assert rows[0] == "row\treason\traw"
    assert [r.split("\t")[0] for r in rows[1:]] == ["2", "3", "4"]


def test_parquet_wrong_column_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"u": [1], "i": [1], "v": ["high"]}), path)
    with pytest.raises(DataError, match=r"column 3 \(v\): column of type string"):
        read_interactions(path, "parquet", user_col="u", item_col="i", value_col="v")


# -------------------------------------------------------------------- fast path contract
def test_the_slow_pass_never_runs_on_a_valid_file(tmp_path, monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("the slow pass ran on a valid file")

    monkeypatch.setattr(text_module, "diagnose_text", forbidden)
    path = tmp_path / "ratings.csv"
    path.write_text(HEADER + "1,2,3.5,4\r\n5,6,4,7\r\n")
    assert len(read_interactions(path, "ml-csv").interactions) == 2
    assert validate_file(path, "ml-csv").ok


def test_validate_file_reports_counts_without_writing(tmp_path: Path, privrank_home) -> None:
    path = tmp_path / "u.data"
    path.write_text("1\t2\t3\t4\n1\t2\t3\n1\t2\t7\t4\n1\t2\t3\t4\n")
    report = validate_file(path, "ml-100k", on_error="quarantine")
    assert (report.source_rows, report.rows_ok, report.rows_rejected) == (4, 2, 2)
    assert report.problem_counts == {"field_count": 1, "value_out_of_range": 1}
    assert [p.line for p in report.problems] == [2, 3]
    assert not privrank_home.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.data"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_interactions(tmp_path / "nope.csv", "ml-csv")


# -------------------------------------------------------------------- property: fast == slow
_TOKENS = ["1", "-2", " 3", "4 ", "+5", "007", "1.5", ".5", "5.", "nan", "-inf", "1e3", "", "x"]
_TOKENS += ["99999999999999999999", "-0", "1_0", "\u0663", "2.5e-1", "4102444800", "1\u00a0"]


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(st.lists(st.sampled_from(_TOKENS), min_size=3, max_size=5), max_size=6),
    final_newline=st.booleans(),
    fmt=st.sampled_from(["ml-100k", "pairs", "sequences", "tsv"]),
)
def test_fast_path_accepts_exactly_what_the_slow_pass_accepts(rows, final_newline, fmt) -> None:
    """pyarrow's verdict and values equal the slow pass's on arbitrary tricky fields."""
    sep = "\t" if fmt in ("ml-100k", "tsv") else " "
    if fmt == "pairs":
        rows = [r[:2] for r in rows]
    body = "\n".join(sep.join(r) for r in rows) + ("\n" if final_newline else "")
    extra = {"user_col": 1, "item_col": 2, "value_col": 3, "has_header": False}
    options = ReadOptions(format=fmt, **(extra if fmt == "tsv" else {}))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data"
        path.write_text(body, encoding="utf-8")
        layout = layout_for(path, options)
        if not isinstance(layout, TextLayout):
            assert body == ""
            return
        fast = read_fast(path, layout, block_size=options.block_size)
        slow = diagnose_text(path, layout, collect=True)
    assert (fast is not None) == slow.report.ok, slow.report.problems[:1]
    if fast is None:
        return
    assert fast.rows == slow.report.source_rows
    for role, column in fast.columns.items():
        expected = slow.columns[role]
        got = (pa.chunked_array([column]) if isinstance(column, pa.Array) else column).to_pylist()
        if role == "value":
            assert got == [float(np.float32(v)) for v in expected]
        else:
            assert got == list(expected), role

"""Generic tables with a column mapping: CSV, TSV and Parquet.

The user names which column holds the user, the item and, optionally, the timestamp (integer
Unix seconds; Parquet timestamp and date columns are converted) and the value. Columns are named
by header name or by 1-based position; other columns are ignored (but must be there: every line
needs the same number of fields). Ids are integers when every id of the column is one, text
otherwise, unless ``id_type`` says which.

Parquet files are columnar and typed, so their checks are vectorised end to end: rows with a
null in a mapped column, or a value or timestamp outside the rules, are located by row number.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from privrank.data.problems import (
    FLOAT32_MAX,
    Problem,
    ValidationReport,
    shown,
    timestamp_expectation,
    value_expectation,
)
from privrank.data.readers._source import first_line
from privrank.data.readers._text import empty_file_problem, no_data_problem
from privrank.data.readers.options import ReadOptions
from privrank.data.validation import FieldRule, RejectSink, Role, TextLayout

__all__ = ["read_parquet", "table_layout"]

_ROLES = ("user", "item", "timestamp", "value")
_BATCH_ROWS = 1 << 20


def _mapping(options: ReadOptions) -> dict[Role, str | int]:
    columns: dict[Role, str | int | None] = {
        "user": options.user_col,
        "item": options.item_col,
        "timestamp": options.time_col,
        "value": options.value_col,
    }
    return {role: column for role, column in columns.items() if column is not None}


def _bad_mapping(role: str, column: str | int, names: list[str], where: str) -> Problem:
    what = f"column {column!r}" if isinstance(column, str) else f"column position {column}"
    return Problem(
        "bad_header",
        f"{what} (the {role} column) not found",
        line=1,
        value=shown(", ".join(names)),
        expected=f"{where} naming the {role} column",
        fatal=True,
    )


# -------------------------------------------------------------------- CSV / TSV
def table_layout(path: str | Path, options: ReadOptions) -> TextLayout | Problem:
    """The layout of a generic CSV/TSV file, or the fatal problem that prevents reading it.

    The first line is read to resolve header names (or, without a header, to count columns).
    """
    delimiter = options.field_delimiter
    quoting = options.format == "csv"
    base = TextLayout(
        format=options.format,
        delimiter=delimiter,
        fields=(FieldRule("user", "user"), FieldRule("item", "item")),
        has_header=options.header,
        quoting=quoting,
        value_range=options.value_range,
        timestamp_range=(options.min_timestamp, options.max_timestamp),
    )
    head = first_line(path)
    if head is None:
        return empty_file_problem(base)
    line, more = head
    text = line.decode("utf-8", "backslashreplace")
    if quoting:
        try:
            names = next(csv.reader([text], delimiter=delimiter))
        except csv.Error:
            names = text.split(delimiter)
    else:
        names = text.split(delimiter)
    mapping = _mapping(options)
    if not options.header:
        # Without a header, lines are as wide as line 1 or as the mapping needs, whichever is
        # wider (a broken line 1 is then reported as such by the line checks).
        # (ReadOptions names columns by position only, without a header)
        width = max([len(names), *(c for c in mapping.values() if isinstance(c, int))])
        names = [str(i + 1) for i in range(width)]
    positions: dict[int, Role] = {}
    for role, column in mapping.items():
        if isinstance(column, int):
            index = column - 1
        elif names.count(column) == 1:
            index = names.index(column)
        else:
            return _bad_mapping(role, column, names, "a header line (exactly one column)")
        if index >= len(names):
            return _bad_mapping(role, column, names, "a header line")
        positions[index] = role
    fields = []
    for index, name in enumerate(names):
        role = positions.get(index, "ignore")
        shown_name = name if options.header else (role if role != "ignore" else str(index + 1))
        id_type = options.id_type if role in ("user", "item") else "int"
        fields.append(FieldRule(shown_name, role, id_type=id_type))
    layout = TextLayout(
        format=base.format,
        delimiter=delimiter,
        fields=tuple(fields),
        has_header=options.header,
        quoting=quoting,
        value_range=base.value_range,
        timestamp_range=base.timestamp_range,
    )
    if options.header and not more:
        return no_data_problem(layout)
    return layout


# -------------------------------------------------------------------- Parquet
def read_parquet(
    path: Path,
    options: ReadOptions,
    *,
    collect: bool,
    reject: RejectSink | None = None,
    row_groups: list[int] | None = None,
) -> tuple[dict[str, pa.ChunkedArray] | None, ValidationReport]:
    """Read and check the mapped columns of a Parquet file.

    Args:
        path: The file.
        options: Read options with ``format="parquet"`` and a column mapping.
        collect: Return the columns of the good rows.
        reject: Receives every rejected row as ``(row, reason, raw)``.
        row_groups: Read only these consecutive row groups (a partition of the file, as the
            Ray Data engine reads it); rows are still numbered from the start of the file, and
            the report's ``source_rows`` counts the rows of these groups only.

    Returns:
        ``(columns, report)``. A missing column, an unreadable file or a column of the wrong
        type is a fatal problem in the report (``columns`` is then ``None``).
    """
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        problem = Problem(
            "bad_file",
            f"not a readable Parquet file ({exc})",
            expected="a Parquet file",
            fatal=True,
        )
        return None, ValidationReport.from_fatal(path, "parquet", problem)
    schema = parquet.schema_arrow
    names = schema.names
    selected: dict[str, str] = {}
    for mapped, column in _mapping(options).items():
        if isinstance(column, int):
            if column > len(names):
                problem = _bad_mapping(mapped, column, names, "a Parquet schema")
                return None, ValidationReport.from_fatal(path, "parquet", problem)
            column = names[column - 1]
        if names.count(column) != 1:
            problem = _bad_mapping(mapped, column, names, "a Parquet schema (exactly one column)")
            return None, ValidationReport.from_fatal(path, "parquet", problem)
        selected[mapped] = column
    for role, column in selected.items():
        wrong_type = _type_problem(role, schema.field(column), names.index(column) + 1, options)
        if wrong_type is not None:
            return None, ValidationReport.from_fatal(path, "parquet", wrong_type)
    checker = _RowChecker(options, selected, names)
    chunks: dict[str, list[pa.Array]] = {role: [] for role in selected}
    first = 0 if not row_groups else _rows_before(parquet, row_groups[0])
    start = first
    batches = parquet.iter_batches(
        batch_size=_BATCH_ROWS, columns=list(selected.values()), row_groups=row_groups
    )
    for batch in batches:
        converted = {role: _convert(role, batch.column(c), options) for role, c in selected.items()}
        keep = checker.check(converted, start, reject)
        start += batch.num_rows
        if collect and not (options.on_error == "strict" and checker.rejected):
            for role, column in converted.items():
                chunks[role].append(column if keep is None else column.filter(keep))
    if start == first and row_groups is None:
        problem = Problem("no_data", "no rows", expected="at least one row", unit="row", fatal=True)
        return None, ValidationReport.from_fatal(path, "parquet", problem)
    report = checker.report(path, start - first)
    if not collect or (options.on_error == "strict" and not report.ok):
        return None, report
    columns = {role: pa.chunked_array(c, type=_final_type(c)) for role, c in chunks.items()}
    return columns, report


def _rows_before(parquet: pq.ParquetFile, row_group: int) -> int:
    metadata = parquet.metadata
    return sum(metadata.row_group(i).num_rows for i in range(row_group))


def _type_problem(role: str, field: pa.Field, column: int, options: ReadOptions) -> Problem | None:
    t = field.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if role in ("user", "item"):
        ok = pa.types.is_integer(t) or (
            options.id_type != "int" and (pa.types.is_string(t) or pa.types.is_large_string(t))
        )
        expected = "integer ids" if options.id_type == "int" else "integer or string ids"
    elif role == "value":
        ok = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        ok = ok or pa.types.is_boolean(t)
        expected = "a numeric column"
    else:
        ok = pa.types.is_integer(t) or pa.types.is_timestamp(t) or pa.types.is_date(t)
        expected = "integer Unix seconds, a timestamp or a date column"
    if ok:
        return None
    return Problem(
        "bad_column_type",
        f"column of type {field.type}",
        column=column,
        field=field.name,
        expected=expected,
        fatal=True,
    )


def _convert(role: str, column: pa.Array, options: ReadOptions) -> pa.Array:
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    t = column.type
    if role in ("user", "item"):
        if options.id_type == "str" and not pa.types.is_string(t):
            return column.cast(pa.string())
        if pa.types.is_large_string(t):
            return column.cast(pa.string())
        if pa.types.is_integer(t) and t != pa.int64():
            return column.cast(pa.int64())
        return column
    if role == "value":
        return column.cast(pa.float64())
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        column = column.cast(pa.timestamp("s"), safe=False)
    return column.cast(pa.int64())


def _final_type(chunks: list[pa.Array]) -> pa.DataType | None:
    return chunks[0].type if chunks else None


class _RowChecker:
    """Vectorised row checks of converted Parquet batches; locates the bad rows."""

    def __init__(self, options: ReadOptions, selected: dict[str, str], names: list[str]) -> None:
        self.options = options
        self.selected = selected
        self.position = {role: names.index(c) + 1 for role, c in selected.items()}
        low, high = options.value_range
        self.value_bounds = (max(low, -FLOAT32_MAX), min(high, FLOAT32_MAX))
        self.value_expected = value_expectation("value", low, high)
        self.ts_bounds = (options.min_timestamp, options.max_timestamp)
        self.ts_expected = timestamp_expectation(*self.ts_bounds)
        self.problems: list[Problem] = []
        self.counts: Counter[str] = Counter()
        self.rejected = 0

    def check(self, columns: dict[str, pa.Array], start: int, reject: RejectSink | None):
        """Check a batch; returns the keep mask (``None`` when every row is good)."""
        n = len(next(iter(columns.values())))
        bad = np.zeros(n, dtype=bool)
        masks: list[tuple[str, np.ndarray]] = []
        for role, column in columns.items():
            for kind, mask in self._masks(role, column):
                masks.append((f"{role}:{kind}", mask))
                bad |= mask
        if not bad.any():
            return None
        rows = np.flatnonzero(bad)
        for row in rows:
            problem = self._problem_at(int(row), start, columns, masks)
            self.rejected += 1
            self.counts[problem.kind] += 1
            if len(self.problems) < self.options.max_reported:
                self.problems.append(problem)
            if reject is not None:
                raw = ", ".join(
                    f"{self.selected[r]}={c[int(row)].as_py()!r}" for r, c in columns.items()
                )
                reject(start + int(row) + 1, problem.reason, raw)
        return pa.array(~bad)

    def report(self, path: Path, rows: int) -> ValidationReport:
        return ValidationReport(
            path, "parquet", rows, self.rejected, tuple(self.problems), dict(self.counts)
        )

    def _masks(self, role: str, column: pa.Array):
        nulls = column.is_null().to_numpy(zero_copy_only=False)
        if nulls.any():
            yield "missing_value", nulls
        if role in ("user", "item"):
            if pa.types.is_string(column.type):
                empty = pc.equal(pc.binary_length(column), 0).fill_null(False)
                yield "empty_id", empty.to_numpy(zero_copy_only=False)
            return
        values = column.fill_null(0).to_numpy(zero_copy_only=False)
        if role == "value":
            finite = np.isfinite(values)
            yield "non_finite", ~finite
            low, high = self.value_bounds
            with np.errstate(invalid="ignore"):
                yield "negative_value", finite & (values < low) & (values < 0)
                yield (
                    "value_out_of_range",
                    finite & (((values < low) & (values >= 0)) | (values > high)),
                )
        else:
            low, high = self.ts_bounds
            yield "timestamp_out_of_range", (values < low) | (values > high)

    def _problem_at(self, row, start, columns, masks) -> Problem:
        for key, mask in masks:
            if not mask[row]:
                continue
            role, kind = key.split(":")
            value = columns[role][row].as_py()
            expected = {
                "value": self.value_expected,
                "timestamp": self.ts_expected,
            }.get(role, "a non-empty id")
            noun = {"user": "user id", "item": "item id"}.get(role, role)
            what = {
                "missing_value": f"missing {noun} (null)",
                "empty_id": f"empty {noun}",
                "non_finite": f"non-finite {noun}",
                "negative_value": f"negative {noun}",
                "value_out_of_range": f"{noun} out of range",
                "timestamp_out_of_range": f"{_sign_word(value)} {noun}",
            }[kind]
            return Problem(
                kind,
                what,
                line=start + row + 1,
                column=self.position[role],
                field=self.selected[role],
                value=None if value is None else str(value),
                expected=expected if kind != "missing_value" else f"a {noun}",
                unit="row",
            )
        raise AssertionError("row is not bad")


def _sign_word(value: object) -> str:
    return "negative" if isinstance(value, int) and value < 0 else "out-of-range"

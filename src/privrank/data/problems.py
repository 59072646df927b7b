"""Problems found in interaction files, and the report that collects them.

A :class:`Problem` locates one broken rule exactly (file, 1-based line or row, 1-based column,
field, the offending value and what was expected). A :class:`ValidationReport` holds the first
problems of a file with counts of all of them, and turns into one
:class:`~privrank.errors.DataError` for a strict read.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from privrank.errors import DataError

__all__ = [
    "FLOAT32_MAX",
    "Problem",
    "ValidationReport",
    "escape_tsv",
    "format_range",
    "shown",
    "timestamp_expectation",
    "value_expectation",
]

#: Largest finite float32: values are stored as float32, so larger ones cannot be kept.
FLOAT32_MAX = 3.4028234663852886e38
_SHOWN_CHARS = 120


@dataclass(frozen=True)
class Problem:
    """One problem found in a file, located exactly.

    Attributes:
        kind: Which rule was broken: ``empty_file``, ``no_data``, ``missing_header``,
            ``bad_header``, ``unexpected_header``, ``blank_line``, ``field_count``,
            ``truncated_line``, ``invalid_utf8``, ``bad_quoting``, ``not_an_integer``,
            ``id_out_of_range``, ``empty_id``, ``missing_value``, ``not_a_number``,
            ``non_finite``, ``negative_value``, ``value_out_of_range``, ``bad_timestamp``,
            ``timestamp_out_of_range``.
        problem: What is wrong, in words.
        line: 1-based line number (for Parquet: 1-based row number), if any.
        column: 1-based column (field position), if known.
        field: The field's name, if known.
        value: The offending text as read (bytes for invalid UTF-8), if any.
        expected: What was expected instead.
        unit: ``line`` for text files, ``row`` for Parquet.
        fatal: A file-level problem (empty file, missing header): no line of the file can be
            trusted, so a quarantining read cannot keep any either.
    """

    kind: str
    problem: str
    line: int | None = None
    column: int | None = None
    field: str | None = None
    value: object = None
    expected: str | None = None
    unit: Literal["line", "row"] = "line"
    fatal: bool = False

    def to_error(self, path: str | Path | None) -> DataError:
        """The problem as a :class:`DataError` naming ``path`` (rows of Parquet as ``row N``)."""
        error = self._error(path, self.line)
        if self.unit == "row" and self.line is not None:
            where = f"row {self.line}" if path is None else f"{path}, row {self.line}"
            error.args = self._error(where, None).args
        return error

    def _error(self, path: str | Path | None, line: int | None) -> DataError:
        return DataError(
            self.problem,
            path=path,
            line=line,
            column=self.column,
            field=self.field,
            value=self.value,
            expected=self.expected,
        )

    @property
    def reason(self) -> str:
        """The message without the file name, e.g. ``line 3, column 2 (item): ...``."""
        return str(self.to_error(None))


@dataclass(frozen=True)
class ValidationReport:
    """What validating (or reading) a file found.

    Attributes:
        path: The file.
        format: The reader format.
        source_rows: Data lines (rows) in the file after any header; blank lines count.
        rows_rejected: Lines with a problem (a line is rejected whole, for its first problem).
        problems: The first problems in file order (at most ``max_reported``).
        problem_counts: Number of problems of each kind over the whole file.
    """

    path: Path
    format: str
    source_rows: int
    rows_rejected: int
    problems: tuple[Problem, ...] = ()
    problem_counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_fatal(cls, path: Path, format: str, problem: Problem) -> ValidationReport:
        """A report holding one file-level problem (no row can be read)."""
        return cls(path, format, 0, 0, (problem,), {problem.kind: 1})

    @property
    def ok(self) -> bool:
        """Whether the file has no problem at all."""
        return not self.problems

    @property
    def rows_ok(self) -> int:
        """Lines that passed every check."""
        return self.source_rows - self.rows_rejected

    @property
    def total_problems(self) -> int:
        """Problems over the whole file (one per rejected line, plus file-level ones)."""
        return sum(self.problem_counts.values())

    @property
    def fatal(self) -> bool:
        """Whether a file-level problem makes every line untrustworthy."""
        return any(p.fatal for p in self.problems)

    def summary_counts(self) -> str:
        """Problem counts by kind, most frequent first: ``3 field_count, 1 non_finite``."""
        return ", ".join(f"{n} {kind}" for kind, n in Counter(self.problem_counts).most_common())

    def error(self) -> DataError:
        """One :class:`DataError` for the whole report.

        Its attributes (``line``, ``column``, ``field``, ``value``, ``expected``) describe the
        first problem; its message also lists the other reported problems and the total count,
        and ``error.report`` is this report.

        Raises:
            ValueError: The report has no problem.
        """
        if not self.problems:
            raise ValueError("the report has no problem to raise")
        first = self.problems[0]
        error = first.to_error(self.path)
        total = self.total_problems
        if total > 1:
            unit = f"{first.unit}s"
            lines = [
                str(error),
                f"{total} problems in {self.path}: {self.rows_rejected} of {self.source_rows} "
                f"{unit} rejected ({self.summary_counts()}); the first {len(self.problems)}:",
                *(f"  {p.reason}" for p in self.problems),
            ]
            error.args = ("\n".join(lines),)
        error.report = self  # type: ignore[attr-defined]
        return error

    def raise_for_problems(self) -> None:
        """Raise :meth:`error` if there is any problem."""
        if self.problems:
            raise self.error()


# -------------------------------------------------------------------- expectations in words
def format_range(low: float, high: float) -> str:
    """``[1, 5]``, ``>= 0``, ``<= 10`` or ``any`` for an interval with possibly infinite ends."""
    if math.isinf(low) and math.isinf(high):
        return "any"
    if math.isinf(high):
        return f">= {_number(low)}"
    if math.isinf(low):
        return f"<= {_number(high)}"
    return f"[{_number(low)}, {_number(high)}]"


def value_expectation(noun: str, low: float, high: float) -> str:
    """What a value field must hold, e.g. ``a finite rating in [1, 5]``."""
    bounds = format_range(low, high)
    if bounds == "any":
        return f"a finite {noun} (within float32 range, |x| <= {FLOAT32_MAX:.7g})"
    return f"a finite {noun} in {bounds}"


def timestamp_expectation(low: int, high: int) -> str:
    """What a timestamp must be, with its bounds also as dates."""

    def date(seconds: int) -> str:
        try:
            return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")
        except (OverflowError, OSError, ValueError):
            return "beyond the calendar"

    return f"integer Unix seconds in [{low}, {high}] ({date(low)} .. {date(high)})"


def escape_tsv(text: str) -> str:
    """Escape backslashes, tabs and line breaks so that ``text`` fits in one TSV field."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def shown(text: str) -> str:
    """``text`` shortened for a message."""
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))

"""Precise diagnostics of interaction files: "fast parse, slow diagnose".

The readers parse with pyarrow and check values vectorised (the fast path). Only when something
is wrong does the slow pass here run: it reads the file line by line and locates every problem
exactly — file, 1-based line, 1-based column, field, offending value and what was expected — so
that a strict read can refuse the file with one clear :class:`~privrank.errors.DataError`, and a
quarantining read can keep the good lines and write each bad one, with its reason, to a rejects
file.

The slow pass applies the same rules as the fast path (pyarrow's number syntax, the value and
timestamp ranges of :class:`~privrank.data.readers.ReadOptions`), so a line is accepted by one
exactly when it is accepted by the other. Each kind of bad input has its own
:class:`Problem` kind and message.
"""

from __future__ import annotations

import csv
import math
import re
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from privrank.data.problems import (
    FLOAT32_MAX,
    Problem,
    ValidationReport,
    shown,
    timestamp_expectation,
    value_expectation,
)

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "Diagnosis",
    "FieldRule",
    "Problem",
    "RejectSink",
    "TextLayout",
    "ValidationReport",
    "diagnose_text",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Role = Literal["user", "item", "timestamp", "value", "ignore"]
IdType = Literal["int", "str", "auto"]

# pyarrow's number syntax: surrounding blanks are trimmed, integers take an optional minus only,
# floats take what fast_float accepts (no underscores, no hex, ASCII digits only).
_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)",
    re.IGNORECASE,
)
_BLANKS = " \t"


@dataclass(frozen=True)
class FieldRule:
    """One field of a text layout.

    Attributes:
        name: The field's name in messages (``user``, ``rating``, or a header name).
        role: What the field holds; ``ignore`` fields are counted but not checked.
        id_type: For ``user``/``item``: ``int``, ``str`` or ``auto`` (integers if every id is).
        noun: How messages call the value (``rating`` for MovieLens, ``value`` otherwise).
    """

    name: str
    role: Role
    id_type: IdType = "int"
    noun: str | None = None

    @property
    def label(self) -> str:
        """The noun used in messages: ``user id``, ``rating``, ``timestamp``, ..."""
        if self.noun is not None:
            return self.noun
        return {"user": "user id", "item": "item id"}.get(self.role, self.role)

    @property
    def numeric(self) -> bool:
        """Whether the field must hold a number."""
        return self.role in ("timestamp", "value") or (
            self.role in ("user", "item") and self.id_type == "int"
        )


@dataclass(frozen=True)
class TextLayout:
    """The rules of one delimited text layout, shared by the fast and the slow path.

    Attributes:
        format: The reader format (``ml-100k``, ``csv``, ...).
        delimiter: Field separator (``\\t``, ``::``, ``,``, a space, ...).
        fields: The fields of a line in order; for a ragged layout, the first rule describes
            the first field and the second rule every further field.
        has_header: Whether line 1 is a header (already checked by the reader) to skip.
        ragged: A line is one field of the first rule followed by one or more of the second
            (``user item item ...``).
        quoting: Fields may be enclosed in double quotes (generic CSV).
        value_range: Accepted ``[low, high]`` of ``value`` fields.
        timestamp_range: Accepted ``[low, high]`` of ``timestamp`` fields (seconds).
    """

    format: str
    delimiter: str
    fields: tuple[FieldRule, ...]
    has_header: bool = False
    ragged: bool = False
    quoting: bool = False
    value_range: tuple[float, float] = (-math.inf, math.inf)
    timestamp_range: tuple[int, int] = (0, 2**62)

    def describe(self) -> str:
        """The shape of a line, for messages: ``4 tab-separated fields (user, item, ...)``."""
        sep = {"\t": "tab", " ": "space", ",": "comma"}.get(self.delimiter, repr(self.delimiter))
        if self.ragged:
            head, rest = self.fields
            return f"{sep}-separated fields: {head.name} then one or more {rest.name}s"
        names = ", ".join(f.name for f in self.fields)
        return f"{len(self.fields)} {sep}-separated fields ({names})"

    def field_at(self, column: int) -> FieldRule | None:
        """The rule of the 1-based ``column`` (``None`` past the last fixed field)."""
        if self.ragged:
            return self.fields[0] if column == 1 else self.fields[1]
        return self.fields[column - 1] if 1 <= column <= len(self.fields) else None


#: Receives each rejected line: ``(line number, reason, raw text)``.
RejectSink = Callable[[int, str, str], None]


@dataclass
class Diagnosis:
    """Result of the slow pass: the report and, when asked, the parsed good lines.

    Attributes:
        report: Problems and counts.
        columns: Parsed values of the accepted lines by role (``user``, ``item``,
            ``timestamp``, ``value``): ``array('q')`` for integers, ``array('d')`` for values,
            ``list[str]`` for text ids. Ragged layouts repeat the user once per item. Empty
            unless ``collect`` was set. ``auto`` id columns are integers when every accepted id
            is one.
    """

    report: ValidationReport
    columns: dict[str, array | list] = field(default_factory=dict)


def diagnose_text(
    path: str | Path,
    layout: TextLayout,
    *,
    max_reported: int = 20,
    collect: bool = False,
    stop_collecting_on_problem: bool = False,
    reject: RejectSink | None = None,
) -> Diagnosis:
    """Check every line of a text file against ``layout``; the slow, exact pass.

    Each line is decoded, split and every field parsed with the fast path's rules; the first
    problem of a line rejects it. Header problems and an empty file are the reader's to detect
    before (they are file-level); a header line in a layout without one is found here.

    Args:
        path: The file.
        layout: The rules.
        max_reported: Problems kept in full in the report; the rest are counted by kind.
        collect: Keep the parsed values of good lines (see :attr:`Diagnosis.columns`).
        stop_collecting_on_problem: Stop collecting at the first problem (a strict read needs
            the values only when there is none).
        reject: Called with every rejected line.

    Returns:
        The report and the collected columns.
    """
    path = Path(path)
    checker = _LineChecker(layout)
    problems: list[Problem] = []
    counts: Counter[str] = Counter()
    rows = rejected = 0
    line_no = 0
    offset = 0
    store = _Store(layout, checker) if collect else None
    with path.open("rb") as handle:
        for raw in handle:
            line_no += 1
            start = offset
            offset += len(raw)
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
                start += 3
            if layout.has_header and line_no == 1:
                continue
            rows += 1
            has_newline = raw.endswith(b"\n")
            body = raw[:-1] if has_newline else raw
            if body.endswith(b"\r"):
                body = body[:-1]
            result = checker.check(body, line_no, start, has_newline)
            if isinstance(result, Problem):
                rejected += 1
                counts[result.kind] += 1
                if len(problems) < max_reported:
                    problems.append(result)
                if reject is not None:
                    reject(line_no, result.reason, body.decode("utf-8", "backslashreplace"))
                if stop_collecting_on_problem:
                    store = None
            elif store is not None:
                store.add(result)
    report = ValidationReport(
        path=path,
        format=layout.format,
        source_rows=rows,
        rows_rejected=rejected,
        problems=tuple(problems),
        problem_counts=dict(counts),
    )
    return Diagnosis(report, {} if store is None else store.finish())


# -------------------------------------------------------------------- the line checker
class _LineChecker:
    """Parses one line's bytes into values, or returns the line's first problem."""

    def __init__(self, layout: TextLayout) -> None:
        self.layout = layout
        self.delimiter = layout.delimiter
        self.delimiter_bytes = layout.delimiter.encode()
        self.trim = not layout.ragged  # pyarrow's CSV converters trim blanks, pc.cast does not
        low, high = layout.value_range
        self.value_low = max(low, -FLOAT32_MAX)
        self.value_high = min(high, FLOAT32_MAX)
        self.value_range = (low, high)
        self.ts_low, self.ts_high = layout.timestamp_range
        self.timestamp_expected = timestamp_expectation(self.ts_low, self.ts_high)
        self.rules = [self._parser(rule) for rule in layout.fields]

    def check(self, body: bytes, line: int, start: int, has_newline: bool) -> list | Problem:
        layout = self.layout
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return self._utf8_problem(body, line, start, exc)
        if not text.strip():
            return Problem(
                "blank_line",
                "blank line",
                line=line,
                column=1,
                field=layout.fields[0].name,
                value=text,
                expected=f"a data line of {layout.describe()}",
            )
        if layout.quoting:
            try:
                parts = next(csv.reader([text], delimiter=self.delimiter, strict=True))
            except csv.Error as exc:
                return Problem(
                    "bad_quoting",
                    f"malformed quoted field ({exc})",
                    line=line,
                    value=shown(text),
                    expected="fields quoted as in RFC 4180",
                )
        else:
            parts = text.split(self.delimiter)
        count_problem = self._count_problem(parts, text, line, has_newline)
        if count_problem is not None:
            return count_problem
        if line == 1 and not layout.has_header and self._looks_like_header(parts):
            return Problem(
                "unexpected_header",
                "header line where none is expected",
                line=1,
                column=1,
                field=layout.fields[0].name,
                value=shown(text),
                expected=f"a data line of {layout.describe()} (format {layout.format!r} has no "
                "header)",
            )
        values: list[object] = []
        rules = self.rules
        if layout.ragged:  # the first rule, then the second for every further field
            rules = rules[:1] + rules[1:] * (len(parts) - 1)
        for column, (rule, part) in enumerate(zip(rules, parts, strict=True), start=1):
            if rule is None:
                values.append(None)
                continue
            parsed = rule[1](rule[0], part, line, column)
            if parsed.__class__ is Problem:
                return parsed
            values.append(parsed)
        return values

    # ---------------------------------------------------------------- structure
    def _count_problem(
        self, parts: list[str], text: str, line: int, has_newline: bool
    ) -> Problem | None:
        layout = self.layout
        found = len(parts)
        if layout.ragged:
            if found >= 2:
                return None
            need = "at least 2"
            column = 2
        else:
            want = len(layout.fields)
            if found == want:
                return None
            need = str(want)
            column = min(found, want) + 1
        rule = layout.field_at(column)
        name = rule.name if rule is not None else None
        if has_newline:
            code, message = "field_count", f"wrong number of fields ({found} instead of {need})"
        else:
            code = "truncated_line"
            message = (
                f"truncated last line (no newline at the end of the file; {found} of {need} fields)"
            )
        return Problem(
            code,
            message,
            line=line,
            column=column,
            field=name,
            value=shown(text),
            expected=layout.describe(),
        )

    def _looks_like_header(self, parts: list[str]) -> bool:
        numeric = [
            part
            for column, part in enumerate(parts, start=1)
            if (rule := self.layout.field_at(column)) is not None and rule.numeric
        ]
        return bool(numeric) and not any(_FLOAT.fullmatch(p.strip(_BLANKS)) for p in numeric)

    def _utf8_problem(self, body: bytes, line: int, start: int, exc: UnicodeDecodeError) -> Problem:
        column = body[: exc.start].count(self.delimiter_bytes) + 1
        rule = self.layout.field_at(column)
        bad = body[exc.start : exc.end]
        return Problem(
            "invalid_utf8",
            f"invalid UTF-8 at byte offset {start + exc.start} of the file",
            line=line,
            column=column,
            field=rule.name if rule is not None else None,
            value=bad,
            expected="UTF-8 text",
        )

    # ---------------------------------------------------------------- fields
    def _parser(self, rule: FieldRule):
        if rule.role == "ignore":
            return None
        if rule.role in ("user", "item"):
            return (rule, self._parse_id)
        if rule.role == "value":
            return (rule, self._parse_value)
        return (rule, self._parse_timestamp)

    def _problem(self, kind, problem, rule, part, line, column, expected) -> Problem:
        return Problem(
            kind,
            problem,
            line=line,
            column=column,
            field=rule.name,
            value=shown(part),
            expected=expected,
        )

    def _parse_id(self, rule: FieldRule, part: str, line: int, column: int):
        if rule.id_type != "int":  # text; an ``auto`` column's type is decided at the end
            if part == "":
                return self._problem(
                    "empty_id", f"empty {rule.label}", rule, part, line, column, "a non-empty id"
                )
            return part
        text = part.strip(_BLANKS) if self.trim else part
        if len(text) < 19 and text.isdigit() and text.isascii():
            return int(text)  # the common case, certainly within int64
        if not _INT.fullmatch(text):
            return self._problem(
                "not_an_integer",
                f"non-integer {rule.label}",
                rule,
                part,
                line,
                column,
                "an integer id",
            )
        number = int(text)
        if not INT64_MIN <= number <= INT64_MAX:
            return self._problem(
                "id_out_of_range",
                f"{rule.label} out of range",
                rule,
                part,
                line,
                column,
                "an integer id within 64 bits",
            )
        return number

    def _parse_value(self, rule: FieldRule, part: str, line: int, column: int):
        text = part.strip(_BLANKS)
        if not _FLOAT.fullmatch(text):
            kind, what = "not_a_number", f"non-numeric {rule.label}"
        else:
            number = float(text)
            if self.value_low <= number <= self.value_high:
                return number
            if not math.isfinite(number):
                kind, what = "non_finite", f"non-finite {rule.label}"
            elif number < self.value_low and number < 0:
                kind, what = "negative_value", f"negative {rule.label}"
            else:
                kind, what = "value_out_of_range", f"{rule.label} out of range"
        expected = value_expectation(rule.label, *self.value_range)
        return self._problem(kind, what, rule, part, line, column, expected)

    def _parse_timestamp(self, rule: FieldRule, part: str, line: int, column: int):
        text = part.strip(_BLANKS)
        if len(text) < 19 and text.isdigit() and text.isascii():
            number = int(text)
            if self.ts_low <= number <= self.ts_high:
                return number
        if not _INT.fullmatch(text):
            return self._problem(
                "bad_timestamp",
                f"unparsable {rule.label}",
                rule,
                part,
                line,
                column,
                self.timestamp_expected,
            )
        number = int(text)
        if not self.ts_low <= number <= self.ts_high:
            what = "negative" if number < 0 else "out-of-range"
            return self._problem(
                "timestamp_out_of_range",
                f"{what} {rule.label}",
                rule,
                part,
                line,
                column,
                self.timestamp_expected,
            )
        return number


class _Store:
    """Accumulates the parsed values of accepted lines, column by column."""

    def __init__(self, layout: TextLayout, checker: _LineChecker) -> None:
        self.layout = layout
        self.checker = checker
        self.columns: dict[Role, list] = {}
        self._rules = {f.role: f for f in layout.fields}
        if layout.ragged:
            self.columns = {"user": [], "item": []}
        else:
            for rule in layout.fields:
                if rule.role != "ignore":
                    self.columns[rule.role] = []
        self._targets = [
            (index, self.columns[rule.role])
            for index, rule in enumerate(layout.fields)
            if rule.role != "ignore" and not layout.ragged
        ]

    def add(self, values: list) -> None:
        if self.layout.ragged:
            user, items = values[0], values[1:]
            self.columns["user"].extend([user] * len(items))
            self.columns["item"].extend(items)
            return
        for index, target in self._targets:
            target.append(values[index])

    def finish(self) -> dict[str, array | list]:
        out: dict[str, array | list] = {}
        for role, values in self.columns.items():
            if role in ("user", "item"):
                id_type = self._rules[role].id_type
                if id_type == "auto":  # integers when every accepted id is one, as pyarrow
                    ints = _all_int64(values)
                    out[role] = values if ints is None else ints
                else:
                    out[role] = array("q", values) if id_type == "int" else values
            elif role == "value":
                out[role] = array("d", values)
            else:
                out[role] = array("q", values)
        return out


def _all_int64(texts: list[str]) -> array | None:
    out = array("q")
    for text in texts:
        text = text.strip(_BLANKS)
        if not _INT.fullmatch(text):
            return None
        number = int(text)
        if not INT64_MIN <= number <= INT64_MAX:
            return None
        out.append(number)
    return out

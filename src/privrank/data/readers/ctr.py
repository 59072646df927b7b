"""Readers for click-through-rate files, strictly validated: libFM/libSVM and raw CSV layouts.

Formats (:data:`CTR_FORMATS`):

``frappe``
    The NFM authors' frappe files (``frappe.*.libfm``): ``label idx:1 ... idx:1``, label ``1``
    or ``-1`` (read as 1 / 0), exactly ten features, the k-th in the index range of the k-th
    field (user, item, daytime, weekday, isweekend, homework, cost, weather, country, city;
    5,382 indices in all). The value of a field is its feature index.
``ipinyou``
    The deep-ctr iPinYou sample (``*.fm.txt``): ``label idx:1 ...``, label ``0``/``1``,
    sixteen features resolved through ``featindex.fm.txt`` (``field:value<TAB>index``), one per
    field in the order weekday, hour, ..., slotprice. The value of a field is the featindex
    value (``14.153.68.*`` for an IP).
``criteo``
    The raw Criteo CSV layout with header ``label,I1..I13,C1..C26``: 13 numeric count fields
    (empty = missing) and 26 categorical fields (hex hashes; empty = missing).
``avazu``
    The raw Avazu CSV layout with header ``id,click,hour,C1,...,C21``: label ``click``; ``hour``
    (``YYMMDDHH``) becomes the categorical fields ``hour`` (00..23) and ``weekday``; every other
    column but ``id`` is categorical (``device_ip`` and ``device_id`` are kept as fields).

Validation is the interaction readers' (:mod:`privrank.data.readers.api`): every problem is a
:class:`~privrank.data.problems.Problem` naming line, column, field, value and what was
expected. ``on_error="strict"`` refuses the file with one :class:`~privrank.errors.DataError`
listing the first problems and the total; ``on_error="quarantine"`` keeps the good lines and
writes every rejected one (``line``, ``reason``, ``raw``) to a TSV rejects file, atomically, so
that ``source_rows == kept + rejected`` (nothing dropped silently).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pyarrow as pa

from privrank.atomic import atomic_file
from privrank.data.features import LABEL, CTRFrame
from privrank.data.problems import Problem, ValidationReport, escape_tsv, shown
from privrank.data.readers.api import default_rejects_path
from privrank.errors import DataError

__all__ = [
    "CRITEO_HEADER",
    "CTR_FORMATS",
    "FRAPPE_FIELDS",
    "FRAPPE_FIELD_SIZES",
    "IPINYOU_FIELDS",
    "CTRFormat",
    "CTRReadResult",
    "read_ctr",
]

CTRFormat = Literal["frappe", "ipinyou", "criteo", "avazu"]
#: Every format :func:`read_ctr` understands.
CTR_FORMATS: tuple[str, ...] = get_args(CTRFormat)

FRAPPE_FIELDS = (
    "user",
    "item",
    "daytime",
    "weekday",
    "isweekend",
    "homework",
    "cost",
    "weather",
    "country",
    "city",
)
#: Feature indices of each frappe field (the NFM README's counts, in field order).
FRAPPE_FIELD_SIZES = (957, 4082, 7, 7, 2, 3, 2, 9, 80, 233)
IPINYOU_FIELDS = (
    "weekday",
    "hour",
    "useragent",
    "IP",
    "region",
    "city",
    "adexchange",
    "domain",
    "slotid",
    "slotwidth",
    "slotheight",
    "slotvisibility",
    "slotformat",
    "creative",
    "advertiser",
    "slotprice",
)
CRITEO_HEADER = ("label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27)))
AVAZU_HEADER = (
    "id",
    "click",
    "hour",
    "C1",
    "banner_pos",
    "site_id",
    "site_domain",
    "site_category",
    "app_id",
    "app_domain",
    "app_category",
    "device_id",
    "device_ip",
    "device_model",
    "device_type",
    "device_conn_type",
    *(f"C{i}" for i in range(14, 22)),
)
_MAX_REPORTED = 20


@dataclass(frozen=True)
class CTRReadResult:
    """What :func:`read_ctr` read.

    Attributes:
        frame: The kept rows.
        report: The validation report (problems found, counts by kind).
        rejects_path: The rejects file written in quarantine mode, else ``None``.
    """

    frame: CTRFrame
    report: ValidationReport
    rejects_path: Path | None

    @property
    def source_rows(self) -> int:
        """Data lines in the file (after any header)."""
        return self.report.source_rows

    @property
    def rejected(self) -> int:
        """Lines rejected (0 in strict mode)."""
        return self.report.rows_rejected


class _Reject(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


# A line parser: (line number, text) → (label, categorical values, numeric values).
_Row = tuple[int, list[str], list[float]]
_Parser = Callable[[int, str], _Row]


def read_ctr(
    path: str | Path,
    format: CTRFormat,
    *,
    on_error: Literal["strict", "quarantine"] = "strict",
    rejects_path: str | Path | None = None,
    featindex: str | Path | None = None,
    name: str | None = None,
) -> CTRReadResult:
    """Read a CTR file into a :class:`~privrank.data.features.CTRFrame`.

    Args:
        path: The file.
        format: Its layout (see the module docstring).
        on_error: ``strict`` (any problem refuses the file) or ``quarantine`` (good lines
            kept, rejected ones written to ``rejects_path``).
        rejects_path: Where quarantine writes rejected lines (default
            ``$PRIVRANK_HOME/rejects/<file>.rejects.tsv``).
        featindex: The ``featindex.fm.txt`` of an ``ipinyou`` file (default: beside it).
        name: Dataset name (default: the file's stem).

    Raises:
        DataError: Missing file; (strict) any problem; (quarantine) a file-level problem or
            no valid line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path=path)
    if format not in CTR_FORMATS:
        raise DataError(
            f"unknown CTR format {format!r}", path=path, expected=f"one of {CTR_FORMATS}"
        )
    categorical, numeric, user_field, parser, header = _layout(path, format, featindex)
    rows: list[_Row] = []
    problems: list[Problem] = []
    counts: Counter[str] = Counter()
    rejected = 0
    source_rows = 0
    out = None
    sink = None
    if on_error == "quarantine":
        rejects_path = Path(rejects_path or default_rejects_path(path))
        sink = atomic_file(rejects_path, "w", encoding="utf-8", newline="\n")
        out = sink.__enter__()
        out.write("line\treason\traw\n")
    try:
        for number, text in _lines(path, header, problems, counts):
            source_rows += 1
            try:
                rows.append(parser(number, text))
            except _Reject as reject:
                rejected += 1
                counts[reject.problem.kind] += 1
                if len(problems) < _MAX_REPORTED:
                    problems.append(reject.problem)
                if out is not None:
                    out.write(
                        f"{number}\t{escape_tsv(reject.problem.reason)}\t{escape_tsv(text)}\n"
                    )
        report = ValidationReport(
            path, format, source_rows, rejected, tuple(problems), dict(counts)
        )
        if on_error == "strict" or report.fatal:
            report.raise_for_problems()
        if source_rows - rejected == 0:
            raise DataError(
                f"no valid line: all {source_rows} were rejected"
                + (f" ({report.summary_counts()}); see {rejects_path}" if rejected else ""),
                path=path,
            )
    except BaseException as exc:
        if sink is not None:
            sink.__exit__(type(exc), exc, exc.__traceback__)
        raise
    if sink is not None:
        sink.__exit__(None, None, None)
    table = _table(rows, categorical, numeric)
    frame = CTRFrame(
        table,
        categorical,
        numeric,
        user_field,
        name or path.stem,
        {
            "path": str(path),
            "format": format,
            "source_rows": source_rows,
            "rejected": rejected,
            "rejects_path": None if rejects_path is None else str(rejects_path),
        },
    )
    return CTRReadResult(frame, report, None if on_error == "strict" else Path(str(rejects_path)))


def _lines(
    path: Path, header: tuple[str, ...] | None, problems: list[Problem], counts: Counter[str]
) -> Iterator[tuple[int, str]]:
    raw = path.read_bytes()
    if not raw:
        problem = Problem("empty_file", "the file is empty", fatal=True, expected="CTR rows")
        problems.append(problem)
        counts[problem.kind] += 1
        return
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        problem = Problem(
            "invalid_utf8", "the file is not valid UTF-8", line=line, fatal=True,
            value=raw[exc.start : exc.start + 8], expected="UTF-8 text",
        )  # fmt: skip
        problems.append(problem)
        counts[problem.kind] += 1
        return
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    start = 1
    if header is not None:
        got = tuple(lines[0].rstrip("\r").split(",")) if lines else ()
        if got != header:
            problem = Problem(
                "bad_header", "the header is not the format's", line=1, fatal=True,
                value=shown(",".join(got)), expected=shown(",".join(header)),
            )  # fmt: skip
            problems.append(problem)
            counts[problem.kind] += 1
            return
        start = 2
    for number, content in enumerate(lines[start - 1 :], start=start):
        yield number, content.rstrip("\r")


def _table(rows: list[_Row], categorical: tuple[str, ...], numeric: tuple[str, ...]) -> pa.Table:
    labels = np.fromiter((r[0] for r in rows), dtype=np.int8, count=len(rows))
    columns: dict[str, pa.Array] = {LABEL: pa.array(labels, type=pa.int8())}
    for j, name in enumerate(categorical):
        columns[name] = pa.array([r[1][j] for r in rows], type=pa.string())
    for j, name in enumerate(numeric):
        values = np.fromiter((r[2][j] for r in rows), dtype=np.float64, count=len(rows))
        columns[name] = pa.array(values, type=pa.float64(), from_pandas=True)  # NaN → null
    return pa.table(columns)


# --------------------------------------------------------------------------------- layouts
def _layout(
    path: Path, format: str, featindex: str | Path | None
) -> tuple[tuple[str, ...], tuple[str, ...], str | None, _Parser, tuple[str, ...] | None]:
    if format == "frappe":
        return FRAPPE_FIELDS, (), "user", _frappe_parser(), None
    if format == "ipinyou":
        index = Path(featindex) if featindex else path.parent / "featindex.fm.txt"
        return IPINYOU_FIELDS, (), None, _ipinyou_parser(_read_featindex(index)), None
    if format == "criteo":
        return CRITEO_HEADER[14:], CRITEO_HEADER[1:14], None, _criteo_parser(), CRITEO_HEADER
    categorical = ("hour", "weekday", *AVAZU_HEADER[3:])
    return categorical, (), None, _avazu_parser(), AVAZU_HEADER


def _label(number: int, token: str, allowed: dict[str, int], column: int = 1) -> int:
    try:
        return allowed[token]
    except KeyError:
        raise _Reject(
            Problem(
                "bad_label",
                "the label is not a click label",
                line=number,
                column=column,
                field="label",
                value=shown(token),
                expected=" or ".join(allowed),
            )
        ) from None


def _libfm_tokens(number: int, text: str, n_fields: int) -> list[str]:
    if not text.strip():
        raise _Reject(Problem("blank_line", "the line is blank", line=number, expected="a CTR row"))
    tokens = text.split()
    if len(tokens) != n_fields + 1:
        raise _Reject(
            Problem(
                "field_count",
                f"the line has {len(tokens) - 1} features",
                line=number,
                value=shown(text),
                expected=f"a label and exactly {n_fields} 'index:1' features",
            )
        )
    return tokens


def _feature_index(number: int, column: int, field: str, token: str, high: int) -> int:
    index, sep, value = token.partition(":")
    if not sep or not index.isdigit() or value not in ("1", "1.0"):
        raise _Reject(
            Problem(
                "bad_feature",
                "the feature is not 'index:1'",
                line=number,
                column=column,
                field=field,
                value=shown(token),
                expected="'index:1' with a non-negative index",
            )
        )
    idx = int(index)
    if idx >= high:
        raise _Reject(
            Problem(
                "id_out_of_range",
                "the feature index is beyond the feature space",
                line=number,
                column=column,
                field=field,
                value=token,
                expected=f"an index in [0, {high - 1}]",
            )
        )
    return idx


def _frappe_parser() -> _Parser:
    bounds = np.concatenate([[0], np.cumsum(FRAPPE_FIELD_SIZES)]).tolist()
    total = bounds[-1]
    labels = {"1": 1, "-1": 0}

    def parse(number: int, text: str) -> _Row:
        tokens = _libfm_tokens(number, text, len(FRAPPE_FIELDS))
        label = _label(number, tokens[0], labels)
        values = []
        for k, (name, token) in enumerate(zip(FRAPPE_FIELDS, tokens[1:], strict=True)):
            idx = _feature_index(number, k + 2, name, token, total)
            if not bounds[k] <= idx < bounds[k + 1]:
                raise _Reject(
                    Problem(
                        "wrong_field",
                        "the feature index is not in its field's range",
                        line=number,
                        column=k + 2,
                        field=name,
                        value=token,
                        expected=f"{name} index in [{bounds[k]}, {bounds[k + 1] - 1}]",
                    )
                )
            values.append(str(idx))
        return label, values, []

    return parse


def _read_featindex(path: Path) -> dict[int, tuple[int, str]]:
    """``index → (field position, value)`` of an iPinYou ``featindex.fm.txt``."""
    if not path.is_file():
        raise DataError(
            "the iPinYou feature index is missing",
            path=path,
            expected="featindex.fm.txt beside the data (or pass featindex=)",
        )
    position = {name: k for k, name in enumerate(IPINYOU_FIELDS)}
    out: dict[int, tuple[int, str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        key, sep, index = line.partition("\t")
        field, colon, value = key.partition(":")
        if not sep or not colon or field not in position or not index.strip().isdigit():
            raise DataError(
                "not a featindex line", path=path, line=number, value=shown(line),
                expected=f"'field:value<TAB>index' with field in {IPINYOU_FIELDS}",
            )  # fmt: skip
        out[int(index)] = (position[field], value)
    return out


def _ipinyou_parser(featindex: dict[int, tuple[int, str]]) -> _Parser:
    labels = {"0": 0, "1": 1}
    high = max(featindex) + 1

    def parse(number: int, text: str) -> _Row:
        tokens = _libfm_tokens(number, text, len(IPINYOU_FIELDS))
        label = _label(number, tokens[0], labels)
        values = []
        for k, (name, token) in enumerate(zip(IPINYOU_FIELDS, tokens[1:], strict=True)):
            idx = _feature_index(number, k + 2, name, token, high)
            entry = featindex.get(idx)
            if entry is None or entry[0] != k:
                where = "not in featindex" if entry is None else IPINYOU_FIELDS[entry[0]]
                raise _Reject(
                    Problem(
                        "wrong_field",
                        f"the feature index belongs to {where}",
                        line=number,
                        column=k + 2,
                        field=name,
                        value=token,
                        expected=f"a featindex index of field {name}",
                    )
                )
            values.append(entry[1])
        return label, values, []

    return parse


def _csv_fields(number: int, text: str, header: tuple[str, ...]) -> list[str]:
    if not text.strip():
        raise _Reject(Problem("blank_line", "the line is blank", line=number, expected="a row"))
    try:
        fields = next(csv.reader(io.StringIO(text), strict=True))
    except csv.Error as exc:
        raise _Reject(
            Problem(
                "bad_quoting",
                f"bad CSV quoting: {exc}",
                line=number,
                value=shown(text),
                expected="RFC 4180 CSV",
            )
        ) from None
    if len(fields) != len(header):
        raise _Reject(
            Problem(
                "field_count",
                f"the line has {len(fields)} fields",
                line=number,
                value=shown(text),
                expected=f"{len(header)} comma-separated fields",
            )
        )
    return fields


def _criteo_parser() -> _Parser:
    labels = {"0": 0, "1": 1}

    def parse(number: int, text: str) -> _Row:
        fields = _csv_fields(number, text, CRITEO_HEADER)
        label = _label(number, fields[0], labels)
        numeric = []
        for k in range(1, 14):
            token = fields[k]
            if token == "":
                numeric.append(float("nan"))
                continue
            try:
                value = float(token)
            except ValueError:
                value = float("nan")
                token_ok = False
            else:
                token_ok = np.isfinite(value) and value.is_integer()
            if not token_ok:
                raise _Reject(
                    Problem(
                        "not_an_integer",
                        "the count is not an integer",
                        line=number,
                        column=k + 1,
                        field=CRITEO_HEADER[k],
                        value=shown(token),
                        expected="an integer count (e.g. 3 or 3.0), or empty when missing",
                    )
                )
            numeric.append(value)
        return label, fields[14:], numeric

    return parse


def _avazu_parser() -> _Parser:
    labels = {"0": 0, "1": 1}

    def parse(number: int, text: str) -> _Row:
        fields = _csv_fields(number, text, AVAZU_HEADER)
        label = _label(number, fields[1], labels, column=2)
        hour = fields[2]
        try:
            day = np.datetime64(f"20{hour[0:2]}-{hour[2:4]}-{hour[4:6]}")
            ok = len(hour) == 8 and hour.isdigit() and 0 <= int(hour[6:8]) <= 23
        except ValueError:
            ok = False
        if not ok:
            raise _Reject(
                Problem(
                    "bad_timestamp",
                    "the hour is not YYMMDDHH",
                    line=number,
                    column=3,
                    field="hour",
                    value=shown(hour),
                    expected="YYMMDDHH, e.g. 14102100",
                )
            )
        weekday = str((int(day.astype("datetime64[D]").astype(np.int64)) + 3) % 7)  # 0 = Monday
        return label, [hour[6:8], weekday, *fields[3:]], []

    return parse

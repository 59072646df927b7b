"""The LightGBM / LETOR learning-to-rank text format, read strictly into :class:`QueryGroups`.

**Data file** (svmlight / libSVM): one (query, document) row per line,
``label [qid:Q] index:value index:value ... [# comment]``, separated by spaces or tabs. The label
is the graded relevance (a finite number ``>= 0``); indices are integers ``>= 0``, strictly
increasing within a line; values are finite numbers; a feature a line does not name is 0. Column
``j`` of the matrix is index ``j``, as LightGBM's own loader does (a 1-based file leaves column 0
empty).

**Groups**: the rows of one query are consecutive. They come from the *query file* (LightGBM's
``rank.train.query`` next to ``rank.train``: one positive integer per line, the size of the next
group, in file order; the sizes sum to the rows), or, without one, from runs of equal ``qid:``.

Every problem is reported with the file, the 1-based line, the field (``label``, ``qid``,
``feature``, ``group size``), the value and what was expected, and the read fails as a whole
(:class:`~privrank.errors.DataError`; the CLI exits with code 2): nothing is silently dropped.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from privrank.data.problems import Problem, ValidationReport, shown
from privrank.data.query_groups import QueryGroups
from privrank.errors import DataError

__all__ = ["LTR_FORMAT", "default_query_path", "read_ltr"]

LTR_FORMAT = "ltr-svmlight"
_MAX_REPORTED = 20


def default_query_path(path: str | Path) -> Path:
    """LightGBM's query file of a data file: the same name with ``.query`` appended."""
    path = Path(path)
    return path.with_name(path.name + ".query")


class _Problems:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.kept: list[Problem] = []
        self.counts: dict[str, int] = {}
        self.bad_lines: set[int] = set()

    def add(self, kind: str, problem: str, line: int, field: str, value: object, expected: str):
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.bad_lines.add(line)
        if len(self.kept) < _MAX_REPORTED:
            self.kept.append(
                Problem(kind, problem, line=line, field=field, value=value, expected=expected)
            )

    def raise_if_any(self, rows: int) -> None:
        if self.kept:
            ValidationReport(
                self.path,
                LTR_FORMAT,
                rows,
                len(self.bad_lines),
                tuple(self.kept),
                dict(self.counts),
            ).raise_for_problems()


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_ltr(path: str | Path, query_path: str | Path | None = None) -> QueryGroups:
    """Read a learning-to-rank file (and its groups) strictly.

    Args:
        path: The svmlight data file.
        query_path: The group-size file; default :func:`default_query_path` when that file
            exists, else the lines' ``qid:`` runs.

    Returns:
        The rows as float64 features (``n_rows × (max index + 1)``; the file's values exactly),
        labels and group sizes.

    Raises:
        DataError: A missing or empty file, or any invalid line (all problems are listed, the
            first ones in full).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path=path, expected="a learning-to-rank data file")
    if query_path is None and default_query_path(path).is_file():
        query_path = default_query_path(path)
    problems = _Problems(path)
    labels: list[float] = []
    qids: list[str | None] = []
    row_cols: list[np.ndarray] = []
    row_vals: list[np.ndarray] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                problems.add(
                    "invalid_utf8", "invalid UTF-8", number, "line", raw[:40], "UTF-8 text"
                )
                continue
            parsed = _parse_line(text.split("#", 1)[0].split(), number, problems)
            if parsed is None:
                continue
            label, qid, cols, vals = parsed
            labels.append(label)
            qids.append(qid)
            row_cols.append(cols)
            row_vals.append(vals)
    rows = len(labels) + len(problems.bad_lines)
    if rows == 0:
        raise DataError("empty file", path=path, expected="at least one row `label index:value`")
    problems.raise_if_any(rows)
    sizes = _group_sizes(path, query_path, qids)
    width = max((int(c[-1]) + 1 for c in row_cols if c.size), default=0)
    features = np.zeros((len(labels), width), dtype=np.float64)
    for row, (cols, vals) in enumerate(zip(row_cols, row_vals, strict=True)):
        features[row, cols] = vals
    return QueryGroups(
        features=features,
        labels=np.asarray(labels, dtype=np.float32),
        group_sizes=sizes,
        feature_names=tuple(f"f{j}" for j in range(width)),
    )


def _parse_line(
    tokens: list[str], line: int, problems: _Problems
) -> tuple[float, str | None, np.ndarray, np.ndarray] | None:
    if not tokens:
        problems.add("blank_line", "blank line", line, "label", "", "a row `label index:value`")
        return None
    label = _number(tokens[0])
    if label is None or label < 0:
        problems.add(
            "bad_label", "invalid label", line, "label", shown(tokens[0]), "a finite number >= 0"
        )
        return None
    rest = tokens[1:]
    qid: str | None = None
    if rest and rest[0].startswith("qid:"):
        qid = rest[0][4:]
        if not qid:
            problems.add("bad_qid", "empty qid", line, "qid", rest[0], "qid:<id>")
            return None
        rest = rest[1:]
    cols = np.empty(len(rest), dtype=np.int64)
    vals = np.empty(len(rest), dtype=np.float64)
    previous = -1
    for position, token in enumerate(rest):
        index_text, colon, value_text = token.partition(":")
        if not colon or not index_text.isdigit():
            problems.add(
                "bad_feature",
                "invalid feature",
                line,
                "feature",
                shown(token),
                "index:value with an integer index >= 0",
            )
            return None
        index = int(index_text)
        if index <= previous:
            problems.add(
                "feature_order",
                "feature index not increasing",
                line,
                "feature",
                shown(token),
                f"an index > {previous} (indices strictly increasing within a line)",
            )
            return None
        value = _number(value_text)
        if value is None:
            problems.add(
                "bad_value",
                f"invalid value of feature {index}",
                line,
                "feature",
                shown(token),
                "a finite number",
            )
            return None
        cols[position], vals[position], previous = index, value, index
    return label, qid, cols, vals


def _group_sizes(path: Path, query_path: str | Path | None, qids: list[str | None]) -> np.ndarray:
    if query_path is not None:
        return _read_query_file(Path(query_path), len(qids))
    if any(q is None for q in qids):
        line = next(i for i, q in enumerate(qids, start=1) if q is None)
        raise DataError(
            "no query groups",
            path=path,
            line=line,
            field="qid",
            expected=f"qid:<id> on every line, or the query file {default_query_path(path)}",
        )
    sizes: list[int] = []
    seen: set[str] = set()
    current: str | None = None
    for line, qid in enumerate(qids, start=1):
        if qid != current:
            if qid in seen:
                raise DataError(
                    "the rows of a query are not consecutive",
                    path=path,
                    line=line,
                    field="qid",
                    value=qid,
                    expected="each qid's rows in one run",
                )
            assert qid is not None
            seen.add(qid)
            current = qid
            sizes.append(0)
        sizes[-1] += 1
    return np.asarray(sizes, dtype=np.int64)


def _read_query_file(path: Path, rows: int) -> np.ndarray:
    if not path.is_file():
        raise DataError("no such query file", path=path, expected="one group size per line")
    problems = _Problems(path)
    sizes: list[int] = []
    lines = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            lines = number
            text = raw.decode("utf-8", errors="replace").strip()
            if not text.isdigit() or int(text) < 1:
                problems.add(
                    "bad_group_size",
                    "invalid group size",
                    number,
                    "group size",
                    shown(text),
                    "an integer >= 1",
                )
                continue
            sizes.append(int(text))
    if lines == 0:
        raise DataError("empty query file", path=path, expected="one group size per line")
    problems.raise_if_any(lines)
    if sum(sizes) != rows:
        raise DataError(
            "the group sizes do not sum to the rows of the data file",
            path=path,
            field="group size",
            value=sum(sizes),
            expected=f"{rows} (the rows of the data file)",
        )
    return np.asarray(sizes, dtype=np.int64)

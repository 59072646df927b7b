"""MovieLens ratings files: ``u.data`` (100K), ``ratings.dat`` (1M/10M), ``ratings.csv`` (20M+).

All three hold ``user item rating timestamp`` with integer ids, a star rating and Unix seconds:

- ``ml-100k``: tab-separated, no header (``196\\t242\\t3\\t881250949``).
- ``ml-1m``: ``::``-separated, no header (``1::1193::5::978300760``); also ML-10M.
- ``ml-csv``: comma-separated with the header ``userId,movieId,rating,timestamp``; ML-20M,
  ML-25M and ml-latest(-small). CRLF line endings are tolerated.
"""

from __future__ import annotations

from pathlib import Path

from privrank.data.problems import Problem, shown
from privrank.data.readers._source import first_line
from privrank.data.readers._text import empty_file_problem, no_data_problem
from privrank.data.readers.options import ReadOptions
from privrank.data.validation import FieldRule, TextLayout

__all__ = ["ML_CSV_HEADER", "movielens_layout"]

#: The header line of MovieLens ``ratings.csv`` files.
ML_CSV_HEADER = "userId,movieId,rating,timestamp"

_DELIMITERS = {"ml-100k": "\t", "ml-1m": "::", "ml-csv": ","}
_FIELDS = (
    FieldRule("user", "user"),
    FieldRule("item", "item"),
    FieldRule("rating", "value", noun="rating"),
    FieldRule("timestamp", "timestamp"),
)


def movielens_layout(path: str | Path, options: ReadOptions) -> TextLayout | Problem:
    """The layout of a MovieLens file, or the file-level problem that prevents reading it.

    Args:
        path: The file (its first line is read to check the header of ``ml-csv``).
        options: Read options with a MovieLens ``format``.

    Returns:
        The layout, or a fatal :class:`Problem` (empty file, missing or wrong header).
    """
    layout = TextLayout(
        format=options.format,
        delimiter=_DELIMITERS[options.format],
        fields=_FIELDS,
        has_header=options.format == "ml-csv",
        value_range=options.value_range,
        timestamp_range=(options.min_timestamp, options.max_timestamp),
    )
    head = first_line(path)
    if head is None:
        return empty_file_problem(layout)
    if not layout.has_header:
        return layout
    line, more = head
    text = line.decode("utf-8", "backslashreplace")
    if text != ML_CSV_HEADER:
        fields = text.split(",")
        looks_like_data = len(fields) == 4 and all(_is_number(f) for f in fields)
        return Problem(
            "missing_header" if looks_like_data else "bad_header",
            "missing header line" if looks_like_data else "unexpected header",
            line=1,
            column=1,
            field="header",
            value=shown(text),
            expected=f"the header {ML_CSV_HEADER!r} (format 'ml-csv')",
            fatal=True,
        )
    if not more:
        return no_data_problem(layout)
    return layout


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

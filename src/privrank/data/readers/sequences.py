"""Sequential-recommendation files, where the order of the lines is the order of time.

- ``sequences``: one line per user, ``user item item ...`` separated by single spaces, items in
  time order (the S3-Rec/ICLRec ``Beauty.txt``).
- ``pairs``: one ``user item`` pair per line, each user's lines in time order (the SASRec
  ``Video.txt``).

Neither has timestamps; :func:`positions` makes them from the order: an interaction's timestamp
is its 0-based position in its user's history (0, 1, 2, ...), counted across lines in file order,
so sorting by time reproduces the file's order and leave-last-out splits work unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from privrank.data.problems import Problem
from privrank.data.readers._source import first_line
from privrank.data.readers._text import empty_file_problem
from privrank.data.readers.options import ReadOptions
from privrank.data.validation import FieldRule, TextLayout

__all__ = ["positions", "sequence_layout"]

_FIELDS = (FieldRule("user", "user"), FieldRule("item", "item"))


def sequence_layout(path: str | Path, options: ReadOptions) -> TextLayout | Problem:
    """The layout of a ``sequences`` or ``pairs`` file, or the fatal problem of an empty one."""
    layout = TextLayout(
        format=options.format,
        delimiter=" ",
        fields=_FIELDS,
        ragged=options.format == "sequences",
        value_range=options.value_range,
        timestamp_range=(options.min_timestamp, options.max_timestamp),
    )
    if first_line(path) is None:
        return empty_file_problem(layout)
    return layout


def positions(user_codes: np.ndarray, n_users: int) -> np.ndarray:
    """Each row's 0-based position among the rows of its user, in row order.

    Args:
        user_codes: Dense user code of every row.
        n_users: Number of user codes.

    Returns:
        int64 positions: the k-th row of a user (in row order) gets ``k``.
    """
    order = np.argsort(user_codes, kind="stable")
    counts = np.bincount(user_codes, minlength=n_users)
    starts = np.cumsum(counts) - counts
    out = np.empty(len(user_codes), dtype=np.int64)
    out[order] = np.arange(len(user_codes), dtype=np.int64) - np.repeat(starts, counts)
    return out

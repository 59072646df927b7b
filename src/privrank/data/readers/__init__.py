"""Readers for the interaction files users have, streaming and strictly validated.

One entry point, :func:`read_interactions`, reads every format (MovieLens ``u.data``,
``ratings.dat`` and ``ratings.csv``; per-line sequences and time-ordered pairs; generic CSV, TSV
and Parquet with a column mapping) into :class:`~privrank.data.interactions.Interactions`;
:func:`validate_file` checks a file without keeping it. See :class:`ReadOptions`.
"""

from privrank.data.readers._source import ByteProgress
from privrank.data.readers.api import (
    ReadResult,
    default_rejects_path,
    layout_for,
    read_interactions,
    validate_file,
)
from privrank.data.readers.movielens import ML_CSV_HEADER
from privrank.data.readers.options import FORMATS, GENERIC_FORMATS, Format, ReadOptions

__all__ = [
    "FORMATS",
    "GENERIC_FORMATS",
    "ML_CSV_HEADER",
    "ByteProgress",
    "Format",
    "ReadOptions",
    "ReadResult",
    "default_rejects_path",
    "layout_for",
    "read_interactions",
    "validate_file",
]

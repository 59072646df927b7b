"""What to read and how strictly: the :class:`ReadOptions` of every reader.

One options object drives every format. Named formats (``ml-100k``, ``ml-1m``, ``ml-csv``,
``sequences``, ``pairs``) fix their own layout; the generic ones (``csv``, ``tsv``, ``parquet``)
take a column mapping. Value and timestamp ranges default to what the format's data can hold
(MovieLens star ratings, Unix seconds between 1970 and 2100) and can be widened or narrowed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "FORMATS",
    "GENERIC_FORMATS",
    "MAX_TIMESTAMP",
    "Format",
    "ReadOptions",
]

Format = Literal["ml-100k", "ml-1m", "ml-csv", "sequences", "pairs", "csv", "tsv", "parquet"]
#: Every format :func:`~privrank.data.readers.read_interactions` understands.
FORMATS: tuple[str, ...] = get_args(Format)
#: Formats whose columns are named by a column mapping (``user_col``, ``item_col``, ...).
GENERIC_FORMATS = frozenset({"csv", "tsv", "parquet"})
#: 2100-01-01T00:00:00Z: the default upper bound of a timestamp, in seconds.
MAX_TIMESTAMP = 4_102_444_800

# The rating scale of each MovieLens layout: whole stars 1..5 in u.data (100K); ratings.dat holds
# whole stars in 1M and half stars 0.5..5 in 10M, as does ratings.csv (20M, 25M, latest).
_DEFAULT_VALUE_RANGE: dict[str, tuple[float, float]] = {
    "ml-100k": (1.0, 5.0),
    "ml-1m": (0.5, 5.0),
    "ml-csv": (0.5, 5.0),
}


class ReadOptions(BaseModel):
    """How to read one interaction file.

    Attributes:
        format: The file's layout. ``ml-100k``: ``u.data`` (tab-separated ``user item rating
            timestamp``, no header). ``ml-1m``: ``ratings.dat`` of ML-1M/10M (``::``-separated,
            same fields). ``ml-csv``: ``ratings.csv`` of ML-20M/25M/latest (header
            ``userId,movieId,rating,timestamp``; CRLF tolerated). ``sequences``: one line per
            user, ``user item item ...`` in time order (S3-Rec Beauty). ``pairs``: ``user item``
            per line, each user's lines in time order (SASRec). ``csv``/``tsv``/``parquet``:
            generic tables with a column mapping.
        on_error: ``strict`` refuses a file with any bad row (one :class:`DataError` listing
            the problems; nothing is written). ``quarantine`` keeps the good rows and writes
            every rejected line, with its line number and reason, to ``rejects_path``.
        rejects_path: Where ``quarantine`` writes rejected lines (TSV ``line, reason, raw``);
            default ``<file name>.rejects.tsv`` under ``$PRIVRANK_HOME/rejects``.
        name: Dataset name for the metadata (default: the file's stem).
        user_col: User column of a generic table: a header name, or a 1-based position.
        item_col: Item column of a generic table.
        time_col: Timestamp column (integer Unix seconds; Parquet timestamps are converted).
        value_col: Value column (a rating, a count, a weight).
        has_header: Whether a generic CSV/TSV file starts with a header line (default ``True``).
            Named formats know whether they have one; leave it unset for them.
        delimiter: Field separator of a generic CSV/TSV file (default ``,`` / tab).
        id_type: How generic tables' ids are read: ``int``, ``str``, or ``auto`` (integers when
            every id in the column is one, text otherwise). Named formats always have
            integer ids.
        min_value: Smallest accepted value (default: the format's rating scale, none for generic
            tables; pass ``-inf`` to accept any).
        max_value: Largest accepted value (default as ``min_value``).
        min_timestamp: Smallest accepted timestamp, in seconds (default 0, 1970-01-01).
        max_timestamp: Largest accepted timestamp (default 2100-01-01).
        max_reported: Problems reported in full in a strict error; the rest are counted.
        block_size: Bytes per parsing block of the streaming reader.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Format
    on_error: Literal["strict", "quarantine"] = "strict"
    rejects_path: Path | None = None
    name: str | None = None
    user_col: str | int | None = None
    item_col: str | int | None = None
    time_col: str | int | None = None
    value_col: str | int | None = None
    has_header: bool | None = None
    delimiter: str | None = None
    id_type: Literal["auto", "int", "str"] = "auto"
    min_value: float | None = None
    max_value: float | None = None
    min_timestamp: int = 0
    max_timestamp: int = MAX_TIMESTAMP
    max_reported: int = Field(default=20, ge=1)
    block_size: int = Field(default=4 << 20, ge=1 << 16)

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = []
        generic = self.format in GENERIC_FORMATS
        mapping = {
            "user_col": self.user_col,
            "item_col": self.item_col,
            "time_col": self.time_col,
            "value_col": self.value_col,
        }
        if generic:
            for name in ("user_col", "item_col"):
                if mapping[name] is None:
                    problems.append(f"format {self.format!r} needs {name} (a column name)")
            named = [v for v in mapping.values() if v is not None]
            if len(set(named)) != len(named):
                problems.append(f"the column mapping names one column twice: {mapping}")
            for name, value in mapping.items():
                if isinstance(value, int) and value < 1:
                    problems.append(f"{name} is a 1-based column position; got {value}")
            if self.has_header is False and any(isinstance(v, str) for v in named):
                problems.append(
                    "without a header line, columns are named by 1-based position (int); "
                    f"got {mapping}"
                )
        else:
            given = [k for k, v in mapping.items() if v is not None]
            if given:
                problems.append(
                    f"format {self.format!r} has a fixed layout; {', '.join(given)} apply only "
                    "to csv, tsv and parquet"
                )
            if self.has_header is not None:
                problems.append(
                    f"format {self.format!r} fixes whether there is a header; leave has_header "
                    "unset"
                )
            if self.id_type != "auto":
                problems.append(f"format {self.format!r} always has integer ids; leave id_type")
        if self.delimiter is not None:
            if self.format not in ("csv", "tsv"):
                problems.append("delimiter applies only to csv and tsv")
            elif len(self.delimiter) != 1 or self.delimiter in '\r\n"':
                problems.append(
                    f"delimiter must be one character other than a quote or newline; "
                    f"got {self.delimiter!r}"
                )
        low, high = self.value_range
        if math.isnan(low) or math.isnan(high) or low > high:
            problems.append(f"min_value must be <= max_value; got {low} > {high}")
        if self.min_timestamp > self.max_timestamp:
            problems.append(
                f"min_timestamp must be <= max_timestamp; "
                f"got {self.min_timestamp} > {self.max_timestamp}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def value_range(self) -> tuple[float, float]:
        """The accepted ``[low, high]`` of values (infinite ends when unbounded)."""
        low, high = _DEFAULT_VALUE_RANGE.get(self.format, (-math.inf, math.inf))
        return (
            low if self.min_value is None else self.min_value,
            high if self.max_value is None else self.max_value,
        )

    @property
    def header(self) -> bool:
        """Whether the file starts with a header line."""
        if self.format == "ml-csv":
            return True
        if self.format in ("csv", "tsv"):
            return self.has_header is not False
        return False

    @property
    def field_delimiter(self) -> str:
        """The separator between fields of a text format."""
        if self.delimiter is not None:
            return self.delimiter
        return {"ml-100k": "\t", "ml-1m": "::", "ml-csv": ",", "tsv": "\t", "csv": ","}.get(
            self.format, " "
        )

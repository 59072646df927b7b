"""The readers' entry points: :func:`read_interactions` and :func:`validate_file`.

Both run the fast path first (pyarrow, vectorised checks, no per-row Python) and the slow,
exact line-by-line pass of :mod:`privrank.data.validation` only when the file has a problem.

- ``on_error="strict"`` (default): any problem refuses the file with one
  :class:`~privrank.errors.DataError` naming file, line, column, value and expectation of the
  first problem and listing the next ones with the total count. Nothing is written.
- ``on_error="quarantine"``: good lines are kept; every rejected line goes, with its line number
  and reason, into a TSV rejects file (``line``, ``reason``, ``raw``; tabs, newlines and
  backslashes in the last two escaped as ``\\t``, ``\\n``, ``\\\\``), written atomically. No line
  is dropped silently: ``source_rows == kept_rows + rejected``. A file-level problem (empty
  file, missing header) still refuses the whole file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from privrank.atomic import atomic_file
from privrank.data.interactions import DatasetMetadata, Interactions
from privrank.data.problems import Problem, ValidationReport, escape_tsv
from privrank.data.readers._build import build_interactions
from privrank.data.readers._source import ByteProgress, SourceDigest
from privrank.data.readers._text import read_text
from privrank.data.readers.movielens import movielens_layout
from privrank.data.readers.options import ReadOptions
from privrank.data.readers.sequences import sequence_layout
from privrank.data.readers.tabular import read_parquet, table_layout
from privrank.data.validation import RejectSink, TextLayout
from privrank.errors import DataError
from privrank.settings import home_dir

__all__ = [
    "ReadResult",
    "default_rejects_path",
    "layout_for",
    "read_interactions",
    "validate_file",
]


@dataclass(frozen=True)
class ReadResult:
    """What :func:`read_interactions` read.

    Attributes:
        interactions: The kept rows, with metadata (source path, SHA-256, format, counts).
        source_rows: Data lines (Parquet: rows) in the file, after any header.
        rejected: Lines rejected (always 0 in strict mode).
        rejects_path: The rejects file written in quarantine mode, else ``None``.
        report: The validation report (problems found, counts by kind).
    """

    interactions: Interactions
    source_rows: int
    rejected: int
    rejects_path: Path | None
    report: ValidationReport

    @property
    def kept_rows(self) -> int:
        """Lines kept (``source_rows - rejected``); a ``sequences`` line holds many rows."""
        return self.source_rows - self.rejected


def read_interactions(
    path: str | Path,
    options: ReadOptions | str,
    *,
    progress: ByteProgress | None = None,
    **overrides: Any,
) -> ReadResult:
    """Read an interaction file into :class:`Interactions`.

    Args:
        path: The file.
        options: Read options, or just a format name.
        progress: Called as ``progress(bytes_parsed, bytes_in_file)`` while a text file is
            parsed (from the parsing threads), and once when it is done; a progress bar's feed.
        **overrides: Fields of :class:`ReadOptions` to set (``on_error="quarantine"``, ...).

    Returns:
        The interactions and what was rejected.

    Raises:
        DataError: The file is missing or (strict) has any problem, or (quarantine) has a
            file-level problem or no good line at all.
    """
    options = _options(options, overrides)
    path = _existing(path)
    digest = SourceDigest(path, check_utf8=options.format != "parquet")
    try:
        if options.on_error == "strict":
            columns, report = _read(path, options, digest, True, None, progress)
            report.raise_for_problems()
            rejects_path = None
        else:
            rejects_path = Path(options.rejects_path or default_rejects_path(path))
            unit = "row" if options.format == "parquet" else "line"
            with atomic_file(rejects_path, "w", encoding="utf-8", newline="\n") as out:
                out.write(f"{unit}\treason\traw\n")
                columns, report = _read(path, options, digest, True, _sink(out), progress)
                if report.fatal:
                    raise report.error()
            if report.rows_ok == 0:
                raise DataError(
                    f"no valid line: all {report.source_rows} were rejected "
                    f"({report.summary_counts()}); see {rejects_path}",
                    path=path,
                )
        facts = digest.result()
    except BaseException:
        digest.cancel()
        raise
    assert columns is not None
    metadata = DatasetMetadata(
        name=options.name or path.stem,
        source_path=str(path.resolve()),
        source_sha256=facts.sha256,
        source_format=options.format,
        source_rows=report.source_rows,
        rejected_rows=report.rows_rejected,
    )
    interactions = build_interactions(
        columns,
        positions_as_time=options.format in ("sequences", "pairs"),
        metadata=metadata,
    )
    return ReadResult(
        interactions=interactions,
        source_rows=report.source_rows,
        rejected=report.rows_rejected,
        rejects_path=rejects_path,
        report=report,
    )


def validate_file(
    path: str | Path, options: ReadOptions | str, **overrides: Any
) -> ValidationReport:
    """Check a file without keeping its rows; never writes anything.

    A valid file costs one fast pyarrow pass; a file with problems also the slow pass that
    locates each of them.

    Args:
        path: The file.
        options: Read options, or just a format name (``on_error`` is ignored).
        **overrides: Fields of :class:`ReadOptions` to set.

    Returns:
        The report: ``report.ok``, ``report.problems``, ``report.rows_rejected``, ... A
        file-level problem is in the report too (``report.fatal``).

    Raises:
        DataError: The file does not exist.
    """
    options = _options(options, overrides)
    path = _existing(path)
    digest = SourceDigest(path, check_utf8=options.format != "parquet")
    try:
        _, report = _read(path, options, digest, collect=False, reject=None)
    finally:
        digest.cancel()
    return report


def default_rejects_path(path: str | Path) -> Path:
    """Where quarantine writes the rejects of ``path`` when no path is given."""
    return home_dir() / "rejects" / f"{Path(path).name}.rejects.tsv"


def layout_for(path: Path, options: ReadOptions) -> TextLayout | Problem:
    """The text layout of ``path`` under ``options`` (or the fatal problem found in line 1)."""
    if options.format.startswith("ml-"):
        return movielens_layout(path, options)
    if options.format in ("sequences", "pairs"):
        return sequence_layout(path, options)
    return table_layout(path, options)


def _read(
    path: Path,
    options: ReadOptions,
    digest: SourceDigest,
    collect: bool,
    reject: RejectSink | None,
    progress: ByteProgress | None = None,
) -> tuple[dict[str, pa.Array | pa.ChunkedArray] | None, ValidationReport]:
    if options.format == "parquet":
        read = read_parquet(path, options, collect=collect, reject=reject)
        if progress is not None:
            size = path.stat().st_size
            progress(size, size)
        return read
    layout = layout_for(path, options)
    if isinstance(layout, Problem):
        return None, ValidationReport.from_fatal(path, options.format, layout)
    return read_text(
        path,
        layout,
        digest=digest,
        block_size=options.block_size,
        max_reported=options.max_reported,
        collect=collect,
        strict=options.on_error == "strict",
        reject=reject,
        progress=progress,
    )


def _sink(out) -> RejectSink:
    def write(line: int, reason: str, raw: str) -> None:
        out.write(f"{line}\t{escape_tsv(reason)}\t{escape_tsv(raw)}\n")

    return write


def _options(options: ReadOptions | str, overrides: dict[str, Any]) -> ReadOptions:
    if isinstance(options, str):  # a format name, validated by ReadOptions
        return ReadOptions.model_validate({"format": options, **overrides})
    return options.model_copy(update=overrides) if overrides else options


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        what = "a directory" if path.is_dir() else "no such file"
        raise DataError(f"cannot read interactions: {what}", path=path, expected="a file")
    return path

"""Reading a delimited text layout: the fast path first, the slow pass when it must.

:func:`read_text` is the one place where the two paths meet. A valid file is parsed by
:func:`~privrank.data.readers._fast.read_fast` alone (the slow pass never runs); otherwise
:func:`~privrank.data.validation.diagnose_text` reads it line by line, reports every problem and,
for a quarantining read, keeps the values of the good lines.
"""

from __future__ import annotations

from array import array
from pathlib import Path

import numpy as np
import pyarrow as pa

from privrank.data.problems import Problem, ValidationReport
from privrank.data.readers._fast import read_fast
from privrank.data.readers._source import ByteProgress, SourceDigest
from privrank.data.validation import RejectSink, TextLayout, diagnose_text

__all__ = ["empty_file_problem", "no_data_problem", "read_text", "to_arrow"]


def read_text(
    path: Path,
    layout: TextLayout,
    *,
    digest: SourceDigest,
    block_size: int,
    max_reported: int,
    collect: bool,
    strict: bool,
    reject: RejectSink | None = None,
    progress: ByteProgress | None = None,
) -> tuple[dict[str, pa.Array | pa.ChunkedArray] | None, ValidationReport]:
    """Parse and check a text file.

    Args:
        path: The file.
        layout: Its layout.
        digest: The running digest of the file (its UTF-8 verdict is part of validity).
        block_size: Bytes per pyarrow block.
        max_reported: Problems kept in full.
        collect: Return the columns of the good lines (``False``: only validate).
        strict: Good lines matter only if there is no bad one.
        reject: Receives every rejected line.
        progress: Called with ``(bytes parsed, bytes in file)`` after every block of the fast
            pass, and once at the end.

    Returns:
        ``(columns, report)``; ``columns`` is ``None`` when not collected, or when ``strict`` and
        the report has problems.
    """
    fast = read_fast(path, layout, block_size=block_size, progress=progress)
    if fast is not None and digest.result().utf8_ok:
        _done(path, progress)
        report = ValidationReport(path, layout.format, fast.rows, 0)
        return (fast.columns if collect else None), report
    diagnosis = diagnose_text(
        path,
        layout,
        max_reported=max_reported,
        collect=collect,
        stop_collecting_on_problem=strict,
        reject=reject,
    )
    report = diagnosis.report
    _done(path, progress)  # the slow pass (a file with a bad line) reports only its end
    if not collect or (strict and not report.ok):
        return None, report
    return {role: to_arrow(values) for role, values in diagnosis.columns.items()}, report


def _done(path: Path, progress: ByteProgress | None) -> None:
    if progress is not None:
        size = path.stat().st_size
        progress(size, size)


def to_arrow(values: array | list) -> pa.Array:
    """An Arrow array of collected values (zero-copy for typed arrays)."""
    if isinstance(values, array):
        dtype = np.int64 if values.typecode == "q" else np.float64
        return pa.array(np.frombuffer(values, dtype=dtype) if len(values) else np.empty(0, dtype))
    return pa.array(values, type=pa.string())


def empty_file_problem(layout: TextLayout) -> Problem:
    """The fatal problem of a file with no bytes at all."""
    return Problem(
        "empty_file",
        "empty file",
        line=1,
        expected=f"at least one data line of {layout.describe()}",
        fatal=True,
    )


def no_data_problem(layout: TextLayout) -> Problem:
    """The fatal problem of a file holding a header and nothing else."""
    return Problem(
        "no_data",
        "no data lines after the header",
        line=2,
        expected=f"data lines of {layout.describe()}",
        fatal=True,
    )

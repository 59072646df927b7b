"""The wire format of local-DP telemetry reports: what a device sends, what the server reads.

A reports file is JSON Lines (UTF-8). Line 1 is the **header**: the collection's public
parameters, which every report of the file was randomised under::

    {"format": "privrank-ldp-reports", "version": 1, "sketch": "cms", "epsilon": 4.0,
     "m": 1024, "k": 1024, "hash_seed": 0}

Every further line is **one report** of one device for one day, and holds nothing else: no user
id, no item id, no device id (the server must not be able to link a report to a user)::

    {"day": "2026-12-04", "row": 17, "bits": "<base64>"}            (cms, ocms: the m signs,
                                                                      bit 1 = +1, packed
                                                                      big-endian, zero-padded)
    {"day": "2026-12-04", "row": 17, "column": 301, "bit": -1}      (hcms: b·w)

``day`` is an ISO date (the user-day the report spends ε of), ``row`` is ``j ∈ [0, k)`` and
``column`` is ``l ∈ [0, m)``. :func:`read_reports` validates every line strictly and raises
:class:`~privrank.errors.DataError` naming the file, the line, the field, the value and what was
expected; nothing is skipped. It streams: reports come back in batches per day, so a million
m-bit reports never sit in memory as one ``n × m`` array.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from privrank.errors import ConfigError, DataError
from privrank.privacy.local_dp.sketch import CMSReports, HCMSReports, SketchConfig

__all__ = ["FORMAT", "VERSION", "read_header", "read_reports", "write_reports"]

FORMAT = "privrank-ldp-reports"
VERSION = 1
_HEADER_FIELDS = {"format", "version", "sketch", "epsilon", "m", "k", "hash_seed"}
_CMS_FIELDS = {"day", "row", "bits"}
_HCMS_FIELDS = {"day", "row", "column", "bit"}


def header_of(config: SketchConfig) -> dict[str, Any]:
    """The header line's object for a collection's parameters."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "sketch": config.kind,
        "epsilon": config.epsilon,
        "m": config.m,
        "k": config.k,
        "hash_seed": config.hash_seed,
    }


def write_reports(
    handle: IO[str], config: SketchConfig, batches: Iterable[tuple[str, CMSReports | HCMSReports]]
) -> int:
    """Write the header and every report of ``batches`` (``(day, reports)`` pairs).

    Args:
        handle: A text file open for writing (the caller makes it atomic).
        config: The collection's public parameters (the header).
        batches: Each day's reports.

    Returns:
        Reports written.
    """
    handle.write(json.dumps(header_of(config)) + "\n")
    written = 0
    for day, reports in batches:
        if isinstance(reports, CMSReports):
            packed = np.packbits(reports.vectors > 0, axis=1)
            for row, bits in zip(reports.rows.tolist(), packed, strict=True):
                text = base64.b64encode(bits.tobytes()).decode("ascii")
                handle.write(f'{{"day": "{day}", "row": {row}, "bits": "{text}"}}\n')
        else:
            for row, column, bit in zip(
                reports.rows.tolist(), reports.columns.tolist(), reports.bits.tolist(), strict=True
            ):
                handle.write(
                    f'{{"day": "{day}", "row": {row}, "column": {column}, "bit": {bit}}}\n'
                )
        written += len(reports)
    return written


def _problem(
    path: Path, line: int, field: str | None, value: object, problem: str, expected: str
) -> DataError:
    return DataError(problem, path=path, line=line, field=field, value=value, expected=expected)


def _object(path: Path, number: int, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _problem(
            path, number, None, text[:80], f"not valid JSON ({exc.msg})", "one JSON object"
        ) from None
    if not isinstance(value, dict):
        raise _problem(path, number, None, text[:80], "not a JSON object", "one JSON object")
    return value


def _fields(path: Path, number: int, record: dict[str, Any], expected: set[str]) -> None:
    missing = sorted(expected - set(record))
    if missing:
        raise _problem(
            path, number, missing[0], None, "missing field", f"fields {sorted(expected)}"
        )
    extra = sorted(set(record) - expected)
    if extra:
        raise _problem(
            path, number, extra[0], record[extra[0]], "unexpected field",
            f"only the fields {sorted(expected)} (a report carries no identifier)",
        )  # fmt: skip


def read_header(path: str | Path) -> SketchConfig:
    """The collection parameters of a reports file (its first line), validated.

    Raises:
        DataError: A missing or malformed header.
    """
    path = Path(path)
    with _open(path) as handle:
        return _header(path, handle.readline())


def _open(path: Path) -> IO[str]:
    try:
        return path.open("r", encoding="utf-8", newline="")
    except OSError as exc:
        raise DataError(f"cannot read the reports file ({exc.strerror})", path=path) from None


def _header(path: Path, text: str) -> SketchConfig:
    if not text.strip():
        raise _problem(path, 1, None, None, "empty file: no header line", f"a {FORMAT} header")
    record = _object(path, 1, text)
    _fields(path, 1, record, _HEADER_FIELDS)
    if record["format"] != FORMAT:
        raise _problem(path, 1, "format", record["format"], "not a reports file", repr(FORMAT))
    if record["version"] != VERSION or isinstance(record["version"], bool):
        raise _problem(path, 1, "version", record["version"], "unknown version", str(VERSION))
    try:
        return SketchConfig(
            kind=record["sketch"],
            epsilon=record["epsilon"],
            m=record["m"],
            k=record["k"],
            hash_seed=record["hash_seed"],
        )
    except ConfigError as exc:
        problem = exc.problems[0] if exc.problems else None
        field = problem.path[0] if problem is not None and problem.path else "sketch"
        name = {"kind": "sketch"}.get(field, field)
        rule = problem.rule if problem is not None else str(exc)
        raise _problem(
            path, 1, name, record.get(name), "invalid collection parameter", rule
        ) from None


def _integer(path: Path, number: int, record: dict[str, Any], field: str, upper: int) -> int:
    value = record[field]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < upper:
        raise _problem(path, number, field, value, "out of range", f"an integer in [0, {upper})")
    return value


def _day(path: Path, number: int, value: object) -> str:
    if isinstance(value, str) and len(value) == 10:
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    raise _problem(path, number, "day", value, "not a day", "an ISO date YYYY-MM-DD")


def read_reports(
    path: str | Path, config: SketchConfig | None = None, *, batch_size: int = 8192
) -> Iterator[tuple[str, CMSReports | HCMSReports]]:
    """Stream the reports of a file as ``(day, batch)`` pairs, validating every line.

    Args:
        path: The reports file.
        config: The collection the reports must belong to (default: the file's own header).
            A header with other parameters is refused: reports of two collections cannot be
            decoded into one sketch.
        batch_size: Reports per batch (a batch holds one day only).

    Raises:
        DataError: A malformed header or report (file, line, field, value, what was
            expected), or a header of another collection.
    """
    path = Path(path)
    with _open(path) as handle:
        header = _header(path, handle.readline())
        if config is not None and header != config:
            raise _problem(
                path, 1, None, header.model_dump(), "reports of another collection",
                f"the collection {config.model_dump()}",
            )  # fmt: skip
        yield from _reports(path, handle, header, batch_size)


def _reports(
    path: Path, handle: IO[str], cfg: SketchConfig, batch_size: int
) -> Iterator[tuple[str, CMSReports | HCMSReports]]:
    cms = cfg.kind in ("cms", "ocms")
    width = math.ceil(cfg.m / 8)
    pad = width * 8 - cfg.m
    rows: list[int] = []
    payload: list[bytes] = []
    columns: list[int] = []
    bits: list[int] = []
    day = None

    def flush() -> CMSReports | HCMSReports:
        index = np.asarray(rows, dtype=np.int32)
        if cms:
            packed = np.frombuffer(b"".join(payload), dtype=np.uint8).reshape(len(rows), width)
            unpacked = np.unpackbits(packed, axis=1, count=cfg.m).astype(np.int8)
            out: CMSReports | HCMSReports = CMSReports(index, 2 * unpacked - 1)
        else:
            out = HCMSReports(
                index, np.asarray(columns, dtype=np.int32), np.asarray(bits, dtype=np.int8)
            )
        for buffer in (rows, payload, columns, bits):
            buffer.clear()
        return out

    for number, text in enumerate(handle, start=2):
        if not text.strip():
            raise _problem(path, number, None, "", "blank line", "one report per line")
        record = _object(path, number, text)
        _fields(path, number, record, _CMS_FIELDS if cms else _HCMS_FIELDS)
        this_day = _day(path, number, record["day"])
        if rows and (this_day != day or len(rows) >= batch_size):
            yield day, flush()  # type: ignore[misc]
        day = this_day
        rows.append(_integer(path, number, record, "row", cfg.k))
        if cms:
            payload.append(_cms_bits(path, number, record["bits"], width, pad))
        else:
            columns.append(_integer(path, number, record, "column", cfg.m))
            bit = record["bit"]
            if isinstance(bit, bool) or bit not in (-1, 1):
                raise _problem(path, number, "bit", bit, "not a randomised bit", "-1 or 1")
            bits.append(bit)
    if rows:
        yield day, flush()  # type: ignore[misc]


def _cms_bits(path: Path, number: int, value: object, width: int, pad: int) -> bytes:
    expected = f"base64 of {width} bytes (the m signs, zero-padded)"
    if not isinstance(value, str):
        raise _problem(path, number, "bits", value, "not a string", expected)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _problem(path, number, "bits", value[:40], "not base64", expected) from None
    if len(raw) != width:
        raise _problem(path, number, "bits", f"{len(raw)} bytes", "wrong length", expected)
    if pad and raw[-1] & ((1 << pad) - 1):
        raise _problem(path, number, "bits", value[-8:], "padding bits set", expected)
    return raw

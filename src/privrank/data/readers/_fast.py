"""The fast path: stream a text layout through pyarrow and check it vectorised.

:func:`read_fast` parses a file block by block with :func:`pyarrow.csv.open_csv` (a 20 M-row
file never needs its whole text in memory), converts ids, values and timestamps straight to
their Arrow types and checks every block with Arrow compute kernels; no Python code runs per
row. Ids that fit are narrowed to int32 and values to float32 block by block, so the memory kept
is about the size of the final columns.

The fast path only says yes or no: on the first problem of any kind it gives up (returns
``None``) and the caller runs the slow pass of :mod:`privrank.data.validation`, which locates
every problem exactly.
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from privrank.data.problems import FLOAT32_MAX
from privrank.data.readers._source import ByteProgress
from privrank.data.validation import FieldRule, TextLayout

__all__ = ["FastColumns", "read_fast"]

_INT32 = np.iinfo(np.int32)
_RAGGED_DELIMITER = "\x1f"  # never in a valid sequence line: each line is one field
_COLUMN_IN_ERROR = re.compile(r"CSV column #(\d+)")
# Files of at least this size are cut into byte ranges of whole lines parsed in parallel (the
# streaming reader parses one block at a time). Two ranges at most: merging copies all but the
# first range once, which bounds the extra memory to half the columns.
_PARALLEL_MIN_BYTES = 64 << 20
_MAX_RANGES = 2


@dataclass
class FastColumns:
    """Columns parsed by the fast path.

    Attributes:
        columns: ``user``, ``item`` and, when the layout has them, ``timestamp`` and ``value``.
            Ids are int32 when every id fits, else int64, or strings; values float32.
        rows: Data lines read (the header excluded).
    """

    columns: dict[str, pa.Array | pa.ChunkedArray]
    rows: int


def read_fast(
    path, layout: TextLayout, *, block_size: int, progress: ByteProgress | None = None
) -> FastColumns | None:
    """Parse ``path`` with pyarrow if every line is valid, else return ``None``.

    ``progress(bytes_parsed, bytes_in_file)`` is called after every block (from the parsing
    threads).
    """
    if layout.ragged:
        return _read_ragged(path, layout, block_size, progress)
    if len(set(layout.delimiter)) != 1:
        return None  # pyarrow splits on one byte; other separators go to the slow pass
    id_text: dict[str, bool] = {
        f.role: f.id_type == "str" for f in layout.fields if f.role in ("user", "item")
    }
    while True:
        try:
            return _read_fixed(path, layout, block_size, id_text, progress)
        except _RetryAsText as retry:  # an ``auto`` id column holds a non-integer
            id_text[retry.role] = True


class _RetryAsText(Exception):
    def __init__(self, role: str) -> None:
        self.role = role


def _read_fixed(path, layout, block_size, id_text, progress) -> FastColumns | None:
    # A separator of k equal characters ("::") is k one-character separators with k-1 empty
    # columns between real fields; those must stay empty.
    repeat = len(layout.delimiter)
    names: list[str] = []
    types: dict[str, pa.DataType] = {}
    roles: dict[str, FieldRule] = {}
    spacers: list[str] = []
    for i, rule in enumerate(layout.fields):
        if i:
            for j in range(repeat - 1):
                spacers.append(f"s{i}_{j}")
                names.append(spacers[-1])
                types[spacers[-1]] = pa.string()
        name = f"c{i}"
        names.append(name)
        if rule.role == "ignore":
            continue
        roles[name] = rule
        if rule.role in ("user", "item"):
            types[name] = pa.string() if id_text[rule.role] else pa.int64()
        elif rule.role == "value":
            types[name] = pa.float64()
        else:
            types[name] = pa.int64()
    parse_options = pacsv.ParseOptions(
        delimiter=layout.delimiter[0],
        quote_char='"' if layout.quoting else False,
        double_quote=True,
        escape_char=False,
        newlines_in_values=False,
        ignore_empty_lines=False,
    )
    convert_options = pacsv.ConvertOptions(
        column_types=types,
        include_columns=[*roles, *spacers],
        null_values=[],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
        check_utf8=True,
    )

    def check(batch: pa.RecordBatch, checker: _BlockChecker) -> bool:
        for spacer in spacers:
            if not _all_empty(batch.column(spacer)):
                return False
        return all(checker.add(rule, batch.column(name)) for name, rule in roles.items())

    try:
        return _scan(
            path, layout, block_size, names, parse_options, convert_options, check, progress
        )
    except pa.ArrowInvalid as exc:
        role = _auto_id_role(str(exc), names, roles, id_text)
        if role is not None:
            raise _RetryAsText(role) from exc
        return None


def _auto_id_role(message, names, roles, id_text) -> str | None:
    match = _COLUMN_IN_ERROR.search(message)
    if match is None or "conversion error to int64" not in message:
        return None
    index = int(match.group(1))
    rule = roles.get(names[index]) if index < len(names) else None
    if rule is None or rule.role not in ("user", "item") or rule.id_type != "auto":
        return None
    return None if id_text[rule.role] else rule.role


def _read_ragged(
    path, layout: TextLayout, block_size: int, progress: ByteProgress | None
) -> FastColumns | None:
    parse_options = pacsv.ParseOptions(
        delimiter=_RAGGED_DELIMITER,
        quote_char=False,
        escape_char=False,
        newlines_in_values=False,
        ignore_empty_lines=False,
    )
    convert_options = pacsv.ConvertOptions(
        column_types={"line": pa.string()}, strings_can_be_null=False, null_values=[]
    )
    user_rule, item_rule = layout.fields

    def check(batch: pa.RecordBatch, checker: _BlockChecker) -> bool:
        lines = batch.column(0)
        if len(lines) == 0:
            return True
        if pc.min(pc.binary_length(lines)).as_py() == 0:
            return False  # a blank line
        parts = pc.split_pattern(lines, pattern=layout.delimiter)
        counts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
        if counts.min() < 2:
            return False
        numbers = pc.cast(pc.list_flatten(parts), pa.int64()).to_numpy()
        firsts = np.zeros(len(counts), dtype=np.int64)
        np.cumsum(counts[:-1], out=firsts[1:])
        is_item = np.ones(len(numbers), dtype=bool)
        is_item[firsts] = False
        users = np.repeat(numbers[firsts], counts - 1)
        return checker.add(user_rule, pa.array(users)) and checker.add(
            item_rule, pa.array(numbers[is_item])
        )

    try:
        return _scan(
            path, layout, block_size, ["line"], parse_options, convert_options, check, progress
        )
    except pa.ArrowInvalid:
        return None


def _scan(path, layout, block_size, names, parse_options, convert_options, check, progress=None):
    """Stream the file's byte ranges in parallel through ``check``; merge them in order.

    Raises:
        pyarrow.ArrowInvalid: pyarrow could not parse or convert a block.
    """
    ranges = _ranges(path)
    stop = threading.Event()  # one range failing stops the others
    parsed = [0] * len(ranges)  # bytes each range's stream has consumed
    total = ranges[-1][1]

    def work(index: int) -> tuple[_BlockChecker, int] | pa.ArrowInvalid | None:
        start, end = ranges[index]
        reader_options = pacsv.ReadOptions(
            block_size=block_size,
            skip_rows=1 if layout.has_header and index == 0 else 0,
            column_names=names,
            use_threads=True,
        )
        # the first range's buffers are sized for the whole file: the others are appended
        span = ranges[-1][1] if index == 0 else end - start
        checker = _BlockChecker(layout, blocks_in_file=span / block_size)
        rows = 0
        try:
            with pa.OSFile(str(path)) as source:
                stream = source.get_stream(start, end - start)
                if progress is not None:
                    stream = pa.PythonFile(_Counted(stream), mode="r")
                for batch in pacsv.open_csv(stream, reader_options, parse_options, convert_options):
                    if stop.is_set():
                        return None
                    rows += batch.num_rows
                    if not check(batch, checker):
                        stop.set()
                        return None
                    if progress is not None:
                        parsed[index] = stream.tell()  # bytes handed to the parser so far
                        progress(sum(parsed), total)
        except pa.ArrowInvalid as exc:
            stop.set()
            return exc
        return checker, rows

    if len(ranges) == 1:
        results = [work(0)]
    else:
        with ThreadPoolExecutor(len(ranges), thread_name_prefix="privrank-csv") as pool:
            results = list(pool.map(work, range(len(ranges))))
    for result in results:
        if isinstance(result, pa.ArrowInvalid):
            raise result
    if any(result is None for result in results):
        return None
    first, rows = results[0]
    for checker, more in results[1:]:
        first.extend(checker)
        rows += more
    return FastColumns(first.finish(), rows)


class _Counted:
    """A read-only file over a pyarrow stream that counts the bytes read (``tell``).

    Used only when a caller wants byte progress: the parser reads it in ``block_size`` chunks,
    so the Python call per block costs nothing measurable.
    """

    closed = False

    def __init__(self, stream: pa.NativeFile) -> None:
        self._stream = stream
        self._read = 0

    def read(self, size: int = -1) -> pa.Buffer:
        buffer = self._stream.read_buffer(None if size is None or size < 0 else size)
        self._read += buffer.size
        return buffer

    def tell(self) -> int:
        return self._read

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def _ranges(path) -> list[tuple[int, int]]:
    """Byte ranges of whole lines to parse in parallel (one per core, up to two)."""
    size = os.path.getsize(path)
    parts = min(_cores(), _MAX_RANGES)
    if parts < 2 or size < _PARALLEL_MIN_BYTES:
        return [(0, size)]
    cuts = [0]
    with open(path, "rb") as handle:
        for k in range(1, parts):
            handle.seek(max(size * k // parts, cuts[-1]))
            handle.readline()  # to the start of the next line
            cut = handle.tell()
            if cut < size:
                cuts.append(cut)
    cuts.append(size)
    return list(pairwise(cuts))


def _cores() -> int:
    return os.cpu_count() or 1


def _all_empty(column: pa.Array) -> bool:
    return len(column) == 0 or pc.max(pc.binary_length(column)).as_py() == 0


class _BlockChecker:
    """Checks converted blocks against the layout's rules and keeps them, narrowed.

    Numeric columns go into contiguous NumPy buffers sized from the first block (pages never
    written are never resident), so no concatenation copy is needed at the end.
    """

    def __init__(self, layout: TextLayout, *, blocks_in_file: float) -> None:
        low, high = layout.value_range
        self.value_low = max(low, -FLOAT32_MAX)
        self.value_high = min(high, FLOAT32_MAX)
        self.ts_low, self.ts_high = layout.timestamp_range
        self.blocks_in_file = blocks_in_file
        self.roles = [rule.role for rule in layout.fields]
        self.text: dict[str, list[pa.Array]] = {}  # text-id columns, block by block
        self.numbers: dict[str, _Growing] = {}

    def add(self, rule: FieldRule, column: pa.Array) -> bool:
        """Check one block of one field; keep it and return ``True`` if every value is valid."""
        role = rule.role
        if len(column) == 0:
            return True
        if pa.types.is_string(column.type):  # text ids
            if pc.min(pc.binary_length(column)).as_py() == 0:
                return False
            self.text.setdefault(role, []).append(column)
            return True
        if role == "value" and not pc.all(pc.is_finite(column)).as_py():
            return False
        low, high = _min_max(column)
        dtype: type[np.number]
        if role == "value":
            if low < self.value_low or high > self.value_high:
                return False
            dtype = np.float32
        elif role == "timestamp":
            if low < self.ts_low or high > self.ts_high:
                return False
            dtype = np.int64
        else:
            dtype = np.int32 if _INT32.min <= low and high <= _INT32.max else np.int64
        buffer = self.numbers.get(role)
        if buffer is None:
            capacity = int(len(column) * max(self.blocks_in_file, 1.0) * 1.15) + 1024
            buffer = self.numbers[role] = _Growing(dtype, capacity)
        buffer.append(column.to_numpy(), dtype)
        return True

    def extend(self, other: _BlockChecker) -> None:
        """Append the columns another checker kept (the next range of the file)."""
        for role, chunks in other.text.items():
            self.text.setdefault(role, []).extend(chunks)
        for role, buffer in other.numbers.items():
            mine = self.numbers.get(role)
            if mine is None:
                self.numbers[role] = buffer
            else:
                mine.extend(buffer)
        other.text = {}
        other.numbers = {}

    def finish(self) -> dict[str, pa.Array | pa.ChunkedArray]:
        out: dict[str, pa.Array | pa.ChunkedArray] = {}
        for role in self.roles:  # in the layout's order
            if role in self.text:
                out[role] = pa.chunked_array(self.text[role])
            elif role in self.numbers:
                out[role] = self.numbers[role].array()
        return out


class _Growing:
    """A contiguous NumPy buffer filled block by block; widens int32 to int64 when needed."""

    def __init__(self, dtype: type[np.number], capacity: int) -> None:
        self.data: np.ndarray = np.empty(capacity, dtype=dtype)
        self.size = 0

    def append(self, values: np.ndarray, dtype: type[np.number]) -> None:
        end = self.size + len(values)
        if np.dtype(dtype).itemsize > self.data.dtype.itemsize:
            self.data = self.data.astype(dtype)
        if end > len(self.data):
            grown = np.empty(max(end, int(len(self.data) * 1.5)), dtype=self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : end] = values
        self.size = end

    def extend(self, other: _Growing) -> None:
        self.append(other.data[: other.size], other.data.dtype.type)
        other.data = other.data[:0]

    def array(self) -> pa.Array:
        return pa.array(self.data[: self.size])


def _min_max(column: pa.Array) -> tuple:
    result = pc.min_max(column)
    return result["min"].as_py(), result["max"].as_py()

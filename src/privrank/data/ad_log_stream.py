r"""The synthetic ad log streamed part by part: train a click model on 10M+ rows in bounded memory.

:func:`plan_ad_log_stream` makes **one pass** over a log (:mod:`privrank.data.synthetic_ads`)
and returns an :class:`AdLogStream`:

- the *window* is the first ``max_rows`` impressions (all by default), in impression order; its
  last ``validation_rows`` are the validation part, the rest the training part (a time split:
  validation is later than every training row);
- every user keeps its first ``max_rows_per_user`` rows of the window (the contribution bound
  of :func:`privrank.privacy._contribution.first_rows_per_user`, applied with running counts
  across parts, so the result is the same as on the whole window at once);
- the labels of the kept rows (one byte a row) and the value counts of every feature on the
  training rows are gathered; the validation rows are kept (they are few) and encoded once;
- a :class:`~privrank.data.features.FeatureVocabulary` is built from the counts, exactly as
  :meth:`~privrank.data.features.FeatureEncoder.fit` builds it on the decimal strings of
  :func:`~privrank.data.ad_log_frames.ad_log_frame` (so the saved ranker scores served
  requests unchanged), with an :class:`IntCodeEncoder` that maps the integer columns to the
  same codes by table look-up.

The training rows are never held together: :class:`AdLogChunk` reads one Parquet part's kept
training rows on demand, and :class:`ChunkedFeatureTable` yields mini-batches part by part (parts
in a seeded random order, rows shuffled within a part). Memory: one part's columns and codes
(``chunk_rows`` × fields × 8 bytes), two bytes a row of the window (labels, keep mask), the
validation part and the model.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from privrank.data.features import FeatureTable, FeatureVocabulary, FieldVocabulary
from privrank.data.synthetic_ads import FEATURE_COLUMNS, log_parts
from privrank.errors import ConfigError, DataError

__all__ = [
    "AdLogChunk",
    "AdLogStream",
    "ChunkedFeatureTable",
    "IntCodeEncoder",
    "plan_ad_log_stream",
]


class IntCodeEncoder:
    """Integer feature columns to the codes of a vocabulary fitted on their decimal strings.

    For field :math:`f` with sorted string values :math:`s_0 < s_1 < \\dots`, the integer
    :math:`v` with ``str(v)`` = :math:`s_j` gets :math:`j` plus the field's offset; an integer
    not in the vocabulary gets the hashed bucket ``crc32(f ‖ 0x1f ‖ str(v)) mod B`` past it, as
    :meth:`~privrank.data.features.FieldVocabulary.encode` does.

    Args:
        vocabulary: A vocabulary without numeric fields whose values are all decimal integers.

    Raises:
        ConfigError: A value that is not a decimal non-negative integer, or numeric fields.
    """

    def __init__(self, vocabulary: FeatureVocabulary) -> None:
        if vocabulary.numeric:
            raise ConfigError("IntCodeEncoder: numeric fields are not integer codes")
        self.vocabulary = vocabulary
        self._tables: list[np.ndarray] = []
        for vocab in vocabulary.fields:
            try:
                ints = np.array([int(v) for v in vocab.values], dtype=np.int64)
            except ValueError:
                raise ConfigError(
                    f"IntCodeEncoder: field {vocab.name!r} has non-integer values"
                ) from None
            canonical = all(str(i) == s for i, s in zip(ints, vocab.values, strict=True))
            if ints.size and (ints.min() < 0 or not canonical):
                raise ConfigError(f"IntCodeEncoder: field {vocab.name!r} is not canonical integers")
            table = np.full(int(ints.max()) + 1 if ints.size else 0, -1, dtype=np.int64)
            table[ints] = np.arange(ints.size)
            self._tables.append(table)

    def encode(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """``[n, F]`` int64 codes of the integer ``columns`` (one per field, in any order)."""
        v = self.vocabulary
        fields = v.fields
        n = len(np.asarray(columns[fields[0].name])) if fields else 0
        codes = np.empty((n, len(fields)), dtype=np.int64)
        parts = zip(fields, self._tables, v.offsets, strict=True)
        for j, (vocab, table, offset) in enumerate(parts):
            raw = np.asarray(columns[vocab.name]).astype(np.int64, copy=False)
            inside = (raw >= 0) & (raw < table.size)
            local = np.full(n, -1, dtype=np.int64)
            local[inside] = table[raw[inside]]
            unseen = local < 0
            if unseen.any():
                local[unseen] = len(vocab.values) + _hash_buckets(
                    vocab.name, raw[unseen], v.hash_buckets
                )
            codes[:, j] = local + offset
        return codes


def _hash_buckets(name: str, values: np.ndarray, buckets: int) -> np.ndarray:
    distinct, inverse = np.unique(values, return_inverse=True)
    hashed = np.array(
        [zlib.crc32(f"{name}\x1f{int(v)}".encode()) % buckets for v in distinct], dtype=np.int64
    )
    return hashed[inverse]


@dataclass(frozen=True)
class AdLogChunk:
    """The kept training rows of one Parquet part of the window.

    Attributes:
        part: The Parquet file.
        start: First row of the part to read (part-local; rows before it are not in the window).
        stop: One past the last row of the part in the training part.
        keep: ``[stop - start]`` bool, the rows kept by the per-user bound.
        labels: ``[keep.sum()]`` int8 labels of the kept rows (replaceable: noisy labels).
    """

    part: Path
    start: int
    stop: int
    keep: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.size)

    def load(self, columns: Sequence[str] = FEATURE_COLUMNS) -> dict[str, np.ndarray]:
        """The kept rows' ``columns`` as NumPy arrays (this part only is read)."""
        table = pq.read_table(self.part, columns=list(columns)).slice(
            self.start, self.stop - self.start
        )
        return {name: table.column(name).to_numpy()[self.keep] for name in columns}


@dataclass(frozen=True)
class AdLogStream:
    """A planned stream over a log (see the module docstring).

    Attributes:
        chunks: The training part, one chunk per Parquet part.
        validation: The validation part's raw integer columns and ``label``.
        vocabulary: Fitted on the training rows (decimal strings of the integer values).
        encoder: The vocabulary's integer look-up.
        window_rows: Rows of the window (before the per-user bound).
        dropped: Rows of the window left out by the per-user bound.
        peak_part_rows: Rows of the largest part (what one read holds).
    """

    chunks: tuple[AdLogChunk, ...]
    validation: dict[str, np.ndarray]
    vocabulary: FeatureVocabulary
    encoder: IntCodeEncoder
    window_rows: int
    dropped: int
    peak_part_rows: int = 0
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def train_rows(self) -> int:
        """Kept training rows."""
        return sum(len(c) for c in self.chunks)

    def train_table(self) -> ChunkedFeatureTable:
        """The training part as a streamed feature table."""
        return ChunkedFeatureTable(self.chunks, self.encoder)

    def validation_table(self) -> FeatureTable:
        """The validation part, encoded (in memory)."""
        codes = self.encoder.encode(self.validation)
        labels = self.validation["label"].astype(np.float32)
        return FeatureTable(
            codes, np.zeros((codes.shape[0], 0), np.float32), labels, self.vocabulary
        )


class ChunkedFeatureTable:
    """Encoded training rows read part by part: the :class:`FeatureTable` interface of training.

    Only :meth:`batches` and ``len`` are offered (what :func:`~privrank.ranking.ctr.neural.
    train_network` uses); a fit that needs every row at once refuses it.

    Args:
        chunks: The parts (each loads its own rows and carries its labels).
        encoder: Integer columns to codes.
    """

    def __init__(self, chunks: Sequence[AdLogChunk], encoder: IntCodeEncoder) -> None:
        self.chunks = tuple(chunks)
        self.encoder = encoder
        self.vocabulary = encoder.vocabulary

    def __len__(self) -> int:
        return sum(len(c) for c in self.chunks)

    def batches(
        self, batch_size: int, rng: np.random.Generator | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(codes, numeric, labels)`` mini-batches, one part at a time.

        With ``rng``: parts in a random order, rows shuffled within each part; without: in
        order.
        """
        names = self.vocabulary.field_names
        order = range(len(self.chunks)) if rng is None else rng.permutation(len(self.chunks))
        for index in order:
            chunk = self.chunks[int(index)]
            if not len(chunk):
                continue
            codes = self.encoder.encode(chunk.load(names))
            labels = chunk.labels.astype(np.float32)
            numeric = np.zeros((len(labels), 0), np.float32)
            rows = np.arange(len(labels)) if rng is None else rng.permutation(len(labels))
            for start in range(0, len(rows), batch_size):
                take = rows[start : start + batch_size]
                if rng is not None:
                    take = np.sort(take)
                yield codes[take], numeric[take], labels[take]
            del codes


def plan_ad_log_stream(
    path: str | Path,
    *,
    max_rows: int | None = None,
    max_rows_per_user: int | None = None,
    validation_rows: int | None = None,
    fields: Sequence[str] = FEATURE_COLUMNS,
    hash_buckets: int = 8,
    min_count: int = 1,
) -> AdLogStream:
    """One pass over the log: window, per-user bound, labels, vocabulary (see the module).

    Args:
        path: A log written by ``privrank data synth-ads``.
        max_rows: The window (``None``: the whole log).
        max_rows_per_user: Rows kept per user, their first in the window (``None``: all).
        validation_rows: The window's last rows held out for validation (``None``: 5 % of the
            window, at most 200,000).
        fields: The categorical feature columns (integers).
        hash_buckets: Hashed buckets per field for unseen values.
        min_count: Training occurrences a value needs for its own code.

    Raises:
        DataError: Not a log, an empty window, or a negative feature value.
        ConfigError: Bad sizes.
    """
    path = Path(path)
    parts = log_parts(path)
    part_rows = [pq.ParquetFile(p).metadata.num_rows for p in parts]
    total = sum(part_rows)
    window = total if max_rows is None else min(max_rows, total)
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"max_rows must be >= 1. Got {max_rows}")
    if max_rows_per_user is not None and max_rows_per_user < 1:
        raise ConfigError(f"max_rows_per_user must be >= 1. Got {max_rows_per_user}")
    n_valid = min(window // 20, 200_000) if validation_rows is None else validation_rows
    if not 1 <= n_valid < window:
        raise ConfigError(
            f"validation_rows must be in 1..{window - 1} (the window has {window} rows). "
            f"Got {n_valid}"
        )
    train_end = window - n_valid
    user_counts = np.zeros(0, dtype=np.int64)
    value_counts: dict[str, np.ndarray] = {name: np.zeros(0, np.int64) for name in fields}
    chunks: list[AdLogChunk] = []
    valid_parts: list[dict[str, np.ndarray]] = []
    dropped = 0
    seen = 0
    columns = [*fields, "user_id", "click"]
    for part, rows_in_part in zip(parts, part_rows, strict=True):
        lo, hi = seen, seen + rows_in_part
        seen = hi
        if lo >= window:
            break
        table = pq.read_table(part, columns=columns).slice(0, min(hi, window) - lo)
        users = table.column("user_id").to_numpy()
        if users.size and users.min() < 0:
            raise DataError("negative user id", path=part, field="user_id", expected=">= 0")
        keep, user_counts = _running_cap(users, user_counts, max_rows_per_user)
        dropped += int((~keep).sum())
        clicks = table.column("click").to_numpy().astype(np.int8)
        split = max(0, min(train_end - lo, table.num_rows))
        train_keep = keep[:split]
        for name in fields:
            values = table.column(name).to_numpy()[:split][train_keep].astype(np.int64)
            if values.size and values.min() < 0:
                raise DataError(
                    "negative feature value", path=part, field=name, expected="an int >= 0"
                )
            counts = np.bincount(values)
            if counts.size > value_counts[name].size:
                counts[: value_counts[name].size] += value_counts[name]
                value_counts[name] = counts
            else:
                value_counts[name][: counts.size] += counts
        if split > 0:
            chunks.append(AdLogChunk(part, 0, split, train_keep, clicks[:split][train_keep]))
        if split < table.num_rows:
            tail = keep[split:]
            valid_parts.append(
                {name: table.column(name).to_numpy()[split:][tail] for name in fields}
                | {"label": clicks[split:][tail]}
            )
        del table
    vocab_fields = []
    for name in fields:
        counts = value_counts[name]
        kept = np.flatnonzero(counts >= min_count)
        vocab_fields.append(FieldVocabulary(name, tuple(sorted(str(int(v)) for v in kept))))
    vocabulary = FeatureVocabulary(
        fields=tuple(vocab_fields),
        numeric=(),
        numeric_mean=(),
        numeric_std=(),
        hash_buckets=hash_buckets,
        user_field=None,
    )
    validation = {key: np.concatenate([p[key] for p in valid_parts]) for key in (*fields, "label")}
    if not chunks or sum(len(c) for c in chunks) == 0 or validation["label"].size == 0:
        raise DataError("the window has no training or no validation rows", path=path)
    return AdLogStream(
        chunks=tuple(chunks),
        validation=validation,
        vocabulary=vocabulary,
        encoder=IntCodeEncoder(vocabulary),
        window_rows=window,
        dropped=dropped,
        peak_part_rows=max(part_rows),
        facts={"log": str(path), "parts": len(parts), "train_end": train_end},
    )


def _running_cap(
    users: np.ndarray, counts: np.ndarray, cap: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Keep mask of the first ``cap`` rows a user, given the rows already seen (``counts``)."""
    users = users.astype(np.int64, copy=False)
    if users.size and int(users.max()) >= counts.size:
        grown = np.zeros(int(users.max()) + 1, dtype=np.int64)
        grown[: counts.size] = counts
        counts = grown
    if cap is None:
        np.add.at(counts, users, 1)
        return np.ones(users.size, dtype=bool), counts
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1]
    run = np.arange(users.size) - np.repeat(starts, np.diff(np.r_[starts, users.size]))
    keep = np.empty(users.size, dtype=bool)
    keep[order] = counts[sorted_users] + run < cap
    counts += np.bincount(users, minlength=counts.size)
    return keep, counts

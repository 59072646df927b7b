r"""Field-aware feature tables for click-through-rate ranking.

A CTR example is a label and one value per *field* (user, app, hour, site, ...). Readers
(:mod:`privrank.data.readers.ctr`) return a :class:`CTRFrame`: the raw values as an Arrow table,
categorical fields as text and numeric fields as float (missing allowed). A
:class:`FeatureEncoder` turns a frame into a :class:`FeatureTable`, the dense form models train
on:

- **Categorical field** :math:`f`: the values seen in the *training* part (at least
  ``min_count`` times) get the codes :math:`0 .. V_f - 1` in sorted order; every other value
  (unseen in training, or rarer than ``min_count``) goes to one of :math:`B` hashed buckets
  :math:`V_f + (\mathrm{crc32}(f \Vert value) \bmod B)`. A missing value is its own value
  (``""``). The codes of all fields share one index space: field :math:`f` is offset by
  :math:`\sum_{g < f} (V_g + B)`, so one embedding table serves all fields.
- **Numeric field**: ``log1p`` of non-negative counts (as the Criteo winners' transform) then
  standardised with the training mean and standard deviation; a missing value becomes 0 (the
  training mean).

The vocabulary (:class:`FeatureVocabulary`) is fitted on train once and applied unchanged to
validation, test and serving rows, so a model never sees test values at fit time. It is plain
data (JSON) and is saved with every ranker.

A :class:`FeatureTable` holds NumPy arrays once: ``codes [n, F] int64``, ``numeric [n, N]
float32`` and ``labels [n] float32``; mini-batches are views or gathers of these rows, so
training never holds a second copy of the data.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from privrank.data._config import FrozenConfig
from privrank.errors import ConfigError, DataError

__all__ = [
    "LABEL",
    "CTRFrame",
    "FeatureEncoder",
    "FeatureTable",
    "FeatureVocabulary",
    "FieldVocabulary",
]

#: Name of the label column of a :class:`CTRFrame` (``int8``, 0 or 1).
LABEL = "label"


@dataclass(frozen=True)
class CTRFrame:
    """Raw CTR rows: a label and one value per field.

    Attributes:
        table: Arrow table with ``label`` (int8, 0/1), one ``string`` column per categorical
            field and one ``float64`` column (nullable) per numeric field.
        categorical: Categorical field names, in order.
        numeric: Numeric field names, in order.
        user_field: The field that identifies the user, if the data has one (the unit of
            privacy for user-level DP, and the grouping of per-user statistics).
        name: Dataset name.
        source: JSON facts about where the rows came from (files, counts, rejects).
    """

    table: pa.Table
    categorical: tuple[str, ...]
    numeric: tuple[str, ...] = ()
    user_field: str | None = None
    name: str = ""
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = set(self.table.column_names)
        missing = [c for c in (LABEL, *self.categorical, *self.numeric) if c not in names]
        if missing:
            raise ConfigError(f"CTR frame {self.name!r} lacks columns {missing}")
        if self.user_field is not None and self.user_field not in self.categorical:
            raise ConfigError(f"user field {self.user_field!r} is not a categorical field")

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def labels(self) -> np.ndarray:
        """``[n]`` float32 labels (0 or 1)."""
        return self.table.column(LABEL).to_numpy().astype(np.float32)

    def take(self, rows: np.ndarray) -> CTRFrame:
        """The rows at ``rows`` (in that order), with the same fields."""
        return CTRFrame(
            self.table.take(pa.array(np.asarray(rows, dtype=np.int64))),
            self.categorical,
            self.numeric,
            self.user_field,
            self.name,
            self.source,
        )

    @staticmethod
    def concat(frames: list[CTRFrame]) -> CTRFrame:
        """The rows of ``frames`` one after another (same fields)."""
        first = frames[0]
        for other in frames[1:]:
            if (other.categorical, other.numeric) != (first.categorical, first.numeric):
                raise ConfigError("cannot concatenate CTR frames with different fields")
        table = pa.concat_tables([f.table.cast(first.table.schema) for f in frames])
        return CTRFrame(table, first.categorical, first.numeric, first.user_field, first.name)


class FeatureEncoder(FrozenConfig):
    """How a :class:`CTRFrame` becomes codes (see the module docstring).

    Attributes:
        hash_buckets: Buckets :math:`B` per categorical field for values not in the vocabulary.
        min_count: Training occurrences a value needs to get its own code.
    """

    hash_buckets: int = Field(default=8, ge=1, le=1 << 20)
    min_count: int = Field(default=1, ge=1)

    def fit(self, frame: CTRFrame) -> FeatureVocabulary:
        """The vocabulary of ``frame`` (the training part)."""
        if len(frame) == 0:
            raise DataError(f"cannot fit a feature vocabulary on no rows ({frame.name!r})")
        fields = []
        for name in frame.categorical:
            counts = pc.value_counts(frame.table.column(name).fill_null(""))
            values = counts.field("values")
            kept = pc.filter(values, pc.greater_equal(counts.field("counts"), self.min_count))
            fields.append(FieldVocabulary(name, tuple(sorted(kept.to_pylist()))))
        means, stds = [], []
        for name in frame.numeric:
            values = _numeric(frame.table.column(name))
            finite = values[~np.isnan(values)]
            mean = float(finite.mean()) if len(finite) else 0.0
            std = float(finite.std()) if len(finite) > 1 else 1.0
            means.append(mean)
            stds.append(std if std > 0 else 1.0)
        return FeatureVocabulary(
            fields=tuple(fields),
            numeric=frame.numeric,
            numeric_mean=tuple(means),
            numeric_std=tuple(stds),
            hash_buckets=self.hash_buckets,
            user_field=frame.user_field,
        )


@dataclass(frozen=True)
class FieldVocabulary:
    """The values of one categorical field seen in training, sorted (code = position)."""

    name: str
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_array", pa.array(self.values, type=pa.string()))

    def code_of(self, value: str, buckets: int) -> int:
        """The local code of one value, as :meth:`encode` gives it (index, or hashed bucket)."""
        index: dict[str, int] | None = self.__dict__.get("_index")
        if index is None:
            index = {v: i for i, v in enumerate(self.values)}
            object.__setattr__(self, "_index", index)
        found = index.get(value)
        if found is not None:
            return found
        return len(self.values) + self._bucket(value, buckets)

    def _bucket(self, value: str, buckets: int) -> int:
        """The hashed bucket (before the vocabulary's offset) of a value outside it."""
        return zlib.crc32(f"{self.name}\x1f{value}".encode()) % buckets

    def encode(self, column: pa.ChunkedArray | pa.Array, buckets: int) -> np.ndarray:
        """Local codes of ``column``: the vocabulary index, or a hashed bucket past it."""
        column = column.fill_null("")
        index = pc.index_in(column, value_set=self._array)  # type: ignore[attr-defined]
        codes = index.to_numpy(zero_copy_only=False)
        unseen = np.isnan(codes) if codes.dtype.kind == "f" else np.zeros(len(codes), bool)
        codes = np.where(unseen, 0, codes).astype(np.int64)
        if unseen.any():
            raw = pc.filter(column, pa.array(unseen))
            uniques = pc.unique(raw)
            hashed = np.array(
                [self._bucket(v, buckets) for v in uniques.to_pylist()], dtype=np.int64
            )
            position = pc.index_in(raw, value_set=uniques).to_numpy(zero_copy_only=False)
            codes[unseen] = len(self.values) + hashed[position.astype(np.int64)]
        return codes


@dataclass(frozen=True)
class FeatureVocabulary:
    """A fitted encoding: categorical vocabularies, hashed buckets and numeric scaling.

    Attributes:
        fields: Vocabulary of each categorical field, in the frame's order.
        numeric: Numeric field names.
        numeric_mean: Training mean of each numeric field (after ``log1p``).
        numeric_std: Training standard deviation of each numeric field (after ``log1p``).
        hash_buckets: Buckets per categorical field for unseen values.
        user_field: The frame's user field, if any.
    """

    fields: tuple[FieldVocabulary, ...]
    numeric: tuple[str, ...]
    numeric_mean: tuple[float, ...]
    numeric_std: tuple[float, ...]
    hash_buckets: int
    user_field: str | None = None

    @property
    def field_names(self) -> tuple[str, ...]:
        """Categorical field names, in order."""
        return tuple(f.name for f in self.fields)

    @property
    def field_sizes(self) -> tuple[int, ...]:
        """Codes per categorical field (vocabulary plus hashed buckets)."""
        return tuple(len(f.values) + self.hash_buckets for f in self.fields)

    @property
    def offsets(self) -> np.ndarray:
        """``[F]`` start of each field's codes in the shared index space."""
        sizes = np.asarray(self.field_sizes, dtype=np.int64)
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

    @property
    def n_codes(self) -> int:
        """Size of the shared index space (rows of an embedding table over all fields)."""
        return int(sum(self.field_sizes))

    def transform(self, frame: CTRFrame) -> FeatureTable:
        """Encode ``frame`` with this vocabulary (codes in the shared index space).

        Raises:
            DataError: ``frame`` lacks a field of the vocabulary.
        """
        missing = [
            n for n in (*self.field_names, *self.numeric) if n not in frame.table.schema.names
        ]
        if missing:
            raise DataError(f"{frame.name or 'CTR rows'}: fields {missing} are missing")
        n = len(frame)
        codes = np.empty((n, len(self.fields)), dtype=np.int64)
        offsets = self.offsets
        for j, vocab in enumerate(self.fields):
            codes[:, j] = vocab.encode(frame.table.column(vocab.name), self.hash_buckets)
            codes[:, j] += offsets[j]
        numeric = np.zeros((n, len(self.numeric)), dtype=np.float32)
        for j, name in enumerate(self.numeric):
            values = _numeric(frame.table.column(name))
            scaled = (values - self.numeric_mean[j]) / self.numeric_std[j]
            numeric[:, j] = np.where(np.isnan(scaled), 0.0, scaled)
        user_codes = None
        if self.user_field is not None and self.user_field in self.field_names:
            position = self.field_names.index(self.user_field)
            user_codes = codes[:, position] - offsets[position]
        return FeatureTable(codes, numeric, frame.labels, self, user_codes)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (see :meth:`from_dict`)."""
        return {
            "fields": [{"name": f.name, "values": list(f.values)} for f in self.fields],
            "numeric": list(self.numeric),
            "numeric_mean": list(self.numeric_mean),
            "numeric_std": list(self.numeric_std),
            "hash_buckets": self.hash_buckets,
            "user_field": self.user_field,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureVocabulary:
        """The vocabulary of :meth:`to_dict`'s form."""
        return cls(
            fields=tuple(FieldVocabulary(f["name"], tuple(f["values"])) for f in data["fields"]),
            numeric=tuple(data["numeric"]),
            numeric_mean=tuple(float(x) for x in data["numeric_mean"]),
            numeric_std=tuple(float(x) for x in data["numeric_std"]),
            hash_buckets=int(data["hash_buckets"]),
            user_field=data.get("user_field"),
        )


@dataclass(frozen=True)
class FeatureTable:
    """Encoded CTR rows, held once as NumPy arrays.

    Attributes:
        codes: ``[n, F]`` int64 codes in the vocabulary's shared index space.
        numeric: ``[n, N]`` float32 scaled numeric features.
        labels: ``[n]`` float32 labels (0 or 1).
        vocabulary: The encoding the codes come from.
        user_codes: ``[n]`` local code of the user field (``None`` without one).
    """

    codes: np.ndarray
    numeric: np.ndarray
    labels: np.ndarray
    vocabulary: FeatureVocabulary
    user_codes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_fields(self) -> int:
        """Categorical fields :math:`F`."""
        return self.codes.shape[1]

    def take(self, rows: np.ndarray) -> FeatureTable:
        """The rows at ``rows`` (a copy of those rows only)."""
        users = None if self.user_codes is None else self.user_codes[rows]
        return FeatureTable(
            self.codes[rows], self.numeric[rows], self.labels[rows], self.vocabulary, users
        )

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Any:
        """Yield ``(codes, numeric, labels)`` mini-batches; shuffled when ``rng`` is given.

        In order, batches are views of the arrays; shuffled, each batch gathers its rows only.
        """
        n = len(self)
        order = None if rng is None else rng.permutation(n)
        for start in range(0, n, batch_size):
            if order is None:
                rows: Any = slice(start, start + batch_size)
            else:
                rows = np.sort(order[start : start + batch_size])
            yield self.codes[rows], self.numeric[rows], self.labels[rows]


def _numeric(column: pa.ChunkedArray) -> np.ndarray:
    values = column.to_numpy(zero_copy_only=False).astype(np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(values >= 0, np.log1p(np.maximum(values, 0)), values)

"""A trained CTR ranker as a served :class:`~privrank.ranking.click_scorer.ClickScorer`.

:class:`CTRClickScorer` wraps any :class:`~privrank.ranking.ctr.base.CTRRanker` (privrank's FM,
DeepFM, DCN-v2, FinalMLP, logistic; a DP-SGD one alike) so that the ads auction can score
candidates with it: ``predict_ctr`` turns the named columns into CTR rows (every categorical
value as its decimal string, as :func:`~privrank.data.ad_log_frames.ad_log_frame` writes them)
and returns the ranker's **calibrated** ``predict_proba``.

Integer-valued columns of a ranker without numeric fields skip the string table: each value's
code is looked up once in a per-field cache (:meth:`~privrank.data.features.FieldVocabulary.
code_of`, the same code the string path gives; tested), which is most of a request's cost.

The user field is never asked for (a served request carries no user id): it is filled with the
empty value, which the vocabulary maps to a hashed bucket no training row had, so the score is
the model's answer for an unseen user.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa

from privrank.data.features import LABEL, CTRFrame, FeatureTable
from privrank.errors import DataError
from privrank.ranking.ctr import CTRRanker, load_ranker

__all__ = ["CTRClickScorer", "is_ranker_dir"]

_CACHE_LIMIT = 100_000  # cached codes per field (values past it are coded without caching)


def is_ranker_dir(directory: str | Path) -> bool:
    """Whether ``directory`` holds a saved CTR ranker (``ranker.json``)."""
    return (Path(directory) / "ranker.json").is_file()


class CTRClickScorer:
    """A CTR ranker behind the ``ClickScorer`` protocol.

    Attributes:
        ranker: The wrapped, fitted ranker.
        feature_names: The ranker's categorical fields but the user field, then its numeric
            fields.
    """

    def __init__(self, ranker: CTRRanker) -> None:
        vocabulary = ranker.vocabulary_
        if vocabulary is None:
            raise DataError(f"{ranker.name} is not fitted")
        self.ranker = ranker
        self.user_field = vocabulary.user_field
        self._fields = vocabulary.field_names
        self._numeric = tuple(vocabulary.numeric)
        self.feature_names: tuple[str, ...] = (
            *(f for f in self._fields if f != self.user_field),
            *self._numeric,
        )
        # integer value -> global code, per categorical field (:meth:`_predict_integer`)
        self._code_cache: list[dict[int, int]] = [{} for _ in vocabulary.fields]

    @classmethod
    def load(cls, directory: str | Path) -> CTRClickScorer:
        """Read a ranker directory (checksums verified)."""
        return cls(load_ranker(directory))

    def predict_ctr(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """Calibrated P(click) per row (see the module docstring)."""
        missing = [name for name in self.feature_names if name not in features]
        if missing:
            raise DataError(f"click model features missing: {missing}")
        n = len(np.asarray(features[self.feature_names[0]]))
        if not self._numeric and all(
            np.asarray(features[f]).dtype.kind in "iu" for f in self._fields if f != self.user_field
        ):
            return self._predict_integer(features, n)
        columns: dict[str, pa.Array] = {LABEL: pa.array(np.zeros(n, dtype=np.int8))}
        for name in self._fields:
            if name == self.user_field:
                columns[name] = pa.array([""] * n, type=pa.string())
            else:
                columns[name] = pa.array([str(v) for v in np.asarray(features[name])])
        for name in self._numeric:
            columns[name] = pa.array(np.asarray(features[name], dtype=np.float64))
        frame = CTRFrame(pa.table(columns), self._fields, self._numeric, user_field=self.user_field)
        return self.ranker.predict_proba(frame)

    def _predict_integer(self, features: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """:meth:`predict_ctr` for integer columns and no numeric fields, without pyarrow."""
        vocabulary = self.ranker.vocabulary_
        assert vocabulary is not None
        codes = np.empty((n, len(vocabulary.fields)), dtype=np.int64)
        buckets, offsets = vocabulary.hash_buckets, vocabulary.offsets
        for j, (field, offset) in enumerate(zip(vocabulary.fields, offsets, strict=True)):
            if field.name == self.user_field:
                codes[:, j] = field.code_of("", buckets) + offset
                continue
            cache = self._code_cache[j]
            out = codes[:, j]
            for i, value in enumerate(np.asarray(features[field.name]).tolist()):
                code = cache.get(value)
                if code is None:
                    code = field.code_of(str(value), buckets) + int(offset)
                    if len(cache) < _CACHE_LIMIT:
                        cache[value] = code
                out[i] = code
        user_codes = None
        if self.user_field is not None and self.user_field in self._fields:
            position = self._fields.index(self.user_field)
            user_codes = codes[:, position] - offsets[position]
        table = FeatureTable(
            codes,
            np.zeros((n, 0), dtype=np.float32),
            np.zeros(n, dtype=np.float32),
            vocabulary,
            user_codes,
        )
        return self.ranker.predict_proba(table)

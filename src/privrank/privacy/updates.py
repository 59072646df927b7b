"""A batch of per-device update vectors: the input of every federated aggregation.

It lives in the privacy layer because everything that aggregates device updates reads it:
the plain checked sum (:mod:`privrank.federated.aggregation`), DP-FedAvg
(:mod:`privrank.privacy.dp_fedavg`) and secure aggregation (:mod:`privrank.privacy.crypto`).

Every client algorithm returns its devices' updates as a :class:`ClientUpdates`: ``len(batch)``
vectors of one dimension ``dim``. The server touches them only through this interface:

- :meth:`ClientUpdates.norms`: each update's L2 norm (to check the declared clipping bound);
- :meth:`ClientUpdates.finite`: whether each update is free of NaN and inf;
- :meth:`ClientUpdates.weighted_sum`: :math:`\\sum_b c_b \\Delta_b` (the plain aggregation);
- :meth:`ClientUpdates.dense`: the updates of a slice of the batch as an explicit
  ``(rows, dim)`` array, for aggregators that must see every vector (quantisation and secure
  summation, :mod:`privrank.privacy.crypto`).

:class:`DenseUpdates` holds explicit vectors (one device over Flower, a neural model's
gradients). A model may instead keep its batch in a factored form whose norms and sums cost far
less than materialising ``len × dim`` numbers (:class:`~privrank.models._fedmf_rounds.MFUpdates`);
``dense`` still gives the same vectors, so the two forms are interchangeable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import scipy.sparse as sp

__all__ = ["ClientUpdates", "DenseUpdates", "SparseUpdates"]


class ClientUpdates(ABC):
    """``len(self)`` update vectors of dimension :attr:`dim`, one per device of a batch."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """The dimension of every update vector."""

    @abstractmethod
    def __len__(self) -> int:
        """The devices in the batch."""

    @abstractmethod
    def norms(self) -> np.ndarray:
        """``(len,)`` float64 L2 norms (NaN or inf for a non-finite update)."""

    @abstractmethod
    def finite(self) -> np.ndarray:
        """``(len,)`` bool: whether every coordinate of each update is finite."""

    @abstractmethod
    def weighted_sum(self, weights: np.ndarray) -> np.ndarray:
        """:math:`\\sum_b c_b \\Delta_b` as a ``(dim,)`` float64 vector; rows with weight 0 are
        left out entirely (a refused update never enters the sum, NaN or not)."""

    @abstractmethod
    def dense(self, start: int, stop: int) -> np.ndarray:
        """The updates of devices ``start..stop-1`` as a ``(stop - start, dim)`` array."""

    def well_formed(self) -> np.ndarray:
        """``(len,)`` bool: whether each update arrived with the expected shape (default: all)."""
        return np.ones(len(self), dtype=bool)

    def scaled(self, factors: np.ndarray) -> ClientUpdates:
        """The batch with update ``b`` multiplied by ``factors[b]`` (a device's own clipping)."""
        return _Scaled(self, np.asarray(factors, dtype=np.float64))


class DenseUpdates(ClientUpdates):
    """Explicit update vectors, a ``(devices, dim)`` array.

    Args:
        vectors: The updates (any float dtype; kept as given).
        shape_ok: ``(devices,)`` bool, whether each arrived with the expected shape (a row of a
            malformed update holds zeros); default all.
    """

    def __init__(self, vectors: np.ndarray, shape_ok: np.ndarray | None = None) -> None:
        array = np.asarray(vectors)
        if array.ndim != 2:
            raise ValueError(f"update vectors must be a 2-D array. Got shape {array.shape}")
        self.vectors = array
        self._dim = int(array.shape[1])
        self._shape_ok = (
            np.ones(array.shape[0], dtype=bool) if shape_ok is None else np.asarray(shape_ok)
        )

    @classmethod
    def from_arrays(cls, arrays: list[np.ndarray], dim: int) -> DenseUpdates:
        """One update per device as received; one whose shape is not ``(dim,)`` (or that is
        not numeric) is kept as a zero row flagged by :meth:`well_formed`."""
        out = np.zeros((len(arrays), dim), dtype=np.float64)
        ok = np.zeros(len(arrays), dtype=bool)
        for row, array in enumerate(arrays):
            value = np.asarray(array)
            if value.shape == (dim,) and np.issubdtype(value.dtype, np.number):
                out[row] = value
                ok[row] = True
        return cls(out, ok)

    def well_formed(self) -> np.ndarray:
        return self._shape_ok

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def norms(self) -> np.ndarray:
        return np.asarray(np.linalg.norm(self.vectors.astype(np.float64), axis=1))

    def finite(self) -> np.ndarray:
        return np.asarray(np.isfinite(self.vectors).all(axis=1))

    def weighted_sum(self, weights: np.ndarray) -> np.ndarray:
        keep = np.flatnonzero(weights)
        return np.asarray(weights[keep], dtype=np.float64) @ self.vectors[keep].astype(np.float64)

    def dense(self, start: int, stop: int) -> np.ndarray:
        return self.vectors[start:stop]


class _Scaled(ClientUpdates):
    def __init__(self, inner: ClientUpdates, factors: np.ndarray) -> None:
        if factors.shape != (len(inner),):
            raise ValueError(f"expected {len(inner)} scale factors. Got {factors.shape}")
        self.inner = inner
        self.factors = factors

    @property
    def dim(self) -> int:
        return self.inner.dim

    def __len__(self) -> int:
        return len(self.inner)

    def norms(self) -> np.ndarray:
        return np.asarray(self.inner.norms() * np.abs(self.factors))

    def finite(self) -> np.ndarray:
        return np.asarray(self.inner.finite() & np.isfinite(self.factors))

    def well_formed(self) -> np.ndarray:
        return self.inner.well_formed()

    def weighted_sum(self, weights: np.ndarray) -> np.ndarray:
        weights = np.asarray(weights, dtype=np.float64)
        return self.inner.weighted_sum(np.where(weights != 0, weights * self.factors, 0.0))

    def dense(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.inner.dense(start, stop) * self.factors[start:stop, None])


class SparseUpdates(ClientUpdates):
    """Update vectors held as the rows of a CSR matrix (e.g. a device's item counts).

    Args:
        rows: ``(devices, dim)`` CSR matrix.
    """

    def __init__(self, rows: sp.csr_matrix) -> None:
        self.rows = sp.csr_matrix(rows, dtype=np.float64)

    @property
    def dim(self) -> int:
        return int(self.rows.shape[1])

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def norms(self) -> np.ndarray:
        squares = self.rows.multiply(self.rows).sum(axis=1)
        return np.sqrt(np.asarray(squares, dtype=np.float64).ravel())

    def finite(self) -> np.ndarray:
        bad = ~np.isfinite(self.rows.data)
        owners = np.repeat(np.arange(len(self)), np.diff(self.rows.indptr))
        out = np.ones(len(self), dtype=bool)
        out[owners[bad]] = False
        return out

    def weighted_sum(self, weights: np.ndarray) -> np.ndarray:
        keep = np.flatnonzero(weights)
        chosen = self.rows[keep]
        return np.asarray(chosen.T @ np.asarray(weights[keep], dtype=np.float64)).ravel()

    def dense(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.rows[start:stop].toarray())

r"""Declared capabilities: what a model *is*, beyond the recommender contract.

A model that scores in a shape other code can exploit says so by inheriting one of these small
interfaces, and exposes what that shape needs through methods. Callers ask
``isinstance(model, FactorModel)``, never which attributes happen to exist (implicit's own
``hasattr(model, "+_user_factor")`` typo shows what attribute probing costs):

- :class:`FactorModel`: :math:`s(q, i) = v_q \cdot h_i + b_i` (iALS, BPR). Serving indexes the
  item vectors with FAISS (:mod:`privrank.serving.index`).
- :class:`ItemItemModel`: :math:`\hat y = x W` for a history :math:`x` (ItemKNN, EASE). Serving
  answers from a sparse top-k copy of :math:`W` (:mod:`privrank.serving.neighbours`).

- :class:`SharedRanking`: :math:`s(q, i) = p_i`, one score vector for every query
  (most-popular and its private and local-DP variants). The evaluator ranks the catalogue once
  instead of scoring a users × items matrix (:class:`privrank.metrics.evaluate.SharedScores`).

- :class:`LocalDPCollection`: the model is decoded from a (simulated) local-DP collection; its
  fit spends the collection's ε from the dataset's ledger even without a central privacy spec
  (:func:`privrank.workflow.spend.fit_and_spend`).

- :class:`PlannedPrivateFit`: the releases of the model's private fit are fixed by the spec and
  the data's shape alone, and the model states them before it reads any data (a pipeline that
  fits several private parts calibrates its budget split on them,
  :class:`~privrank.ranking.two_stage.TwoStage`).

- :class:`StagedModel`: the model runs in stages (a two-stage pipeline: retrieval, features,
  ranking); it reports the wall time of each, which the evaluation output records.

A model declaring neither is scored by :meth:`~privrank.models.Recommender.score` alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from privrank.models._query import Query

if TYPE_CHECKING:
    from privrank.privacy.calibration import Release
    from privrank.privacy.spec import PrivacySpec

__all__ = [
    "FactorModel",
    "ItemItemModel",
    "LocalDPCollection",
    "PlannedPrivateFit",
    "SharedRanking",
    "StagedModel",
    "StoredFactors",
]


class FactorModel(ABC):
    r"""A model whose scores are inner products of a query vector and item vectors.

    .. math:: s(q, i) = v_q \cdot h_i + b_i

    with :math:`v_q` a known user's stored factor or an ad-hoc history folded in
    (:meth:`user_vectors`), :math:`h_i` the item factors (:meth:`item_vectors`) and
    :math:`b_i` an optional item bias (:meth:`item_biases`). For every query with a non-empty
    history, ``model.score(query)`` equals ``user_vectors(query) @ item_vectors().T`` plus the
    biases (up to float32 rounding).
    """

    @abstractmethod
    def user_vectors(self, query: Query) -> np.ndarray:
        """``(len(query), d)`` float32 query vectors: the stored factors of known users (by
        code), or ad-hoc histories folded in."""

    @abstractmethod
    def item_vectors(self) -> np.ndarray:
        """``(n_items, d)`` float32 item factors."""

    def item_biases(self) -> np.ndarray | None:
        """``(n_items,)`` float32 item biases, or ``None`` when the model has none."""
        return None


class StoredFactors(FactorModel):
    r"""A factor model that keeps its factors as arrays: ``user_factors_`` :math:`W` (one row
    per training user), ``item_factors_`` :math:`H`, and folds histories in with ``fold_in``
    (iALS, BPR)."""

    user_factors_: np.ndarray
    item_factors_: np.ndarray

    @abstractmethod
    def fold_in(self, query: Query) -> np.ndarray:
        """The vectors of ad-hoc histories, solved against the item factors."""

    def user_vectors(self, query: Query) -> np.ndarray:
        """Known users' factors :math:`w_u`, or histories folded in (:meth:`fold_in`)."""
        if query.is_users:
            return self.user_factors_[query.user_codes]
        return self.fold_in(query)

    def item_vectors(self) -> np.ndarray:
        """The item factors :math:`H`."""
        return self.item_factors_


class ItemItemModel(ABC):
    r"""A model that scores a binary history :math:`x \in \{0,1\}^{|I|}` by :math:`\hat y = xW`
    with an item × item matrix :math:`W` (row: source item, column: target item)."""

    @abstractmethod
    def item_item_weights(self) -> np.ndarray | sp.csr_matrix | None:
        """:math:`W`, ``n_items × n_items`` (dense or CSR), or ``None`` when this fit does not
        score histories by :math:`xW` alone (e.g. a private fit that adds a popularity prior or
        keeps weights for a block of items only)."""


class SharedRanking(ABC):
    r"""A non-personalised model: every query, known user or ad-hoc history (empty or not),
    gets the same scores :math:`s(q, i) = p_i`, so each query's ranked list is one fixed order
    of the catalogue with the query's seen items left out."""

    @abstractmethod
    def shared_scores(self) -> np.ndarray:
        """``(n_items,)`` float32 :math:`p`: every row of ``model.score(query)``."""


class LocalDPCollection(ABC):
    """A model learned from reports randomised on the devices (local DP): its fit simulates
    a collection whose per-user ε (δ = 0) is known from the config before the fit."""

    @abstractmethod
    def collection_epsilon(self) -> float:
        """ε per user of the whole collection (δ = 0): what the fit spends from the ledger."""

    @abstractmethod
    def local_guarantee_record(self) -> dict[str, Any]:
        """The fitted collection's guarantee as JSON (for the training record)."""

    @abstractmethod
    def describe_collection(self) -> str:
        """The fitted collection's guarantee in plain words."""


class PlannedPrivateFit(ABC):
    """A model whose private fit's releases depend on the spec and the data's shape only.

    :meth:`planned_releases` returns, without reading any data, what ``fit`` with
    ``FitOptions(privacy=spec)`` on an ``n_users × n_items`` training set composes: the same
    releases (mechanism, noise multiplier, count, sampling rate) as the fitted model's
    ``privacy_guarantee_.composition``, in order. That is what lets a caller choose a budget
    from the plan without the choice depending on any user's data (tested for every model that
    declares it).
    """

    @abstractmethod
    def planned_releases(
        self, spec: PrivacySpec, n_users: int, n_items: int
    ) -> tuple[Release, ...]:
        """The releases of a private fit at the resolved ``spec`` on data of this shape."""


class StagedModel(ABC):
    """A model that fits and scores in named stages and times each of them."""

    @abstractmethod
    def stage_seconds(self) -> dict[str, float]:
        """Wall seconds per stage since the fit (``fit.*`` stages, then ``score.*`` stages)."""

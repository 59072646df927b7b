"""Federated matrix factorisation: the iALS model whose item factors were learned on devices."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.models._als_solvers import gramian, solve_exact
from privrank.models._fedmf_rounds import (
    FedMFClient,
    FedMFConfig,
    FedMFServer,
    full_participation_round,
)
from privrank.models.base import FitOptions, Query, Recommender, register
from privrank.models.capabilities import FactorModel
from privrank.privacy.mechanism import PrivacyGuarantee

__all__ = ["FedMF", "FedMFConfig"]


@register("fedmf")
class FedMF(Recommender, FactorModel):
    r"""Matrix factorisation on the iALS objective, trained by Federated Reconstruction
    (Singhal et al., NeurIPS 2021): item factors :math:`H` live on the server, each user's
    factor :math:`w_u` only on that user's device.

    The objective is the iALS one (:class:`~privrank.models.ials.IALS`), with
    :math:`\lambda_u = \lambda(|I_u| + \alpha_0|I|)^\nu`:

    .. math:: L(H) = \sum_u \min_{w}\Big(\lVert H_{I_u} w - 1\rVert^2 + \alpha_0 w^\top H^\top H w
              + \lambda_u\lVert w\rVert^2\Big) + \lambda\sum_i \max(n_i + \alpha_0|U|, 1)^\nu
              \lVert h_i\rVert^2,

    the item penalty's pairs floored at one so that every item's system is positive definite
    (it binds only for an item nobody holds when :math:`\alpha_0|U| < 1`;
    :class:`~privrank.models._fedmf_rounds.FedMFServer`).

    Training is Federated Reconstruction (:mod:`privrank.models._fedmf_rounds`): each device
    solves its :math:`w_u` in closed form and sends only the item-side update; the server takes
    a preconditioned step on :math:`H`. :meth:`fit` runs ``epochs`` rounds in which every user
    takes part (the reference run, in one process, with the same device and server code);
    :mod:`privrank.federated` runs it with sampled cohorts, DP-FedAvg, a ledger and Flower
    (``privrank federated train --model fedmf``), and builds the same model with
    :meth:`assemble`. Either way the result is an ordinary privrank model that saves, loads,
    evaluates and serves.

    **Scoring** always folds in: a history :math:`I_q` (sent by a device, or a training user's
    history kept in a non-release directory) is scored by :math:`w_q^\top H` with :math:`w_q`
    the exact ridge solution above, the same computation a device runs. No user factor is
    stored: :attr:`user_state_keys` is empty, and a release artifact holds :math:`H` and the
    popularity only.

    Attributes:
        item_factors_: :math:`H`, ``n_items × d`` float32.
        unobserved_weight_: The :math:`\alpha_0` the run used (the config's, or its rule's
            value from the released item counts; saved with the model).
    """

    Config = FedMFConfig
    config: FedMFConfig
    seeded = True
    trained_federated = True

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        counts = np.asarray(matrix.sum(axis=0), dtype=np.float64).ravel()
        cfg = self.config.resolved(counts, self.n_users_)
        self.unobserved_weight_ = cfg.alpha0
        client = FedMFClient(cfg, self.n_items_)
        server = FedMFServer(cfg, self.n_users_, counts, cfg.learning_rate)
        items = FedMFServer.initial_factors(cfg, self.n_items_, options.seed)
        histories = sp.csr_matrix(matrix)
        for epoch in range(1, cfg.epochs + 1):
            items, loss = full_participation_round(client, server, histories, items)
            self._report(epoch, cfg.epochs, loss)
        self.item_factors_ = items

    @classmethod
    def assemble(
        cls,
        config: FedMFConfig,
        train: Interactions,
        item_factors: np.ndarray,
        item_popularity: np.ndarray,
        guarantee: PrivacyGuarantee | None = None,
    ) -> FedMF:
        """The model of a finished federated run.

        Args:
            config: The objective's hyper-parameters, :math:`\\alpha_0` fixed as the run used it
                (:meth:`~privrank.models._fedmf_rounds.FedMFConfig.resolved`).
            train: The training interactions of the simulation (its id maps and histories are
                kept, as by any fit, to score training users and exclude their items; a
                release artifact drops them).
            item_factors: :math:`H` as released by the server (``n_items × d``).
            item_popularity: The cold-start scores the server released (``n_items``).
            guarantee: The run's privacy guarantee (``None`` for a non-private run).

        Raises:
            ConfigError: Arrays of the wrong shape or with non-finite values.
        """
        model = cls(config)
        model.unobserved_weight_ = config.alpha0
        d = config.factors
        if item_factors.shape != (train.n_items, d) or item_popularity.shape != (train.n_items,):
            raise ConfigError(
                f"fedmf: item factors {item_factors.shape} and popularity "
                f"{item_popularity.shape} do not fit {train.n_items} items and {d} factors"
            )
        model.adopt_training_data(train)
        model.item_popularity_ = np.asarray(item_popularity, dtype=np.float32)
        model.item_factors_ = np.ascontiguousarray(item_factors, dtype=np.float32)
        model.privacy_guarantee_ = guarantee
        model.is_release_ = False
        model._check_finite()
        return model

    def user_regularization(self, lengths: np.ndarray) -> np.ndarray:
        """:math:`\\lambda_u = \\lambda(|I_u| + \\alpha_0|I|)^\\nu` for history lengths
        ``lengths`` (float32)."""
        cfg = self.config
        base = lengths.astype(np.float64) + self.unobserved_weight_ * self.n_items_
        return (cfg.regularization * np.power(base, cfg.regularization_exponent)).astype(np.float32)

    def fold_in(self, histories: Query) -> np.ndarray:
        """User factors of histories, solved exactly with :math:`H` fixed (a device's solve).

        Returns:
            ``(n_queries, d)`` float32; zero rows for empty histories.
        """
        self._require_fitted()
        query = self._checked_query(histories)
        if query.user_codes is not None:
            query = self._training_histories(query.user_codes)
        rows = query.to_csr(self.n_items_)
        items = self.item_factors_
        regularization = self.user_regularization(np.diff(rows.indptr))
        return solve_exact(rows, items, gramian(items), regularization, self.unobserved_weight_)

    def user_vectors(self, query: Query) -> np.ndarray:
        """Every query folded in (known users through their training histories)."""
        return self.fold_in(query)

    def item_vectors(self) -> np.ndarray:
        """:math:`H`."""
        return self.item_factors_

    def _score_histories(self, histories: Query) -> np.ndarray:
        return self.fold_in(histories) @ self.item_factors_.T

    def _score_users(self, user_codes: np.ndarray) -> np.ndarray:
        return self.fold_in(Query.users(user_codes)) @ self.item_factors_.T

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "item_factors": self.item_factors_,
            "unobserved_weight": np.asarray([self.unobserved_weight_], dtype=np.float64),
        }

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        items = state["item_factors"]
        if items.shape != (self.n_items_, self.config.factors):
            raise ValueError(
                f"item factors have shape {items.shape}, expected "
                f"({self.n_items_}, {self.config.factors})"
            )
        self.item_factors_ = items
        # Models saved before α₀ had a rule carry it in their config.
        saved = state.get("unobserved_weight")
        self.unobserved_weight_ = float(saved[0]) if saved is not None else self.config.alpha0

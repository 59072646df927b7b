"""iALS: implicit alternating least squares with the regularisation of Rendle et al. (2022)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import scipy.sparse as sp
import threadpoolctl
from pydantic import Field

from privrank.data.interactions import Interactions
from privrank.models._als_solvers import (
    gramian,
    ials_objective,
    row_objectives,
    solve_cg,
    solve_exact,
)
from privrank.models.base import FitOptions, ModelConfig, Query, Recommender, register

__all__ = ["IALS", "IALSConfig"]


class IALSConfig(ModelConfig):
    """Hyper-parameters of :class:`IALS`.

    Attributes:
        factors: Embedding dimension :math:`d`.
        epochs: Alternating passes (each solves all items, then all users).
        regularization: :math:`\\lambda`, the L2 weight. The defaults (0.03 with
            :math:`\\nu = 1`, :math:`\\alpha_0 = 0.1`, 64 factors) were chosen on a validation
            split of ML-100K; tune them for other data.
        regularization_exponent: :math:`\\nu`, how the L2 weight scales with frequency
            (0: plain L2; 1: proportional to the number of loss terms of the row).
        unobserved_weight: :math:`\\alpha_0`, the weight of every (user, item) pair pulled
            towards 0.
        init_std: Initial factors are drawn from :math:`\\mathcal N(0, (\\sigma/\\sqrt d)^2)`.
        solver: ``cholesky`` solves each least-squares problem exactly
            (:math:`O(|I_r| d^2 + d^3)` per row); ``cg`` takes ``cg_steps`` conjugate-gradient
            steps warm-started at the previous epoch's factors (:math:`O(|I_r| d + d^2)` per
            step, much cheaper per epoch). With either, the last user pass is exact.
        cg_steps: Conjugate-gradient steps per solve (``solver="cg"`` only).
    """

    factors: int = Field(64, ge=1)
    epochs: int = Field(16, ge=1)
    regularization: float = Field(0.03, gt=0)
    regularization_exponent: float = Field(1.0, ge=0)
    unobserved_weight: float = Field(0.1, ge=0)
    init_std: float = Field(0.1, gt=0)
    solver: Literal["cholesky", "cg"] = "cholesky"
    cg_steps: int = Field(3, ge=1)


@register("ials")
class IALS(Recommender):
    r"""Matrix factorisation learned by implicit alternating least squares (Hu, Koren and
    Volinsky 2008), with the frequency-scaled regularisation of Rendle, Krichene, Zhang and
    Koren, "Revisiting the Performance of iALS on Item Recommendation Benchmarks" (RecSys 2022).

    A user :math:`u` and an item :math:`i` get embeddings :math:`w_u, h_i \in \mathbb R^d`
    and the score :math:`\hat y_{ui} = \langle w_u, h_i\rangle`. With :math:`S` the observed
    (user, item) pairs, :math:`I_u` the items of user :math:`u` and :math:`U_i` the users of
    item :math:`i`, training minimises

    .. math::

        L(W, H) = \sum_{(u,i)\in S} (\hat y_{ui} - 1)^2
                  + \alpha_0 \sum_{u\in U}\sum_{i\in I} \hat y_{ui}^2
                  + \lambda \Big(\sum_u (|I_u| + \alpha_0 |I|)^{\nu} \lVert w_u\rVert^2
                  + \sum_i (|U_i| + \alpha_0 |U|)^{\nu} \lVert h_i\rVert^2\Big)

    (:math:`\alpha_0` = ``unobserved_weight``, :math:`\lambda` = ``regularization``,
    :math:`\nu` = ``regularization_exponent``). The second term spans *all* pairs, observed ones
    included, and is computed through the Gramian: :math:`\sum_{u,i}\hat y_{ui}^2 =
    \langle W^\top W, H^\top H\rangle_F`. Each half-step is a ridge regression per row, solved
    exactly:

    .. math:: w_u = \big(\alpha_0 H^\top H + H_{I_u}^\top H_{I_u}
              + \lambda(|I_u| + \alpha_0|I|)^{\nu} I\big)^{-1} H_{I_u}^\top \mathbf 1

    and symmetrically for :math:`h_i`, so :math:`L` never increases. With ``solver="cg"``
    each row instead takes a few conjugate-gradient steps towards that solution from its
    current value (Takács, Pilászy and Tikk 2011), which also never increases :math:`L`.
    Each epoch solves items then users, and the final user pass is always exact, so the stored
    user factors are the exact solution for the final item factors. The row solves run in
    compiled code (numba), in parallel over rows on ``FitOptions.threads`` threads; the
    result does not depend on the thread count.
    **Fold-in**: an ad-hoc history is scored by solving the same equation for its :math:`w`
    with :math:`H` fixed — for a training user's history this reproduces the training-time
    factor, hence the training-time scores.

    Attributes:
        user_factors_: :math:`W`, ``n_users × d`` float32.
        item_factors_: :math:`H`, ``n_items × d`` float32.
        loss_history_: :math:`L` after each epoch (float64).
    """

    Config = IALSConfig
    seeded = True

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        cfg = self.config
        d = cfg.factors
        threads = options.resolved_threads()
        rng = np.random.default_rng(options.seed)
        scale = np.float32(cfg.init_std / math.sqrt(d))
        users = rng.standard_normal((self.n_users_, d), dtype=np.float32) * scale
        items = rng.standard_normal((self.n_items_, d), dtype=np.float32) * scale
        by_item = sp.csr_matrix(matrix.T)
        user_reg = self._row_regularization(np.diff(matrix.indptr), self.n_items_)
        item_reg = self._row_regularization(np.diff(by_item.indptr), self.n_users_)
        losses: list[float] = []
        # BLAS only computes the Gramians; its idle worker threads would spin on the cores
        # the kernels' threads use, so it runs single-threaded (as implicit's fit does).
        with threadpoolctl.threadpool_limits(1, "blas"):
            for epoch in range(1, cfg.epochs + 1):
                items, _ = self._solve(by_item, users, item_reg, items, threads, exact=False)
                users, rows = self._solve(
                    matrix, items, user_reg, users, threads, exact=epoch == cfg.epochs, loss=True
                )
                losses.append(ials_objective(rows, items, item_reg))
                self._report(epoch, cfg.epochs, losses[-1])
        self.user_factors_ = users
        self.item_factors_ = items
        self.loss_history_ = np.asarray(losses, dtype=np.float64)

    def _solve(
        self,
        matrix: sp.csr_matrix,
        other: np.ndarray,
        regularization: np.ndarray,
        current: np.ndarray,
        threads: int,
        exact: bool,
        loss: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One half-step: every row of ``matrix`` solved with ``other`` fixed (exactly when
        ``exact`` or ``solver="cholesky"``), and, with ``loss``, each row's objective."""
        cfg = self.config
        alpha0 = cfg.unobserved_weight
        gram = gramian(other)
        if cfg.solver == "cg" and not exact:
            solved, rows = solve_cg(
                matrix, other, gram, regularization, alpha0, current, cfg.cg_steps, threads, loss
            )
        else:
            solved = solve_exact(matrix, other, gram, regularization, alpha0, threads)
            rows = None
            if loss:
                rows = row_objectives(matrix, solved, other, gram, regularization, alpha0, threads)
        return solved, rows

    def _row_regularization(self, counts: np.ndarray, n_other: int) -> np.ndarray:
        cfg = self.config
        base = counts.astype(np.float64) + cfg.unobserved_weight * n_other
        values = cfg.regularization * np.power(base, cfg.regularization_exponent)
        return values.astype(np.float32)

    def fold_in(self, histories: Query) -> np.ndarray:
        """User factors for ad-hoc histories, solved exactly with the item factors fixed.

        This is the computation of the final training pass, so a training user's history
        reproduces their training-time factor (for either solver).

        Returns:
            ``(n_queries, d)`` float32; zero rows for empty histories.
        """
        self._require_fitted()
        query = self._checked_query(histories)
        if query.is_users:
            query = self._training_histories(query.user_codes)
        rows = query.to_csr(self.n_items_)
        items = self.item_factors_
        regularization = self._row_regularization(np.diff(rows.indptr), self.n_items_)
        return solve_exact(
            rows, items, gramian(items), regularization, self.config.unobserved_weight
        )

    def _score_histories(self, histories: Query) -> np.ndarray:
        return self.fold_in(histories) @ self.item_factors_.T

    def _score_users(self, user_codes: np.ndarray) -> np.ndarray:
        return self.user_factors_[user_codes] @ self.item_factors_.T

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "user_factors": self.user_factors_,
            "item_factors": self.item_factors_,
            "loss_history": self.loss_history_,
        }

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        d = self.config.factors
        users, items = state["user_factors"], state["item_factors"]
        if users.shape != (self.n_users_, d) or items.shape != (self.n_items_, d):
            raise ValueError(
                f"factors have shapes {users.shape} and {items.shape}, expected "
                f"({self.n_users_}, {d}) and ({self.n_items_}, {d})"
            )
        self.user_factors_ = users
        self.item_factors_ = items
        self.loss_history_ = state["loss_history"]

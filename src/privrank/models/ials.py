"""iALS: implicit alternating least squares with the regularisation of Rendle et al. (2022)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import threadpoolctl
from pydantic import Field

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError, WorkerLostError
from privrank.models._als_blocks import LocalALSBlocks
from privrank.models._als_solvers import gramian, ials_objective, solve_exact
from privrank.models._checkpoint import (
    Checkpoint,
    checkpoint_path,
    matrix_digest,
    read_checkpoint,
    write_checkpoint,
)
from privrank.models._torch_training import ValidationSet
from privrank.models.base import FitOptions, ModelConfig, Query, Recommender, register
from privrank.models.capabilities import StoredFactors
from privrank.models.engine import ALSEngine, ALSProblem
from privrank.privacy.spec import PrivacySpec

__all__ = ["IALS", "IALSConfig", "IALSPrivateConfig"]


class IALSPrivateConfig(ModelConfig):
    """Settings of a private iALS fit (DP-iALS), the ``private`` block of :class:`IALSConfig`.

    Attributes:
        factors: :math:`d` (used instead of the config's ``factors``).
        epochs: :math:`T`, the ALS iterations; each one is a noisy
            release, and the privacy budget is split over all :math:`T` of them.
        regularization: :math:`\\lambda`.
        unobserved_weight: :math:`\\alpha_0`.
        item_grams: Release each item's Gramian :math:`A_j = \\sum_{u\\in U_j}
            w_u w_u^\\top` (noisy); otherwise (the default, better on ML-100K)
            it is estimated from the released users' Gramian as :math:`(\\tilde n_j/|U|)\\,
            \\tilde G` and the release's sensitivity is smaller.
        count_weight: :math:`\\gamma`, the weight of the item-count coordinate of each
            release (a larger weight: more accurate counts, noisier factors).
        min_count: Keep only items whose noisy count is at least this
            many standard deviations of its noise; the others get zero factors.
        normalize: Scale every user factor to the clipping norm :math:`C` before it
            enters a release (maximises the signal per unit of sensitivity; set
            ``False`` to release the factors as solved, clipped to :math:`C`).
        weighted_bound: :math:`c'`: a user with :math:`k > c'` of
            the (at most :math:`c`) items the spec's bound keeps enters the per-item
            statistics with weight :math:`\\sqrt{c'/k}` instead of 1, so the sensitivity is
            that of :math:`\\min(c, c')` items while heavy users still contribute all their
            items (``None``: weight 1 for everyone).

    The defaults (12 factors, 2 iterations, :math:`\\lambda = \\alpha_0 = 0.3`,
    :math:`c' = 30`) were chosen on a validation split carved from the ML-100K holdout
    training part at ε = 8, C = 1 and spec bounds c ∈ {50, 100, 200}; tune them for other
    data.
    """

    factors: int = Field(12, ge=1)
    epochs: int = Field(2, ge=1)
    regularization: float = Field(0.3, gt=0)
    unobserved_weight: float = Field(0.3, ge=0)
    item_grams: bool = False
    count_weight: float = Field(1.0, gt=0)
    min_count: float = Field(2.0, ge=0)
    normalize: bool = True
    weighted_bound: int | None = Field(30, ge=1)


class IALSConfig(ModelConfig):
    """Hyper-parameters of :class:`IALS`.

    Attributes:
        factors: Embedding dimension :math:`d`.
        epochs: Alternating passes (each solves all items, then all users).
        regularization: :math:`\\lambda`, the L2 weight. The defaults (:math:`\\lambda =
            0.03`, :math:`\\nu = 1`, the rule :math:`\\rho = 4` for :math:`\\alpha_0`, 64
            factors) were chosen on validation parts carved from the training data of
            ML-100K, Amazon Beauty, Amazon Video and synthetic data of several sizes and
            densities (BENCHMARKS.md, "Defaults that generalise").
        regularization_exponent: :math:`\\nu`, how the L2 weight scales with frequency
            (0: plain L2; 1: proportional to the number of loss terms of the row).
        unobserved_weight: :math:`\\alpha_0`, the weight of every (user, item) pair pulled
            towards 0; ``None`` (the default): the rule of the data
            :math:`\\alpha_0 = \\rho\\,|S|/(|U|\\,|I|)` (:math:`\\rho` =
            ``unobserved_ratio``, :math:`|S|/(|U||I|)` the training matrix's density), so that
            an average user's unobserved pairs weigh :math:`\\alpha_0|I| = \\rho\\,|S|/|U|`
            in all, :math:`\\rho` times their observed pairs, whatever the catalogue size. A
            constant :math:`\\alpha_0` does not carry over: 0.1 suits ML-100K (density 5%), but
            on Amazon Beauty (density 0.06%) it drowns each user's few observed pairs in the
            unobserved ones and the model falls below most-popular.
        unobserved_ratio: :math:`\\rho` of that rule (used when ``unobserved_weight`` is
            ``None``).
        init_std: Initial factors are drawn from :math:`\\mathcal N(0, (\\sigma/\\sqrt d)^2)`.
        solver: ``cholesky`` solves each least-squares problem exactly
            (:math:`O(|I_r| d^2 + d^3)` per row); ``cg`` takes ``cg_steps`` conjugate-gradient
            steps warm-started at the previous epoch's factors (:math:`O(|I_r| d + d^2)` per
            step, much cheaper per epoch). With either, the last user pass is exact.
        cg_steps: Conjugate-gradient steps per solve (``solver="cg"`` only).
        private: Settings of a private fit (DP-iALS, :class:`IALSPrivateConfig`); ``None``:
            its defaults when the fit has a privacy spec. Refused by a fit without one.
    """

    factors: int = Field(64, ge=1)
    epochs: int = Field(16, ge=1)
    regularization: float = Field(0.03, gt=0)
    regularization_exponent: float = Field(1.0, ge=0)
    unobserved_weight: float | None = Field(None, ge=0)
    unobserved_ratio: float = Field(4.0, gt=0)
    init_std: float = Field(0.1, gt=0)
    solver: Literal["cholesky", "cg"] = "cholesky"
    cg_steps: int = Field(3, ge=1)
    private: IALSPrivateConfig | None = None


def _factor_scores(users: np.ndarray, items: np.ndarray) -> Callable[[np.ndarray, Any], np.ndarray]:
    """Scores ``W[codes] H^T`` of the current factors, for a validation pass."""

    def score(codes: np.ndarray, _histories: Any) -> np.ndarray:
        return users[codes] @ items.T

    return score


@register("ials")
class IALS(Recommender, StoredFactors):
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

    **Differential privacy** (``FitOptions(privacy=spec)``, DP-iALS; Chien et al., "Private
    Alternating Least Squares", ICML 2021), in the billboard model of joint DP: the item
    factors are computed only from noisy item-side statistics, and each user's factor only
    from that user's own history and the item factors. The fit starts from public random item
    factors :math:`H_0`; each user solves :math:`w_u` from them; then for :math:`t = 1..T`
    (``private.epochs``): the user factors, scaled to norm :math:`C` (``private.normalize``;
    in any case clipped to :math:`C`, the spec's ``clipping_norm``), enter one Gaussian
    release of :math:`G = \sum_u w_u w_u^\top`, and per item :math:`b_j = \sum_{u\in U_j}
    w_u`, :math:`\gamma n_j` (and :math:`A_j = \sum_{u\in U_j} w_u w_u^\top` with
    ``private.item_grams``) over the contribution-bounded data (at most :math:`c` items per
    user; a user with :math:`k > c'` items weighted by :math:`\sqrt{c'/k}` in the per-item
    sums, ``private.weighted_bound``), with L2 sensitivity
    :math:`\Delta = \sqrt{C^4 + \min(c, c')(C^4[A] + C^2 + \gamma^2)}`
    (:class:`~privrank.privacy.dp_als.PrivateALSMechanism`); the item factors are
    post-processed from it,

    .. math:: h_j = \big(\alpha_0 \tilde G_+ + \tilde A_{j} + \lambda(\bar n_j +
              \alpha_0 |U|)^{\nu} I\big)^{-1} \tilde b_j

    (:math:`\tilde G_+`: the noisy :math:`G` projected onto the PSD cone; :math:`\tilde A_j`:
    the projected noisy :math:`A_j`, or :math:`(\bar n_j/|U|)\tilde G_+` without
    ``private.item_grams``; :math:`\bar n_j`: the mean of the noisy counts released so far,
    clipped at 0), items whose :math:`\bar n_j` is below ``private.min_count`` noise standard
    deviations get :math:`h_j = 0`, and each user solves :math:`w_u` from :math:`H` and their
    whole training history exactly as above. The :math:`T` releases compose (PLD accounting)
    to user-level (ε, δ)-DP for the spec's ε and δ; the cold-start popularity is the mean of
    the :math:`T` noisy (weighted) counts, clipped at 0 (post-processing). The exact training
    loss is never computed (it would depend on every user): ``loss_history_`` is empty after a
    private fit. Without noise (a test-only switch), with ``private.item_grams``, without
    ``private.normalize`` and ``private.weighted_bound``, with a huge clipping norm and a bound
    no user exceeds, this is iALS started from :math:`H_0` (users first).

    Attributes:
        user_factors_: :math:`W`, ``n_users × d`` float32.
        item_factors_: :math:`H`, ``n_items × d`` float32.
        loss_history_: :math:`L` after each epoch (float64; empty after a private fit).
        unobserved_weight_: The :math:`\alpha_0` the fit used (the config's, the rule's, or
            ``private.unobserved_weight`` after a private fit).
        privacy_guarantee_: The guarantee of a private fit (``None`` otherwise).
    """

    Config = IALSConfig
    config: IALSConfig
    PrivateConfig = IALSPrivateConfig
    seeded = True
    supports_privacy = True
    supports_engine = True
    supports_private_engine = False
    supports_checkpoints = True
    user_state_keys = ("user_factors",)

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        cfg = self.config
        self.unobserved_weight_ = self.resolve_unobserved_weight(cfg, matrix)
        threads = options.resolved_threads()
        by_item = sp.csr_matrix(matrix.T)
        problem = ALSProblem(
            by_user=matrix,
            by_item=by_item,
            user_regularization=self._row_regularization(np.diff(matrix.indptr), self.n_items_),
            item_regularization=self._row_regularization(np.diff(by_item.indptr), self.n_users_),
            unobserved_weight=self.unobserved_weight_,
            cg_steps=cfg.cg_steps if cfg.solver == "cg" else None,
            factors=cfg.factors,
        )
        store = _EpochStore(self, matrix, options)
        watched = self._watched_validation(options)
        engine = options.engine
        if engine is not None and not isinstance(engine, ALSEngine):
            raise ConfigError(f"the {engine.name!r} engine cannot run iALS half-steps")
        blocks = LocalALSBlocks(problem, threads) if engine is None else engine.als_blocks(problem)
        self.recoveries_ = 0
        state = store.start()
        self.resumed_from_epoch_ = state.epoch if state.epoch > 0 else None
        failures = 0
        # BLAS only computes the Gramians; its idle worker threads would spin on the cores
        # the kernels' threads use, so it runs single-threaded (as implicit's fit does).
        try:
            with threadpoolctl.threadpool_limits(1, "blas"):
                while state.epoch < cfg.epochs:
                    epoch = state.epoch + 1
                    try:
                        items, _ = blocks.solve("items", state.users, state.items, False, False)
                        users, rows = blocks.solve(
                            "users", items, state.users, epoch == cfg.epochs, True
                        )
                    except WorkerLostError:
                        # The engine restarted the worker; the epoch's work is lost: resume
                        # from the last checkpoint (the same state, so the same result).
                        failures += 1
                        self.recoveries_ += 1
                        if failures > _MAX_CONSECUTIVE_RECOVERIES:
                            raise
                        state = store.restore()
                        continue
                    failures = 0
                    if rows is None:  # pragma: no cover - solve returns them when asked
                        raise RuntimeError("iALS: the users' row objectives were not computed")
                    loss = ials_objective(rows, items, problem.item_regularization)
                    state = _EpochState(epoch, users, items, [*state.losses, loss])
                    store.save(state)
                    metrics = {}
                    if watched is not None:  # the current iterate's ranking of validation items
                        metrics = watched.evaluate(_factor_scores(users, items))
                    self._report(epoch, cfg.epochs, loss, **metrics)
        finally:
            blocks.close()
        self.user_factors_ = state.users
        self.item_factors_ = state.items
        self.loss_history_ = np.asarray(state.losses, dtype=np.float64)

    def initial_factors(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The fit's starting ``(W, H)``: :math:`\\mathcal N(0, (\\sigma/\\sqrt d)^2)` draws
        from ``seed`` (users first), float32."""
        d = self.config.factors
        rng = np.random.default_rng(seed)
        scale = np.float32(self.config.init_std / math.sqrt(d))
        users = rng.standard_normal((self.n_users_, d), dtype=np.float32) * scale
        items = rng.standard_normal((self.n_items_, d), dtype=np.float32) * scale
        return users, items

    def _watched_validation(self, options: FitOptions) -> ValidationSet | None:
        """The validation part whose NDCG@10 and HR@10 each epoch reports, or ``None``.

        Only when someone listens (a progress callback) and a validation part is given: the
        metrics are shown, not used (iALS does not stop early), so a fit nobody watches does
        not pay for them.
        """
        if options.progress is None or options.validation is None:
            return None
        return ValidationSet.build(
            options.validation,
            self.history_indptr_,
            self.history_items_,
            self.n_users_,
            self.n_items_,
        )

    def _fit_private(
        self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions, spec: PrivacySpec
    ) -> None:
        from privrank.privacy.dp_als import PrivateALSMechanism

        cfg, private = self.config, self.private_settings(IALSPrivateConfig)
        mechanism = PrivateALSMechanism(
            spec,
            releases=private.epochs,
            item_grams=private.item_grams,
            count_weight=private.count_weight,
            n_users=self.n_users_,
            weighted_bound=private.weighted_bound,
        )
        # Set first: the private hyper-parameters (factors, λ, α₀) apply from here on.
        self.privacy_guarantee_ = mechanism.guarantee
        self.unobserved_weight_ = private.unobserved_weight  # a setting, not read from the data
        d, _, alpha0 = self._hyper_parameters()
        threads = options.resolved_threads()
        rng = np.random.default_rng(options.seed)
        items = rng.standard_normal((self.n_items_, d), dtype=np.float32)
        items *= np.float32(cfg.init_std / math.sqrt(d))
        noise = spec.noise_generator()
        # A user's factor is their own computation: from their whole training history.
        own = self._training_matrix()
        user_reg = self._row_regularization(np.diff(own.indptr), self.n_items_)
        count_sum = np.zeros(self.n_items_, dtype=np.float64)
        with threadpoolctl.threadpool_limits(1, "blas"):
            users = solve_exact(own, items, gramian(items), user_reg, alpha0, threads)
            for epoch in range(1, private.epochs + 1):
                shared = users
                if private.normalize:
                    norms = np.linalg.norm(users.astype(np.float64), axis=1, keepdims=True)
                    shared = users * (spec.clipping_norm / np.maximum(norms, 1e-30))
                release = mechanism.release(matrix, shared, noise)
                count_sum += release.item_counts
                items = self._items_from_release(release, count_sum / epoch, epoch, mechanism)
                users = solve_exact(own, items, gramian(items), user_reg, alpha0, threads)
                self._report(epoch, private.epochs)
        self.user_factors_ = users
        self.item_factors_ = items
        self.loss_history_ = np.zeros(0, dtype=np.float64)
        self.item_popularity_ = np.maximum(count_sum / private.epochs, 0.0).astype(np.float32)

    def _items_from_release(
        self, release: Any, mean_counts: np.ndarray, epoch: int, mechanism: Any
    ) -> np.ndarray:
        """Item factors from one noisy release (post-processing; see the class docstring)."""
        cfg, private = self.config, self.private_settings(IALSPrivateConfig)
        d, regularization, alpha0 = self._hyper_parameters()
        counts = np.maximum(mean_counts, 0.0)
        # The mean of ``epoch`` noisy counts, each with noise σ/γ.
        count_std = release.noise_std / mechanism.count_weight / math.sqrt(epoch)
        keep = np.flatnonzero((counts > 0) & (counts >= private.min_count * count_std))
        gram = _psd_projection(release.gram)
        if release.item_grams is not None:
            grams = _psd_projection(release.item_grams[keep])
        else:
            grams = (counts[keep] / self.n_users_)[:, None, None] * gram
        system = alpha0 * gram + grams
        base = counts[keep] + alpha0 * self.n_users_
        diagonal = np.arange(d)
        system[:, diagonal, diagonal] += (
            regularization * np.power(base, cfg.regularization_exponent)
        )[:, None]
        solved = np.linalg.solve(system, release.item_sums[keep][..., None])[..., 0]
        items = np.zeros((self.n_items_, d), dtype=np.float32)
        items[keep] = solved
        return items

    @staticmethod
    def resolve_unobserved_weight(config: IALSConfig, matrix: sp.spmatrix) -> float:
        """:math:`\\alpha_0` of a non-private fit of ``config`` on the binary training
        ``matrix``: ``config.unobserved_weight``, or the rule
        :math:`\\rho\\,|S|/(|U|\\,|I|)` when it is ``None`` (see :class:`IALSConfig`)."""
        if config.unobserved_weight is not None:
            return float(config.unobserved_weight)
        cells = max(matrix.shape[0] * matrix.shape[1], 1)
        return float(config.unobserved_ratio * matrix.nnz / cells)

    def _hyper_parameters(self) -> tuple[int, float, float]:
        """``(d, λ, α₀)``: the ``private`` ones for a private fit, else the plain ones."""
        cfg = self.config
        if getattr(self, "privacy_guarantee_", None) is not None:
            private = self.private_settings(IALSPrivateConfig)
            return private.factors, private.regularization, private.unobserved_weight
        return cfg.factors, cfg.regularization, self.unobserved_weight_

    def _row_regularization(self, counts: np.ndarray, n_other: int) -> np.ndarray:
        _, regularization, alpha0 = self._hyper_parameters()
        base = counts.astype(np.float64) + alpha0 * n_other
        values = regularization * np.power(base, self.config.regularization_exponent)
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
        if query.user_codes is not None:
            query = self._training_histories(query.user_codes)
        rows = query.to_csr(self.n_items_)
        items = self.item_factors_
        regularization = self._row_regularization(np.diff(rows.indptr), self.n_items_)
        return solve_exact(rows, items, gramian(items), regularization, self._hyper_parameters()[2])

    def _score_histories(self, histories: Query) -> np.ndarray:
        return self.fold_in(histories) @ self.item_factors_.T

    def _score_users(self, user_codes: np.ndarray) -> np.ndarray:
        return self.user_factors_[user_codes] @ self.item_factors_.T

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "user_factors": self.user_factors_,
            "item_factors": self.item_factors_,
            "loss_history": self.loss_history_,
            "unobserved_weight": np.asarray([self.unobserved_weight_], dtype=np.float64),
        }

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        if "unobserved_weight" in state:
            self.unobserved_weight_ = float(np.asarray(state["unobserved_weight"]).reshape(-1)[0])
        elif self.privacy_guarantee_ is not None:  # saved before α₀ was stored
            self.unobserved_weight_ = self.private_settings(IALSPrivateConfig).unobserved_weight
        elif self.config.unobserved_weight is not None:
            self.unobserved_weight_ = self.config.unobserved_weight
        else:
            raise ValueError("no unobserved_weight: neither stored nor in the config")
        d = self._hyper_parameters()[0]
        users, items = state["user_factors"], state["item_factors"]
        if users.shape != (self.n_users_, d) or items.shape != (self.n_items_, d):
            raise ValueError(
                f"factors have shapes {users.shape} and {items.shape}, expected "
                f"({self.n_users_}, {d}) and ({self.n_items_}, {d})"
            )
        self.user_factors_ = users
        self.item_factors_ = items
        self.loss_history_ = state["loss_history"]


def _psd_projection(matrices: np.ndarray) -> np.ndarray:
    """Symmetric ``(..., d, d)`` matrices projected onto the PSD cone (negative eigenvalues
    set to 0), float64."""
    values, vectors = np.linalg.eigh(matrices)
    out = (vectors * np.maximum(values, 0.0)[..., None, :]) @ np.swapaxes(vectors, -1, -2)
    return (out + np.swapaxes(out, -1, -2)) / 2.0


# A worker lost this many times in a row (without a completed epoch between) ends the fit.
_MAX_CONSECUTIVE_RECOVERIES = 3


@dataclass(frozen=True)
class _EpochState:
    """The factors and losses after ``epoch`` epochs (0: the initial draw)."""

    epoch: int
    users: np.ndarray
    items: np.ndarray
    losses: list[float]


class _EpochStore:
    """Where a fit's epochs start from: the initial draw, or the checkpoint of the same fit in
    ``options.checkpoint_dir`` (written after each epoch; see :mod:`privrank.models._checkpoint`).
    """

    def __init__(self, model: IALS, matrix: sp.csr_matrix, options: FitOptions) -> None:
        self._model = model
        self._seed = options.seed
        self._path = (
            None
            if options.checkpoint_dir is None
            else checkpoint_path(options.checkpoint_dir, model.name)
        )
        self._identity = {
            "model": model.name,
            "config": model.config.model_dump(mode="json"),
            "seed": options.seed,
            "training_matrix_sha256": matrix_digest(matrix),
            "unobserved_weight": model.unobserved_weight_,
        }
        self._last: _EpochState | None = None

    def start(self) -> _EpochState:
        """The checkpoint of this fit when there is one, else the initial draw."""
        return self.restore()

    def restore(self) -> _EpochState:
        """The last checkpoint of this fit (checksum verified; without a checkpoint directory
        the last state saved in memory), else the initial draw."""
        if self._path is None:
            if self._last is not None:
                return self._last
            found = None
        else:
            found = read_checkpoint(self._path)
        if found is None or found.identity != self._identity:
            users, items = self._model.initial_factors(self._seed)
            return _EpochState(0, users, items, [])
        arrays = found.arrays
        return _EpochState(
            found.epoch,
            arrays["user_factors"],
            arrays["item_factors"],
            [float(v) for v in arrays["loss_history"]],
        )

    def save(self, state: _EpochState) -> None:
        """Checkpoint ``state`` (to the checkpoint directory, or in memory without one)."""
        if self._path is None:
            self._last = state
            return
        arrays = {
            "user_factors": state.users,
            "item_factors": state.items,
            "loss_history": np.asarray(state.losses, dtype=np.float64),
        }
        write_checkpoint(self._path, Checkpoint(state.epoch, self._identity, arrays))

"""implicit's ALS and BPR as peer models behind the privrank contract.

They train on the same binary matrix, with the same seed and thread count, as privrank's own
models, so benchmarks compare like with like. ``implicit`` is an optional dependency (the
``peers`` extra); it is imported only when a peer is fitted or used.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from contextlib import contextmanager
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.models.base import FitOptions, ModelConfig, Query, Recommender, register

__all__ = ["ImplicitALS", "ImplicitALSConfig", "ImplicitBPR", "ImplicitBPRConfig"]


def _implicit() -> Any:
    try:
        import implicit
        import implicit.cpu.als
        import implicit.cpu.bpr
    except ImportError as exc:
        raise ConfigError(
            "The implicit peers need the 'implicit' package: pip install 'privrank[peers]'"
        ) from exc
    return implicit


@contextmanager
def _single_threaded_blas():
    """implicit asks for a single-threaded BLAS (its own OpenMP pool does the parallel work)."""
    import threadpoolctl

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*threads.*", category=RuntimeWarning)
        with threadpoolctl.threadpool_limits(1, "blas"):
            yield


class _ImplicitMF(Recommender):
    """Shared scoring and persistence of implicit's matrix-factorisation models."""

    seeded = True

    def _score_users(self, user_codes: np.ndarray) -> np.ndarray:
        return self.user_factors_[user_codes] @ self.item_factors_.T

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        users, items = state["user_factors"], state["item_factors"]
        width = self._width()
        if users.shape != (self.n_users_, width) or items.shape != (self.n_items_, width):
            raise ValueError(f"factors have shapes {users.shape} and {items.shape}")
        self.user_factors_ = users
        self.item_factors_ = items

    @abstractmethod
    def _width(self) -> int:
        """Columns of the stored factors."""

    def _keep_factors(self, model: Any) -> None:
        """Store a fitted implicit model's factors as contiguous float32 arrays."""
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)

    def _artifact_info(self) -> dict[str, Any]:
        return {"implicit_version": _implicit().__version__}

    def _als_callback(self, epochs: int):
        def callback(iteration: int, elapsed: float, loss: float | None) -> None:
            self._report(iteration + 1, epochs, loss)

        return callback

    def _bpr_callback(self, epochs: int, samples: int):
        def callback(iteration: int, elapsed: float, correct: int, skipped: int) -> None:
            # implicit's training "accuracy": sampled triples already ranked right.
            self._report(
                iteration + 1, epochs, correct_fraction=correct / max(samples - skipped, 1)
            )

        return callback


class ImplicitALSConfig(ModelConfig):
    """Hyper-parameters passed to ``implicit.cpu.als.AlternatingLeastSquares``.

    Attributes:
        factors: Embedding dimension.
        regularization: L2 weight :math:`\\lambda` (same for every user and item).
        alpha: Confidence of an observed pair, :math:`c = \\alpha`.
        iterations: ALS epochs.
        use_cg: Conjugate-gradient solves (implicit's default) rather than Cholesky.
    """

    factors: int = Field(64, ge=1)
    regularization: float = Field(0.01, ge=0)
    alpha: float = Field(1.0, gt=0)
    iterations: int = Field(15, ge=1)
    use_cg: bool = True


@register("implicit-als")
class ImplicitALS(_ImplicitMF):
    r"""implicit's ALS (Hu, Koren and Volinsky 2008; CG solver of Takács et al. 2011), as a peer.

    On the binary matrix, with confidence :math:`c = \alpha` on observed pairs, it minimises

    .. math:: \sum_{(u,i)\in S} c\,(1 - \hat y_{ui})^2 + \sum_{(u,i)\notin S} \hat y_{ui}^2
              + \lambda\big(\lVert W\rVert_F^2 + \lVert H\rVert_F^2\big),
              \qquad \hat y_{ui} = \langle w_u, h_i\rangle.

    Fold-in uses implicit's ``recalculate_user`` (an exact solve with :math:`H` fixed). It does
    *not* reproduce the training-time user factors: implicit solves users before items in each
    epoch (and by CG), so its stored user factors lag the final item factors by one half-step.

    Attributes:
        user_factors_: ``n_users × factors`` float32.
        item_factors_: ``n_items × factors`` float32.
    """

    Config = ImplicitALSConfig
    config: ImplicitALSConfig
    fold_in_matches_training = False

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        with _single_threaded_blas():
            model = self._implicit_model(
                num_threads=options.resolved_threads(), random_state=options.seed
            )
            callback = self._als_callback(self.config.iterations)
            model.fit(matrix, show_progress=False, callback=callback)
        self._keep_factors(model)

    def _width(self) -> int:
        return self.config.factors

    def _implicit_model(self, **options: Any) -> Any:
        """implicit's ALS with this config's hyper-parameters (and ``options``)."""
        cfg = self.config
        return _implicit().cpu.als.AlternatingLeastSquares(
            factors=cfg.factors,
            regularization=cfg.regularization,
            alpha=cfg.alpha,
            dtype=np.float32,
            use_cg=cfg.use_cg,
            iterations=cfg.iterations,
            **options,
        )

    def _score_histories(self, histories: Query) -> np.ndarray:
        rows = histories.to_csr(self.n_items_)
        with _single_threaded_blas():
            model = self._implicit_model()
            model.item_factors = self.item_factors_
            model.user_factors = self.user_factors_
            users = model.recalculate_user(np.arange(len(histories)), rows)
        return np.asarray(users, dtype=np.float32).reshape(len(histories), -1) @ (
            self.item_factors_.T
        )


class ImplicitBPRConfig(ModelConfig):
    """Hyper-parameters passed to ``implicit.cpu.bpr.BayesianPersonalizedRanking``.

    Attributes:
        factors: Embedding dimension (implicit adds one column for an item bias).
        learning_rate: SGD step size.
        regularization: L2 weight.
        iterations: Epochs over the observed pairs.
        verify_negative_samples: Re-draw sampled negatives the user has seen.
    """

    factors: int = Field(64, ge=1)
    learning_rate: float = Field(0.01, gt=0)
    regularization: float = Field(0.01, ge=0)
    iterations: int = Field(100, ge=1)
    verify_negative_samples: bool = True


@register("implicit-bpr")
class ImplicitBPR(_ImplicitMF):
    r"""implicit's Bayesian Personalized Ranking (Rendle et al., UAI 2009), as a peer.

    SGD on :math:`\sum_{(u,i,j)} -\ln\sigma(\hat y_{ui} - \hat y_{uj}) + \lambda(\ldots)` over
    sampled triples of a user, an item they interacted with and one they did not, with
    :math:`\hat y_{ui} = \langle w_u, h_i\rangle + b_i` (the bias is the last factor column; the
    user's last column is fixed to 1).

    implicit's BPR cannot fold in new histories (no ``recalculate_user``): known users are
    scored by code; an ad-hoc non-empty history raises :class:`~privrank.errors.ConfigError`.
    Fits are reproducible for a seed only with ``threads=1`` (implicit's parallel SGD is
    Hogwild-style).

    Attributes:
        user_factors_: ``n_users × (factors + 1)`` float32.
        item_factors_: ``n_items × (factors + 1)`` float32.
    """

    Config = ImplicitBPRConfig
    config: ImplicitBPRConfig
    supports_fold_in = False
    fold_in_matches_training = False

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        implicit = _implicit()
        cfg = self.config
        with _single_threaded_blas():
            model = implicit.cpu.bpr.BayesianPersonalizedRanking(
                factors=cfg.factors,
                learning_rate=cfg.learning_rate,
                regularization=cfg.regularization,
                dtype=np.float32,
                iterations=cfg.iterations,
                num_threads=options.resolved_threads(),
                verify_negative_samples=cfg.verify_negative_samples,
                random_state=options.seed,
            )
            callback = self._bpr_callback(cfg.iterations, matrix.nnz)
            model.fit(matrix, show_progress=False, callback=callback)
        self._keep_factors(model)

    def _width(self) -> int:
        return self.config.factors + 1

    def _score_histories(self, histories: Query) -> np.ndarray:  # pragma: no cover
        raise ConfigError("ImplicitBPR cannot fold in ad-hoc histories")

"""EASE: the closed-form shallow autoencoder of Steck (2019)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.models._private import (
    PlannedGramFit,
    PrivateGramConfig,
    PrivateGramFit,
    gram_source,
    private_gram_fit,
)
from privrank.models._row_sums import FEW_ROWS, history_row_sums
from privrank.models.base import (
    FitOptions,
    ModelConfig,
    ModelFitError,
    Query,
    Recommender,
    register,
)
from privrank.models.capabilities import ItemItemModel
from privrank.privacy.gram_release import GramStatistics
from privrank.privacy.spec import PrivacySpec

__all__ = [
    "EASE",
    "EASEConfig",
    "EASEPrivateConfig",
    "check_dense_memory",
    "ease_weights",
    "ease_weights_from_gram",
    "private_ease_system",
]


class EASEPrivateConfig(PrivateGramConfig):
    """Settings of a private EASE fit (DP-EASE), the ``private`` block of :class:`EASEConfig`.

    Attributes:
        denoising: The noisy Gram block's eigenvalues are soft-thresholded at this many times
            the noise's spectral norm ``2σ√N``.
        regularization: ``regularization · σ√N`` is added to the regularisation (noise-aware
            ridge).
        denoising_ridge: Also add the eigenvalue threshold ``τ = denoising · 2σ√N`` to the
            regularisation, so that the directions above the noise edge keep their eigenvalues
            and those below are damped by ``sλ + τ`` instead of ``sλ`` (better when the Gram
            matrix is large relative to the noise, e.g. many users; soft thresholding alone
            did better on ML-100K).

    The other fields are :class:`~privrank.models._private.PrivateGramConfig`'s.
    """

    denoising: float = Field(1.0, ge=0)
    regularization: float = Field(0.0, ge=0)
    denoising_ridge: bool = False


class EASEConfig(ModelConfig):
    """Hyper-parameters of :class:`EASE`.

    Attributes:
        regularization: The L2 weight :math:`\\lambda` (300 suits ML-100K; larger catalogues
            usually want more). Private fits use it on the scale of plain counts (see
            :class:`EASE`).
        dtype: Precision of the Gram matrix, its inverse and the stored weights.
        private: Settings of a private fit (:class:`EASEPrivateConfig`); ``None``: its
            defaults when the fit has a privacy spec. Refused by a fit without one.
    """

    regularization: float = Field(300.0, gt=0)
    dtype: Literal["float32", "float64"] = "float32"
    private: EASEPrivateConfig | None = None


@register("ease")
class EASE(Recommender, ItemItemModel, PlannedGramFit):
    r"""Embarrassingly Shallow Autoencoder (Steck, "Embarrassingly Shallow Autoencoders for
    Sparse Data", WWW 2019).

    An item-item weight matrix :math:`B` reconstructs the binary training matrix :math:`X`:

    .. math:: \min_B \lVert X - XB\rVert_F^2 + \lambda\lVert B\rVert_F^2
              \quad\text{s.t.}\quad \operatorname{diag}(B) = 0,

    whose closed form is

    .. math:: P = (X^\top X + \lambda I)^{-1},\qquad
              B = I - P\,\operatorname{diag}(1/\operatorname{diag}(P)),

    i.e. :math:`B_{ij} = -P_{ij}/P_{jj}` off the diagonal and :math:`B_{jj} = 0`. The inverse
    is taken through a Cholesky factorisation and two triangular solves (torch) in ``dtype``.
    A history :math:`x` (a binary row vector, e.g. a new user's) is scored by
    :math:`\hat y = xB` — exactly the training-time scores for a training user's history, so
    fold-in needs no retraining.

    **On a cluster** (``FitOptions(engine=...)``, ``privrank train --engine ray``): the Gram
    matrix, a sum over users, is summed over user partitions by the engine
    (:class:`~privrank.models.engine.FitEngine`); the solve runs here. The counts are integers,
    so the weights are those of the in-process fit exactly.

    **Differential privacy** (``FitOptions(privacy=spec)``, DP-EASE). The only statistic EASE
    needs is the Gram matrix :math:`G = X^\top X` of the contribution-bounded binary matrix
    (at most :math:`c` items per user). One user-level (ε, δ)-DP release
    (:func:`~privrank.privacy.gram_release.private_gram_release`, two Gaussian releases composed
    exactly in Gaussian DP) gives (1) noisy item counts :math:`\tilde n` (share
    ``private.count_share`` of the budget; each user's count vector bounded to L2 norm
    ``private.count_norm`` by down-weighting, not dropping, a heavy user's items), then, on
    the :math:`N` most popular items by :math:`\tilde n` whose count stands out of the Gram
    noise (``private.signal_ratio``, at most ``private.max_items``), (2) the noisy
    *bounded-norm* Gram block :math:`\tilde G = \sum_u w_u x_u x_u^\top + E` with
    :math:`w_u = \min(1, C/\sqrt{k_u(k_u+1)/2})` (``private.gram_norm`` :math:`= C`, the
    block's user-level L2 sensitivity; :math:`k_u` = the user's items in the block). The rest
    is post-processing of the release and of public parameters, and costs no privacy:

    - cold-start popularity :math:`\max(\tilde n, 0)`;
    - the block's eigenvalues soft-thresholded at ``private.denoising`` :math:`\cdot 2\sigma
      \sqrt N` and floored at 0 (:func:`~privrank.privacy.mechanisms.spectral_denoise`);
    - :math:`\lambda' = s\lambda + ` ``private.regularization`` :math:`\cdot\sigma\sqrt N`
      (plus the threshold with ``private.denoising_ridge``)
      with :math:`s \in (0, 1]` the block's noisy trace over its noisy counts (the scale of
      the reweighted Gram relative to plain counts), then the solve above on the block; items
      outside the block get zero weights (their scores come from the prior alone);
    - a popularity prior: scores :math:`xB + \beta m\,\tilde p` with :math:`\tilde p` the
      popularity scaled to a maximum of 1, :math:`m` the Gram release's noise multiplier and
      β = ``private.popularity_weight``, so a fit whose personalised part is mostly noise
      ranks like DP-MostPopular.

    Each user's scores use their own history and the private :math:`B` only (the user's own
    history is theirs, not a release). Without noise (a test-only switch) and with bounds no
    user exceeds (norms ``None``), every step above is the identity and this is EASE exactly
    (up to the rounding of the eigendecomposition). Hyper-parameters chosen on the private
    data itself (as the benchmark does, on a validation split of it) are not accounted, as is
    usual in the DP-recommender literature.

    Attributes:
        weights_: :math:`B`, ``n_items × n_items`` in ``dtype`` (a private fit on a block of
            items: ``len(items_) × len(items_)``).
        items_: The item codes of a private fit's block, ``None`` for the whole catalogue.
        prior_: A private fit's popularity prior added to the scores, or ``None``.
        privacy_guarantee_: The guarantee of a private fit (``None`` otherwise).
    """

    Config = EASEConfig
    config: EASEConfig
    PrivateConfig = EASEPrivateConfig
    uses_torch = True
    supports_privacy = True
    supports_engine = True
    weights_: np.ndarray
    items_: np.ndarray | None
    prior_: np.ndarray | None

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        check_dense_memory(self.n_items_, self.config.dtype)
        if options.engine is None:
            self.weights_ = ease_weights(matrix, self.config.regularization, self.config.dtype)
        else:  # X^T X summed over user partitions on the engine: the same integer counts
            gram = options.engine.gram_statistics(matrix).weighted_gram(None, math.inf)
            self.weights_ = ease_weights_from_gram(
                gram, self.config.regularization, self.config.dtype, overwrite=True
            )
        self.items_ = self.prior_ = None
        self._report(1, 1)

    def _fit_private(
        self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions, spec: PrivacySpec
    ) -> None:
        config, private = self.config, self.private_settings(EASEPrivateConfig)
        fit, block, regularization = private_ease_system(
            gram_source(matrix, options), spec, private, config.regularization
        )
        release = fit.release
        items = release.items
        solved = ease_weights_from_gram(block, regularization, config.dtype, overwrite=True)
        self.item_popularity_ = fit.popularity.astype(np.float32)
        self.prior_ = fit.prior
        if items.size == self.n_items_:  # np.sort-ed: the whole catalogue in code order
            self.weights_, self.items_ = solved, None
        else:
            self.weights_, self.items_ = solved, items.astype(np.int64)
        self.privacy_guarantee_ = release.guarantee
        self._report(1, 1)

    def _score_histories(self, histories: Query) -> np.ndarray:
        items = self.items_
        if items is None and len(histories) <= FEW_ROWS:
            scores = np.asarray(history_row_sums(histories, self.weights_), dtype=np.float32)
        elif items is None:
            rows = histories.to_csr(self.n_items_, dtype=self.weights_.dtype)
            scores = np.asarray(rows @ self.weights_, dtype=np.float32)
        else:
            rows = histories.to_csr(self.n_items_, dtype=self.weights_.dtype)
            scores = np.zeros((rows.shape[0], self.n_items_), dtype=np.float32)
            scores[:, items] = rows[:, items] @ self.weights_
        if self.prior_ is not None:
            scores += self.prior_
        return scores

    def item_item_weights(self) -> np.ndarray | None:
        """:math:`B`; ``None`` for a private fit on a block of items or with a prior."""
        if self.items_ is not None or self.prior_ is not None:
            return None
        return self.weights_

    def _state(self) -> dict[str, np.ndarray]:
        state = {"weights": self.weights_}
        if self.items_ is not None:
            state["items"] = self.items_
        if self.prior_ is not None:
            state["prior"] = self.prior_
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        weights = state["weights"]
        items = state.get("items")
        prior = state.get("prior")
        if unknown := set(state) - {"weights", "items", "prior"}:
            raise ValueError(f"unexpected arrays {sorted(unknown)}")
        if items is not None:
            items = np.asarray(items, dtype=np.int64)
            if items.ndim != 1 or (
                items.size and (items.min() < 0 or items.max() >= self.n_items_)
            ):
                raise ValueError("block item codes out of range")
            if np.unique(items).size != items.size:
                raise ValueError("block item codes repeat")
        size = self.n_items_ if items is None else items.size
        if weights.shape != (size, size):
            raise ValueError(f"weights have shape {weights.shape}")
        if weights.dtype != np.dtype(self.config.dtype):
            raise ValueError(f"weights are {weights.dtype}, the config says {self.config.dtype}")
        if prior is not None and prior.shape != (self.n_items_,):
            raise ValueError(f"prior has shape {prior.shape}")
        self.weights_, self.items_, self.prior_ = weights, items, prior


def private_ease_system(
    matrix: sp.csr_matrix | GramStatistics,
    spec: PrivacySpec,
    private: EASEPrivateConfig,
    regularization: float,
) -> tuple[PrivateGramFit, np.ndarray, float]:
    r"""The private release of DP-EASE and its post-processing up to the solve.

    One user-level (ε, δ)-DP release (:func:`~privrank.models._private.private_gram_fit`),
    then, from the release and public parameters only (post-processing, no privacy cost): the
    spectrally denoised Gram block and the regularisation
    :math:`\lambda' = s\lambda + ` ``private.regularization`` :math:`\cdot\sigma\sqrt N`
    (plus the eigenvalue threshold with ``private.denoising_ridge``); see :class:`EASE`.

    ``matrix`` may be the :class:`~privrank.privacy.gram_release.GramStatistics` of a fit
    engine (summed over user partitions there; the noise is added once, here).

    Returns:
        ``(fit, block, regularization)``: the release with its shared post-processing, the
        denoised symmetric PSD ``N × N`` block (float64, on ``fit.release.items``) and
        :math:`\lambda'`.
    """
    from privrank.privacy.mechanisms import spectral_denoise

    fit = private_gram_fit(matrix, spec, private)
    release = fit.release
    noise = release.gram_std * np.sqrt(max(release.items.size, 1))
    block = spectral_denoise(release.gram, release.gram_std, private.denoising)
    solved_regularization = fit.scale * regularization + private.regularization * noise
    if private.denoising_ridge:
        # Soft-thresholding lowered every kept eigenvalue by τ; adding τ back to the ridge
        # keeps the directions above the noise edge unbiased and regularises the others
        # by sλ + τ instead of sλ.
        solved_regularization += private.denoising * 2.0 * noise
    return fit, block, solved_regularization


#: Dense ``n_items × n_items`` matrices alive at once in the solve (the Gram matrix or the
#: system, its Cholesky factor, the identity and the precision).
_DENSE_MATRICES = 4


def check_dense_memory(n_items: int, dtype: str, available: int | None = None) -> None:
    """Refuse a dense EASE solve that cannot fit in memory, before it starts.

    The solve holds :data:`_DENSE_MATRICES` dense ``n × n`` matrices in ``dtype`` at its peak
    (a lower bound of its footprint: 9 GB for Video's 23,715 items in float32, whose fit peaked
    at 13.3 GB RSS), so a solve whose bound exceeds the memory available would be killed by the
    operating system without a message.

    Args:
        n_items: Items in the catalogue.
        dtype: The solve's precision.
        available: Bytes available (default: the machine's, from psutil).

    Raises:
        ConfigError: The bound exceeds the memory available; the message names the sparse
            variant.
    """
    needed = _DENSE_MATRICES * n_items * n_items * np.dtype(dtype).itemsize
    if available is None:
        import psutil

        available = int(psutil.virtual_memory().available)
    if needed > available:
        raise ConfigError(
            f"ease: the dense solve on {n_items:,} items needs at least {needed / 1e9:.1f} GB "
            f"({_DENSE_MATRICES} matrices of {n_items:,}² {dtype}), more than the "
            f"{available / 1e9:.1f} GB available. Use ease-sparse (a sparse EASE that scales "
            "with the catalogue) or a machine with more memory."
        )


def ease_weights(matrix: sp.spmatrix, regularization: float, dtype: str = "float32") -> np.ndarray:
    """The EASE weight matrix :math:`B` of a binary user × item matrix (see :class:`EASE`)."""
    csr = sp.csr_matrix(matrix, dtype=np.float32)
    gram = (csr.T @ csr).toarray()
    return ease_weights_from_gram(gram, regularization, dtype, overwrite=True)


def ease_weights_from_gram(
    gram: np.ndarray, regularization: float, dtype: str = "float32", *, overwrite: bool = False
) -> np.ndarray:
    r"""The EASE weight matrix :math:`B` from a dense symmetric Gram matrix :math:`X^\top X`
    (exact, or a private estimate of it): the solve of :class:`EASE`.

    Args:
        gram: ``n_items × n_items`` symmetric matrix.
        regularization: :math:`\\lambda`, added to the diagonal.
        dtype: Precision of the solve and of the result.
        overwrite: Allow ``gram`` to be modified in place (saves a copy).
    """
    import torch

    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    source = np.ascontiguousarray(gram)
    system = torch.from_numpy(source).to(torch_dtype)
    if not overwrite and system.data_ptr() == torch.from_numpy(source).data_ptr():
        system = system.clone()
    system.diagonal().add_(regularization)
    factor, info = torch.linalg.cholesky_ex(system)
    if int(info) != 0:
        raise ModelFitError(
            f"EASE: the Cholesky factorisation of X^T X + {regularization} I failed in {dtype} "
            "(rounding made it indefinite); raise the regularization or use dtype='float64'"
        )
    del system
    # Two triangular solves against I: several times faster than torch.cholesky_inverse
    # (potri), and faster than an LU-based torch.linalg.inv of the same matrix.
    precision = torch.cholesky_solve(torch.eye(factor.shape[0], dtype=torch_dtype), factor)
    del factor
    weights = precision.div_(-precision.diagonal().clone())
    weights.diagonal().zero_()
    return np.ascontiguousarray(weights.numpy())  # C order: fast `rows @ B` when scoring

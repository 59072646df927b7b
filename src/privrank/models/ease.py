"""EASE: the closed-form shallow autoencoder of Steck (2019)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrank.data.interactions import Interactions
from privrank.models.base import (
    FitOptions,
    ModelConfig,
    ModelFitError,
    Query,
    Recommender,
    register,
)
from privrank.privacy.spec import PrivacySpec

__all__ = ["EASE", "EASEConfig", "ease_weights", "ease_weights_from_gram"]

# Private fits: keep items whose noisy count is at least this many noise σ; soft-threshold the
# noisy Gram matrix's eigenvalues at this fraction of the noise's spectral norm 2σ√n.
_PRIVATE_MIN_COUNT = 2.0
_PRIVATE_DENOISING = 0.5


class EASEConfig(ModelConfig):
    """Hyper-parameters of :class:`EASE`.

    Attributes:
        regularization: The L2 weight :math:`\\lambda` (300 suits ML-100K; larger catalogues
            usually want more).
        dtype: Precision of the Gram matrix, its inverse and the stored weights.
    """

    regularization: float = Field(300.0, gt=0)
    dtype: Literal["float32", "float64"] = "float32"


@register("ease")
class EASE(Recommender):
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

    **Differential privacy** (``FitOptions(privacy=spec)``, DP-EASE). The only statistic EASE
    needs is the Gram matrix :math:`G = X^\top X` of the contribution-bounded binary matrix
    (at most :math:`c` items per user). :func:`~privrank.privacy.mechanisms.private_gram`
    releases its upper triangle with Gaussian noise calibrated to the user-level L2
    sensitivity :math:`\sqrt{c(c+1)/2}` (one user adds a :math:`k \times k` block of ones,
    :math:`k \le c`), so the noisy :math:`\tilde G` is user-level (ε, δ)-DP. The rest is
    post-processing of :math:`\tilde G` and of the public noise σ, and costs no privacy: the
    cold-start popularity is its clipped diagonal :math:`\max(\tilde G_{ii}, 0)`; only items
    whose noisy count is at least 2σ are kept (the rows of rarer items are mostly noise; the
    others get zero weights); the kept block is projected onto the PSD cone with its
    eigenvalues soft-thresholded at half the noise's spectral norm :math:`2\sigma\sqrt{n}`
    (:func:`~privrank.privacy.mechanisms.spectral_denoise`, a denoiser); then the same solve as
    above (:func:`ease_weights_from_gram`) with :math:`+\lambda I` makes it positive definite.
    Without noise (a test-only switch) and with a bound no user exceeds, this is EASE exactly
    (up to the rounding of the eigendecomposition). Each user's scores use their own history
    and the private :math:`B` only.

    Attributes:
        weights_: :math:`B`, ``n_items × n_items`` in ``dtype``.
        privacy_guarantee_: The guarantee of a private fit (``None`` otherwise).
    """

    Config = EASEConfig
    uses_torch = True
    supports_privacy = True

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        self.weights_ = ease_weights(matrix, self.config.regularization, self.config.dtype)
        self._report(1, 1)

    def _fit_private(
        self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions, spec: PrivacySpec
    ) -> None:
        from privrank.privacy.mechanisms import private_gram, spectral_denoise

        gram, guarantee = private_gram(matrix, spec)
        noise_std = guarantee.noise_std * guarantee.noise_scale_for_testing
        counts = np.diagonal(gram).copy()
        self.item_popularity_ = np.maximum(counts, 0.0).astype(np.float32)
        keep = np.flatnonzero(counts >= _PRIVATE_MIN_COUNT * noise_std)
        block = spectral_denoise(gram[np.ix_(keep, keep)], noise_std, _PRIVATE_DENOISING)
        del gram
        solved = ease_weights_from_gram(
            block, self.config.regularization, self.config.dtype, overwrite=True
        )
        if keep.size == self.n_items_:
            self.weights_ = solved
        else:
            self.weights_ = np.zeros((self.n_items_, self.n_items_), dtype=self.config.dtype)
            self.weights_[np.ix_(keep, keep)] = solved
        self.privacy_guarantee_ = guarantee
        self._report(1, 1)

    def _score_histories(self, histories: Query) -> np.ndarray:
        rows = histories.to_csr(self.n_items_, dtype=self.weights_.dtype)
        return np.asarray(rows @ self.weights_, dtype=np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights_}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        weights = state["weights"]
        if weights.shape != (self.n_items_, self.n_items_):
            raise ValueError(f"weights have shape {weights.shape}")
        if weights.dtype != np.dtype(self.config.dtype):
            raise ValueError(f"weights are {weights.dtype}, the config says {self.config.dtype}")
        self.weights_ = weights


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
    gram = torch.from_numpy(source).to(torch_dtype)
    if not overwrite and gram.data_ptr() == torch.from_numpy(source).data_ptr():
        gram = gram.clone()
    gram.diagonal().add_(regularization)
    factor, info = torch.linalg.cholesky_ex(gram)
    if int(info) != 0:
        raise ModelFitError(
            f"EASE: the Cholesky factorisation of X^T X + {regularization} I failed in {dtype} "
            "(rounding made it indefinite); raise the regularization or use dtype='float64'"
        )
    del gram
    # Two triangular solves against I: several times faster than torch.cholesky_inverse
    # (potri), and faster than an LU-based torch.linalg.inv of the same matrix.
    precision = torch.cholesky_solve(torch.eye(factor.shape[0], dtype=torch_dtype), factor)
    del factor
    weights = precision.div_(-precision.diagonal().clone())
    weights.diagonal().zero_()
    return weights.numpy()

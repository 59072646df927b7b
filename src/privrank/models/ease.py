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

__all__ = ["EASE", "EASEConfig", "ease_weights"]


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

    Attributes:
        weights_: :math:`B`, ``n_items × n_items`` in ``dtype``.
    """

    Config = EASEConfig
    uses_torch = True

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        self.weights_ = ease_weights(matrix, self.config.regularization, self.config.dtype)
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
    import torch

    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    csr = sp.csr_matrix(matrix, dtype=np.float32)
    gram = torch.from_numpy((csr.T @ csr).toarray()).to(torch_dtype)
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

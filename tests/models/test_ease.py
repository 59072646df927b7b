"""EASE against a float64 numpy reference of its closed form."""

from __future__ import annotations

import numpy as np
import pytest

from privrank.errors import ConfigError
from privrank.models import EASE, Query
from privrank.testing import synthetic_interactions


def reference_weights(matrix: np.ndarray, regularization: float) -> np.ndarray:
    """Steck (2019), eq. 8, by solving the constrained problem column by column in float64.

    For target column j the constraint B_jj = 0 removes item j from the regressors, so column j
    is the ridge regression of X[:, j] on the other columns — an independent route to B.
    """
    n_items = matrix.shape[1]
    weights = np.zeros((n_items, n_items))
    for j in range(n_items):
        others = np.delete(np.arange(n_items), j)
        design = matrix[:, others]
        gram = design.T @ design + regularization * np.eye(n_items - 1)
        weights[others, j] = np.linalg.solve(gram, design.T @ matrix[:, j])
    return weights


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("regularization", [0.5, 30.0])
def test_weights_match_float64_reference(dtype, regularization):
    data = synthetic_interactions(n_users=50, n_items=25, seed=3)
    model = EASE(regularization=regularization, dtype=dtype).fit(data)
    dense = data.to_csr().toarray().astype(np.float64)
    expected = reference_weights(dense, regularization)
    assert model.weights_.dtype == np.dtype(dtype)
    assert np.all(np.diag(model.weights_) == 0)
    tolerance = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(model.weights_, expected, rtol=0, atol=tolerance)
    scores = model.score(np.flatnonzero(data.user_counts() > 0))
    expected_scores = (dense @ expected)[data.user_counts() > 0]
    # Scores are float32 whatever the dtype of B.
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-4)


def test_closed_form_identity():
    """B = I - P diag(1/diag P) with P = (X^T X + λI)^-1, in float64."""
    data = synthetic_interactions(n_users=40, n_items=20, seed=5)
    dense = data.to_csr().toarray().astype(np.float64)
    precision = np.linalg.inv(dense.T @ dense + 7.0 * np.eye(20))
    expected = np.eye(20) - precision / np.diag(precision)[None, :]
    model = EASE(regularization=7.0, dtype="float64").fit(data)
    np.testing.assert_allclose(model.weights_, expected, atol=1e-12)


def test_fold_in_of_a_new_history_is_x_times_b():
    data = synthetic_interactions(n_users=40, n_items=20, seed=5)
    model = EASE(regularization=3.0).fit(data)
    history = [3, 7, 7, 11]  # the repeat counts once
    row = np.zeros(20, dtype=np.float32)
    row[[3, 7, 11]] = 1
    np.testing.assert_allclose(
        model.score(Query.histories([history]))[0], row @ model.weights_, rtol=1e-6
    )


def test_invalid_regularization_message():
    with pytest.raises(
        ConfigError,
        match=r"EASE\.regularization: got -1; expected a float > 0$",
    ):
        EASE(regularization=-1)
    with pytest.raises(ConfigError, match=r"EASE\.dtype: got 'float16'; expected one of"):
        EASE(dtype="float16")


def test_a_dense_solve_larger_than_the_memory_is_refused_before_it_starts(monkeypatch) -> None:
    """The bound is 4 dense n × n matrices in the solve's dtype; past the memory available the
    fit is refused with a message naming the sparse variant (rather than killed by the OS)."""
    from collections import namedtuple

    import psutil

    from privrank.models.ease import check_dense_memory

    # Hand computation: 23,715 items in float32 need 4 · 23,715² · 4 B = 8.998 GB.
    check_dense_memory(23_715, "float32", available=9_000_000_000)
    with pytest.raises(ConfigError, match=r"at least 9\.0 GB .*ease-sparse"):
        check_dense_memory(23_715, "float32", available=8_990_000_000)
    with pytest.raises(ConfigError, match="float64"):
        check_dense_memory(23_715, "float64", available=9_000_000_000)
    data = synthetic_interactions(30, 20, per_user=5)
    memory = namedtuple("memory", "available")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory(4 * 20 * 20 * 4 - 1))
    model = EASE()
    with pytest.raises(ConfigError, match="20 items"):
        model.fit(data)
    assert not hasattr(model, "weights_")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory(4 * 20 * 20 * 4))
    assert EASE().fit(data).weights_.shape == (20, 20)

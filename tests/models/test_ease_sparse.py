"""EASE on pruned neighbourhoods against dense EASE and a float64 numpy oracle."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from privrank.errors import ConfigError
from privrank.models import EASE, EASESparse, FitOptions, ModelFitError, Query
from privrank.models.ease_sparse import gram_csr, neighbourhood_weights
from privrank.testing import synthetic_interactions

DATA = synthetic_interactions(n_users=90, n_items=35, seed=3)
DENSE = DATA.to_csr().toarray().astype(np.float64)
GRAM = DENSE.T @ DENSE


def oracle(gram: np.ndarray, regularization: float, k: int) -> np.ndarray:
    """Column by column in float64: the ``k`` largest positive co-occurrences (ties: lower code)
    of each target, and the ridge regression of the target on them (np.linalg.solve)."""
    n = gram.shape[0]
    weights = np.zeros((n, n))
    for j in range(n):
        others = np.array([i for i in range(n) if i != j and gram[i, j] > 0])
        if k < n - 1:
            order = sorted(others, key=lambda i: (-gram[i, j], i))
            others = np.array(order[:k], dtype=int)
        else:
            others = np.delete(np.arange(n), j)
        if others.size == 0:
            continue
        system = gram[np.ix_(others, others)] + regularization * np.eye(others.size)
        weights[others, j] = np.linalg.solve(system, gram[others, j])
    return weights


@pytest.mark.parametrize("regularization", [0.5, 30.0])
def test_without_pruning_it_is_dense_ease(regularization):
    """neighbors >= n_items - 1: every other item is a neighbour, B is dense EASE's."""
    dense = EASE(regularization=regularization, dtype="float64").fit(DATA).weights_
    model = EASESparse(regularization=regularization, neighbors=10_000, dtype="float64")
    weights = model.fit(DATA, FitOptions(threads=1)).weights_
    assert sp.issparse(weights) and weights.dtype == np.float64
    np.testing.assert_allclose(weights.toarray(), dense, rtol=0, atol=1e-10)
    single = EASESparse(regularization=regularization, neighbors=DATA.n_items - 1).fit(DATA)
    np.testing.assert_allclose(single.weights_.toarray(), dense, rtol=0, atol=1e-4)


@pytest.mark.parametrize("k", [1, 5, 12])
def test_pruned_columns_solve_the_restricted_regression(k):
    model = EASESparse(regularization=4.0, neighbors=k, dtype="float64").fit(DATA)
    weights = model.weights_.toarray()
    assert np.all(np.count_nonzero(weights, axis=0) <= k)
    assert np.all(np.diag(weights) == 0)
    np.testing.assert_allclose(weights, oracle(GRAM, 4.0, k), rtol=0, atol=1e-10)


def test_ties_go_to_the_lower_item_code():
    # Items 1, 2, 3 co-occur with item 0 once each; item 4 twice.
    gram = np.zeros((5, 5))
    for i in (1, 2, 3):
        gram[0, i] = gram[i, 0] = 1.0
    gram[0, 4] = gram[4, 0] = 2.0
    np.fill_diagonal(gram, 3.0)
    weights = neighbourhood_weights(sp.csr_matrix(gram), 1.0, 2, "float64").toarray()
    assert set(np.flatnonzero(weights[:, 0])) == {4, 1}
    np.testing.assert_allclose(weights, oracle(gram, 1.0, 2), atol=1e-12)


def test_results_do_not_depend_on_threads():
    one = EASESparse(neighbors=6, regularization=3.0).fit(DATA, FitOptions(threads=1))
    two = EASESparse(neighbors=6, regularization=3.0).fit(DATA, FitOptions(threads=2))
    assert (one.weights_ != two.weights_).nnz == 0


def test_gram_csr_is_x_transpose_x():
    np.testing.assert_array_equal(gram_csr(DATA.to_csr()).toarray(), GRAM)


def test_fold_in_scores_a_new_history_by_x_times_b():
    model = EASESparse(regularization=3.0, neighbors=8).fit(DATA)
    row = np.zeros(DATA.n_items, dtype=np.float32)
    row[[3, 7, 11]] = 1.0
    expected = row @ model.weights_.toarray()
    scores = model.score(Query.histories([[3, 7, 7, 11]]))  # the repeat counts once
    np.testing.assert_allclose(scores[0], expected, rtol=1e-6, atol=1e-6)


def test_indefinite_system_is_reported():
    gram = sp.csr_matrix(np.array([[1.0, 5.0], [5.0, 1.0]]))  # not a Gram matrix
    # Each 1 x 1 neighbourhood is fine; a private (noisy) block can be indefinite only through
    # a negative diagonal, which the solve reports instead of returning garbage.
    bad = sp.csr_matrix(np.array([[-3.0, 1.0, 1.0], [1.0, -3.0, 1.0], [1.0, 1.0, -3.0]]))
    assert neighbourhood_weights(gram, 0.5, 1).nnz == 2
    with pytest.raises(ModelFitError, match="not positive definite"):
        neighbourhood_weights(bad, 0.5, 1)


def test_config_is_validated():
    with pytest.raises(ConfigError, match="neighbors"):
        EASESparse(neighbors=0)
    with pytest.raises(ConfigError, match="regularization"):
        EASESparse(regularization=-1.0)

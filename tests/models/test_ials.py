"""iALS against slow float64 references of its objective and of its least-squares solves."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from privrank.models import IALS, FitOptions, ModelFitError, Query
from privrank.models._als_solvers import gramian, row_objectives, solve_cg, solve_exact
from privrank.testing import synthetic_interactions

ALPHA0, LAMBDA, NU = 0.3, 0.05, 0.7


def dense_objective(x: np.ndarray, w: np.ndarray, h: np.ndarray) -> float:
    """Rendle et al. (2022), eq. 1-3, written out over every (user, item) pair in float64."""
    predictions = w @ h.T
    observed = np.sum(x * (predictions - 1.0) ** 2)
    unobserved = ALPHA0 * np.sum(predictions**2)
    n_users, n_items = x.shape
    user_reg = LAMBDA * (x.sum(axis=1) + ALPHA0 * n_items) ** NU
    item_reg = LAMBDA * (x.sum(axis=0) + ALPHA0 * n_users) ** NU
    penalty = np.sum(user_reg * (w**2).sum(axis=1)) + np.sum(item_reg * (h**2).sum(axis=1))
    return float(observed + unobserved + penalty)


def reference_solve(items: np.ndarray, history: np.ndarray, reg: float) -> np.ndarray:
    """argmin_w sum_{i in history} (w.h_i - 1)^2 + α0 sum_i (w.h_i)^2 + reg |w|^2 by lstsq."""
    d = items.shape[1]
    design = np.vstack([items[history], np.sqrt(ALPHA0) * items, np.sqrt(reg) * np.eye(d)])
    target = np.concatenate([np.ones(len(history)), np.zeros(len(items) + d)])
    return np.linalg.lstsq(design, target, rcond=None)[0]


@pytest.fixture(scope="module")
def fitted():
    data = synthetic_interactions(n_users=30, n_items=18, per_user=6, seed=11)
    model = IALS(
        factors=4,
        epochs=12,
        regularization=LAMBDA,
        regularization_exponent=NU,
        unobserved_weight=ALPHA0,
    ).fit(data, FitOptions(seed=2, threads=1))
    return data, model


def test_loss_decreases_and_matches_dense_objective(fitted):
    data, model = fitted
    losses = model.loss_history_
    assert len(losses) == 12
    assert np.all(np.diff(losses) <= 1e-6 * losses[:-1]), f"loss went up: {losses}"
    assert losses[-1] < losses[0]
    x = data.to_csr().toarray().astype(np.float64)
    w = model.user_factors_.astype(np.float64)
    h = model.item_factors_.astype(np.float64)
    assert losses[-1] == pytest.approx(dense_objective(x, w, h), rel=1e-6)


def test_user_factors_are_the_exact_solution_for_the_final_items(fitted):
    data, model = fitted
    x = data.to_csr().toarray()
    h = model.item_factors_.astype(np.float64)
    for user in range(data.n_users):
        history = np.flatnonzero(x[user])
        if history.size == 0:
            assert np.all(model.user_factors_[user] == 0)
            continue
        reg = LAMBDA * (history.size + ALPHA0 * data.n_items) ** NU
        expected = reference_solve(h, history, reg)
        np.testing.assert_allclose(model.user_factors_[user], expected, rtol=1e-3, atol=1e-5)


def test_stationary_in_the_user_factors(fitted):
    """The gradient of the dense objective with respect to W vanishes after the final solve."""
    data, model = fitted
    x = torch.from_numpy(data.to_csr().toarray().astype(np.float64))
    w = torch.tensor(model.user_factors_, dtype=torch.float64, requires_grad=True)
    h = torch.tensor(model.item_factors_, dtype=torch.float64)
    predictions = w @ h.T
    user_reg = LAMBDA * (x.sum(dim=1) + ALPHA0 * data.n_items) ** NU
    loss = (
        (x * (predictions - 1) ** 2).sum()
        + ALPHA0 * (predictions**2).sum()
        + (user_reg * (w**2).sum(dim=1)).sum()
    )
    loss.backward()
    assert float(w.grad.abs().max()) < 1e-4 * max(1.0, float(w.detach().abs().max()))


def test_item_half_step_matches_reference():
    rng = np.random.default_rng(0)
    data = synthetic_interactions(n_users=25, n_items=15, per_user=5, seed=4)
    by_item = data.to_csr().T.tocsr()
    users = rng.normal(size=(25, 3)).astype(np.float32)
    reg = (LAMBDA * (np.diff(by_item.indptr) + ALPHA0 * 25) ** NU).astype(np.float32)
    solved = solve_exact(by_item, users, gramian(users), reg, ALPHA0, threads=2)
    for item in range(15):
        history = by_item.indices[by_item.indptr[item] : by_item.indptr[item + 1]]
        if history.size == 0:
            assert np.all(solved[item] == 0)
            continue
        expected = reference_solve(users.astype(np.float64), history, float(reg[item]))
        np.testing.assert_allclose(solved[item], expected, rtol=1e-4, atol=1e-6)


def test_conjugate_gradient_converges_to_the_exact_solve():
    rng = np.random.default_rng(1)
    data = synthetic_interactions(n_users=40, n_items=20, seed=6)
    matrix = data.to_csr()
    items = rng.normal(size=(20, 5)).astype(np.float32)
    reg = np.full(40, 0.5, dtype=np.float32)
    gram = gramian(items)
    exact = solve_exact(matrix, items, gram, reg, ALPHA0)
    start = np.zeros((40, 5), dtype=np.float32)
    iterated, _ = solve_cg(matrix, items, gram, reg, ALPHA0, start, steps=5)  # d steps suffice
    np.testing.assert_allclose(iterated, exact, rtol=1e-3, atol=1e-4)
    few, _ = solve_cg(matrix, items, gram, reg, ALPHA0, start, steps=1)
    assert np.abs(few - exact).max() > np.abs(iterated - exact).max()
    assert np.all(start == 0), "the start is not modified"


def test_cg_solver_loss_decreases():
    data = synthetic_interactions(n_users=60, n_items=40, seed=2)
    model = IALS(factors=6, epochs=8, solver="cg", cg_steps=2).fit(data)
    assert np.all(np.diff(model.loss_history_) <= 1e-6 * model.loss_history_[:-1])


def test_fold_in_of_a_new_history_matches_reference(fitted):
    data, model = fitted
    history = np.array([0, 4, 9])
    reg = LAMBDA * (3 + ALPHA0 * data.n_items) ** NU
    expected = reference_solve(model.item_factors_.astype(np.float64), history, reg)
    np.testing.assert_allclose(
        model.fold_in(Query.histories([history]))[0], expected, rtol=1e-3, atol=1e-5
    )
    np.testing.assert_allclose(
        model.score(Query.histories([history]))[0],
        expected @ model.item_factors_.T.astype(np.float64),
        rtol=1e-3,
        atol=1e-5,
    )


def test_exact_solve_of_rows_longer_than_a_block():
    """Rows of 300 entries span several gathered blocks of the exact kernel."""
    rng = np.random.default_rng(3)
    dense = (rng.random((7, 300)) < 0.9).astype(np.float32)
    matrix = sp.csr_matrix(dense)
    other = rng.normal(size=(300, 6)).astype(np.float32)
    reg = np.linspace(0.1, 2.0, 7).astype(np.float32)
    solved = solve_exact(matrix, other, gramian(other), reg, ALPHA0, threads=2)
    for row in range(7):
        expected = reference_solve(other.astype(np.float64), np.flatnonzero(dense[row]), reg[row])
        np.testing.assert_allclose(solved[row], expected, rtol=1e-4, atol=1e-6)


def test_exact_solve_refuses_a_singular_system():
    matrix = sp.csr_matrix(np.ones((2, 3), dtype=np.float32))
    other = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(ModelFitError, match="positive definite"):
        solve_exact(matrix, other, gramian(other), np.zeros(2, dtype=np.float32), ALPHA0)


def test_exact_solve_retries_in_float64_where_float32_rounding_breaks_the_factorisation():
    """Factors of large norm and rank below d (6 items, 32 factors: a private fedmf run's item
    factors after noisy steps): the float32 Gramian's rounding errors outweigh λ and every
    float32-built factorisation fails, though each system is positive definite. The retry in
    float64 gives the least-squares oracle's solution."""
    from privrank.models import _als_kernels as kernels
    from privrank.models._als_solvers import _run_rows

    rng = np.random.default_rng(0)
    other = (rng.normal(size=(6, 32)) * 3e3).astype(np.float32)
    dense = (rng.random((20, 6)) < 0.5).astype(np.float32)
    dense[:, 0] = 1.0
    matrix = sp.csr_matrix(dense)
    reg = np.full(20, 0.3, dtype=np.float32)
    kernel_only = np.empty((20, 32), dtype=np.float32)
    failures = _run_rows(
        kernels.exact_rows, matrix, other, gramian(other), reg, ALPHA0, kernel_only, threads=1
    )
    assert failures == 20  # the premise: float32 alone fails on every row
    solved = solve_exact(matrix, other, gramian(other), reg, ALPHA0)
    for row in range(20):
        expected = reference_solve(other.astype(np.float64), np.flatnonzero(dense[row]), 0.3)
        np.testing.assert_allclose(solved[row], expected, rtol=1e-4, atol=1e-10)


def test_cg_steps_lower_every_row_objective_and_report_it():
    rng = np.random.default_rng(5)
    data = synthetic_interactions(n_users=50, n_items=30, seed=8)
    matrix = data.to_csr()
    items = rng.normal(size=(30, 8)).astype(np.float32)
    reg = np.full(50, 0.3, dtype=np.float32)
    gram = gramian(items)
    current = rng.normal(size=(50, 8)).astype(np.float32)
    previous = row_objectives(matrix, current, items, gram, reg, ALPHA0)
    x = items.astype(np.float64)
    for _ in range(4):
        current, reported = solve_cg(matrix, items, gram, reg, ALPHA0, current, 1, 2, True)
        objective = row_objectives(matrix, current, items, gram, reg, ALPHA0)
        assert np.all(objective <= previous + 1e-6 * np.abs(previous))
        np.testing.assert_allclose(reported, objective, rtol=1e-5)  # float32 rounding
        # The objective of each row written out densely in float64.
        w = current.astype(np.float64)
        dense = matrix.toarray().astype(np.float64)
        predictions = w @ x.T
        direct = (
            (dense * (predictions - 1) ** 2).sum(axis=1)
            + ALPHA0 * (predictions**2).sum(axis=1)
            + 0.3 * (w**2).sum(axis=1)
        )
        np.testing.assert_allclose(objective, direct, rtol=1e-5)
        previous = objective


def test_solves_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(9)
    data = synthetic_interactions(n_users=200, n_items=60, seed=1)
    matrix = data.to_csr()
    items = rng.normal(size=(60, 7)).astype(np.float32)
    reg = np.full(200, 0.4, dtype=np.float32)
    gram = gramian(items)
    start = rng.normal(size=(200, 7)).astype(np.float32)
    one, _ = solve_cg(matrix, items, gram, reg, ALPHA0, start, 3, threads=1)
    two, _ = solve_cg(matrix, items, gram, reg, ALPHA0, start, 3, threads=2)
    np.testing.assert_array_equal(one, two)
    exact_one = solve_exact(matrix, items, gram, reg, ALPHA0, threads=1)
    np.testing.assert_array_equal(exact_one, solve_exact(matrix, items, gram, reg, ALPHA0, 2))


def test_cg_model_ends_with_the_exact_user_solve():
    data = synthetic_interactions(n_users=30, n_items=18, per_user=6, seed=11)
    model = IALS(
        factors=4,
        epochs=6,
        regularization=LAMBDA,
        regularization_exponent=NU,
        unobserved_weight=ALPHA0,
        solver="cg",
        cg_steps=2,
    ).fit(data, FitOptions(seed=2, threads=2))
    x = data.to_csr().toarray()
    h = model.item_factors_.astype(np.float64)
    for user in np.flatnonzero(x.sum(axis=1)):
        history = np.flatnonzero(x[user])
        reg = LAMBDA * (history.size + ALPHA0 * data.n_items) ** NU
        np.testing.assert_allclose(
            model.user_factors_[user], reference_solve(h, history, reg), rtol=1e-3, atol=1e-5
        )
    w = model.user_factors_.astype(np.float64)
    assert model.loss_history_[-1] == pytest.approx(dense_objective(x, w, h), rel=1e-6)


def test_default_unobserved_weight_is_the_rule_of_the_data(tmp_path):
    """α₀ = ρ |S| / (|U| |I|) by default; an explicit α₀ wins; a saved model keeps the α₀ it
    was fitted with (fold-in uses it)."""
    data = synthetic_interactions(50, 30, per_user=6, seed=2)
    model = IALS(factors=4, epochs=2).fit(data, FitOptions(seed=0, threads=1))
    matrix = model._training_matrix()
    density = matrix.nnz / (model.n_users_ * model.n_items_)
    assert model.config.unobserved_weight is None
    assert model.unobserved_weight_ == pytest.approx(model.config.unobserved_ratio * density)
    halved = IALS(factors=4, epochs=2, unobserved_ratio=model.config.unobserved_ratio / 2)
    halved.fit(data, FitOptions(seed=0, threads=1))
    assert halved.unobserved_weight_ == pytest.approx(model.unobserved_weight_ / 2)
    explicit = IALS(factors=4, epochs=2, unobserved_weight=0.25).fit(data, FitOptions(seed=0))
    assert explicit.unobserved_weight_ == 0.25
    # The same fit as the rule's α₀ given explicitly.
    same = IALS(factors=4, epochs=2, unobserved_weight=model.unobserved_weight_)
    same.fit(data, FitOptions(seed=0, threads=1))
    np.testing.assert_allclose(same.item_factors_, model.item_factors_, rtol=1e-5, atol=1e-6)
    loaded = IALS.load(model.save(tmp_path / "ials"))
    assert loaded.unobserved_weight_ == model.unobserved_weight_
    users = np.arange(5)
    np.testing.assert_allclose(
        loaded.fold_in(Query.users(users)), model.user_factors_[users], rtol=1e-4, atol=1e-5
    )

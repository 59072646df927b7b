"""fedmf: the device's update against a slow oracle, the server step, the simulator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from privrank.errors import ConfigError
from privrank.federated import (
    FederatedSettings,
    FedMFClient,
    FedMFServer,
    MFBroadcast,
    simulate,
)
from privrank.federated.simulator import _histories
from privrank.models import FedMF, FedMFConfig, FitOptions, Recommender
from privrank.models._query import Query
from privrank.testing import synthetic_interactions

CONFIG = FedMFConfig(factors=6, regularization=0.05, unobserved_weight=0.1)


def _oracle(history: np.ndarray, h: np.ndarray, config: FedMFConfig) -> tuple:
    """One device, written out: its exact factor, its loss and its update vector."""
    n_items, d = h.shape
    lam = config.regularization * (len(history) + config.unobserved_weight * n_items) ** (
        config.regularization_exponent
    )
    hi = h[history].astype(np.float64)
    gram = h.T.astype(np.float64) @ h
    system = config.unobserved_weight * gram + hi.T @ hi + lam * np.eye(d)
    w = np.linalg.solve(system, hi.sum(axis=0))
    loss = ((hi @ w - 1) ** 2).sum() + config.unobserved_weight * w @ gram @ w + lam * w @ w
    # The half-gradient of the loss with respect to H at w (w held fixed).
    grad = config.unobserved_weight * np.outer(h @ w, w)
    grad[history] += np.outer(hi @ w - 1, w)
    return w, loss, np.concatenate([-grad.ravel(), np.outer(w, w).ravel()])


def _loss_at(history: np.ndarray, h: np.ndarray, w: np.ndarray, config: FedMFConfig) -> float:
    lam = config.regularization * (len(history) + config.unobserved_weight * h.shape[0]) ** (
        config.regularization_exponent
    )
    pred = h @ w
    return float(
        ((pred[history] - 1) ** 2).sum() + config.unobserved_weight * (pred**2).sum() + lam * w @ w
    )


@pytest.fixture
def batch() -> tuple[sp.csr_matrix, np.ndarray]:
    data = synthetic_interactions(n_users=12, n_items=15, per_user=5, seed=3)
    rng = np.random.default_rng(0)
    return _histories(data), (rng.standard_normal((15, 6)) * 0.3).astype(np.float32)


def test_device_updates_equal_the_oracle_in_a_batch_and_one_by_one(batch):
    histories, h = batch
    client = FedMFClient(CONFIG, h.shape[0])
    updates, losses = client.local_update(histories, MFBroadcast.of(h))
    dense = updates.dense(0, len(updates))
    for b in range(histories.shape[0]):
        items = histories[b].indices
        w, loss, vector = _oracle(items, h, CONFIG)
        np.testing.assert_allclose(updates.user_factors[b], w, rtol=2e-3, atol=1e-5)
        np.testing.assert_allclose(losses[b], loss, rtol=2e-3, atol=1e-5)
        np.testing.assert_allclose(dense[b], vector, rtol=5e-3, atol=5e-5)
        one, one_loss = client.local_update(histories[b : b + 1], MFBroadcast.of(h))
        np.testing.assert_allclose(one.dense(0, 1)[0], dense[b], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(one_loss[0], losses[b], rtol=1e-9)
    np.testing.assert_allclose(updates.norms(), np.linalg.norm(dense, axis=1), rtol=1e-6)
    weights = np.linspace(0.0, 2.0, len(updates))
    np.testing.assert_allclose(updates.weighted_sum(weights), weights @ dense, rtol=1e-6, atol=1e-9)


def test_the_item_update_is_minus_the_half_gradient_by_finite_differences(batch):
    histories, h = batch
    items = histories[2].indices
    w, _, vector = _oracle(items, h, CONFIG)
    h64 = h.astype(np.float64)
    step = 1e-6
    for j, k in [(int(items[0]), 1), (int(items[-1]), 4), (14, 0)]:
        up, down = h64.copy(), h64.copy()
        up[j, k] += step
        down[j, k] -= step
        numeric = (_loss_at(items, up, w, CONFIG) - _loss_at(items, down, w, CONFIG)) / (2 * step)
        # the regulariser does not depend on H; the update is minus half the gradient
        assert vector[j * 6 + k] == pytest.approx(-numeric / 2, rel=1e-4, abs=1e-6)


def _settings(**overrides) -> FederatedSettings:
    values = {
        "rounds": 6,
        "clients_per_round": 20,
        "server_learning_rate": 0.5,
        "batch_size": 7,
        "learning_rate_schedule": "constant",  # a run extended on resume keeps its rates
    }
    return FederatedSettings(**(values | overrides))


def test_federated_training_lowers_the_loss_and_learns_the_clusters(tmp_path):
    data = synthetic_interactions(n_users=80, n_items=30, per_user=6, seed=1)
    reports = []
    result = simulate(
        CONFIG,
        data,
        _settings(rounds=12, clients_per_round=80, server_learning_rate=1.0),
        run_dir=tmp_path / "run",
        progress=reports.append,
    )
    assert [r.round for r in reports] == list(range(1, 13))
    assert reports[-1].loss < 0.6 * reports[0].loss
    model = result.model
    # clustered data: a user's top items are mostly of the user's own cluster (3 clusters)
    top, _ = model.recommend(Query.users(np.arange(60)), k=3)
    own = (top % 3) == (np.arange(60)[:, None] % 3)
    assert own.mean() > 0.8


def test_the_simulator_is_deterministic_for_a_seed_and_resumes_exactly(tmp_path):
    data = synthetic_interactions(n_users=50, n_items=20, per_user=5, seed=2)
    one = simulate(CONFIG, data, _settings(), run_dir=tmp_path / "a")
    two = simulate(CONFIG, data, _settings(), run_dir=tmp_path / "b")
    np.testing.assert_array_equal(one.model.item_factors_, two.model.item_factors_)
    other = simulate(CONFIG, data, _settings(seed=5), run_dir=tmp_path / "c")
    assert not np.array_equal(one.model.item_factors_, other.model.item_factors_)
    # three rounds, then a resumed run to six: the same as six rounds straight
    simulate(CONFIG, data, _settings(rounds=3), run_dir=tmp_path / "d")
    with pytest.raises(ConfigError, match="another run"):
        simulate(CONFIG, data, _settings(), run_dir=tmp_path / "d", resume=True)
    with pytest.raises(ConfigError, match="--resume"):
        simulate(CONFIG, data, _settings(rounds=3), run_dir=tmp_path / "d")
    state = json.loads((tmp_path / "d" / "state.json").read_text())
    state["identity"]["settings"]["rounds"] = 6  # the operator extends the run
    (tmp_path / "d" / "state.json").write_text(json.dumps(state))
    resumed = simulate(CONFIG, data, _settings(), run_dir=tmp_path / "d", resume=True)
    assert resumed.rounds_run == 3
    np.testing.assert_array_equal(resumed.model.item_factors_, one.model.item_factors_)
    lines = (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2, 3, 4, 5, 6]


def test_the_model_saves_loads_and_folds_in_like_a_device(tmp_path):
    data = synthetic_interactions(n_users=40, n_items=20, per_user=5, seed=4)
    model = simulate(CONFIG, data, _settings(), run_dir=tmp_path / "run").model
    model.save(tmp_path / "model")
    loaded = Recommender.load(tmp_path / "model")
    assert isinstance(loaded, FedMF)
    users = np.arange(10)
    np.testing.assert_allclose(loaded.score(users), model.score(users), rtol=1e-6)
    histories = Query.histories(
        [
            model.history_items_[model.history_indptr_[u] : model.history_indptr_[u + 1]]
            for u in users
        ]
    )
    np.testing.assert_allclose(model.score(histories), model.score(users), rtol=1e-5)
    # what a device computes for its history is the fold-in
    client = FedMFClient(CONFIG, data.n_items)
    updates, _ = client.local_update(_histories(data)[users], MFBroadcast.of(model.item_factors_))
    np.testing.assert_allclose(model.fold_in(histories), updates.user_factors, rtol=1e-5)


def test_fit_is_the_simulation_in_which_every_device_takes_part(tmp_path):
    data = synthetic_interactions(n_users=50, n_items=20, per_user=5, seed=2)
    config = CONFIG.model_copy(update={"epochs": 4, "learning_rate": 0.5})
    fitted = FedMF(config).fit(data, FitOptions(seed=3))
    # Poisson sampling at q = 1 samples every device in every round
    simulated = simulate(
        config,
        data,
        _settings(
            rounds=4,
            clients_per_round=50,
            seed=3,
            batch_size=9,
            learning_rate_schedule="constant",
        ),
        run_dir=tmp_path / "run",
    )
    np.testing.assert_allclose(
        fitted.item_factors_, simulated.model.item_factors_, rtol=1e-5, atol=1e-6
    )


def test_the_unobserved_weight_rule_is_ials_rule_fixed_from_the_released_counts(tmp_path):
    from privrank.models.ials import IALS, IALSConfig

    data = synthetic_interactions(n_users=50, n_items=20, per_user=5, seed=2)
    histories = _histories(data)
    rule = FedMFConfig(factors=6, regularization=0.05, unobserved_ratio=3.0)
    # the oracle: iALS's own rule on the same matrix, and the hand formula
    expected = IALS.resolve_unobserved_weight(IALSConfig(unobserved_ratio=3.0), histories)
    assert expected == pytest.approx(3.0 * histories.nnz / (50 * 20))
    counts = np.asarray(histories.sum(axis=0)).ravel()
    assert rule.resolved(counts, 50).alpha0 == pytest.approx(expected)
    assert CONFIG.resolved(counts, 50) is CONFIG  # an explicit α₀ is kept
    with pytest.raises(ConfigError, match="resolve"):
        FedMFClient(rule, 20).local_update(histories, MFBroadcast.of(np.ones((20, 6), np.float32)))
    # a run with the rule is the run with that α₀ given explicitly (non-private counts are
    # exact), and the model keeps the α₀ it was trained with through save and load
    explicit = rule.model_copy(update={"unobserved_weight": expected})
    by_rule = simulate(rule, data, _settings(), run_dir=tmp_path / "a").model
    given = simulate(explicit, data, _settings(), run_dir=tmp_path / "b").model
    np.testing.assert_allclose(by_rule.item_factors_, given.item_factors_, rtol=1e-6)
    assert by_rule.unobserved_weight_ == pytest.approx(expected)
    by_rule.save(tmp_path / "model")
    loaded = Recommender.load(tmp_path / "model")
    assert loaded.unobserved_weight_ == pytest.approx(expected)
    users = np.arange(10)
    np.testing.assert_allclose(loaded.score(users), given.score(users), rtol=1e-5)
    fitted = FedMF(rule.model_copy(update={"epochs": 2})).fit(data, FitOptions(seed=0))
    assert fitted.unobserved_weight_ == pytest.approx(expected)


def _dense_step(h, mean, config, population, counts, rate):
    """The server step written out item by item: symmetrise and PSD-project the Gramian part,
    then one dense solve of ``((α₀ + ñ_j⁺/N) Ĝ_W + λ_j I) s_j = g_j`` per item, with
    ``λ_j = λ max(ñ_j⁺ + α₀N, 1)^ν``."""
    n_items, d = h.shape
    h = h.astype(np.float64)
    gram = mean[n_items * d :].reshape(d, d) * population
    values, vectors = np.linalg.eigh((gram + gram.T) / 2)
    projected = vectors @ np.diag(np.clip(values, 0.0, None)) @ vectors.T
    alpha0 = config.unobserved_weight
    positive = np.clip(counts, 0.0, None)
    ridge = config.regularization * np.maximum(positive + alpha0 * population, 1.0) ** (
        config.regularization_exponent
    )
    gradient = -population * mean[: n_items * d].reshape(n_items, d) + ridge[:, None] * h
    out = np.empty_like(h)
    for j in range(n_items):
        system = (alpha0 + positive[j] / population) * projected + ridge[j] * np.eye(d)
        out[j] = h[j] - rate * np.linalg.solve(system, gradient[j])
    return out


def test_a_noisy_release_with_alpha0_zero_and_negative_counts_steps_to_finite_factors():
    """The failing draw of the distributed-DP CLI run, constructed: α₀ = 0 (what the rule gave
    for noisy counts summing to at most 0 before its floor; here given), some counts negative
    (clipped to 0), and the noisy Gramian part indefinite. Those items' systems were the zero
    matrix (NaN factors, then every device's solve failed); with the ridge floor the step is
    the dense solve above."""
    rng = np.random.default_rng(7)
    n_items, d, population = 12, 5, 60
    config = FedMFConfig(factors=d, regularization=0.03, unobserved_weight=0.0)
    counts = rng.normal(0.0, 40.0, n_items)
    counts[:3] = [-25.0, 0.0, -0.5]  # noise below zero: no count, no ridge without the floor
    assert counts.sum() <= 0
    h = (rng.standard_normal((n_items, d)) * 0.05).astype(np.float32)
    mean = rng.normal(0.0, 0.1, n_items * d + d * d)  # noise only: Ĝ_W indefinite
    gram = mean[n_items * d :].reshape(d, d)
    assert np.linalg.eigvalsh(gram + gram.T).min() < 0
    server = FedMFServer(config, population, counts, learning_rate=0.5)
    stepped = server.step(h, mean)
    assert np.isfinite(stepped).all()
    expected = _dense_step(h, mean, config, population, counts, 0.5)
    np.testing.assert_allclose(stepped, expected, rtol=1e-4, atol=1e-6)
    # the floor is λ for the items without a count: their system is λI at least
    np.testing.assert_allclose(server.item_regularization[:3], 0.03)


def test_with_bases_of_at_least_one_pair_the_floor_changes_nothing():
    """Where every ``ñ_j⁺ + α₀N ≥ 1`` the step is iALS's weighting unchanged (the dense
    oracle's floor never binds), here with the default ν = 1 and an item nobody holds."""
    rng = np.random.default_rng(3)
    n_items, d, population = 10, 4, 30
    config = FedMFConfig(factors=d, regularization=0.05, unobserved_weight=0.1)
    counts = rng.integers(0, 9, n_items).astype(np.float64)
    counts[0] = 0.0  # α₀N = 3: still at least one pair
    server = FedMFServer(config, population, counts, learning_rate=1.0)
    np.testing.assert_allclose(server.item_regularization, 0.05 * (counts + 0.1 * population))
    h = (rng.standard_normal((n_items, d)) * 0.1).astype(np.float32)
    mean = rng.normal(0.0, 0.05, n_items * d + d * d)
    expected = _dense_step(h, mean, config, population, counts, 1.0)
    np.testing.assert_allclose(server.step(h, mean), expected, rtol=1e-4, atol=1e-6)


def test_alpha0_zero_and_an_item_nobody_holds_fit_without_dividing_by_zero():
    """A non-private fit with ``unobserved_weight=0``: the unused item (the synthetic data's
    last) has no pair weighing on it and got a zero system (the fit failed with "not positive
    definite"). With the floor its gradient is λh and its step divides by λ: each round
    multiplies it by ``1 − η``, and with η = 1 it is 0, as iALS sets an empty row."""
    data = synthetic_interactions(n_users=40, n_items=20, per_user=5, seed=4)
    assert data.to_csr()[:, -1].nnz == 0
    for rate, epochs in ((0.5, 3), (1.0, 1)):
        config = FedMFConfig(
            factors=6, regularization=0.05, unobserved_weight=0.0, epochs=epochs,
            learning_rate=rate,
        )  # fmt: skip
        model = FedMF(config).fit(data, FitOptions(seed=0))
        assert np.isfinite(model.item_factors_).all()
        start = FedMFServer.initial_factors(config, data.n_items, 0)[-1]
        np.testing.assert_allclose(
            model.item_factors_[-1], (1 - rate) ** epochs * start, rtol=1e-5, atol=1e-9
        )
        assert np.isfinite(model.score(np.arange(10))).all()


def test_the_unobserved_weight_rule_counts_at_least_one_pair_per_device():
    """Noisy counts summing below ``N`` (here below 0: the distributed-DP CLI run's failing
    draw) give the rule's floor ``ρ/|I|``, not α₀ = 0; counts summing to at least ``N`` give
    the rule ``ρ Σñ/(N|I|)`` unchanged (iALS's, see the test above)."""
    rule = FedMFConfig(factors=6, unobserved_ratio=4.0)
    population, n_items = 60, 30
    rng = np.random.default_rng(1)
    noisy = rng.normal(0.0, 40.0, n_items)
    noisy -= noisy.mean() + 0.5  # sums to -15
    assert rule.resolved(noisy, population).alpha0 == pytest.approx(4.0 / n_items)
    assert rule.resolved(np.full(n_items, 1.9), population).alpha0 == pytest.approx(4.0 / n_items)
    exact = rng.integers(0, 25, n_items).astype(np.float64)
    assert exact.sum() >= population
    expected = 4.0 * exact.sum() / (population * n_items)
    assert rule.resolved(exact, population).alpha0 == pytest.approx(expected)

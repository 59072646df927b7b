"""Label DP: RRWithPrior's probabilities, optimality, accounting, and multi-stage training."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from privrank.errors import ConfigError
from privrank.privacy.label_dp import (
    LabelBatch,
    RRWithPriorMechanism,
    multi_stage_train,
    optimal_k,
    posterior_train,
    response_epsilon,
    rr_posterior,
    rr_with_prior,
    rr_with_prior_distribution,
    user_level_epsilon,
)
from privrank.privacy.mechanism import mechanism_class


def test_distribution_matches_the_formula_by_hand():
    eps = 1.0
    prior = np.array([0.5, 0.3, 0.15, 0.05])
    # objective e^ε/(e^ε+k-1) · mass(top k): k=1: 0.5, k=2: e/(e+1)·0.8 = 0.5848,
    # k=3: e/(e+2)·0.95 = 0.5473, k=4: e/(e+3)·1 = 0.4754 -> k* = 2.
    k_star, order = optimal_k(prior[None, :], eps)
    assert k_star[0] == 2 and list(order[0, :2]) == [0, 1]
    e = math.e
    assert np.allclose(rr_with_prior_distribution(prior, 0, eps), [e / (e + 1), 1 / (e + 1), 0, 0])
    assert np.allclose(rr_with_prior_distribution(prior, 1, eps), [1 / (e + 1), e / (e + 1), 0, 0])
    assert np.allclose(rr_with_prior_distribution(prior, 3, eps), [0.5, 0.5, 0, 0])


def test_samples_follow_the_distribution_chi_square():
    rng = np.random.default_rng(0)
    eps, n = 0.7, 60_000
    prior = np.array([0.3, 0.25, 0.25, 0.2])
    for label in range(4):
        expected = rr_with_prior_distribution(prior, label, eps)
        out = rr_with_prior(np.full(n, label), np.tile(prior, (n, 1)), eps, rng)
        observed = np.bincount(out, minlength=4)
        support = expected > 0
        assert observed[~support].sum() == 0
        statistic = stats.chisquare(observed[support], n * expected[support])
        assert statistic.pvalue > 1e-3, (label, observed, expected)


@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0, 2.0, 4.0])
def test_every_output_ratio_is_at_most_e_to_the_epsilon(eps):
    rng = np.random.default_rng(1)
    for _ in range(50):
        prior = rng.dirichlet(np.full(5, 0.5))
        dists = np.array([rr_with_prior_distribution(prior, y, eps) for y in range(5)])
        for a, b in itertools.permutations(range(5), 2):
            support = dists[b] > 0
            assert np.all(dists[a][~support] == 0)
            assert np.max(dists[a][support] / dists[b][support]) <= math.exp(eps) * (1 + 1e-12)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_the_prior_restricted_set_is_optimal_against_brute_force(k):
    rng = np.random.default_rng(k)
    for eps in (0.3, 1.0, 3.0):
        for _ in range(40):
            prior = rng.dirichlet(np.ones(k))
            # Every subset S: RR restricted to S is right with prob e^ε/(e^ε+|S|-1)·prior(S).
            best = max(
                math.exp(eps) / (math.exp(eps) + len(s) - 1) * prior[list(s)].sum()
                for size in range(1, k + 1)
                for s in itertools.combinations(range(k), size)
            )
            correct = sum(prior[y] * rr_with_prior_distribution(prior, y, eps)[y] for y in range(k))
            assert correct == pytest.approx(best, rel=1e-12)


def test_uniform_prior_is_k_ary_randomised_response():
    eps, k = 1.3, 3
    dist = rr_with_prior_distribution(np.full(k, 1 / k), 1, eps)
    keep = math.exp(eps) / (math.exp(eps) + k - 1)
    assert np.allclose(dist, [(1 - keep) / 2, keep, (1 - keep) / 2])


def test_epsilon_inf_returns_the_labels():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 1000)
    prior = rng.dirichlet(np.ones(3), 1000)
    assert np.array_equal(rr_with_prior(labels, prior, math.inf, rng), labels)


@pytest.mark.parametrize(("eps", "k"), [(0.5, 2), (1.0, 2), (2.0, 2), (4.0, 2), (1.0, 10)])
def test_epsilon_pinned_by_the_accountant(eps, k):
    assert response_epsilon(eps, k) == pytest.approx(eps, abs=2e-3)


def test_mechanism_interface_and_guarantee():
    assert mechanism_class("label-rr-prior") is RRWithPriorMechanism
    mech = RRWithPriorMechanism(1.0)
    assert mech.releases() == ()
    assert mech.calibrate(1.0, 0.0, "pld") == pytest.approx(math.e / (math.e + 1))
    guarantee = mech.guarantee(stages=2, max_rows_per_user=20)
    assert guarantee.user_epsilon == 20.0 and guarantee.accountant_epsilon == pytest.approx(
        1, abs=2e-3
    )
    assert "Features and participation are not protected" in guarantee.describe()
    assert user_level_epsilon(0.5, 4) == 2.0
    with pytest.raises(ConfigError):
        RRWithPriorMechanism(0.0)
    with pytest.raises(ConfigError):
        rr_with_prior(np.array([0, 2]), np.full((2, 2), 0.5), 1.0, np.random.default_rng())
    batch = mech.add_noise(
        LabelBatch(np.zeros(10, int), np.full((10, 2), 0.5)), np.random.default_rng(0)
    )
    assert batch.labels.shape == (10,)


def _mean_trainer(features, keep=1.0):
    """A tiny model: P(label | group) by counting noisy labels per group (feature), with the
    binary randomised response of keep probability ``keep`` inverted."""

    def trainer(rows, labels):
        table = np.full((features.max() + 1, 2), 1.0)
        np.add.at(table, (features[rows], labels), 1.0)
        table /= table.sum(axis=1, keepdims=True)
        if keep < 1.0:
            one = np.clip((table[:, 1] - (1 - keep)) / (2 * keep - 1), 0.0, 1.0)
            table = np.column_stack([1 - one, one])
        return lambda query: table[features[query]]

    return trainer


def test_multi_stage_with_no_noise_trains_on_the_true_labels():
    rng = np.random.default_rng(3)
    features = rng.integers(0, 10, 5000)
    labels = (rng.random(5000) < features / 10).astype(int)
    predictor, noisy = multi_stage_train(
        labels, _mean_trainer(features), RRWithPriorMechanism(math.inf), rng
    )
    assert np.array_equal(noisy, labels)
    reference = _mean_trainer(features)(np.arange(5000), labels)
    assert np.allclose(predictor(np.arange(5000)), reference(np.arange(5000)))


def test_multi_stage_randomises_every_label_once_and_uses_the_prior():
    rng = np.random.default_rng(4)
    n = 40_000
    features = rng.integers(0, 10, n)
    labels = (rng.random(n) < np.where(features < 5, 0.1, 0.9)).astype(int)
    reports = []
    keep = math.e / (math.e + 1)
    _, noisy = multi_stage_train(
        labels,
        _mean_trainer(features, keep),
        RRWithPriorMechanism(1.0),
        rng,
        stage_fractions=(0.3, 0.7),
        on_stage=reports.append,
    )
    assert np.all(noisy >= 0)
    assert reports[0].agreement == pytest.approx(keep, abs=0.02)  # uniform prior: plain RR
    assert reports[0].mean_k == 2
    # Stage 2's (debiased) prior is confident (0.9 / 0.1 > keep): k* = 1 and the output is the
    # prior's top class, right 90 % of the time: better than plain RR.
    assert reports[1].mean_k == pytest.approx(1.0)
    assert reports[1].agreement > keep + 0.1
    with pytest.raises(ConfigError):
        multi_stage_train(
            labels,
            _mean_trainer(features),
            RRWithPriorMechanism(1.0),
            rng,
            stage_fractions=(0.5, 0.6),
        )


def _soft_mean_trainer(features):
    """P(y = 1 | group) as the mean target per group; binary responses debiased by ``debias``."""

    def trainer(rows, targets, debias):
        sums = np.bincount(features[rows], weights=targets, minlength=features.max() + 1)
        counts = np.bincount(features[rows], minlength=features.max() + 1)
        mean = (sums + 0.5) / (counts + 1.0)
        if debias is not None:
            mean = np.clip((mean - (1 - debias)) / (2 * debias - 1), 0.0, 1.0)
        return lambda query: mean[features[query]]

    return trainer


def test_rr_posterior_by_hand():
    q = math.e / (math.e + 1)
    got = rr_posterior(np.array([1, 0]), np.array([0.3, 0.3]), 1.0)
    assert got[0] == pytest.approx(q * 0.3 / (q * 0.3 + (1 - q) * 0.7))
    assert got[1] == pytest.approx((1 - q) * 0.3 / ((1 - q) * 0.3 + q * 0.7))
    assert np.allclose(rr_posterior(np.array([1, 0]), np.array([0.3, 0.9]), math.inf), [1, 0])
    with pytest.raises(ConfigError):
        rr_posterior(np.array([2]), np.array([0.5]), 1.0)


def test_rr_posterior_is_unbiased_under_the_true_prior():
    # E[posterior | x] = P(y = 1 | x) when the prior is the truth (total expectation).
    rng = np.random.default_rng(5)
    n = 200_000
    p = np.where(rng.random(n) < 0.5, 0.2, 0.7)
    labels = (rng.random(n) < p).astype(int)
    noisy = rr_with_prior(labels, np.full((n, 2), 0.5), 1.0, rng)
    posterior = rr_posterior(noisy, p, 1.0)
    for value in (0.2, 0.7):
        assert posterior[p == value].mean() == pytest.approx(value, abs=0.005)
    # ... with less variance than the debiased response (the point of the posterior)
    q = math.e / (math.e + 1)
    debiased = (noisy - (1 - q)) / (2 * q - 1)
    assert posterior.var() < 0.5 * debiased.var()


def test_posterior_train_with_no_noise_trains_on_the_true_labels():
    rng = np.random.default_rng(6)
    features = rng.integers(0, 10, 5000)
    labels = (rng.random(5000) < features / 10).astype(int)
    predictor, noisy, posterior = posterior_train(
        labels, _soft_mean_trainer(features), RRWithPriorMechanism(math.inf), rng
    )
    assert np.array_equal(noisy, labels) and np.allclose(posterior, labels)
    reference = _soft_mean_trainer(features)(np.arange(5000), labels.astype(float), None)
    assert np.allclose(predictor(np.arange(5000)), reference(np.arange(5000)))


def test_posterior_train_randomises_each_label_once_by_plain_rr():
    n = 50_000
    rng = np.random.default_rng(7)
    features = rng.integers(0, 10, n)
    truth = np.where(features < 5, 0.1, 0.6)
    labels = (rng.random(n) < truth).astype(int)
    reports = []
    predictor, noisy, posterior = posterior_train(
        labels,
        _soft_mean_trainer(features),
        RRWithPriorMechanism(1.0),
        np.random.default_rng(8),
        folds=3,
        rounds=2,
        on_stage=reports.append,
    )
    # The responses are exactly uniform-prior RRWithPrior on the same noise stream: the
    # randomisation reads nothing but the label (the guarantee is one response per label).
    plain = rr_with_prior(labels, np.full((n, 2), 0.5), 1.0, np.random.default_rng(8))
    assert np.array_equal(noisy, plain)
    assert [r.stage for r in reports] == [1, 2]
    q = math.e / (math.e + 1)
    assert reports[0].agreement == pytest.approx(q, abs=0.01)
    # The final model recovers the per-group click rates, and the posteriors are closer to the
    # true labels (squared error: the posterior is the Bayes estimate) than the responses.
    assert np.allclose(predictor(np.arange(n)), truth, atol=0.03)
    brier = np.mean((posterior - labels) ** 2)
    assert brier < 0.6 * np.mean((noisy - labels) ** 2)
    assert reports[-1].extra["posterior_brier"] == pytest.approx(brier)
    with pytest.raises(ConfigError):
        posterior_train(labels, _soft_mean_trainer(features), RRWithPriorMechanism(1.0, 3), rng)
    with pytest.raises(ConfigError):
        posterior_train(
            labels, _soft_mean_trainer(features), RRWithPriorMechanism(1.0), rng, folds=1
        )

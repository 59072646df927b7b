"""Count Mean Sketch and Hadamard Count Mean Sketch: privacy, unbiasedness, variance, accounting.

Oracles: the exact output distribution of the randomisers enumerated by hand on a tiny m (the
likelihood ratio bound is checked there, and the implementation's output frequencies against
it); the paper's mean and the variance formula of :mod:`privrank.privacy.local_dp.sketch` for
simulations over fresh hash families; dp_accounting for the composition of reports.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from privrank.errors import ConfigError
from privrank.privacy.local_dp import (
    CMSReports,
    HCMSReports,
    LocalSketch,
    LocalSketchMechanism,
    SketchConfig,
    collection_epsilon,
    device_reports,
    estimator_variance,
)
from privrank.privacy.local_dp.sketch import hadamard_entries
from privrank.privacy.mechanism import mechanism_class

ITEMS = [f"item-{i}" for i in range(12)]


def _exact_distribution(sketch: LocalSketch, item: int) -> dict[tuple, float]:
    """P[report | item] for every possible report, enumerated from the paper's definition."""
    cfg = sketch.config
    p = cfg.keep_probability
    out: dict[tuple, float] = {}
    for j in range(cfg.k):
        h = int(sketch.table[j, item])
        if cfg.kind in ("cms", "ocms"):
            on, off = cfg.unary_probabilities  # P[+1] at h and elsewhere
            plus = np.full(cfg.m, off)
            plus[h] = on
            for signs in itertools.product((-1, 1), repeat=cfg.m):
                prob = np.prod(np.where(np.array(signs) == 1, plus, 1 - plus)) / cfg.k
                out[(j, signs)] = out.get((j, signs), 0.0) + float(prob)
        else:
            for col in range(cfg.m):
                w = int(hadamard_entries(np.array([col]), np.array([h]))[0])
                for bit in (-1, 1):
                    prob = (p if bit == w else 1 - p) / (cfg.k * cfg.m)
                    out[(j, col, bit)] = prob
    return out


@pytest.mark.parametrize("kind,m", [("cms", 4), ("hcms", 4), ("ocms", 4)])
@pytest.mark.parametrize("epsilon", [0.5, 2.0])
def test_likelihood_ratio_is_at_most_e_epsilon_by_exact_enumeration(kind, m, epsilon):
    sketch = LocalSketch(SketchConfig(kind=kind, epsilon=epsilon, m=m, k=3, hash_seed=1), ITEMS)
    dists = [_exact_distribution(sketch, d) for d in range(len(ITEMS))]
    for dist in dists:
        assert sum(dist.values()) == pytest.approx(1.0)
    worst = max(a[o] / b[o] for a, b in itertools.permutations(dists, 2) for o in a if a[o] > 0)
    assert worst <= math.exp(epsilon) * (1 + 1e-9)
    # Two items hashed apart in some row reach the bound: the analysis is tight.
    assert worst == pytest.approx(math.exp(epsilon), rel=1e-9)


@pytest.mark.parametrize("kind", ["cms", "hcms", "ocms"])
def test_randomiser_output_frequencies_match_the_exact_distribution(kind):
    sketch = LocalSketch(SketchConfig(kind=kind, epsilon=1.0, m=4, k=2, hash_seed=3), ITEMS)
    exact = _exact_distribution(sketch, 5)
    n = 200_000
    reports = sketch.randomise(np.full(n, 5), np.random.default_rng(0))
    if isinstance(reports, CMSReports):
        keys = [
            (int(j), tuple(int(x) for x in v))
            for j, v in zip(reports.rows, reports.vectors, strict=True)
        ]
    else:
        assert isinstance(reports, HCMSReports)
        keys = list(
            zip(reports.rows.tolist(), reports.columns.tolist(), reports.bits.tolist(), strict=True)
        )
    observed: dict[tuple, int] = {}
    for key in keys:
        observed[key] = observed.get(key, 0) + 1
    assert set(observed) <= set(exact)
    for key, prob in exact.items():
        sd = math.sqrt(n * prob * (1 - prob))
        assert abs(observed.get(key, 0) - n * prob) <= 5 * sd + 1, key


def _zipf_counts(n_items: int, n: int, rng: np.random.Generator) -> np.ndarray:
    weights = 1.0 / np.arange(1, n_items + 1)
    return rng.multinomial(n, weights / weights.sum())


@pytest.mark.parametrize("kind", ["cms", "hcms", "ocms"])
def test_estimator_is_unbiased_with_the_stated_variance(kind):
    """Over fresh hash families and randomisers: mean f(d), variance the formula's."""
    rng = np.random.default_rng(7)
    counts = _zipf_counts(len(ITEMS), 3000, rng)
    items = np.repeat(np.arange(len(ITEMS)), counts)
    config = SketchConfig(kind=kind, epsilon=2.0, m=16, k=8)
    reps = 400
    estimates = np.empty((reps, len(ITEMS)))
    for r in range(reps):
        sketch = LocalSketch(config.model_copy(update={"hash_seed": r}), ITEMS)
        sketch.collect(items, rng, batch_size=1024)
        estimates[r] = sketch.estimate()
    variance = estimator_variance(config, counts)
    mean_error = np.abs(estimates.mean(axis=0) - counts) / np.sqrt(variance / reps)
    assert mean_error.max() < 4.5
    ratio = estimates.var(axis=0, ddof=1) / variance
    # The sample variance of 400 draws has a relative sd of about √(2/399) ≈ 0.07.
    assert np.all((ratio > 0.72) & (ratio < 1.32)), ratio
    assert 0.9 < ratio.mean() < 1.1


def test_without_noise_cms_rows_sum_to_the_plain_hash_counts():
    """ε = 50: the debiased sketch is, row by row, the count of reports per hash bucket."""
    config = SketchConfig(kind="cms", epsilon=50.0, m=16, k=4, hash_seed=5)
    sketch = LocalSketch(config, ITEMS)
    rng = np.random.default_rng(3)
    items = rng.integers(0, len(ITEMS), 5000)
    reports = sketch.randomise(items, rng)
    sketch.add(reports)
    plain = np.zeros((config.k, config.m))
    np.add.at(plain, (reports.rows, sketch.table[reports.rows, items]), config.k)
    np.testing.assert_allclose(sketch.debiased_sketch(), plain, atol=1e-6)
    # … and the estimate is the plain count-mean decoding of those buckets.
    gathered = plain[np.arange(config.k)[:, None], sketch.table].mean(axis=0)
    expected = config.m / (config.m - 1) * (gathered - len(items) / config.m)
    np.testing.assert_allclose(sketch.estimate(), expected, atol=1e-6)


def test_hcms_transform_recovers_the_plain_hash_counts_in_expectation():
    config = SketchConfig(kind="hcms", epsilon=50.0, m=8, k=2, hash_seed=5)
    sketch = LocalSketch(config, ITEMS)
    rng = np.random.default_rng(4)
    items = rng.integers(0, len(ITEMS), 200_000)
    reports = sketch.randomise(items, rng)
    sketch.add(reports)
    plain = np.zeros((config.k, config.m))
    np.add.at(plain, (reports.rows, sketch.table[reports.rows, items]), config.k)
    # Each cell is a sum of ±k·c Hadamard terms: sd ≈ k √(n_row) per cell.
    sd = config.k * math.sqrt(len(items) / config.k)
    assert np.abs(sketch.debiased_sketch() - plain).max() < 5 * sd


@pytest.mark.parametrize("kind", ["cms", "hcms", "ocms"])
@pytest.mark.parametrize(("epsilon", "reports", "days"), [(4.0, 1, 1), (1.0, 3, 1), (0.5, 4, 7)])
def test_collection_epsilon_is_pinned(kind, epsilon, reports, days):
    """Pure DP: R reports a day for D days compose to D·R·ε (PLD at δ = 0, pinned)."""
    config = SketchConfig(kind=kind, epsilon=epsilon, m=8)
    got = collection_epsilon(config, reports, days)
    assert got == pytest.approx(epsilon * reports * days, rel=1e-3)
    assert got >= epsilon * reports * days * (1 - 1e-9)  # never below the truth (pessimistic)


def test_randomized_response_accounting_matches_the_closed_form():
    """At δ > 0 the PLD of n responses at ε is below n·ε; the exact δ(ε') of n binary
    responses (a binomial tail) cross-checks dp_accounting's answer."""
    from scipy.stats import binom

    from privrank.privacy.accounting import randomized_response_epsilon

    eps, n, delta = 1.0, 10, 1e-3
    got = randomized_response_epsilon(eps, n, delta)
    p = math.exp(eps) / (1 + math.exp(eps))

    def exact_delta(target: float) -> float:
        # Privacy loss of n responses: (n − 2F)·ε with F ~ Binomial(n, 1 − p) flips.
        flips = np.arange(n + 1)
        loss = (n - 2 * flips) * eps
        pmf = binom.pmf(flips, n, 1 - p)
        return float(np.sum(pmf * np.maximum(0.0, 1 - np.exp(target - loss))))

    assert exact_delta(got) <= delta * (1 + 1e-6)
    assert exact_delta(got - 0.01) > delta  # and it is tight to the discretisation
    assert got < n * eps


def test_mechanism_interface_and_guarantee():
    sketch = LocalSketch(SketchConfig(kind="cms", epsilon=2.0, m=16, k=4), ITEMS)
    mechanism = LocalSketchMechanism(sketch, reports_per_user_per_day=3, days=2)
    assert mechanism_class("ldp-sketch") is LocalSketchMechanism
    assert mechanism.releases() == ()
    assert mechanism.calibrate(2.0, 0.0, "pld") == pytest.approx(1 / (1 + math.exp(-1.0)))
    estimates = mechanism.add_noise(np.arange(len(ITEMS)), np.random.default_rng(0))
    assert estimates.shape == (len(ITEMS),)
    guarantee = mechanism.guarantee()
    assert guarantee.epsilon_per_user_per_day == pytest.approx(6.0, rel=1e-3)
    assert guarantee.epsilon_total == pytest.approx(12.0, rel=1e-3)
    assert guarantee.n_reports == len(ITEMS)
    assert "nobody" in mechanism.describe()


def test_bad_parameters_and_reports_are_refused():
    with pytest.raises(ConfigError, match="power of two"):
        SketchConfig(kind="hcms", epsilon=1.0, m=12)
    with pytest.raises(ConfigError):
        SketchConfig(kind="cms", epsilon=0.0)
    sketch = LocalSketch(SketchConfig(kind="cms", epsilon=1.0, m=8, k=2), ITEMS)
    with pytest.raises(ConfigError, match="±1"):
        sketch.add(CMSReports(np.zeros(1, np.int32), np.zeros((1, 8), np.int8)))
    with pytest.raises(ConfigError, match="rows"):
        sketch.add(CMSReports(np.full(1, 5, np.int32), np.ones((1, 8), np.int8)))
    with pytest.raises(ConfigError, match="HCMS reports"):
        sketch.add(HCMSReports(np.zeros(1, np.int32), np.zeros(1, np.int32), np.ones(1, np.int8)))
    with pytest.raises(ConfigError, match="indices"):
        sketch.randomise(np.array([len(ITEMS)]), np.random.default_rng(0))


@pytest.mark.parametrize("kind", ["cms", "hcms", "ocms"])
def test_devices_hashing_their_own_ids_match_the_dictionary_randomiser(kind):
    """A device needs only its item id and the public parameters: with the same randomness its
    report is the one the server-side simulation makes from the dictionary index."""
    config = SketchConfig(kind=kind, epsilon=3.0, m=16, k=4, hash_seed=9)
    sketch = LocalSketch(config, ITEMS)
    chosen = np.array([3, 0, 11, 3, 7])
    from_ids = device_reports(config, [ITEMS[i] for i in chosen], np.random.default_rng(5))
    from_codes = sketch.randomise(chosen, np.random.default_rng(5))
    for a, b in zip(vars(from_ids).values(), vars(from_codes).values(), strict=True):
        np.testing.assert_array_equal(a, b)
    sketch.add(from_ids)  # and the server accepts them
    assert sketch.n_reports == len(chosen)


def test_the_default_randomiser_is_never_noisier_than_apples_at_the_same_epsilon() -> None:
    """The default is ``ocms`` because, per report and non-target cell, the debiased count's
    variance q(1-q)/(p-q)^2 (from each randomiser's own probabilities) is at most CMS's at
    every ε, by the factor 4x/(x+1)^2 with x = e^(ε/2) (hand-derived)."""
    from privrank.models.ldp_popular import LDPPopularConfig

    assert SketchConfig(epsilon=4.0).kind == "ocms" and LDPPopularConfig().sketch == "ocms"

    def variance(kind: str, epsilon: float) -> float:
        p, q = SketchConfig(kind=kind, epsilon=epsilon).unary_probabilities
        return q * (1 - q) / (p - q) ** 2

    for epsilon in (0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0):
        x = math.exp(epsilon / 2)
        ratio = variance("ocms", epsilon) / variance("cms", epsilon)
        assert ratio == pytest.approx(4 * x / (x + 1) ** 2, rel=1e-9)
        assert ratio <= 1.0
    assert variance("ocms", 4.0) / variance("cms", 4.0) == pytest.approx(0.42, abs=0.005)

"""Distributed discrete Gaussian: sampler, noise, accounting, the secure sum, spending."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import numpy as np
import pytest
from dp_accounting import GaussianDpEvent, SelfComposedDpEvent
from dp_accounting.rdp import RdpAccountant
from scipy import stats

from privrank.errors import ConfigError, PrivacyBudgetExceeded
from privrank.privacy.crypto.secagg import SecAggAbort, SecAggConfig, UpdateOutOfRange, run_round
from privrank.privacy.discrete_gaussian import (
    discrete_gaussian_pmf,
    discrete_gaussian_sum_pmf,
    discrete_gaussian_variance,
    sample_discrete_gaussian,
    sample_discrete_gaussian_sum,
)
from privrank.privacy.distributed_dp import (
    DistributedDiscreteGaussian,
    DistributedDPConfig,
    RoundSpender,
    clip_l2,
)
from privrank.privacy.distributed_dp_accounting import (
    ddg_epsilon,
    ddg_round_rho,
    rounded_l1_bound,
    rounded_l2_bound,
)
from privrank.privacy.ledger import Ledger, SpendStatus
from privrank.privacy.mechanism import _noise_scale_for_testing, mechanism_class


# -- the oracle: Canonne, Kamath & Steinke's exact sampler, written naively ----------------------
def _bernoulli(p: Fraction, rng: random.Random) -> bool:
    return rng.randrange(p.denominator) < p.numerator


def _bernoulli_exp(gamma: Fraction, rng: random.Random) -> bool:
    """Bernoulli(exp(−γ)) with exact arithmetic (CKS 2020, Algorithm 1)."""
    if gamma > 1:
        for _ in range(math.floor(gamma)):
            if not _bernoulli_exp(Fraction(1), rng):
                return False
        return _bernoulli_exp(gamma - math.floor(gamma), rng)
    k = 1
    while _bernoulli(gamma / k, rng):
        k += 1
    return k % 2 == 1


def _discrete_laplace(t: int, rng: random.Random) -> int:
    """P[X = x] ∝ exp(−|x|/t) (CKS 2020, Algorithm 2)."""
    while True:
        u = rng.randrange(t)
        if not _bernoulli_exp(Fraction(u, t), rng):
            continue
        v = 0
        while _bernoulli_exp(Fraction(1), rng):
            v += 1
        x = u + t * v
        negative = _bernoulli(Fraction(1, 2), rng)
        if negative and x == 0:
            continue
        return -x if negative else x


def _reference_discrete_gaussian(sigma2: Fraction, rng: random.Random) -> int:
    """N_Z(0, σ²) with exact arithmetic (CKS 2020, Algorithm 3)."""
    t = math.isqrt(sigma2.numerator // sigma2.denominator) + 1
    while True:
        y = _discrete_laplace(t, rng)
        gamma = (abs(y) - sigma2 / t) ** 2 / (2 * sigma2)
        if _bernoulli_exp(gamma, rng):
            return y


def _binned(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.histogram(values, bins=edges)[0]


def test_sampler_matches_the_exact_reference_sampler() -> None:
    sigma = 2.5
    rng = random.Random(0)
    reference = np.array([_reference_discrete_gaussian(Fraction(25, 4), rng) for _ in range(6000)])
    ours = sample_discrete_gaussian(sigma, 200_000, np.random.default_rng(1))
    edges = np.array([-np.inf, *np.arange(-6.5, 7.0, 1.0), np.inf])
    table = np.vstack([_binned(reference, edges), _binned(ours, edges)])
    assert stats.chi2_contingency(table).pvalue > 1e-3
    # Both against the exact probabilities.
    k, pmf = discrete_gaussian_pmf(sigma)
    expected = np.array([pmf[(k > lo) & (k < hi)].sum() for lo, hi in itertools.pairwise(edges)])
    for sample in (reference, ours):
        observed = _binned(sample, edges)
        assert stats.chisquare(observed, expected * sample.size).pvalue > 1e-3
    # A continuous Gaussian rounded to integers is a different law: the test can tell.
    rounded = np.rint(np.random.default_rng(2).normal(0, sigma, 200_000))
    assert stats.chisquare(_binned(rounded, edges), expected * rounded.size).pvalue < 1e-3


@pytest.mark.parametrize("sigma", [0.45, 3.0, 40.0])
def test_noise_mean_and_variance_match_the_discrete_gaussian(sigma: float) -> None:
    n = 400_000
    x = sample_discrete_gaussian(sigma, n, np.random.default_rng(3)).astype(np.float64)
    var = discrete_gaussian_variance(sigma)
    k, pmf = discrete_gaussian_pmf(sigma)
    fourth = float(np.sum(k.astype(np.float64) ** 4 * pmf))
    assert abs(x.mean()) < 5 * math.sqrt(var / n)
    assert abs(np.mean(x**2) - var) < 5 * math.sqrt((fourth - var**2) / n)
    if sigma < 1:  # the discrete Gaussian's variance is visibly below σ² for small σ
        assert var < 0.8 * sigma**2


def test_discrete_gaussian_variance_by_hand() -> None:
    # σ² = 1/(2 ln 2): P[k] ∝ 2^{−k²}; Var = 2 Σ k² 2^{−k²} / (1 + 2 Σ 2^{−k²}).
    sigma = math.sqrt(1 / (2 * math.log(2)))
    num = 2 * sum(k * k * 2.0 ** (-k * k) for k in range(1, 30))
    den = 1 + 2 * sum(2.0 ** (-k * k) for k in range(1, 30))
    assert discrete_gaussian_variance(sigma) == pytest.approx(num / den, rel=1e-12)
    # Past σ = 10 the variance is σ² to double precision: the direct sum agrees at the switch.
    k, pmf = discrete_gaussian_pmf(10.0)
    assert float(np.sum(k.astype(np.float64) ** 2 * pmf)) == pytest.approx(100.0, rel=1e-14)
    assert discrete_gaussian_variance(1e7) == 1e14


# -- accounting ---------------------------------------------------------------------------------
def _config(**changes: object) -> DistributedDPConfig:
    base: dict[str, object] = dict(
        epsilon=4.0,
        delta=1e-6,
        l2_clip=1.0,
        dimension=64,
        rounds=20,
        min_clients=40,
        max_clients=50,
        modulus_bits=32,
    )
    base.update(changes)
    return DistributedDPConfig(**base)


def test_round_rho_is_kairouz_liu_steinke_proposition_14() -> None:
    """Oracle: the formula evaluated term by term, in plain Python."""
    sigma, n, d, l2 = 3.0, 7, 50, 20.0
    tau = 10 * sum(math.exp(-2 * math.pi**2 * sigma**2 * k / (k + 1)) for k in range(1, n))
    l1 = l2 * min(math.sqrt(d), l2)
    a, b = l2 / (math.sqrt(n) * sigma), l1 / (math.sqrt(n) * sigma)
    expected = 0.5 * min(a * a + 2 * b * tau + tau * tau * d, (a + math.sqrt(d) * tau) ** 2)
    assert ddg_round_rho(sigma, n, l2, d) == pytest.approx(expected, rel=1e-12)
    # One client, τ = 0: the single discrete Gaussian's Δ²/(2σ²) (Canonne et al. 2020).
    assert ddg_round_rho(sigma, 1, l2, d) == pytest.approx(l2**2 / (2 * sigma**2), rel=1e-12)
    # More clients never give a weaker guarantee (dropout accounting uses the fewest).
    rhos = [ddg_round_rho(sigma, m, l2, d) for m in (5, 10, 50, 500)]
    assert rhos == sorted(rhos, reverse=True)
    assert ddg_round_rho(0.4, 10, l2, d) == math.inf  # σ < 1/2: no bound proven


def test_rounded_norm_bounds_by_hand() -> None:
    assert rounded_l2_bound(10.0, 16, 0.0) == 14.0
    beta = math.exp(-0.5)  # √(2 ln(1/β)) = 1
    assert rounded_l2_bound(10.0, 16, beta) == pytest.approx(math.sqrt(100 + 4 + 10 + 2))
    assert rounded_l1_bound(3.0, 100) == 9.0 and rounded_l1_bound(30.0, 100) == 300.0


def test_epsilon_equals_the_gaussian_of_the_same_rdp_curve() -> None:
    """ρ-zCDP has the RDP curve ρα of a Gaussian with multiplier 1/√(2ρ): dp_accounting's RDP
    accountant must give the same ε on both paths."""
    rho, rounds, delta = 0.013, 30, 1e-6
    peer = RdpAccountant()
    peer.compose(SelfComposedDpEvent(GaussianDpEvent(1 / math.sqrt(2 * rho)), rounds))
    assert ddg_epsilon(rho, rounds, delta) == pytest.approx(peer.get_epsilon(delta), rel=1e-6)
    # And within the zCDP conversion of Bun & Steinke 2016 (an upper bound).
    total = rho * rounds
    assert ddg_epsilon(rho, rounds, delta) <= total + 2 * math.sqrt(total * math.log(1 / delta))


def test_calibration_meets_the_target_tightly() -> None:
    mech = DistributedDiscreteGaussian(_config())
    eps = mech.epsilon_after(20)
    assert 0.995 * 4.0 <= eps <= 4.0
    assert mech.epsilon_after(1) < mech.epsilon_after(10) < eps
    assert mech.sigma >= 0.5
    assert mech.wrap_probability() <= 1e-6
    assert mech.config.max_clients * mech.sensitivity < 2**31
    # The release's multiplier carries the same RDP curve.
    (release,) = mech.releases()
    assert release.count == 20
    assert release.noise_multiplier == pytest.approx(1 / math.sqrt(2 * mech.round_rho()))
    with pytest.raises(ConfigError, match="RDP accountant only"):
        mech.calibrate(4.0, 1e-6, "pld")
    assert mechanism_class("distributed-discrete-gaussian") is DistributedDiscreteGaussian
    text = mech.describe()
    assert "untrusted for individual updates" in text and "at least 40 clients" in text


def test_a_ring_too_small_for_the_sum_is_refused() -> None:
    with pytest.raises(ConfigError, match="wrap-around probability"):
        DistributedDiscreteGaussian(_config(modulus_bits=8, max_clients=5000, min_clients=40))
    with pytest.raises(ConfigError, match="max_clients"):
        _config(max_clients=10)


# -- the client's encoding and the secure sum ---------------------------------------------------
def _updates(n: int, d: int, seed: int) -> np.ndarray:
    clipped, _ = clip_l2(np.random.default_rng(seed).normal(size=(n, d)), 0.999)
    return clipped


def test_zero_noise_secure_sum_equals_the_non_private_sum() -> None:
    n, d = 30, 64
    updates = _updates(n, d, 0)
    with _noise_scale_for_testing(0.0):
        mech = DistributedDiscreteGaussian(_config(min_clients=25, max_clients=30))
    assert mech.noise_scale == 0 and "NOT PRIVATE" in mech.describe()
    encoded, refused = mech.encode_batch(updates, np.random.default_rng(4))
    assert refused.size == 0
    total = run_round(encoded, SecAggConfig(min_survivors=25)).result.total
    # Exactly the sum of the rounded updates, and within n grid units of the real sum.
    np.testing.assert_array_equal(mech.decode(total), mech.decode(encoded).sum(axis=0))
    np.testing.assert_allclose(mech.decode(total), updates.sum(axis=0), atol=n / mech.scale)


def test_noise_of_the_decoded_sum_has_the_discrete_gaussian_variance() -> None:
    mech = DistributedDiscreteGaussian(_config(dimension=2000, min_clients=40, max_clients=50))
    zeros = np.zeros((50, 2000))
    encoded, _ = mech.encode_batch(zeros, np.random.default_rng(5))
    noise = mech.decode(encoded.sum(axis=0))
    expected = mech.sum_noise_std(50)
    assert expected == pytest.approx(
        math.sqrt(50 * discrete_gaussian_variance(mech.sigma)) / mech.scale
    )
    # Sample variance of 2000 coordinates: within 5 standard errors (√(2/d) relative).
    assert abs(noise.var() / expected**2 - 1) < 5 * math.sqrt(2 / 2000)
    assert abs(noise.mean()) < 5 * expected / math.sqrt(2000)


def test_updates_above_the_clipping_bound_are_refused_and_counted() -> None:
    mech = DistributedDiscreteGaussian(_config())
    big = np.full(64, 0.2)  # norm 1.6
    with pytest.raises(UpdateOutOfRange, match=r"client 4's update has L2 norm 1\.6.* above"):
        mech.encode(big, np.random.default_rng(0), client_id=4)
    batch = np.vstack([np.zeros(64), big, np.full(64, np.nan)])
    encoded, refused = mech.encode_batch(batch, np.random.default_rng(0))
    assert refused.tolist() == [1, 2] and encoded.shape == (1, 64)
    clipped, was = clip_l2(batch[:2], 1.0)
    assert was.tolist() == [False, True]
    assert np.linalg.norm(clipped[1]) == pytest.approx(1.0)


def test_conditional_rounding_keeps_the_norm_bound() -> None:
    mech = DistributedDiscreteGaussian(_config(scale=4.0, beta=0.3))
    scaled = _updates(500, 64, 6) * mech.scale
    rounded = mech._conditional_rounding(scaled, np.random.default_rng(7))
    assert np.all(np.linalg.norm(rounded, axis=1) <= mech.sensitivity)
    assert np.all(np.abs(rounded - scaled) < 1)


# -- spending -----------------------------------------------------------------------------------
def test_round_spender_spends_the_accounted_epsilon_round_by_round(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mech = DistributedDiscreteGaussian(_config(rounds=3))
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        ledger.set_budget("fed", 10.0, 1e-5)
        spender = RoundSpender(mech, ledger, "fed", "federated test run")
        for _ in range(2):
            with spender.round():
                pass
        # A round that aborts releases nothing and gives its reservation back.
        with pytest.raises(SecAggAbort), spender.round():
            raise SecAggAbort("too few survivors")
        budget = ledger.budget("fed")
        assert budget is not None
        assert budget.epsilon_spent == pytest.approx(mech.epsilon_after(2), rel=1e-12)
        assert budget.delta_spent == pytest.approx(1e-6)
        with spender.round():
            pass
        assert ledger.budget("fed").epsilon_spent == pytest.approx(mech.epsilon_after(3))  # type: ignore[union-attr]
        statuses = [s.status for s in ledger.spends("fed")]
        assert statuses.count(SpendStatus.committed) == 3
        assert statuses.count(SpendStatus.released) == 1
        with pytest.raises(PrivacyBudgetExceeded, match="calibrated for 3 round"), spender.round():
            pass


def test_round_spender_refuses_a_round_the_budget_does_not_cover(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mech = DistributedDiscreteGaussian(_config(rounds=20))
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        ledger.set_budget("fed", mech.epsilon_after(1) * 1.01, 1e-5)
        spender = RoundSpender(mech, ledger, "fed", "run")
        with spender.round():
            pass
        ran = False
        with pytest.raises(PrivacyBudgetExceeded), spender.round():
            ran = True
        assert not ran and spender.rounds_spent == 1


def test_noisy_inputs_through_secagg_with_dropouts_sum_exactly_over_the_survivors() -> None:
    n = 40
    mech = DistributedDiscreteGaussian(_config(min_clients=28, max_clients=40))
    updates = _updates(n, 64, 8)
    encoded, _ = mech.encode_batch(updates, np.random.default_rng(9))
    dropped = set(range(0, n, 4))  # 10 of 40 leave after sharing keys
    round_ = run_round(encoded, SecAggConfig(min_survivors=28), drop_after_sharing=dropped)
    survivors = list(round_.result.survivors)
    assert len(survivors) == 30 and not dropped & set(survivors)
    np.testing.assert_array_equal(
        mech.decode(round_.result.total), mech.decode(encoded[survivors].sum(axis=0))
    )
    # Below the accounting's floor the round aborts (the server; clients refuse as well).
    with pytest.raises(SecAggAbort, match="min_survivors=28"):
        run_round(encoded, SecAggConfig(min_survivors=28), drop_after_sharing=range(13))


def _convolved(sigma: float, n: int) -> dict[int, float]:
    """The oracle: the pmf of a sum of n discrete Gaussians by direct convolution."""
    k, p = discrete_gaussian_pmf(sigma)
    pmf = p
    for _ in range(n - 1):
        pmf = np.convolve(pmf, p)
    return dict(zip(range(-n * int(k[-1]), n * int(k[-1]) + 1), pmf, strict=True))


@pytest.mark.parametrize(("sigma", "n"), [(0.45, 2), (1.5, 3), (4.0, 6)])
def test_the_sum_pmf_is_the_n_fold_convolution(sigma: float, n: int) -> None:
    k, pmf = discrete_gaussian_sum_pmf(sigma, n)
    oracle = _convolved(sigma, n)
    assert np.abs(pmf - np.array([oracle.get(int(j), 0.0) for j in k])).max() < 1e-13
    assert sum(oracle.get(int(j), 0.0) for j in k) > 1 - 1e-15  # the support cut loses nothing
    variance = float(np.sum(k.astype(np.float64) ** 2 * pmf))
    assert variance == pytest.approx(n * discrete_gaussian_variance(sigma), rel=1e-12)


@pytest.mark.parametrize(("sigma", "n"), [(0.6, 2), (0.8, 5), (1.0, 20), (1.3, 5)])
def test_a_sum_is_one_discrete_gaussian_within_kairouz_liu_steinke_tau(
    sigma: float, n: int
) -> None:
    # τ summed term by term (the sampler compares the cruder 10(n−1)e^{−π²σ²})
    tau = 10 * sum(math.exp(-2 * math.pi**2 * sigma**2 * k / (k + 1)) for k in range(1, n))
    k, exact = discrete_gaussian_sum_pmf(sigma, n)
    k1, one = discrete_gaussian_pmf(sigma * math.sqrt(n))
    single = dict(zip(k1.tolist(), one, strict=True))
    target = np.array([single.get(int(j), 0.0) for j in k])
    seen = target > 1e-9  # below, the ratio is rounding
    assert np.abs(exact[seen] / target[seen] - 1).max() <= tau
    assert 0.5 * np.abs(exact - target).sum() <= tau


def test_sampled_sums_follow_the_exact_pmf() -> None:
    sigma, n = 0.7, 5  # τ ≈ 0.3: the exact pmf, not one discrete Gaussian, is sampled
    draws = sample_discrete_gaussian_sum(sigma, n, 200_000, np.random.default_rng(5))
    oracle = _convolved(sigma, n)
    support = np.arange(-5, 6)
    expected = np.array([oracle[int(j)] for j in support])
    observed = np.array([(draws == j).sum() for j in support])
    expected = np.append(expected, 1 - expected.sum()) * draws.size
    observed = np.append(observed, draws.size - observed.sum())
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    # the per-draw sampler summed n times: the same mean and variance
    summed = sample_discrete_gaussian(sigma, (200_000, n), np.random.default_rng(6)).sum(axis=1)
    var = n * discrete_gaussian_variance(sigma)
    for x in (draws, summed):
        assert abs(x.mean()) < 5 * math.sqrt(var / x.size)
        assert x.var() == pytest.approx(var, rel=0.02)


def test_large_sums_have_the_summed_variance() -> None:
    sigma, n = 119.7, 10_000  # the 1M-user bench's per-device σ and cohort: one N_Z(0, nσ²)
    draws = sample_discrete_gaussian_sum(sigma, n, 100_000, np.random.default_rng(7))
    var = n * discrete_gaussian_variance(sigma)
    assert abs(draws.mean()) < 5 * math.sqrt(var / draws.size)
    # relative standard error of a sample variance of 1e5 draws: √(2/1e5) ≈ 0.45 %
    assert draws.astype(np.float64).var() == pytest.approx(var, rel=0.025)
    assert sample_discrete_gaussian_sum(sigma, 0, 3, np.random.default_rng(0)).tolist() == [0] * 3
    with pytest.raises(ConfigError, match="n ≥ 0"):
        sample_discrete_gaussian_sum(sigma, -1, 3, np.random.default_rng(0))

"""Distributed DP with secret Poisson sampling: the sampled accounting and the plan.

Oracles: the closed form at order 2 (log(1 + q²(e^{2ρ} − 1)), by hand); dp_accounting's exact
RDP of the Poisson-subsampled Gaussian of the same zCDP curve, which the general bound must
never undercut (it is a bound for every mechanism of that curve, the Gaussian included) and
which the accountant's bound equals where its forward order dominates; the un-sampled zCDP curve
αρ, which neither may exceed; both Rényi divergences of an actual subsampled discrete Gaussian,
summed over its support, which the accountant's bound must cover; pinned ε values.
"""

from __future__ import annotations

import math

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting.rdp import RdpAccountant
from dp_accounting.rdp.rdp_privacy_accountant import (
    _compute_rdp_poisson_subsampled_gaussian,
    compute_epsilon,
)
from scipy.special import logsumexp

from privrank.errors import ConfigError
from privrank.privacy.distributed_dp_accounting import (
    SAMPLED_ORDERS,
    ddg_epsilon,
    ddg_sampled_epsilon,
    sampled_ddg_rdp,
    sampled_zcdp_rdp,
)
from privrank.privacy.distributed_dp_plan import distributed_dp_guarantee, plan_distributed_dp
from privrank.privacy.spec import PrivacySpec


@pytest.mark.parametrize("q", [0.001, 0.01, 0.1, 0.5])
@pytest.mark.parametrize("rho", [0.01, 0.5, 4.0])
def test_the_sampled_bound_lies_between_the_exact_gaussian_and_no_amplification(q, rho):
    bound = sampled_zcdp_rdp(rho, q)
    alphas = np.asarray(SAMPLED_ORDERS, dtype=np.float64)
    gaussian = np.asarray(
        _compute_rdp_poisson_subsampled_gaussian(q, 1.0 / math.sqrt(2.0 * rho), SAMPLED_ORDERS)
    )
    assert np.all(bound >= gaussian * (1 - 1e-9) - 1e-12)
    assert np.all(bound <= alphas * rho * (1 + 1e-12))
    # Order 2 by hand: (1−q)(1+q) + q² e^{2ρ}.
    assert bound[0] == pytest.approx(math.log1p(q * q * math.expm1(2.0 * rho)), rel=1e-9)


def test_sampling_everyone_is_no_amplification_and_bad_rates_are_refused():
    assert np.allclose(sampled_zcdp_rdp(0.3, 1.0), 0.3 * np.asarray(SAMPLED_ORDERS))
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="sampling rate"):
            sampled_zcdp_rdp(0.3, bad)


def _sampled_gaussian_epsilon(rho: float, rounds: int, q: float, delta: float) -> float:
    """dp_accounting's RDP ε of the Poisson-subsampled Gaussian of multiplier 1/√(2ρ)."""
    accountant = RdpAccountant(list(SAMPLED_ORDERS))
    event = dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(1.0 / math.sqrt(2.0 * rho)))
    return float(accountant.compose(event, rounds).get_epsilon(delta))


def test_pinned_sampled_epsilons():
    # 100 rounds of 0.5-zCDP sampled at q = 0.01; δ = 1e-7: the forward order dominates, so the
    # accountant gives exactly the sampled Gaussian of the same curve (dp_accounting: 1.80049),
    # where Zhu & Wang's general bound alone gave 2.012355, and no amplification 105.1.
    sampled = ddg_sampled_epsilon(0.5, 100, 0.01, 1e-7)
    assert sampled == pytest.approx(1.800492, rel=1e-5)
    assert sampled == pytest.approx(_sampled_gaussian_epsilon(0.5, 100, 0.01, 1e-7), rel=1e-9)
    general = compute_epsilon(SAMPLED_ORDERS, (100 * sampled_zcdp_rdp(0.5, 0.01)).tolist(), 1e-7)[0]
    assert general == pytest.approx(2.012355, rel=1e-5)
    assert ddg_epsilon(0.5, 100, 1e-7) == pytest.approx(105.0993, rel=1e-5)
    # Small ρ, many rounds: the reverse order's bound binds at high orders (0.6032 against the
    # Gaussian's 0.5052), still under the general bound.
    assert ddg_sampled_epsilon(0.05, 1000, 0.01, 1e-7) == pytest.approx(0.603227, rel=1e-5)
    # The fed5 setting (ρ ≈ 2.6 per round, q = 0.005, 20 rounds): the Gaussian's value.
    assert ddg_sampled_epsilon(2.6, 20, 0.005, 1e-7) == pytest.approx(
        _sampled_gaussian_epsilon(2.6, 20, 0.005, 1e-7), rel=1e-9
    )
    # With an un-sampled release composed in: more than either alone, less than their sum
    # (RDP adds order by order before one conversion); alone, it is dp_accounting's zCDP value.
    both = ddg_sampled_epsilon(0.5, 100, 0.01, 1e-7, rho_fixed=0.02)
    alone = ddg_sampled_epsilon(0.5, 0, 0.01, 1e-7, rho_fixed=0.02)
    assert alone == pytest.approx(ddg_epsilon(0.02, 1, 1e-7), rel=1e-9)
    assert max(alone, sampled) < both < alone + sampled


@pytest.mark.parametrize("q", [0.001, 0.01, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("rho", [0.005, 0.05, 0.5, 4.0])
def test_the_accountants_bound_lies_between_the_sampled_gaussian_and_the_general_bound(q, rho):
    bound = sampled_ddg_rdp(rho, q)
    gaussian = np.asarray(
        _compute_rdp_poisson_subsampled_gaussian(q, 1.0 / math.sqrt(2.0 * rho), SAMPLED_ORDERS)
    )
    # The forward order's bound is the Gaussian's curve: never below it.
    assert np.all(bound >= gaussian * (1 - 1e-9) - 1e-12)
    assert np.all(bound <= sampled_zcdp_rdp(rho, q) * (1 + 1e-12))
    assert np.all(bound <= np.asarray(SAMPLED_ORDERS) * rho * (1 + 1e-12))
    # Order 2, both orders: max(forward = log(1 + q²(e^{2ρ}−1)), the reverse bounds), up to
    # the float rounding of a log-sum near 1 (the general bound's, 1e-16 absolute).
    assert bound[0] >= math.log1p(q * q * math.expm1(2.0 * rho)) * (1 - 1e-9) - 1e-15


def test_the_accountants_bound_is_monotone_with_its_limits():
    rhos, rates = [0.01, 0.1, 0.5, 1.0, 3.0], [1e-4, 1e-3, 0.01, 0.1, 0.5, 0.99]
    for q in rates:
        curves = np.array([sampled_ddg_rdp(rho, q) for rho in rhos])
        assert np.all(np.diff(curves, axis=0) >= -1e-12)  # more ρ, no less RDP
    for rho in rhos:
        curves = np.array([sampled_ddg_rdp(rho, q) for q in rates])
        assert np.all(np.diff(curves, axis=0) >= -1e-12)  # more sampling, no less RDP
        assert np.allclose(sampled_ddg_rdp(rho, 1.0), rho * np.asarray(SAMPLED_ORDERS))
        assert np.all(sampled_ddg_rdp(rho, 1e-12)[:4] < 1e-8)  # q → 0 at a fixed order: nothing
    epsilons = [ddg_sampled_epsilon(0.5, t, 0.01, 1e-7) for t in (1, 10, 100, 1000)]
    assert epsilons == sorted(epsilons)


def _discrete_gaussian_log_pmf(support: np.ndarray, mean: int, sigma: float) -> np.ndarray:
    log_weights = -((support - mean) ** 2) / (2.0 * sigma**2)
    return log_weights - logsumexp(log_weights)


@pytest.mark.parametrize(("sigma", "q"), [(1.0, 0.1), (2.0, 0.01), (0.7, 0.3), (5.0, 0.5)])
def test_both_orders_of_a_subsampled_discrete_gaussian_are_covered(sigma, q):
    # The mechanism itself, in one dimension with sensitivity 1: μ₀ = N_Z(0, σ²), μ₁ = N_Z(1, σ²)
    # (ρ = 1/(2σ²) by Canonne, Kamath & Steinke 2020), μ = (1−q)μ₀ + qμ₁; both Rényi
    # divergences summed over the support, at every order up to 64.
    support = np.arange(-60 * math.ceil(sigma) - 60, 60 * math.ceil(sigma) + 61, dtype=np.float64)
    base = _discrete_gaussian_log_pmf(support, 0, sigma)
    mixture = np.logaddexp(math.log1p(-q) + base,
                           math.log(q) + _discrete_gaussian_log_pmf(support, 1, sigma))  # fmt: skip
    orders = tuple(range(2, 65))
    bound = sampled_ddg_rdp(1.0 / (2.0 * sigma**2), q, orders)
    for i, alpha in enumerate(orders):
        forward = logsumexp(alpha * mixture + (1 - alpha) * base) / (alpha - 1)
        reverse = logsumexp(alpha * base + (1 - alpha) * mixture) / (alpha - 1)
        assert max(forward, reverse) <= bound[i] * (1 + 1e-9) + 1e-12, alpha


def _spec() -> PrivacySpec:
    values = {"epsilon": 8.0, "delta": 1e-6, "max_interactions_per_user": 5, "clipping_norm": 1}
    return PrivacySpec(**values).resolve(100_000)


def test_a_secretly_sampled_plan_meets_epsilon_with_less_noise():
    common = {
        "population": 100_000, "n_items": 50, "dimension": 300, "rounds": 10,
        "min_clients": 400, "max_clients": 100_000, "modulus_bits": 48,
    }  # fmt: skip
    plain = plan_distributed_dp(_spec(), **common)
    sampled = plan_distributed_dp(_spec(), **common, sampling_rate=0.005)
    assert sampled.sampling_rate == 0.005 and plain.sampling_rate is None
    rho_counts = sampled.counts.round_rho()
    expected = ddg_sampled_epsilon(
        sampled.rounds.round_rho(), 10, 0.005, 1e-6, rho_fixed=rho_counts
    )
    assert sampled.epsilon_after(10) == pytest.approx(expected, rel=1e-12)
    assert 0.97 * 8.0 < sampled.epsilon_after(10) <= 8.0 * (1 + 1e-9)
    assert sampled.epsilon_after(0) == plain.epsilon_after(0)  # the counts: not amplified
    # The same noise, to a party that knows who was sampled: far above ε.
    assert sampled.unamplified_epsilon_after(10) > 8.0 * 5
    ratio = sampled.rounds.sum_noise_std(500) / plain.rounds.sum_noise_std(500)
    assert ratio < 0.3
    guarantee = distributed_dp_guarantee(sampled, _spec(), 10, noise_scale=1.0)
    assert "secret Poisson sampling at q = 0.005" in guarantee.accounting
    assert guarantee.epsilon == pytest.approx(sampled.epsilon_after(10))
    with pytest.raises(ConfigError, match="sampling rate"):
        plan_distributed_dp(_spec(), **common, sampling_rate=2.0)

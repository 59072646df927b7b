"""Distributed DP with secret Poisson sampling: the sampled accounting and the plan.

Oracles: the closed form at order 2 (log(1 + q²(e^{2ρ} − 1)), by hand); dp_accounting's exact
RDP of the Poisson-subsampled Gaussian of the same zCDP curve, which the general bound must
never undercut (it is a bound for every mechanism of that curve, the Gaussian included); the
un-sampled zCDP curve αρ, which it must never exceed; pinned ε values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting.rdp.rdp_privacy_accountant import _compute_rdp_poisson_subsampled_gaussian

from privrank.errors import ConfigError
from privrank.privacy.distributed_dp_accounting import (
    SAMPLED_ORDERS,
    ddg_epsilon,
    ddg_sampled_epsilon,
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


def test_pinned_sampled_epsilons():
    # 100 rounds of 0.5-zCDP sampled at q = 0.01; δ = 1e-7.
    assert ddg_sampled_epsilon(0.5, 100, 0.01, 1e-7) == pytest.approx(2.012355, rel=1e-5)
    # The exact subsampled Gaussian of the same curve gives 1.7989 (dp_accounting's RDP): the
    # general bound costs about 12 % here, against 105.1 without amplification.
    assert ddg_epsilon(0.5, 100, 1e-7) == pytest.approx(105.0993, rel=1e-5)
    # With an un-sampled release composed in: more than either alone, less than their sum
    # (RDP adds order by order before one conversion); alone, it is dp_accounting's zCDP value.
    both = ddg_sampled_epsilon(0.5, 100, 0.01, 1e-7, rho_fixed=0.02)
    alone = ddg_sampled_epsilon(0.5, 0, 0.01, 1e-7, rho_fixed=0.02)
    assert alone == pytest.approx(ddg_epsilon(0.02, 1, 1e-7), rel=1e-9)
    assert max(alone, 2.012355) < both < alone + 2.012355


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

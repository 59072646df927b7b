"""The 1-D PLD accountant of the Poisson-subsampled sum of discrete Gaussians (ddg_pld)."""

from __future__ import annotations

import itertools
import math

import dp_accounting as dpa
import numpy as np
import pytest

from privrank.errors import ConfigError
from privrank.privacy.ddg_pld import ddg_scalar_epsilon, ddg_scalar_pld_epsilon
from privrank.privacy.discrete_gaussian import discrete_gaussian_sum_pmf
from privrank.privacy.distributed_dp_accounting import (
    ddg_round_rho,
    ddg_sampled_epsilon,
    ddg_tau,
)


def _rdp(sigma: float, n: int, sensitivity: int, rounds: int, q: float, delta: float) -> float:
    rho = ddg_round_rho(sigma, n, float(sensitivity), 1)
    return ddg_sampled_epsilon(rho, rounds, q, delta)


def _exact_one_round_epsilon(sigma: float, n: int, shift: int, q: float, delta: float) -> float:
    """Oracle: ε at δ of one round, from the exact pmf of the sum (the convolution), both
    neighbour orders, by bisection on Σ_y (P(y) − e^ε Q(y))_+."""
    _, base = discrete_gaussian_sum_pmf(sigma, n)
    base = np.concatenate([np.zeros(shift), base, np.zeros(shift)])
    shifted = np.roll(base, shift)
    mixture = (1 - q) * base + q * shifted

    def hockey(eps: float) -> float:
        forward = np.maximum(mixture - math.exp(eps) * base, 0.0).sum()
        reverse = np.maximum(base - math.exp(eps) * mixture, 0.0).sum()
        return float(max(forward, reverse))

    lo, hi = 0.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if hockey(mid) > delta else (lo, mid)
    return hi


@pytest.mark.parametrize(
    ("sigma", "n", "shift", "q"), [(1.0, 4, 1, 0.1), (0.8, 9, 2, 0.3), (2.0, 3, 5, 1.0)]
)
def test_one_round_is_an_upper_bound_close_to_the_exact_divergence(sigma, n, shift, q):
    delta = 1e-5
    exact = _exact_one_round_epsilon(sigma, n, shift, q, delta)
    pld = ddg_scalar_pld_epsilon(sigma, n, shift, 1, q, delta)
    # step 1's correction 2·T·a, a = −log(1 − τ), is the only slack besides discretisation
    slack = -2.0 * math.log1p(-ddg_tau(sigma, n))
    assert exact <= pld <= exact + slack + 0.01


def test_pinned_values():
    # computed by this module at commit time; RDP figures from distributed_dp_accounting
    assert ddg_scalar_pld_epsilon(1.0, 4, 1, 20, 0.1, 1e-6) == pytest.approx(1.29356, abs=1e-4)
    assert ddg_scalar_pld_epsilon(3.0, 100, 60, 100, 0.01, 1e-6) == pytest.approx(7.92093, abs=1e-4)


@pytest.mark.parametrize(("sigma", "n", "shift", "rounds", "q"), [
    (1.0, 4, 1, 20, 0.1), (3.0, 100, 30, 10, 0.1), (3.0, 100, 60, 100, 0.01),
    (2.0, 50, 10, 5, 1.0),
])  # fmt: skip
def test_never_looser_than_the_rdp_bound_and_near_the_gaussian(sigma, n, shift, rounds, q):
    delta = 1e-6
    pld = ddg_scalar_pld_epsilon(sigma, n, shift, rounds, q, delta)
    assert pld <= _rdp(sigma, n, shift, rounds, q, delta)
    assert ddg_scalar_epsilon(sigma, n, shift, rounds, q, delta) == pld
    # large s = σ√n against Δ: the continuous Gaussian of sd s/Δ (dp_accounting) is the limit
    gauss = (
        dpa.pld.privacy_loss_distribution.from_gaussian_mechanism(
            sigma * math.sqrt(n) / shift, sampling_prob=q, value_discretization_interval=1e-4
        )
        .self_compose(rounds)
        .get_epsilon_for_delta(delta)
    )
    assert pld == pytest.approx(gauss, rel=0.03, abs=0.01)


def test_monotone_in_noise_and_rounds():
    by_sigma = [ddg_scalar_pld_epsilon(s, 25, 10, 10, 0.05, 1e-6) for s in (1.0, 1.5, 2.0, 3.0)]
    assert all(a > b for a, b in itertools.pairwise(by_sigma))
    by_rounds = [ddg_scalar_pld_epsilon(1.5, 25, 10, t, 0.05, 1e-6) for t in (1, 5, 20, 80)]
    assert all(a < b for a, b in itertools.pairwise(by_rounds))
    by_q = [ddg_scalar_pld_epsilon(1.5, 25, 10, 10, q, 1e-6) for q in (0.01, 0.1, 1.0)]
    assert all(a < b for a, b in itertools.pairwise(by_q))


def test_no_pld_bound_below_half_sigma_and_the_rdp_one_is_kept():
    assert ddg_scalar_pld_epsilon(0.4, 10, 1, 1, 1.0, 1e-6) == math.inf
    assert ddg_scalar_epsilon(0.4, 10, 1, 1, 1.0, 1e-6) == math.inf  # no bound at all below ½


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sigma": 0.0}, {"n_clients": 0}, {"sensitivity": 0}, {"sensitivity": 1.5},
        {"rounds": 0}, {"q": 0.0}, {"q": 1.5}, {"delta": 0.0},
    ],
)  # fmt: skip
def test_bad_parameters_are_refused(kwargs):
    args = {"sigma": 1.0, "n_clients": 4, "sensitivity": 1, "rounds": 1, "q": 0.5, "delta": 1e-6}
    args.update(kwargs)
    with pytest.raises(ConfigError):
        ddg_scalar_pld_epsilon(**args)

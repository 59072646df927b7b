"""Accounting: pinned ε values checked against formulas implemented here independently.

Independent references (computed in this file with scipy only, not with dp_accounting):

- the Gaussian mechanism's exact (ε, δ) curve, Balle & Wang 2018, Thm. 8:
  ``δ(ε) = Φ(1/(2m) - εm) - e^ε Φ(-1/(2m) - εm)`` with m = σ/Δ;
- one step of the Poisson-subsampled Gaussian (add/remove one user) in closed form: the hockey
  stick divergence of ``(1-q) N(0, m²) + q N(1, m²)`` against ``N(0, m²)``, both directions;
- the RDP of the subsampled Gaussian at integer orders (Mironov, Talwar & Zhang 2019, §3.3) with
  the (ε, δ) conversion of Canonne, Kamath & Steinke 2020 (Prop. 12).
"""

from __future__ import annotations

import json
import math

import dp_accounting as dpa
import numpy as np
import pytest
from scipy import optimize, special
from scipy.stats import norm

from privrank.errors import ConfigError
from privrank.privacy import (
    Accountant,
    calibrate_dpsgd_noise,
    calibrate_gaussian_noise,
    calibrate_noise,
    dpsgd_epsilon,
    dpsgd_event,
    gaussian_epsilon,
    gaussian_event,
)
from privrank.privacy.accounting import event_from_dict, event_to_dict

# --- independent references -------------------------------------------------------------------


def balle_wang_delta(eps: float, m: float) -> float:
    return norm.cdf(1 / (2 * m) - eps * m) - math.exp(eps) * norm.cdf(-1 / (2 * m) - eps * m)


def balle_wang_epsilon(m: float, delta: float) -> float:
    return optimize.brentq(lambda e: balle_wang_delta(e, m) - delta, 0.0, 500.0, xtol=1e-14)


def subsampled_gaussian_delta(eps: float, q: float, m: float) -> float:
    """Exact δ(ε) of one Poisson-subsampled Gaussian step, max over add and remove."""
    e = math.exp(eps)
    # remove direction: P = (1-q) N(0,m²) + q N(1,m²) against Q = N(0,m²); P > e Q for x > t.
    t = m * m * math.log((e - 1 + q) / q) + 0.5
    remove = (1 - q) * norm.sf(t / m) + q * norm.sf((t - 1) / m) - e * norm.sf(t / m)
    # add direction: Q against P; Q > e P for x < u (possible only when e (1 - q) < 1).
    add = 0.0
    if 1 - e * (1 - q) > 0:
        u = m * m * math.log((1 - e * (1 - q)) / (e * q)) + 0.5
        add = norm.cdf(u / m) - e * ((1 - q) * norm.cdf(u / m) + q * norm.cdf((u - 1) / m))
    return max(remove, add)


def subsampled_gaussian_epsilon(q: float, m: float, delta: float) -> float:
    return optimize.brentq(
        lambda e: subsampled_gaussian_delta(e, q, m) - delta, 1e-9, 100.0, xtol=1e-13
    )


def rdp_integer_epsilon(q: float, m: float, steps: int, delta: float, orders) -> float:
    best = math.inf
    for alpha in orders:
        k = np.arange(alpha + 1)
        log_terms = (
            special.gammaln(alpha + 1)
            - special.gammaln(k + 1)
            - special.gammaln(alpha - k + 1)
            + (alpha - k) * math.log1p(-q)
            + k * math.log(q)
            + (k * k - k) / (2 * m * m)
        )
        rdp = steps * special.logsumexp(log_terms) / (alpha - 1)
        eps = rdp + math.log1p(-1 / alpha) - (math.log(delta) + math.log(alpha)) / (alpha - 1)
        best = min(best, eps)
    return best


# --- the Gaussian mechanism --------------------------------------------------------------------

GAUSSIAN_PINS = [
    # (noise multiplier σ/Δ, δ, ε from Balle & Wang's formula, computed once and pinned)
    (1.0, 1e-5, 4.377178095681),
    (2.0, 1e-5, 1.993091404415),
    (0.5, 1e-6, 10.997151214221),
    (5.0, 1e-6, 0.834117548624),
]


@pytest.mark.parametrize(("m", "delta", "pinned"), GAUSSIAN_PINS)
def test_gaussian_epsilon_matches_balle_wang(m: float, delta: float, pinned: float) -> None:
    independent = balle_wang_epsilon(m, delta)
    assert independent == pytest.approx(pinned, abs=1e-9)
    assert gaussian_epsilon(m, delta) == pytest.approx(independent, abs=1e-9)


def test_gaussian_epsilon_beats_the_classical_bound() -> None:
    # Dwork & Roth Thm. 3.22: σ = Δ √(2 ln(1.25/δ)) / ε gives (ε, δ)-DP for ε < 1.
    for eps in (0.1, 0.5, 0.9):
        m = math.sqrt(2 * math.log(1.25 / 1e-5)) / eps
        assert gaussian_epsilon(m, 1e-5) < eps


def test_k_gaussian_releases_compose_to_one_with_m_over_sqrt_k() -> None:
    for k in (1, 4, 25):
        exact = balle_wang_epsilon(3.0 / math.sqrt(k), 1e-6)
        assert gaussian_epsilon(3.0, 1e-6, count=k) == pytest.approx(exact, abs=1e-9)
        pld = Accountant("pld").compose(gaussian_event(3.0), count=k).epsilon(1e-6)
        assert exact <= pld <= exact * 1.001 + 1e-6
        rdp = Accountant("rdp").compose(gaussian_event(3.0, count=k)).epsilon(1e-6)
        assert rdp >= pld


# --- DP-SGD -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("q", "m"), [(0.5, 1.0), (0.1, 0.7), (1.0, 1.0)])
def test_one_dpsgd_step_matches_the_exact_subsampled_gaussian(q: float, m: float) -> None:
    exact = subsampled_gaussian_epsilon(q, m, 1e-5)
    pld = dpsgd_epsilon(q, m, 1, 1e-5)
    assert exact <= pld <= exact + 1e-4  # pessimistic discretisation: an upper bound
    assert dpsgd_epsilon(q, m, 1, 1e-5, accountant="rdp") >= pld


DPSGD_RDP_PINS = [
    # (q, σ/C, steps, ε at δ=1e-5 by integer-order RDP, computed once and pinned)
    (256 / 60_000, 1.1, 14_063, 2.597079519657),  # MNIST-style: batch 256, 60 epochs
    (0.01, 1.0, 1_000, 2.107753075452),
]


@pytest.mark.parametrize(("q", "m", "steps", "pinned"), DPSGD_RDP_PINS)
def test_dpsgd_rdp_matches_the_independent_integer_order_computation(
    q: float, m: float, steps: int, pinned: float
) -> None:
    orders = list(range(2, 257))
    independent = rdp_integer_epsilon(q, m, steps, 1e-5, orders)
    assert independent == pytest.approx(pinned, abs=1e-9)
    ours = Accountant("rdp", rdp_orders=orders).compose(dpsgd_event(q, m, steps)).epsilon(1e-5)
    assert ours == pytest.approx(independent, abs=1e-9)


@pytest.mark.parametrize(
    ("q", "m", "steps", "pld_pinned"),
    [(256 / 60_000, 1.1, 14_063, 2.3818), (0.01, 1.0, 1_000, 1.8282)],
)
def test_pld_is_below_rdp_and_within_a_modest_factor(
    q: float, m: float, steps: int, pld_pinned: float
) -> None:
    pld = dpsgd_epsilon(q, m, steps, 1e-5)
    rdp = dpsgd_epsilon(q, m, steps, 1e-5, accountant="rdp")
    assert pld == pytest.approx(pld_pinned, abs=1e-3)
    assert pld <= rdp <= 1.5 * pld


def test_epsilon_grows_with_steps_and_falls_with_noise() -> None:
    eps = [dpsgd_epsilon(0.02, 1.0, t, 1e-5, pld_discretization=1e-3) for t in (10, 100, 1000)]
    assert eps[0] < eps[1] < eps[2]
    eps = [dpsgd_epsilon(0.02, m, 200, 1e-5, pld_discretization=1e-3) for m in (0.8, 1.2, 2.0)]
    assert eps[0] > eps[1] > eps[2]


# --- composition --------------------------------------------------------------------------------


def test_composing_two_runs_equals_one_run_of_all_their_steps() -> None:
    two = Accountant().compose(dpsgd_event(0.01, 1.0, 300)).compose(dpsgd_event(0.01, 1.0, 700))
    one = Accountant().compose(dpsgd_event(0.01, 1.0, 1000))
    assert two.epsilon(1e-5) == pytest.approx(one.epsilon(1e-5), rel=1e-3)


def test_composition_is_subadditive_and_beats_basic_composition() -> None:
    single = gaussian_epsilon(4.0, 1e-6)
    k = 10
    # basic composition: k runs at (ε, δ) are (kε, kδ)-DP; the accountant must do at least as
    # well at δ = kδ, and much better (ε grows like √k for Gaussians).
    composed = Accountant().compose(gaussian_event(4.0), count=k).epsilon(k * 1e-6)
    assert composed < k * single
    assert composed < 0.5 * k * single


def test_mixed_mechanisms_compose() -> None:
    acc = Accountant()
    acc.compose(gaussian_event(5.0)).compose(dpsgd_event(0.01, 1.2, 500))
    both = acc.epsilon(1e-6)
    assert both > gaussian_epsilon(5.0, 1e-6)
    assert both > dpsgd_epsilon(0.01, 1.2, 500, 1e-6)
    assert len(acc.events) == 2


def test_empty_and_non_private_accountants() -> None:
    assert Accountant().epsilon(1e-5) == 0.0
    assert Accountant("rdp").epsilon(1e-5) == 0.0
    assert Accountant().compose(dpa.NonPrivateDpEvent()).epsilon(1e-5) == math.inf


def test_accountant_delta_is_the_inverse_of_epsilon() -> None:
    acc = Accountant().compose(gaussian_event(2.0))
    eps = acc.epsilon(1e-5)
    assert acc.delta(eps) == pytest.approx(1e-5, rel=1e-2)


def test_state_dict_round_trips_through_json() -> None:
    acc = Accountant("pld", pld_discretization=1e-3)
    acc.compose(dpsgd_event(0.01, 1.0, 100)).compose(gaussian_event(3.0), count=2)
    state = json.loads(json.dumps(acc.state_dict()))
    again = Accountant.from_state_dict(state)
    assert again.kind == "pld"
    assert again.events == acc.events
    assert again.epsilon(1e-5) == acc.epsilon(1e-5)
    rdp = Accountant("rdp", rdp_orders=[2, 4, 8]).compose(gaussian_event(1.5))
    assert Accountant.from_state_dict(rdp.state_dict()).epsilon(1e-5) == rdp.epsilon(1e-5)


def test_event_serialisation_refuses_foreign_classes() -> None:
    assert event_from_dict(event_to_dict(gaussian_event(2.0))) == gaussian_event(2.0)
    with pytest.raises(ConfigError, match="unknown dp_accounting event"):
        event_from_dict({"type": "PrivacyAccountant"})
    with pytest.raises(ConfigError, match="unknown dp_accounting event"):
        event_from_dict({"type": "__class__"})
    with pytest.raises(ConfigError, match="malformed"):
        event_from_dict({"noise_multiplier": 1.0})


# --- calibration --------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "delta", "count"), [(1.0, 1e-5, 1), (0.5, 1e-6, 3)])
def test_calibrated_gaussian_noise_meets_the_target_tightly(
    target: float, delta: float, count: int
) -> None:
    m = calibrate_gaussian_noise(target, delta, count=count)
    achieved = balle_wang_epsilon(m / math.sqrt(count), delta)  # independent check
    assert achieved <= target + 1e-9
    assert achieved >= target - 1e-6
    assert gaussian_epsilon(m, delta, count=count) <= target


def test_calibrated_gaussian_noise_pinned() -> None:
    # The analytic Gaussian mechanism needs σ ≈ 3.7306 Δ for (1, 1e-5)-DP, versus
    # √(2 ln(1.25e5)) ≈ 4.8448 by the classical bound.
    assert calibrate_gaussian_noise(1.0, 1e-5) == pytest.approx(3.730631636, abs=1e-6)


DPSGD_CASE = {"target": 2.0, "delta": 1e-5, "q": 0.01, "steps": 1000, "rtol": 1e-2}


@pytest.fixture(scope="module")
def calibrated_dpsgd() -> dict[str, float]:
    """The DP-SGD multiplier calibrated to DPSGD_CASE by each accountant (computed once)."""
    c = DPSGD_CASE
    return {
        kind: calibrate_dpsgd_noise(
            c["target"], c["delta"], c["q"], c["steps"], accountant=kind, rtol=c["rtol"]
        )
        for kind in ("pld", "rdp")
    }


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_calibrated_dpsgd_noise_meets_the_target_within_rtol(
    accountant: str, calibrated_dpsgd: dict[str, float]
) -> None:
    c = DPSGD_CASE
    m = calibrated_dpsgd[accountant]
    assert dpsgd_epsilon(c["q"], m, c["steps"], c["delta"], accountant=accountant) <= c["target"]
    # tight: a multiplier (1 + rtol) smaller no longer meets the target
    smaller = m / (1 + c["rtol"])
    assert dpsgd_epsilon(c["q"], smaller, c["steps"], c["delta"], accountant=accountant) > 2.0


def test_pld_calibration_needs_less_noise_than_rdp(calibrated_dpsgd: dict[str, float]) -> None:
    assert calibrated_dpsgd["pld"] < calibrated_dpsgd["rdp"] < 1.2 * calibrated_dpsgd["pld"]


def test_calibrate_noise_on_a_known_curve() -> None:
    # ε(m) = 1/m: the smallest m with ε ≤ 0.25 is 4.
    m = calibrate_noise(lambda x: 1.0 / x, 0.25, rtol=1e-6)
    assert 4.0 <= m <= 4.0 * (1 + 1e-6)
    m = calibrate_noise(lambda x: 1.0 / x, 0.25, rtol=1e-6, initial=3.99, step=1.01)
    assert 4.0 <= m <= 4.0 * (1 + 1e-6)


def test_calibrate_noise_refuses_unreachable_targets() -> None:
    with pytest.raises(ConfigError, match="cannot be reached"):
        calibrate_noise(lambda x: 1.0, 0.5)


@pytest.mark.parametrize(
    "call",
    [
        lambda: gaussian_epsilon(0.0, 1e-5),
        lambda: gaussian_epsilon(1.0, 0.0),
        lambda: gaussian_epsilon(1.0, 1.0),
        lambda: gaussian_epsilon(1.0, 1e-5, count=0),
        lambda: dpsgd_epsilon(0.0, 1.0, 10, 1e-5),
        lambda: dpsgd_epsilon(1.5, 1.0, 10, 1e-5),
        lambda: dpsgd_epsilon(0.1, 1.0, 0, 1e-5),
        lambda: dpsgd_epsilon(0.1, 1.0, 10, 1e-5, accountant="moments"),
        lambda: calibrate_gaussian_noise(-1.0, 1e-5),
        lambda: calibrate_dpsgd_noise(1.0, 1e-5, 0.1, 10, rtol=0),
        lambda: Accountant("zcdp"),
        lambda: Accountant().compose("gaussian"),
        lambda: Accountant("rdp", rdp_orders=[0.5]),
    ],
)
def test_invalid_arguments_raise_config_error(call) -> None:
    with pytest.raises(ConfigError):
        call()

"""The two-stage budget split calibrated to the PLD-composed ε (issue 14, item 1)."""

from __future__ import annotations

import dp_accounting as dpa
import pytest

from privrank.errors import ConfigError
from privrank.privacy.calibration import Release, gaussian_multiplier
from privrank.ranking.two_stage._private import calibrate_split


def _gram(eps: float, delta: float) -> list[Release]:
    return [Release("gaussian", "gram", 1.0, gaussian_multiplier(eps, delta))]


def _sgd(eps: float, delta: float) -> list[Release]:
    # a fixed 10-step schedule at rate 0.1, multiplier from the part's (ε, δ) by basic
    # composition of the steps (conservative): a shape-only plan
    return [Release("dp-sgd", "grad", 1.0, gaussian_multiplier(eps, delta, count=10), 10, 0.1, 1)]


def _pld_oracle(releases: list[Release], delta: float) -> float:
    book = dpa.pld.PLDAccountant(value_discretization_interval=1e-3)
    for r in releases:
        if r.sampling_rate is None:
            event = dpa.GaussianDpEvent(r.noise_multiplier)
        else:
            event = dpa.PoissonSampledDpEvent(
                r.sampling_rate, dpa.GaussianDpEvent(r.noise_multiplier)
            )
        book.compose(event, r.count)
    return float(book.get_epsilon(delta))


@pytest.mark.parametrize("epsilon", [1.0, 8.0])
def test_calibrated_split_composes_to_the_request(epsilon: float) -> None:
    delta = 1e-5
    shares = [(0.3 * epsilon, 0.3 * delta, _gram), (0.3 * epsilon, 0.3 * delta, _gram)]
    shares.append((0.4 * epsilon, 0.4 * delta, _sgd))
    scale, per_part, composed = calibrate_split(shares, epsilon, delta, tolerance=1e-2)
    releases = [r for (_, d, plan), e in zip(shares, per_part, strict=True) for r in plan(e, d)]
    oracle = _pld_oracle(releases, delta)
    assert composed <= epsilon
    assert epsilon - composed <= 1e-2
    # independent accountant (finer discretisation): within the coarse grid's slack, never above
    assert oracle == pytest.approx(composed, abs=0.05)
    assert oracle <= epsilon + 1e-6
    # every part gets at least its basic-composition budget, and strictly more here
    assert scale > 1.0
    for (base, _, _), got in zip(shares, per_part, strict=True):
        assert got >= base


def test_calibrated_split_refuses_an_overspending_plan() -> None:
    def greedy(eps: float, delta: float) -> list[Release]:
        return _gram(2 * eps, delta)

    with pytest.raises(ConfigError, match="already compose"):
        calibrate_split([(1.0, 1e-5, greedy)], 1.0, 1e-5)


def test_calibrated_split_refuses_a_plan_that_ignores_its_budget() -> None:
    def fixed(eps: float, delta: float) -> list[Release]:
        return _gram(0.5, delta)  # the same release whatever ε it is given: no scale meets ε

    with pytest.raises(ConfigError, match="do not grow"):
        calibrate_split([(1.0, 1e-5, fixed)], 1.0, 1e-5)

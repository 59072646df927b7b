"""Private conversion reports: exactness without noise, noise scale, the L1 bound."""

from __future__ import annotations

import numpy as np
import pytest

from privrank.errors import DataError
from privrank.privacy.conversion_reports import (
    ARA_L1_BUDGET,
    ConversionReportConfig,
    Conversions,
    LaplaceHistogramMechanism,
    cap_per_user,
    contributions,
    exact_report,
    laplace_epsilon,
    private_report,
)
from privrank.privacy.mechanism import _noise_scale_for_testing, mechanism_class


def _conversions(n=5000, seed=0) -> Conversions:
    rng = np.random.default_rng(seed)
    return Conversions(
        user=rng.integers(0, 800, n),
        campaign=rng.integers(0, 12, n),
        kind=rng.integers(0, 3, n),
        value=np.round(rng.lognormal(2.0, 1.0, n), 2),
        n_campaigns=12,
        n_types=3,
    )


def test_zero_noise_and_no_capping_equals_the_exact_aggregates():
    data = _conversions()
    most = int(np.bincount(data.user).max())
    exact = exact_report(data)
    # By hand for one key.
    rows = (data.campaign == 3) & (data.kind == 1)
    assert exact.count[3, 1] == rows.sum()
    assert exact.value[3, 1] == pytest.approx(data.value[rows].sum())
    for unit in ("conversion", "user"):
        config = ConversionReportConfig(
            epsilon=1.0, unit=unit, max_conversions_per_user=most, value_cap=data.value.max()
        )
        with _noise_scale_for_testing(0.0):
            report = private_report(data, config, np.random.default_rng(0))
        assert report.dropped == 0 and report.clipped == 0
        assert np.allclose(report.count, exact.count)
        assert np.allclose(report.value, exact.value)


def test_noise_is_laplace_with_scale_l1_over_epsilon():
    mech = LaplaceHistogramMechanism(0.5, ARA_L1_BUDGET)
    assert mech.scale == ARA_L1_BUDGET / 0.5
    noise = mech.add_noise(np.zeros(400_000), np.random.default_rng(1))
    b = mech.scale
    assert abs(noise.mean()) < 4 * np.sqrt(2) * b / np.sqrt(noise.size)
    assert noise.var() == pytest.approx(2 * b * b, rel=0.02)
    assert np.mean(np.abs(noise)) == pytest.approx(b, rel=0.01)  # E|X| = b for Laplace
    # In count units, unit "conversion", count share 0.5: Laplace(2/ε) conversions.
    data = _conversions()
    config = ConversionReportConfig(epsilon=1.0, max_conversions_per_user=100, value_cap=1e6)
    errors = np.concatenate(
        [
            (
                private_report(data, config, np.random.default_rng(s)).count
                - exact_report(data).count
            ).ravel()
            for s in range(300)
        ]
    )
    assert np.mean(np.abs(errors)) == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("unit", ["conversion", "user"])
def test_the_l1_contribution_bound_is_enforced(unit):
    data = _conversions(seed=2)
    config = ConversionReportConfig(
        epsilon=1.0, unit=unit, max_conversions_per_user=3, value_cap=20
    )
    keep, count_part, value_part = contributions(data, config)
    per_conversion = count_part + value_part
    assert np.all(per_conversion <= config.budget_per_conversion * (1 + 1e-12))
    assert np.all(per_conversion[~keep] == 0)
    per_user = np.bincount(data.user, weights=per_conversion)
    assert np.bincount(data.user, weights=keep).max() <= 3
    bound = config.l1_budget if unit == "user" else 3 * config.l1_budget
    assert per_user.max() <= bound * (1 + 1e-12)
    assert config.user_epsilon == (1.0 if unit == "user" else 3.0)
    # The first conversions of a user are kept.
    user = data.user[0]
    mine = np.flatnonzero(data.user == user)
    assert list(np.flatnonzero(keep & (data.user == user))) == list(mine[:3])


def test_cap_per_user_by_hand():
    data = Conversions(
        np.array([5, 5, 7, 5, 7]), np.zeros(5, int), np.zeros(5, int), np.ones(5), 1, 1
    )
    assert list(cap_per_user(data, 2)) == [True, True, True, False, True]


def test_epsilon_pinned_by_the_accountant():
    assert mechanism_class("laplace-summary-report") is LaplaceHistogramMechanism
    assert laplace_epsilon(ARA_L1_BUDGET, ARA_L1_BUDGET) == pytest.approx(1.0, abs=1e-3)
    assert laplace_epsilon(ARA_L1_BUDGET / 0.5, ARA_L1_BUDGET) == pytest.approx(0.5, abs=1e-3)


def test_bad_records_name_the_row_and_field():
    with pytest.raises(DataError, match="campaign") as info:
        Conversions(np.zeros(3), np.array([0, 9, 1]), np.zeros(3, int), np.ones(3), 5, 1)
    assert info.value.line == 2
    with pytest.raises(DataError, match="conversion_value"):
        Conversions(np.zeros(2), np.zeros(2, int), np.zeros(2, int), np.array([1.0, -1.0]), 1, 1)

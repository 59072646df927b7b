"""PrivacySpec: validation, δ resolution, the contribution bound and the noise generator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privrank.data.curation import max_per_user
from privrank.data.synthetic import SyntheticConfig, generate
from privrank.errors import ConfigError
from privrank.privacy import PrivacySpec


def test_defaults() -> None:
    spec = PrivacySpec(epsilon=1.0)
    assert spec.delta is None
    assert not spec.is_resolved
    assert spec.max_interactions_per_user is None
    assert spec.selection == "most_recent"
    assert spec.clipping_norm == 1.0
    assert spec.accountant == "pld"
    assert spec.noise_seed is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epsilon", 0.0),
        ("epsilon", -1.0),
        ("epsilon", math.inf),
        ("epsilon", math.nan),
        ("epsilon", True),
        ("delta", 0.0),
        ("delta", 1.0),
        ("delta", -1e-6),
        ("delta", math.nan),
        ("max_interactions_per_user", 0),
        ("selection", "random"),
        ("selection_seed", -1),
        ("clipping_norm", 0.0),
        ("clipping_norm", math.inf),
        ("accountant", "moments"),
        ("noise_seed", -3),
    ],
)
def test_invalid_values_are_refused_with_the_field_named(field: str, value: object) -> None:
    kwargs = {"epsilon": 1.0, field: value}
    with pytest.raises(ConfigError, match=rf"PrivacySpec\.{field}"):
        PrivacySpec(**kwargs)


def test_missing_epsilon_and_unknown_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"PrivacySpec\.epsilon"):
        PrivacySpec()
    with pytest.raises(ConfigError, match=r"PrivacySpec\.sigma"):
        PrivacySpec(epsilon=1.0, sigma=2.0)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        PrivacySpec(epsilon=-1, delta=2, clipping_norm=0)
    message = str(info.value)
    for field in ("epsilon", "delta", "clipping_norm"):
        assert f"PrivacySpec.{field}" in message


def test_is_frozen() -> None:
    spec = PrivacySpec(epsilon=1.0)
    with pytest.raises(Exception):  # noqa: B017  (pydantic's frozen-instance error)
        spec.epsilon = 2.0  # type: ignore[misc]


def test_resolve_fills_the_default_delta() -> None:
    spec = PrivacySpec(epsilon=2.0).resolve(943)
    assert spec.delta == pytest.approx(1.0 / 9430.0, rel=0, abs=0)
    assert spec.is_resolved
    assert spec.require_delta() == spec.delta
    assert spec.epsilon == 2.0


def test_resolve_keeps_an_explicit_delta_up_to_one_over_n() -> None:
    spec = PrivacySpec(epsilon=1.0, delta=1e-6)
    assert spec.resolve(1000) is spec
    at_limit = PrivacySpec(epsilon=1.0, delta=1.0 / 1000)
    assert at_limit.resolve(1000).delta == 1.0 / 1000


def test_resolve_refuses_delta_above_one_over_n() -> None:
    spec = PrivacySpec(epsilon=1.0, delta=1e-3)
    with pytest.raises(ConfigError, match=r"delta.*1/n_users") as info:
        spec.resolve(10_000)
    assert "10,000 users" in str(info.value)


@pytest.mark.parametrize("n_users", [0, -5, 1.5, True, "100"])
def test_resolve_refuses_invalid_user_counts(n_users: object) -> None:
    with pytest.raises(ConfigError, match="n_users"):
        PrivacySpec(epsilon=1.0).resolve(n_users)  # type: ignore[arg-type]


def test_resolve_accepts_numpy_integers() -> None:
    assert PrivacySpec(epsilon=1.0).resolve(np.int64(50)).delta == 1.0 / 500


def test_require_delta_before_resolve_fails() -> None:
    with pytest.raises(ConfigError, match="resolve"):
        PrivacySpec(epsilon=1.0).require_delta()


def test_require_contribution_bound_names_the_mechanism() -> None:
    with pytest.raises(ConfigError, match="DP-EASE needs a contribution bound"):
        PrivacySpec(epsilon=1.0).require_contribution_bound("DP-EASE")
    assert (
        PrivacySpec(epsilon=1.0, max_interactions_per_user=7).require_contribution_bound("x") == 7
    )


@pytest.mark.parametrize("selection", ["most_recent", "uniform"])
def test_bound_contributions_is_max_per_user(selection: str) -> None:
    data = generate(SyntheticConfig(n_users=60, n_items=40, n_interactions=1500, seed=1))
    spec = PrivacySpec(
        epsilon=1.0, max_interactions_per_user=5, selection=selection, selection_seed=9
    )
    bounded = spec.bound_contributions(data)
    expected = max_per_user(data, 5, strategy=selection, seed=9)
    assert bounded.table.equals(expected.table)
    assert int(bounded.user_counts().max()) <= 5
    assert PrivacySpec(epsilon=1.0).bound_contributions(data) is data


def test_noise_generator_is_reproducible_only_with_a_seed() -> None:
    seeded = PrivacySpec(epsilon=1.0, noise_seed=123)
    a = seeded.noise_generator().normal(size=8)
    b = seeded.noise_generator().normal(size=8)
    np.testing.assert_array_equal(a, b)
    fresh = PrivacySpec(epsilon=1.0)
    c = fresh.noise_generator().normal(size=8)
    d = fresh.noise_generator().normal(size=8)
    assert not np.array_equal(c, d)


def test_describe_states_the_unit_of_privacy() -> None:
    text = PrivacySpec(epsilon=2.0, delta=1e-6, max_interactions_per_user=50).describe()
    assert "user-level" in text
    assert "one user's entire history" in text
    assert "ε=2" in text and "δ=1e-06" in text
    assert "at most 50 rows per user" in text


def test_the_package_exports_resolve() -> None:
    import privrank.privacy as package

    for name in package.__all__:
        assert getattr(package, name) is not None
    with pytest.raises(AttributeError):
        _ = package.no_such_name

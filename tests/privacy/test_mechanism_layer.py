"""The mechanism interface, its registry, the calibration service and the composed guarantee."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from privrank.errors import ConfigError
from privrank.privacy.accounting import Accountant, dpsgd_event, gaussian_event
from privrank.privacy.calibration import (
    ANALYTIC,
    Release,
    accountant,
    calibrate_multiplier,
    composed_epsilon,
    epsilons,
    gaussian_multiplier,
)
from privrank.privacy.dp_als import PrivateALSMechanism
from privrank.privacy.dpsgd import SampledGaussianMechanism, dpsgd_guarantee, plan_dpsgd
from privrank.privacy.gram_release import private_gram_release
from privrank.privacy.mechanism import (
    Mechanism,
    PrivacyGuarantee,
    mechanism_class,
    mechanism_names,
    register_mechanism,
)
from privrank.privacy.mechanisms import GaussianMechanism, private_item_counts
from privrank.privacy.spec import PrivacySpec


def spec(epsilon: float = 2.0, accountant: str = "pld") -> PrivacySpec:
    return PrivacySpec(
        epsilon=epsilon,
        delta=1e-4,
        max_interactions_per_user=4,
        noise_seed=3,
        accountant=accountant,
    )


def matrix(n_users: int = 30, n_items: int = 12, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_users):
        row = np.zeros(n_items)
        row[rng.choice(n_items, size=rng.integers(1, 5), replace=False)] = 1.0
        rows.append(row)
    return sp.csr_matrix(np.array(rows))


# -------------------------------------------------------------------- the registry
def test_every_builtin_mechanism_is_found_by_name_and_implements_the_interface():
    assert {"dp-als", "dp-sgd", "gaussian"} <= set(mechanism_names())
    assert mechanism_names() == sorted(mechanism_names())
    assert mechanism_class("gaussian") is GaussianMechanism
    assert mechanism_class("dp-als") is PrivateALSMechanism
    assert mechanism_class("dp-sgd") is SampledGaussianMechanism
    for name in mechanism_names():
        cls = mechanism_class(name)
        assert issubclass(cls, Mechanism) and cls.name == name
    with pytest.raises(ConfigError, match="unknown privacy mechanism 'nope'"):
        mechanism_class("nope")


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(ConfigError, match="exists"):
        register_mechanism("gaussian")(SampledGaussianMechanism)


def test_accountants_are_found_by_name():
    assert isinstance(accountant("pld"), Accountant) and accountant("rdp").kind == "rdp"
    with pytest.raises(ConfigError, match="registered accountants are: pld, rdp"):
        accountant("gdp")


# -------------------------------------------------------------------- the interface
def test_the_gaussian_mechanism_calibrates_releases_and_describes_itself():
    s = spec()
    mechanism = GaussianMechanism(s, 2.0, mechanism="m", statistic="a sum", n_users=30)
    assert mechanism.noise_multiplier == gaussian_multiplier(2.0, 1e-4)
    assert mechanism.noise_std == pytest.approx(2.0 * mechanism.noise_multiplier)
    (release,) = mechanism.releases()
    assert (release.mechanism, release.sensitivity, release.count) == ("gaussian", 2.0, 1)
    exact = np.arange(5.0)
    noisy = mechanism.add_noise(exact, np.random.default_rng(0))
    expected = exact + np.random.default_rng(0).standard_normal(5) * mechanism.noise_std
    np.testing.assert_array_equal(noisy, expected)
    assert "a sum" in mechanism.describe() and "sensitivity 2" in mechanism.describe()


def test_the_sampled_gaussian_mechanism_adds_noise_from_its_generator():
    import torch

    mechanism = SampledGaussianMechanism(0.5, 2.0, sampling_rate=0.1, steps=10)
    grad = torch.zeros(1000, dtype=torch.float64)
    mechanism.add_noise(grad, torch.Generator().manual_seed(0))
    assert float(grad.std()) == pytest.approx(1.0, rel=0.1)
    m = mechanism.calibrate(2.0, 1e-5, "pld")
    assert (
        composed_epsilon(
            (Release("dp-sgd", "g", 0.5, m, count=10, sampling_rate=0.1),), 1e-5, "pld", 1e-3
        )
        <= 2.0
    )
    assert "10 steps" in mechanism.describe()


# -------------------------------------------------------------------- the calibration service
def test_the_service_composes_releases_as_the_accountant_does():
    releases = (
        Release("gaussian", "counts", 2.0, 3.0),
        Release("dp-sgd", "steps", 1.0, 1.2, count=50, sampling_rate=0.05),
    )
    for name in ("pld", "rdp"):
        by_hand = (
            Accountant(name)
            .compose(gaussian_event(3.0))
            .compose(dpsgd_event(0.05, 1.2, 50))
            .epsilon(1e-5)
        )
        assert composed_epsilon(releases, 1e-5, name) == by_hand
    both = epsilons(releases, 1e-5)
    assert set(both) == {"pld", "rdp"} and both["pld"] <= both["rdp"]


def test_the_service_calibrates_one_free_release_against_fixed_ones():
    fixed = Release("gaussian", "counts", 1.0, 5.0)
    free = Release("dp-als", "stats", 1.0, 1.0, count=4)
    m = calibrate_multiplier(1.0, 1e-5, (fixed, free), free=1, pld_discretization=1e-4)
    assert composed_epsilon((fixed, free.with_multiplier(m)), 1e-5) <= 1.0
    assert composed_epsilon((fixed, free.with_multiplier(0.99 * m)), 1e-5) > 1.0
    with pytest.raises(ConfigError):
        calibrate_multiplier(1.0, 1e-5, (fixed,), free=3)


# -------------------------------------------------------------------- the composed guarantee
def test_a_guarantee_lists_every_release_it_composed():
    s = spec()
    _, counts = private_item_counts(matrix(), s)
    assert [r.count for r in counts.composition] == [1] and counts.releases == 1
    assert counts.calibration == ANALYTIC

    gram = private_gram_release(matrix(), s, count_share=0.3).guarantee
    assert [r.mechanism for r in gram.composition] == ["gaussian", "gaussian"]
    assert gram.releases == 2 and gram.noise_multiplier == gram.composition[-1].noise_multiplier

    als = PrivateALSMechanism(s, releases=3, item_grams=False, count_weight=1.0, n_users=30)
    ((release,),) = [als.guarantee.composition]
    assert (release.mechanism, release.count) == ("dp-als", 3) and als.guarantee.releases == 3
    assert als.guarantee.calibration == "pld"

    plan = plan_dpsgd(s, 30, 10, 2)
    _, popularity = private_item_counts(matrix(), s.model_copy(update={"epsilon": 0.2}))
    g = dpsgd_guarantee(
        plan, s, statistic="grads", released="item factors", popularity=popularity, noise_scale=1.0
    )
    assert g.releases == plan.steps + 1 and g.is_dpsgd
    first, steps = g.composition
    assert first == popularity.composition[0]
    assert (steps.count, steps.sampling_rate, steps.epochs) == (plan.steps, 10 / 30, 2)


def test_the_guarantee_serialises_to_readable_json_and_back():
    gram = private_gram_release(matrix(), spec(), count_share=0.3).guarantee
    text = json.dumps(gram.to_dict())
    data = json.loads(text)
    assert data["unit"] == "user" and data["epsilon"] == 2.0
    assert [r["sensitivity"] for r in data["composition"]] == [
        r.sensitivity for r in gram.composition
    ]
    assert PrivacyGuarantee.from_dict(data) == gram
    with pytest.raises(ValueError):
        PrivacyGuarantee.from_dict({**data, "composition": []})

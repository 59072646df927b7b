"""A model that declares PlannedPrivateFit makes exactly the releases it planned.

The plan is computed from the spec and the data's shape only; the oracle is the fitted model's
own guarantee, whose composition every accountant reads.
"""

from __future__ import annotations

import pytest

from privrank.models import FitOptions, create_model
from privrank.models.capabilities import PlannedPrivateFit
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions

CASES = [
    ("most-popular", {}),
    ("ease", {}),
    ("ease", {"private": {"count_share": 0.0, "signal_ratio": None, "max_items": None}}),
    ("ease-sparse", {"neighbors": 5}),
    ("itemknn", {}),
    ("bpr", {"factors": 4, "epochs": 2}),
    ("mult-vae", {"hidden": 8, "latent": 4, "epochs": 2}),
    ("sasrec", {"factors": 8, "heads": 1, "blocks": 1, "max_length": 8, "epochs": 1}),
]


def _accounted(release) -> tuple:
    return (
        release.mechanism,
        pytest.approx(release.noise_multiplier, rel=1e-12),
        release.count,
        release.sampling_rate,
        release.population,
    )


@pytest.mark.parametrize(
    ("name", "params"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)]
)
def test_the_plan_is_what_the_fit_releases(name: str, params: dict) -> None:
    data = synthetic_interactions(60, 25, per_user=6, seed=1)
    spec = PrivacySpec(epsilon=2.0, max_interactions_per_user=10, noise_seed=0).resolve(
        data.n_users
    )
    model = create_model(name, params)
    assert isinstance(model, PlannedPrivateFit)
    planned = model.planned_releases(spec, data.n_users, data.n_items)
    fitted = create_model(name, params).fit(data, FitOptions(threads=1, privacy=spec))
    made = fitted.privacy_guarantee_.composition
    assert [_accounted(r) for r in made] == [_accounted(r) for r in planned]
    # The plan reads no data: another data set of the same shape has the same plan.
    other = synthetic_interactions(60, 25, per_user=3, seed=9)
    assert model.planned_releases(spec, other.n_users, other.n_items) == planned


def test_a_model_without_a_plan_does_not_declare_one() -> None:
    assert not isinstance(create_model("ials"), PlannedPrivateFit)

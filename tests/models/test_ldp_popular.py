"""ldp-popular: popularity decoded from a simulated local-DP collection, spent from the ledger."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privrank.errors import ConfigError, PrivacyBudgetExceeded
from privrank.models import FitOptions, LDPPopular, Recommender
from privrank.models.ldp_popular import device_reports
from privrank.privacy.ledger import Ledger
from privrank.privacy.local_dp import estimator_variance
from privrank.testing import synthetic_interactions
from privrank.workflow.spend import fit_and_spend

DATA = synthetic_interactions(n_users=400, n_items=30, seed=3)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


def _budget(url: str, epsilon: float) -> None:
    with Ledger(url) as book:
        book.set_budget("toy", epsilon, 1e-3)


def test_a_collection_spends_its_epsilon_with_zero_delta(url: str) -> None:
    _budget(url, 10.0)
    model = LDPPopular(epsilon=2.0, reports_per_user=2, days=2, m=64, k=16)
    with fit_and_spend(
        model, DATA, FitOptions(seed=0), budget_key="toy", description="t", ledger_url=url
    ) as fitted:
        record = fitted.privacy_record()
    assert record is not None
    assert record["epsilon"] == pytest.approx(8.0, rel=1e-3) and record["delta"] == 0.0
    assert record["local_guarantee"]["epsilon_per_user_per_day"] == pytest.approx(4.0, rel=1e-3)
    active = int((DATA.user_counts() > 0).sum())
    assert record["local_guarantee"]["n_reports"] == 4 * active
    with Ledger(url) as book:
        (spend,) = book.spends("toy")
    assert spend.status.value == "committed" and spend.delta == 0.0
    # A second collection would overspend: refused before any device is simulated.
    again = LDPPopular(epsilon=2.0, reports_per_user=2, days=2, m=64, k=16)
    with (
        pytest.raises(PrivacyBudgetExceeded),
        fit_and_spend(
            again, DATA, FitOptions(seed=0), budget_key="toy", description="t", ledger_url=url
        ),
    ):
        pass
    assert not again.is_fitted


def test_a_collection_needs_a_ledger_key() -> None:
    with (
        pytest.raises(ConfigError, match="ledger key"),
        fit_and_spend(LDPPopular(), DATA, FitOptions(), budget_key=None, description="t"),
    ):
        pass


def test_save_and_load_keep_the_local_guarantee(tmp_path: Path) -> None:
    model = LDPPopular(sketch="hcms", epsilon=4.0, m=64, k=16).fit(DATA, FitOptions(seed=1))
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert isinstance(loaded, LDPPopular)
    assert loaded.local_guarantee_ == model.local_guarantee_
    np.testing.assert_array_equal(loaded.item_popularity_, model.item_popularity_)


def test_device_reports_are_drawn_from_each_users_own_history() -> None:
    indptr, items = DATA.sequences()
    reported = device_reports(indptr, items, 5, np.random.default_rng(0))
    users = np.flatnonzero(np.diff(indptr) > 0)
    assert len(reported) == 5 * len(users)
    for row, user in enumerate(users):
        own = set(items[indptr[user] : indptr[user + 1]].tolist())
        assert set(reported[5 * row : 5 * row + 5].tolist()) <= own


def test_decoded_popularity_estimates_the_reported_counts() -> None:
    """The model's popularity is the sketch's estimate of the exact counts of the items the
    devices reported (recomputed here from the same device randomness), within 5 sd of the
    estimator's stated variance."""
    model = LDPPopular(epsilon=2.0, m=256, k=32, reports_per_user=5).fit(DATA, FitOptions(seed=0))
    indptr, items = DATA.sequences()
    reported = device_reports(indptr, items, 5, np.random.default_rng([0, 0x1DF]))
    counts = np.bincount(reported, minlength=DATA.n_items)
    sd = np.sqrt(estimator_variance(model.config.sketch_config(), counts))
    assert np.all(np.abs(model.item_popularity_ - counts) <= 5 * sd)
    assert model.local_guarantee_ is not None and model.local_guarantee_.epsilon_total == (
        pytest.approx(10.0, rel=1e-3)
    )

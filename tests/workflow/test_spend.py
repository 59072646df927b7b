"""The one spending path: reserve before the fit, commit after the block, release on failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from privrank.data.splits import LeaveLastOut, split
from privrank.errors import ConfigError, PrivacyBudgetExceeded
from privrank.models import EASE, FitOptions, SASRec
from privrank.privacy.ledger import Ledger
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions
from privrank.workflow.spend import fit_and_spend, fit_model

DATA = synthetic_interactions(n_users=50, n_items=30, seed=2)
SPEC = PrivacySpec(epsilon=2.0, max_interactions_per_user=6, noise_seed=0)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


def _budget(url: str, epsilon: float, delta: float = 1e-2) -> None:
    with Ledger(url) as book:
        book.set_budget("toy", epsilon, delta)


def _spends(url: str) -> list:
    with Ledger(url) as book:
        return book.spends("toy")


class _Spy(EASE):
    """EASE that counts its fits."""

    fits = 0

    def fit(self, train, options=None):
        type(self).fits += 1
        return super().fit(train, options)


def _fit(url: str, model=None, spec: PrivacySpec | None = SPEC, **kw):
    model = EASE(regularization=20.0) if model is None else model
    options = FitOptions(seed=0, threads=1, privacy=spec)
    return fit_and_spend(
        model, DATA, options, budget_key="toy", description="test", ledger_url=url, **kw
    )


def test_a_private_fit_reserves_then_commits_after_the_block(url: str) -> None:
    _budget(url, 5.0)
    with _fit(url) as fitted:
        assert fitted.model.is_fitted
        (spend,) = _spends(url)
        assert spend.status.value == "reserved"  # not committed while the block runs
    (spend,) = _spends(url)
    assert spend.status.value == "committed" and spend.id == fitted.spend.spend_id
    # δ is the spec resolved against the rows fitted on: 1/(10·n_users) by default.
    assert spend.epsilon == 2.0 and spend.delta == pytest.approx(1 / (10 * DATA.n_users))
    record = fitted.privacy_record()
    assert record["ledger_key"] == "toy" and record["delta"] == spend.delta
    assert record["guarantee"] == fitted.model.privacy_guarantee_.to_dict()
    assert fitted.spend_record() == {k: v for k, v in record.items() if k != "guarantee"}


def test_over_budget_is_refused_before_the_fit(url: str) -> None:
    _budget(url, 1.0)
    _Spy.fits = 0
    model = _Spy(regularization=20.0)
    started: list[bool] = []
    with (
        pytest.raises(PrivacyBudgetExceeded),
        _fit(url, model, before_fit=lambda: started.append(True)),
    ):
        pytest.fail("the block must not run")
    assert _Spy.fits == 0 and not model.is_fitted and not started
    assert _spends(url) == []
    _budget(url, 5.0)
    with _fit(url, model, before_fit=lambda: started.append(model.is_fitted)):
        pass
    assert _Spy.fits == 1 and started == [False]  # called once, before the fit


def test_a_failure_in_the_block_releases_the_spend(url: str) -> None:
    _budget(url, 5.0)
    with pytest.raises(RuntimeError, match="saving failed"), _fit(url):
        raise RuntimeError("saving failed")
    (spend,) = _spends(url)
    assert spend.status.value == "released"


def test_a_failed_fit_releases_the_spend(url: str) -> None:
    _budget(url, 5.0)

    class Broken(EASE):
        def _fit_private(self, *args, **kwargs):
            raise RuntimeError("fit crashed")

    with pytest.raises(RuntimeError, match="fit crashed"), _fit(url, Broken()):
        pytest.fail("the block must not run")
    (spend,) = _spends(url)
    assert spend.status.value == "released"


def test_a_non_private_fit_touches_no_ledger(tmp_path: Path) -> None:
    path = tmp_path / "never.sqlite"
    with _fit(f"sqlite:///{path}", spec=None) as fitted:
        assert fitted.model.is_fitted
    assert fitted.spend is None and not fitted.unspent and fitted.privacy_record() is None
    assert not path.exists()


def test_no_ledger_fits_without_spending_and_says_so(url: str) -> None:
    _budget(url, 1.0)  # would not cover ε = 2
    with _fit(url, no_ledger=True) as fitted:
        assert fitted.model.privacy_guarantee_.epsilon == 2.0
    assert fitted.spend is None and fitted.unspent
    assert _spends(url) == []


def test_a_private_fit_needs_a_ledger_key(url: str) -> None:
    model = EASE(regularization=20.0)
    options = FitOptions(privacy=SPEC)
    with (
        pytest.raises(ConfigError, match="ledger key"),
        fit_and_spend(model, DATA, options, budget_key=None, description="x", ledger_url=url),
    ):
        pytest.fail("the block must not run")
    assert not model.is_fitted


def test_fit_model_passes_validation_only_to_early_stopping_models():
    data = synthetic_interactions(n_users=40, n_items=30, seed=1)
    parts = split(data, LeaveLastOut(k=1, validation=True))
    sasrec = SASRec(factors=8, blocks=1, max_length=8, epochs=2, batch_size=16, negatives=8)
    fit_model(sasrec, parts.train, FitOptions(seed=0, threads=1), parts.validation)
    assert len(sasrec.validation_history_) > 0
    # carve_validation=False: without a validation part SASRec would carve its own (the default
    # since sasrec2), which is not what this test is about: fit_model passes none.
    plain = SASRec(
        factors=8, blocks=1, max_length=8, epochs=2, batch_size=16, negatives=8,
        carve_validation=False,
    )  # fmt: skip
    fit_model(plain, parts.train, FitOptions(seed=0, threads=1), None)
    assert len(plain.validation_history_) == 0
    ease = fit_model(EASE(regularization=10.0), parts.train, FitOptions(), parts.validation)
    assert ease.is_fitted

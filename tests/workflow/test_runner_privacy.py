"""Private models in evaluation runs: the ledger spend, refusals, and the recorded guarantee."""

from __future__ import annotations

from pathlib import Path

import pytest

from privrank.errors import ConfigError, PrivacyBudgetExceeded
from privrank.privacy.ledger import Ledger
from privrank.testing import synthetic_interactions
from privrank.workflow.protocols import ProtocolSpec
from privrank.workflow.runner import RunConfig, run

HOLDOUT = {"protocol": "holdout", "fraction": 0.25, "seed": 1}
PRIVACY = {"epsilon": 4.0, "max_interactions_per_user": 5, "noise_seed": 3}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = synthetic_interactions(60, 30, per_user=8, seed=5)
    return data.save(tmp_path_factory.mktemp("runner-privacy") / "toy")


def _config(dataset_dir: Path, *models) -> RunConfig:
    spec = ProtocolSpec(
        name="toy-holdout", dataset=str(dataset_dir), split=HOLDOUT, cutoffs=(10, 20)
    )
    return RunConfig(protocols=[spec], models=list(models), n_resamples=50)


def _source_key(dataset_dir: Path) -> str:
    from privrank.data import Interactions

    return Interactions.load(dataset_dir).metadata.name


def test_private_model_spends_from_the_ledger_and_records_its_guarantee(
    tmp_path: Path, dataset_dir: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    key = _source_key(dataset_dir)
    with Ledger(url) as book:
        book.set_budget(key, 5.0, 1e-2)
    config = _config(
        dataset_dir, "most-popular", {"name": "ease", "label": "dp-ease", "privacy": PRIVACY}
    )
    summary = run(config, tmp_path / "out", ledger_url=url)
    public, private = summary.records
    assert "privacy" not in public
    spend = private["privacy"]
    assert spend["ledger_key"] == key and spend["epsilon"] == 4.0
    train_users = summary.runs[1].prepared.train.n_users
    assert spend["delta"] == pytest.approx(1 / (10 * train_users))
    assert spend["guarantee"]["epsilon"] == 4.0
    assert spend["guarantee"]["contribution_bound"] == 5
    with Ledger(url) as book:
        (record,) = book.spends(key)
        assert record.status.value == "committed" and record.id == spend["spend_id"]
        # A second run of the same model would exceed ε = 5: refused before anything trains.
        with pytest.raises(PrivacyBudgetExceeded):
            run(_config(dataset_dir, {"name": "ease", "privacy": PRIVACY}), None, ledger_url=url)
        assert len(book.spends(key)) == 1


def test_a_failed_private_run_releases_its_spend(
    tmp_path: Path, dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    key = _source_key(dataset_dir)
    with Ledger(url) as book:
        book.set_budget(key, 5.0, 1e-2)

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation crashed")

    monkeypatch.setattr("privrank.workflow.runner.evaluate_model", broken)
    with pytest.raises(RuntimeError, match="evaluation crashed"):
        run(_config(dataset_dir, {"name": "ease", "privacy": PRIVACY}), None, ledger_url=url)
    with Ledger(url) as book:
        (record,) = book.spends(key)
        assert record.status.value == "released"


def test_without_a_budget_a_private_run_is_refused(tmp_path: Path, dataset_dir: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with pytest.raises(PrivacyBudgetExceeded, match="no privacy budget"):
        run(_config(dataset_dir, {"name": "ease", "privacy": PRIVACY}), None, ledger_url=url)


def test_privacy_on_a_model_without_a_private_fit_is_refused_before_anything_runs(
    tmp_path: Path, dataset_dir: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    config = _config(dataset_dir, {"name": "implicit-bpr", "privacy": PRIVACY})
    with pytest.raises(ConfigError, match="cannot train with differential privacy"):
        run(config, None, ledger_url=url)
    with pytest.raises(ConfigError, match="epsilon"):
        _config(dataset_dir, {"name": "ease", "privacy": {"epsilon": -1}})

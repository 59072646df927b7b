"""``privrank train --epsilon``: the privacy spec, the ledger spend, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import privrank.cli.privacy
import privrank.cli.train  # noqa: F401  (register the commands)
from privrank.cli.app import app
from privrank.data.interactions import DatasetMetadata
from privrank.errors import ConfigError, PrivacyBudgetExceeded
from privrank.models import Recommender
from privrank.privacy.ledger import Ledger
from privrank.testing import synthetic_interactions

runner = CliRunner()


@pytest.fixture
def dataset(tmp_path: Path, privrank_home: Path) -> Path:
    data = synthetic_interactions(n_users=60, n_items=40, seed=0)
    data = data.with_metadata(DatasetMetadata(name="tiny"))
    return data.save(tmp_path / "tiny")


def train(dataset: Path, out: Path, *extra: str):
    args = ["train", "--data", str(dataset), "--model", "ease", "--out", str(out), *extra]
    return runner.invoke(app, args, catch_exceptions=True)


def test_private_fit_spends_from_the_dataset_budget(dataset: Path, tmp_path: Path) -> None:
    Ledger().set_budget("tiny", 3.0, 1e-2)
    out = tmp_path / "model"
    done = train(dataset, out, "--epsilon", "2", "--max-per-user", "10", "--noise-seed", "1")
    assert done.exit_code == 0, done.output
    record = json.loads((out / "training.json").read_text())
    assert record["privacy"]["ledger_key"] == "tiny"
    assert record["privacy"]["epsilon"] == 2.0
    assert record["privacy"]["delta"] == pytest.approx(1 / (10 * 60))
    model = Recommender.load(out / "model")
    assert model.privacy_guarantee_.epsilon == 2.0
    (spend,) = Ledger().spends("tiny")
    assert spend.status == "committed" and spend.id == record["privacy"]["spend_id"]


def test_over_budget_is_refused_before_training_and_writes_nothing(
    dataset: Path, tmp_path: Path
) -> None:
    Ledger().set_budget("tiny", 1.0, 1e-3)
    out = tmp_path / "model"
    done = train(dataset, out, "--epsilon", "2", "--max-per-user", "10")
    assert isinstance(done.exception, PrivacyBudgetExceeded)
    assert not out.exists()
    assert Ledger().spends("tiny") == []


def test_no_budget_is_refused(dataset: Path, tmp_path: Path) -> None:
    done = train(dataset, tmp_path / "m", "--epsilon", "1", "--max-per-user", "10")
    assert isinstance(done.exception, PrivacyBudgetExceeded)
    assert "privrank privacy budget tiny" in str(done.exception)


def test_model_without_private_training_is_refused_before_any_spend(
    dataset: Path, tmp_path: Path
) -> None:
    Ledger().set_budget("tiny", 3.0, 1e-3)
    args = [
        "train",
        "--data",
        str(dataset),
        "--model",
        "implicit-als",
        "--out",
        str(tmp_path / "m"),
    ]
    done = runner.invoke(app, [*args, "--epsilon", "1", "--max-per-user", "10"])
    assert isinstance(done.exception, ConfigError)
    assert "ease" in str(done.exception)  # names the models that can train privately
    assert Ledger().spends("tiny") == []


def test_privacy_options_without_epsilon_are_refused(dataset: Path, tmp_path: Path) -> None:
    done = train(dataset, tmp_path / "m", "--max-per-user", "10")
    assert isinstance(done.exception, ConfigError)
    assert "--max-per-user" in str(done.exception)


def test_a_local_dp_collection_spends_its_epsilon_with_zero_delta(
    dataset: Path, tmp_path: Path
) -> None:
    """ldp-popular has no --epsilon: its collection (ε per report × reports a day × days) is
    spent from the dataset's budget at δ = 0, and refused when the budget does not cover it."""
    Ledger().set_budget("tiny", 5.0, 1e-3)
    out = tmp_path / "ldp"
    args = ["--param", "epsilon=2", "--param", "reports_per_user=2", "--param", "m=64"]
    done = runner.invoke(
        app, ["train", "--data", str(dataset), "--model", "ldp-popular", "--out", str(out), *args]
    )
    assert done.exit_code == 0, done.output
    assert "every report is 2-LDP" in done.output
    record = json.loads((out / "training.json").read_text())
    assert record["privacy"]["epsilon"] == pytest.approx(4.0)
    assert record["privacy"]["delta"] == 0.0
    model = Recommender.load(out / "model")
    assert model.local_guarantee_.epsilon_per_user_per_day == pytest.approx(4.0)
    again = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(dataset),
            "--model",
            "ldp-popular",
            "--out",
            str(tmp_path / "b"),
            *args,
        ],
    )
    assert isinstance(again.exception, PrivacyBudgetExceeded)
    assert not (tmp_path / "b").exists()
    (spend,) = Ledger().spends("tiny")
    assert spend.status == "committed" and spend.delta == 0.0

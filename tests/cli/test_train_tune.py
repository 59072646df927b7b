"""``privrank train --tune`` and ``--model auto`` end to end on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import privrank.cli.train  # noqa: F401  (register the commands)
import privrank.tuning.auto as auto_module
from privrank.cli.app import app
from privrank.data.splits import HoldoutSplit, LeaveLastOut, split
from privrank.errors import ConfigError
from privrank.models import Recommender
from privrank.testing import synthetic_interactions

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)


@pytest.fixture
def toy(tmp_path: Path, privrank_home: Path):
    data = synthetic_interactions(60, 40, per_user=10, seed=5)
    dataset = data.save(tmp_path / "toy")
    holdout = split(data, HoldoutSplit(fraction=0.25, seed=2)).save(tmp_path / "holdout")
    loo = split(data, LeaveLastOut(k=1)).save(tmp_path / "loo")
    return data, dataset, holdout, loo


def test_tune_one_model_records_every_trial_and_fits_the_best(tmp_path: Path, toy) -> None:
    _, _, holdout, _ = toy
    out = tmp_path / "ease"
    result = invoke(
        "train", "--data", holdout, "--model", "ease", "--tune", "4", "--threads", "1",
        "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((out / "training.json").read_text())
    tuning = record["tuning"]
    (family,) = tuning["families"]
    assert family["model"] == "ease" and len(family["trials"]) == 4
    assert tuning["budget"] == {"trials": 4, "seconds": None}
    assert tuning["data"]["validation_split"]["source"] == "carved from the split's train part"
    assert tuning["privacy"].startswith("none")
    # The saved model is the chosen config, fitted on the split's whole train part.
    assert record["model"]["config"] == tuning["chosen"]["config"]
    best = max(t["value"] for t in family["trials"] if t["value"] is not None)
    assert tuning["chosen"]["value"] == best
    model = Recommender.load(out / "model")
    assert model.config.regularization == family["best_params"]["regularization"]
    assert record["data"]["train_rows"] > tuning["data"]["train"]["rows"]


def test_auto_picks_among_families_on_a_leave_one_out_split(
    tmp_path: Path, toy, monkeypatch
) -> None:
    _, _, _, loo = toy
    monkeypatch.setattr(auto_module, "AUTO_FAMILIES", ("most-popular", "itemknn", "ease"))
    out = tmp_path / "auto"
    result = invoke(
        "train", "--data", loo, "--model", "auto", "--tune", "6", "--threads", "1", "--out", out
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "training.json").read_text())
    tuning = record["tuning"]
    families = {f["model"]: f for f in tuning["families"]}
    assert set(families) == {"most-popular", "itemknn", "ease"}
    assert tuning["data"]["validation_split"]["source"] == "the split's validation part"
    chosen = max(families.values(), key=lambda f: f["best_value"])
    assert record["model"]["name"] == tuning["chosen"]["model"] == chosen["model"]
    assert f"chose {chosen['model']}" in result.output


def test_tuning_a_private_fit_is_refused_before_anything_runs(tmp_path: Path, toy) -> None:
    _, _, holdout, _ = toy
    for model in ("ease", "auto"):
        result = invoke(
            "train", "--data", holdout, "--model", model, "--tune", "3", "--epsilon", "1",
            "--max-per-user", "10", "--out", tmp_path / model,
        )  # fmt: skip
        assert isinstance(result.exception, ConfigError), result.output
        assert "with a privacy spec (--epsilon) is refused" in str(result.exception)
        assert not (tmp_path / model).exists()
    result = invoke("privacy", "ledger")
    assert "ease" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "auto"], "--model auto chooses a model by tuning"),
        (["--model", "auto", "--tune", "3", "--param", "regularization=3"], "belong to one model"),
        (["--model", "ease", "--tune", "0"], "expected TRIALS"),
        (["--model", "ease", "--tune", "5x"], "expected TRIALS"),
        (["--model", "ease", "--tune", "3", "--param", "regularization=-2"], "not a valid"),
    ],
)
def test_bad_tuning_requests_are_refused(tmp_path: Path, toy, args, message) -> None:
    _, _, holdout, _ = toy
    result = invoke("train", "--data", holdout, *args, "--out", tmp_path / "m")
    assert isinstance(result.exception, ConfigError), result.output
    assert message in str(result.exception)
    assert not (tmp_path / "m").exists()

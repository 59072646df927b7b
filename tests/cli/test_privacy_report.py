"""``privrank privacy report MODEL_DIR``: the saved model's guarantee in plain words and JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import privrank.cli.privacy
import privrank.cli.train  # noqa: F401  (register the commands)
from privrank.cli import main
from privrank.cli.app import app
from privrank.data.interactions import DatasetMetadata
from privrank.errors import ConfigError
from privrank.models import EASE, FitOptions, MostPopular
from privrank.privacy.ledger import Ledger
from privrank.privacy.mechanisms import _noise_scale_for_testing
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions

runner = CliRunner()
DATA = synthetic_interactions(n_users=60, n_items=40, seed=0)


@pytest.fixture
def dataset(tmp_path: Path, privrank_home: Path) -> Path:
    return DATA.with_metadata(DatasetMetadata(name="tiny")).save(tmp_path / "tiny")


def _report(*args: str):
    return runner.invoke(app, ["privacy", "report", *args], catch_exceptions=False)


def test_private_model_trained_by_the_cli(dataset: Path, tmp_path: Path) -> None:
    Ledger().set_budget("tiny", 3.0, 1e-2)
    out = tmp_path / "dp-ease"
    args = ["train", "--data", str(dataset), "--model", "ease", "--out", str(out),
            "--epsilon", "2", "--max-per-user", "10"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    spend_id = json.loads((out / "training.json").read_text())["privacy"]["spend_id"]
    done = _report(str(out))
    assert done.exit_code == 0, done.output
    text = " ".join(done.output.split())
    assert "(ε=2, δ=0.00167)-differential privacy" in text  # δ = 1/(10·60)
    assert "one user's entire history" in text
    assert "at most 10 interactions per user" in text
    assert "mechanism" in text and "noise_std" in text and "sensitivity" in text
    assert f"ledger key 'tiny' (spend {spend_id})" in text
    assert "NOT" not in text.replace("NOT_", "").split("WARNING")[0]
    assert "must not be published" in text and "histories" in text

    facts = json.loads(_report(str(out), "--json").output)
    assert facts["status"] == "private" and facts["model"] == "ease"
    assert facts["guarantee"]["epsilon"] == 2.0
    assert facts["guarantee"]["mechanism"].startswith("gaussian")
    assert facts["guarantee"]["delta"] == pytest.approx(1 / 600)
    assert facts["guarantee"]["contribution_bound"] == 10 and facts["guarantee"]["unit"] == "user"
    assert facts["ledger"] == {"ledger_key": "tiny", "spend_id": spend_id, "epsilon": 2.0,
                               "delta": pytest.approx(1 / 600)}  # fmt: skip
    # The model directory itself (not the training directory) works too, without a ledger entry.
    facts = json.loads(_report(str(out / "model"), "--json").output)
    assert facts["status"] == "private" and facts["ledger"] is None
    assert "No privacy-budget ledger spend" in facts["statement"]


def test_a_fixed_noise_seed_is_recorded_reported_not_private_and_never_released(
    dataset: Path, tmp_path: Path
) -> None:
    Ledger().set_budget("tiny", 3.0, 1e-2)
    out = tmp_path / "seeded"
    args = ["train", "--data", str(dataset), "--model", "ease", "--out", str(out),
            "--epsilon", "2", "--max-per-user", "10", "--noise-seed", "7"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    facts = json.loads(_report(str(out), "--json").output)
    assert facts["status"] == "not-private-fixed-seed"
    assert facts["guarantee"]["noise_seed"] == 7
    text = " ".join(_report(str(out)).output.split())
    assert "NOT PRIVATE (fixed noise seed)" in text
    released = runner.invoke(app, ["privacy", "release", str(out), "--out", str(tmp_path / "r")])
    assert isinstance(released.exception, ConfigError)  # exit 2 through privrank's main
    assert "fixed noise seed" in str(released.exception)
    assert not (tmp_path / "r").exists()


def test_non_private_model(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ease"
    args = ["train", "--data", str(dataset), "--model", "ease", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    done = _report(str(out))
    assert done.exit_code == 0
    assert "NOT differentially private" in " ".join(done.output.split())
    facts = json.loads(_report(str(out), "--json").output)
    assert facts["status"] == "not-private" and facts["guarantee"] is None
    assert "must not be published" in facts["warning"]


def test_model_whose_noise_a_test_scaled(tmp_path: Path) -> None:
    spec = PrivacySpec(epsilon=1.0, max_interactions_per_user=5, noise_seed=0)
    with _noise_scale_for_testing(0.1):
        model = MostPopular().fit(DATA, FitOptions(privacy=spec))
    model.save(tmp_path / "broken")
    done = _report(str(tmp_path / "broken"))
    assert "NOT PRIVATE (noise scaled for testing)" in " ".join(done.output.split())
    facts = json.loads(_report(str(tmp_path / "broken"), "--json").output)
    assert facts["status"] == "not-private-testing"
    assert facts["guarantee"]["noise_scale_for_testing"] == 0.1


def test_modified_or_missing_model_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    EASE(regularization=20.0).fit(DATA).save(tmp_path / "m")
    header = tmp_path / "m" / "model.json"
    header.write_text(header.read_text().replace('"privacy": null', '"privacy": {"epsilon": 1}'))
    for target in (tmp_path / "m", tmp_path / "nothing"):
        monkeypatch.setattr(sys, "argv", ["privrank", "privacy", "report", str(target)])
        with pytest.raises(SystemExit) as exit_info:
            main.app()
        assert exit_info.value.code == 2
    assert "checksum mismatch" in capsys.readouterr().err

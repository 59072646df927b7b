"""``privrank privacy release``: a private model without what its guarantee does not cover."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import privrank.cli.release
import privrank.cli.train  # noqa: F401  (register the commands)
from privrank.cli.app import app
from privrank.data.interactions import DatasetMetadata
from privrank.errors import ConfigError
from privrank.models import Query
from privrank.privacy.ledger import Ledger
from privrank.testing import synthetic_interactions
from privrank.workflow.model_dir import load_trained

runner = CliRunner()


@pytest.fixture
def dataset(tmp_path: Path, privrank_home: Path) -> Path:
    data = synthetic_interactions(n_users=60, n_items=40, seed=0)
    return data.with_metadata(DatasetMetadata(name="tiny")).save(tmp_path / "tiny")


def _train(dataset: Path, out: Path, *extra: str) -> None:
    args = ["train", "--data", str(dataset), "--model", "ease", "--out", str(out), *extra]
    done = runner.invoke(app, args, catch_exceptions=False)
    assert done.exit_code == 0, done.output


def test_release_of_a_private_fit(dataset: Path, tmp_path: Path) -> None:
    Ledger().set_budget("tiny", 3.0, 1e-2)
    _train(dataset, tmp_path / "run", "--epsilon", "2", "--max-per-user", "10")
    done = runner.invoke(
        app, ["privacy", "release", str(tmp_path / "run"), "--out", str(tmp_path / "rel")]
    )
    assert done.exit_code == 0, done.output
    assert "withheld" in done.output and "ε=2" in done.output
    released = load_trained(tmp_path / "rel")  # checksums verified against the new record
    original = load_trained(tmp_path / "run")
    assert released.model.is_release_ and released.model.n_users_ == 0
    assert pq.read_table(tmp_path / "rel" / "model" / "user_ids.parquet").num_rows == 0
    record = json.loads((tmp_path / "rel" / "training.json").read_text())
    assert "withheld" in record["data"]["train_fingerprint"]
    assert record["privacy"] == original.record["privacy"]
    query = Query.histories([[1, 2, 3]])
    assert (released.model.score(query) == original.model.score(query)).all()
    assert len(Ledger().spends("tiny")) == 1  # a release spends nothing more


def test_release_refuses_a_public_model_and_an_existing_directory(
    dataset: Path, tmp_path: Path
) -> None:
    _train(dataset, tmp_path / "public")
    done = runner.invoke(
        app, ["privacy", "release", str(tmp_path / "public"), "--out", str(tmp_path / "rel")]
    )
    assert isinstance(done.exception, ConfigError)
    assert "without differential privacy" in str(done.exception)
    assert not (tmp_path / "rel").exists()
    (tmp_path / "taken").mkdir()
    done = runner.invoke(
        app, ["privacy", "release", str(tmp_path / "public"), "--out", str(tmp_path / "taken")]
    )
    assert isinstance(done.exception, ConfigError) and "already exists" in str(done.exception)


def test_privacy_report_of_a_release_says_what_it_holds(dataset: Path, tmp_path: Path) -> None:
    from privrank.cli.privacy import privacy_report

    Ledger().set_budget("tiny", 3.0, 1e-2)
    _train(dataset, tmp_path / "run", "--epsilon", "2", "--max-per-user", "10")
    full = privacy_report(tmp_path / "run")
    assert not full["release"] and "privrank privacy release" in full["warning"]
    runner.invoke(app, ["privacy", "release", str(tmp_path / "run"), "--out", str(tmp_path / "r")])
    released = privacy_report(tmp_path / "r")
    assert released["status"] == "private" and released["release"]
    assert "no training user ids" in released["warning"]
    assert released["ledger"] == full["ledger"]

"""``privrank tune`` on small saved datasets and splits (and ML-100K when it is on disk)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import privrank.cli.tune  # noqa: F401  (registers the command)
from privrank.cli.app import app
from privrank.cli.tune import resolve_tuning_data
from privrank.data import DatasetMetadata, Interactions
from privrank.data.splits import HoldoutSplit, LeaveLastOut, split
from privrank.errors import ConfigError
from privrank.models import create_model
from privrank.tuning import load_best_config

runner = CliRunner()


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Interactions]:
    rng = np.random.default_rng(5)
    n = 900
    data = Interactions.from_columns(
        users=rng.integers(0, 50, n),
        items=[f"i{i}" for i in rng.integers(0, 70, n)],
        timestamps=rng.integers(0, 5000, n),
        values=rng.integers(1, 6, n).astype(float),
        metadata=DatasetMetadata(name="toy"),
    )
    return data.save(tmp_path / "toy"), data


def invoke(*args: str):
    return runner.invoke(app, ["tune", *args], catch_exceptions=True)


def _rows(data: Interactions) -> Counter:
    columns = (data.users().tolist(), data.items().tolist(), data.timestamps().tolist())
    return Counter(zip(*columns, strict=True))


def test_tune_writes_a_record_and_a_config_that_train_can_read(dataset, tmp_path) -> None:
    directory, _ = dataset
    out, best = tmp_path / "tuning.json", tmp_path / "best.json"
    result = invoke(
        "--model", "ease", "--data", str(directory), "--trials", "3", "--threads", "1",
        "--out", str(out), "--best-config", str(best),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["format"] == "privrank.tuning" and len(record["trials"]) == 3
    assert record["data"]["kind"] == "dataset"
    assert record["data"]["validation_split"]["source"] == "carved from the whole dataset"
    params = json.loads(best.read_text())
    assert params == record["model"]["config"]
    assert load_best_config(out) == ("ease", create_model("ease", params).config)
    assert f"record saved to {out}" in result.output.replace("\n", "")


def test_validation_is_carved_from_the_split_train_part_only(dataset, tmp_path) -> None:
    _, data = dataset
    parts = split(data, HoldoutSplit(fraction=0.2, seed=0))
    directory = parts.save(tmp_path / "split")
    tuning = resolve_tuning_data(data=str(directory), protocol=None, validation_fraction=0.25)
    assert _rows(tuning.train) + _rows(tuning.validation) == _rows(parts.train)
    assert not set(_rows(tuning.validation)) & set(_rows(parts.test)) - set(_rows(parts.train))
    assert tuning.record["validation_split"]["source"] == "carved from the split's train part"
    assert tuning.record["split"]["protocol"] == "holdout"


def test_a_split_with_a_validation_part_is_tuned_on_it(dataset, tmp_path) -> None:
    _, data = dataset
    parts = split(data, LeaveLastOut(k=1, validation=True))
    directory = parts.save(tmp_path / "loo")
    tuning = resolve_tuning_data(data=str(directory), protocol=None)
    assert tuning.train.table.equals(parts.train.table)
    assert tuning.validation.table.equals(parts.validation.table)
    out = tmp_path / "t.json"
    result = invoke(
        "--model", "itemknn", "--data", str(directory), "--trials", "2", "--out", str(out)
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["data"]["validation_split"]["source"] == (
        "the split's validation part"
    )


def test_bad_invocations_are_config_errors(dataset, tmp_path) -> None:
    directory, _ = dataset
    out = tmp_path / "t.json"
    both = invoke(
        "--model", "ease", "--data", str(directory), "--protocol", "ml100k-holdout",
        "--trials", "1", "--out", str(out),
    )  # fmt: skip
    assert isinstance(both.exception, ConfigError)
    assert "exactly one of --data and --protocol" in str(both.exception)
    no_budget = invoke("--model", "ease", "--data", str(directory), "--out", str(out))
    assert isinstance(no_budget.exception, ConfigError)
    unknown = invoke("--model", "nope", "--data", str(directory), "--trials", "1", "--out", "x")
    assert isinstance(unknown.exception, ConfigError)
    assert not out.exists()


def test_fixed_parameters_are_held(dataset, tmp_path) -> None:
    directory, _ = dataset
    out = tmp_path / "t.json"
    result = invoke(
        "--model", "itemknn", "--data", str(directory), "--trials", "2",
        "--param", "neighbors=7", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["model"]["config"]["neighbors"] == 7
    assert "neighbors" not in record["search_space"]["params"]
    assert all("neighbors" not in t["params"] for t in record["trials"])


@pytest.mark.realdata
def test_protocol_ml100k_holdout(real_data_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PRIVRANK_DATA_DIR", str(real_data_dir))
    out = tmp_path / "t.json"
    result = invoke(
        "--model", "ease", "--protocol", "ml100k-holdout", "--trials", "2",
        "--time-budget", "60", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["data"]["protocol"] == "ml100k-holdout"
    # ML-100K holdout: 80,000 train rows, of which a 20% per-user holdout is validation.
    assert record["data"]["train"]["rows"] + record["data"]["validation"]["rows"] == 80_000

"""``privrank train``, ``privrank evaluate`` and ``privrank report`` end to end on tiny data."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import privrank.cli.evaluate
import privrank.cli.report
import privrank.cli.train  # noqa: F401  (register the commands)
from privrank.cli.app import app
from privrank.cli.train import parse_params
from privrank.data.fingerprint import fingerprint
from privrank.data.splits import HoldoutSplit, LeaveLastOut, split
from privrank.errors import ArtifactError, ConfigError
from privrank.testing import synthetic_interactions

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)


@pytest.fixture
def toy(tmp_path: Path, privrank_home: Path):
    data = synthetic_interactions(50, 36, per_user=9, seed=5)
    dataset = data.save(tmp_path / "toy")
    parts = split(data, HoldoutSplit(fraction=0.25, seed=2))
    split_dir = parts.save(tmp_path / "toy-split")
    return data, dataset, parts, split_dir


def test_parse_params(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text("regularization = 10\ndtype = 'float32'\n")
    params = parse_params(["regularization=300", "dtype=float64", "flag=true"], tmp_path / "p.toml")
    assert params == {"regularization": 300, "dtype": "float64", "flag": True}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_params(["regularization"])


def test_train_then_evaluate_a_split(tmp_path: Path, toy) -> None:
    data, _, parts, split_dir = toy
    model_dir = tmp_path / "pop"
    result = invoke("train", "--data", split_dir, "--model", "most-popular", "--out", model_dir)
    assert result.exit_code == 0, result.output
    assert "fitting most-popular" in result.output
    record = json.loads((model_dir / "training.json").read_text())
    assert record["data"]["kind"] == "split"
    assert record["data"]["train_fingerprint"] == fingerprint(parts.train)
    assert record["data"]["dataset"]["fingerprint"] == fingerprint(data)
    assert record["data"]["split"] == {
        "protocol": "holdout",
        "fraction": 0.25,
        "seed": 2,
        "unseen": "keep",
    }
    assert record["fit"]["history_mode"] == "users"

    out = tmp_path / "eval"
    result = invoke("evaluate", "--model", model_dir, "--out", out, "--resamples", "100")
    assert result.exit_code == 0, result.output
    assert "most-popular" in result.output and "NDCG@10" in result.output
    (json_file,) = out.glob("*/*.json")
    evaluated = json.loads(json_file.read_text())
    assert evaluated["trained_model"]["train_fingerprint"] == fingerprint(parts.train)
    assert (out / "report.md").is_file() and len(list(out.glob("*.png"))) == 2

    # oracle: popularity over distinct training users, training items excluded, ties by code
    train, test = defaultdict(set), defaultdict(set)
    for part, pairs in ((parts.train, train), (parts.test, test)):
        for u, i in zip(part.users(), part.items(), strict=True):
            pairs[int(u)].add(int(i))
    popularity = np.zeros(data.n_items)
    for items in train.values():
        popularity[list(items)] += 1
    table = pq.read_table(next(out.glob("*/*.parquet"))).to_pydict()
    for position, user in enumerate(table["user_code"]):
        ranked = sorted(
            (i for i in range(data.n_items) if i not in train[user]),
            key=lambda i: (-popularity[i], i),
        )
        expected = len(set(ranked[:20]) & test[user]) / len(test[user])
        assert table["recall@20"][position] == pytest.approx(expected)


def test_evaluate_refuses_data_the_model_was_not_trained_for(tmp_path: Path, toy) -> None:
    data, dataset, _, split_dir = toy
    model_dir = tmp_path / "ease"
    assert (
        invoke("train", "--data", split_dir, "--model", "ease", "--out", model_dir).exit_code == 0
    )
    # the same folder now holds a split with another seed: its train part differs
    split(data, HoldoutSplit(fraction=0.25, seed=3)).save(split_dir)
    result = invoke("evaluate", "--model", model_dir, "--out", tmp_path / "x")
    assert isinstance(result.exception, ArtifactError)
    assert "refusing" in str(result.exception)
    # a model fitted on a whole dataset has no test set
    whole = tmp_path / "whole"
    result = invoke("train", "--data", dataset, "--model", "most-popular", "--out", whole)
    assert result.exit_code == 0 and "no held-out test set" in result.output
    result = invoke("evaluate", "--model", whole, "--out", tmp_path / "y")
    assert isinstance(result.exception, ConfigError)
    assert "trained on the whole dataset" in str(result.exception)
    # a model directory changed after training
    other = tmp_path / "other"
    invoke("train", "--data", split_dir, "--model", "most-popular", "--out", other)
    (model_dir / "model").rename(tmp_path / "kept")
    (other / "model").rename(model_dir / "model")
    result = invoke("evaluate", "--model", model_dir, "--out", tmp_path / "z")
    assert isinstance(result.exception, ArtifactError)
    assert "not the model its training.json describes" in str(result.exception)
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()


def test_train_refuses_bad_arguments(tmp_path: Path, toy) -> None:
    _, _, _, split_dir = toy
    result = invoke(
        "train",
        "--data",
        split_dir,
        "--model",
        "ease",
        "--param",
        "regularization=-1",
        "--out",
        tmp_path / "m",
    )
    assert isinstance(result.exception, ConfigError)
    assert "EASE.regularization: got -1; expected a float > 0" in str(result.exception)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    result = invoke("train", "--data", split_dir, "--model", "ease", "--out", tmp_path / "busy")
    assert isinstance(result.exception, ConfigError)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_leave_one_out_split_trained_model_folds_in(tmp_path: Path, toy) -> None:
    data = toy[0]
    loo_dir = split(data, LeaveLastOut(k=1)).save(tmp_path / "loo")
    model_dir = tmp_path / "ease"
    result = invoke("train", "--data", loo_dir, "--model", "ease", "--out", model_dir)
    assert result.exit_code == 0, result.output
    assert json.loads((model_dir / "training.json").read_text())["fit"]["history_mode"] == "fold-in"
    result = invoke("evaluate", "--model", model_dir, "--validation")
    assert isinstance(result.exception, ConfigError) and "--validation" in str(result.exception)
    result = invoke("evaluate", "--model", model_dir, "--out", tmp_path / "out", "--no-plots")
    assert result.exit_code == 0, result.output
    (record_file,) = (tmp_path / "out").glob("*/*.json")
    record = json.loads(record_file.read_text())
    assert record["model"]["history_mode"] == "fold-in"
    assert record["test_history"] == "train + validation"
    assert record["headline"] == ["hit_rate@10", "ndcg@10"]
    assert not list((tmp_path / "out").glob("*.png"))


def test_evaluate_models_from_a_config_file_and_report(tmp_path: Path, toy) -> None:
    _, dataset, _, _ = toy
    config = tmp_path / "run.toml"
    config.write_text(
        "n_resamples = 100\nthreads = 1\n"
        "[[protocols]]\nname = 'toy'\n"
        f"dataset = '{dataset}'\n"
        "split = { protocol = 'holdout', fraction = 0.25, seed = 2 }\n"
        "[[models]]\nname = 'most-popular'\n"
        "[[models]]\nname = 'implicit-als'\nparams = { factors = 4, iterations = 2 }\n"
    )
    out = tmp_path / "out"
    result = invoke("evaluate", "--config", config, "--models", "most-popular,ease", "--out", out)
    assert result.exit_code == 0, result.output
    assert "ΔNDCG@10 vs most-popular" in result.output
    assert sorted(p.name for p in (out / "toy").glob("*.json")) == [
        "ease.json",
        "most-popular.json",
    ]
    result = invoke(
        "report",
        out / "toy" / "ease.json",
        out / "toy" / "most-popular.json",
        "--out",
        tmp_path / "rep",
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "rep").iterdir()} == {
        "report.md",
        "toy.curves.png",
        "toy.comparison.png",
    }
    result = invoke("evaluate", "--models", "ease", "--out", out)
    assert isinstance(result.exception, ConfigError) and "missing: protocols" in str(
        result.exception
    )
    result = invoke("evaluate", "--model", tmp_path, "--models", "ease")
    assert isinstance(result.exception, ConfigError)


@pytest.mark.realdata
def test_ml100k_holdout_from_the_command_line(tmp_path: Path, real_data_dir: Path) -> None:
    out = tmp_path / "out"
    result = invoke(
        "evaluate", "--protocol", "ml100k-holdout", "--models", "most-popular,ease", "--out", out
    )
    assert result.exit_code == 0, result.output
    ease = json.loads((out / "ml100k-holdout" / "ease.json").read_text())
    popular = json.loads((out / "ml100k-holdout" / "most-popular.json").read_text())
    assert ease["evaluation"]["counts"]["users_evaluated"] == 943
    assert ease["metrics"]["ndcg@10"]["estimate"] >= 0.44  # the design's EASE reference: 0.441
    assert 0.19 < popular["metrics"]["ndcg@10"]["estimate"] < 0.24
    assert ease["comparisons"]["ndcg@10"]["t_pvalue"] < 1e-10
    assert len(list(out.glob("*.png"))) == 2

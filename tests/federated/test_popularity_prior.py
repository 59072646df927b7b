"""A local-DP popularity table as the cold-start ranking of a federated model, from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import privrank.cli.federated
import privrank.cli.privacy
import privrank.cli.telemetry  # noqa: F401  (register the commands)
from privrank.cli.app import app
from privrank.data.splits import HoldoutSplit, split
from privrank.errors import DataError
from privrank.models import Query
from privrank.privacy.local_dp.table import read_popularity_table
from privrank.testing import synthetic_interactions
from privrank.workflow.model_dir import load_trained

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)


@pytest.fixture
def split_dir(tmp_path: Path, privrank_home: Path) -> Path:
    data = synthetic_interactions(80, 30, per_user=8, seed=5)
    return split(data, HoldoutSplit(fraction=0.25, seed=2)).save(tmp_path / "toy-split")


def test_the_ldp_table_becomes_the_cold_start_ranking_and_composes(tmp_path, split_dir):
    name = json.loads((split_dir / "split.json").read_text())["source"]["name"]
    assert invoke("privacy", "budget", name, "--epsilon", "20", "--delta", "1e-2").exit_code == 0
    reports, table_path = tmp_path / "r.jsonl", tmp_path / "pop.json"
    result = invoke(
        "telemetry", "randomise", "--data", split_dir, "--epsilon", "4", "--m", "64", "--k",
        "16", "--out", reports, "--seed", "3", "--device-state", tmp_path / "devices.json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = invoke(
        "telemetry", "ingest", reports, "--items-from", split_dir, "--budget-key", name,
        "--out", table_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "fed"
    result = invoke(
        "federated", "train", "--data", split_dir, "--out", out, "--rounds", "1",
        "--clients-per-round", "30", "--param", "factors=4", "--epsilon", "4",
        "--max-per-user", "20", "--popularity-prior", table_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cold start: the local-DP popularity" in result.output
    trained = load_trained(out)
    table = read_popularity_table(table_path)
    model = trained.model
    order = {item: i for i, item in enumerate(table.item_ids)}
    expected = np.array([table.estimate[order[str(x)]] for x in model.item_ids_.to_pylist()])
    np.testing.assert_allclose(model.item_popularity_, expected, rtol=1e-6)
    codes, scores = model.recommend(Query.histories([[]]), k=5)
    np.testing.assert_allclose(scores[0], np.sort(expected)[::-1][:5], rtol=1e-6)
    np.testing.assert_allclose(expected[codes[0]], scores[0], rtol=1e-6)
    prior = trained.record["popularity_prior"]
    run_epsilon = trained.record["privacy"]["epsilon"]
    assert prior["epsilon_per_user_with_run"] == pytest.approx(run_epsilon + 4.0, rel=1e-3)
    assert prior["training_items_missing"] == 0


def test_a_bad_table_is_refused_before_any_round(tmp_path, split_dir):
    bad = tmp_path / "pop.json"
    bad.write_text(json.dumps({"format": "privrank-ldp-popularity", "version": 1}))
    out = tmp_path / "fed"
    result = invoke(
        "federated", "train", "--data", split_dir, "--out", out, "--rounds", "2",
        "--popularity-prior", bad,
    )  # fmt: skip
    assert isinstance(result.exception, DataError) and str(bad) in str(result.exception)
    assert not out.exists() and not (tmp_path / "fed.run").exists()

"""``--track mlflow``: evaluate, train and tune runs read back from a local MLflow store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

pytest.importorskip("mlflow", reason="the 'track' extra (mlflow-skinny) is not installed")
from mlflow.tracking import MlflowClient

import privrank.cli.main  # noqa: F401  (register every command)
from privrank.cli.app import app
from privrank.data.fingerprint import fingerprint
from privrank.data.interactions import Interactions
from privrank.data.splits import HoldoutSplit, LeaveLastOut, split
from privrank.errors import ConfigError
from privrank.models import Recommender
from privrank.privacy.ledger import Ledger
from privrank.testing import synthetic_interactions
from privrank.workflow.tracking import DEFAULT_TRACKING_URI, open_tracker

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (creating its tables is the slow part)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlruns.db'}"


@pytest.fixture
def tracked(
    store: str, tmp_path: Path, privrank_home: Path, monkeypatch: pytest.MonkeyPatch, request
) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", request.node.name)
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root, ./mlruns
    return MlflowClient(tracking_uri=store)


def runs_of(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return client.search_runs([found.experiment_id])


def download(client: MlflowClient, run_id: str, path: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(into)))


def test_evaluate_logs_metrics_with_cis_plots_data_guarantee_and_models(
    tracked: MlflowClient, tmp_path: Path, request
) -> None:
    data = synthetic_interactions(60, 40, per_user=8, seed=4)
    dataset = data.save(tmp_path / "toy")
    with Ledger() as book:
        book.set_budget(data.metadata.name, 10.0, 1e-2)
    config = {
        "protocols": [
            {
                "name": "toy-holdout",
                "dataset": str(dataset),
                "split": {"protocol": "holdout", "fraction": 0.25, "seed": 0},
            }
        ],
        "models": [
            {"name": "most-popular", "label": "pop"},
            {"name": "ease", "label": "ease", "params": {"regularization": 10}},
            {
                "name": "most-popular",
                "label": "dp-pop",
                "privacy": {"epsilon": 4.0, "max_interactions_per_user": 5},
            },
        ],
        "n_resamples": 50,
    }
    (tmp_path / "run.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["evaluate", "--config", str(tmp_path / "run.json"), "--out", str(out),
              "--track", "mlflow"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "tracked in MLflow" in result.output

    runs = runs_of(tracked, request.node.name)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.data.params["model.label"]: r for r in runs if r not in parents}
    assert len(parents) == 1 and set(children) == {"pop", "ease", "dp-pop"}
    parent = parents[0]
    assert all(r.info.status == "FINISHED" for r in runs)
    plots = {f.path for f in tracked.list_artifacts(parent.info.run_id, "plots")}
    assert plots == {"plots/toy-holdout.curves.png", "plots/toy-holdout.comparison.png"}

    for label, run in children.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        # The estimate is the mean of the per-user values written next to the results.
        per_user = pq.read_table(out / "toy-holdout" / f"{label}.per_user.parquet")
        ndcg = np.nanmean(per_user.column("ndcg@10").to_numpy())
        metrics = run.data.metrics
        assert metrics["ndcg_at_10"] == pytest.approx(ndcg, rel=1e-9)
        assert (
            metrics["ndcg_at_10.ci_low"] <= metrics["ndcg_at_10"] <= metrics["ndcg_at_10.ci_high"]
        )
        assert "recall_at_20.ci_high" in metrics
        assert run.data.params["split.fraction"] == "0.25"
        assert run.data.tags["privrank.data.fingerprint"] == fingerprint(Interactions.load(dataset))
    assert children["ease"].data.params["model.config.regularization"] == "10.0"
    assert "vs_baseline.ndcg_at_10.ci_low" in children["ease"].data.metrics
    assert children["pop"].data.tags["privrank.privacy.private"] == "false"

    private = children["dp-pop"].data.tags
    assert private["privrank.privacy.private"] == "true"
    assert float(private["privrank.privacy.epsilon"]) <= 4.0
    assert private["privrank.privacy.unit"] == "user"
    assert private["privrank.privacy.contribution_bound"] == "5"
    assert private["privrank.privacy.ledger_key"] == data.metadata.name
    assert "differential privacy" in private["privrank.privacy.statement"]
    assert private["privrank.model_artifact"].startswith("release artifact")
    released = Recommender.load(
        download(tracked, children["dp-pop"].info.run_id, "model", tmp_path / "a")
    )
    assert released.is_release_ and released.n_users_ == 0  # no training users in the store
    full = Recommender.load(
        download(tracked, children["ease"].info.run_id, "model", tmp_path / "b")
    )
    assert full.n_items_ == data.n_items and not full.is_release_


def test_train_logs_epoch_losses_and_validation_by_step(
    tracked: MlflowClient, tmp_path: Path, request
) -> None:
    data = synthetic_interactions(60, 40, per_user=8, seed=6)
    parts = split(data, LeaveLastOut())
    split_dir = parts.save(tmp_path / "loo")
    out = tmp_path / "bpr"
    result = runner.invoke(
        app,
        ["train", "--data", str(split_dir), "--model", "bpr", "--param", "epochs=3",
         "--param", "factors=8", "--out", str(out), "--track", "mlflow"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = runs_of(tracked, request.node.name)
    model = Recommender.load(out / "model")
    run_id = run.info.run_id
    losses = [m.value for m in sorted(tracked.get_metric_history(run_id, "loss"), key=_step)]
    np.testing.assert_allclose(losses, model.loss_history_, rtol=1e-12)
    ndcg = sorted(tracked.get_metric_history(run_id, "ndcg_at_10"), key=_step)
    np.testing.assert_allclose([m.value for m in ndcg], model.validation_history_[:, 1])
    assert [m.step for m in ndcg] == model.validation_history_[:, 0].astype(int).tolist()
    record = json.loads((out / "training.json").read_text())
    assert run.data.tags["privrank.data.train_fingerprint"] == record["data"]["train_fingerprint"]
    assert run.data.params["model.config.epochs"] == "3"
    assert run.data.tags["privrank.privacy.private"] == "false"
    names = {f.path for f in tracked.list_artifacts(run_id, "model")}
    assert {"model/training.json", "model/model"} <= names


def test_tune_logs_every_trial_and_the_best(tracked: MlflowClient, tmp_path: Path, request) -> None:
    data = synthetic_interactions(60, 40, per_user=8, seed=7)
    parts = split(data, HoldoutSplit(fraction=0.25, seed=1))
    split_dir = parts.save(tmp_path / "holdout")
    out = tmp_path / "tuning.json"
    result = runner.invoke(
        app,
        ["tune", "--model", "ease", "--data", str(split_dir), "--trials", "3", "--out", str(out),
         "--track", "mlflow"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = runs_of(tracked, request.node.name)
    record = json.loads(out.read_text())
    history = sorted(
        tracked.get_metric_history(run.info.run_id, "validation.ndcg_at_10"), key=_step
    )
    assert [(m.step, m.value) for m in history] == [
        (t["number"], t["value"]) for t in record["trials"]
    ]
    assert run.data.metrics["best.validation.ndcg_at_10"] == record["best"]["value"]
    tags = run.data.tags
    parts = record["data"]
    assert tags["privrank.data.train_fingerprint"] == parts["train"]["fingerprint"]
    assert tags["privrank.data.validation_fingerprint"] == parts["validation"]["fingerprint"]
    assert tags["privrank.data.fingerprint"] == fingerprint(data)
    assert float(run.data.params["best.config.regularization"]) == pytest.approx(
        record["model"]["config"]["regularization"]
    )


def _step(metric) -> int:
    return metric.step


def test_tracker_choice_and_missing_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_tracker(None) is None
    with pytest.raises(ConfigError, match="expected one of mlflow"):
        open_tracker("wandb")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from privrank.workflow.tracking import tracking_uri

    assert tracking_uri() == DEFAULT_TRACKING_URI == "sqlite:///mlruns.db"
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ConfigError, match=r"pip install 'privrank\[track\]'"):
        open_tracker("mlflow")

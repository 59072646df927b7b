"""The CTR protocol kind through the evaluation runner and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.ranking.test_ctr_rankers import synthetic
from typer.testing import CliRunner

import privrank.cli.evaluate
import privrank.cli.train  # noqa: F401  (register the commands)
from privrank.cli.app import app
from privrank.errors import ConfigError
from privrank.metrics.ctr import auc, log_loss
from privrank.ranking.ctr import load_ranker
from privrank.workflow.ctr_protocols import CTR_PROTOCOLS
from privrank.workflow.protocols import resolve_protocol
from privrank.workflow.report import write_report
from privrank.workflow.runner import RunConfig, run

runner = CliRunner()
FAST = {
    "logistic": {"lr": 0.05, "batch_size": 512, "epochs": 3},
    "deepfm": {"batch_size": 512, "epochs": 2, "hidden": [16], "embedding_dim": 4},
    "lightgbm": {"num_boost_round": 20, "num_leaves": 7},
}


def test_ctr_protocols_resolve_by_name() -> None:
    assert resolve_protocol("frappe") is CTR_PROTOCOLS["frappe"]
    spec = resolve_protocol(
        {
            "kind": "ctr",
            "name": "x",
            "dataset": "frappe",
            "split": {"pool": ["test"], "train": 0.5, "validation": 0.2},
        }
    )
    assert spec.split.pool == ("test",)


def test_runner_writes_one_ctr_result_per_model(tmp_path: Path) -> None:
    parts = {"validation": synthetic(3000, 0)[0], "test": synthetic(1500, 1)[0]}
    config = RunConfig(
        protocols=["frappe"],
        models=[{"name": name, "params": params} for name, params in FAST.items()],
        n_resamples=100,
        threads=1,
    )
    summary = run(config, tmp_path / "out", data={"frappe": parts})
    assert [p.name for p in summary.files] == ["logistic.json", "deepfm.json", "lightgbm.json"]
    record = json.loads(summary.files[1].read_text())
    assert record["kind"] == "ctr" and record["split"]["counts"]["test"]["rows"] == 900
    metrics = record["metrics"]
    for name in ("auc", "log_loss", "normalized_entropy", "ece"):
        assert metrics[name]["low"] <= metrics[name]["estimate"] <= metrics[name]["high"]
    # the estimates are those of the written predictions (the oracle: recomputed here)
    import pyarrow.parquet as pq

    table = pq.read_table(summary.files[1].with_name("deepfm.predictions.parquet"))
    y, p = table.column("label").to_numpy(), table.column("probability").to_numpy()
    assert metrics["auc"]["estimate"] == pytest.approx(auc(y, p), abs=1e-12)
    assert metrics["log_loss"]["estimate"] == pytest.approx(log_loss(y, p), abs=1e-12)
    assert set(record["comparisons"]) == {"auc", "log_loss"}
    assert record["comparisons"]["auc"]["mean_b"] == pytest.approx(
        json.loads(summary.files[0].read_text())["metrics"]["auc"]["estimate"]
    )
    report = write_report(summary.records, tmp_path / "out")
    assert [i.name for i in report.images] == ["frappe.reliability.png"]
    assert "| deepfm |" in report.markdown.read_text()


def test_a_recommender_on_a_ctr_protocol_is_refused() -> None:
    config = RunConfig(protocols=["frappe"], models=["ease"])
    parts = {"validation": synthetic(300, 0)[0], "test": synthetic(300, 1)[0]}
    with pytest.raises(ConfigError, match="not a CTR ranker"):
        run(config, None, data={"frappe": parts})
    with pytest.raises(ConfigError, match="deepfm"):
        RunConfig(
            protocols=["frappe"], models=[{"name": "deepfm", "params": {"lr": -1}}]
        ).check_models()


@pytest.mark.realdata
def test_cli_evaluate_and_train_on_frappe(
    real_data_dir: Path, tmp_path: Path, privrank_home: Path
) -> None:
    config = tmp_path / "run.json"
    config.write_text(
        json.dumps(
            {
                "protocols": ["frappe"],
                "models": [{"name": n, "params": p} for n, p in FAST.items() if n != "deepfm"],
                "n_resamples": 50,
                "threads": 1,
            }
        )
    )
    out = tmp_path / "cmp"
    args = ["evaluate", "--protocol", "frappe", "--config", str(config), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "frappe" / "lightgbm.json").read_text())
    assert record["split"]["counts"]["test"]["rows"] == 17_317
    assert 0.8 < record["metrics"]["auc"]["estimate"] < 1  # 20 trees of 7 leaves
    assert (out / "frappe.reliability.png").stat().st_size > 0
    model_out = tmp_path / "fm"
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            "frappe",
            "--model",
            "fm",
            "--param",
            "epochs=1",
            "--out",
            str(model_out),
        ],
    )
    assert result.exit_code == 0, result.output
    ranker = load_ranker(model_out / "ranker")
    training = json.loads((model_out / "training.json").read_text())
    assert ranker.name == "fm" and len(ranker.members_) == 5  # the default rule
    assert [h["member"] for h in training["history"]] == [0, 1, 2, 3, 4]  # one epoch each
    result = runner.invoke(
        app,
        ["train", "--data", "ml100k-holdout", "--model", "deepfm", "--out", str(tmp_path / "x")],
    )
    assert isinstance(result.exception, ConfigError) and "CTR protocol" in str(result.exception)
    assert not np.any([p.name == "x" for p in tmp_path.iterdir()])


def test_cli_validate_ctr_exits_2_naming_the_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    good = "1 42:1 1572:1 5042:1 5047:1 5053:1 5055:1 5058:1 5060:1 5070:1 5150:1"
    path = tmp_path / "f.libfm"
    path.write_text(f"{good}\n{good.replace('5150:1', '9999:1')}\n")
    command = [
        sys.executable,
        "-m",
        "privrank.cli.main",
        "data",
        "validate-ctr",
        str(path),
        "--format",
        "frappe",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "line 2, column 11 (city)" in done.stderr and "9999:1" in done.stderr
    rejects = tmp_path / "r.tsv"
    done = subprocess.run(
        [*command, "--on-error", "quarantine", "--rejects", str(rejects)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # Rich wraps piped output at 80 columns, so a long temporary path can split the sentence
    assert "1 valid frappe rows" in " ".join(done.stdout.split())
    assert rejects.read_text().count("\n") == 2

"""``privrank train --engine ray``: the same model directory as the in-process fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import privrank.cli.train  # noqa: F401  (register the command)
from privrank.cli.app import app
from privrank.data.splits import HoldoutSplit, split
from privrank.errors import ConfigError
from privrank.models import Recommender
from privrank.testing import synthetic_interactions

pytestmark = pytest.mark.ray
runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)


@pytest.mark.slow  # two CLI fits and a Ray start: out of make test's time
def test_train_engine_ray_saves_the_in_process_model(tmp_path: Path, privrank_home, ray_local):
    import json

    data = synthetic_interactions(80, 40, per_user=9, seed=5)
    split_dir = split(data, HoldoutSplit(fraction=0.25, seed=2)).save(tmp_path / "split")
    common = ("--data", split_dir, "--model", "ease", "--param", "regularization=20")
    local = invoke("train", *common, "--out", tmp_path / "local")
    on_ray = invoke(
        "train", *common, "--engine", "ray", "--workers", 2, "--max-failures", 1,
        "--out", tmp_path / "ray",
    )  # fmt: skip
    assert local.exit_code == 0 and on_ray.exit_code == 0, on_ray.output
    record = json.loads((tmp_path / "ray" / "training.json").read_text())
    assert record["engine"] == {
        "engine": "ray",
        "workers": 2,
        "partitions": 4,
        "address": None,
        "max_failures": 1,
    }
    a = Recommender.load(tmp_path / "local" / "model")
    b = Recommender.load(tmp_path / "ray" / "model")
    np.testing.assert_array_equal(a.weights_, b.weights_)


def test_engine_options_are_checked(tmp_path: Path, privrank_home) -> None:
    result = invoke(
        "train", "--data", "x", "--model", "ease", "--engine", "spark", "--out", tmp_path
    )
    # ConfigError: the entry point's exit code 2 (tests/cli/test_messages.py)
    assert isinstance(result.exception, ConfigError)
    assert "--engine must be local or ray" in str(result.exception)
    result = invoke("train", "--data", "x", "--model", "bpr", "--engine", "ray", "--out", tmp_path)
    assert isinstance(result.exception, ConfigError)
    assert "no distributed fit" in str(result.exception)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--engine", "ray", "--max-failures", -1), "--max-failures must be an integer >= 0"),
        (("--max-failures", 1), "--max-failures: recoveries from lost Ray workers; it needs"),
    ],
)
def test_max_failures_is_checked(tmp_path: Path, privrank_home, flags, message) -> None:
    # Checked before any data is read ("x" is not a dataset) or Ray is started.
    result = invoke("train", "--data", "x", "--model", "sasrec", *flags, "--out", tmp_path)
    assert isinstance(result.exception, ConfigError)  # the entry point's exit code 2
    assert message in str(result.exception)
    assert not (tmp_path / "model").exists()


def test_max_failures_reaches_the_engine() -> None:
    from privrank.cli._options import make_engine
    from privrank.distributed import RayEngine

    default = make_engine("ray", 2, None)
    assert isinstance(default, RayEngine) and default.config.max_failures == 2
    for given in (0, 5):
        engine = make_engine("ray", 3, None, given)
        assert isinstance(engine, RayEngine)
        assert engine.config.max_failures == given
        assert engine.describe()["max_failures"] == given
    assert make_engine("local", 2, None) is None


def test_max_failures_exits_2_from_the_entry_point(tmp_path: Path, privrank_home) -> None:
    import subprocess
    import sys

    code = "from privrank.cli.main import app\napp()"
    completed = subprocess.run(
        [sys.executable, "-c", code, "train", "--data", "x", "--model", "sasrec",
         "--engine", "ray", "--max-failures", "-2", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    message = " ".join(completed.stderr.split())  # rich may wrap the line
    assert completed.returncode == 2, completed.stderr
    assert "--max-failures must be an integer >= 0" in message and "Got -2" in message


@pytest.mark.slow  # a fit and two CLI evaluations over Ray: out of make test's time
def test_evaluate_engine_ray_gives_the_local_metrics(tmp_path: Path, privrank_home, ray_local):
    import json

    import pyarrow.parquet as pq

    import privrank.cli.evaluate  # noqa: F401  (register the command)

    data = synthetic_interactions(80, 40, per_user=9, seed=6)
    split_dir = split(data, HoldoutSplit(fraction=0.25, seed=2)).save(tmp_path / "split")
    trained = invoke("train", "--data", split_dir, "--model", "ease", "--out", tmp_path / "m")
    assert trained.exit_code == 0, trained.output
    local = invoke("evaluate", "--model", tmp_path / "m", "--out", tmp_path / "a", "--no-plots")
    on_ray = invoke(
        "evaluate", "--model", tmp_path / "m", "--engine", "ray", "--out", tmp_path / "b",
        "--no-plots",
    )  # fmt: skip
    assert local.exit_code == 0 and on_ray.exit_code == 0, on_ray.output

    def means(out: Path) -> dict:
        (name,) = json.loads((out / "summary.json").read_text())["results"]
        record = json.loads((out / name).read_text())
        return {"metrics": record["metrics"], "aggregate": record["aggregate"]}

    assert means(tmp_path / "b") == means(tmp_path / "a")
    topk = pq.read_table(tmp_path / "b" / "topk")
    assert topk.column_names == ["user_id", "rank", "item_id"] and topk.num_rows > 0

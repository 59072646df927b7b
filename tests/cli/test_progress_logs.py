"""Progress and logs: bytes of an import, epochs of every iterative fit, users of an evaluation;
``--quiet`` and ``--log-format json``; and no user id or history in any log line."""

from __future__ import annotations

import json
import logging
import logging.config
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import privrank.cli.main  # noqa: F401  (register every command)
from privrank.cli._console import LogFormat, configure
from privrank.cli.app import app

runner = CliRunner()
MARK = "zqx"  # in every id, and in no word privrank prints


@pytest.fixture
def cli(privrank_home: Path, monkeypatch: pytest.MonkeyPatch):
    """Run the CLI; afterwards, the output mode and logging are as before."""
    level = logging.getLogger().level
    monkeypatch.setenv("MLFLOW_CONFIGURE_LOGGING", "true")

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    yield invoke
    configure()
    logging.getLogger().setLevel(level)


@pytest.fixture
def id_file(tmp_path: Path) -> tuple[Path, list[str]]:
    """A CSV whose user and item ids are distinctive strings (each holds ``MARK``)."""
    rng = np.random.default_rng(0)
    users = [f"user-{MARK}-{u:03d}" for u in range(40)]
    items = [f"item-{MARK}-{i:03d}" for i in range(30)]
    lines = ["user,item,timestamp"]
    stamp = 1_000_000
    for user in users:
        for item in rng.choice(items, size=8, replace=False):
            stamp += 1
            lines.append(f"{user},{item},{stamp}")
    path = tmp_path / "ids.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, users + items


def json_lines(text: str) -> list[dict]:
    """Every non-empty line, each of which must be one JSON object."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_no_user_id_in_any_line_and_progress_everywhere(cli, id_file, tmp_path: Path) -> None:
    path, ids = id_file
    runs = {}
    runs["import"] = cli("--log-format", "json", "data", "import", path, "--format", "csv",
                         "--name", "ids", "--user-col", "user", "--item-col", "item",
                         "--time-col", "timestamp")  # fmt: skip
    runs["split"] = cli("data", "split", "ids", "--protocol", "leave-last-out",
                        "--out", tmp_path / "split")  # fmt: skip
    for model, params in [("bpr", ["epochs=2", "factors=8"]), ("ials", ["epochs=2", "factors=8"])]:
        flags = [f for p in params for f in ("--param", p)]
        runs[model] = cli("--log-format", "json", "train", "--data", tmp_path / "split",
                          "--model", model, *flags, "--out", tmp_path / model)  # fmt: skip
    runs["evaluate"] = cli("--log-format", "json", "evaluate", "--model", tmp_path / "bpr",
                           "--out", tmp_path / "eval", "--no-plots")  # fmt: skip
    runs["text"] = cli("train", "--data", tmp_path / "split", "--model", "mult-vae",
                       "--param", "epochs=2", "--out", tmp_path / "vae")  # fmt: skip
    for name, result in runs.items():
        assert result.exit_code == 0, (name, result.output)
        leaked = [i for i in ids if i in result.stdout or i in result.stderr]
        assert not leaked, (name, leaked[:3])
        assert MARK not in result.stdout + result.stderr, name

    imported = [e for e in json_lines(runs["import"].stderr) if e["event"] == "import"]
    assert imported[-1]["unit"] == "bytes"
    assert imported[-1]["done"] == imported[-1]["total"] == path.stat().st_size
    for model in ("bpr", "ials"):
        epochs = [e for e in json_lines(runs[model].stderr) if e["event"] == "epoch"]
        assert [e["done"] for e in epochs] == [1, 2] and all(e["total"] == 2 for e in epochs)
        assert all(np.isfinite(e["loss"]) and 0 <= e["ndcg@10"] <= 1 for e in epochs), model
    # The training record's fit summary agrees with the epochs the fit reported as it ran.
    epochs = [e for e in json_lines(runs["bpr"].stderr) if e["event"] == "epoch"]
    best = max(epochs, key=lambda e: e["ndcg@10"])  # the first best epoch is kept
    summary = json.loads((tmp_path / "bpr" / "training.json").read_text())["fit"]["summary"]
    assert summary["epochs_run"] == 2 and summary["best_epoch"] == best["done"]
    assert summary["best_validation"]["ndcg@10"] == pytest.approx(best["ndcg@10"], rel=1e-6)
    assert json.loads((tmp_path / "ials" / "training.json").read_text())["fit"]["summary"] == {}
    scored = [e for e in json_lines(runs["evaluate"].stderr) if e["event"] == "evaluation"]
    assert scored and scored[-1]["done"] == scored[-1]["total"] > 0
    bar = runs["text"].stderr  # the Rich bar, on standard error: loss and validation metric
    assert "fitting mult-vae" in bar and "2/2" in bar and "loss" in bar and "ndcg@10" in bar


def test_quiet_prints_results_only(cli, id_file, tmp_path: Path) -> None:
    path, _ = id_file
    result = cli("--quiet", "data", "import", path, "--format", "csv", "--name", "ids",
                 "--user-col", "user", "--item-col", "item", "--time-col", "timestamp")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "imported ids" in result.stdout
    result = cli("--quiet", "train", "--data", "ids", "--model", "bpr", "--param", "epochs=1",
                 "--out", tmp_path / "bpr")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and "trained bpr" in result.stdout


def test_json_mode_errors_and_library_logs_are_json(privrank_home: Path) -> None:
    code = "import sys\nfrom privrank.cli.main import app\napp()"
    result = subprocess.run(
        [sys.executable, "-c", code, "--log-format", "json", "train", "--data", "nowhere",
         "--model", "ease", "--param", "regularization=[bad]", "--out", "x"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    (line,) = json_lines(result.stderr)
    assert line["level"] == "error" and line["event"] == "error"
    assert "[bad]" in line["message"]  # verbatim, in JSON too
    configure(log_format=LogFormat.json)
    try:
        (handler,) = [
            h for h in logging.getLogger().handlers if "Json" in type(h.formatter).__name__
        ]
        record = logging.LogRecord("lib", logging.WARNING, __file__, 1, "a [b] warning", None, None)
        line = json.loads(handler.format(record))
        assert line["message"] == "a [b] warning" and line["level"] == "warning"
        # privrank serve's workers log through the same formatter (uvicorn's dictConfig)
        from privrank.cli.serve import _log_config

        formatters = _log_config("info")["formatters"]
        factory = logging.config.BaseConfigurator({}).resolve(formatters["default"]["()"])
        assert factory is type(handler.formatter)
    finally:
        configure()


def test_federated_rounds_are_progress_lines(cli, id_file, tmp_path: Path) -> None:
    """``federated train`` reports rounds like any fit: JSON lines with the clients, the loss
    and the ε spent; nothing on standard error under ``--quiet``."""
    path, ids = id_file
    cli("data", "import", path, "--format", "csv", "--name", "ids", "--user-col", "user",
        "--item-col", "item", "--time-col", "timestamp")  # fmt: skip
    cli("data", "split", "ids", "--protocol", "leave-last-out", "--out", tmp_path / "split")
    cli("privacy", "budget", "ids", "--epsilon", "10", "--delta", "0.01")
    common = ("federated", "train", "--data", tmp_path / "split", "--rounds", "3",
              "--clients-per-round", "20", "--param", "factors=4")  # fmt: skip
    result = cli("--log-format", "json", *common, "--out", tmp_path / "fed",
                 "--epsilon", "4", "--max-per-user", "8")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not [i for i in ids if i in result.stdout or i in result.stderr]
    rounds = [e for e in json_lines(result.stderr) if e["event"] == "round"]
    assert [e["done"] for e in rounds] == [1, 2, 3] and all(e["total"] == 3 for e in rounds)
    assert all(np.isfinite(e["loss"]) and "/" in e["clients"] for e in rounds)
    spent = [e["epsilon"] for e in rounds]
    assert spent == sorted(spent) and 0 < spent[-1] <= 4
    result = cli("--quiet", *common, "--out", tmp_path / "quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and "trained fedmf" in result.stdout


SYNTH = ("data", "synth", "--users", "200", "--items", "150", "--interactions", "4000")
SYNTH_ADS = ("data", "synth-ads", "--impressions", "20000", "--users", "500", "--ads", "50")


@pytest.mark.parametrize(
    "args", [SYNTH, (*SYNTH, "--format", "csv"), SYNTH_ADS], ids=["dataset", "csv", "ads"]
)
def test_synthetic_data_progress_is_shared(cli, tmp_path: Path, args: tuple[str, ...]) -> None:
    """The generators report rows through the shared display: JSON lines that end at the total
    (throttled, so never one per block), and nothing on standard error under ``--quiet``."""
    result = cli("--log-format", "json", *args, "--out", tmp_path / "json")
    assert result.exit_code == 0, result.output
    rows = [e for e in json_lines(result.stderr) if e["event"] == "synth"]
    assert rows and rows[-1]["unit"] == "rows" and rows[-1]["done"] == rows[-1]["total"] > 0
    result = cli("--quiet", *args, "--out", tmp_path / "quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and "wrote" in result.stdout

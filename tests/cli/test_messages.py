"""Errors a person can act on: printed verbatim, and a run config refused whole before a fit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import privrank.cli.main  # noqa: F401  (register every command)
from privrank.cli._console import make_console
from privrank.cli.app import app
from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.models import Recommender
from privrank.privacy.ledger import Ledger
from privrank.testing import synthetic_interactions


def run_cli(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """The real console entry point, after ``prelude`` (e.g. hiding an optional package)."""
    code = f"import sys\n{prelude}\nfrom privrank.cli.main import app\napp()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )


def one_line(text: str) -> str:
    """Rich may wrap a long message; the words are what a person reads."""
    return " ".join(text.split())


def test_serve_without_the_extra_names_it(tmp_path: Path, privrank_home: Path) -> None:
    result = run_cli("serve", "--model", str(tmp_path), prelude="sys.modules['fastapi'] = None")
    assert result.returncode == 2, result.stderr
    assert "pip install 'privrank[serve]'" in one_line(result.stderr)


def test_peers_without_the_extra_names_it(tmp_path: Path, privrank_home: Path) -> None:
    dataset = synthetic_interactions(20, 15, per_user=5, seed=1).save(tmp_path / "toy")
    result = run_cli(
        "train", "--data", str(dataset), "--model", "implicit-als", "--out", str(tmp_path / "m"),
        prelude="sys.modules['implicit'] = None",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "pip install 'privrank[peers]'" in one_line(result.stderr)


def test_bracketed_file_values_are_printed_verbatim(tmp_path: Path, privrank_home: Path) -> None:
    source = tmp_path / "ratings.csv"
    source.write_text(
        "userId,movieId,rating,timestamp\n1,10,4,881250949\n[peers],[bold]x[/],4,881250950\n"
    )
    result = run_cli("data", "validate", str(source), "--format", "ml-csv")
    assert result.returncode == 2, result.stderr
    message = one_line(result.stderr)
    assert "got '[peers]'" in message, message  # the bad user id, as it is in the file
    assert message.startswith("error:")


def test_console_prints_markup_like_text_verbatim() -> None:
    console = make_console(width=200, record=True)
    console.print("id [u42] label [bold]x[/] :smile: pip install 'privrank[serve]'")
    text = console.export_text()
    assert text.strip() == "id [u42] label [bold]x[/] :smile: pip install 'privrank[serve]'"


def _config(tmp_path: Path, models: list[dict]) -> Path:
    dataset = synthetic_interactions(40, 30, per_user=8, seed=3).save(tmp_path / "toy")
    config = {
        "protocols": [
            {
                "name": "toy-holdout",
                "dataset": str(dataset),
                "split": {"protocol": "holdout", "fraction": 0.25, "seed": 0},
            }
        ],
        "models": models,
        "n_resamples": 20,
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the models fitted during the test."""
    fitted: list[str] = []
    real_fit = Recommender.fit

    def counting_fit(self, train, options=None):
        fitted.append(self.name)
        return real_fit(self, train, options)

    monkeypatch.setattr(Recommender, "fit", counting_fit)
    return fitted


def test_run_config_refuses_a_private_model_without_a_bound_before_any_fit(
    tmp_path: Path, privrank_home: Path, fits: list[str]
) -> None:
    config = _config(
        tmp_path,
        [
            {"name": "most-popular", "label": "pop [baseline]"},
            {"name": "ease", "label": "dp-ease", "privacy": {"epsilon": 4.0}},
        ],
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["evaluate", "--config", str(config), "--out", str(out)])
    assert isinstance(result.exception, ConfigError), result.output
    message = str(result.exception)
    assert "dp-ease" in message and "max_interactions_per_user" in message
    assert fits == []  # refused before the non-private model was fitted
    assert not out.exists()


def test_run_config_with_a_bound_fits_and_labels_print_verbatim(
    tmp_path: Path, privrank_home: Path, fits: list[str]
) -> None:
    config = _config(
        tmp_path,
        [
            {"name": "most-popular", "label": "pop [baseline]"},
            {
                "name": "most-popular",
                "label": "dp-pop",
                "privacy": {"epsilon": 4.0, "max_interactions_per_user": 5, "noise_seed": 0},
            },
        ],
    )
    with Ledger() as book:  # the default ledger, under the test's PRIVRANK_HOME
        book.set_budget(Interactions.load(tmp_path / "toy").metadata.name, 10.0, 1e-2)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["evaluate", "--config", str(config), "--out", str(out), "--no-plots"]
    )
    assert result.exit_code == 0, result.output
    assert fits == ["most-popular", "most-popular"]
    assert "pop [baseline]" in result.output  # the table cell keeps its brackets


def test_train_refuses_epsilon_without_a_bound_before_loading_data(
    tmp_path: Path, privrank_home: Path
) -> None:
    result = CliRunner().invoke(
        app,
        ["train", "--data", "no-such-dataset", "--model", "ease", "--epsilon", "1",
         "--out", str(tmp_path / "m")],
    )  # fmt: skip
    assert isinstance(result.exception, ConfigError), result.output
    assert "max_interactions_per_user" in str(result.exception)
    assert not (tmp_path / "m").exists()

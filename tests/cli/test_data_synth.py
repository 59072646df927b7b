"""``privrank data synth`` through typer's CliRunner."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow.csv as pacsv
import pytest
from typer.testing import CliRunner

import privrank.cli.data_synth  # noqa: F401  (registers the command)
from privrank.cli import main
from privrank.cli.app import app
from privrank.data.interactions import Interactions
from privrank.data.synthetic import RATINGS_CSV_HEADER, SyntheticConfig, generate
from privrank.errors import ConfigError

SMALL = ["--users", "200", "--items", "150", "--interactions", "4000", "--clusters", "4"]


def _run(*args: str):
    return CliRunner().invoke(app, ["data", "synth", *args])


def test_writes_a_dataset_and_prints_its_statistics(tmp_path) -> None:
    out = tmp_path / "synth"
    result = _run(*SMALL, "--seed", "3", "--out", str(out))
    assert result.exit_code == 0, result.output
    data = Interactions.load(out)
    assert len(data) == 4_000
    assert (data.n_users, data.n_items) == (200, 150)
    expected = generate(
        SyntheticConfig(n_users=200, n_items=150, n_interactions=4_000, n_clusters=4, seed=3)
    )
    assert data.table.equals(expected.table)
    assert "4,000" in result.output
    assert "Gini of item popularity" in result.output
    assert "rows per user" in result.output
    assert f"wrote {out}" in result.output


def test_writes_a_ratings_csv(tmp_path) -> None:
    out = tmp_path / "ratings.csv"
    result = _run(*SMALL, "--format", "csv", "--start", "2001-01-01", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[0] == RATINGS_CSV_HEADER
    table = pacsv.read_csv(out)
    assert table.num_rows == 4_000
    assert table["userId"].to_numpy().min() == 1
    assert table["timestamp"].to_numpy().min() >= 978_307_200  # 2001-01-01 UTC


def test_options_reach_the_generator(tmp_path) -> None:
    out = tmp_path / "ds"
    result = _run(
        *SMALL,
        "--allow-repeats",
        "--max-per-user",
        "60",
        "--session-length",
        "2",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    params = Interactions.load(out).metadata.curation[0].params
    config = SyntheticConfig.model_validate(params)
    assert config.unique_pairs is False
    assert config.max_user_interactions == 60
    assert config.mean_session_length == 2.0
    assert Interactions.load(out).user_counts().max() <= 60


def test_refuses_to_overwrite_unless_asked(tmp_path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = _run(*SMALL, "--out", str(out))
    assert isinstance(result.exception, ConfigError)
    assert "--overwrite" in str(result.exception)
    assert (out / "keep.txt").read_text() == "mine"
    result = _run(*SMALL, "--out", str(out), "--overwrite")
    assert result.exit_code == 0, result.output
    assert len(Interactions.load(out)) == 4_000


def test_invalid_options_name_the_option(tmp_path) -> None:
    result = _run("--users", "0", "--out", str(tmp_path / "x"))
    assert isinstance(result.exception, ConfigError)
    assert "--users" in str(result.exception)
    assert "--users (SyntheticConfig.n_users): got 0; expected an int >= 1" in str(result.exception)
    assert not (tmp_path / "x").exists()


def test_console_script_exits_2_on_bad_configuration(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x"
    argv = ["privrank", "data", "synth", "--clusters", "5000", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main.app()
    assert exit_info.value.code == 2
    assert "n_clusters must be <= n_items" in capsys.readouterr().err
    assert not out.exists()


def test_same_seed_same_files(tmp_path) -> None:
    for name in ("a.csv", "b.csv"):
        result = _run(*SMALL, "--seed", "9", "--format", "csv", "--out", str(tmp_path / name))
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert np.unique(pacsv.read_csv(tmp_path / "a.csv")["rating"].to_numpy()).size == 5

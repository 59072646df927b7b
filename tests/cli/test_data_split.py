"""``privrank data split`` on a small saved dataset."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import privrank.cli.data_split  # noqa: F401  (registers the command)
from privrank.cli.app import app
from privrank.data import DatasetMetadata, Interactions
from privrank.data.splits import (
    HoldoutSplit,
    LeaveLastOut,
    Split,
    StrongGeneralization,
    TemporalSplit,
    split,
)
from privrank.errors import ArtifactError, ConfigError

runner = CliRunner()


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Interactions]:
    rng = np.random.default_rng(5)
    n = 600
    data = Interactions.from_columns(
        users=rng.integers(0, 40, n),
        items=[f"i{i}" for i in rng.integers(0, 90, n)],
        timestamps=rng.integers(0, 5000, n),
        values=rng.integers(1, 6, n).astype(float),
        metadata=DatasetMetadata(name="toy"),
    )
    return data.save(tmp_path / "toy"), data


def invoke(*args: str):
    return runner.invoke(app, ["data", "split", *args], catch_exceptions=True)


@pytest.mark.parametrize(
    ("args", "spec"),
    [
        (["--fraction", "0.3", "--seed", "4"], HoldoutSplit(fraction=0.3, seed=4)),
        (["--protocol", "leave-last-out", "--k", "2"], LeaveLastOut(k=2)),
        (
            ["--protocol", "leave-last-out", "--no-validation", "--unseen", "drop"],
            LeaveLastOut(validation=False, unseen="drop"),
        ),
        (["--protocol", "temporal", "--fraction", "0.25"], TemporalSplit(quantile=0.75)),
        (["--protocol", "temporal", "--cut", "4000"], TemporalSplit(cut=4000)),
        (
            ["--protocol", "strong", "--fraction", "0.2", "--fold-in-fraction", "0.6"],
            StrongGeneralization(test_fraction=0.2, fold_in_fraction=0.6),
        ),
    ],
)
def test_split_command_writes_the_same_split_as_the_library(
    dataset: tuple[Path, Interactions], tmp_path: Path, args: list[str], spec
) -> None:
    directory, data = dataset
    out = tmp_path / "out"
    result = invoke(str(directory), *args, "--out", str(out))
    assert result.exit_code == 0, result.output
    loaded = Split.load(out)
    expected = split(data, spec)
    assert loaded.spec == spec
    assert loaded.counts == expected.counts
    for name, part in expected.parts().items():
        assert loaded.parts()[name].table.equals(part.table)
    # The summary table names every part with its row count.
    for name, counts in expected.counts.items():
        line = next(line for line in result.output.splitlines() if line.startswith(f"│ {name} "))
        assert f"{counts.rows:,}" in line
    assert f"split written to {out}" in result.output.replace("\n", "")


def test_default_output_lives_with_the_dataset(dataset: tuple[Path, Interactions]) -> None:
    directory, data = dataset
    result = invoke(str(directory), "--protocol", "leave-last-out")
    assert result.exit_code == 0, result.output
    loaded = Split.load(directory / "splits" / "leave-last-out")
    loaded.check_source(data)
    # The dataset itself still loads next to its splits.
    assert len(Interactions.load(directory)) == len(data)


def test_options_of_other_protocols_are_refused(dataset: tuple[Path, Interactions]) -> None:
    directory, _ = dataset
    result = invoke(str(directory), "--protocol", "leave-last-out", "--seed", "3")
    assert isinstance(result.exception, ConfigError)
    assert "--seed: not an option of the leave-last-out protocol" in str(result.exception)
    result = invoke(str(directory), "--protocol", "temporal", "--cut", "5", "--fraction", "0.2")
    assert isinstance(result.exception, ConfigError)
    result = invoke(str(directory), "--fraction", "1.5")
    assert isinstance(result.exception, ConfigError)
    assert "HoldoutSplit.fraction: got 1.5" in str(result.exception)
    assert not (directory / "splits").exists()


def test_repeated_pairs_across_parts_are_reported(tmp_path: Path) -> None:
    # user 0 has item 0 twice: leave-last-out puts one copy in test, one in train.
    data = Interactions.from_codes(np.array([0, 0, 0]), np.array([0, 1, 0]))
    directory = data.save(tmp_path / "dups")
    result = invoke(str(directory), "--protocol", "leave-last-out", "--no-validation")
    assert result.exit_code == 0, result.output
    assert "note: 1 test rows repeat a (user, item) pair" in result.output.replace("\n", " ")
    assert Split.load(directory / "splits" / "leave-last-out").counts["test"].pairs_in_train == 1


def test_missing_dataset_is_an_artifact_error(tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "nowhere"))
    assert isinstance(result.exception, ArtifactError)


def test_console_script_maps_errors_to_exit_code_2(
    dataset: tuple[Path, Interactions], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from privrank.cli import main

    directory, _ = dataset
    argv = ["privrank", "data", "split", str(directory), "--protocol", "strong", "--k", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main.app()
    assert exit_info.value.code == 2
    assert "--k: not an option of the strong protocol" in capsys.readouterr().err

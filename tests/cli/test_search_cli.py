"""`privrank search build | query`: end to end on small data, and refusals (exit code 2)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

import privrank.cli.search  # noqa: F401  (register the commands)
from privrank.cli.app import app
from privrank.data.interactions import DatasetMetadata
from privrank.errors import ConfigError, PrivrankError
from privrank.testing import synthetic_interactions, write_group_item_text

runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """One search model built by the CLI for the module (an isolated home and cache)."""
    tmp_path = tmp_path_factory.mktemp("search-cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIVRANK_HOME", str(tmp_path / "home"))
        patch.setenv("PRIVRANK_CACHE_DIR", str(tmp_path / "cache"))
        yield _build(tmp_path)


def _build(tmp_path: Path) -> tuple[Path, Path]:
    data = synthetic_interactions(n_users=120, n_items=60, per_user=12, seed=0)
    dataset = data.with_metadata(DatasetMetadata(name="tiny")).save(tmp_path / "tiny")
    text = write_group_item_text(tmp_path / "items.tsv", n_items=60)
    out = tmp_path / "search"
    args = ["search", "build", "--dataset", str(dataset), "--item-text", str(text)]
    args += ["--out", str(out), "--candidates", "30", "--rounds", "20"]
    done = runner.invoke(app, args, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return out, dataset


def test_build_then_query(built):
    out, _ = built
    done = runner.invoke(
        app,
        [
            "search",
            "query",
            "--model-dir",
            str(out),
            "--query",
            "comedy",
            "--user",
            "u003",
            "--k",
            "3",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert done.exit_code == 0, done.output
    answer = json.loads(done.output.strip().splitlines()[-1])
    assert answer["personalised"] is True and len(answer["results"]) == 3
    assert set(answer["timings_s"]) == {"embed", "retrieve", "features", "rank"}
    data = synthetic_interactions(n_users=120, n_items=60, per_user=12, seed=0)
    seen = set(data.table.filter(pc.equal(data.table["user"], 3))["item"].to_pylist())
    codes = {data.item_ids.to_pylist().index(r["item"]) for r in answer["results"]}
    assert not codes & seen


def test_query_refusals_are_privrank_errors(built):
    out, _ = built
    base = ["search", "query", "--model-dir", str(out), "--query", "comedy"]
    with pytest.raises(ConfigError, match="--user nobody: not a user"):
        runner.invoke(app, [*base, "--user", "nobody"], catch_exceptions=False)
    with pytest.raises(ConfigError, match="not both"):
        runner.invoke(app, [*base, "--user", "u003", "--history", "i01"], catch_exceptions=False)
    with pytest.raises(PrivrankError, match="not a search model"):
        runner.invoke(
            app,
            ["search", "query", "--model-dir", str(out.parent), "--query", "x"],
            catch_exceptions=False,
        )

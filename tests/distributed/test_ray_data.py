"""Data on Ray Data: the same dataset, fingerprint, curation record and split as one process.

The oracle is the single-process path (``read_interactions`` → ``curate`` → ``split``) run on
the same input in the same test; the Ray path must agree row for row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from privrank.data.curation import CurationConfig, curate
from privrank.data.fingerprint import fingerprint
from privrank.data.interactions import Interactions
from privrank.data.readers import ReadOptions, read_interactions
from privrank.data.splits import Split, split
from privrank.data.synthetic import SyntheticConfig, generate
from privrank.errors import ConfigError, DataError

pytestmark = pytest.mark.ray

ray = pytest.importorskip("ray")

from privrank.distributed.ray_data import (  # noqa: E402
    RayDataOptions,
    import_on_ray,
    split_on_ray,
)


@pytest.fixture(scope="module", autouse=True)
def ray_instance(ray_local):
    """The session's local Ray instance (conftest.ray_local); the engine reuses a running one."""
    return ray_local


def _assert_same_dataset(local: Interactions, directory: Path) -> Interactions:
    on_ray = Interactions.load(directory)
    assert len(on_ray) == len(local)
    assert on_ray.table.equals(local.table)
    assert on_ray.user_ids.equals(local.user_ids)
    assert on_ray.item_ids.equals(local.item_ids)
    assert fingerprint(on_ray) == fingerprint(local)
    assert on_ray.metadata == local.metadata
    return on_ray


def _assert_same_split(local: Split, directory: Path) -> None:
    on_ray = Split.load(directory)
    assert on_ray.source == local.source
    assert on_ray.counts == local.counts
    assert on_ray.details == local.details
    assert on_ray.spec == local.spec
    assert set(on_ray.parts()) == set(local.parts())
    for name, part in local.parts().items():
        assert on_ray.parts()[name].table.equals(part.table), name


def _synthetic_parquet(path: Path, *, rows: int = 24_000, seed: int = 5) -> Path:
    """Synthetic ratings, rows shuffled (a user's rows spread over every partition), with
    sparse integer user ids, text item ids and tied timestamps, in row groups of 1,500."""
    data = generate(SyntheticConfig(n_users=600, n_items=400, n_interactions=rows, seed=seed))
    order = np.random.default_rng(seed).permutation(len(data))
    timestamps = data.timestamps()[order] // 86_400 * 86_400  # ties within a user's day
    table = pa.table(
        {
            "uid": pa.array(data.users()[order].astype(np.int64) * 7 + 3),
            "iid": pa.array([f"item-{i}" for i in data.items()[order]]),
            "ts": pa.array(timestamps),
            "rating": pa.array(data.values()[order]),
        }
    )
    pq.write_table(table, path, row_group_size=1_500)
    return path


_PARQUET = {
    "format": "parquet",
    "user_col": "uid",
    "item_col": "iid",
    "time_col": "ts",
    "value_col": "rating",
    "name": "synth",
}


def test_synthetic_import_and_splits_equal_single_process(tmp_path):
    source = _synthetic_parquet(tmp_path / "synth.parquet")
    options = ReadOptions(**_PARQUET)
    curation = CurationConfig(
        k_core={"user_k": 15, "item_k": 30},
        min_per_user=20,
        max_per_user={"n": 60, "strategy": "uniform", "seed": 11},
    )
    local = curate(read_interactions(source, options).interactions, curation)
    engine = RayDataOptions(part_rows=4_000)
    result = import_on_ray(source, options, tmp_path / "ds", curation=curation, engine=engine)
    assert result.parts > 3  # several partitions, so users cross them
    assert [s.name for s in local.metadata.curation] == [
        "k_core",
        "min_per_user",
        "max_per_user",
        "compact",
    ]
    assert local.metadata.curation[0].details["iterations"] >= 3  # the k-core iterates
    assert local.metadata.curation[1].rows_before > local.metadata.curation[1].rows_after
    assert local.metadata.curation[2].details["users_capped"] > 0
    _assert_same_dataset(local, tmp_path / "ds")

    for spec in (
        {"protocol": "holdout", "fraction": 0.3, "seed": 7},
        {"protocol": "leave-last-out", "k": 2, "validation": True, "unseen": "drop"},
    ):
        expected = split(local, spec)
        split_on_ray(tmp_path / "ds", spec, tmp_path / "split", engine=engine)
        _assert_same_split(expected, tmp_path / "split")


def test_most_recent_cap_without_k_core_equals_single_process(tmp_path):
    source = _synthetic_parquet(tmp_path / "synth.parquet", rows=9_000, seed=2)
    options = ReadOptions(**_PARQUET)
    curation = CurationConfig(max_per_user={"n": 12, "strategy": "most_recent"})
    local = curate(read_interactions(source, options).interactions, curation)
    import_on_ray(
        source,
        options,
        tmp_path / "ds",
        curation=curation,
        engine=RayDataOptions(part_rows=2_000),
    )
    _assert_same_dataset(local, tmp_path / "ds")


@pytest.mark.realdata
def test_ml100k_import_and_holdout_equal_single_process(real_data_dir, tmp_path):
    source = real_data_dir / "ml-100k" / "u.data"
    if not source.is_file():
        pytest.skip("ml-100k is not under PRIVRANK_DATA_DIR")
    options = ReadOptions(format="ml-100k", name="ml-100k")
    curation = CurationConfig(
        k_core={"user_k": 5, "item_k": 5},
        max_per_user={"n": 100, "strategy": "uniform", "seed": 3},
    )
    local = curate(read_interactions(source, options).interactions, curation)
    import_on_ray(source, options, tmp_path / "ds", curation=curation)
    _assert_same_dataset(local, tmp_path / "ds")
    spec = {"protocol": "holdout", "fraction": 0.2, "seed": 0}
    split_on_ray(tmp_path / "ds", spec, tmp_path / "split", engine=RayDataOptions(part_rows=20_000))
    _assert_same_split(split(local, spec), tmp_path / "split")


def test_bad_row_is_reported_with_file_and_row_as_single_process(tmp_path):
    source = _synthetic_parquet(tmp_path / "bad.parquet", rows=6_000)
    table = pq.read_table(source)
    ratings = table.column("rating").to_pylist()
    ratings[4_321] = float("nan")  # in the third row group
    table = table.set_column(3, "rating", pa.array(ratings, type=pa.float32()))
    pq.write_table(table, source, row_group_size=1_500)
    options = ReadOptions(**_PARQUET)
    with pytest.raises(DataError) as local:
        read_interactions(source, options)
    with pytest.raises(DataError) as on_ray:
        import_on_ray(source, options, tmp_path / "ds", engine=RayDataOptions(part_rows=1_500))
    assert str(on_ray.value) == str(local.value)
    assert "row 4322" in str(on_ray.value) and str(source) in str(on_ray.value)
    assert not (tmp_path / "ds").exists()  # nothing written
    assert [p.name for p in tmp_path.iterdir()] == ["bad.parquet"]  # no staging left behind


def test_directory_of_parquet_files_is_one_input(tmp_path):
    source = _synthetic_parquet(tmp_path / "all.parquet", rows=6_000)
    table = pq.read_table(source)
    (tmp_path / "parts").mkdir()
    for index, start in enumerate(range(0, 6_000, 2_500)):
        pq.write_table(table.slice(start, 2_500), tmp_path / "parts" / f"f{index}.parquet")
    options = ReadOptions(**_PARQUET)
    curation = CurationConfig(k_core={"user_k": 3, "item_k": 3})
    local = curate(read_interactions(source, options).interactions, curation)
    result = import_on_ray(tmp_path / "parts", options, tmp_path / "ds", curation=curation)
    on_ray = Interactions.load(tmp_path / "ds")
    assert on_ray.table.equals(local.table) and fingerprint(on_ray) == fingerprint(local)
    assert result.metadata.source_rows == 6_000
    assert result.metadata.curation == local.metadata.curation


def test_unsupported_options_are_refused_before_reading(tmp_path):
    source = tmp_path / "x.parquet"
    with pytest.raises(ConfigError, match="quarantine"):
        import_on_ray(source, ReadOptions(**_PARQUET, on_error="quarantine"), tmp_path / "o")
    with pytest.raises(ConfigError, match="--duplicates"):
        import_on_ray(
            source,
            ReadOptions(**_PARQUET),
            tmp_path / "o",
            curation=CurationConfig(duplicates="first"),
        )
    with pytest.raises(ConfigError, match="sequences"):
        import_on_ray(source, ReadOptions(format="sequences"), tmp_path / "o")
    with pytest.raises(ConfigError, match="temporal"):
        split_on_ray(tmp_path, {"protocol": "temporal", "quantile": 0.8}, tmp_path / "s")


def test_cli_engine_switch_end_to_end_and_exit_code_2(tmp_path, privrank_home):
    from typer.testing import CliRunner

    from privrank.cli.app import app
    from privrank.cli.main import EXIT_USAGE  # noqa: F401  registers the commands

    source = _synthetic_parquet(tmp_path / "synth.parquet", rows=6_000)
    layout = [
        "--format",
        "parquet",
        "--user-col",
        "uid",
        "--item-col",
        "iid",
        "--time-col",
        "ts",
        "--value-col",
        "rating",
    ]
    runner = CliRunner()
    done = runner.invoke(
        app,
        [
            "data",
            "import",
            str(source),
            *layout,
            "--k-core",
            "3",
            "--engine",
            "ray",
            "--part-rows",
            "2000",
            "--out",
            str(tmp_path / "ds"),
        ],
    )
    assert done.exit_code == 0, done.output
    local = curate(
        read_interactions(source, ReadOptions(**_PARQUET | {"name": "synth"})).interactions,
        CurationConfig(k_core={"user_k": 3, "item_k": 3}),
    )
    assert fingerprint(Interactions.load(tmp_path / "ds")) == fingerprint(local)
    done = runner.invoke(
        app,
        ["data", "split", str(tmp_path / "ds"), "--engine", "ray", "--out", str(tmp_path / "s")],
    )
    assert done.exit_code == 0, done.output
    _assert_same_split(split(local, {"protocol": "holdout"}), tmp_path / "s")
    # the local engine refuses Ray-only options
    done = runner.invoke(app, ["data", "split", str(tmp_path / "ds"), "--part-rows", "5"])
    assert done.exit_code != 0


def test_cli_bad_row_exits_2_naming_file_and_row(tmp_path, privrank_home, monkeypatch, capsys):
    from privrank.cli import main

    source = _synthetic_parquet(tmp_path / "bad.parquet", rows=3_000)
    table = pq.read_table(source)
    users = table.column("uid").to_pylist()
    users[2_000] = None
    pq.write_table(table.set_column(0, "uid", pa.array(users, type=pa.int64())), source)
    argv = [
        "privrank",
        "data",
        "import",
        str(source),
        "--format",
        "parquet",
        "--user-col",
        "uid",
        "--item-col",
        "iid",
        "--engine",
        "ray",
        "--out",
        str(tmp_path / "ds"),
    ]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exited:
        main.app()  # the console script: privrank errors become one line and exit code 2
    assert exited.value.code == main.EXIT_USAGE == 2
    stderr = " ".join(capsys.readouterr().err.split())
    assert "row 2001" in stderr and "missing user id" in stderr and "bad.parquet" in stderr
    assert not (tmp_path / "ds").exists()

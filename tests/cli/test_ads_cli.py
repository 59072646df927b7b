"""The ads commands end to end: ``data synth-ads`` (and, below, ``ads ...``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from privrank.data.synthetic_ads import AdLogConfig, read_ad_log, write_ad_log

SMALL = [
    "--impressions",
    "60000",
    "--users",
    "3000",
    "--ads",
    "200",
    "--campaigns",
    "20",
    "--advertisers",
    "5",
    "--contexts",
    "40",
    "--chunk-rows",
    "20000",
]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privrank.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_synth_ads_writes_the_log_of_the_config(tmp_path: Path) -> None:
    out = tmp_path / "log"
    result = run_cli("data", "synth-ads", *SMALL, "--seed", "5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "60,000 impressions" in result.stdout
    expected = write_ad_log(
        AdLogConfig(
            n_impressions=60_000,
            n_users=3_000,
            n_ads=200,
            n_campaigns=20,
            n_advertisers=5,
            n_contexts=40,
            chunk_rows=20_000,
            seed=5,
        ),
        tmp_path / "expected",
    )
    assert read_ad_log(out).equals(read_ad_log(expected))


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--impressions", "0"], "n_impressions"), (["--chunk-rows", "10"], "chunk_rows")],
)
def test_synth_ads_bad_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("data", "synth-ads", *args, "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "x").exists()

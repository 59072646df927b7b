"""The ads commands end to end: ``data synth-ads`` (and, below, ``ads ...``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = AdLogConfig(
        n_impressions=40_000,
        n_users=2_000,
        n_ads=100,
        n_campaigns=10,
        n_advertisers=4,
        n_contexts=40,
        chunk_rows=20_000,
        conversion_rate=0.5,
        seed=1,
    )
    return write_ad_log(config, tmp_path_factory.mktemp("ads") / "log")


def _invoke(monkeypatch: pytest.MonkeyPatch, home: Path, *args: str):
    """In process (typer's CliRunner): the commands' exit-2 mapping is main.app()'s, tested
    for every PrivrankError in tests/cli/test_messages.py; here the error itself is checked."""
    from typer.testing import CliRunner

    import privrank.cli.ads
    import privrank.cli.ads_synth
    import privrank.cli.privacy  # noqa: F401
    from privrank.cli.app import app

    monkeypatch.setenv("PRIVRANK_HOME", str(home))
    monkeypatch.delenv("PRIVRANK_LEDGER_URL", raising=False)
    return CliRunner().invoke(app, list(args))


def _budget(monkeypatch: pytest.MonkeyPatch, home: Path, epsilon: str) -> None:
    result = _invoke(
        monkeypatch, home, "privacy", "budget", "ads", "--epsilon", epsilon, "--delta", "1e-6"
    )
    assert result.exit_code == 0, result.output


def _committed(home: Path) -> list[float]:
    from privrank.privacy.ledger import Ledger

    with Ledger(f"sqlite:///{home / 'ledger.sqlite'}") as book:
        return [s.epsilon for s in book.spends("ads", status="committed")]


def test_synth_ads_writes_the_log_of_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "log"
    result = _invoke(
        monkeypatch, tmp_path, "data", "synth-ads", *SMALL, "--seed", "5", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert "60,000 impressions" in result.output
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


def test_synth_ads_bad_options_exit_2(tmp_path: Path) -> None:
    result = run_cli(
        "data",
        "synth-ads",
        "--impressions",
        "0",
        "--chunk-rows",
        "10",
        "--out",
        str(tmp_path / "x"),
    )
    assert result.returncode == 2
    assert "n_impressions" in result.stderr and "chunk_rows" in result.stderr
    assert not (tmp_path / "x").exists()


def test_measure_spends_and_writes_every_key(
    small_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privrank.errors import PrivacyBudgetExceeded

    home = tmp_path / "home"
    _budget(monkeypatch, home, "5")

    def measure(out: Path):
        return _invoke(
            monkeypatch,
            home,
            "ads",
            "measure",
            "--log",
            str(small_log),
            "--out",
            str(out),
            "--epsilon",
            "1",
            "--budget-key",
            "ads",
        )

    result = measure(tmp_path / "report.csv")
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "report.csv").read_text().splitlines()
    assert lines[0] == "campaign_id,conversion_type,count,value"
    assert len(lines) == 1 + 10 * 4  # the whole public domain
    assert _committed(home) == [4.0]  # C = 4 conversions a user, ε = 1 each
    # A second report does not fit the remaining ε = 1: refused, nothing written.
    again = measure(tmp_path / "again.csv")
    assert isinstance(again.exception, PrivacyBudgetExceeded)
    assert not (tmp_path / "again.csv").exists()
    assert _committed(home) == [4.0]


def test_train_label_dp_spends_c_epsilon_and_saves_a_loadable_model(
    small_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privrank.errors import PrivacyBudgetExceeded
    from privrank.ranking.gbdt_click import GBDTClickModel

    home = tmp_path / "home"
    _budget(monkeypatch, home, "10")

    def train(out: Path, cap: str, epsilon: str = "1"):
        return _invoke(
            monkeypatch,
            home,
            "ads",
            "train",
            "--log",
            str(small_log),
            "--out",
            str(out),
            "--epsilon",
            epsilon,
            "--budget-key",
            "ads",
            "--max-rows-per-user",
            cap,
            "--trees",
            "10",
        )

    result = train(tmp_path / "model", "5")
    assert result.exit_code == 0, result.output
    assert "label differential privacy" in result.output and "spent ε=5" in result.output
    model = GBDTClickModel.load(tmp_path / "model")
    meta = GBDTClickModel.metadata(tmp_path / "model")
    assert meta["label_dp"]["user_epsilon"] == 5.0 and meta["spend"]["epsilon"] == 5.0
    assert model.label_keep is not None
    assert _committed(home) == [5.0]
    # Over budget (5 + 10 > 10): refused before training, nothing written.
    over = train(tmp_path / "m2", "10")
    assert isinstance(over.exception, PrivacyBudgetExceeded)
    assert not (tmp_path / "m2").exists()
    # Non-private: nothing spent.
    plain = train(tmp_path / "m3", "5", "inf")
    assert plain.exit_code == 0, plain.output
    assert "NOT private" in plain.output and _committed(home) == [5.0]
    assert GBDTClickModel.metadata(tmp_path / "m3")["label_dp"] is None


def test_train_label_dp_rr_posterior_spends_and_records_the_method(
    small_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privrank.errors import ConfigError
    from privrank.ranking.gbdt_click import GBDTClickModel

    home = tmp_path / "home"
    _budget(monkeypatch, home, "10")
    common = ["ads", "train", "--log", str(small_log), "--epsilon", "1", "--budget-key", "ads"]
    common += ["--max-rows-per-user", "4", "--trees", "10", "--label-method", "rr-posterior"]
    result = _invoke(monkeypatch, home, *common, "--out", str(tmp_path / "m"), "--folds", "3")
    assert result.exit_code == 0, result.output
    meta = GBDTClickModel.metadata(tmp_path / "m")
    assert meta["training"]["method"] == "rr-posterior" and meta["training"]["folds"] == 3
    assert meta["label_dp"]["user_epsilon"] == 4.0 and _committed(home) == [4.0]
    # Trained on posteriors: the model estimates P(click) itself (no response to invert).
    model = GBDTClickModel.load(tmp_path / "m")
    assert model.label_keep is None
    bad = _invoke(monkeypatch, home, *common, "--out", str(tmp_path / "b"), "--folds", "1")
    # In process the ConfigError itself is checked (main.app() maps it to exit 2).
    assert isinstance(bad.exception, ConfigError) and "--folds" in str(bad.exception)
    assert not (tmp_path / "b").exists()
    assert _committed(home) == [4.0]


def test_train_stream_fits_lightgbm_part_by_part_and_refuses_a_private_stream(
    small_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privrank.errors import ConfigError
    from privrank.ranking.gbdt_click import GBDTClickModel

    out = tmp_path / "streamed"
    result = _invoke(
        monkeypatch, tmp_path, "ads", "train", "--log", str(small_log), "--out", str(out),
        "--epsilon", "inf", "--stream", "--model", "lightgbm", "--trees", "5",
        "--min-data-in-leaf", "50", "--max-rows-per-user", "1000", "--validation-rows", "5000",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "streamed lightgbm on 35,000 rows" in result.output and "peak RSS" in result.output
    training = GBDTClickModel.metadata(out)["training"]
    assert training["streamed"] and training["train_rows"] == 35_000
    assert GBDTClickModel.load(out).predict_ctr({"ad_id": [1]} | {
        name: [0] for name in GBDTClickModel.load(out).feature_names if name != "ad_id"
    }).shape == (1,)  # fmt: skip
    refused = _invoke(
        monkeypatch, tmp_path, "ads", "train", "--log", str(small_log), "--out",
        str(tmp_path / "private"), "--epsilon", "1", "--stream",
    )  # fmt: skip
    assert isinstance(refused.exception, ConfigError)
    assert "--model lightgbm only" in str(refused.exception)
    assert not (tmp_path / "private").exists()


def test_train_stream_with_label_dp_spends_c_epsilon_and_refuses_without_a_key(
    small_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privrank.errors import ConfigError, PrivacyBudgetExceeded
    from privrank.ranking.gbdt_click import GBDTClickModel

    home = tmp_path / "home"
    common = [
        "ads", "train", "--log", str(small_log), "--epsilon", "1", "--stream", "--model",
        "lightgbm", "--trees", "5", "--min-data-in-leaf", "50", "--max-rows-per-user", "4",
        "--validation-rows", "5000",
    ]  # fmt: skip
    no_key = _invoke(monkeypatch, home, *common, "--out", str(tmp_path / "a"))
    assert isinstance(no_key.exception, ConfigError) and "--budget-key" in str(no_key.exception)
    _budget(monkeypatch, home, "6")
    out = tmp_path / "streamed-private"
    result = _invoke(monkeypatch, home, *common, "--out", str(out), "--budget-key", "ads")
    assert result.exit_code == 0, result.output
    assert "spent ε=4 (δ=0) from ads" in result.output
    meta = GBDTClickModel.metadata(out)
    assert meta["label_dp"]["epsilon"] == 1.0 and meta["label_dp"]["user_epsilon"] == 4.0
    assert meta["spend"]["epsilon"] == 4.0 and meta["training"]["streamed"]
    assert GBDTClickModel.load(out).label_keep == pytest.approx(np.e / (np.e + 1))
    assert _committed(home) == [4.0]
    over = _invoke(monkeypatch, home, *common, "--out", str(tmp_path / "b"), "--budget-key", "ads")
    assert isinstance(over.exception, PrivacyBudgetExceeded)
    assert not (tmp_path / "b").exists()
    assert _committed(home) == [4.0]

"""``privrank telemetry randomise`` and ``ingest`` end to end: files, ledger, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from privrank.errors import ConfigError, DataError, PrivacyBudgetExceeded
from privrank.privacy.local_dp.table import read_popularity_table


def _invoke(monkeypatch: pytest.MonkeyPatch, home: Path, *args: str):
    """In process; the exit-2 mapping of main.app() is checked once below by a subprocess."""
    from typer.testing import CliRunner

    import privrank.cli.privacy
    import privrank.cli.telemetry  # noqa: F401
    from privrank.cli.app import app

    monkeypatch.setenv("PRIVRANK_HOME", str(home))
    monkeypatch.delenv("PRIVRANK_LEDGER_URL", raising=False)
    return CliRunner().invoke(app, list(args))


def _spends(home: Path) -> list[tuple[str, float, str]]:
    from privrank.privacy.ledger import Ledger

    with Ledger(f"sqlite:///{home / 'ledger.sqlite'}") as book:
        return [(s.description, s.epsilon, s.status.value) for s in book.spends("shop")]


@pytest.fixture()
def events(tmp_path: Path) -> Path:
    lines = ["user,item,day"]
    for user in range(300):
        lines.append(f"u{user},item{user % 7},2026-12-01")
        lines.append(f"u{user},item{(user * 3) % 7},2026-12-01")
        if user % 2:
            lines.append(f"u{user},item{user % 5},2026-12-02")
    path = tmp_path / "events.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_randomise_ingest_spends_each_day_once_and_writes_the_table(monkeypatch, tmp_path, events):
    home = tmp_path / "home"
    items = tmp_path / "items.txt"
    items.write_text("\n".join(f"item{i}" for i in range(8)) + "\n", encoding="utf-8")
    result = _invoke(
        monkeypatch, home, "privacy", "budget", "shop", "--epsilon", "20", "--delta", "0"
    )
    assert result.exit_code == 0, result.output
    reports = tmp_path / "reports.jsonl"
    args = ["telemetry", "randomise", "--events", str(events), "--out", str(reports)]
    args += ["--device-state", str(tmp_path / "devices.json")]
    result = _invoke(monkeypatch, home, *args, "--epsilon", "4", "--m", "64", "--k", "16")
    assert result.exit_code == 0, result.output
    assert "450 reports" in result.output  # 300 user-days on day 1, 150 on day 2
    assert len(reports.read_text().splitlines()) == 451

    table_path = tmp_path / "pop.json"
    ingest = ["telemetry", "ingest", str(reports), "--items", str(items), "--budget-key", "shop"]
    result = _invoke(monkeypatch, home, *ingest, "--out", str(table_path))
    assert result.exit_code == 0, result.output
    spends = _spends(home)
    assert [(d, s) for d, _, s in spends] == [
        ("telemetry shop day 2026-12-01", "committed"),
        ("telemetry shop day 2026-12-02", "committed"),
    ]
    assert all(e == pytest.approx(4.0, rel=1e-3) for _, e, _ in spends)
    table = read_popularity_table(table_path)
    assert table.item_ids == [f"item{i}" for i in range(8)]
    assert table.days == ["2026-12-01", "2026-12-02"]
    assert table.guarantee.epsilon_total == pytest.approx(8.0, rel=1e-3)
    assert abs(table.estimate.sum() - 450) < 6 * (table.std**2).sum() ** 0.5

    # Decoding the same reports again is post-processing: nothing new is charged.
    result = _invoke(monkeypatch, home, *ingest, "--out", str(table_path), "--overwrite")
    assert result.exit_code == 0, result.output
    assert "nothing new" in result.output
    assert len(_spends(home)) == 2


def test_a_budget_that_does_not_cover_the_days_refuses_before_writing(
    monkeypatch, tmp_path, events
):
    home = tmp_path / "home"
    assert (
        _invoke(
            monkeypatch, home, "privacy", "budget", "shop", "--epsilon", "6", "--delta", "0"
        ).exit_code
        == 0
    )
    reports = tmp_path / "reports.jsonl"
    args = ["telemetry", "randomise", "--events", str(events), "--out", str(reports)]
    args += ["--device-state", str(tmp_path / "devices.json")]
    assert (
        _invoke(monkeypatch, home, *args, "--epsilon", "4", "--m", "32", "--k", "8").exit_code == 0
    )
    items = tmp_path / "items.txt"
    items.write_text("item0\nitem1\n", encoding="utf-8")
    out = tmp_path / "pop.json"
    result = _invoke(
        monkeypatch, home, "telemetry", "ingest", str(reports), "--items", str(items),
        "--budget-key", "shop", "--out", str(out),
    )  # fmt: skip
    assert isinstance(result.exception, PrivacyBudgetExceeded)
    assert not out.exists()
    assert [s for _, _, s in _spends(home)] == ["released"]  # day 1 reserved, given back


def test_a_bad_report_line_is_refused_with_nothing_spent_or_written(monkeypatch, tmp_path, events):
    home = tmp_path / "home"
    assert (
        _invoke(
            monkeypatch, home, "privacy", "budget", "shop", "--epsilon", "20", "--delta", "0"
        ).exit_code
        == 0
    )
    reports = tmp_path / "reports.jsonl"
    args = ["telemetry", "randomise", "--events", str(events), "--out", str(reports)]
    args += ["--device-state", str(tmp_path / "devices.json")]
    assert (
        _invoke(monkeypatch, home, *args, "--epsilon", "4", "--m", "16", "--k", "4").exit_code == 0
    )
    lines = reports.read_text().splitlines()
    lines[200] = json.dumps({"day": "2026-12-01", "row": 4, "bits": "AAA="})
    reports.write_text("\n".join(lines) + "\n")
    out = tmp_path / "pop.json"
    result = _invoke(
        monkeypatch, home, "telemetry", "ingest", str(reports), "--items-from", "x",
        "--budget-key", "shop", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code != 0
    items = tmp_path / "items.txt"
    items.write_text("item0\n", encoding="utf-8")
    result = _invoke(
        monkeypatch, home, "telemetry", "ingest", str(reports), "--items", str(items),
        "--budget-key", "shop", "--out", str(out),
    )  # fmt: skip
    error = result.exception
    assert isinstance(error, DataError)
    assert (error.line, error.field, error.value) == (201, "row", 4)
    assert str(reports) in str(error) and "[0, 4)" in str(error)
    assert not out.exists() and _spends(home) == []


def test_bad_events_exit_2_with_file_line_and_field(tmp_path: Path):
    events = tmp_path / "events.csv"
    events.write_text("user,item,day\nu1,i1,2026-12-01\nu2,i2,12/01/2026\n", encoding="utf-8")
    out = tmp_path / "r.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "privrank.cli.main", "telemetry", "randomise", "--events",
         str(events), "--out", str(out), "--epsilon", "4", "--device-state",
         str(tmp_path / "devices.json")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert f"{events}, line 3, column 3 (day): not a day: got '12/01/2026'" in run.stderr
    assert not out.exists()


def test_a_user_day_already_reported_is_refused_and_nothing_is_written(
    monkeypatch, tmp_path, events
):
    home = tmp_path / "home"
    state = tmp_path / "devices.json"
    first, second = tmp_path / "r1.jsonl", tmp_path / "r2.jsonl"
    base = ["telemetry", "randomise", "--events", str(events), "--device-state", str(state)]
    result = _invoke(monkeypatch, home, *base, "--out", str(first), "--epsilon", "4")
    assert result.exit_code == 0, result.output
    recorded = state.read_text()
    assert "u1" not in recorded  # digests, not user ids
    # The same user-days again (a second run over the events file): a second ε-report of each
    # user-day, which the server could not tell from new users' reports, is refused.
    result = _invoke(monkeypatch, home, *base, "--out", str(second), "--epsilon", "4")
    assert isinstance(result.exception, ConfigError)
    assert "450 user-day(s) of these events were already reported" in str(result.exception)
    assert not second.exists()
    assert state.read_text() == recorded
    # A new day of the same users is a new user-day.
    later = tmp_path / "later.csv"
    later.write_text("user,item,day\nu1,item3,2026-12-03\n", encoding="utf-8")
    result = _invoke(
        monkeypatch, home, "telemetry", "randomise", "--events", str(later), "--device-state",
        str(state), "--out", str(second), "--epsilon", "4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output

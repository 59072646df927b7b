"""``privrank privacy ledger`` and ``privrank privacy budget`` through typer's CliRunner."""

from __future__ import annotations

import os
import sys
import uuid

import pytest
from typer.testing import CliRunner

import privrank.cli.privacy  # noqa: F401  (registers the commands)
from privrank.cli import main
from privrank.cli.app import app
from privrank.errors import ConfigError
from privrank.privacy.ledger import Ledger


def _run(*args: str):
    return CliRunner().invoke(app, ["privacy", *args])


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


def test_budget_sets_and_shows_the_budget(url: str) -> None:
    result = _run(
        "budget", "ml-100k", "--epsilon", "8", "--delta", "1e-5", "--name", "ML", "--url", url
    )
    assert result.exit_code == 0, result.output
    assert "ml-100k" in result.output and "ML" in result.output
    with Ledger(url) as book:
        budget = book.budget("ml-100k")
    assert (budget.epsilon, budget.delta, budget.name) == (8.0, 1e-5, "ML")


def test_ledger_shows_budgets_and_spends(url: str) -> None:
    with Ledger(url) as book:
        book.set_budget("ml-100k", 4.0, 1e-5, name="MovieLens")
        book.set_budget("beauty", 2.0, 1e-6)
        book.commit(book.reserve("ml-100k", 1.0, 1e-6, "dp-ease"))
        crashed = book.reserve("ml-100k", 0.5, 1e-6, "dp-ials")
        book.release(book.reserve("beauty", 0.25, 1e-7, "dp-pop"))
    result = _run("ledger", "--url", url)
    assert result.exit_code == 0, result.output
    out = result.output
    for text in ("privacy budgets", "spends", "ml-100k", "beauty", "dp-ease", "dp-ials"):
        assert text in out
    for status in ("committed", "reserved", "released"):
        assert status in out
    assert crashed.id in out
    ml_row = next(line for line in out.splitlines() if "MovieLens" in line)
    assert "2.5" in ml_row  # remaining ε = 4 - 1 (spent) - 0.5 (reserved)

    only = _run("ledger", "--dataset", "beauty", "--url", url)
    assert only.exit_code == 0, only.output
    assert "dp-pop" in only.output and "dp-ease" not in only.output

    reserved = _run("ledger", "--status", "reserved", "--url", url)
    assert "dp-ials" in reserved.output and "dp-ease" not in reserved.output


def test_ledger_uses_the_environment_url(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVRANK_LEDGER_URL", url)
    assert _run("budget", "d", "--epsilon", "1", "--delta", "0").exit_code == 0
    result = _run("ledger")
    assert result.exit_code == 0 and "d" in result.output


def test_empty_ledger_says_so(url: str) -> None:
    result = _run("ledger", "--url", url)
    assert result.exit_code == 0
    assert "no budget or spends" in result.output
    result = _run("ledger", "--dataset", "x", "--url", url)
    assert "no budget or spends for 'x'" in result.output


def test_invalid_budget_is_a_config_error(url: str) -> None:
    result = _run("budget", "d", "--epsilon", "-1", "--delta", "1e-5", "--url", url)
    assert isinstance(result.exception, ConfigError)
    assert "epsilon" in str(result.exception)


def test_console_script_exits_2_on_a_bad_budget(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["privrank", "privacy", "budget", "d", "--epsilon", "1", "--delta", "1", "--url", url]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main.app()
    assert exit_info.value.code == 2
    assert "delta" in capsys.readouterr().err


@pytest.mark.postgres
def test_budget_and_ledger_on_postgres() -> None:
    base = os.environ.get("PRIVRANK_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("PRIVRANK_TEST_POSTGRES_URL is not set (run .ci/postgres.sh)")
    key = f"cli-{uuid.uuid4().hex[:8]}"
    result = _run("budget", key, "--epsilon", "3", "--delta", "1e-6", "--url", base)
    assert result.exit_code == 0, result.output
    with Ledger(base) as book:
        book.commit(book.reserve(key, 1.0, 1e-7, "dp-ease on postgres"))
    result = _run("ledger", "--dataset", key, "--url", base)
    assert result.exit_code == 0, result.output
    assert "dp-ease on postgres" in result.output and "committed" in result.output


def test_resolve_commits_or_releases_a_stale_reservation(url: str) -> None:
    with Ledger(url) as book:
        book.set_budget("d", 1.0, 1e-5)
        stale = book.reserve("d", 0.5, 1e-6, "crashed")
        other = book.reserve("d", 0.25, 1e-6, "crashed too")
    result = _run("resolve", stale.id, "--as", "released", "--url", url)
    assert result.exit_code == 0, result.output
    assert f"spend {stale.id} is now released" in result.output
    assert _run("resolve", other.id, "--as", "committed", "--url", url).exit_code == 0
    with Ledger(url) as book:
        budget = book.budget("d")
    assert (budget.epsilon_spent, budget.epsilon_reserved) == (0.25, 0.0)
    again = _run("resolve", stale.id, "--as", "committed", "--url", url)
    assert again.exit_code != 0
    assert "it is released, not reserved" in str(again.exception)

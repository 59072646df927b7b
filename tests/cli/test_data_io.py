"""``privrank data import | validate | stats`` and ``privrank demo`` through the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from privrank.data import Interactions


def run_cli(*args: str, env_home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point (exit codes and stderr as a user sees them)."""
    return subprocess.run(
        [sys.executable, "-c", "from privrank.cli.main import app; app()", *args],
        capture_output=True,
        text=True,
        check=False,
    )


GOOD = "1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t881250951\n"


def test_import_file_then_stats(tmp_path: Path, privrank_home: Path) -> None:
    source = tmp_path / "u.data"
    source.write_text(GOOD)
    done = run_cli("data", "import", str(source), "--format", "ml-100k", "--name", "tiny")
    assert done.returncode == 0, done.stderr
    saved = Interactions.load(privrank_home / "datasets" / "tiny")
    assert (len(saved), saved.n_users, saved.n_items) == (3, 2, 2)
    assert saved.metadata.source_format == "ml-100k"
    stats = run_cli("data", "stats")
    assert stats.returncode == 0, stats.stderr
    assert "interactions" in stats.stdout and "3" in stats.stdout


def test_strict_import_of_bad_file_exits_2_and_writes_nothing(
    tmp_path: Path, privrank_home: Path
) -> None:
    source = tmp_path / "u.data"
    source.write_text(GOOD + "2\t20\tfive\t881250952\n")
    done = run_cli("data", "import", str(source), "--format", "ml-100k", "--name", "bad")
    assert done.returncode == 2
    assert "line 4, column 3 (rating)" in done.stderr
    assert "'five'" in done.stderr
    assert not (privrank_home / "datasets" / "bad").exists()


def test_quarantine_keeps_good_rows_and_reports_rejects(
    tmp_path: Path, privrank_home: Path
) -> None:
    source = tmp_path / "u.data"
    source.write_text(GOOD + "2\t20\tfive\t881250952\n")
    rejects = tmp_path / "rejects.tsv"
    done = run_cli(
        "data", "import", str(source), "--format", "ml-100k", "--name", "q",
        "--on-error", "quarantine", "--rejects", str(rejects),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "quarantined 1 of 4 lines" in done.stdout
    lines = rejects.read_text().splitlines()
    assert lines[1].startswith("4\t")
    saved = Interactions.load(privrank_home / "datasets" / "q")
    assert len(saved) == 3 and saved.metadata.rejected_rows == 1


def test_validate_reports_ok_and_problems(tmp_path: Path) -> None:
    good = tmp_path / "good.data"
    good.write_text(GOOD)
    assert run_cli("data", "validate", str(good), "--format", "ml-100k").returncode == 0
    bad = tmp_path / "bad.data"
    bad.write_text(GOOD + "3\t10\n")
    done = run_cli("data", "validate", str(bad), "--format", "ml-100k")
    assert done.returncode == 2
    assert "line 4" in done.stderr and "wrong number of fields" in done.stderr


def test_import_applies_curation_and_records_it(tmp_path: Path, privrank_home: Path) -> None:
    rows = [f"{u}\t{i}\t4\t{881250000 + 10 * u + i}" for u in range(1, 4) for i in range(1, 6)]
    source = tmp_path / "u.data"
    source.write_text("\n".join(rows) + "\n")
    done = run_cli(
        "data", "import", str(source), "--format", "ml-100k", "--name", "capped",
        "--max-per-user", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    saved = Interactions.load(privrank_home / "datasets" / "capped")
    assert len(saved) == 6
    assert [s.name for s in saved.metadata.curation] == ["max_per_user", "compact"]
    # most_recent keeps each user's two latest items (4 and 5).
    assert sorted(set(saved.item_ids.take(saved.items()).to_pylist())) == [4, 5]


def test_unknown_source_and_missing_format_are_clear(tmp_path: Path, privrank_home: Path) -> None:
    done = run_cli("data", "import", str(tmp_path / "nope.csv"), "--format", "ml-csv")
    assert done.returncode == 2 and "no such file or catalog data set" in done.stderr
    source = tmp_path / "u.data"
    source.write_text(GOOD)
    done = run_cli("data", "import", str(source))
    assert done.returncode == 2 and "--format is needed" in done.stderr


def test_invalid_read_options_exit_2_naming_the_rule(tmp_path: Path) -> None:
    source = tmp_path / "t.csv"
    source.write_text("u,i\n1,2\n")
    done = run_cli("data", "validate", str(source), "--format", "csv", "--user-col", "0")
    assert done.returncode == 2
    assert "ReadOptions: " in done.stderr
    assert "user_col is a 1-based column position; got 0" in done.stderr


def test_stats_without_import_says_what_to_do(privrank_home: Path) -> None:
    done = run_cli("data", "stats")
    assert done.returncode == 2 and "privrank data import" in done.stderr


@pytest.mark.realdata
def test_catalog_import_of_ml100k_and_stats(real_data_dir: Path, privrank_home: Path) -> None:
    assert run_cli("data", "import", "ml-100k").returncode == 0
    stats = run_cli("data", "stats")
    assert stats.returncode == 0
    for figure in ("943", "1,682", "100,000"):
        assert figure in stats.stdout


@pytest.mark.realdata
def test_demo_runs_on_ml100k(real_data_dir: Path, privrank_home: Path) -> None:
    done = run_cli("demo")
    assert done.returncode == 0, done.stderr
    assert "80,000" in done.stdout and "20,000" in done.stdout
    assert "ease" in done.stdout and "NDCG@10" in done.stdout
    assert (privrank_home / "datasets" / "ml-100k" / "splits" / "holdout" / "split.json").is_file()
    # The private model: evaluated beside the others, its guarantee stated, its spend committed.
    assert "dp-ease" in done.stdout
    assert "user-level (ε=8, δ=" in done.stdout and "entire history" in done.stdout
    assert "ease: trained without differential privacy" in done.stdout
    from privrank.privacy.ledger import Ledger

    ledger = privrank_home / "runs" / "demo" / "ledger.sqlite"
    with Ledger(f"sqlite:///{ledger}") as book:
        (spend,) = book.spends("ml-100k")
    assert spend.status.value == "committed" and spend.epsilon == 8.0

"""``privrank ltr train``: end to end on a small file, and exit code 2 on a bad line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from privrank.cli.main import app; app()", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def _write(path: Path, n_queries: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lines, sizes = [], []
    for _ in range(n_queries):
        size = int(rng.integers(4, 9))
        sizes.append(str(size))
        for _ in range(size):
            x = rng.random(3)
            label = int(x[0] > 0.5) + int(x[0] > 0.8)
            lines.append(f"{label} 1:{x[0]:.4f} 2:{x[1]:.4f} 3:{x[2]:.4f}")
    path.write_text("\n".join(lines) + "\n")
    path.with_name(path.name + ".query").write_text("\n".join(sizes) + "\n")


def test_train_reports_ndcg_and_saves(tmp_path: Path) -> None:
    _write(tmp_path / "a.train", 40, 0)
    _write(tmp_path / "a.test", 10, 1)
    done = run_cli(
        "ltr", "train", "--train", str(tmp_path / "a.train"), "--test", str(tmp_path / "a.test"),
        "--out", str(tmp_path / "ranker"), "--param", "min_data_in_leaf=5",
        "--param", "num_iterations=10", "--threads", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["test"]["ndcg@3"] > 0.8  # the label is a step function of feature 1
    assert (tmp_path / "ranker" / "checksums.json").is_file()


def test_a_bad_line_exits_2_naming_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "b.train").write_text("1 1:1\nabc 1:2\n")
    (tmp_path / "b.train.query").write_text("2\n")
    done = run_cli(
        "ltr", "train", "--train", str(tmp_path / "b.train"), "--out", str(tmp_path / "r")
    )
    assert done.returncode == 2
    assert "b.train, line 2, field label" in done.stderr
    assert not (tmp_path / "r").exists()


def test_a_private_listwise_fit_spends_once_from_the_ledger(tmp_path: Path) -> None:
    from privrank.privacy.ledger import Ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as book:
        book.set_budget("ltr-data", 5.0, 1e-3)
    _write(tmp_path / "p.train", 60, 0)
    done = run_cli(
        "ltr", "train", "--train", str(tmp_path / "p.train"), "--out", str(tmp_path / "ranker"),
        "--ranker", "listwise", "--param", "epochs=2", "--param", "hidden=[4]",
        "--param", "private.batch_size=10", "--epsilon", "2", "--delta", "1e-3",
        "--budget-key", "ltr-data", "--ledger", url, "--noise-seed", "3", "--threads", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # the accountant's guarantee is the ε asked for, pinned (calibrated at most, not loosely)
    assert result["privacy"]["epsilon"] == 2.0
    assert result["privacy"]["guarantee"]["epsilon"] == 2.0
    assert result["privacy"]["guarantee"]["delta"] == 1e-3
    with Ledger(url) as book:
        spends = book.spends("ltr-data")
        assert [(s.epsilon, s.delta, s.status.value) for s in spends] == [(2.0, 1e-3, "committed")]
        assert spends[0].id == result["privacy"]["spend_id"]


def test_private_fits_that_cannot_run_reserve_nothing(tmp_path: Path) -> None:
    from privrank.privacy.ledger import Ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as book:
        book.set_budget("ltr-data", 1.0, 1e-3)
    _write(tmp_path / "p.train", 30, 0)
    common = ("--out", str(tmp_path / "r"), "--budget-key", "ltr-data", "--ledger", url)
    train = ("ltr", "train", "--train", str(tmp_path / "p.train"))
    lambdamart = run_cli(*train, *common, "--epsilon", "0.5")
    assert lambdamart.returncode == 2
    assert "cannot train with user-level differential privacy" in lambdamart.stderr
    over = run_cli(*train, *common, "--ranker", "listwise", "--epsilon", "2")
    assert over.returncode != 0
    assert "budget" in over.stderr.lower()
    with Ledger(url) as book:
        assert book.spends("ltr-data") == []
    assert not (tmp_path / "r").exists()

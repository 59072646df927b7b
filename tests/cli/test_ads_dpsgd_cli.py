"""``privrank ads train --mechanism dp-sgd``: user-level DP-SGD click model, spent from the ledger,
served by ``POST /v1/ads/rank``'s loader."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli.test_ads_cli import _budget, _invoke, small_log  # noqa: F401

from privrank.errors import ConfigError, PrivacyBudgetExceeded
from privrank.ranking.ctr import load_ranker
from privrank.serving.ads_route import load_click_scorer


def _train(monkeypatch, home: Path, log: Path, out: Path, *extra: str):
    return _invoke(
        monkeypatch, home, "ads", "train", "--log", str(log), "--out", str(out),
        "--mechanism", "dp-sgd", "--model", "fm", "--budget-key", "ads",
        "--max-rows-per-user", "10", "--param", "embedding_dim=4",
        "--param", 'private={"epochs": 1, "expected_batch_users": 200}', *extra,
    )  # fmt: skip


def test_dpsgd_train_spends_saves_its_guarantee_and_serves(
    small_log: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from privrank.privacy.ledger import Ledger

    home = tmp_path / "home"
    _budget(monkeypatch, home, "3")
    out = tmp_path / "click"
    result = _train(monkeypatch, home, small_log, out, "--epsilon", "2", "--delta", "1e-6")
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output and "spent ε=2" in result.output
    ranker = load_ranker(out)
    guarantee = ranker.privacy_guarantee_
    assert guarantee is not None and guarantee.epsilon <= 2.0 + 1e-6
    assert guarantee.delta == 1e-6 and guarantee.contribution_bound == 10
    assert ranker.privacy_facts_["unit_of_privacy"] == "all training rows of one user"
    with Ledger(f"sqlite:///{home / 'ledger.sqlite'}") as book:
        spends = book.spends("ads", status="committed")
    assert [(s.epsilon, s.delta) for s in spends] == [(2.0, 1e-6)]
    scorer, _ = load_click_scorer(out)
    assert "user_id" not in scorer.feature_names
    # The rest of the budget (ε = 1) does not cover another ε = 2: refused before training.
    again = _train(
        monkeypatch, home, small_log, tmp_path / "b", "--epsilon", "2", "--delta", "1e-6"
    )
    assert isinstance(again.exception, PrivacyBudgetExceeded)
    assert not (tmp_path / "b").exists()


def test_dpsgd_train_refuses_bad_options(small_log: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    for extra, message in (
        (["--epsilon", "inf"], "finite"),
        (["--epsilon", "1", "--model", "lightgbm"], "neural CTR"),
    ):
        result = _train(monkeypatch, tmp_path, small_log, tmp_path / "x", *extra)
        assert isinstance(result.exception, ConfigError), result.output
        assert message in str(result.exception)
        assert not (tmp_path / "x").exists()

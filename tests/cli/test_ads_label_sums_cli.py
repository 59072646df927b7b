"""``privrank ads train --mechanism label-sums`` end to end, and its workflow's ledger charge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.cli.test_ads_cli import _budget, _committed, _invoke

from privrank.data.synthetic_ads import AdLogConfig, read_ad_log, write_ad_log
from privrank.ranking.label_sums_logistic import LabelSumsConfig, LabelSumsLogistic

FIELDS = ("user_segment", "ad_category", "campaign_id", "position")


@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = AdLogConfig(
        n_impressions=30_000,
        n_users=2_000,
        n_ads=100,
        n_campaigns=10,
        n_advertisers=4,
        n_contexts=40,
        chunk_rows=10_000,
        seed=3,
    )
    return write_ad_log(config, tmp_path_factory.mktemp("sums") / "log")


def _capped_rows(log: Path, cap: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The oracle's training rows: every user's first ``cap`` rows, by pandas' cumcount."""
    frame = read_ad_log(log, [*FIELDS, "user_id", "click"]).to_pandas()
    kept = frame[frame.groupby("user_id").cumcount() < cap]
    return {f: kept[f].to_numpy() for f in FIELDS}, kept["click"].to_numpy().astype(float)


class _ZeroNoise:
    """A noise generator that draws exactly zero (the zero-noise check)."""

    def laplace(self, loc: float, scale: float, size: tuple[int, ...]) -> np.ndarray:
        return np.full(size, loc, dtype=np.float64)


def _train(monkeypatch, home: Path, log: Path, out: Path, *extra: str):
    return _invoke(
        monkeypatch, home, "ads", "train", "--log", str(log), "--out", str(out),
        "--mechanism", "label-sums", "--sums-fields", ",".join(FIELDS),
        "--sums-min-count", "20", "--sums-l2", "2", *extra,
    )  # fmt: skip


def test_cli_spends_c_epsilon_once_and_saves_a_servable_model(
    small_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privrank.errors import PrivacyBudgetExceeded
    from privrank.serving.ads_route import load_click_scorer

    home = tmp_path / "home"
    _budget(monkeypatch, home, "10")
    args = ("--epsilon", "1", "--budget-key", "ads", "--max-rows-per-user", "5")
    result = _train(monkeypatch, home, small_log, tmp_path / "m", *args)
    assert result.exit_code == 0, result.output
    assert "label differential privacy" in result.output and "spent ε=5" in result.output
    assert _committed(home) == [5.0]
    meta = LabelSumsLogistic.metadata(tmp_path / "m")
    assert meta["label_dp"]["user_epsilon"] == 5.0 and meta["spend"]["epsilon"] == 5.0
    assert meta["label_dp"]["l1_sensitivity"] == len(FIELDS)
    assert meta["label_dp"]["laplace_scale"] == pytest.approx(len(FIELDS) / 1.0)
    _, labels = _capped_rows(small_log, 5)
    assert meta["training"]["rows"] == labels.size
    scorer, digest = load_click_scorer(tmp_path / "m")
    assert isinstance(scorer, LabelSumsLogistic) and digest == meta["sha256"][:16]
    # Over budget (5 + 10 > 10): refused before training, nothing written, nothing charged.
    over = _train(monkeypatch, home, small_log, tmp_path / "m2", *args[:-1], "10")
    assert isinstance(over.exception, PrivacyBudgetExceeded)
    assert not (tmp_path / "m2").exists() and _committed(home) == [5.0]
    # A private fit without a ledger key is refused.
    nokey = _train(monkeypatch, home, small_log, tmp_path / "m3", "--epsilon", "1")
    assert "--budget-key" in str(nokey.exception) and not (tmp_path / "m3").exists()


def test_cli_non_private_fit_equals_the_library_fit_on_the_capped_rows(
    small_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    result = _train(
        monkeypatch, home, small_log, tmp_path / "m", "--epsilon", "inf",
        "--max-rows-per-user", "4", "--sums-crosses", "user_segment*ad_category",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "NOT private" in result.output
    assert LabelSumsLogistic.metadata(tmp_path / "m")["label_dp"] is None
    features, labels = _capped_rows(small_log, 4)
    config = LabelSumsConfig(crosses=(("user_segment", "ad_category"),), min_count=20, l2=2.0)
    oracle = LabelSumsLogistic(FIELDS, config).fit(
        features, labels, float("inf"), np.random.default_rng()
    )
    served = LabelSumsLogistic.load(tmp_path / "m")
    np.testing.assert_allclose(served.predict_ctr(features), oracle.predict_ctr(features))


def test_cli_bad_options_are_config_errors(
    small_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privrank.errors import ConfigError

    home = tmp_path / "home"
    for extra, needle in (
        (("--sums-crosses", "user_segment+ad_category"), "--sums-crosses"),
        (("--sums-crosses", "user_segment*device"), "not among the fields"),
        (("--sums-l2", "-1"), "--sums-l2"),
        (("--sums-fields", "user_segment,nope"), "nope"),
    ):
        bad = _train(monkeypatch, home, small_log, tmp_path / "b", "--epsilon", "inf", *extra)
        assert isinstance(bad.exception, ConfigError), (extra, bad.output)
        assert needle in str(bad.exception), (needle, str(bad.exception))
        assert not (tmp_path / "b").exists()


def test_zero_noise_equals_the_non_private_fit_and_charges_the_ledger_once(
    small_log: Path, tmp_path: Path
) -> None:
    from privrank.privacy.ledger import Ledger
    from privrank.workflow.label_sums_training import train_label_sums_model

    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as book:
        book.set_budget("ads", 10.0, 1e-6)
    config = LabelSumsConfig(min_count=20, l2=2.0)
    common = {"config": config, "fields": FIELDS, "max_rows_per_user": 3, "ledger_url": url}
    private = train_label_sums_model(
        small_log, tmp_path / "p", epsilon=2.0, budget_key="ads",
        noise_rng=_ZeroNoise(),  # type: ignore[arg-type]
        **common,
    )  # fmt: skip
    # The private fit adds the noise ridge (a function of the public Laplace scale and of the
    # sums); the non-private fit at that same λ is the reference.
    assert private.model.l2_ is not None and private.model.l2_ > 2.0
    same_penalty = {**common, "config": config.model_copy(update={"l2": private.model.l2_})}
    plain = train_label_sums_model(small_log, tmp_path / "n", epsilon=float("inf"), **same_penalty)
    assert private.spend is not None and plain.spend is None
    assert private.user_epsilon == 6.0 and plain.user_epsilon is None
    features, _ = _capped_rows(small_log, 3)
    np.testing.assert_allclose(
        private.model.predict_ctr(features), plain.model.predict_ctr(features), rtol=1e-7
    )
    with Ledger(url) as book:
        spends = book.spends("ads", status="committed")
    assert [(s.epsilon, s.delta) for s in spends] == [(6.0, 0.0)]

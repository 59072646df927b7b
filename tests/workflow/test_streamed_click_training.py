"""Streamed click-model fits: LightGBM from parts equals LightGBM in memory; FM trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privrank.data.ad_log_stream import plan_ad_log_stream
from privrank.data.synthetic_ads import FEATURE_COLUMNS, AdLogConfig, read_ad_log, write_ad_log
from privrank.errors import ConfigError
from privrank.ranking.ctr import load_ranker
from privrank.ranking.ctr_click import CTRClickScorer
from privrank.ranking.gbdt_click import GBDTClickConfig, GBDTClickModel
from privrank.workflow.label_dp_training import CATEGORICAL_COLUMNS
from privrank.workflow.streamed_click_training import train_click_model_streamed


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = AdLogConfig(
        n_impressions=24_000,
        n_users=1_000,
        n_ads=120,
        n_campaigns=10,
        n_advertisers=4,
        n_contexts=30,
        chunk_rows=5_000,
        seed=5,
    )
    return write_ad_log(config, tmp_path_factory.mktemp("streamed") / "log")


def test_lightgbm_from_parts_equals_lightgbm_on_the_whole_matrix(log: Path) -> None:
    stream = plan_ad_log_stream(log, max_rows_per_user=15, validation_rows=4_000)
    config = GBDTClickConfig(n_estimators=15, num_leaves=7, min_data_in_leaf=50, threads=1)
    streamed = GBDTClickModel(FEATURE_COLUMNS, CATEGORICAL_COLUMNS, config)
    streamed.fit_chunks(stream.chunks)
    # the oracle: the concatenated rows in memory, through LightGBM's matrix path
    rows = {
        name: np.concatenate([c.load([name])[name] for c in stream.chunks])
        for name in FEATURE_COLUMNS
    }
    labels = np.concatenate([c.labels for c in stream.chunks])
    whole = GBDTClickModel(FEATURE_COLUMNS, CATEGORICAL_COLUMNS, config).fit(rows, labels)
    np.testing.assert_allclose(
        streamed.predict_ctr(stream.validation), whole.predict_ctr(stream.validation), atol=1e-9
    )


def test_streamed_fm_trains_reports_epochs_and_is_served(log: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    result = train_click_model_streamed(
        log,
        tmp_path / "fm",
        model="fm",
        validation_rows=4_000,
        params={"epochs": 2, "patience": 2, "batch_size": 512, "embedding_dim": 4},
        threads=1,
        progress=lambda p: seen.append(p.epoch),
    )
    assert seen == [1, 2] and result.epochs == 2
    assert result.train_rows == 20_000 and result.validation_rows == 4_000
    assert 0.55 < result.validation_auc < 1.0  # the log's clicks are learnable
    assert result.peak_rss_mib > 0
    ranker = load_ranker(tmp_path / "fm")
    tail = read_ad_log(log, FEATURE_COLUMNS).slice(20_000)
    columns = {name: tail.column(name).to_numpy() for name in FEATURE_COLUMNS}
    stream = plan_ad_log_stream(log, validation_rows=4_000, hash_buckets=8)
    served = CTRClickScorer(ranker).predict_ctr(columns)
    np.testing.assert_allclose(served, ranker.predict_proba(stream.validation_table()))


def test_streamed_fits_refuse_the_wrong_settings(log: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected lightgbm"):
        train_click_model_streamed(log, tmp_path / "x", model="svm")
    with pytest.raises(ConfigError, match="GBDT config"):
        train_click_model_streamed(log, tmp_path / "x", model="fm", gbdt=GBDTClickConfig())


def test_streamed_label_dp_randomises_every_label_once_and_spends(
    log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agreement of noisy with true labels is e^ε/(e^ε+1); the ledger is charged C·ε once; the
    model inverts the response; the refusals."""
    from privrank.privacy.ledger import Ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as book:
        book.set_budget("ads", 10.0, 1e-6)
    gbdt = GBDTClickConfig(n_estimators=10, num_leaves=7, min_data_in_leaf=50, threads=1)
    result = train_click_model_streamed(
        log, tmp_path / "private", model="lightgbm", max_rows_per_user=6, validation_rows=4_000,
        gbdt=gbdt, epsilon=1.0, budget_key="ads", ledger_url=url,
        noise_rng=np.random.default_rng(3),
    )  # fmt: skip
    q = np.e / (np.e + 1)
    sd = (q * (1 - q) / result.train_rows) ** 0.5
    assert abs(result.label_agreement - q) < 4 * sd
    assert result.label_dp is not None and result.label_dp.user_epsilon == 6.0
    assert GBDTClickModel.load(tmp_path / "private").label_keep == pytest.approx(q)
    meta = GBDTClickModel.metadata(tmp_path / "private")
    assert meta["spend"]["epsilon"] == 6.0 and meta["label_dp"]["epsilon"] == 1.0
    with Ledger(url) as book:
        assert book.budget("ads").epsilon_spent == pytest.approx(6.0)  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="lightgbm only"):
        train_click_model_streamed(
            log, tmp_path / "fm", model="fm", max_rows_per_user=6, epsilon=1.0, budget_key="ads",
            ledger_url=url,
        )  # fmt: skip
    with pytest.raises(ConfigError, match="max_rows_per_user"):
        train_click_model_streamed(
            log, tmp_path / "x", model="lightgbm", epsilon=1.0, budget_key="ads", ledger_url=url
        )
    with pytest.raises(ConfigError, match="budget key"):
        train_click_model_streamed(
            log, tmp_path / "y", model="lightgbm", max_rows_per_user=6, epsilon=1.0
        )

"""The synthetic ad log: clicks follow the known probabilities; the log is seeded."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats

from privrank.data.synthetic_ads import (
    AdLogConfig,
    generate_chunk,
    load_config,
    make_world,
    read_ad_log,
    write_ad_log,
)
from privrank.errors import ConfigError, DataError


def _config(**overrides: object) -> AdLogConfig:
    fields: dict[str, object] = {
        "n_impressions": 200_000,
        "n_users": 5_000,
        "n_ads": 300,
        "n_campaigns": 40,
        "n_advertisers": 10,
        "n_contexts": 50,
        "chunk_rows": 50_000,
        "seed": 3,
    }
    fields.update(overrides)
    return AdLogConfig.model_validate(fields)


def test_empirical_ctr_per_bucket_matches_the_true_probability(tmp_path):
    log = read_ad_log(write_ad_log(_config(), tmp_path / "log"))
    p = log.column("p_click").to_numpy()
    click = log.column("click").to_numpy()
    edges = np.quantile(p, np.linspace(0, 1, 21))
    bucket = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 19)
    # Per bucket: clicks ~ sum of independent Bernoulli(p_i): mean sum p, variance sum p(1-p).
    z = []
    for b in range(20):
        rows = bucket == b
        expected = p[rows].sum()
        z.append((click[rows].sum() - expected) / np.sqrt((p[rows] * (1 - p[rows])).sum()))
    # Twenty independent z-scores: their sum of squares is chi-square(20).
    statistic = float(np.sum(np.square(z)))
    assert stats.chi2.sf(statistic, df=20) > 1e-3, z
    # The buckets span a real range of click probabilities (the signal exists).
    assert p.max() / p.min() > 20


def test_position_bias_lowers_the_click_rate_of_lower_slots(tmp_path):
    log = read_ad_log(write_ad_log(_config(), tmp_path / "log"))
    pos = log.column("position").to_numpy()
    click = log.column("click").to_numpy()
    rates = [click[pos == k].mean() for k in range(5)]
    assert all(a > b for a, b in itertools.pairwise(rates))


def test_conversions_only_follow_clicks_and_carry_type_and_value(tmp_path):
    log = read_ad_log(write_ad_log(_config(), tmp_path / "log"))
    click = log.column("click").to_numpy()
    conv = log.column("conversion").to_numpy()
    kind = log.column("conversion_type").to_numpy()
    value = log.column("conversion_value").to_numpy()
    assert conv.sum() > 0
    assert np.all(click[conv == 1] == 1)
    assert np.all(kind[conv == 0] == -1) and np.all(value[conv == 0] == 0)
    assert np.all((kind[conv == 1] >= 0) & (kind[conv == 1] < 4)) and np.all(value[conv == 1] > 0)
    # The conversion rate of clicks is the campaigns' (mean 0.12 by default).
    assert 0.08 < conv.sum() / click.sum() < 0.16


def test_the_log_is_determined_by_the_seed(tmp_path):
    a = read_ad_log(write_ad_log(_config(), tmp_path / "a"))
    b = read_ad_log(write_ad_log(_config(), tmp_path / "b"))
    c = read_ad_log(write_ad_log(_config(seed=4), tmp_path / "c"))
    assert a.equals(b)
    assert not a.column("click").equals(c.column("click"))
    # A chunk can be regenerated alone: the same rows as in the file.
    world = make_world(_config())
    assert generate_chunk(world, 2).equals(pq.read_table(tmp_path / "a" / "part-00002.parquet"))
    assert load_config(tmp_path / "a") == _config()


def test_chunked_parts_and_entities(tmp_path):
    out = write_ad_log(_config(n_impressions=120_001), tmp_path / "log")
    assert len(list(out.glob("part-*.parquet"))) == 3
    assert read_ad_log(out).num_rows == 120_001
    assert read_ad_log(out, ["click"], max_rows=70_000).num_rows == 70_000
    log = read_ad_log(out, ["impression_id", "ad_id", "campaign_id", "advertiser_id"])
    entities = pq.read_table(out / "entities.parquet").to_pandas().set_index("ad_id")
    ads = log.column("ad_id").to_numpy()
    assert np.array_equal(
        entities.loc[ads, "campaign_id"].to_numpy(), log.column("campaign_id").to_numpy()
    )
    assert np.array_equal(log.column("impression_id").to_numpy(), np.arange(120_001))


def test_bad_config_and_bad_directory(tmp_path):
    from privrank.data.synthetic_ads import ad_log_config

    with pytest.raises(ConfigError, match="n_impressions"):
        ad_log_config(n_impressions=0)
    with pytest.raises(DataError, match="not a synthetic ad log"):
        read_ad_log(tmp_path)

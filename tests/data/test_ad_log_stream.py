"""The streamed ad log: the same window, bound, vocabulary and codes as the in-memory path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privrank.data.ad_log_frames import ad_log_frame
from privrank.data.ad_log_stream import IntCodeEncoder, plan_ad_log_stream
from privrank.data.features import FeatureEncoder
from privrank.data.synthetic_ads import FEATURE_COLUMNS, AdLogConfig, read_ad_log, write_ad_log
from privrank.errors import ConfigError
from privrank.privacy._contribution import first_rows_per_user


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = AdLogConfig(
        n_impressions=30_000,
        n_users=1_500,
        n_ads=150,
        n_campaigns=10,
        n_advertisers=4,
        n_contexts=30,
        chunk_rows=7_000,  # parts that do not align with the window or the validation cut
        seed=3,
    )
    return write_ad_log(config, tmp_path_factory.mktemp("stream") / "log")


def test_the_plan_matches_the_in_memory_window_bound_and_split(log: Path) -> None:
    stream = plan_ad_log_stream(log, max_rows=25_000, max_rows_per_user=6, validation_rows=4_000)
    table = read_ad_log(log, [*FEATURE_COLUMNS, "user_id", "click"], max_rows=25_000)
    keep = first_rows_per_user(table.column("user_id").to_numpy(), 6)  # the oracle bound
    train = np.zeros(25_000, dtype=bool)
    train[:21_000] = True
    clicks = table.column("click").to_numpy()
    np.testing.assert_array_equal(
        np.concatenate([c.labels for c in stream.chunks]), clicks[keep & train]
    )
    np.testing.assert_array_equal(stream.validation["label"], clicks[keep & ~train])
    assert stream.dropped == int((~keep).sum())
    assert stream.train_rows == int((keep & train).sum())
    loaded = {
        name: np.concatenate([c.load([name])[name] for c in stream.chunks])
        for name in FEATURE_COLUMNS
    }
    for name in FEATURE_COLUMNS:
        np.testing.assert_array_equal(loaded[name], table.column(name).to_numpy()[keep & train])


def test_the_vocabulary_and_codes_equal_the_string_encoders(log: Path) -> None:
    stream = plan_ad_log_stream(log, max_rows=20_000, validation_rows=5_000, hash_buckets=5)
    frame, _ = ad_log_frame(log, rows=15_000, with_user=False)
    expected = FeatureEncoder(hash_buckets=5).fit(frame)
    assert stream.vocabulary == expected
    # later rows hold values never seen in training: they hash the same way
    later, _ = ad_log_frame(log, start=15_000, with_user=False)
    columns = read_ad_log(log, FEATURE_COLUMNS).slice(15_000)
    codes = IntCodeEncoder(expected).encode(
        {name: columns.column(name).to_numpy() for name in FEATURE_COLUMNS}
    )
    np.testing.assert_array_equal(codes, expected.transform(later).codes)


def test_batches_cover_every_training_row_once_per_epoch(log: Path) -> None:
    stream = plan_ad_log_stream(log, validation_rows=3_000)
    table = stream.train_table()
    rows = [b for b in table.batches(999, np.random.default_rng(0))]
    codes = np.concatenate([b[0] for b in rows])
    labels = np.concatenate([b[2] for b in rows])
    assert len(codes) == len(table) == 27_000
    in_order = np.concatenate([b[0] for b in table.batches(4096)])
    # a permutation of the same rows
    key = lambda c: np.lexsort(c.T[::-1])  # noqa: E731
    np.testing.assert_array_equal(codes[key(codes)], in_order[key(in_order)])
    assert labels.sum() == sum(int(c.labels.sum()) for c in stream.chunks)


def test_bad_sizes_are_refused(log: Path) -> None:
    with pytest.raises(ConfigError, match="validation_rows"):
        plan_ad_log_stream(log, max_rows=100, validation_rows=100)
    with pytest.raises(ConfigError, match="max_rows_per_user"):
        plan_ad_log_stream(log, max_rows_per_user=0)

"""The synthetic generator: exact sizes, the properties of its model, determinism, CSV output."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import scipy.sparse.linalg as sla
from pydantic import ValidationError
from scipy.cluster.vq import kmeans2

import privrank.data.synthetic as synthetic
from privrank.data.interactions import Interactions
from privrank.data.synthetic import (
    RATINGS_CSV_HEADER,
    SyntheticConfig,
    generate,
    ground_truth,
    iter_blocks,
    write_ratings_csv,
)
from privrank.errors import ConfigError


def _rank_slope(counts: np.ndarray, lo: int, hi: int) -> float:
    """Least-squares exponent of count ~ rank^-a over popularity ranks lo+1..hi."""
    ranked = np.sort(counts)[::-1][lo:hi].astype(float)
    ranks = np.arange(lo + 1, hi + 1)
    return float(-np.polyfit(np.log(ranks), np.log(ranked), 1)[0])


def _same_user_gaps(data: Interactions) -> np.ndarray:
    """Time between consecutive rows of the same user (rows are in user, time order)."""
    users, times = data.users(), data.timestamps()
    same = users[1:] == users[:-1]
    return np.diff(times)[same]


def _assert_same(a: Interactions, b: Interactions) -> None:
    assert a.table.equals(b.table)
    assert a.n_users == b.n_users
    assert a.n_items == b.n_items


# ------------------------------------------------------------------------- sizes and vocabulary
def test_exact_sizes_and_columns() -> None:
    config = SyntheticConfig(n_users=300, n_items=500, n_interactions=12_345, seed=4)
    data = generate(config)
    assert len(data) == 12_345
    assert data.n_users == 300
    assert data.n_items == 500
    assert data.table.column_names == ["user", "item", "timestamp", "value"]
    assert data.user_counts().min() >= config.min_user_interactions
    np.testing.assert_array_equal(data.user_counts(), ground_truth(config).user_counts)


def test_vocabulary_keeps_items_and_users_without_rows() -> None:
    config = SyntheticConfig(
        n_users=50,
        n_items=5_000,
        n_interactions=400,
        min_user_interactions=0,
        activity_sigma=2.5,
        popularity_exponent=1.2,
    )
    data = generate(config)
    assert data.n_items == 5_000
    assert data.n_users == 50
    assert data.n_active_items() < 5_000
    assert data.n_active_users() < 50
    assert len(data.compact().item_ids) == data.n_active_items()


def test_zero_interactions() -> None:
    data = generate(
        SyntheticConfig(
            n_users=3, n_items=4, n_interactions=0, n_clusters=2, min_user_interactions=0
        )
    )
    assert len(data) == 0
    assert (data.n_users, data.n_items) == (3, 4)


def test_caps_are_respected_and_total_is_exact() -> None:
    config = SyntheticConfig(
        n_users=200, n_items=300, n_interactions=20_000, max_user_interactions=150, seed=2
    )
    counts = generate(config).user_counts()
    assert counts.max() <= 150
    assert counts.sum() == 20_000


# ------------------------------------------------------------------------- determinism
def test_same_seed_same_data_other_seed_other_data() -> None:
    config = SyntheticConfig(n_users=200, n_items=300, n_interactions=8_000, seed=11)
    _assert_same(generate(config), generate(config))
    other = generate(config.model_copy(update={"seed": 12}))
    assert not np.array_equal(other.items(), generate(config).items())


def test_blocks_concatenate_to_generate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "BLOCK_ROWS", 700)
    config = SyntheticConfig(n_users=400, n_items=250, n_interactions=9_000, seed=5)
    blocks = list(iter_blocks(config))
    assert len(blocks) > 5
    assert [b.start for b in blocks[1:]] == [b.stop for b in blocks[:-1]]
    data = generate(config)
    np.testing.assert_array_equal(np.concatenate([b.users for b in blocks]), data.users())
    np.testing.assert_array_equal(np.concatenate([b.items for b in blocks]), data.items())
    np.testing.assert_array_equal(np.concatenate([b.timestamps for b in blocks]), data.timestamps())
    np.testing.assert_array_equal(np.concatenate([b.values for b in blocks]), data.values())


def test_progress_reports_every_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "BLOCK_ROWS", 1_000)
    calls: list[tuple[int, int]] = []
    generate(
        SyntheticConfig(n_users=300, n_interactions=6_000),
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[0] == (0, 6_000)
    assert calls[-1] == (6_000, 6_000)
    assert len(calls) > 3
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


# ------------------------------------------------------------------------- item popularity
@pytest.mark.parametrize("exponent", [0.7, 1.0, 1.5])
def test_item_popularity_is_a_power_law_with_the_configured_exponent(exponent: float) -> None:
    config = SyntheticConfig(
        n_users=4_000,
        n_items=2_000,
        n_interactions=200_000,
        popularity_exponent=exponent,
        unique_pairs=False,
        seed=1,
    )
    counts = generate(config).item_counts()
    assert _rank_slope(counts, 0, 50) == pytest.approx(exponent, abs=0.05)
    assert _rank_slope(counts, 50, 500) == pytest.approx(exponent, abs=0.05)


def test_item_distribution_given_the_users_is_the_cluster_mixture() -> None:
    config = SyntheticConfig(
        n_users=3_000, n_items=500, n_interactions=150_000, unique_pairs=False, seed=9
    )
    data = generate(config)
    truth = ground_truth(config)
    rho, w = config.cluster_affinity, truth.item_popularity
    # E[count_i | users] = sum_u n_u (rho w_i [i in z_u] / P(z_u) + (1 - rho) w_i)
    rows_per_cluster = np.bincount(
        truth.user_cluster, weights=truth.user_counts, minlength=config.n_clusters
    )
    in_cluster = rows_per_cluster[truth.item_cluster] / truth.cluster_mass[truth.item_cluster]
    expected = (rho * in_cluster * w + (1 - rho) * len(data) * w) / len(data)
    observed = data.item_counts() / len(data)
    assert 0.5 * np.abs(observed - expected).sum() < 0.025  # total variation distance
    # Averaged over cluster assignments the mixture is exactly the popularity law w.
    np.testing.assert_allclose(
        np.bincount(truth.item_cluster, weights=w), truth.cluster_mass, rtol=1e-12
    )


def test_power_law_survives_unique_pairs_when_histories_are_short() -> None:
    config = SyntheticConfig(
        n_users=40_000,
        n_items=2_000,
        n_interactions=200_000,
        popularity_exponent=1.0,
        activity_sigma=0.3,
        seed=1,
    )
    counts = generate(config).item_counts()
    assert _rank_slope(counts, 20, 500) == pytest.approx(1.0, abs=0.08)


# ------------------------------------------------------------------------- clusters
def test_cluster_affinity_matches_the_model() -> None:
    config = SyntheticConfig(
        n_users=3_000,
        n_items=400,
        n_interactions=120_000,
        n_clusters=5,
        cluster_affinity=0.9,
        unique_pairs=False,
        seed=3,
    )
    data = generate(config)
    truth = ground_truth(config)
    in_cluster = truth.item_cluster[data.items()] == truth.user_cluster[data.users()]
    # P(in cluster) = rho + (1 - rho) P(z_u)
    expected = (
        config.cluster_affinity
        + (1 - config.cluster_affinity) * truth.cluster_mass[truth.user_cluster[data.users()]]
    )
    assert in_cluster.mean() == pytest.approx(expected.mean(), abs=0.01)
    # Every cluster gets items of every popularity stratum.
    assert np.bincount(truth.item_cluster).tolist() == [80] * 5


def test_clusters_are_visible_in_co_occurrence_and_recoverable_blind() -> None:
    config = SyntheticConfig(
        n_users=3_000,
        n_items=400,
        n_interactions=120_000,
        n_clusters=5,
        cluster_affinity=0.9,
        popularity_exponent=0.8,
        seed=3,
    )
    data = generate(config)
    truth = ground_truth(config)
    matrix = data.to_csr()
    popularity = np.asarray(matrix.sum(axis=0)).ravel()
    co = (matrix.T @ matrix).toarray()
    lift = co / np.outer(popularity, popularity) * data.n_users
    same = truth.item_cluster[:, None] == truth.item_cluster[None, :]
    off_diagonal = ~np.eye(config.n_items, dtype=bool)
    assert lift[same & off_diagonal].mean() > 2 * lift[~same].mean()

    # Spectral clustering of items, without the labels, recovers the clusters.
    degree = np.asarray(matrix.sum(axis=1)).ravel()
    normalised = (
        matrix.multiply(1 / np.sqrt(np.maximum(degree, 1))[:, None])
        .multiply(1 / np.sqrt(popularity)[None, :])
        .tocsr()
    )
    _, _, vt = sla.svds(normalised, k=config.n_clusters, random_state=0)
    embedding = vt.T / np.linalg.norm(vt.T, axis=1, keepdims=True)
    _, labels = kmeans2(embedding, config.n_clusters, seed=0, minit="++")
    purity = (
        sum(Counter(truth.item_cluster[labels == c]).most_common(1)[0][1] for c in set(labels))
        / config.n_items
    )
    assert purity > 0.9


# ------------------------------------------------------------------------- users and sessions
def test_user_activity_is_log_normal() -> None:
    config = SyntheticConfig(
        n_users=2_000,
        n_items=5_000,
        n_interactions=400_000,
        activity_sigma=1.2,
        min_user_interactions=0,
        seed=2,
    )
    counts = generate(config).user_counts()
    active = counts[counts > 0]
    assert np.std(np.log(active)) == pytest.approx(1.2, abs=0.08)
    # Heavy tail: median / mean is e^{-sigma^2 / 2} and the largest user is far above the mean.
    assert np.median(counts) / counts.mean() == pytest.approx(np.exp(-0.72), abs=0.06)
    assert counts.max() > 10 * counts.mean()


def test_no_spread_means_nearly_equal_users() -> None:
    config = SyntheticConfig(
        n_users=1_000, n_items=2_000, n_interactions=100_000, activity_sigma=0.0
    )
    counts = generate(config).user_counts()
    assert counts.std() == pytest.approx(np.sqrt(100), rel=0.15)  # multinomial noise only


def test_timestamps_sorted_within_users_sessions_and_range() -> None:
    config = SyntheticConfig(
        n_users=1_000,
        n_items=2_000,
        n_interactions=60_000,
        mean_session_length=4.0,
        within_session_gap=60.0,
        between_session_gap=86_400.0,
        start_time=datetime(2015, 1, 1, tzinfo=UTC),
        end_time=datetime(2025, 1, 1, tzinfo=UTC),
        seed=6,
    )
    data = generate(config)
    times = data.timestamps()
    assert times.min() >= config.start_seconds
    assert times.max() <= config.end_seconds
    gaps = _same_user_gaps(data)
    assert gaps.min() >= 0  # non-decreasing within each user
    # A new session starts with probability 1/L; its gap (Exp, mean 1 day) exceeds an hour with
    # probability e^{-1/24}, a within-session gap (Exp, mean 60 s) practically never.
    long = gaps > 3_600
    assert long.mean() == pytest.approx(0.25 * np.exp(-1 / 24), abs=0.01)
    assert np.median(gaps[~long]) == pytest.approx(60 * np.log(2), rel=0.1)
    assert np.median(gaps[long]) == pytest.approx(86_400 * np.log(2), rel=0.1)


def test_long_histories_are_compressed_into_the_time_range() -> None:
    config = SyntheticConfig(
        n_users=10,
        n_items=3_000,
        n_interactions=20_000,
        start_time=datetime(2020, 1, 1),
        end_time=datetime(2020, 1, 31),
        between_session_gap=7 * 86_400.0,
    )
    data = generate(config)
    assert data.timestamps().min() >= config.start_seconds
    assert data.timestamps().max() <= config.end_seconds
    assert _same_user_gaps(data).min() >= 0


# ------------------------------------------------------------------------- pairs and values
def test_unique_pairs_has_no_repeats_and_repeats_happen_otherwise() -> None:
    base = SyntheticConfig(n_users=300, n_items=200, n_interactions=30_000, seed=8)
    for unique in (True, False):
        data = generate(base.model_copy(update={"unique_pairs": unique}))
        keys = data.users().astype(np.int64) * data.n_items + data.items()
        repeats = len(keys) - len(np.unique(keys))
        assert (repeats == 0) is unique


def test_users_needing_more_than_their_cluster_are_filled_exactly() -> None:
    # Each user needs 45 of 50 items but affinity 1 keeps draws in a cluster of 10.
    config = SyntheticConfig(
        n_users=40,
        n_items=50,
        n_interactions=40 * 45,
        n_clusters=5,
        cluster_affinity=1.0,
        min_user_interactions=45,
        seed=3,
    )
    data = generate(config)
    truth = ground_truth(config)
    indptr, items = data.sequences()
    for user in range(config.n_users):
        history = items[indptr[user] : indptr[user + 1]]
        assert len(history) == 45
        assert len(set(history.tolist())) == 45
        in_cluster = truth.item_cluster[history] == truth.user_cluster[user]
        assert in_cluster.sum() == 10  # the whole cluster, then the rest


def test_ratings_follow_the_level_probabilities() -> None:
    config = SyntheticConfig(
        n_users=2_000, n_items=1_000, n_interactions=100_000, unique_pairs=False, seed=5
    )
    data = generate(config)
    truth = ground_truth(config)
    values = data.values()
    in_cluster = truth.item_cluster[data.items()] == truth.user_cluster[data.users()]
    levels = np.array(config.rating_levels, dtype=np.float32)
    for mask, probs in (
        (in_cluster, config.rating_probs_in_cluster),
        (~in_cluster, config.rating_probs_off_cluster),
    ):
        observed = np.array([(values[mask] == v).mean() for v in levels])
        np.testing.assert_allclose(observed, probs, atol=0.015)
    assert values[in_cluster].mean() > values[~in_cluster].mean() + 0.5


def test_optional_columns() -> None:
    config = SyntheticConfig(
        n_users=20, n_items=30, n_interactions=300, timestamps=False, rating_levels=None
    )
    data = generate(config)
    assert data.table.column_names == ["user", "item"]


def test_metadata_records_the_configuration(tmp_path) -> None:
    config = SyntheticConfig(n_users=30, n_items=40, n_interactions=600, seed=7)
    data = generate(config)
    step = data.metadata.curation[0]
    assert step.name == "synthetic"
    assert step.rows_after == 600
    assert SyntheticConfig.model_validate(step.params) == config
    loaded = Interactions.load(data.save(tmp_path / "ds"))
    assert SyntheticConfig.model_validate(loaded.metadata.curation[0].params) == config
    _assert_same(loaded, data)
    json.dumps(step.params)


# ------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"n_clusters": 20, "n_items": 10}, "n_clusters must be <= n_items"),
        ({"n_users": 100, "n_interactions": 50}, "n_interactions must be >= n_users"),
        ({"n_items": 5, "n_clusters": 2, "n_interactions": 100_000}, "per-user cap"),
        ({"max_user_interactions": 2, "min_user_interactions": 3}, "per-user cap (2)"),
        ({"end_time": datetime(2000, 1, 1)}, "end_time must be after start_time"),
        ({"rating_probs_in_cluster": (0.5, 0.5, 0.5, 0.0, 0.0)}, "sum to 1"),
        ({"rating_levels": (1.0, 2.0)}, "must have 2 entries"),
        ({"rating_levels": (1.0, float("nan"))}, "finite"),
        ({"cluster_affinity": 1.5}, "less than or equal to 1"),
        ({"n_user": 5}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_configurations_are_refused(update: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SyntheticConfig(**update)


def test_config_is_frozen() -> None:
    config = SyntheticConfig()
    with pytest.raises(ValidationError):
        config.seed = 3


# ------------------------------------------------------------------------- ratings.csv
def test_ratings_csv_layout_and_round_trip(tmp_path) -> None:
    config = SyntheticConfig(
        n_users=120,
        n_items=80,
        n_interactions=3_000,
        rating_levels=(0.5, 3.5, 4.0),
        rating_probs_in_cluster=(0.2, 0.3, 0.5),
        rating_probs_off_cluster=(0.5, 0.3, 0.2),
    )
    path = tmp_path / "ratings.csv"
    assert write_ratings_csv(config, path) == 3_000
    lines = path.read_text().splitlines()
    assert lines[0] == RATINGS_CSV_HEADER
    assert len(lines) == 3_001
    assert {line.split(",")[2] for line in lines[1:]} == {"0.5", "3.5", "4.0"}
    table = pacsv.read_csv(path)
    data = generate(config)
    np.testing.assert_array_equal(table["userId"].to_numpy(), data.users() + 1)
    np.testing.assert_array_equal(table["movieId"].to_numpy(), data.items() + 1)
    np.testing.assert_array_equal(table["rating"].to_numpy(), data.values())
    np.testing.assert_array_equal(table["timestamp"].to_numpy(), data.timestamps())


def test_ratings_csv_from_config_equals_from_interactions(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synthetic, "BLOCK_ROWS", 500)
    monkeypatch.setattr(synthetic, "_CSV_CHUNK_ROWS", 700)
    config = SyntheticConfig(n_users=200, n_items=100, n_interactions=4_000, seed=3)
    write_ratings_csv(config, tmp_path / "a.csv")
    write_ratings_csv(generate(config), tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_ratings_csv_needs_times_and_values(tmp_path) -> None:
    path = tmp_path / "r.csv"
    no_values = SyntheticConfig(
        n_users=5, n_items=5, n_interactions=20, n_clusters=1, rating_levels=None
    )
    with pytest.raises(ConfigError, match="timestamps and ratings"):
        write_ratings_csv(no_values, path)
    with pytest.raises(ConfigError, match="timestamps and values"):
        write_ratings_csv(generate(no_values), path)
    assert not path.exists()


def test_ratings_csv_is_atomic(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "BLOCK_ROWS", 200)
    path = tmp_path / "ratings.csv"
    path.write_text("old\n")
    calls = 0
    real = pacsv.write_csv

    def failing(table: pa.Table, sink, **kwargs) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError("disk full")
        real(table, sink, **kwargs)

    monkeypatch.setattr(synthetic.pacsv, "write_csv", failing)
    with pytest.raises(OSError, match="disk full"):
        write_ratings_csv(SyntheticConfig(n_users=100, n_interactions=2_000), path)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["ratings.csv"]

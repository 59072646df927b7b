"""Dataset statistics: known answers, a slow Gini reference, rendering."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console

from privrank.data.interactions import DatasetMetadata, Interactions
from privrank.data.stats import dataset_stats, gini, stats_table
from privrank.data.synthetic import SyntheticConfig, generate


def _slow_gini(counts: np.ndarray) -> float:
    """Mean absolute difference over twice the mean: sum_i sum_j |x_i - x_j| / (2 n^2 mean)."""
    x = [float(c) for c in counts]
    n = len(x)
    total = sum(abs(a - b) for a in x for b in x)
    return total / (2 * n * n * (sum(x) / n))


def _render(table) -> str:
    console = Console(record=True, width=140)
    console.print(table)
    return console.export_text()


# ------------------------------------------------------------------------- Gini
def test_gini_by_hand() -> None:
    # sorted 1,2,3,4: sum (2i - n - 1) x_i = -3 - 2 + 3 + 12 = 10; n sum x = 40.
    assert gini(np.array([3, 1, 4, 2])) == pytest.approx(0.25)
    assert gini(np.array([5, 5, 5])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 9])) == pytest.approx(1 - 1 / 4)
    assert gini(np.array([7])) == pytest.approx(0.0)


@pytest.mark.parametrize("seed", range(5))
def test_gini_equals_the_slow_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = rng.zipf(1.8, size=rng.integers(2, 120))
    assert gini(counts) == pytest.approx(_slow_gini(counts), rel=1e-12)


def test_gini_refuses_empty_negative_or_zero() -> None:
    for bad in (np.array([]), np.array([1, -1]), np.zeros(3)):
        with pytest.raises(ValueError, match="non-negative"):
            gini(bad)


# ------------------------------------------------------------------------- known answers
@pytest.fixture
def small() -> Interactions:
    # 4 users in the vocabulary (user 3 has no rows), 5 items (item 4 has none); one repeat.
    users = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    items = np.array([0, 1, 2, 0, 0, 0, 1, 2, 3])
    times = np.array([100, 200, 300, 50, 60, 400, 500, 600, 86_400 * 10 + 50])
    values = np.array([5, 4, 3, 5, 5, 1, 2, 3, 4.5])
    return Interactions.from_codes(
        users,
        items,
        n_users=4,
        n_items=5,
        timestamps=times,
        values=values,
        metadata=DatasetMetadata(name="small"),
    )


def test_counts_density_and_quantiles(small: Interactions) -> None:
    stats = dataset_stats(small)
    assert stats.name == "small"
    assert (stats.users, stats.items, stats.interactions) == (3, 4, 9)
    assert (stats.user_vocabulary, stats.item_vocabulary) == (4, 5)
    assert stats.distinct_pairs == 8
    assert stats.density == pytest.approx(8 / (3 * 4))
    item_counts = np.array([4, 2, 2, 1])
    assert stats.gini_items == pytest.approx(_slow_gini(item_counts))
    user_counts = np.array([3, 2, 4])
    assert stats.user_lengths.min == 2
    assert stats.user_lengths.max == 4
    assert stats.user_lengths.p50 == 3
    assert stats.user_lengths.p25 == pytest.approx(np.quantile(user_counts, 0.25))
    assert stats.user_lengths.p99 == pytest.approx(np.quantile(user_counts, 0.99))
    assert stats.item_lengths.p75 == pytest.approx(np.quantile(item_counts, 0.75))


def test_values_and_time(small: Interactions) -> None:
    stats = dataset_stats(small)
    assert stats.value_histogram == (("1", 1), ("2", 1), ("3", 2), ("4", 1), ("4.5", 1), ("5", 3))
    assert stats.value_mean == pytest.approx(np.mean([5, 4, 3, 5, 5, 1, 2, 3, 4.5]))
    assert (stats.time_first, stats.time_last) == (50, 86_400 * 10 + 50)
    assert stats.time_span_days == pytest.approx(10.0)


def test_continuous_values_are_binned() -> None:
    rng = np.random.default_rng(0)
    data = Interactions.from_codes(
        rng.integers(0, 50, 1_000), rng.integers(0, 40, 1_000), values=rng.random(1_000)
    )
    stats = dataset_stats(data)
    assert len(stats.value_histogram) == 10
    assert sum(count for _, count in stats.value_histogram) == 1_000
    assert stats.value_histogram[0][0].startswith("[")
    assert stats.time_first is None


def test_without_values_or_timestamps() -> None:
    stats = dataset_stats(Interactions.from_codes(np.array([0, 1]), np.array([1, 1])))
    assert stats.value_histogram is None
    assert stats.value_mean is None
    assert stats.time_span_days is None
    assert stats.gini_items == pytest.approx(0.0)


def test_empty() -> None:
    empty = Interactions.from_codes(np.array([], int), np.array([], int), n_users=3, n_items=2)
    stats = dataset_stats(empty)
    assert (stats.users, stats.items, stats.interactions) == (0, 0, 0)
    assert stats.density is None
    assert stats.gini_items is None
    assert stats.user_lengths is None
    assert "—" in _render(stats_table(stats))


def test_synthetic_agrees_with_independent_counts() -> None:
    config = SyntheticConfig(n_users=500, n_items=400, n_interactions=20_000, seed=1)
    data = generate(config)
    stats = dataset_stats(data)
    per_user = np.bincount(data.users())
    assert stats.user_lengths.max == per_user.max()
    assert stats.user_lengths.p90 == pytest.approx(np.quantile(per_user[per_user > 0], 0.9))
    assert stats.distinct_pairs == 20_000  # unique_pairs
    assert sum(count for _, count in stats.value_histogram) == 20_000


# ------------------------------------------------------------------------- output
def test_to_dict_is_json(small: Interactions) -> None:
    out = dataset_stats(small).to_dict()
    text = json.dumps(out)
    assert json.loads(text)["user_lengths"]["max"] == 4
    assert out["time_span_days"] == pytest.approx(10.0)
    assert out["value_histogram"][0] == ["1", 1]


def test_table_shows_every_statistic(small: Interactions) -> None:
    text = _render(stats_table(dataset_stats(small)))
    for expected in (
        "Dataset small",
        "3 with rows (vocabulary 4)",
        "4 with rows (vocabulary 5)",
        "interactions",
        "distinct user-item pairs",
        "66.6667%",
        "Gini of item popularity",
        "rows per user",
        "p99",
        "4.5: 1 (11.1%)",
        "1970-01-01 .. 1970-01-11",
    ):
        assert expected in text, expected

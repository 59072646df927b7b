"""Curation steps: hand-computed cases, k-core against a slow reference, the contribution cap."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
from _ordering_reference import MASK, ref_key, ref_mix  # tests/data is on sys.path
from hypothesis import given, settings
from hypothesis import strategies as st

from privrank.data import DatasetMetadata, Interactions
from privrank.data._ordering import GOLDEN, PURPOSE_CAP, random_keys, splitmix64
from privrank.data.curation import (
    CurationConfig,
    compact,
    curate,
    deduplicate,
    k_core,
    max_per_user,
    min_per_user,
    threshold,
    time_window,
)
from privrank.errors import ConfigError


def rows_of(data: Interactions) -> list[tuple]:
    """Rows as tuples of external ids, timestamp and value, in row order."""
    users = data.user_ids.to_pylist()
    items = data.item_ids.to_pylist()
    ts = data.timestamps()
    vs = data.values()
    return [
        (
            users[u],
            items[i],
            None if ts is None else int(ts[r]),
            None if vs is None else float(vs[r]),
        )
        for r, (u, i) in enumerate(zip(data.users(), data.items(), strict=True))
    ]


def ref_k_core(pairs: list[tuple[int, int]], user_k: int, item_k: int) -> list[int]:
    """Peel one offending user or item at a time until none is left; return kept row ids."""
    alive = set(range(len(pairs)))
    while True:
        users = Counter(pairs[r][0] for r in alive)
        items = Counter(pairs[r][1] for r in alive)
        bad_user = next((u for u, c in sorted(users.items()) if c < user_k), None)
        if bad_user is not None:
            alive = {r for r in alive if pairs[r][0] != bad_user}
            continue
        bad_item = next((i for i, c in sorted(items.items()) if c < item_k), None)
        if bad_item is not None:
            alive = {r for r in alive if pairs[r][1] != bad_item}
            continue
        return sorted(alive)


@pytest.fixture
def dupes() -> Interactions:
    # row: 0 (a,x,t5,1) 1 (a,x,t3,2) 2 (b,y,t4,3) 3 (a,x,t3,7) 4 (a,z,t1,4)
    return Interactions.from_columns(
        users=["a", "a", "b", "a", "a"],
        items=["x", "x", "y", "x", "z"],
        timestamps=[5, 3, 4, 3, 1],
        values=[1.0, 2.0, 3.0, 7.0, 4.0],
        metadata=DatasetMetadata(name="dupes"),
    )


# ------------------------------------------------------------------------ random keys
def test_splitmix64_known_answer() -> None:
    # The published SplitMix64 stream for seed 1234567 starts with 6457827717110365317.
    assert int(splitmix64(np.array([(1234567 + GOLDEN) & MASK]))[0]) == 6457827717110365317
    assert ref_mix((1234567 + GOLDEN) & MASK) == 6457827717110365317


def test_random_keys_match_the_documented_formula() -> None:
    rng = np.random.default_rng(3)
    users = rng.integers(0, 1000, 50)
    ranks = rng.integers(0, 100, 50)
    for seed in (0, 1, 2**64 - 1):
        keys = random_keys(seed, PURPOSE_CAP, users, ranks)
        expected = [
            ref_key(seed, PURPOSE_CAP, int(u), int(r)) for u, r in zip(users, ranks, strict=True)
        ]
        assert [int(k) for k in keys] == expected


# ------------------------------------------------------------------------ duplicates
def test_duplicates_first_last_sum_by_time_then_position(dupes: Interactions) -> None:
    first = deduplicate(dupes, "first")
    assert rows_of(first) == [("a", "x", 3, 2.0), ("b", "y", 4, 3.0), ("a", "z", 1, 4.0)]
    last = deduplicate(dupes, "last")
    assert rows_of(last) == [("a", "x", 5, 1.0), ("b", "y", 4, 3.0), ("a", "z", 1, 4.0)]
    summed = deduplicate(dupes, "sum")
    assert rows_of(summed) == [("a", "x", 5, 10.0), ("b", "y", 4, 3.0), ("a", "z", 1, 4.0)]
    step = summed.metadata.curation[-1]
    assert (step.name, step.rows_before, step.rows_after) == ("deduplicate", 5, 3)
    assert step.details["duplicate_rows"] == 2
    assert step.details["duplicate_pairs"] == 1
    assert step.details["users_removed"] == 0


def test_duplicates_without_timestamps_use_position(dupes: Interactions) -> None:
    data = Interactions(
        dupes.table.drop_columns(["timestamp"]), dupes.user_ids, dupes.item_ids, dupes.metadata
    )
    assert [r[3] for r in rows_of(deduplicate(data, "first"))] == [1.0, 3.0, 4.0]
    assert [r[3] for r in rows_of(deduplicate(data, "last"))] == [3.0, 7.0, 4.0]
    assert [r[3] for r in rows_of(deduplicate(data, "sum"))] == [3.0, 10.0, 4.0]


def test_duplicates_sum_without_values_counts_rows(dupes: Interactions) -> None:
    data = Interactions(
        dupes.table.drop_columns(["value"]), dupes.user_ids, dupes.item_ids, dupes.metadata
    )
    out = deduplicate(data, "sum")
    assert rows_of(out) == [("a", "x", 5, 3.0), ("b", "y", 4, 1.0), ("a", "z", 1, 1.0)]
    assert out.metadata.curation[-1].details["values_added"] is True


def test_duplicates_keep_changes_nothing_and_bad_policy_is_refused(dupes: Interactions) -> None:
    kept = deduplicate(dupes, "keep")
    assert kept.table.equals(dupes.table)
    assert kept.metadata.curation[-1].details["duplicate_rows"] == 2
    with pytest.raises(ConfigError, match="policy"):
        deduplicate(dupes, "max")  # type: ignore[arg-type]


# ------------------------------------------------------------------------ threshold
def test_threshold_keeps_values_at_or_above_and_can_binarize(dupes: Interactions) -> None:
    out = threshold(dupes, 3.0)
    assert [r[3] for r in rows_of(out)] == [3.0, 7.0, 4.0]
    binary = threshold(dupes, 4.0, binarize=True)
    assert not binary.has_values
    assert [r[:3] for r in rows_of(binary)] == [("a", "x", 3), ("a", "z", 1)]
    step = binary.metadata.curation[-1]
    assert step.details == {"users_removed": 1, "items_removed": 1, "binarized": True}
    assert step.params == {"min_value": 4.0, "binarize": True}


def test_threshold_needs_values_and_an_option(dupes: Interactions) -> None:
    with pytest.raises(ConfigError, match="set min_value, binarize, or both"):
        threshold(dupes)
    no_values = Interactions.from_codes(np.array([0]), np.array([0]))
    with pytest.raises(ConfigError, match="no value column"):
        threshold(no_values, 1.0)


# ------------------------------------------------------------------------ k-core
def test_k_core_hand_example_needs_two_rounds() -> None:
    # i3 has one row -> (u3,i3) goes; then u3 has one row -> (u3,i1) goes; then stable.
    users = np.array([1, 1, 2, 2, 3, 3])
    items = np.array([1, 2, 1, 2, 1, 3])
    data = Interactions.from_codes(users, items)
    out = k_core(data, 2, 2)
    kept = list(zip(out.users().tolist(), out.items().tolist(), strict=True))
    assert kept == [(1, 1), (1, 2), (2, 1), (2, 2)]
    step = out.metadata.curation[-1]
    assert step.details == {"users_removed": 1, "items_removed": 1, "iterations": 2}
    assert (step.rows_before, step.rows_after) == (6, 4)


def test_k_core_can_empty_the_data() -> None:
    data = Interactions.from_codes(np.array([0, 1]), np.array([0, 1]))
    out = k_core(data, 2, 1)
    assert len(out) == 0
    assert out.metadata.curation[-1].details["users_removed"] == 2


def test_k_core_rejects_bad_thresholds() -> None:
    data = Interactions.from_codes(np.array([0]), np.array([0]))
    with pytest.raises(ConfigError, match=r"KCore\.user_k: got 0"):
        k_core(data, 0, 1)


pairs_strategy = st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=0, max_size=60)


@settings(max_examples=60, deadline=None)
@given(pairs=pairs_strategy, user_k=st.integers(1, 4), item_k=st.integers(1, 4))
def test_k_core_is_the_fixed_point_of_the_slow_reference(
    pairs: list[tuple[int, int]], user_k: int, item_k: int
) -> None:
    users = np.array([p[0] for p in pairs], dtype=np.int32)
    items = np.array([p[1] for p in pairs], dtype=np.int32)
    data = Interactions.from_codes(
        users, items, n_users=10, n_items=10, values=np.arange(len(pairs))
    )
    out = k_core(data, user_k, item_k)
    # Same rows as peeling one offender at a time (row ids ride along in the value column).
    assert out.values().astype(int).tolist() == ref_k_core(pairs, user_k, item_k)
    # Every remaining user and item meets its threshold.
    user_counts = np.bincount(out.users(), minlength=10)
    item_counts = np.bincount(out.items(), minlength=10)
    assert np.all((user_counts == 0) | (user_counts >= user_k))
    assert np.all((item_counts == 0) | (item_counts >= item_k))
    # A fixed point: applying it again changes nothing.
    again = k_core(out, user_k, item_k)
    assert again.table.equals(out.table)
    assert again.metadata.curation[-1].details["iterations"] == 0


# ------------------------------------------------------------------------ min / max per user
def test_min_per_user(dupes: Interactions) -> None:
    out = min_per_user(dupes, 2)
    assert {r[0] for r in rows_of(out)} == {"a"}
    assert out.metadata.curation[-1].details["users_removed"] == 1
    with pytest.raises(ConfigError, match="min_per_user"):
        min_per_user(dupes, 0)


def test_max_per_user_most_recent_by_time_then_position() -> None:
    # user 0: timestamps 5,1,3,3,2 at rows 0..4; latest two: t5 (row 0) and the later t3 (row 3)
    data = Interactions.from_codes(
        np.array([0, 0, 0, 0, 0, 1]),
        np.array([0, 1, 2, 3, 4, 0]),
        timestamps=np.array([5, 1, 3, 3, 2, 0]),
    )
    out = max_per_user(data, 2)
    assert out.items().tolist() == [0, 3, 0]
    step = out.metadata.curation[-1]
    assert step.params == {"n": 2, "strategy": "most_recent"}
    assert step.details["users_capped"] == 1
    assert step.details["max_rows_per_user"] == 2
    assert step.details["items_removed"] == 3
    untimed = Interactions.from_codes(data.users(), data.items())
    assert max_per_user(untimed, 2).items().tolist() == [3, 4, 0]


def test_max_per_user_uniform_matches_reference_selection() -> None:
    rng = np.random.default_rng(7)
    users = rng.integers(0, 6, 80)
    timestamps = rng.integers(0, 20, 80)
    data = Interactions.from_codes(users, np.arange(80), timestamps=timestamps)
    for seed in (0, 1, 99):
        out = max_per_user(data, 3, strategy="uniform", seed=seed)
        expected = set()
        by_user: dict[int, list[int]] = defaultdict(list)
        for row in sorted(range(80), key=lambda r: (users[r], timestamps[r], r)):
            by_user[int(users[row])].append(row)
        for user, rows in by_user.items():
            keyed = sorted(rows, key=lambda r: ref_key(seed, PURPOSE_CAP, user, rows.index(r)))
            expected.update(keyed[:3])
        assert set(out.items().tolist()) == expected
        assert np.bincount(out.users()).max() <= 3


def test_max_per_user_uniform_is_deterministic_and_seed_dependent() -> None:
    rng = np.random.default_rng(0)
    users = rng.integers(0, 20, 1000)
    data = Interactions.from_codes(users, rng.integers(0, 50, 1000), values=np.arange(1000))
    a = max_per_user(data, 5, strategy="uniform", seed=11)
    b = max_per_user(data, 5, strategy="uniform", seed=11)
    c = max_per_user(data, 5, strategy="uniform", seed=12)
    assert a.table.equals(b.table)
    assert not a.table.equals(c.table)
    assert np.all(np.bincount(a.users(), minlength=20) == np.minimum(np.bincount(users), 5))


def test_max_per_user_uniform_ignores_other_users_and_row_order() -> None:
    rng = np.random.default_rng(1)
    n = 300
    users = rng.integers(0, 10, n)
    timestamps = rng.permutation(n)  # distinct, so each user's order is well defined
    items = np.arange(n)
    full = Interactions.from_codes(users, items, n_users=10, timestamps=timestamps)
    kept_full = max_per_user(full, 4, strategy="uniform", seed=5)
    # Shuffle the rows and drop every user but 0..4: users 0..4 keep the same rows.
    perm = rng.permutation(n)
    perm = perm[users[perm] < 5]
    partial = Interactions.from_codes(
        users[perm], items[perm], n_users=10, timestamps=timestamps[perm]
    )
    kept_partial = max_per_user(partial, 4, strategy="uniform", seed=5)
    full_items = set(kept_full.items()[kept_full.users() < 5].tolist())
    assert set(kept_partial.items().tolist()) == full_items


def test_max_per_user_uniform_is_uniform() -> None:
    # One user with 10 rows capped at 3: each row is kept with probability 3/10.
    data = Interactions.from_codes(np.zeros(10), np.arange(10))
    seeds = 2000
    kept = np.zeros(10)
    for seed in range(seeds):
        kept[max_per_user(data, 3, strategy="uniform", seed=seed).items()] += 1
    # Binomial sd is sqrt(0.3 * 0.7 / 2000) ≈ 0.0102; allow 5 sd.
    np.testing.assert_allclose(kept / seeds, 0.3, atol=0.052)


# ------------------------------------------------------------------------ time window
def test_time_window_is_half_open(dupes: Interactions) -> None:
    out = time_window(dupes, 3, 5)
    assert [r[2] for r in rows_of(out)] == [3, 4, 3]
    details = out.metadata.curation[-1].details
    assert details["rows_before_start"] == 1
    assert details["rows_at_or_after_end"] == 1
    assert [r[2] for r in rows_of(time_window(dupes, end=3))] == [1]
    assert [r[2] for r in rows_of(time_window(dupes, start=4))] == [5, 4]


def test_time_window_errors(dupes: Interactions) -> None:
    with pytest.raises(ConfigError, match="at least one of start and end"):
        time_window(dupes)
    with pytest.raises(ConfigError, match=r"start \(5\) must be before end \(5\)"):
        time_window(dupes, 5, 5)
    with pytest.raises(ConfigError, match="no timestamp column"):
        time_window(Interactions.from_codes(np.array([0]), np.array([0])), 0, 1)


# ------------------------------------------------------------------------ the pipeline
def test_curate_applies_steps_in_documented_order_and_compacts(tmp_path) -> None:
    data = Interactions.from_columns(
        users=["u1", "u1", "u1", "u2", "u2", "u3", "u1", "u2"],
        items=["a", "a", "b", "a", "b", "c", "c", "c"],
        timestamps=[1, 2, 3, 4, 5, 6, 7, 100],
        values=[1.0, 3.0, 5.0, 5.0, 4.0, 5.0, 2.0, 5.0],
    )
    config = CurationConfig(
        time_window={"end": 50},
        duplicates="sum",
        threshold={"min_value": 4.0, "binarize": True},
        k_core={"user_k": 1, "item_k": 2},
        min_per_user=1,
        max_per_user={"n": 2, "strategy": "most_recent"},
    )
    out = curate(data, config)
    names = [step.name for step in out.metadata.curation]
    assert names == [
        "time_window",
        "deduplicate",
        "threshold",
        "k_core",
        "min_per_user",
        "max_per_user",
        "compact",
    ]
    # window drops t=100; sum: (u1,a)=4 at t2; threshold ≥4 keeps (u1,a),(u1,b),(u2,a),(u2,b),(u3,c)
    # k-core item_k=2 drops c (u3); cap 2 keeps both rows of u1 and u2; compact drops u3 and c.
    assert sorted(r[:3] for r in rows_of(out)) == [
        ("u1", "a", 2),
        ("u1", "b", 3),
        ("u2", "a", 4),
        ("u2", "b", 5),
    ]
    assert out.user_ids.to_pylist() == ["u1", "u2"]
    assert out.item_ids.to_pylist() == ["a", "b"]
    assert out.metadata.curation[-1].details["users_dropped"] == 1
    assert not out.has_values
    # The history survives a save/load round trip.
    loaded = Interactions.load(out.save(tmp_path / "curated"))
    assert loaded.metadata.curation == out.metadata.curation


def test_curate_skips_steps_that_are_off_and_can_keep_codes(dupes: Interactions) -> None:
    out = curate(dupes, CurationConfig(compact=False, min_per_user=2))
    assert [s.name for s in out.metadata.curation] == ["min_per_user"]
    assert out.n_users == dupes.n_users
    assert curate(dupes, CurationConfig()).metadata.curation[-1].name == "compact"


def test_curation_config_errors_name_parameter_value_and_rule() -> None:
    with pytest.raises(ConfigError, match=r"CurationConfig\.k_core\.item_k: got -1"):
        CurationConfig(k_core={"user_k": 2, "item_k": -1})
    with pytest.raises(
        ConfigError,
        match=r"CurationConfig\.dedupe: got 'first'; "
        r"CurationConfig has no parameter 'dedupe'; expected one of: time_window",
    ):
        CurationConfig(dedupe="first")
    with pytest.raises(ConfigError, match=r"max_per_user\.n \(2\) is below min_per_user \(3\)"):
        CurationConfig(min_per_user=3, max_per_user={"n": 2})
    with pytest.raises(ConfigError, match=r"below k_core\.user_k"):
        CurationConfig(k_core={"user_k": 5, "item_k": 1}, max_per_user={"n": 2})
    with pytest.raises(ConfigError, match="duplicates"):
        CurationConfig(duplicates="max")
    config = CurationConfig(max_per_user={"n": 3, "strategy": "uniform", "seed": 4})
    with pytest.raises(Exception, match="frozen"):
        config.compact = False  # type: ignore[misc]


def test_compact_records_dropped_ids() -> None:
    data = Interactions.from_codes(np.array([0, 2]), np.array([1, 1]), n_users=4, n_items=3)
    out = compact(data)
    assert (out.n_users, out.n_items) == (2, 1)
    assert out.metadata.curation[-1].details == {
        "users_removed": 0,
        "items_removed": 0,
        "users_dropped": 2,
        "items_dropped": 2,
    }

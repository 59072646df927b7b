"""Splits: completeness, disjointness, determinism, protocol rules against slow references."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest
from _ordering_reference import ref_key  # tests/data is on sys.path
from hypothesis import given, settings
from hypothesis import strategies as st

from privrank.data import DatasetMetadata, Interactions
from privrank.data._ordering import (
    PURPOSE_HOLDOUT,
    PURPOSE_STRONG_USERS,
)
from privrank.data.splits import (
    HoldoutSplit,
    LeaveLastOut,
    Split,
    StrongGeneralization,
    TemporalSplit,
    fingerprint,
    parse_split_spec,
    split,
)
from privrank.errors import ArtifactError, ConfigError, DataError


def per_user_rows(data: Interactions) -> dict[int, list[int]]:
    """Row ids per user in (timestamp, position) order, computed in plain Python."""
    users = data.users().tolist()
    ts = data.timestamps()
    key = (lambda r: (ts[r], r)) if ts is not None else (lambda r: r)
    out: dict[int, list[int]] = defaultdict(list)
    for row in sorted(range(len(users)), key=key):
        out[users[row]].append(row)
    return out


def row_ids(part: Interactions | None) -> list[int]:
    """The row ids carried in the value column."""
    return [] if part is None else part.values().astype(int).tolist()


@st.composite
def datasets(draw, timestamps: bool | None = None) -> Interactions:
    """Small datasets with ties in time; the value column holds the row id."""
    n = draw(st.integers(1, 70))
    n_users = draw(st.integers(1, 12))
    n_items = draw(st.integers(1, 12))
    users = draw(st.lists(st.integers(0, n_users - 1), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, n_items - 1), min_size=n, max_size=n))
    with_time = draw(st.booleans()) if timestamps is None else timestamps
    ts = draw(st.lists(st.integers(0, 15), min_size=n, max_size=n)) if with_time else None
    return Interactions.from_codes(
        np.array(users),
        np.array(items),
        n_users=n_users,
        n_items=n_items,
        timestamps=None if ts is None else np.array(ts),
        values=np.arange(n),
        metadata=DatasetMetadata(name="prop"),
    )


specs = st.one_of(
    st.builds(
        HoldoutSplit,
        fraction=st.floats(0.05, 0.95),
        seed=st.integers(0, 2**64 - 1),
        unseen=st.sampled_from(["keep", "drop"]),
    ),
    st.builds(
        LeaveLastOut,
        k=st.integers(1, 3),
        validation=st.booleans(),
        unseen=st.sampled_from(["keep", "drop"]),
    ),
    st.builds(
        StrongGeneralization,
        test_fraction=st.floats(0.05, 0.95),
        fold_in_fraction=st.floats(0.05, 0.95),
        seed=st.integers(0, 1000),
        unseen=st.sampled_from(["keep", "drop"]),
    ),
)


def try_split(data: Interactions, spec) -> Split | None:
    """Split, or None when the protocol legitimately refuses (train or test would be empty)."""
    try:
        return split(data, spec)
    except DataError:
        return None


def check_partition(data: Interactions, result: Split) -> None:
    """Parts are disjoint, complete, share the vocabulary and match their counts."""
    ids = sorted(i for part in result.parts().values() for i in row_ids(part))
    assert ids == list(range(len(data)))
    for name, part in result.parts().items():
        assert part.user_ids is data.user_ids
        assert part.item_ids is data.item_ids
        counts = result.counts[name]
        assert counts.rows == len(part)
        assert counts.users == len(set(part.users().tolist()))
        assert counts.items == len(set(part.items().tolist()))
    # Each part is a subset of the input rows, unchanged.
    original = data.table.to_pylist()
    for part in result.parts().values():
        for row, record in zip(row_ids(part), part.table.to_pylist(), strict=True):
            assert record == original[row]


def check_unseen(data: Interactions, result: Split, keep: Split) -> None:
    """Unseen counts equal a plain-Python recount; drop moves exactly those rows.

    ``keep`` is the same split with ``unseen="keep"``: it shows where every row was assigned.
    """
    train_users = set(result.train.users().tolist())
    train_items = set(result.train.items().tolist())
    strong = isinstance(result.spec, StrongGeneralization)
    users, items = data.users().tolist(), data.items().tolist()
    all_bad: set[int] = set()
    for name in ("validation", "fold_in", "test"):
        part = getattr(result, name)
        if part is None:
            continue
        rows = row_ids(getattr(keep, name))
        bad_users = {users[r] for r in rows if not strong and users[r] not in train_users}
        bad_items = {items[r] for r in rows if items[r] not in train_items}
        bad = {
            r
            for r in rows
            if (not strong and users[r] not in train_users) or items[r] not in train_items
        }
        counts = result.counts[name]
        train_pairs = set(
            zip(result.train.users().tolist(), result.train.items().tolist(), strict=True)
        )
        kept_rows = row_ids(part)
        repeated = [r for r in kept_rows if (users[r], items[r]) in train_pairs]
        assert counts.pairs_in_train == len(repeated)
        assert counts.unseen_users == len(bad_users)
        assert counts.unseen_items == len(bad_items)
        assert counts.unseen_rows == len(bad)
        if result.spec.unseen == "drop":
            assert counts.dropped_rows == len(bad)
            assert set(row_ids(part)) == set(rows) - bad
        else:
            assert counts.dropped_rows == 0
            assert set(row_ids(part)) == set(rows)
        all_bad |= bad
    if result.spec.unseen == "drop":
        assert set(row_ids(result.dropped)) == all_bad
    else:
        assert result.dropped is None


# ------------------------------------------------------------------------ properties
@settings(max_examples=120, deadline=None)
@given(data=datasets(), spec=specs)
def test_parts_are_disjoint_complete_deterministic(data: Interactions, spec) -> None:
    result = try_split(data, spec)
    if result is None:
        return
    check_partition(data, result)
    again = split(data, spec)
    for name, part in result.parts().items():
        assert again.parts()[name].table.equals(part.table)
    assert again.counts == result.counts
    keep = split(data, spec.model_copy(update={"unseen": "keep"}))
    check_unseen(data, result, keep)
    # Dropping only moves evaluation rows; train is the same under keep and drop.
    assert keep.train.table.equals(result.train.table)


@settings(max_examples=80, deadline=None)
@given(data=datasets(), fraction=st.floats(0.05, 0.95), seed=st.integers(0, 2**64 - 1))
def test_holdout_matches_slow_reference(data: Interactions, fraction: float, seed: int) -> None:
    result = try_split(data, HoldoutSplit(fraction=fraction, seed=seed))
    expected_test = set()
    for user, rows in per_user_rows(data).items():
        n_test = min(math.floor(fraction * len(rows) + 0.5), len(rows) - 1)
        by_key = sorted(rows, key=lambda r: ref_key(seed, PURPOSE_HOLDOUT, user, rows.index(r)))
        expected_test.update(by_key[:n_test])
    if result is None:
        assert not expected_test
        return
    assert set(row_ids(result.test)) == expected_test
    # Every user with at least 2 rows keeps a train row.
    counts = data.user_counts()
    train_users = set(result.train.users().tolist())
    assert {u for u in range(data.n_users) if counts[u] >= 1} <= train_users


@settings(max_examples=80, deadline=None)
@given(data=datasets(), k=st.integers(1, 3), validation=st.booleans())
def test_leave_last_out_picks_the_latest(data: Interactions, k: int, validation: bool) -> None:
    result = try_split(data, LeaveLastOut(k=k, validation=validation))
    expected_test, expected_val = set(), set()
    for rows in per_user_rows(data).values():
        if len(rows) >= k + 1 + validation:
            expected_test.update(rows[-k:])
            if validation:
                expected_val.add(rows[-k - 1])
    if result is None:
        assert not expected_test
        return
    assert set(row_ids(result.test)) == expected_test
    assert set(row_ids(result.validation)) == expected_val
    assert (result.validation is None) == (not validation)


@settings(max_examples=80, deadline=None)
@given(data=datasets(timestamps=True), quantile=st.floats(0.01, 0.99))
def test_temporal_cut_is_respected(data: Interactions, quantile: float) -> None:
    ts = sorted(data.timestamps().tolist())
    cut = ts[min(math.floor(quantile * len(ts)), len(ts) - 1)]
    for spec in (TemporalSplit(quantile=quantile), TemporalSplit(cut=cut)):
        result = try_split(data, spec)
        if result is None:
            assert cut == ts[0]  # everything at or after the cut: train would be empty
            continue
        assert result.details["cut"] == cut
        assert max(result.train.timestamps()) < cut <= min(result.test.timestamps())
        assert len(result.train) == sum(t < cut for t in ts) <= math.floor(quantile * len(ts))


@settings(max_examples=80, deadline=None)
@given(data=datasets(), test_fraction=st.floats(0.05, 0.95), seed=st.integers(0, 2**64 - 1))
def test_strong_generalization_holds_out_whole_users(
    data: Interactions, test_fraction: float, seed: int
) -> None:
    spec = StrongGeneralization(test_fraction=test_fraction, fold_in_fraction=0.5, seed=seed)
    try:
        result = split(data, spec)
    except DataError:
        counts = data.user_counts()
        assert np.count_nonzero(counts >= 2) == 0 or np.count_nonzero(counts) < 2
        return
    train_users = set(result.train.users().tolist())
    fold_users = set(result.fold_in.users().tolist())
    test_users = set(result.test.users().tolist())
    assert fold_users == test_users
    assert not train_users & test_users
    # The held-out users are the eligible users with the smallest keys (plain-Python reference).
    counts = data.user_counts()
    eligible = [u for u in range(data.n_users) if counts[u] >= 2]
    wanted = math.floor(test_fraction * len(eligible) + 0.5)
    n_held = min(max(wanted, 1), len(eligible), int(np.count_nonzero(counts)) - 1)
    ranked = sorted(eligible, key=lambda u: ref_key(seed, PURPOSE_STRONG_USERS, u, 0))
    assert test_users == set(ranked[:n_held])
    assert result.details["held_out_users"] == n_held
    for user in test_users:
        n = int(counts[user])
        n_fold = min(max(math.floor(0.5 * n + 0.5), 1), n - 1)
        assert np.count_nonzero(result.fold_in.users() == user) == n_fold
        assert np.count_nonzero(result.test.users() == user) == n - n_fold


# ------------------------------------------------------------------------ fixed examples
@pytest.fixture
def medium() -> Interactions:
    rng = np.random.default_rng(42)
    n = 3000
    return Interactions.from_columns(
        users=[f"u{u}" for u in rng.integers(0, 150, n)],
        items=rng.integers(0, 400, n),
        timestamps=rng.integers(0, 10_000, n),
        values=rng.random(n),
        metadata=DatasetMetadata(name="medium"),
    )


def test_different_seeds_give_different_splits(medium: Interactions) -> None:
    for make in (
        lambda s: HoldoutSplit(seed=s),
        lambda s: StrongGeneralization(seed=s),
    ):
        tests = [split(medium, make(seed)).test.table for seed in range(5)]
        for a in range(5):
            for b in range(a + 1, 5):
                assert not tests[a].equals(tests[b])


def test_holdout_ignores_other_users_and_row_order() -> None:
    rng = np.random.default_rng(3)
    n = 400
    users = rng.integers(0, 12, n)
    timestamps = rng.permutation(n)
    items = np.arange(n)
    full = split(
        Interactions.from_codes(users, items, n_users=12, timestamps=timestamps), HoldoutSplit()
    )
    perm = rng.permutation(n)
    perm = perm[users[perm] % 2 == 0]
    part = Interactions.from_codes(
        users[perm], items[perm], n_users=12, timestamps=timestamps[perm]
    )
    partial = split(part, {"protocol": "holdout"})
    expected = set(full.test.items()[full.test.users() % 2 == 0].tolist())
    assert set(partial.test.items().tolist()) == expected


def test_holdout_rounding_by_hand() -> None:
    # Users with 1, 2, 3, 5 and 10 rows at fraction 0.25: round half up, cap n - 1.
    sizes = [1, 2, 3, 5, 10]
    users = np.repeat(np.arange(5), sizes)
    data = Interactions.from_codes(users, np.arange(len(users)))
    result = split(data, HoldoutSplit(fraction=0.25))
    # 0.25, 0.5, 0.75, 1.25, 2.5 -> 0 (cap 0), 1, 1, 1, 3
    assert np.bincount(result.test.users(), minlength=5).tolist() == [0, 1, 1, 1, 3]
    assert result.details == {"users_train_only": 1}


def test_leave_last_out_by_hand_without_timestamps() -> None:
    # user 0: items 0..4 in file order; user 1: items 5, 6 (too short with validation).
    data = Interactions.from_codes(np.array([0, 1, 0, 0, 1, 0, 0]), np.array([0, 5, 1, 2, 6, 3, 4]))
    result = split(data, LeaveLastOut(k=2))
    assert result.test.items().tolist() == [3, 4]
    assert result.validation.items().tolist() == [2]
    assert sorted(result.train.items().tolist()) == [0, 1, 5, 6]
    assert result.details == {"users_train_only": 1}


def test_temporal_counts_users_and_items_unseen_in_train() -> None:
    data = Interactions.from_columns(
        users=["a", "a", "b", "c", "a"],
        items=["x", "y", "x", "z", "x"],
        timestamps=[1, 2, 3, 10, 11],
    )
    keep = split(data, TemporalSplit(cut=10))
    assert keep.counts["test"].unseen_users == 1  # c
    assert keep.counts["test"].unseen_items == 1  # z
    assert keep.counts["test"].unseen_rows == 1  # (c, z)
    assert len(keep.test) == 2
    drop = split(data, TemporalSplit(cut=10, unseen="drop"))
    assert len(drop.test) == 1
    assert drop.dropped.table.to_pylist() == [{"user": 2, "item": 2, "timestamp": 10}]
    assert drop.counts["test"].dropped_rows == 1


def test_split_errors() -> None:
    untimed = Interactions.from_codes(np.array([0, 0, 1]), np.array([0, 1, 0]))
    with pytest.raises(ConfigError, match="no timestamp column"):
        split(untimed, TemporalSplit(quantile=0.5))
    with pytest.raises(DataError, match="leaves test empty"):
        split(Interactions.from_codes(np.array([0, 1]), np.array([0, 0])), HoldoutSplit())
    with pytest.raises(DataError, match="no rows"):
        split(Interactions.from_codes(np.array([], int), np.array([], int)), HoldoutSplit())
    with pytest.raises(ConfigError, match=r"HoldoutSplit\.fraction: got 1\.5"):
        HoldoutSplit(fraction=1.5)
    with pytest.raises(ConfigError, match="exactly one of cut"):
        TemporalSplit(cut=3, quantile=0.5)
    with pytest.raises(ConfigError, match="does not match any of the expected tags"):
        parse_split_spec({"protocol": "random"})
    with pytest.raises(ConfigError, match=r"HoldoutSplit\.k: got 2"):
        parse_split_spec({"protocol": "holdout", "k": 2})


def test_a_config_from_a_mapping_validates_as_its_constructor() -> None:
    assert HoldoutSplit.from_mapping({"fraction": 0.3, "seed": 4}) == HoldoutSplit(
        fraction=0.3, seed=4
    )
    with pytest.raises(ConfigError) as from_mapping:
        HoldoutSplit.from_mapping({"fraction": 1.5, "seed": "x"})
    with pytest.raises(ConfigError) as constructed:
        HoldoutSplit(fraction=1.5, seed="x")
    assert str(from_mapping.value) == str(constructed.value)
    assert from_mapping.value.problems == constructed.value.problems


# ------------------------------------------------------------------------ persistence
def test_save_load_round_trip(tmp_path, medium: Interactions) -> None:
    for spec in (
        LeaveLastOut(k=1, unseen="drop"),
        StrongGeneralization(seed=3),
        TemporalSplit(quantile=0.7),
    ):
        result = split(medium, spec)
        directory = result.save(tmp_path / spec.protocol)
        manifest = json.loads((directory / "split.json").read_text())
        assert manifest["spec"] == spec.model_dump(mode="json")
        assert manifest["seed"] == getattr(spec, "seed", None)
        assert manifest["source"]["fingerprint"] == fingerprint(medium)
        loaded = Split.load(directory)
        assert loaded.spec == result.spec
        assert loaded.counts == result.counts
        assert loaded.details == result.details
        assert loaded.source == result.source
        assert loaded.parts().keys() == result.parts().keys()
        for name, part in result.parts().items():
            assert loaded.parts()[name].table.equals(part.table)
            assert loaded.parts()[name].user_ids is loaded.train.user_ids
        assert loaded.train.user_ids.equals(medium.user_ids)
        loaded.check_source(medium)


def test_load_refuses_damaged_or_foreign_splits(tmp_path, medium: Interactions) -> None:
    directory = split(medium, HoldoutSplit()).save(tmp_path / "s")
    other = split(medium.take(np.arange(len(medium) - 1)), HoldoutSplit())
    with pytest.raises(ArtifactError, match="fingerprint"):
        other.check_source(medium)
    manifest = json.loads((directory / "split.json").read_text())
    manifest["parts"]["test"]["rows"] += 1
    (directory / "split.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="part test should hold"):
        Split.load(directory)
    manifest["version"] = 99
    (directory / "split.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="version 99"):
        Split.load(directory)
    with pytest.raises(ArtifactError, match=r"split\.json is missing"):
        Split.load(tmp_path / "nothing")


def test_fingerprint_covers_columns_and_ids() -> None:
    base = Interactions.from_columns(["a", "b"], [1, 2], timestamps=[1, 2], values=[1.0, 2.0])
    same = Interactions.from_columns(["a", "b"], [1, 2], timestamps=[1, 2], values=[1.0, 2.0])
    assert fingerprint(base) == fingerprint(same)
    assert len(fingerprint(base)) == 64
    changed_value = Interactions.from_columns(["a", "b"], [1, 2], timestamps=[1, 2], values=[1, 3])
    changed_ids = Interactions.from_columns(["a", "c"], [1, 2], timestamps=[1, 2], values=[1, 2])
    no_time = Interactions.from_columns(["a", "b"], [1, 2], values=[1.0, 2.0])
    prints = {fingerprint(d) for d in (base, changed_value, changed_ids, no_time)}
    assert len(prints) == 4
    # A sliced id array (non-zero offset) hashes like a fresh one with the same ids.
    sliced = pa.array(["z", "a", "b"]).slice(1)
    moved = Interactions(base.table, sliced, base.item_ids, base.metadata)
    assert fingerprint(moved) == fingerprint(base)

"""ItemKNN against a brute-force shrunk cosine with explicit per-item neighbour selection."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.models import ItemKNN, Query
from privrank.models import itemknn as itemknn_module
from privrank.models.base import FitOptions
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions


def brute_force_similarity(rows: list[set[int]], n_items: int, k: int, h: float) -> np.ndarray:
    """s_ij = |U_i ∩ U_j| / (sqrt|U_i| sqrt|U_j| + h), pairs by loops; for each target j keep
    the k largest positive s_ij (i != j), ties to the lower i."""
    users_of = [set() for _ in range(n_items)]
    for user, items in enumerate(rows):
        for item in items:
            users_of[item].add(user)
    full = np.zeros((n_items, n_items))
    for i in range(n_items):
        for j in range(n_items):
            if i != j:
                common = len(users_of[i] & users_of[j])
                denominator = math.sqrt(len(users_of[i])) * math.sqrt(len(users_of[j])) + h
                full[i, j] = common / denominator if common else 0.0
    pruned = np.zeros_like(full)
    for j in range(n_items):
        ranked = sorted(
            (i for i in range(n_items) if full[i, j] > 0), key=lambda i: (-full[i, j], i)
        )
        for i in ranked[:k]:
            pruned[i, j] = full[i, j]
    return pruned


@pytest.mark.parametrize(("neighbors", "shrinkage"), [(3, 0.0), (5, 4.0), (100, 10.0)])
def test_similarity_and_scores_match_brute_force(neighbors, shrinkage):
    data = synthetic_interactions(n_users=45, n_items=24, per_user=6, seed=8)
    matrix = data.to_csr()
    rows = [set(matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]]) for u in range(45)]
    expected = brute_force_similarity(rows, 24, neighbors, shrinkage)
    model = ItemKNN(neighbors=neighbors, shrinkage=shrinkage).fit(data)
    np.testing.assert_allclose(model.similarity_.toarray(), expected, rtol=1e-6, atol=1e-7)
    assert np.all(np.diff(model.similarity_.tocsc().indptr) <= neighbors)
    history = [1, 5, 9]
    scores = model.score(Query.histories([history]))[0]
    np.testing.assert_allclose(scores, expected[history].sum(axis=0), rtol=1e-5, atol=1e-6)


def test_ties_at_the_cut_keep_the_lower_item():
    # Items 1..4 co-occur equally with item 0: a tie that k = 2 must cut at items 1 and 2.
    users = np.repeat(np.arange(4), 2)
    items = np.column_stack([np.zeros(4, int), np.arange(1, 5)]).ravel()
    data = Interactions.from_codes(users, items, n_users=4, n_items=6)
    model = ItemKNN(neighbors=2, shrinkage=0.0).fit(data)
    assert model.similarity_[:, 0].nonzero()[0].tolist() == [1, 2]


def test_column_blocks_give_the_same_matrix(monkeypatch):
    data = synthetic_interactions(n_users=50, n_items=30, seed=9)
    whole = ItemKNN(neighbors=4, shrinkage=1.0).fit(data).similarity_.toarray()
    monkeypatch.setattr(itemknn_module, "_BLOCK_ENTRIES", 30 * 7)  # 7 columns per block
    blocked = ItemKNN(neighbors=4, shrinkage=1.0).fit(data).similarity_.toarray()
    np.testing.assert_array_equal(whole, blocked)


def test_dense_rows_give_the_sparse_products_bits(monkeypatch):
    """Small batches are scored from a dense copy of S (rows of the history's items summed in
    item order): bit for bit the scipy product ``x @ S`` they replace (the oracle), repeats
    counted once, for one history and for a batch; a refit's S replaces the copy; a catalogue
    too large for the copy takes the sparse product."""
    data = synthetic_interactions(n_users=300, n_items=400, per_user=40, seed=3)
    model = ItemKNN(neighbors=50, shrinkage=2.0).fit(data)
    rng = np.random.default_rng(0)
    histories = [rng.integers(0, 400, size=rng.integers(1, 200)) for _ in range(12)]
    histories[0] = np.array([7, 7, 7, 3])
    query = Query.histories(histories)
    oracle = (query.to_csr(400) @ model.similarity_).toarray()
    np.testing.assert_array_equal(model.score(query), oracle)
    for row in (0, 5):
        np.testing.assert_array_equal(model.score(query.take(np.array([row])))[0], oracle[row])
    users = Query.users(np.arange(10))
    expected = (model._training_histories(np.arange(10)).to_csr(400) @ model.similarity_).toarray()
    np.testing.assert_array_equal(model.score(users), expected)
    model.fit(synthetic_interactions(n_users=300, n_items=400, per_user=40, seed=4))
    oracle = (query.to_csr(400) @ model.similarity_).toarray()
    np.testing.assert_array_equal(model.score(query), oracle)
    monkeypatch.setattr(itemknn_module, "_DENSE_BYTES", 400 * 400 * 4 - 1)
    assert model._dense_similarity() is None
    np.testing.assert_array_equal(model.score(query), oracle)


def _timed_data(seed: int) -> Interactions:
    """40 users × 30 items, 4–14 distinct items each, random timestamps (ties included)."""
    rng = np.random.default_rng(seed)
    users, items, stamps = [], [], []
    for user in range(40):
        chosen = rng.choice(30, size=rng.integers(4, 15), replace=False)
        users += [user] * chosen.size
        items += chosen.tolist()
        stamps += rng.integers(0, 20, size=chosen.size).tolist()
    return Interactions.from_codes(
        np.array(users), np.array(items), n_users=40, n_items=30, timestamps=np.array(stamps)
    )


def brute_force_window_counts(data: Interactions, window: int) -> np.ndarray:
    """c_ij = number of users whose time-ordered history (ties by row position) has i and j at
    most ``window`` positions apart, by loops over each history's pairs."""
    users, items, stamps = data.users(), data.items(), data.timestamps()
    counts = np.zeros((data.n_items, data.n_items))
    for user in range(data.n_users):
        rows = sorted(np.flatnonzero(users == user), key=lambda r: (stamps[r], r))
        sequence = [int(items[r]) for r in rows]
        near = {
            (sequence[a], sequence[b])
            for a in range(len(sequence))
            for b in range(len(sequence))
            if a != b and abs(a - b) <= window and sequence[a] != sequence[b]
        }
        for i, j in near:
            counts[i, j] += 1
    return counts


@pytest.mark.parametrize("window", [1, 3])
def test_window_counts_and_similarity_match_brute_force(window):
    data = _timed_data(seed=window)
    counts = brute_force_window_counts(data, window)
    indptr, sequence = data.sequences()
    got = itemknn_module.window_co_counts(indptr, sequence, 30, window).toarray()
    np.testing.assert_array_equal(got, counts)
    model = ItemKNN(neighbors=5, shrinkage=2.0, window=window).fit(data)
    norms = np.sqrt(np.bincount(data.items(), minlength=30))
    full = counts / (np.outer(norms, norms) + 2.0)
    expected = np.zeros_like(full)
    for j in range(30):  # keep the 5 largest positive s_ij per target, ties to the lower i
        ranked = sorted((i for i in range(30) if full[i, j] > 0), key=lambda i: (-full[i, j], i))
        expected[ranked[:5], j] = full[ranked[:5], j]
    np.testing.assert_allclose(model.similarity_.toarray(), expected, rtol=1e-6, atol=1e-7)


def test_a_window_past_every_history_is_plain_itemknn():
    data = _timed_data(seed=7)
    plain = ItemKNN(neighbors=6, shrinkage=1.0).fit(data).similarity_.toarray()
    wide = ItemKNN(neighbors=6, shrinkage=1.0, window=14).fit(data).similarity_.toarray()
    np.testing.assert_array_equal(wide, plain)
    narrow = ItemKNN(neighbors=6, shrinkage=1.0, window=1).fit(data).similarity_.toarray()
    assert not np.array_equal(narrow, plain)


def test_a_window_follows_time_not_row_order():
    # user 0 rates 0, 1, 2 at times 3, 1, 2: in time order 1, 2, 0, so with window 1 the
    # pairs are (1, 2) and (2, 0), not (0, 1)
    data = Interactions.from_codes(
        np.zeros(3, int), np.array([0, 1, 2]), n_users=1, n_items=3, timestamps=np.array([3, 1, 2])
    )
    indptr, sequence = data.sequences()
    counts = itemknn_module.window_co_counts(indptr, sequence, 3, 1).toarray()
    np.testing.assert_array_equal(counts, [[0, 0, 1], [0, 0, 1], [1, 1, 0]])


def test_a_window_refuses_a_privacy_spec_and_a_bad_value():
    spec = PrivacySpec(epsilon=4.0, max_interactions_per_user=20, noise_seed=1)
    with pytest.raises(ConfigError, match="window"):
        ItemKNN(window=3).fit(_timed_data(seed=1), FitOptions(privacy=spec))
    with pytest.raises(ConfigError, match="window"):
        ItemKNN(window=0)

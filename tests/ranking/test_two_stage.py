"""The two-stage recommender: candidate merge against a slow reference, features, training on
carved labels only, save/load, fold-in, registration and the LambdaMART privacy refusal."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import privrank.ranking  # noqa: F401  (registers two-stage)
from privrank.data.query_groups import QueryGroups
from privrank.errors import ConfigError
from privrank.models import FitOptions, Query, Recommender, create_model
from privrank.privacy.spec import PrivacySpec
from privrank.ranking.ltr import group_ndcg
from privrank.ranking.two_stage import TwoStage
from privrank.ranking.two_stage._config import BLEND_WEIGHTS
from privrank.ranking.two_stage._features import feature_names, rank_features
from privrank.ranking.two_stage._top_lists import candidate_ranks, merge_top_lists, top_lists
from privrank.testing._data import synthetic_interactions

pytest.importorskip("lightgbm")

SMALL = {
    "candidates": 20,
    "retrievers": [{"name": "ease"}, {"name": "itemknn"}, {"name": "most-popular"}],
    "ranker_params": {"num_iterations": 15, "min_data_in_leaf": 5},
}


def _merge_reference(ranks, proposes, n, eligible):
    out = []
    for row in range(eligible.shape[0]):
        keys = []
        for item in np.flatnonzero(eligible[row]):
            best = min(
                (int(r[row, item]), p)
                for p, (r, ok) in enumerate(zip(ranks, proposes, strict=True))
                if ok
            )
            keys.append((best, int(item)))
        chosen = [item for _, item in sorted(keys)[:n]]
        out.append(chosen + [-1] * (n - len(chosen)))
    return np.array(out)


@pytest.mark.parametrize("n", [1, 5, 12, 15])
def test_merge_of_top_lists_equals_a_slow_merge_of_full_ranks(n: int) -> None:
    """Each list is a random order with the unseen items first (as :func:`top_lists` puts
    them), cut at ``n``; the reference merges the full ranks of every item."""
    rng = np.random.default_rng(n)
    eligible = rng.random((6, 12)) > 0.2
    eligible[5] = False  # nothing to propose
    orders = [
        np.array([sorted(rng.permutation(12), key=lambda i: not eligible[r, i]) for r in range(6)])
        for _ in range(3)
    ]
    ranks = []
    for order in orders:
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(1, 13)[None, :], axis=1)
        ranks.append(rank)
    proposes = [True, False, True]
    got = merge_top_lists([orders[0][:, :n], orders[2][:, :n]], [0, 2], 3, eligible, n)
    np.testing.assert_array_equal(got, _merge_reference(ranks, proposes, n, eligible))
    assert (got[5] == -1).all()
    assert (merge_top_lists([], [], 3, eligible, n) == -1).all()  # no retriever proposes


def _exact_ranks(scores: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Slow reference: 1-based rank of every eligible item by (-score, code), row by row."""
    ranks = np.full(scores.shape, scores.shape[1] + 1, dtype=np.int64)
    for row in range(scores.shape[0]):
        items = sorted(np.flatnonzero(eligible[row]), key=lambda i: (-scores[row, i], i))
        for rank, item in enumerate(items, start=1):
            ranks[row, item] = rank
    return ranks


@pytest.mark.parametrize("n", [1, 4, 9, 30])
def test_capped_ranks_and_candidates_equal_a_full_sort(n: int) -> None:
    rng = np.random.default_rng(n)
    # integer-valued scores: many ties, broken by the lower code
    scores = [rng.integers(0, 5, (7, 25)).astype(np.float32) for _ in range(3)]
    seen = sp.random(7, 25, density=0.3, format="csr", random_state=n)
    eligible = seen.toarray() == 0
    table = rng.random((25, 3)).astype(np.float32)
    proposes = [True, False, True]
    got = rank_features(scores, proposes, eligible, np.full(7, 5), table, n)
    exact = [_exact_ranks(s, eligible) for s in scores]
    expected = _merge_reference(exact, proposes, n, eligible)
    np.testing.assert_array_equal(got.items, expected)
    names = feature_names(["a", "b", "c"])
    for position, s in enumerate(scores):
        column = got.features[:, :, names.index(f"r{position}.{'abc'[position]}.log_rank")]
        capped = np.minimum(np.take_along_axis(exact[position], np.maximum(got.items, 0), 1), n + 1)
        valid = got.items >= 0
        np.testing.assert_allclose(column[valid], np.log1p(capped)[valid], rtol=1e-6)
        best = np.where(eligible, s, -np.inf).max(axis=1)
        relative = (
            np.take_along_axis(s, np.maximum(got.items, 0), 1)
            / np.where(best == 0, 1, np.abs(best))[:, None]
        )
        relative[best == 0] = 0.0
        column = got.features[:, :, names.index(f"r{position}.{'abc'[position]}.relative_score")]
        np.testing.assert_allclose(column[valid], relative[valid], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_features_are_a_numpy_assembly_bit_for_bit(dtype) -> None:
    """The numba assembly against the numpy expression it replaced: float64 values rounded to
    float32 once; padding rows zero; a retriever whose best unseen score is 0 gives 0."""
    rng = np.random.default_rng(11)
    n_items, depth = 30, 26  # a row with fewer eligible items than N: padding
    scores = [rng.normal(size=(5, n_items)).astype(dtype) for _ in range(3)]
    scores[1][2] = 0.0
    eligible = rng.random((5, n_items)) > 0.2
    eligible[0, 3:] = False
    table = rng.random((n_items, 3)).astype(np.float32)
    lengths = np.array([3, 0, 7, 1, 12])
    got = rank_features(scores, [True, True, False], eligible, lengths, table, depth)
    chosen, safe = got.items, np.maximum(got.items, 0)
    assert (chosen[0] < 0).any()
    rows = np.arange(5)[:, None]
    columns = []
    for s in scores:
        exact = np.minimum(_exact_ranks(s, eligible), depth + 1)
        best = np.where(eligible, s.astype(np.float32), -np.inf).max(axis=1)
        scale = np.abs(np.where(np.isfinite(best), best, 0.0))[:, None]
        score = s[rows, safe].astype(np.float64)
        columns += [
            np.divide(score, scale, out=np.zeros_like(score), where=scale > 0),
            np.log1p(exact[rows, safe]),
        ]
    expected = np.concatenate(
        [
            np.stack(columns, axis=2),
            table[safe],
            np.broadcast_to(np.log1p(lengths)[:, None, None], (*chosen.shape, 1)),
        ],
        axis=2,
    ).astype(np.float32)
    expected[chosen < 0] = 0.0
    np.testing.assert_array_equal(got.features, expected)
    assert (got.features[2, :, 2] == 0).all()  # retriever 1's best for row 2 is 0


def _capped_ranks(scores: np.ndarray, eligible: np.ndarray, depth: int):
    """Every item's capped rank (:func:`candidate_ranks` of all items) and the best score."""
    top, best = top_lists(scores, eligible, depth)
    everything = np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    ranks = candidate_ranks(top, everything, scores.shape[1])
    unseen_first = np.take_along_axis(~eligible, top, axis=1)
    assert (np.diff(unseen_first.astype(int), axis=1) >= 0).all()  # seen items come last
    return ranks, best


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("depth", [1, 5, 24, 40])
def test_capped_ranks_equal_a_full_sort(ties: bool, depth: int) -> None:
    """:func:`top_lists` (one unique key per item, a partition of the keys) and
    :func:`candidate_ranks` against a full sort of each row, with and without ties at the
    cut."""
    rng = np.random.default_rng(depth)
    scores = (
        rng.integers(0, 4, (9, 40)).astype(np.float32)
        if ties
        else rng.normal(size=(9, 40)).astype(np.float32)
    )
    eligible = rng.random((9, 40)) > 0.25
    eligible[0, :38] = False  # fewer eligible items than the depth: -inf ties fill the cut
    ranks, best = _capped_ranks(scores, eligible, min(depth, 40))
    exact = _exact_ranks(scores, eligible)
    # (an unseen item's rank; seen items are never candidates)
    np.testing.assert_array_equal(ranks[eligible], np.minimum(exact, min(depth, 40) + 1)[eligible])
    masked = np.where(eligible, scores, -np.inf).max(axis=1)
    np.testing.assert_array_equal(best, np.where(np.isfinite(masked), masked, 0.0))


@pytest.mark.parametrize("depth", [1, 3, 6, 12])
def test_capped_ranks_of_special_scores_equal_a_full_sort(depth: int) -> None:
    """-0.0 ties with 0.0 (by the lower code), infinities order as numbers, a NaN counts as
    -inf; the reference sorts the same values as Python floats."""
    row = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.5, -1.5, -0.0, np.inf, 1e-30, -1e-30, 0.0]
    scores = np.array([row, row[::-1]], dtype=np.float32)
    eligible = np.ones_like(scores, dtype=bool)
    eligible[1, 0] = False
    ranks, best = _capped_ranks(scores, eligible, depth)
    exact = _exact_ranks(np.where(np.isnan(scores), -np.inf, scores), eligible)
    np.testing.assert_array_equal(ranks[eligible], np.minimum(exact, depth + 1)[eligible])
    np.testing.assert_array_equal(best, [0.0, 0.0])  # the best is +inf: not finite, so 0


@pytest.fixture(scope="module")
def fitted() -> TwoStage:
    data = synthetic_interactions(120, 50, per_user=10)
    model = create_model("two-stage", SMALL)
    assert isinstance(model, TwoStage)
    return model.fit(data, FitOptions(threads=1))


def test_scores_put_every_candidate_above_the_rest(fitted: TwoStage) -> None:
    users = np.arange(10)
    items, ranked, valid = fitted.rerank(Query.users(users))
    scores = fitted.score(users)
    seen = fitted._training_matrix()[users].toarray() > 0
    for row in range(len(users)):
        candidates = items[row][valid[row]]
        assert not seen[row, candidates].any()  # never an item of the history
        others = np.setdiff1d(np.arange(fitted.n_items_), candidates)
        assert scores[row, candidates].min() > scores[row, others].max()
        np.testing.assert_array_equal(scores[row, candidates], ranked[row][valid[row]])


def test_candidate_recall_is_measured_on_the_carved_labels(fitted: TwoStage) -> None:
    info = fitted.training_info_
    assert 0 < info["candidate_recall"] <= 1
    assert info["label_users"] > 100
    assert set(fitted.stage_seconds()) >= {"fit.retrievers", "fit.ranker", "fit.retrievers_refit"}


def test_save_load_round_trip(fitted: TwoStage, tmp_path: Path) -> None:
    loaded = Recommender.load(fitted.save(tmp_path / "m"))
    assert isinstance(loaded, TwoStage)
    np.testing.assert_array_equal(loaded.score(np.arange(15)), fitted.score(np.arange(15)))


def test_fold_in_of_a_training_history_equals_scoring_the_user(fitted: TwoStage) -> None:
    users = np.arange(8)
    histories = fitted._training_histories(users)
    np.testing.assert_allclose(fitted.score(histories), fitted.score(users), rtol=1e-5, atol=1e-5)


def test_the_listwise_ranker_works_in_the_pipeline() -> None:
    data = synthetic_interactions(80, 40, per_user=8, seed=3)
    config = {**SMALL, "ranker": "listwise", "ranker_params": {"epochs": 3, "hidden": [8]}}
    model = create_model("two-stage", config).fit(data, FitOptions(threads=1))
    assert model.score(np.arange(4)).shape == (4, 40)


def test_a_privacy_spec_is_refused_by_a_lambdamart_pipeline() -> None:
    # The private fit (listwise ranker only) is tested in test_two_stage_private.py.
    data = synthetic_interactions(40, 20, per_user=5)
    spec = PrivacySpec(epsilon=1.0, max_interactions_per_user=10)
    with pytest.raises(ConfigError, match="a private fit needs ranker='listwise'"):
        create_model("two-stage", SMALL).fit(data, FitOptions(privacy=spec))


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="propose"):
        create_model("two-stage", {"retrievers": [{"name": "ease", "propose": False}]})


@pytest.mark.parametrize("name", ["content-knn", "genre-profile"])
def test_content_knn_is_a_retriever_from_the_catalogue_text(tmp_path: Path, name: str) -> None:
    """content-knn (text embeddings) and genre-profile (genre counts) read the same item text."""
    from privrank.testing._data import write_group_item_text

    data = synthetic_interactions(n_users=120, n_items=60, per_user=12, seed=0)
    text = write_group_item_text(tmp_path / "items.tsv", n_items=60)
    config = {
        **SMALL,
        "retrievers": [
            {"name": "ease"},
            {"name": name, "params": {"item_text": str(text)}, "propose": False},
        ],
    }
    model = create_model("two-stage", config).fit(data, FitOptions(seed=0, threads=1))
    names = model.ranker_.feature_names_
    assert f"r1.{name}.relative_score" in names and f"r1.{name}.log_rank" in names
    # the content column holds the content model's own cosine, relative to the user's best
    query = Query.users(np.arange(5))
    candidates = model.featurize(query, model.retrieve(query))
    content = model.retrievers_[1].score(query)
    seen = sp.csr_matrix(model._seen_matrix(query)).toarray() > 0
    best = np.where(seen, -np.inf, content).max(axis=1)
    column = list(names).index(f"r1.{name}.relative_score")
    for row in range(5):
        items = candidates.items[row][candidates.items[row] >= 0]
        expected = content[row, items] / abs(best[row])
        got = candidates.features[row, : items.size, column]
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    model.save(tmp_path / "model")
    loaded = Recommender.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.score(query), model.score(query))


@pytest.mark.parametrize("name", ["content-knn", "genre-profile"])
def test_content_knn_without_item_text_is_refused_before_fitting(name: str) -> None:
    from privrank.errors import DataError

    data = synthetic_interactions(n_users=40, n_items=30, per_user=8, seed=0)
    beauty = data.with_metadata(dataclasses.replace(data.metadata, name="beauty"))
    config = {**SMALL, "retrievers": [{"name": "ease"}, {"name": name}]}
    model = create_model("two-stage", config)
    with pytest.raises(DataError, match=rf"r1 \({name}\) needs item text.*Beauty") as caught:
        model.fit(beauty, FitOptions(seed=0, threads=1))
    assert caught.value.field == "retrievers[1].params.item_text"
    assert not hasattr(model, "ranker_")


def test_a_recent_retriever_scores_the_last_items_and_shares_its_fit() -> None:
    data = synthetic_interactions(90, 40, per_user=8, seed=5)
    config = {
        **SMALL,
        "retrievers": [
            {"name": "itemknn"},
            {"name": "itemknn", "recent": 2, "propose": False},
            {"name": "most-popular"},
        ],
    }
    model = create_model("two-stage", config).fit(data, FitOptions(threads=1))
    assert isinstance(model, TwoStage)
    whole, recent, _ = model.retrievers_
    assert recent is whole  # one fit for both specs
    users = np.arange(6)
    scores = model.retrieve(Query.users(users))
    indptr, items = data.sequences()  # time order
    last_two = Query.histories([items[indptr[u + 1] - 2 : indptr[u + 1]] for u in users])
    np.testing.assert_array_equal(scores[1], np.asarray(whole.score(last_two), np.float32))
    np.testing.assert_array_equal(scores[0], np.asarray(whole.score(users), np.float32))
    # an ad-hoc history: its last items as sent
    history = Query.histories([[3, 1, 4, 15]])
    np.testing.assert_array_equal(
        model.retrieve(history)[1],
        np.asarray(whole.score(Query.histories([[4, 15]])), np.float32),
    )


def test_groups_without_a_relevant_candidate_do_not_reach_the_ranker() -> None:
    data = synthetic_interactions(150, 60, per_user=6, seed=2)
    config = {**SMALL, "candidates": 3, "carve": "last"}  # few candidates: many misses
    model = create_model("two-stage", config).fit(data, FitOptions(threads=1))
    info = model.training_info_
    groups = info["ranker_groups"]
    assert 0 < groups["fit"] + groups["validation"] < info["label_users"]


def test_several_carves_give_the_groups_of_each_carve_fitted_alone() -> None:
    """``carves = 3`` (seed 0) trains on the union of the groups that three one-carve fits with
    seeds 0, 1, 2 build: the ranker's group count is their sum."""
    data = synthetic_interactions(120, 50, per_user=10)
    totals = []
    for seed in range(3):
        model = create_model("two-stage", {**SMALL, "seed": seed}).fit(data, FitOptions(threads=1))
        groups = model.training_info_["ranker_groups"]
        totals.append(groups["fit"] + groups["validation"])
    model = create_model("two-stage", {**SMALL, "carves": 3}).fit(data, FitOptions(threads=1))
    info = model.training_info_
    assert info["carves"] == 3
    assert info["ranker_groups"]["fit"] + info["ranker_groups"]["validation"] == sum(totals)
    assert info["ranker_groups"]["validation"] > 0


def test_several_carves_need_a_random_carve() -> None:
    data = synthetic_interactions(40, 30, per_user=6)
    with pytest.raises(ConfigError, match="carves = 2 needs carve = random"):
        create_model("two-stage", {**SMALL, "carves": 2, "carve": "last"}).fit(
            data, FitOptions(threads=1)
        )
    # carve = auto resolved to last on a next-item protocol: the message says where it came from
    with pytest.raises(ConfigError, match=r"got 'last' \(carve = auto on a next-item protocol\)"):
        create_model("two-stage", {**SMALL, "carves": 2}).fit(
            data, FitOptions(threads=1, test_shape="next")
        )


def test_the_blended_base_finds_the_weights_that_order_the_labels() -> None:
    """Labels are the top 3 of ``a + 0.5 b`` in every group (``a``, ``b``: the first two
    retrievers' relative scores; the third is noise): coordinate ascent from ``a`` alone must
    reach that order exactly (NDCG@10 = 1) and leave the noise column out."""
    model = create_model("two-stage", SMALL)
    assert isinstance(model, TwoStage)
    names = model._feature_names()
    rng = np.random.default_rng(0)
    n_groups, size = 60, 20
    features = rng.random((n_groups * size, len(names))).astype(np.float32)
    a = features[:, names.index("r0.ease.relative_score")].astype(np.float64)
    b = features[:, names.index("r1.itemknn.relative_score")].astype(np.float64)
    target = (a + 0.5 * b).reshape(n_groups, size)
    labels = np.zeros_like(target)
    np.put_along_axis(labels, np.argsort(-target, axis=1)[:, :3], 1.0, axis=1)
    groups = QueryGroups(features, labels.ravel(), np.full(n_groups, size), names)
    sizes = groups.group_sizes
    assert group_ndcg(a, groups.labels, sizes, 10) < 1.0

    head, blend = model._base_blend(groups, "r0.ease.log_rank")

    assert head == "r0.ease.relative_score"
    assert set(blend) == {"r1.itemknn.relative_score"}  # the noise column gets weight 0
    assert blend["r1.itemknn.relative_score"] in BLEND_WEIGHTS
    got = a + sum(w * features[:, names.index(c)] for c, w in blend.items())
    assert group_ndcg(got, groups.labels, sizes, 10) == pytest.approx(1.0)


def test_a_blended_base_pipeline_scores_and_round_trips(tmp_path: Path) -> None:
    data = synthetic_interactions(120, 50, per_user=10)
    config = {**SMALL, "ranker_base_blend": True}
    config["ranker_params"] = {**SMALL["ranker_params"], "eval_at": [10]}
    model = create_model("two-stage", config).fit(data, FitOptions(threads=1))
    assert isinstance(model, TwoStage)
    info = model.training_info_
    ranker_config = model.ranker_.config
    assert ranker_config.base_feature == info["base_retriever"].replace(
        ".log_rank", ".relative_score"
    )
    assert ranker_config.base_weight == 1.0
    assert ranker_config.base_blend == info["base_blend"]
    loaded = Recommender.load(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.score(np.arange(15)), model.score(np.arange(15)))


def test_a_windowed_itemknn_retriever_is_its_own_fit_and_round_trips(tmp_path: Path) -> None:
    """A plain and a windowed ItemKNN in one pipeline are two fits (distinct keys); after the
    refit the windowed retriever is the standalone ``ItemKNN(window=2)`` of the whole training
    data, and the pipeline scores the same after a save and load."""
    data = synthetic_interactions(120, 50, per_user=10)
    config = {
        **SMALL,
        "retrievers": [
            {"name": "ease"},
            {"name": "itemknn"},
            {"name": "itemknn", "params": {"window": 2}},
            {"name": "most-popular"},
        ],
    }
    model = create_model("two-stage", config).fit(data, FitOptions(threads=1))
    assert isinstance(model, TwoStage)
    plain, windowed = model.retrievers_[1], model.retrievers_[2]
    assert plain is not windowed
    alone = create_model("itemknn", {"window": 2}).fit(data, FitOptions(threads=1))
    np.testing.assert_array_equal(windowed.similarity_.toarray(), alone.similarity_.toarray())
    assert not np.array_equal(windowed.similarity_.toarray(), plain.similarity_.toarray())
    assert "r2.itemknn.relative_score" in model.ranker_.feature_names_
    loaded = Recommender.load(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.score(np.arange(15)), model.score(np.arange(15)))


def test_retrievers_that_differ_in_seed_are_a_seed_ensemble_of_standalone_fits(
    tmp_path: Path,
) -> None:
    """iALS listed with seeds 0 and 2 is two fits: after the refit each is the standalone iALS
    fitted on the whole training data with seed ``fit seed + its seed`` (the oracle), the two
    differ, a repeated (name, params, seed) shares its fit, each gets its own feature columns,
    and the pipeline scores the same after a save and load."""
    data = synthetic_interactions(120, 50, per_user=10, seed=3)
    ials = {"factors": 8, "epochs": 3}
    config = {
        **SMALL,
        "retrievers": [
            {"name": "ials", "params": ials},
            {"name": "ials", "params": ials, "seed": 2},
            {"name": "ials", "params": ials, "seed": 2, "recent": 3, "propose": False},
            {"name": "most-popular"},
        ],
    }
    options = FitOptions(seed=5, threads=1)
    model = create_model("two-stage", config).fit(data, options)
    assert isinstance(model, TwoStage)
    first, second, shared = model.retrievers_[:3]
    assert shared is second and first is not second
    users = np.arange(15)
    for fitted, offset in ((first, 0), (second, 2)):
        alone = create_model("ials", ials).fit(data, FitOptions(seed=5 + offset, threads=1))
        np.testing.assert_array_equal(fitted.score(users), alone.score(users))
    assert not np.array_equal(first.score(users), second.score(users))
    names = set(model.ranker_.feature_names_)
    assert {"r0.ials.relative_score", "r1.ials.relative_score"} <= names
    loaded = Recommender.load(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.score(users), model.score(users))


def test_a_sasrec_retriever_proposes_and_is_the_standalone_sasrec_after_the_refit(
    tmp_path: Path,
) -> None:
    """SASRec as a proposing retriever on a leave-one-out carve (``carve = last``), beside a
    recent-item ItemKNN (the issue-14 Beauty setting in small): after the refit its scores are
    those of a standalone SASRec fitted on the whole training data with the same seed (the
    oracle), its score and rank columns reach the ranker, and the pipeline scores the same
    after a save and load and when a training history is folded in."""
    data = synthetic_interactions(120, 50, per_user=10, seed=4)
    sasrec = {
        "factors": 8,
        "max_length": 10,
        "negatives": 16,
        "epochs": 2,
        "batch_size": 32,
        "carve_validation": False,
        "refit": False,
    }
    config = {
        **SMALL,
        "carve": "last",
        "retrievers": [
            {"name": "sasrec", "params": sasrec},
            {"name": "itemknn", "recent": 1},
            {"name": "itemknn"},
            {"name": "most-popular"},
        ],
    }
    options = FitOptions(seed=7, threads=1)
    model = create_model("two-stage", config).fit(data, options)
    assert isinstance(model, TwoStage)
    alone = create_model("sasrec", sasrec).fit(data, options)
    users = np.arange(12)
    np.testing.assert_allclose(
        model.retrieve(Query.users(users))[0],
        np.asarray(alone.score(users), np.float32),
        rtol=1e-5,
        atol=1e-6,
    )
    assert {"r0.sasrec.relative_score", "r0.sasrec.log_rank"} <= set(model.ranker_.feature_names_)
    assert model.training_info_["base_retriever"].endswith(".log_rank")
    loaded = Recommender.load(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.score(users), model.score(users))
    histories = model._training_histories(users)
    np.testing.assert_allclose(model.score(histories), model.score(users), rtol=1e-5, atol=1e-5)


def test_an_evaluation_fits_the_two_stage_on_train_and_validation() -> None:
    """The two-stage carves its own labels and reads no validation split, so on a leave-one-out
    protocol the runner gives it train + validation (each user's most recent training item
    included), and its refitted retrievers count those rows too."""
    from privrank.workflow.protocols import ProtocolSpec
    from privrank.workflow.runner import RunConfig, run

    data = synthetic_interactions(40, 30, per_user=8, seed=5)
    spec = ProtocolSpec(
        name="toy-loo",
        dataset="in-memory",
        split={"protocol": "leave-last-out", "k": 1, "validation": True},
        cutoffs=(5, 10),
        headline=("ndcg@10",),
    )
    params = SMALL | {"carve": "last", "retrievers": [{"name": "most-popular"}]}
    config = RunConfig(
        protocols=[spec],
        models=[{"name": "two-stage", "params": params}, "itemknn"],
        n_resamples=20,
        threads=1,
    )
    summary = run(config, None, data={"toy-loo": data})
    two_stage, itemknn = summary.runs
    assert TwoStage.trains_on_validation_part and not itemknn.model.trains_on_validation_part
    assert (two_stage.history_mode, itemknn.history_mode) == ("refit", "fold-in")
    history, train = two_stage.prepared.history, two_stage.prepared.train
    assert two_stage.model.history_items_.size == len(history) > len(train)
    # Oracle: most-popular's counts over the rows of train + validation, counted here by hand.
    pairs = set(zip(history.users().tolist(), history.items().tolist(), strict=True))
    assert len(pairs) == len(history)  # no repeated (user, item) rows
    counts = np.zeros(two_stage.model.n_items_)
    for _, item in pairs:
        counts[item] += 1
    (popular,) = two_stage.model.retrievers_
    np.testing.assert_array_equal(popular.item_popularity_, counts)

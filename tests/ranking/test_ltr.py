"""Learning-to-rank: NDCG against LightGBM's own metric, LambdaMART against LightGBM run directly,
the neural listwise ranker, persistence and the privacy refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privrank.data.query_groups import QueryGroups
from privrank.errors import ArtifactError, ConfigError
from privrank.privacy.spec import PrivacySpec
from privrank.ranking.ltr import (
    LambdaMART,
    ListwiseRanker,
    LTRFitOptions,
    group_ndcg,
    lightgbm_params,
    load_ranker,
)

lgb = pytest.importorskip("lightgbm")


def _groups(n_queries: int = 60, seed: int = 0, size: int = 12, d: int = 6) -> QueryGroups:
    """Graded relevance driven by the first two features, plus noise columns."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, size, n_queries)
    x = rng.random((int(sizes.sum()), d)).astype(np.float32)
    utility = 2 * x[:, 0] + x[:, 1] + 0.2 * rng.standard_normal(len(x))
    labels = np.digitize(utility, [1.0, 1.6, 2.2]).astype(np.float32)
    return QueryGroups(x, labels, sizes, tuple(f"f{j}" for j in range(d)))


def test_ndcg_by_hand() -> None:
    # one group, labels in row order 0, 2, 1; scores put row 2 first, then row 0, then row 1
    got = group_ndcg(np.array([0.5, 0.1, 0.9]), np.array([0, 2, 1]), np.array([3]), 3)
    dcg = (2**1 - 1) / np.log2(2) + 0 / np.log2(3) + (2**2 - 1) / np.log2(4)
    idcg = 3 / np.log2(2) + 1 / np.log2(3)
    assert got == pytest.approx(dcg / idcg)
    # a group with no relevant row counts as 1, as in LightGBM
    assert group_ndcg(np.array([1.0, 2.0]), np.array([0, 0]), np.array([2]), 1) == 1.0


def test_ndcg_equals_lightgbms_own_metric() -> None:
    train, test = _groups(seed=1), _groups(seed=2)
    params = {**lightgbm_params(LambdaMART().config, 0, 1), "ndcg_eval_at": [1, 3, 5]}
    evals: dict = {}
    data = lgb.Dataset(train.features, train.labels, group=train.group_sizes)
    valid = lgb.Dataset(test.features, test.labels, group=test.group_sizes, reference=data)
    booster = lgb.train(
        params, data, 20, valid_sets=[valid], callbacks=[lgb.record_evaluation(evals)]
    )
    scores = booster.predict(test.features)
    for k in (1, 3, 5):
        ours = group_ndcg(scores, test.labels, test.group_sizes, k)
        assert ours == pytest.approx(evals["valid_0"][f"ndcg@{k}"][-1], abs=1e-9)


def test_lambdamart_equals_lightgbm_run_directly() -> None:
    train = _groups(seed=3)
    ranker = LambdaMART(num_iterations=30).fit(train, options=LTRFitOptions(threads=1))
    params = lightgbm_params(ranker.config, 0, 1)
    direct = lgb.train(
        params, lgb.Dataset(train.features, train.labels, group=train.group_sizes), 30
    )
    test = _groups(seed=4)
    np.testing.assert_allclose(ranker.score(test.features), direct.predict(test.features), 1e-6)


def test_lambdamart_save_load_round_trip(tmp_path: Path) -> None:
    train, test = _groups(seed=5), _groups(seed=6)
    ranker = LambdaMART(num_iterations=10, eval_at=(3,)).fit(train, test)
    loaded = load_ranker(ranker.save(tmp_path / "r"))
    assert isinstance(loaded, LambdaMART)
    np.testing.assert_array_equal(loaded.score(test.features), ranker.score(test.features))
    assert loaded.info_["validation"] == ranker.info_["validation"]
    (tmp_path / "r" / "ranker.json").write_text("{}")
    with pytest.raises(ArtifactError, match="checksum"):
        load_ranker(tmp_path / "r")


def test_lambdamart_refuses_a_privacy_spec() -> None:
    with pytest.raises(ConfigError, match="cannot train with user-level differential privacy"):
        LambdaMART().fit(_groups(), options=LTRFitOptions(privacy=PrivacySpec(epsilon=1.0)))


def test_lambdamart_early_stops_on_validation() -> None:
    ranker = LambdaMART(num_iterations=300, early_stopping_rounds=5, eval_at=(5,))
    ranker.fit(_groups(seed=7), _groups(seed=8))
    assert ranker.info_["best_iteration"] < 300


@pytest.mark.parametrize("loss", ["softmax", "approx-ndcg"])
def test_listwise_learns_the_relevance(loss: str, tmp_path: Path) -> None:
    train, valid, test = _groups(seed=9), _groups(seed=10), _groups(seed=11)
    ranker = ListwiseRanker(loss=loss, epochs=40, hidden=(16,), learning_rate=1e-2, eval_at=5)
    ranker.fit(train, valid, LTRFitOptions(seed=0, threads=1))
    learned = group_ndcg(ranker.score(test.features), test.labels, test.group_sizes, 5)
    oracle = group_ndcg(
        2 * test.features[:, 0] + test.features[:, 1], test.labels, test.group_sizes, 5
    )
    shuffled = group_ndcg(-test.features[:, 0], test.labels, test.group_sizes, 5)
    assert learned > shuffled + 0.2
    assert learned > oracle - 0.05
    loaded = load_ranker(ranker.save(tmp_path / "l"))
    np.testing.assert_array_equal(loaded.score(test.features), ranker.score(test.features))


def test_listwise_is_deterministic_by_seed() -> None:
    train = _groups(seed=12)
    a = ListwiseRanker(epochs=3).fit(train, options=LTRFitOptions(seed=4, threads=1))
    b = ListwiseRanker(epochs=3).fit(train, options=LTRFitOptions(seed=4, threads=1))
    np.testing.assert_array_equal(a.score(train.features), b.score(train.features))


def test_unknown_config_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="learning_rat"):
        ListwiseRanker(learning_rat=0.1)


@pytest.mark.realdata
def test_reproduces_lightgbms_lambdarank_example(real_data_dir: Path) -> None:
    """LightGBM run on examples/lambdarank with its train.conf is the oracle (same run)."""
    from privrank.data.readers.ltr import read_ltr

    folder = real_data_dir / "ltr-lightgbm-lambdarank"
    conf = {  # examples/lambdarank/train.conf
        "objective": "lambdarank",
        "metric": "ndcg",
        "ndcg_eval_at": [1, 3, 5],
        "max_bin": 255,
        "learning_rate": 0.1,
        "num_leaves": 31,
        "feature_fraction": 1.0,
        "bagging_freq": 1,
        "bagging_fraction": 0.9,
        "min_data_in_leaf": 50,
        "min_sum_hessian_in_leaf": 5.0,
        "deterministic": True,
        "num_threads": 1,
        "verbosity": -1,
    }
    train_file = lgb.Dataset(str(folder / "rank.train"))
    test_file = lgb.Dataset(str(folder / "rank.test"), reference=train_file)
    evals: dict = {}
    lgb.train(
        conf, train_file, 100, valid_sets=[test_file], callbacks=[lgb.record_evaluation(evals)]
    )
    train, test = read_ltr(folder / "rank.train"), read_ltr(folder / "rank.test")
    ranker = LambdaMART().fit(train, options=LTRFitOptions(threads=1))
    scores = ranker.score(test.features)
    for k in (1, 3, 5):
        ours = group_ndcg(scores, test.labels, test.group_sizes, k)
        assert ours == pytest.approx(evals["valid_0"][f"ndcg@{k}"][-1], abs=1e-12)


def _perfect_base(groups: QueryGroups) -> QueryGroups:
    """The groups with one more column that orders every group perfectly (its labels)."""
    features = np.column_stack([groups.features, groups.labels]).astype(np.float32)
    return QueryGroups(features, groups.labels, groups.group_sizes, (*groups.feature_names, "b"))


def test_a_base_order_no_tree_beats_is_kept() -> None:
    train, valid = _perfect_base(_groups(seed=1)), _perfect_base(_groups(seed=2))
    ranker = LambdaMART(base_feature="b", base_weight=10.0, num_iterations=20, eval_at=(5,))
    ranker.fit(train, valid, LTRFitOptions(threads=1))
    # the base alone is a perfect order on the validation groups: zero trees are chosen
    assert ranker.info_["best_iteration"] == 0
    assert ranker.info_["validation"]["ndcg@5"] == pytest.approx(1.0)
    np.testing.assert_allclose(ranker.score(valid.features), 10.0 * valid.labels, rtol=1e-6)


def test_trees_on_a_base_are_kept_when_they_beat_it() -> None:
    train, valid = _groups(seed=1, n_queries=200), _groups(seed=2, n_queries=100)
    # base: the noise column f5, which orders the groups at random; the trees must beat it
    ranker = LambdaMART(base_feature="f5", base_weight=-1.0, num_iterations=30, eval_at=(5,))
    ranker.fit(train, valid, LTRFitOptions(threads=1))
    assert ranker.info_["best_iteration"] >= 1
    base_ndcg = group_ndcg(-valid.features[:, 5], valid.labels, valid.group_sizes, 5)
    assert ranker.info_["base_validation"]["ndcg@5"] == pytest.approx(base_ndcg)
    got = group_ndcg(ranker.score(valid.features), valid.labels, valid.group_sizes, 5)
    assert got == pytest.approx(ranker.info_["validation"]["ndcg@5"], abs=1e-6)
    assert got > base_ndcg
    # the score is the base plus the trees, as LightGBM's init_score defines it
    trees = ranker.booster_.predict(valid.features, num_iteration=ranker.info_["best_iteration"])
    np.testing.assert_allclose(
        ranker.score(valid.features), trees - valid.features[:, 5], rtol=1e-5, atol=1e-5
    )


def test_a_blended_base_is_the_weighted_sum_of_its_columns(tmp_path: Path) -> None:
    train, valid = _groups(seed=1, n_queries=200), _groups(seed=2, n_queries=100)
    blend = {"f4": 0.5, "f1": 2.0}
    ranker = LambdaMART(
        base_feature="f5", base_weight=-1.0, base_blend=blend, num_iterations=30, eval_at=(5,)
    )
    ranker.fit(train, valid, LTRFitOptions(threads=1))
    x = valid.features.astype(np.float64)
    base = -x[:, 5] + 0.5 * x[:, 4] + 2.0 * x[:, 1]
    base_ndcg = group_ndcg(base, valid.labels, valid.group_sizes, 5)
    assert ranker.info_["base_validation"]["ndcg@5"] == pytest.approx(base_ndcg)
    best = ranker.info_["best_iteration"]
    trees = ranker.booster_.predict(valid.features, num_iteration=best) if best else 0.0
    np.testing.assert_allclose(ranker.score(valid.features), trees + base, rtol=1e-5, atol=1e-5)
    loaded = load_ranker(ranker.save(tmp_path / "r"))
    np.testing.assert_array_equal(loaded.score(valid.features), ranker.score(valid.features))


def test_a_bad_blend_is_refused() -> None:
    with pytest.raises(ConfigError, match="base_blend needs base_feature"):
        LambdaMART(base_blend={"f1": 1.0})
    with pytest.raises(ConfigError, match="base_blend names 'nope'"):
        LambdaMART(base_feature="f0", base_blend={"nope": 1.0}).fit(_groups(), _groups(seed=3))


def test_an_unknown_base_feature_is_refused() -> None:
    with pytest.raises(ConfigError, match="base_feature 'nope'"):
        LambdaMART(base_feature="nope").fit(_groups(), _groups(seed=3))

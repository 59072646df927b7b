"""The compiled tree scorer against LightGBM's own ``Booster.predict`` (the oracle, same run):
bit-for-bit equal scores on random ensembles and rows, rows exactly at thresholds, infinities,
the parallel path; and what it declines (NaN rows, zero-as-missing, categorical splits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privrank.data.query_groups import QueryGroups
from privrank.ranking.ltr import LambdaMART, LTRFitOptions, load_ranker
from privrank.ranking.ltr._compiled_trees import compile_trees

lgb = pytest.importorskip("lightgbm")


def _rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Rows with ties, zeros and many distinct values, like ranking features."""
    x = rng.standard_normal((n, d))
    x[:, 0] = rng.integers(0, 5, n)  # few distinct values
    x[rng.random((n, d)) < 0.2] = 0.0
    return x


def _booster(seed: int, d: int = 7, **params: object) -> tuple[object, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 30, 80)
    x = _rows(rng, int(sizes.sum()), d)
    labels = np.digitize(x[:, 1] + 0.5 * x[:, 2] + 0.3 * rng.standard_normal(len(x)), [0, 1])
    base = {
        "objective": "lambdarank",
        "num_leaves": int(rng.integers(2, 40)),
        "min_data_in_leaf": 5,
        "learning_rate": 0.1,
        "verbosity": -1,
        "num_threads": 1,
        "deterministic": True,
    }
    booster = lgb.train({**base, **params}, lgb.Dataset(x, labels, group=sizes), 40)
    return booster, x


@pytest.mark.parametrize("seed", range(6))
def test_scores_equal_lightgbms_bit_for_bit(seed: int) -> None:
    booster, train_rows = _booster(seed)
    compiled = compile_trees(booster.dump_model())
    assert compiled is not None
    rng = np.random.default_rng(100 + seed)
    rows = _rows(rng, 997, train_rows.shape[1])  # not a multiple of the 4-row lockstep
    # rows exactly at, just below and just above thresholds, and infinities
    thresholds = compiled.thresholds
    for r in range(0, 300, 3):
        node = rng.integers(len(thresholds))
        feature = compiled.features[node]
        rows[r, feature] = thresholds[node]
        rows[r + 1, feature] = np.nextafter(thresholds[node], -np.inf)
        rows[r + 2, feature] = np.nextafter(thresholds[node], np.inf)
    rows[300:310] = np.inf
    rows[310:320] = -np.inf
    for dtype in (np.float64, np.float32):
        x = rows.astype(dtype)
        got = compiled.predict(x)
        assert got is not None
        np.testing.assert_array_equal(got, booster.predict(x))
    # a prefix of the trees, as a ranker with early stopping scores
    prefix = compile_trees(booster.dump_model(num_iteration=17))
    assert prefix is not None and len(prefix.roots) == 17
    np.testing.assert_array_equal(prefix.predict(rows), booster.predict(rows, num_iteration=17))


def test_the_parallel_path_equals_the_serial_one() -> None:
    booster, train_rows = _booster(7)
    compiled = compile_trees(booster.dump_model())
    assert compiled is not None
    rows = _rows(np.random.default_rng(7), 5_003, train_rows.shape[1])
    serial = compiled.predict(rows, threads=1)
    parallel = compiled.predict(rows, threads=2)
    assert serial is not None and parallel is not None
    np.testing.assert_array_equal(parallel, serial)
    np.testing.assert_array_equal(serial, booster.predict(rows))


def test_a_single_leaf_tree_adds_its_value() -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal((40, 3))
    labels = np.zeros(40)  # nothing to split on: every tree is one leaf
    booster = lgb.train(
        {"objective": "regression", "verbosity": -1, "boost_from_average": False},
        lgb.Dataset(x, labels + 1.0),
        3,
    )
    compiled = compile_trees(booster.dump_model())
    assert compiled is not None and (compiled.roots < 0).all()
    np.testing.assert_array_equal(compiled.predict(x), booster.predict(x))


def test_rows_with_nan_and_unsupported_trees_are_declined() -> None:
    booster, train_rows = _booster(9)
    compiled = compile_trees(booster.dump_model())
    assert compiled is not None
    rows = _rows(np.random.default_rng(9), 20, train_rows.shape[1])
    rows[3, 2] = np.nan
    assert compiled.predict(rows) is None
    zero_missing, _ = _booster(10, zero_as_missing=True)
    dump = zero_missing.dump_model()
    assert "Zero" in str(dump["tree_info"])
    assert compile_trees(dump) is None
    rng = np.random.default_rng(11)
    x = _rows(rng, 600, 3)
    labels = (x[:, 0] % 2 == 1).astype(float) + 0.1 * rng.standard_normal(600)
    categorical = lgb.train(
        {"objective": "regression", "verbosity": -1, "min_data_per_group": 5},
        lgb.Dataset(x, labels, categorical_feature=[0]),
        5,
    )
    dump = categorical.dump_model()
    assert "==" in str(dump["tree_info"])
    assert compile_trees(dump) is None
    with pytest.raises(ValueError, match="7 features"):
        compiled.predict(rows[:, :3])


def _groups(seed: int) -> QueryGroups:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 15, 60)
    x = rng.random((int(sizes.sum()), 5)).astype(np.float32)
    labels = np.digitize(2 * x[:, 0] + x[:, 1], [1.0, 1.8]).astype(np.float32)
    return QueryGroups(x, labels, sizes, tuple(f"f{j}" for j in range(5)))


@pytest.mark.parametrize("nan", [False, True])
def test_lambdamart_scores_with_the_compiled_trees_as_lightgbm_does(
    nan: bool, tmp_path: Path
) -> None:
    """The ranker's scores (with a base column) equal LightGBM's trees plus the base, before
    and after a save and load; rows with a NaN are scored by LightGBM itself."""
    train, test = _groups(1), _groups(2)
    ranker = LambdaMART(num_iterations=25, base_feature="f0", base_weight=0.5).fit(
        train, options=LTRFitOptions(threads=1)
    )
    assert ranker.compiled_ is not None
    features = test.features.copy()
    if nan:
        features[::7, 3] = np.nan
    best = ranker.info_["best_iteration"]
    expected = ranker.booster_.predict(features, num_iteration=best) + 0.5 * np.asarray(
        features[:, 0], np.float64
    )
    np.testing.assert_array_equal(ranker.score(features), expected.astype(np.float32))
    loaded = load_ranker(ranker.save(tmp_path / "r"))
    assert isinstance(loaded, LambdaMART) and loaded.compiled_ is not None
    np.testing.assert_array_equal(loaded.score(features), ranker.score(features))

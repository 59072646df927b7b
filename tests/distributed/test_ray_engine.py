"""Gram-based fits on the Ray engine equal the in-process fit; a private one is noised once
and charged once."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from privrank.errors import ConfigError
from privrank.models import EASE, FitOptions, ItemKNN, create_model
from privrank.privacy.gram_release import MatrixGramStatistics
from privrank.privacy.ledger import Ledger
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions
from privrank.workflow.spend import fit_and_spend

pytestmark = pytest.mark.ray

DATA = synthetic_interactions(n_users=300, n_items=60, seed=3)
SPEC = PrivacySpec(epsilon=4.0, max_interactions_per_user=12, noise_seed=7)


@pytest.fixture(scope="module")
def engine(ray_local):
    from privrank.distributed import RayEngine

    return RayEngine(workers=2, partitions=5)


def _fit(model, engine=None, spec=None):
    return model.fit(DATA, FitOptions(seed=0, threads=1, privacy=spec, engine=engine))


def test_partition_sums_equal_the_whole_matrix_sums(engine) -> None:
    # The oracle: the in-process statistics of the same bounded matrix. 0/1 sums are exact;
    # weighted sums differ only by the order of float additions.
    matrix = _binary(DATA)
    local = MatrixGramStatistics(matrix)
    ray_stats = engine.gram_statistics(matrix)
    assert ray_stats.n_partitions == 5 and ray_stats.shape == local.shape
    assert ray_stats.max_row_length() == local.max_row_length()
    np.testing.assert_array_equal(
        ray_stats.weighted_gram(None, math.inf), local.weighted_gram(None, math.inf)
    )
    np.testing.assert_array_equal(ray_stats.weighted_counts(math.inf), local.weighted_counts(1e9))
    items = np.array([5, 3, 40, 11])
    for norm in (2.0, 5.0):
        np.testing.assert_allclose(
            ray_stats.weighted_gram(items, norm), local.weighted_gram(items, norm), rtol=1e-12
        )
        np.testing.assert_allclose(
            ray_stats.weighted_counts(norm), local.weighted_counts(norm), rtol=1e-12
        )
    # ...and the in-process sum itself matches a per-user loop (an independent oracle).
    dense = matrix.toarray()[:, items]
    weights = np.minimum(1.0, 2.0 / np.sqrt(np.maximum(dense.sum(1) * (dense.sum(1) + 1) / 2, 1)))
    loop = sum(w * np.outer(row, row) for w, row in zip(weights, dense, strict=True))
    np.testing.assert_allclose(ray_stats.weighted_gram(items, 2.0), loop, rtol=1e-12)


def _binary(data):
    from privrank.models._query import Query

    indptr, items = data.sequences()
    csr = Query(indptr=indptr.astype(np.int64), items=items.astype(np.int64)).to_csr(data.n_items)
    csr.data[:] = 1.0
    return csr


@pytest.mark.parametrize(
    ("name", "params"),
    [("ease", {"regularization": 30.0}), ("itemknn", {"neighbors": 10, "shrinkage": 5.0})],
)
def test_non_private_fit_on_ray_is_the_in_process_fit_exactly(engine, name, params) -> None:
    local = _fit(create_model(name, params))
    on_ray = _fit(create_model(name, params), engine)
    for key, array in local._state().items():
        np.testing.assert_array_equal(on_ray._state()[key], array)
    codes, _ = local.recommend(np.arange(DATA.n_users), 10)
    np.testing.assert_array_equal(on_ray.recommend(np.arange(DATA.n_users), 10)[0], codes)


@pytest.mark.parametrize("model", [EASE(regularization=30.0), ItemKNN(neighbors=10)])
def test_private_fit_on_ray_adds_the_same_noise_once(engine, model) -> None:
    local = _fit(type(model)(model.config), spec=SPEC)
    on_ray = _fit(model, engine, SPEC)
    # Same noise seed, noise drawn once on the summed statistics: the same release up to the
    # order of float additions of the weighted sums.
    for key, array in local._state().items():
        np.testing.assert_allclose(on_ray._state()[key], array, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(on_ray.item_popularity_, local.item_popularity_, rtol=1e-12)
    assert on_ray.privacy_guarantee_.to_dict() == local.privacy_guarantee_.to_dict()
    assert on_ray.privacy_guarantee_.epsilon == SPEC.epsilon


def test_zero_noise_private_fit_on_ray_is_the_non_private_fit(engine) -> None:
    # DP with zero noise, a cap nobody reaches and no norm bounds is the plain model.
    spec = PrivacySpec(epsilon=1.0, max_interactions_per_user=10_000, noise_seed=0)
    private = {"count_share": 0.0, "count_norm": None, "gram_norm": None, "signal_ratio": None}
    model = EASE(regularization=30.0, private=private)
    options = FitOptions(threads=1, privacy=spec, engine=engine)
    from privrank.privacy.mechanism import _noise_scale_for_testing

    with _noise_scale_for_testing(0.0):
        model.fit(DATA, options)
    plain = _fit(EASE(regularization=30.0))
    np.testing.assert_allclose(model.weights_, plain.weights_, rtol=1e-5, atol=1e-6)


def test_the_ledger_charges_a_ray_fit_once(engine, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as book:
        book.set_budget("toy", 10.0, 1e-2)
    options = FitOptions(threads=1, privacy=SPEC, engine=engine)
    with fit_and_spend(
        EASE(regularization=30.0),
        DATA,
        options,
        budget_key="toy",
        description="ray",
        ledger_url=url,
    ) as fitted:
        assert fitted.model.privacy_guarantee_ is not None
    with Ledger(url) as book:
        (spend,) = book.spends("toy")
        budget = book.budget("toy")
    assert spend.status.value == "committed" and spend.epsilon == SPEC.epsilon
    assert budget.epsilon_remaining == pytest.approx(10.0 - SPEC.epsilon)


def test_a_model_without_a_distributed_fit_refuses_the_engine(engine) -> None:
    with pytest.raises(ConfigError, match="no distributed fit"):
        _fit(create_model("bpr", {"epochs": 1}), engine)


def test_bad_engine_settings_are_refused() -> None:
    from privrank.distributed import RayEngine

    with pytest.raises(ConfigError, match="workers"):
        RayEngine(workers=0)

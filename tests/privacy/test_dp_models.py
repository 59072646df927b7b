"""Private fits of the closed-form models (DP-MostPopular, DP-EASE, DP-ItemKNN): zero noise
equals the non-private model, seeding, the recorded guarantee, refusals, the conformance suite,
and a real-data smoke test on ML-100K."""

from __future__ import annotations

import os

import numpy as np
import pytest

from privrank.errors import ConfigError
from privrank.models import (
    EASE,
    EASESparse,
    FitOptions,
    ItemKNN,
    MostPopular,
    Query,
    Recommender,
    create_model,
)
from privrank.privacy.mechanisms import (
    PrivacyGuarantee,
    _noise_scale_for_testing,
    gram_sensitivity,
    item_count_sensitivity,
)
from privrank.privacy.spec import PrivacySpec
from privrank.testing import RECOMMENDER_CHECKS, synthetic_interactions

DATA = synthetic_interactions(n_users=60, n_items=40, seed=0)
MAX_ITEMS = int(DATA.user_counts().max())

FACTORIES = {
    "most-popular": lambda: MostPopular(),
    "ease": lambda: EASE(regularization=20.0, dtype="float64"),
    "ease-float32": lambda: EASE(regularization=20.0),
    "itemknn": lambda: ItemKNN(neighbors=10, shrinkage=2.0),
    "ease-sparse": lambda: EASESparse(regularization=20.0, neighbors=10, dtype="float64"),
}
SENSITIVITY = {
    MostPopular: item_count_sensitivity,
    EASE: gram_sensitivity,
    ItemKNN: gram_sensitivity,
    EASESparse: gram_sensitivity,
}


def spec(epsilon: float = 4.0, bound: int | None = 6, seed: int | None = 0, **kw) -> PrivacySpec:
    return PrivacySpec(epsilon=epsilon, max_interactions_per_user=bound, noise_seed=seed, **kw)


def private(epsilon: float = 4.0, **kw) -> FitOptions:
    return FitOptions(seed=0, threads=1, privacy=spec(epsilon, **kw))


def state(model: Recommender) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in model._full_state().items()}


# -------------------------------------------------------------------- zero noise = non-private
@pytest.mark.parametrize("name", ["most-popular", "ease", "ease-float32", "itemknn", "ease-sparse"])
def test_zero_noise_without_a_binding_bound_equals_the_non_private_model(name):
    """No noise (test-only switch) and a bound no user reaches: the private fit is the
    non-private one, scores, popularity and all."""
    factory = FACTORIES[name]
    plain = factory().fit(DATA, FitOptions(threads=1))
    with _noise_scale_for_testing(0.0):
        zero = factory().fit(DATA, private(bound=MAX_ITEMS))
    assert not zero.privacy_guarantee_.is_private  # the switch is recorded
    users = np.arange(DATA.n_users)
    histories = Query.histories([[0, 3, 5], [1], [2, 7, 11, 30]])
    np.testing.assert_array_equal(zero.item_popularity_, plain.item_popularity_)
    for query in (users, histories):
        np.testing.assert_allclose(zero.score(query), plain.score(query), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(zero.recommend(users, 5)[0], plain.recommend(users, 5)[0])


def test_zero_noise_with_a_binding_bound_equals_the_non_private_model_on_bounded_data():
    bounded = spec(bound=3).bound_contributions(DATA)
    plain = EASE(regularization=20.0, dtype="float64").fit(bounded, FitOptions(threads=1))
    with _noise_scale_for_testing(0.0):
        zero = EASE(regularization=20.0, dtype="float64").fit(DATA, private(bound=3))
    np.testing.assert_allclose(zero.weights_, plain.weights_, atol=1e-9)
    np.testing.assert_array_equal(zero.item_popularity_, plain.item_popularity_)


# -------------------------------------------------------------------- noise, seeds, guarantee
@pytest.mark.parametrize("name", ["most-popular", "ease", "itemknn"])
def test_same_noise_seed_same_model_other_seed_differs(name):
    factory = FACTORIES[name]
    first = state(factory().fit(DATA, private(seed=11)))
    again = state(factory().fit(DATA, private(seed=11)))
    other = state(factory().fit(DATA, private(seed=12)))
    assert first.keys() == again.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
    assert any(not np.array_equal(first[k], other[k]) for k in first if first[k].dtype.kind == "f")


@pytest.mark.parametrize("name", ["most-popular", "ease", "itemknn"])
def test_private_fit_records_its_guarantee_and_keeps_it_through_save_and_load(name, tmp_path):
    model = FACTORIES[name]().fit(DATA, private(epsilon=2.0, bound=4))
    guarantee = model.privacy_guarantee_
    assert isinstance(guarantee, PrivacyGuarantee)
    assert guarantee.noise_scale_for_testing == 1.0 and guarantee.noise_seed is not None
    assert not guarantee.is_private  # a fixed noise seed is recorded: for tests only
    assert guarantee.epsilon == 2.0 and guarantee.unit == "user"
    assert guarantee.delta == pytest.approx(1 / (10 * DATA.n_users))
    assert guarantee.contribution_bound == 4 and guarantee.accountant == "pld"
    assert guarantee.sensitivity == pytest.approx(SENSITIVITY[type(model)](4))
    assert guarantee.noise_std == pytest.approx(guarantee.noise_multiplier * guarantee.sensitivity)
    loaded = Recommender.load(model.save(tmp_path / "model"))
    assert loaded.privacy_guarantee_ == guarantee
    assert "user-level (ε=2" in loaded.privacy_guarantee_.describe()
    plain = FACTORIES[name]().fit(DATA)
    assert plain.privacy_guarantee_ is None
    assert Recommender.load(plain.save(tmp_path / "plain")).privacy_guarantee_ is None


@pytest.mark.parametrize("name", ["most-popular", "ease", "itemknn"])
def test_cold_start_popularity_is_private(name):
    """The exact popularity is never kept: cold start serves the noisy counts."""
    model = FACTORIES[name]().fit(DATA, private(bound=MAX_ITEMS))
    exact = DATA.to_csr().astype(bool).sum(axis=0).A1.astype(np.float32)
    assert not np.array_equal(model.item_popularity_, exact)
    empty = model.score(Query.histories([[]]))[0]
    np.testing.assert_array_equal(empty, model.item_popularity_)


def test_popularity_noise_matches_the_calibration():
    """DP-MostPopular's scores minus the exact bounded counts: mean 0, variance σ²."""
    options = [private(epsilon=1.0, bound=MAX_ITEMS, seed=s) for s in range(400)]
    exact = DATA.to_csr().astype(bool).sum(axis=0).A1
    models = [MostPopular().fit(DATA, o) for o in options]
    noise = np.concatenate([m.item_popularity_ - exact for m in models]).astype(np.float64)
    sigma = models[0].privacy_guarantee_.noise_std
    n = noise.size
    assert abs(noise.mean()) < 5 * sigma / np.sqrt(n)
    assert abs(noise.var() - sigma**2) < 5 * sigma**2 * np.sqrt(2 / n)


def test_more_privacy_means_more_noise():
    loose = EASE(regularization=20.0).fit(DATA, private(epsilon=8.0)).privacy_guarantee_
    tight = EASE(regularization=20.0).fit(DATA, private(epsilon=0.5)).privacy_guarantee_
    assert tight.noise_std > loose.noise_std


# -------------------------------------------------------------------- refusals
def test_models_without_privacy_support_refuse_a_spec():
    model = create_model("implicit-als", {"factors": 4, "iterations": 1})
    with pytest.raises(ConfigError, match="cannot honour a privacy specification"):
        model.fit(DATA, private())
    assert not model.is_fitted


@pytest.mark.parametrize("name", ["most-popular", "ease", "itemknn"])
def test_invalid_specs_are_refused_before_training(name):
    model = FACTORIES[name]()
    with pytest.raises(ConfigError, match="contribution bound"):
        model.fit(DATA, private(bound=None))
    assert not model.is_fitted
    with pytest.raises(ConfigError, match="delta"):
        model.fit(DATA, FitOptions(privacy=spec(delta=0.5)))
    assert not model.is_fitted
    for bad in ({"epsilon": 0}, {"epsilon": float("inf")}, {"epsilon": 1, "nonsense": 1}):
        with pytest.raises(ConfigError):
            FitOptions(privacy=bad)


def test_a_refit_without_privacy_forgets_the_guarantee():
    model = EASE(regularization=20.0).fit(DATA, private())
    assert model.privacy_guarantee_ is not None
    model.fit(DATA)
    assert model.privacy_guarantee_ is None


# -------------------------------------------------------------------- conformance
CONFORMANCE_SPEC = spec(epsilon=50.0, bound=30, seed=3)


@pytest.mark.parametrize(
    "check",
    [c for n, c in RECOMMENDER_CHECKS.items() if n != "cold_start"],
    ids=[n for n in RECOMMENDER_CHECKS if n != "cold_start"],
)
@pytest.mark.parametrize("factory", FACTORIES.values(), ids=FACTORIES.keys())
def test_conformance_of_private_fits(factory, check, tmp_path, monkeypatch):
    """The whole contract with every fit private. ``cold_start`` pins the exact popularity,
    which a private model must not keep; test_cold_start_popularity_is_private replaces it."""
    cls = type(factory())
    plain_fit = cls.fit

    def fit(self, train, options=None):
        options = FitOptions() if options is None else options
        if options.privacy is None:
            options = options.model_copy(update={"privacy": CONFORMANCE_SPEC})
        return plain_fit(self, train, options)

    monkeypatch.setattr(cls, "fit", fit)
    check(factory, DATA, tmp_path)
    assert factory().fit(DATA).privacy_guarantee_.epsilon == 50.0


# -------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_dp_ease_and_dp_popularity_on_ml100k_holdout():
    if not os.environ.get("PRIVRANK_DATA_DIR"):
        pytest.skip("PRIVRANK_DATA_DIR is not set")
    from privrank.data.catalog import load
    from privrank.data.splits import HoldoutSplit, split
    from privrank.metrics import evaluate
    from privrank.metrics.evaluate import EvaluationConfig

    data = load("ml-100k").interactions
    parts = split(data, HoldoutSplit(fraction=0.2, seed=0))
    config = EvaluationConfig(cutoffs=(10,), metrics=("ndcg",), beyond_accuracy=False)
    results = {}
    for epsilon in (8.0, 1.0):
        options = FitOptions(
            threads=2,
            privacy=PrivacySpec(epsilon=epsilon, max_interactions_per_user=50, noise_seed=0),
        )
        for name, model in (
            ("dp-ease", EASE(regularization=300.0)),
            ("dp-most-popular", MostPopular()),
        ):
            model.fit(parts.train, options)
            ndcg = evaluate(model.score, parts.train, parts.test, config).means["ndcg@10"]
            results[name, epsilon] = ndcg
            print(f"{name} ε={epsilon:g}: NDCG@10 = {ndcg:.4f}")
    assert all(0 < value < 1 for value in results.values())
    assert results["dp-ease", 8.0] > results["dp-most-popular", 8.0]
    assert results["dp-ease", 8.0] > results["dp-ease", 1.0]

"""The seed ensemble of the neural CTR rankers (``ensemble: N``) against N single models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from privrank.data.features import CTRFrame
from privrank.errors import ArtifactError, ConfigError
from privrank.models import FitOptions
from privrank.ranking.ctr import create_ranker, load_ranker
from privrank.ranking.ctr.neural import DEFAULT_ENSEMBLE

SMALL = {"lr": 0.02, "batch_size": 512, "epochs": 4, "embedding_dim": 8}


def _frame(n: int, seed: int) -> CTRFrame:
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 30, n), rng.integers(0, 12, n)
    logit = np.random.default_rng(99).normal(0, 1, (30, 12))[users, items] - 0.5
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    table = pa.table(
        {
            "label": pa.array(y),
            "user": pa.array([f"u{u}" for u in users]),
            "item": pa.array([f"i{i}" for i in items]),
        }
    )
    return CTRFrame(table, ("user", "item"), name="synthetic")


@pytest.mark.parametrize("name", ["fm", "dcn-v2"])
def test_ensemble_is_the_mean_logit_of_single_models_from_consecutive_seeds(name: str) -> None:
    train, valid, test = _frame(3000, 0), _frame(1000, 1), _frame(1500, 2)
    params = SMALL | ({"hidden": [16]} if name == "dcn-v2" else {})
    ensemble = create_ranker(name, params | {"ensemble": 3}).fit(train, valid, FitOptions(seed=5))
    singles = [
        create_ranker(name, params | {"ensemble": 1}).fit(train, valid, FitOptions(seed=5 + i))
        for i in range(3)
    ]
    raw = [s.predict_raw(test) for s in singles]
    logits = np.mean([np.log(p) - np.log1p(-p) for p in raw], axis=0)
    expected = 1.0 / (1.0 + np.exp(-logits))
    got = ensemble.predict_raw(test)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert min(np.abs(got - r).max() for r in raw) > 1e-4  # members differ: not one model


def test_ensemble_one_is_the_first_member_of_the_default_fit_bit_for_bit() -> None:
    train, valid, test = _frame(3000, 0), _frame(1000, 1), _frame(1500, 2)
    default = create_ranker("fm", SMALL).fit(train, valid, FitOptions(seed=1))
    one = create_ranker("fm", SMALL | {"ensemble": 1}).fit(train, valid, FitOptions(seed=1))
    a = default._state()[0]
    b = one._state()[0]
    assert b.keys() == {k for k in a if not k.startswith("member")}
    assert all(np.array_equal(a[k], b[k]) for k in b)  # member 0 of the default fit
    first = default._predict_member(default.members_[0], default.encode(test), logits=False)
    assert np.array_equal(first, one.predict_raw(test))
    assert all("member" not in h for h in one.history_)  # a single model's history, as before


def test_default_rule_is_five_members_in_memory_like_an_explicit_five(tmp_path: Path) -> None:
    train, valid, test = _frame(3000, 0), _frame(1000, 1), _frame(1500, 2)
    default = create_ranker("fm", SMALL)
    assert default.config.ensemble is None
    assert default.config.members_for(private=False, streamed=False) == DEFAULT_ENSEMBLE == 5
    assert default.config.members_for(private=True, streamed=False) == 1
    assert default.config.members_for(private=False, streamed=True) == 1
    default.fit(train, valid, FitOptions(seed=4))
    five = create_ranker("fm", SMALL | {"ensemble": 5}).fit(train, valid, FitOptions(seed=4))
    assert len(default.members_) == 5
    members = [h["member"] for h in default.history_]  # every member's epochs, in turn
    assert members == sorted(members) and set(members) == {0, 1, 2, 3, 4}
    single = create_ranker("fm", SMALL | {"ensemble": 1}).fit(train, valid, FitOptions(seed=4))
    assert [h["val_log_loss"] for h in default.history_ if h["member"] == 0] == [
        h["val_log_loss"] for h in single.history_
    ]
    assert np.array_equal(default.predict_proba(test), five.predict_proba(test))
    loaded = load_ranker(default.save(tmp_path / "m"))  # the saved config says None
    assert len(loaded.members_) == 5
    assert np.array_equal(loaded.predict_proba(test), five.predict_proba(test))


def test_a_saved_member_count_that_contradicts_the_config_is_refused(tmp_path: Path) -> None:
    train, valid = _frame(3000, 0), _frame(1000, 1)
    ranker = create_ranker("fm", SMALL | {"ensemble": 2}).fit(train, valid, FitOptions(seed=0))
    arrays, _, extra = ranker._state()
    single = {k: v for k, v in arrays.items() if not k.startswith("member")}
    with pytest.raises(ArtifactError, match=r"ensemble=2.*1 member"):
        create_ranker("fm", SMALL | {"ensemble": 2})._restore(single, {}, extra)


@pytest.mark.parametrize("name", ["fm", "deepfm"])
def test_saved_then_loaded_ensemble_scores_identically(name: str, tmp_path: Path) -> None:
    train, valid, test = _frame(3000, 0), _frame(1000, 1), _frame(1500, 2)
    params = SMALL | ({"hidden": [16]} if name == "deepfm" else {}) | {"ensemble": 2}
    ranker = create_ranker(name, params).fit(train, valid, FitOptions(seed=3))
    ranker.save(tmp_path / "m")
    loaded = load_ranker(tmp_path / "m")
    assert np.array_equal(ranker.predict_proba(test), loaded.predict_proba(test))
    assert np.array_equal(ranker.predict_raw(test), loaded.predict_raw(test))


def test_ensemble_under_differential_privacy_is_refused() -> None:
    ranker = create_ranker("fm", SMALL | {"ensemble": 2})
    with pytest.raises(ConfigError, match="ensemble"):
        ranker.fit(
            _frame(300, 0),
            _frame(100, 1),
            FitOptions(
                seed=0, privacy={"epsilon": 1, "delta": 1e-5, "max_interactions_per_user": 10}
            ),
        )


def test_ads_serving_scorer_scores_a_saved_ensemble_like_the_ranker(tmp_path: Path) -> None:
    from privrank.ranking.ctr_click import CTRClickScorer

    train, valid = _frame(3000, 0), _frame(1000, 1)
    ranker = create_ranker("fm", SMALL | {"ensemble": 3}).fit(train, valid, FitOptions(seed=2))
    ranker.save(tmp_path / "m")
    scorer = CTRClickScorer.load(tmp_path / "m")
    rng = np.random.default_rng(7)
    users, items = rng.integers(0, 30, 100), rng.integers(0, 12, 100)
    user_values = np.array([f"u{u}" for u in users])  # values seen in training
    item_values = np.array([f"i{i}" for i in items])
    features = {"user": user_values, "item": item_values}
    table = pa.table(
        {
            "label": pa.array(np.zeros(100, dtype=np.int8)),
            "user": pa.array(list(user_values)),
            "item": pa.array(list(item_values)),
        }
    )
    expected = ranker.predict_proba(CTRFrame(table, ("user", "item"), name="serving"))
    np.testing.assert_allclose(scorer.predict_ctr(features), expected, rtol=0, atol=1e-12)
    assert np.ptp(expected) > 0.05  # real scores, not one hashed bucket


def test_logistic_regression_trains_one_member_by_default() -> None:
    """The five-member rule is for the non-convex networks; logistic regression keeps one."""
    logistic = create_ranker("logistic", {"epochs": 2})
    assert logistic.config.members_for(private=False, streamed=False) == 1
    logistic.fit(_frame(2000, 0), _frame(500, 1), FitOptions(seed=0))
    assert len(logistic.members_) == 1
    assert create_ranker("fm", {}).config.members_for(private=False, streamed=False) == 5

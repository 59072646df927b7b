"""CTR rankers: the contract on synthetic rows whose click probability is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from privrank.data.features import CTRFrame
from privrank.errors import ArtifactError, ConfigError, NotTrainedError
from privrank.metrics.ctr import auc, expected_calibration_error
from privrank.models import FitOptions
from privrank.ranking.ctr import CTR_RANKERS, create_ranker, load_ranker

SMALL = {
    "logistic": {"lr": 0.05, "batch_size": 512, "epochs": 8},
    "fm": {"lr": 0.02, "batch_size": 512, "epochs": 8, "embedding_dim": 4},
    "deepfm": {"batch_size": 512, "epochs": 4, "hidden": (32, 32), "embedding_dim": 4},
    "dcn-v2": {"batch_size": 512, "epochs": 4, "hidden": (32,), "embedding_dim": 4},
    "finalmlp": {
        "batch_size": 512,
        "epochs": 10,
        "lr": 0.005,
        "hidden": (32,),
        "hidden2": (32,),
        "heads": 4,
        "embedding_dim": 4,
    },
    "lightgbm": {"num_boost_round": 60, "num_leaves": 15},
    "deepctr-deepfm": {"batch_size": 512, "epochs": 3, "hidden": (32,), "embedding_dim": 4},
    "deepctr-dcn": {"batch_size": 512, "epochs": 3, "hidden": (32,), "embedding_dim": 4},
}


def synthetic(n: int, seed: int) -> tuple[CTRFrame, np.ndarray]:
    """Rows with three fields; the true logit is a user effect plus a user × item interaction."""
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 50, n), rng.integers(0, 20, n)
    hour = rng.integers(0, 24, n)
    effect = np.random.default_rng(99).normal(0, 1, (50, 20))
    logit = effect[users, items] + np.random.default_rng(98).normal(0, 1, 50)[users] - 0.5
    p = 1 / (1 + np.exp(-logit))
    y = (rng.uniform(size=n) < p).astype(np.int8)
    table = pa.table(
        {
            "label": pa.array(y),
            "user": pa.array([f"u{u}" for u in users]),
            "item": pa.array([f"i{i}" for i in items]),
            "hour": pa.array([str(h) for h in hour]),
        }
    )
    return CTRFrame(table, ("user", "item", "hour"), user_field="user", name="synthetic"), p


@pytest.fixture(scope="module")
def parts() -> tuple[CTRFrame, CTRFrame, CTRFrame, np.ndarray]:
    train, _ = synthetic(6000, 0)
    valid, _ = synthetic(2000, 1)
    test, p = synthetic(3000, 2)
    return train, valid, test, p


def test_every_registered_ranker_is_tested() -> None:
    assert set(SMALL) == set(CTR_RANKERS)


@pytest.mark.parametrize("name", list(SMALL))
def test_fit_predict_save_load(name: str, parts, tmp_path: Path) -> None:
    train, valid, test, truth = parts
    reports = []
    ranker = create_ranker(name, SMALL[name])
    with pytest.raises(NotTrainedError):
        ranker.predict_proba(test)
    ranker.fit(train, valid, FitOptions(seed=0, threads=1, progress=reports.append))
    assert reports and all("val_log_loss" in r.metrics and "val_auc" in r.metrics for r in reports)
    p = ranker.predict_proba(test)
    y = test.labels
    assert p.shape == (len(test),) and np.all((p > 0) & (p < 1))
    # learns the signal: well above chance, and not far from the true probabilities' AUC
    assert auc(y, p) > 0.5 + 0.5 * (auc(y, truth) - 0.5)
    saved = ranker.save(tmp_path / name)
    again = load_ranker(saved)
    np.testing.assert_allclose(again.predict_proba(test), p, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(again.predict_raw(test), ranker.predict_raw(test), rtol=1e-6)


def test_early_stopping_keeps_the_best_validation_epoch(parts) -> None:
    train, valid, _, _ = parts
    params = {"lr": 0.05, "epochs": 30, "patience": 2, "embedding_dim": 8, "ensemble": 1}
    ranker = create_ranker("fm", params)  # one network: its epochs are the whole history
    ranker.fit(train, valid, FitOptions(seed=0, threads=1))
    losses = [h["val_log_loss"] for h in ranker.history_]
    assert len(losses) < 30  # stopped early
    best = int(np.argmin(losses))
    assert len(losses) == best + 1 + 2  # two epochs without improvement, then stop
    raw = ranker.predict_raw(valid)
    from privrank.metrics.ctr import log_loss

    assert log_loss(valid.labels, raw) == pytest.approx(losses[best], rel=1e-6)


def test_isotonic_calibration_on_validation_is_calibrated_on_test(parts) -> None:
    train, _, _, _ = parts
    big_valid, _ = synthetic(20000, 5)
    calibrated = create_ranker("logistic", SMALL["logistic"] | {"calibration": "isotonic"})
    calibrated.fit(train, big_valid, FitOptions(seed=0, threads=1))
    big_test, _ = synthetic(20000, 6)
    y = big_test.labels
    assert expected_calibration_error(y, calibrated.predict_proba(big_test)) < 0.02
    platt = create_ranker("logistic", SMALL["logistic"] | {"calibration": "platt"})
    platt.fit(train, big_valid, FitOptions(seed=0, threads=1))
    # Platt is monotone: the ranking (AUC) is that of the raw model
    assert auc(y, platt.predict_proba(big_test)) == pytest.approx(
        auc(y, platt.predict_raw(big_test)), abs=1e-12
    )


def test_same_seed_same_model_and_tampering_is_refused(parts, tmp_path: Path) -> None:
    train, valid, test, _ = parts
    a = create_ranker("deepfm", SMALL["deepfm"]).fit(train, valid, FitOptions(seed=3, threads=1))
    b = create_ranker("deepfm", SMALL["deepfm"]).fit(train, valid, FitOptions(seed=3, threads=1))
    np.testing.assert_array_equal(a.predict_raw(test), b.predict_raw(test))
    path = a.save(tmp_path / "m")
    data = (path / "arrays.safetensors").read_bytes()
    (path / "arrays.safetensors").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ArtifactError, match="checksum"):
        load_ranker(path)


def test_bad_parameters_and_privacy_are_refused(parts) -> None:
    train, valid, _, _ = parts
    with pytest.raises(ConfigError, match="embedding_dim"):
        create_ranker("deepfm", {"embedding_dim": 0})
    with pytest.raises(ConfigError, match="unknown CTR ranker"):
        create_ranker("nope")
    with pytest.raises(ConfigError, match="differential privacy"):  # a peer cannot train privately
        create_ranker("lightgbm").fit(
            train,
            valid,
            FitOptions(privacy={"epsilon": 1, "delta": 1e-5, "max_interactions_per_user": 10}),
        )


def test_isotonic_map_matches_scikit_learn() -> None:
    from sklearn.isotonic import IsotonicRegression

    from privrank.ranking.ctr import fit_calibrator

    rng = np.random.default_rng(0)
    p = np.round(rng.uniform(0, 1, 3000), 3)
    y = (rng.uniform(size=3000) < p**2).astype(float)
    ours = fit_calibrator("isotonic", p, y)
    oracle = IsotonicRegression(out_of_bounds="clip").fit(p, y)
    grid = np.unique(p)
    np.testing.assert_allclose(
        ours.apply(grid), np.clip(oracle.predict(grid), 1e-6, 1 - 1e-6), atol=1e-9
    )

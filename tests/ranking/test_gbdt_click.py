"""The LightGBM click model: save/load in LightGBM's text format, checksum, RR calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privrank.errors import ArtifactError, NotTrainedError
from privrank.ranking.click_scorer import ClickScorer
from privrank.ranking.gbdt_click import GBDTClickConfig, GBDTClickModel
from privrank.workflow.label_dp_training import fit_label_dp


def _data(n=20_000, seed=0):
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 8, n)
    x = rng.normal(size=n)
    p = 1 / (1 + np.exp(-(-2 + 0.4 * group - 0.5 * x)))
    return {"group": group, "x": x}, (rng.random(n) < p).astype(int), p


def test_save_load_round_trip_and_checksum(tmp_path):
    features, labels, _ = _data()
    model = GBDTClickModel(["group", "x"], ["group"], GBDTClickConfig(n_estimators=20)).fit(
        features, labels
    )
    assert isinstance(model, ClickScorer)
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "model.txt").read_text().startswith("tree")
    loaded = GBDTClickModel.load(tmp_path / "m")
    assert np.array_equal(loaded.predict_ctr(features), model.predict_ctr(features))
    text = (tmp_path / "m" / "model.txt").read_text()
    (tmp_path / "m" / "model.txt").write_text(text.replace("tree", "tree ", 1))
    with pytest.raises(ArtifactError, match="checksum"):
        GBDTClickModel.load(tmp_path / "m")
    with pytest.raises(NotTrainedError):
        GBDTClickModel(["x"]).predict_ctr({"x": np.zeros(1)})


def test_label_dp_at_infinite_epsilon_is_the_non_private_fit():
    features, labels, _ = _data()
    config = GBDTClickConfig(n_estimators=20)
    private, guarantee, _ = fit_label_dp(
        features,
        labels,
        math.inf,
        config=config,
        seed=3,
        feature_names=["group", "x"],
        categorical=["group"],
    )
    assert guarantee is None
    order = np.random.default_rng(3).permutation(labels.size)
    plain = GBDTClickModel(["group", "x"], ["group"], config).fit(
        {k: v[order] for k, v in features.items()}, labels[order]
    )
    assert np.array_equal(private.predict_ctr(features), plain.predict_ctr(features))


def test_randomised_response_inverse_calibrates_the_noisy_model():
    features, labels, p = _data(n=100_000, seed=1)
    model, guarantee, reports = fit_label_dp(
        features,
        labels,
        1.0,
        config=GBDTClickConfig(n_estimators=30, num_leaves=7),
        feature_names=["group", "x"],
        categorical=["group"],
        noise_rng=np.random.default_rng(0),
    )
    assert guarantee is not None and guarantee.epsilon == 1.0
    assert reports[0].agreement == pytest.approx(math.e / (math.e + 1), abs=0.01)
    predicted = model.predict_ctr(features)
    # Calibrated in the large: the mean prediction is the true click rate.
    assert predicted.mean() == pytest.approx(p.mean(), abs=0.01)


def test_soft_labels_of_zero_and_one_fit_the_binary_model_and_bad_ones_are_refused():
    # cross_entropy with 0/1 targets is the binary log loss: the same trees, the same scores.
    from privrank.errors import ConfigError

    rng = np.random.default_rng(0)
    n = 4000
    f = {"a": rng.integers(0, 20, n), "b": rng.normal(size=n)}
    y = (rng.random(n) < 1 / (1 + np.exp(-(f["a"] / 10 - 1 + f["b"])))).astype(int)
    cfg = GBDTClickConfig(n_estimators=20, num_leaves=7, min_data_in_leaf=20, threads=1)
    hard = GBDTClickModel(["a", "b"], ["a"], cfg).fit(f, y)
    soft = GBDTClickModel(["a", "b"], ["a"], cfg).fit(f, y.astype(float), soft_labels=True)
    assert np.allclose(hard.predict_ctr(f), soft.predict_ctr(f))
    with pytest.raises(ConfigError):
        GBDTClickModel(["a", "b"], ["a"], cfg).fit(f, y * 2.0, soft_labels=True)
    with pytest.raises(ConfigError):
        GBDTClickModel(["a", "b"], ["a"], cfg).fit(f, y, soft_labels=True, label_keep=0.7)

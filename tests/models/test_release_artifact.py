"""Release artifacts: a private model saved without what its guarantee does not cover."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file

from privrank.errors import ConfigError
from privrank.models import EASE, FitOptions, MostPopular, Query, Recommender
from privrank.privacy.mechanisms import _noise_scale_for_testing
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions

SPEC = PrivacySpec(epsilon=4.0, max_interactions_per_user=6)  # secure noise: releasable


@pytest.fixture(scope="module")
def data():
    return synthetic_interactions(40, 25, per_user=7, seed=2)


def _private_ease(data) -> EASE:
    return EASE(regularization=50.0).fit(data, FitOptions(privacy=SPEC))


def test_release_keeps_the_item_side_and_drops_every_user(tmp_path: Path, data) -> None:
    model = _private_ease(data)
    model.save(tmp_path / "full")
    model.save(tmp_path / "release", release=True)

    header = json.loads((tmp_path / "release" / "model.json").read_text())
    assert header["release"] is True and header["n_users"] == 0
    assert header["privacy"] == model.privacy_guarantee_.to_dict()
    users = [p for p in (tmp_path / "release").iterdir() if "user" in p.name]
    assert users and all(pq.read_table(p).num_rows == 0 for p in users)
    arrays = load_file(tmp_path / "release" / "arrays.safetensors")
    assert arrays["base.history_items"].size == 0
    assert arrays["base.history_indptr"].tolist() == [0]
    np.testing.assert_array_equal(arrays["model.weights"], model.weights_)

    released = Recommender.load(tmp_path / "release")
    assert released.is_release_ and released.n_users_ == 0 and len(released.user_ids_) == 0
    histories = Query.histories([[0, 3, 5], [7], []])
    np.testing.assert_array_equal(released.score(histories), model.score(histories))
    # A training user is unknown to the release: it gets the private popularity (cold start).
    user = data.user_ids[0].as_py()
    recs = released.recommend_for_users([user], 5)
    cold = model.recommend_for_histories([[]], 5)
    assert recs.known.tolist() == [False] and recs.item_ids == cold.item_ids
    with pytest.raises(ConfigError, match="not a user"):
        released.score(Query.users([0]))
    # Saving a release again keeps it a release.
    released.save(tmp_path / "again", release=True)
    assert Recommender.load(tmp_path / "again").is_release_


def test_only_a_genuinely_private_fit_can_be_released(tmp_path: Path, data) -> None:
    with pytest.raises(ConfigError, match="without differential privacy"):
        MostPopular().fit(data).save(tmp_path / "public", release=True)
    with _noise_scale_for_testing(0.0):
        broken = _private_ease(data)
    with pytest.raises(ConfigError, match="not private"):
        broken.save(tmp_path / "broken", release=True)
    assert not (tmp_path / "public").exists() and not (tmp_path / "broken").exists()


def test_release_of_dp_ials_drops_the_user_factors(tmp_path: Path, data) -> None:
    from privrank.models import IALS

    spec = PrivacySpec(epsilon=8.0, max_interactions_per_user=6)
    model = IALS().fit(data, FitOptions(privacy=spec))
    model.save(tmp_path / "release", release=True)
    arrays = load_file(tmp_path / "release" / "arrays.safetensors")
    assert arrays["model.user_factors"].shape[0] == 0
    np.testing.assert_array_equal(arrays["model.item_factors"], model.item_factors_)
    released = Recommender.load(tmp_path / "release")
    histories = Query.histories([[0, 3, 5], [7]])
    np.testing.assert_allclose(released.score(histories), model.score(histories), rtol=1e-5)


def test_release_of_dp_bpr_drops_the_user_factors(tmp_path: Path, data) -> None:
    from privrank.models import BPR

    spec = PrivacySpec(epsilon=8.0, max_interactions_per_user=6)
    model = BPR(epochs=2).fit(data, FitOptions(privacy=spec))
    model.save(tmp_path / "release", release=True)
    arrays = load_file(tmp_path / "release" / "arrays.safetensors")
    assert arrays["model.user_factors"].shape[0] == 0
    np.testing.assert_array_equal(arrays["model.item_factors"], model.item_factors_)
    released = Recommender.load(tmp_path / "release")
    assert released.is_release_
    # Fold-in is post-processing of the released item parameters: no user data is needed.
    histories = Query.histories([[0, 3, 5], [7], []])
    np.testing.assert_array_equal(released.score(histories), model.score(histories))

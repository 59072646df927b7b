"""Artifacts written before each model's private settings moved into its ``private`` block."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privrank.errors import ArtifactError
from privrank.models import IALS, FitOptions, Recommender
from privrank.models._artifact import read_artifact, write_artifact
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions

# The flat keys an older privrank wrote into every iALS artifact (defaults of that version).
OLD_IALS_KEYS = {
    "private_count_weight": 1.0,
    "private_epochs": 2,
    "private_factors": 12,
    "private_item_grams": False,
    "private_min_count": 2.0,
    "private_normalize": True,
    "private_regularization": 0.3,
    "private_unobserved_weight": 0.3,
    "private_weighted_bound": 30,
}


@pytest.fixture(scope="module")
def data():
    return synthetic_interactions(40, 25, per_user=7, seed=2)


def _as_written_by_an_older_privrank(directory: Path, out: Path, privacy: dict | None) -> Path:
    artifact = read_artifact(directory)
    header = {k: v for k, v in artifact.header.items() if k not in ("format", "format_version")}
    config = {k: v for k, v in header["config"].items() if k != "private"}
    header["config"] = {**config, **OLD_IALS_KEYS}
    header["privacy"] = privacy
    return write_artifact(out, header, artifact.arrays, artifact.user_ids, artifact.item_ids)


def test_a_non_private_artifact_with_flat_private_keys_loads_and_scores_the_same(
    tmp_path: Path, data
) -> None:
    model = IALS(factors=4, epochs=2).fit(data, FitOptions(seed=0, threads=1))
    model.save(tmp_path / "new")
    old = _as_written_by_an_older_privrank(tmp_path / "new", tmp_path / "old", privacy=None)

    loaded = Recommender.load(old)

    assert loaded.config.private is None
    assert loaded.config == model.config
    users = np.arange(5)
    np.testing.assert_array_equal(loaded.score(users), model.score(users))


def test_an_old_private_artifact_is_refused_with_a_message_to_retrain(tmp_path: Path, data):
    model = IALS(factors=4, epochs=2).fit(data, FitOptions(seed=0, threads=1))
    model.save(tmp_path / "new")
    flat_guarantee = {"mechanism": "dp-als", "epsilon": 8.0, "noise_multiplier": 3.0}
    old = _as_written_by_an_older_privrank(tmp_path / "new", tmp_path / "old", flat_guarantee)

    with pytest.raises(ArtifactError, match=r"saved by an older privrank.*retrain the model"):
        Recommender.load(old)


def test_a_new_private_artifact_round_trips(tmp_path: Path, data) -> None:
    spec = PrivacySpec(epsilon=8.0, max_interactions_per_user=7)
    model = IALS(factors=4, epochs=2).fit(data, FitOptions(seed=0, threads=1, privacy=spec))
    model.save(tmp_path / "private")

    loaded = Recommender.load(tmp_path / "private")

    assert loaded.privacy_guarantee_ == model.privacy_guarantee_

"""The trained-model directory: one writer, one reader, the checksum cross-check always made."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from privrank.errors import ArtifactError
from privrank.models import EASE, MostPopular
from privrank.testing import synthetic_interactions
from privrank.workflow.model_dir import (
    MODEL_DIR,
    TRAINING_FILE,
    load_trained,
    locate,
    read_model_dir,
    training_record,
    write_trained,
)

DATA = synthetic_interactions(n_users=30, n_items=20, seed=4)
FIT = {"seed": 0, "threads": 1, "seconds": 0.1, "history_mode": "users"}


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    model = EASE(regularization=10.0).fit(DATA)
    record = training_record(model, fit=FIT, data={"kind": "dataset", "train_fingerprint": "f"})
    return write_trained(tmp_path / "run", model, record)


def test_written_directories_read_back(trained: Path) -> None:
    loaded = load_trained(trained)
    record = json.loads((trained / TRAINING_FILE).read_text())
    assert loaded.record == record and loaded.history_mode == "users"
    assert record["format"] == "privrank.training" and record["version"] == 1
    assert record["model"]["name"] == "ease" and "model_checksums_sha256" in record
    assert loaded.model_path == trained / MODEL_DIR
    expected = EASE(regularization=10.0).fit(DATA).score(np.arange(3))
    np.testing.assert_array_equal(loaded.model.score(np.arange(3)), expected)
    assert locate(trained) == (trained / MODEL_DIR, record)


def test_a_bare_model_directory_is_read_without_a_record(trained: Path) -> None:
    loaded = read_model_dir(trained / MODEL_DIR)
    assert loaded.record is None and loaded.model.name == "ease"
    with pytest.raises(ArtifactError, match=r"training\.json is missing"):
        load_trained(trained / MODEL_DIR)


def test_a_swapped_model_fails_the_cross_check(trained: Path, tmp_path: Path) -> None:
    MostPopular().fit(DATA).save(tmp_path / "other")
    shutil.rmtree(trained / MODEL_DIR)
    shutil.copytree(tmp_path / "other", trained / MODEL_DIR)
    for read in (load_trained, read_model_dir, locate):
        with pytest.raises(ArtifactError, match=r"not the model its training\.json describes"):
            read(trained)


def test_a_record_without_the_checksum_fails_the_cross_check(trained: Path) -> None:
    record = json.loads((trained / TRAINING_FILE).read_text())
    del record["model_checksums_sha256"]
    (trained / TRAINING_FILE).write_text(json.dumps(record))
    with pytest.raises(ArtifactError, match="not the model"):
        read_model_dir(trained)


@pytest.mark.parametrize(
    "text", ["not json", "[]", '{"format": "privrank.training", "version": 2}', "{}"]
)
def test_malformed_records_are_refused(trained: Path, text: str) -> None:
    (trained / TRAINING_FILE).write_text(text)
    with pytest.raises(ArtifactError, match="training record"):
        load_trained(trained)


def test_neither_layout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a model directory"):
        read_model_dir(tmp_path)

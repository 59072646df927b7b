"""The model store: versions, atomic activation and rollback, corrupted versions refused, hot
swap without disturbing requests in flight."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from privrank.errors import ArtifactError
from privrank.serving import ConflictError, ModelStore, NotFoundError, UnavailableError

from ._util import auth


@pytest.fixture
def store_dir(tmp_path, model_dir, popular_dir) -> Path:
    """A store with v1 (EASE) and v2 (most-popular), v2 active after v1."""
    root = tmp_path / "store"
    store = ModelStore(root)
    assert store.add(model_dir) == "v1"
    assert store.add(popular_dir) == "v2"
    store.activate("v1")
    store.activate("v2")
    return root


def corrupt(root: Path, version: str) -> None:
    arrays = root / "versions" / version / "arrays.safetensors"
    data = bytearray(arrays.read_bytes())
    data[-1] ^= 0xFF
    arrays.write_bytes(bytes(data))


def test_add_activate_and_rollback(store_dir) -> None:
    store = ModelStore(store_dir)
    served = store.start()
    assert served.version == "v2" and served.model.name == "most-popular"
    assert [v.version for v in store.versions()] == ["v1", "v2"]
    assert [v.active for v in store.versions()] == [False, True]
    assert [v.model for v in store.versions()] == ["ease", "most-popular"]
    assert store.rollback().version == "v1"
    assert store.current.model.name == "ease"
    pointer = json.loads((store_dir / "ACTIVE.json").read_text())
    assert pointer["active"] == "v1" and pointer["history"] == []
    with pytest.raises(ConflictError, match="no earlier model version"):
        store.rollback()
    # A fresh process reads the same state.
    assert ModelStore(store_dir).start().version == "v1"


def test_new_store_starts_on_the_newest_version(tmp_path, model_dir, popular_dir) -> None:
    store = ModelStore(tmp_path / "s")
    with pytest.raises(UnavailableError, match="holds no version"):
        store.start()
    store.add(model_dir, "v2")
    store.add(popular_dir, "v10")
    assert store.start().version == "v10"  # natural order: v10 after v2


def test_add_refuses_duplicates_and_non_models(tmp_path, model_dir) -> None:
    store = ModelStore(tmp_path / "s")
    store.add(model_dir, "a")
    with pytest.raises(ConflictError, match="already exists"):
        store.add(model_dir, "a")
    with pytest.raises(ArtifactError, match="not a model directory"):
        store.add(tmp_path)
    with pytest.raises(NotFoundError):
        store.activate("missing")


def test_a_corrupted_version_is_refused_and_the_previous_keeps_serving(store_dir) -> None:
    store = ModelStore(store_dir)
    store.start()
    corrupt(store_dir, "v1")
    with pytest.raises(ArtifactError, match=r"checksum|SHA-256|modified"):
        store.activate("v1")
    assert store.current.version == "v2"
    assert json.loads((store_dir / "ACTIVE.json").read_text())["active"] == "v2"


def test_start_falls_back_when_the_active_version_is_corrupted(store_dir) -> None:
    corrupt(store_dir, "v2")
    assert ModelStore(store_dir).start().version == "v1"


def write_record(trained: Path, **fields) -> None:
    """A ``privrank train`` record for the model copied into ``trained/model``."""
    listing = hashlib.sha256((trained / "model" / "checksums.json").read_bytes()).hexdigest()
    record = {
        "format": "privrank.training",
        "version": 1,
        "fit": {"history_mode": "users"},
        "data": {"train_fingerprint": "0" * 64},
        "model_checksums_sha256": listing,
        **fields,
    }
    (trained / "training.json").write_text(json.dumps(record))


def test_train_output_directories_are_served(tmp_path, model_dir) -> None:
    trained = tmp_path / "trained"
    shutil.copytree(model_dir, trained / "model")
    privacy = {"epsilon": 1.0, "delta": 1e-6}
    write_record(trained, privacy=privacy, created_at="2026-01-01T00:00:00Z")
    served = ModelStore.single(trained).start()
    assert served.describe()["privacy"] == {"epsilon": 1.0, "delta": 1e-6}


def test_refresh_follows_another_process(store_dir) -> None:
    serving = ModelStore(store_dir)
    serving.start()
    admin = ModelStore(store_dir)  # e.g. another worker that answered POST .../activate
    admin.start()
    admin.activate("v1")
    assert serving.refresh() is True
    assert serving.current.version == "v1"
    assert serving.refresh() is False
    corrupt(store_dir, "v2")
    admin._write_pointer("v2", ["v1"])  # someone points at a corrupted version
    assert serving.refresh() is False
    assert serving.current.version == "v1"


# ------------------------------------------------------------------ through the API
def test_api_lists_activates_and_rolls_back(make_client, store_dir, keys) -> None:
    client = make_client(store_dir=store_dir)
    admin = auth(keys["admin"])
    listing = client.get("/v1/models", headers=auth(keys["read"])).json()
    assert listing["active"]["version"] == "v2"
    assert [v["version"] for v in listing["versions"]] == ["v1", "v2"]
    response = client.post("/v1/models/v1/activate", headers=admin)
    assert response.status_code == 200 and response.json()["model"] == "ease"
    rec = client.post("/v1/recommend", json={"user_id": "u1"}, headers=admin).json()
    assert rec["model_version"] == "v1"
    assert client.post("/v1/models/rollback", headers=admin).json()["version"] == "v2"
    assert client.post("/v1/models/nope/activate", headers=admin).status_code == 404
    assert client.post("/v1/models/bad name!/activate", headers=admin).status_code == 422


def test_api_refuses_a_corrupted_version_with_a_clear_error(make_client, store_dir, keys) -> None:
    client = make_client(store_dir=store_dir)
    corrupt(store_dir, "v1")
    response = client.post("/v1/models/v1/activate", headers=auth(keys["admin"]))
    assert response.status_code == 409
    assert response.json()["error"] == "model_refused"
    assert "arrays.safetensors" in response.json()["message"]
    assert str(store_dir) not in response.json()["message"]  # no absolute paths for clients
    rec = client.post("/v1/recommend", json={"user_id": "u1"}, headers=auth(keys["service"]))
    assert rec.status_code == 200 and rec.json()["model_version"] == "v2"


def test_in_flight_request_finishes_on_the_old_model(make_client, store_dir, keys) -> None:
    client = make_client(store_dir=store_dir)
    old = client.app.state.serving.store.current
    entered, release = threading.Event(), threading.Event()
    original = old.model.recommend

    def slow_recommend(*args, **kwargs):
        entered.set()
        assert release.wait(10)
        return original(*args, **kwargs)

    old.model.recommend = slow_recommend
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            client.post, "/v1/recommend", json={"user_id": "u1"}, headers=auth(keys["service"])
        )
        assert entered.wait(10)
        swap = client.post("/v1/models/v1/activate", headers=auth(keys["admin"]))
        assert swap.status_code == 200
        fresh = client.post("/v1/recommend", json={"user_id": "u1"}, headers=auth(keys["service"]))
        assert fresh.json()["model_version"] == "v1"
        release.set()
        answered = pending.result(10)
    assert answered.status_code == 200
    assert answered.json()["model_version"] == "v2"


def test_swapping_under_concurrent_requests_fails_none(make_client, store_dir, keys) -> None:
    client = make_client(store_dir=store_dir)
    stop = threading.Event()
    statuses: list[int] = []

    def load() -> None:
        headers = auth(keys["service"])
        while not stop.is_set():
            response = client.post("/v1/recommend", json={"user_id": "u1", "k": 5}, headers=headers)
            statuses.append(response.status_code)

    with ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(load) for _ in range(4)]
        for round_ in range(10):
            target = "v1" if round_ % 2 == 0 else "v2"
            assert (
                client.post(
                    f"/v1/models/{target}/activate", headers=auth(keys["admin"])
                ).status_code
                == 200
            )
        stop.set()
        for worker in workers:
            worker.result()
    assert statuses and set(statuses) == {200}


def test_a_train_directory_whose_model_changed_is_refused(tmp_path, model_dir, popular_dir) -> None:
    trained = tmp_path / "trained"
    shutil.copytree(model_dir, trained / "model")
    write_record(trained)
    assert ModelStore.single(trained).start().model.name == "ease"
    shutil.rmtree(trained / "model")
    shutil.copytree(popular_dir, trained / "model")  # a valid model, but not the trained one
    with pytest.raises(ArtifactError, match=r"not the model its training\.json describes"):
        ModelStore.single(trained).start()


def test_a_train_directory_without_its_checksum_cross_check_is_refused(tmp_path, model_dir):
    trained = tmp_path / "trained"
    shutil.copytree(model_dir, trained / "model")
    write_record(trained, model_checksums_sha256=None)
    with pytest.raises(ArtifactError, match=r"not the model its training\.json describes"):
        ModelStore.single(trained).start()
    (trained / "training.json").unlink()
    with pytest.raises(ArtifactError, match=r"training\.json is missing"):
        ModelStore.single(trained).start()


def test_describe_reports_the_models_privacy_guarantee(model_dir) -> None:
    served = ModelStore.single(model_dir).start()
    assert served.describe()["privacy"] is None  # trained without differential privacy
    guarantee = {"epsilon": 2.0, "delta": 1e-6, "unit": "user"}
    served.model.privacy_guarantee_ = SimpleNamespace(to_dict=lambda: guarantee)
    assert served.describe()["privacy"] == guarantee

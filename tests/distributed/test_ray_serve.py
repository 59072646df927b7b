"""The privrank API on Ray Serve: a local Ray instance, queried over HTTP on 127.0.0.1."""

from __future__ import annotations

import socket
import time

import pytest

from privrank.data import Interactions
from privrank.errors import ConfigError
from privrank.models import create_model
from privrank.serving import KeyStore, ServeSettings, make_engine

pytestmark = pytest.mark.ray

serve = pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train() -> Interactions:
    # u0-u9 use items 100-114, u10-u19 items 115-129.
    users, items = [], []
    for user in range(20):
        first = 100 if user < 10 else 115
        for offset in range(8):
            users.append(f"u{user}")
            items.append(first + (user + 2 * offset) % 15)
    return Interactions.from_columns(users, items)


@pytest.fixture(scope="module")
def served(tmp_path_factory, ray_local):
    from privrank.distributed import run_on_ray_serve

    root = tmp_path_factory.mktemp("ray-serve")
    model_dir = root / "model"
    create_model("ease", {"regularization": 10.0}).fit(_train()).save(model_dir)
    database_url = f"sqlite:///{root / 'serving.sqlite'}"
    engine = make_engine(database_url)
    keys = {
        s: KeyStore(engine).create(s, name=f"{s}-key").secret for s in ("read", "service", "write")
    }
    engine.dispose()
    settings = ServeSettings(model_dir=model_dir, database_url=database_url, rate_limit=0)
    port = _free_port()
    try:
        run_on_ray_serve(settings, host="127.0.0.1", port=port, num_replicas=1)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield base, keys
    finally:
        serve.shutdown()  # Ray itself is the session's (conftest.ray_local)


def test_recommend_over_http(served) -> None:
    base, keys = served
    headers = {"Authorization": f"Bearer {keys['service']}"}
    answer = httpx.post(f"{base}/v1/recommend", json={"user_id": "u0", "k": 5}, headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] and len(body["items"]) == 5
    # u0 lives in the cluster of items 100-114: its recommendations come from there.
    assert all(100 <= int(item["item_id"]) < 115 for item in body["items"])


def test_security_behaviours_are_the_same(served) -> None:
    base, keys = served
    body = {"user_id": "u0", "k": 5}
    assert httpx.post(f"{base}/v1/recommend", json=body).status_code == 401
    read = {"Authorization": f"Bearer {keys['read']}"}
    event = {"event_id": "e1", "user_id": "u1", "item_id": 100, "timestamp": "2026-01-01T00:00:00Z"}
    assert (
        httpx.post(f"{base}/v1/events", json={"events": [event]}, headers=read).status_code == 403
    )
    invalid = httpx.post(f"{base}/v1/recommend", json={"user_id": "u0", "k": 0}, headers=read)
    assert invalid.status_code == 422 and invalid.json()["fields"][0]["field"] == "k"


def test_events_are_ingested(served) -> None:
    base, keys = served
    headers = {"Authorization": f"Bearer {keys['write']}"}
    event = {"event_id": "r1", "user_id": "u1", "item_id": 100, "timestamp": "2026-01-01T00:00:00Z"}
    first = httpx.post(f"{base}/v1/events", json={"events": [event]}, headers=headers)
    assert first.status_code == 200 and first.json() == {"accepted": 1, "duplicates": 0}
    again = httpx.post(f"{base}/v1/events", json={"events": [event]}, headers=headers)
    assert again.json() == {"accepted": 0, "duplicates": 1}


def test_insecure_dev_is_refused_off_loopback(tmp_path) -> None:
    from privrank.distributed import run_on_ray_serve

    settings = ServeSettings(model_dir=tmp_path, insecure_dev=True)
    with pytest.raises(ConfigError, match="loopback"):
        run_on_ray_serve(settings, host="0.0.0.0")

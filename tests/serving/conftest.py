"""Fixtures of the serving tests: tiny trained models, a model store, keys and a test client."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from privrank.data import Interactions
from privrank.models import FitOptions, create_model
from privrank.serving import KeyStore, ServeSettings, make_engine
from privrank.serving.app import create_app

from ._util import cluster_interactions


@pytest.fixture(scope="session")
def train() -> Interactions:
    return cluster_interactions()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, train) -> Path:
    """An EASE model trained on :func:`cluster_interactions`."""
    directory = tmp_path_factory.mktemp("models") / "ease"
    create_model("ease", {"regularization": 10.0}).fit(train).save(directory)
    return directory


@pytest.fixture(scope="session")
def popular_dir(tmp_path_factory, train) -> Path:
    """A most-popular model trained on the same data."""
    directory = tmp_path_factory.mktemp("models") / "popular"
    create_model("most-popular", {}).fit(train).save(directory)
    return directory


@pytest.fixture(scope="session")
def _keys_template(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A database holding one key per scope (created once, copied into each test)."""
    path = tmp_path_factory.mktemp("keys") / "serving.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    store = KeyStore(engine)
    created = {
        s: store.create(s, name=f"{s}-key").secret for s in ("read", "service", "write", "admin")
    }
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path, created


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'serving.sqlite'}"


@pytest.fixture
def keys(_keys_template, database_url: str) -> dict[str, str]:
    """One raw key per scope (``read``, ``write``, ``admin``) in the test's database."""
    template, created = _keys_template
    shutil.copyfile(template, database_url.removeprefix("sqlite:///"))
    return created


@pytest.fixture
def make_client(database_url: str) -> Iterator[Callable[..., TestClient]]:
    """Build a started TestClient from settings overrides (closed after the test)."""
    clients: list[TestClient] = []

    def build(clock=None, **overrides) -> TestClient:
        overrides.setdefault("database_url", database_url)
        client = TestClient(create_app(ServeSettings(**overrides), clock=clock))
        client.__enter__()
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client, model_dir: Path, keys: dict[str, str]) -> TestClient:
    """A client of an app serving the EASE model, with keys of every scope in ``keys``."""
    return make_client(model_dir=model_dir)


@pytest.fixture(scope="session")
def ials(tmp_path_factory):
    """A small iALS (a factor model, so served through a FAISS index) and its saved directory."""
    directory = tmp_path_factory.mktemp("ials") / "model"
    model = create_model("ials", {"factors": 8, "epochs": 4}).fit(
        cluster_interactions(), FitOptions(seed=0)
    )
    model.save(directory)
    return model, directory

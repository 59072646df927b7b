"""``privrank keys`` and ``privrank serve``: key management, refusals, and one real server on
loopback answering HTTP requests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

import privrank.cli.keys  # registers the commands
import privrank.cli.serve  # noqa: F401
from privrank.cli.app import app
from privrank.data import Interactions
from privrank.errors import ConfigError
from privrank.models import create_model

# The console script, with the serving commands registered whether or not main imports them.
CLI = [
    sys.executable,
    "-c",
    "import privrank.cli.keys, privrank.cli.serve; from privrank.cli.main import app; app()",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    users = [f"u{u}" for u in range(12) for _ in range(4)]
    items = [(u * 3 + j) % 10 for u in range(12) for j in range(4)]
    directory = tmp_path_factory.mktemp("serve") / "model"
    create_model("ease", {"regularization": 5.0}).fit(Interactions.from_columns(users, items)).save(
        directory
    )
    return directory


@pytest.fixture
def database(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'serving.sqlite'}"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_keys_create_list_revoke(database) -> None:
    created = run("keys", "create", "--scope", "read", "--name", "web", "--database", database)
    assert created.exit_code == 0, created.output
    raw = created.stdout.strip().splitlines()[-1]
    assert raw.startswith("prk_")
    listed = run("keys", "list", "--database", database)
    assert listed.exit_code == 0 and "web" in listed.stdout and "read" in listed.stdout
    assert raw not in listed.stdout
    revoked = run("keys", "revoke", "web", "--database", database)
    assert revoked.exit_code == 0 and "revoked web" in revoked.stdout
    bad = run("keys", "create", "--scope", "root", "--database", database)
    assert isinstance(bad.exception, ConfigError)


def test_serve_refuses_to_start_without_keys(model_dir, database) -> None:
    result = run("serve", "--model", str(model_dir), "--database", database)
    assert isinstance(result.exception, ConfigError)
    assert "refusing to serve without API keys" in str(result.exception)
    # Revoked keys do not count.
    run("keys", "create", "--scope", "read", "--name", "old", "--database", database)
    run("keys", "revoke", "old", "--database", database)
    result = run("serve", "--model", str(model_dir), "--database", database)
    assert isinstance(result.exception, ConfigError)


def test_insecure_dev_only_on_loopback(model_dir, database) -> None:
    result = run(
        "serve",
        "--model",
        str(model_dir),
        "--database",
        database,
        "--insecure-dev",
        "--host",
        "0.0.0.0",
    )
    assert isinstance(result.exception, ConfigError)
    assert "loopback" in str(result.exception)


def test_serve_needs_exactly_one_model_source(model_dir, database) -> None:
    result = run("serve", "--database", database, "--insecure-dev")
    assert isinstance(result.exception, ConfigError)
    assert "exactly one of model_dir (--model) and store_dir (--store)" in str(result.exception)
    broken = run("serve", "--model", "/nonexistent", "--database", database, "--insecure-dev")
    assert "not a model directory" in str(broken.exception)


# ------------------------------------------------------------------ a real server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    req.add_header("content-type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_ready(base: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.communicate(timeout=30)[1]}")
        try:
            if request(f"{base}/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become ready")


def test_real_server_answers_over_http(model_dir, database, tmp_path) -> None:
    env = {**os.environ, "PRIVRANK_HOME": str(tmp_path / "home")}
    key = run("keys", "create", "--scope", "service", "--database", database).stdout.split()[-1]
    server, base = start_server(["--model", str(model_dir), "--database", database], env)
    try:
        status, body = request(f"{base}/v1/recommend", {"user_id": "u1", "k": 3}, key)
        assert status == 200, body
        assert len(body["items"]) == 3 and body["model_version"] == "model"
        assert request(f"{base}/v1/recommend", {"user_id": "u1"})[0] == 401
        if shutil.which("curl"):
            out = subprocess.run(
                [
                    "curl",
                    "-sS",
                    "-X",
                    "POST",
                    f"{base}/v1/recommend/history",
                    "-H",
                    f"Authorization: Bearer {key}",
                    "-H",
                    "content-type: application/json",
                    "-d",
                    '{"history": [1, 2], "k": 2}',
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            assert len(json.loads(out.stdout)["items"]) == 2
    finally:
        stderr = stop(server)
    assert "POST /v1/recommend 200" in stderr  # the access log, by route
    assert "u1" not in stderr


def test_store_add_and_list(model_dir, tmp_path) -> None:
    store = tmp_path / "store"
    added = run("store", "add", str(store), str(model_dir))
    assert added.exit_code == 0 and "added v1" in added.stdout
    added = run("store", "add", str(store), str(model_dir), "--version", "b", "--activate")
    assert added.exit_code == 0 and "added b (active)" in added.stdout
    listed = run("store", "list", str(store))
    assert listed.stdout.splitlines() == ["* b\tease", "  v1\tease"]  # natural order


def start_server(args: list[str], env: dict) -> tuple[subprocess.Popen, str]:
    """``privrank serve`` on a free loopback port, ready. One worker unless ``args`` names
    ``--workers``: the default (one per usable core) would start dozens on a large CI machine.
    The server gets its own process group, so that :func:`stop` can end its workers too."""
    port = free_port()
    workers = [] if "--workers" in args else ["--workers", "1"]
    server = subprocess.Popen(
        [*CLI, "serve", *args, *workers, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
    except BaseException:
        stop(server)
        raise
    return server, base


def stop(server: subprocess.Popen) -> str:
    """SIGINT (uvicorn's graceful shutdown), then SIGKILL to the whole process group; bounded
    waits throughout, so that a stuck server fails the test instead of hanging the suite."""
    server.send_signal(signal.SIGINT)
    try:
        return server.communicate(timeout=30)[1]
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        return server.communicate(timeout=30)[1]


def make_key(database: str, scope: str, env: dict) -> str:
    created = subprocess.run(
        [*CLI, "keys", "create", "--scope", scope, "--database", database],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    return created.stdout.strip()


@pytest.mark.slow
def test_workers_follow_an_activation(model_dir, database, tmp_path) -> None:
    env = {**os.environ, "PRIVRANK_HOME": str(tmp_path / "home")}
    store = tmp_path / "store"
    run("store", "add", str(store), str(model_dir), "--version", "a", "--activate")
    run("store", "add", str(store), str(model_dir), "--version", "b")
    admin = make_key(database, "admin", env)
    server, base = start_server(
        ["--store", str(store), "--database", database, "--workers", "2"], env
    )
    try:
        status, body = request(f"{base}/v1/models/b/activate", {}, admin)
        assert status == 200, body
        time.sleep(2.5)  # each worker polls ACTIVE.json every second
        versions = {
            request(f"{base}/v1/recommend", {"user_id": "u1"}, admin)[1]["model_version"]
            for _ in range(30)
        }
        assert versions == {"b"}
    finally:
        stop(server)


@pytest.mark.slow
def test_acknowledged_events_survive_a_killed_server(model_dir, database, tmp_path) -> None:
    import threading

    from privrank.serving import EventStore, make_engine

    env = {**os.environ, "PRIVRANK_HOME": str(tmp_path / "home")}
    key = make_key(database, "write", env)
    server, base = start_server(["--model", str(model_dir), "--database", database], env)
    acknowledged: list[str] = []
    stop_sending = threading.Event()

    def send() -> None:
        batch = 0
        while not stop_sending.is_set():
            ids = [f"b{batch}-{i}" for i in range(20)]
            body = {
                "events": [
                    {
                        "event_id": e,
                        "user_id": "u1",
                        "item_id": 1,
                        "timestamp": "2026-01-01T00:00:00Z",
                    }
                    for e in ids
                ]
            }
            try:
                status, _ = request(f"{base}/v1/events", body, key)
            except OSError:
                return  # the server is gone: this batch was never acknowledged
            if status == 200:
                acknowledged.extend(ids)
            batch += 1

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()  # SIGKILL: no shutdown, no flush
    server.communicate(timeout=30)
    stop_sending.set()
    sender.join(30)
    assert len(acknowledged) >= 200
    engine = make_engine(database)
    stored = {e.event_id for e in EventStore(engine).get(acknowledged)}
    engine.dispose()
    assert stored == set(acknowledged)


def test_workers_end_when_their_supervisor_is_killed(model_dir, database, tmp_path) -> None:
    """SIGKILL to uvicorn's supervisor alone: its workers must not go on serving unsupervised.
    Each worker holds the server's stdout and stderr, so the pipes close only once every worker
    has exited; then nothing of the server's process group is left."""
    env = {**os.environ, "PRIVRANK_HOME": str(tmp_path / "home")}
    make_key(database, "read", env)
    server, base = start_server(
        ["--model", str(model_dir), "--database", database, "--workers", "2"], env
    )
    try:
        server.kill()  # the supervisor only, not its process group
        server.communicate(timeout=60)  # EOF on the pipes: every worker has exited
        deadline = time.monotonic() + 30  # multiprocessing's resource tracker follows them
        while live_group_members(server.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert live_group_members(server.pid) == []
        with pytest.raises(OSError):
            request(f"{base}/readyz")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)


def live_group_members(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that are still running (zombies, which a container's
    init may never reap, are dead), from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        state, process_group = fields[0], int(fields[2])
        if process_group == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def test_a_single_process_server_is_not_tied_to_its_parent() -> None:
    from privrank.serving.supervision import end_with_supervisor

    assert end_with_supervisor() is False  # pytest's process has no multiprocessing parent


# ------------------------------------------------------------------ retrieval options
def test_serve_rejects_bad_retrieval_options(model_dir, database) -> None:
    base = ["serve", "--model", str(model_dir), "--database", database, "--insecure-dev"]
    for flags, expected in (
        (["--index", "annoy"], "--index"),
        (["--neighbours", "-1"], "--neighbours"),
        (["--index-recall-floor", "1.5"], "--index-recall-floor"),
    ):
        result = run(*base, *flags)
        assert isinstance(result.exception, ConfigError), result.output
        assert expected in str(result.exception)


def test_startup_builds_and_reports_the_neighbour_matrix(model_dir, database) -> None:
    from privrank.cli.serve import check_startup, describe_retrieval, settings_from_options

    settings = settings_from_options(
        model_dir=model_dir, database_url=database, insecure_dev=True, neighbours=3
    )
    served = check_startup(settings, "127.0.0.1")
    report = served.neighbours.report
    assert report.k == 3 and not report.exact and report.recall_queries == 12
    assert describe_retrieval(served) == (
        f"sparse neighbour matrix (top 3 weights/item), recall@{report.recall_k} "
        f"{report.recall:.3f}"
    )
    default = check_startup(
        settings_from_options(model_dir=model_dir, database_url=database, insecure_dev=True), "::1"
    )
    assert default.neighbours is None  # EASE scores densely unless asked
    assert describe_retrieval(default) == "the model scores every item"


def test_startup_refuses_a_neighbour_matrix_below_the_recall_floor(database, tmp_path) -> None:
    from privrank.data.synthetic import SyntheticConfig, generate
    from privrank.serving.errors import IndexQualityError

    data = generate(SyntheticConfig(n_users=300, n_items=120, n_interactions=3000, seed=0))
    create_model("ease", {"regularization": 50.0}).fit(data).save(tmp_path / "ease")
    result = run(
        "serve",
        "--model",
        str(tmp_path / "ease"),
        "--database",
        database,
        "--insecure-dev",
        "--neighbours",
        "1",
        "--index-recall-floor",
        "0.99",
    )
    assert isinstance(result.exception, IndexQualityError)
    assert "below the floor 0.99" in str(result.exception)


def test_serve_refuses_a_private_training_directory(database, tmp_path) -> None:
    from privrank.errors import ArtifactError
    from privrank.models import FitOptions
    from privrank.privacy.spec import PrivacySpec

    users = [f"u{u}" for u in range(40) for _ in range(5)]
    items = [(u * 7 + i) % 30 for u in range(40) for i in range(5)]
    spec = PrivacySpec(epsilon=8.0, max_interactions_per_user=5)
    model = create_model("most-popular", {}).fit(
        Interactions.from_columns(users, items), FitOptions(privacy=spec)
    )
    model.save(tmp_path / "trained")
    model.save(tmp_path / "release", release=True)
    result = run(
        "serve", "--model", str(tmp_path / "trained"), "--database", database, "--insecure-dev"
    )
    assert isinstance(result.exception, ArtifactError)
    assert "privrank privacy release" in str(result.exception)
    added = run("store", "add", str(tmp_path / "store"), str(tmp_path / "trained"))
    assert isinstance(added.exception, ArtifactError)
    assert not (tmp_path / "store" / "versions" / "v1").exists()
    ok = run("store", "add", str(tmp_path / "store"), str(tmp_path / "release"))
    assert ok.exit_code == 0, ok.output


def test_the_default_worker_count_is_the_usable_cores(monkeypatch) -> None:
    from privrank.cli import serve as serve_cli

    monkeypatch.setattr(serve_cli.os, "sched_getaffinity", lambda _pid: {0, 3, 5})
    assert serve_cli.usable_cores() == 3
    monkeypatch.setattr(serve_cli.os, "sched_getaffinity", lambda _pid: set(range(200)))
    assert serve_cli.usable_cores() == 64

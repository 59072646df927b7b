"""Serving benchmark: load, hot swap under load, crash during ingestion, schema fuzzing.

Everything talks to a real ``privrank serve`` subprocess on 127.0.0.1 (a free port, a temporary
``PRIVRANK_HOME`` holding the serving database, keys made with ``privrank keys create``):

- ``load``: a 64-factor iALS model over a 100k-item catalogue (trained here on synthetic data);
  an open-loop generator in its own process (``bench/serving/loadgen.py``) offers a fixed rate
  of ``POST /v1/recommend`` and measures latency from each request's scheduled time. Offered
  rates 100, 500, 1000 requests/s plus ``--sweep`` rates find the saturation point. In the same
  run, the bare in-process FAISS search of one query (``FactorIndex.search`` exactly as the API
  calls it) is timed, and the ratio of end-to-end p50 to it is reported.
- ``swap``: a load run at a moderate rate while the bench activates versions ``v1``/``v2``
  alternately every few seconds through ``POST /v1/models/{version}/activate``; counts failed
  requests and the versions that answered.
- ``crash``: clients ingest events and record every acknowledged id; the server's whole process
  group is SIGKILLed mid-stream; after a restart every acknowledged id is looked up.
- ``fuzz``: schemathesis generates requests for every operation of the served OpenAPI schema
  (over HTTP, admin key); counts requests and 5xx answers.
- ``badkeys`` (not in ``all``): the ``load`` server (same model, index and workers) at a fixed
  valid rate (``--valid-rates``, the ``service`` key) measured, in the same run, without a
  flood and while a second process (``bench/serving/badkeys.py``) sends bad keys at
  ``--flood-rate``/s from one source address (the per-address limit on failed authentications
  answers 429 after its burst) and from 250 loopback addresses (every key verified), plus a
  control flood of plain ``GET /healthz``; reports valid p50/p99/failures, p99 over its value
  without the flood, worker RSS (psutil) and the bad keys' status counts, and writes
  ``bench/results/serving_badkeys.json`` (``--badkeys-out``).
- ``compare`` (not in ``all``): ``load`` for this checkout and for ``--baseline-src`` (a
  checkout of the commit to compare against, e.g. ``git worktree add --detach DIR COMMIT``)
  side by side: both servers up at once, each rate run on one then the other, medians and the
  saturation-throughput ratio; ``--neighbour`` adds a busy-loop process taking one core.
- ``ray`` (not in ``all``): the same load generator against the Ray Serve deployment
  (:func:`privrank.distributed.run_on_ray_serve`, local ``ray.init``, ``--ray-replicas``) at
  ``--ray-rate`` requests/s.

Usage::

    .venv/bin/python bench/bench_serving.py all --workdir /tmp/privrank-bench-serving
    .venv/bin/python bench/bench_serving.py load --repeats 3 --workers 2 --index hnsw
    .venv/bin/python bench/bench_serving.py ray --repeats 3 --ray-rate 100
    .venv/bin/python bench/bench_serving.py badkeys --repeats 3 --duration 10 --valid-rates 200,500

User recommendations need a ``service`` key (``read`` keys get 403 for a ``user_id``): the load
generator uses ``info["keys"]["service"]``, created in ``prepare`` (and added to a workdir
prepared before the scope existed).

The JSON of every part is written to ``<workdir>/results/`` and a summary is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PRIVRANK = str(BIN / "privrank")
LOADGEN = str(ROOT / "bench" / "serving" / "loadgen.py")
BADKEYS = str(ROOT / "bench" / "serving" / "badkeys.py")
HOST = "127.0.0.1"
N_ITEMS = 100_000
FACTORS = 64


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------- setup
# ``service`` may ask for any user id (what ``/v1/recommend`` with a ``user_id`` needs);
# ``read`` may not (403), so the load generator uses the ``service`` key.
SCOPES = ("read", "service", "write", "admin")


def create_key(home: Path, scope: str) -> str:
    """``privrank keys create --scope <scope>`` in ``home``; the raw key."""
    out = subprocess.run(
        [PRIVRANK, "keys", "create", "--scope", scope, "--name", f"bench-{scope}"],
        env={**os.environ, "PRIVRANK_HOME": str(home)},
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def prepare(workdir: Path, n_users: int, n_interactions: int, epochs: int) -> dict:
    """Train two iALS versions (seeds 0 and 1), put them in a model store, create keys."""
    from privrank.data.synthetic import SyntheticConfig, generate
    from privrank.models import FitOptions, create_model
    from privrank.serving.store import ModelStore

    info_path = workdir / "setup.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        missing = [scope for scope in SCOPES if scope not in info["keys"]]
        if missing:  # a workdir prepared before the 'service' scope existed
            for scope in missing:
                info["keys"][scope] = create_key(Path(info["home"]), scope)
            info_path.write_text(json.dumps(info, indent=2))
        return info
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = generate(
        SyntheticConfig(n_users=n_users, n_items=N_ITEMS, n_interactions=n_interactions, seed=0)
    )
    log(f"generated {n_interactions:,} interactions in {time.perf_counter() - started:.1f}s")
    config = {"factors": FACTORS, "epochs": epochs, "solver": "cg"}
    models = {}
    for version, seed in (("v1", 0), ("v2", 1)):
        started = time.perf_counter()
        model = create_model("ials", config).fit(data, FitOptions(seed=seed))
        directory = workdir / "models" / version
        model.save(directory)
        models[version] = str(directory)
        log(f"trained {version} in {time.perf_counter() - started:.1f}s")
    store = ModelStore(workdir / "store")
    for version, directory in models.items():
        store.add(directory, version, activate=version == "v1")
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    keys = {scope: create_key(home, scope) for scope in SCOPES}
    rng = np.random.default_rng(0)
    users = [str(u) for u in rng.choice(n_users, size=2000, replace=False)]
    info = {
        "models": models,
        "store": str(workdir / "store"),
        "home": str(home),
        "keys": keys,
        "users": users,
        "data": {"n_users": n_users, "n_items": N_ITEMS, "n_interactions": n_interactions},
        "model_config": config,
    }
    info_path.write_text(json.dumps(info, indent=2))
    return info


class Server:
    """``privrank serve`` as a subprocess in its own process group (so SIGKILL reaches the
    uvicorn supervisor and every worker)."""

    def __init__(
        self,
        info: dict,
        args: list[str],
        workers: int,
        logfile: Path,
        source: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.info = info
        # ``source``: a checkout of another commit whose ``src/`` the server imports instead.
        self.source = source
        self.command = [
            PRIVRANK,
            "serve",
            *args,
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--rate-limit",
            "0",
            "--log-level",
            "warning",
        ]
        self.logfile = logfile
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 180.0) -> None:
        import httpx

        handle = open(self.logfile, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            self.command,
            env={
                **os.environ,
                "PRIVRANK_HOME": self.info["home"],
                **({} if self.source is None else {"PYTHONPATH": str(self.source / "src")}),
            },
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        ready = 0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"server exited with {code}; see {self.logfile}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    ready += 1
                    if ready >= 10:  # several answers: every worker is likely up
                        return
                    continue
            time.sleep(0.3)
        self.kill()
        raise RuntimeError(f"server not ready after {timeout}s; see {self.logfile}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


@contextlib.contextmanager
def serving(
    info: dict, args: list[str], workers: int, logfile: Path, source: Path | None = None
) -> Iterator[Server]:
    server = Server(info, args, workers, logfile, source)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run_loadgen(
    server: Server, key: str, users: list[str], rate: float, duration: float, out: Path
) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            LOADGEN,
            "--port",
            str(server.port),
            "--key",
            key,
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--users",
            ",".join(users),
            "--out",
            str(out),
        ]
    )


def load_once(server, key, users, rate, duration, out: Path) -> dict:
    before = loadavg()
    process = run_loadgen(server, key, users, rate, duration, out)
    if process.wait(timeout=duration * 4 + 60) != 0:
        raise RuntimeError(f"loadgen failed at {rate}/s")
    result = json.loads(out.read_text())
    result["loadavg_before"] = before
    result["loadavg_after"] = loadavg()
    return result


# ---------------------------------------------------------------- bare search
def bare_search(
    info: dict, index_kind: str = "auto", queries: int = 2000, rounds: int = 3
) -> list[dict]:
    """Time ``FactorIndex.search`` for one query exactly as ``/v1/recommend`` calls it
    (``k + seen`` results for a known user), and the whole in-process answer; the index is
    built once (as the server builds it) and timed ``rounds`` times."""
    from privrank.models import Query
    from privrank.serving import recommend as answers
    from privrank.serving.store import IndexOptions, ModelStore

    served = ModelStore.single(info["models"]["v1"], index=IndexOptions(kind=index_kind)).start()
    index, model = served.index, served.model
    results = []
    for round_no in range(rounds):
        rng = np.random.default_rng(1 + round_no)
        users = [info["users"][i] for i in rng.integers(0, len(info["users"]), size=queries)]
        search_s, answer_s = [], []
        for user in users:
            code = served.users.code(user)
            seen = int(model.history_indptr_[code + 1] - model.history_indptr_[code])
            vector = index.query_vectors(model, Query.users([code]))
            started = time.perf_counter()
            index.search(vector, 10 + seen)
            search_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            answers.recommend_user(served, user, 10)
            answer_s.append(time.perf_counter() - started)
        results.append(
            {
                "index": index.report.as_dict(),
                "queries": queries,
                "search_p50_ms": 1000 * statistics.median(search_s),
                "search_p99_ms": 1000 * float(np.quantile(search_s, 0.99)),
                "answer_p50_ms": 1000 * statistics.median(answer_s),
                "loadavg": loadavg(),
            }
        )
    return results


# ---------------------------------------------------------------- parts
def part_load(info: dict, args, results: Path) -> dict:
    bare = bare_search(info, args.index, rounds=args.repeats)
    rates = sorted({100, 500, 1000, *args.sweep})
    runs: dict[str, list[dict]] = {str(r): [] for r in rates}
    serve_args = ["--model", info["models"]["v1"], "--index", args.index]
    with serving(info, serve_args, args.workers, results / "load.log") as srv:
        import httpx

        served_index = httpx.get(f"{srv.url}/readyz", timeout=10).json().get("index")
        log(f"server index: {served_index}")
        key, users = info["keys"]["service"], info["users"]
        load_once(srv, key, users, 200, 3, results / "warmup.json")
        for repeat in range(args.repeats):
            for rate in rates:
                result = load_once(
                    srv, key, users, rate, args.duration, results / f"load-{rate}-{repeat}.json"
                )
                runs[str(rate)].append(result)
                log(
                    f"load {rate}/s #{repeat}: {result['throughput_rps']:.0f}/s ok, "
                    f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                    f"failed {result['failed']}, load {result['loadavg_before']}"
                )
    search_p50 = statistics.median(b["search_p50_ms"] for b in bare)
    table = []
    for rate in rates:
        rs = runs[str(rate)]
        med = {
            k: statistics.median(r[k] for r in rs if r[k] is not None)
            for k in ("throughput_rps", "p50_ms", "p99_ms", "failed")
        }
        sustained = all(
            r["ok"] >= 0.99 * r["sent"]
            and r["throughput_rps"] >= 0.95 * rate
            and r["p99_ms"] is not None
            and r["p99_ms"] < 1000
            for r in rs
        )
        table.append(
            {
                "offered_rps": rate,
                **med,
                "p50_runs": [r["p50_ms"] for r in rs],
                "p99_runs": [r["p99_ms"] for r in rs],
                "throughput_runs": [r["throughput_rps"] for r in rs],
                "sustained": sustained,
                "loadavg_runs": [r["loadavg_before"][0] for r in rs],
                "loadavg_after_runs": [r["loadavg_after"][0] for r in rs],
                "p50_over_bare_search": med["p50_ms"] / search_p50,
            }
        )
    sustained_rates = [row["offered_rps"] for row in table if row["sustained"]]
    p50_500 = next(row["p50_ms"] for row in table if row["offered_rps"] == 500)
    summary = {
        "workers": args.workers,
        "index": args.index,
        "served_index": served_index,
        "duration_s": args.duration,
        "repeats": args.repeats,
        "bare": bare,
        "bare_search_p50_ms": search_p50,
        "table": table,
        "highest_sustained_rps": max(sustained_rates) if sustained_rates else None,
        "max_throughput_rps": max(r["throughput_rps"] for rs in runs.values() for r in rs),
        "p50_500_over_bare_search": p50_500 / search_p50,
    }
    return summary


def part_swap(info: dict, args, results: Path) -> dict:
    import httpx

    activations: list[dict] = []
    with serving(info, ["--store", info["store"]], args.workers, results / "swap.log") as srv:
        key, users = info["keys"]["service"], info["users"]
        load_once(srv, key, users, 100, 2, results / "swap-warmup.json")
        out = results / "swap-load.json"
        before = loadavg()
        process = run_loadgen(srv, key, users, args.swap_rate, args.swap_duration, out)
        headers = {"Authorization": f"Bearer {info['keys']['admin']}"}
        version = "v1"
        started = time.monotonic()
        while time.monotonic() - started < args.swap_duration - args.swap_every:
            time.sleep(args.swap_every)
            version = "v2" if version == "v1" else "v1"
            t = time.perf_counter()
            answer = httpx.post(
                f"{srv.url}/v1/models/{version}/activate", headers=headers, timeout=60
            )
            activations.append(
                {
                    "version": version,
                    "status": answer.status_code,
                    "seconds": round(time.perf_counter() - t, 3),
                }
            )
            log(f"activated {version}: {answer.status_code} in {activations[-1]['seconds']}s")
        if process.wait(timeout=args.swap_duration * 4 + 60) != 0:
            raise RuntimeError("loadgen failed during the swap run")
    result = json.loads(out.read_text())
    return {
        "workers": args.workers,
        "offered_rps": args.swap_rate,
        "duration_s": args.swap_duration,
        "swap_every_s": args.swap_every,
        "activations": activations,
        "activations_ok": sum(a["status"] == 200 for a in activations),
        "load": result,
        "loadavg_before": before,
    }


def part_crash(info: dict, args, results: Path) -> dict:
    import httpx

    from privrank.serving import EventStore, make_engine

    acked: list[str] = []
    in_flight: dict[int, list[str]] = {}
    errors = 0
    lock = threading.Lock()
    stop = threading.Event()
    server = Server(info, ["--model", info["models"]["v1"]], args.workers, results / "crash.log")
    server.start()
    url = server.url
    headers = {"Authorization": f"Bearer {info['keys']['write']}"}
    run_id = uuid.uuid4().hex[:8]

    def client(number: int) -> None:
        nonlocal errors
        with httpx.Client(timeout=10) as http:
            batch_no = 0
            while not stop.is_set():
                ids = [f"{run_id}-{number}-{batch_no}-{j}" for j in range(args.batch)]
                batch_no += 1
                body = {
                    "events": [
                        {
                            "event_id": i,
                            "user_id": "u1",
                            "item_id": 1,
                            "timestamp": "2026-01-01T00:00:00Z",
                        }
                        for i in ids
                    ]
                }
                with lock:
                    in_flight[number] = ids
                try:
                    answer = http.post(f"{url}/v1/events", json=body, headers=headers)
                except httpx.HTTPError:
                    with lock:
                        errors += 1
                    return  # the server is gone
                with lock:
                    in_flight.pop(number, None)
                    if answer.status_code == 200:
                        acked.extend(ids)
                    else:
                        errors += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    for thread in threads:
        thread.start()
    time.sleep(args.kill_after)
    with lock:
        acked_at_kill = len(acked)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    unacknowledged = [i for ids in in_flight.values() for i in ids]
    log(f"killed the server with {len(acked)} events acknowledged")
    # Restart on the same database, then look every acknowledged id up.
    server = Server(info, ["--model", info["models"]["v1"]], args.workers, results / "crash.log")
    server.start()
    try:
        engine = make_engine(f"sqlite:///{Path(info['home']) / 'serving.sqlite'}")
        store = EventStore(engine)
        found = 0
        for start in range(0, len(acked), 500):
            found += len(store.get(acked[start : start + 500]))
        in_flight_found = len(store.get(unacknowledged)) if unacknowledged else 0
        engine.dispose()
    finally:
        server.stop()
    return {
        "workers": args.workers,
        "clients": args.clients,
        "batch": args.batch,
        "kill_after_s": args.kill_after,
        "acknowledged": len(acked),
        "acknowledged_at_kill_signal": acked_at_kill,
        "found_after_restart": found,
        "missing": len(acked) - found,
        "in_flight_at_kill": len(unacknowledged),
        "in_flight_found": in_flight_found,
        "client_errors": errors,
        "loadavg": loadavg(),
    }


def part_fuzz(info: dict, args, results: Path) -> dict:
    from collections import Counter

    import schemathesis
    from hypothesis import HealthCheck, given, settings

    statuses: Counter[int] = Counter()
    server_errors: list[str] = []
    with serving(info, ["--store", info["store"]], args.workers, results / "fuzz.log") as srv:
        schema = schemathesis.openapi.from_url(f"{srv.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        headers = {"Authorization": f"Bearer {info['keys']['admin']}"}
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=args.fuzz_examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case) -> None:
                response = case.call(base_url=srv.url, headers=headers, timeout=30)
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    server_errors.append(
                        f"{case.method} {case.formatted_path}: {response.text[:200]}"
                    )

            fuzz()
            log(f"fuzzed {operation.label}: {sum(statuses.values())} requests so far")
    return {
        "operations": len(operations),
        "examples_per_operation": args.fuzz_examples,
        "requests": sum(statuses.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors": len(server_errors),
        "server_error_samples": server_errors[:10],
        "loadavg": loadavg(),
    }


def server_rss(server: Server) -> dict:
    """Resident memory (MiB) of the ``privrank serve`` process tree (the uvicorn supervisor and
    its workers) and the workers' CPU time so far (user + system seconds), by psutil."""
    import psutil

    root = psutil.Process(server.process.pid)
    rss = {}
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            rss[process.pid] = process.memory_info().rss / 2**20
    workers = {pid: mb for pid, mb in rss.items() if pid != root.pid}
    cpu = 0.0
    for process in root.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            cpu += times.user + times.system
    return {
        "workers_cpu_s": round(cpu, 3),
        "total_mib": round(sum(rss.values()), 1),
        "workers_mib": round(sum(workers.values()), 1),
        "per_process_mib": {str(pid): round(mb, 1) for pid, mb in sorted(rss.items())},
    }


class RssSampler:
    """The largest worker RSS sum seen while a phase runs (sampled every ``every`` s)."""

    def __init__(self, server: Server, every: float = 0.5) -> None:
        self.server, self.every = server, every
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.peak_mib = max(self.peak_mib, server_rss(self.server)["workers_mib"])
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_flood(server: Server, info: dict, rate: float, duration: float, flood: dict, out: Path):
    known_ids = ",".join(key.split("_")[1] for key in info["keys"].values())
    return subprocess.Popen(
        [
            sys.executable,
            BADKEYS,
            "--port",
            str(server.port),
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--addresses",
            flood["addresses"],
            "--path",
            flood["path"],
            "--method",
            flood["method"],
            "--users",
            ",".join(info["users"][:200]),
            "--known-ids",
            known_ids,
            "--out",
            str(out),
        ]
    )


# The phases of ``badkeys``: no flood; bad keys from one source address (the per-address limit
# on failed authentications answers 429 after its burst); bad keys spread over 250 addresses
# (each one verified: the worst case); and a control, as many plain ``GET /healthz`` from the
# same 250 addresses (what the extra requests cost without any authentication).
MANY = "127.0.1.1-127.0.1.250"
FLOODS: dict[str, dict | None] = {
    "none": None,
    "one_address": {"addresses": "127.0.0.2", "path": "/v1/recommend", "method": "POST"},
    "many_addresses": {"addresses": MANY, "path": "/v1/recommend", "method": "POST"},
    "healthz_control": {"addresses": MANY, "path": "/healthz", "method": "GET"},
}
BAD_FLOODS = ("one_address", "many_addresses")


def badkeys_phase(
    srv: Server, info: dict, args, rate: float, flood: str, repeat: int, results: Path
) -> dict:
    """One valid-load run at ``rate`` requests/s, alone or while bad keys arrive."""
    key, users = info["keys"]["service"], info["users"]
    tag = f"badkeys-{rate:g}-{flood}-{repeat}"
    rss_before = server_rss(srv)
    before = loadavg()
    flood_process = None
    if FLOODS[flood] is not None:
        # The flood starts first and outlasts the valid load, so every valid request meets it.
        flood_process = run_flood(
            srv,
            info,
            args.flood_rate,
            args.duration + 2 * args.flood_lead,
            FLOODS[flood],
            results / f"{tag}-flood.json",
        )
        time.sleep(args.flood_lead)
    with RssSampler(srv) as sampler:
        process = run_loadgen(srv, key, users, rate, args.duration, results / f"{tag}.json")
        if process.wait(timeout=args.duration * 4 + 60) != 0:
            raise RuntimeError(f"loadgen failed at {rate}/s ({flood})")
        if flood_process is not None and flood_process.wait(timeout=args.duration * 4 + 60):
            raise RuntimeError(f"bad-key sender failed ({flood})")
    valid = json.loads((results / f"{tag}.json").read_text())
    bad = json.loads((results / f"{tag}-flood.json").read_text()) if flood_process else None
    rss_after = server_rss(srv)
    result = {
        "flood": flood,
        "flood_spec": FLOODS[flood],
        "valid": valid,
        "bad": bad,
        "rss_workers_before_mib": rss_before["workers_mib"],
        "rss_workers_after_mib": rss_after["workers_mib"],
        "rss_workers_peak_mib": sampler.peak_mib,
        "workers_cpu_s": rss_after["workers_cpu_s"] - rss_before["workers_cpu_s"],
        "rss_before": rss_before,
        "rss_after": rss_after,
        "loadavg_before": before,
        "loadavg_after": loadavg(),
    }
    bad_note = ""
    if bad is not None:
        bad_note = f", bad keys {bad['statuses']} errors {bad['errors']}"
    log(
        f"badkeys {rate:g}/s #{repeat} flood={flood}: p50 {valid['p50_ms']:.1f} ms, "
        f"p99 {valid['p99_ms']:.1f} ms, failed {valid['failed']}, RSS "
        f"{rss_before['workers_mib']:.0f}->{rss_after['workers_mib']:.0f} MiB "
        f"(peak {sampler.peak_mib:.0f}), workers CPU {result['workers_cpu_s']:.1f} s"
        f"{bad_note}, load {before}"
    )
    return result


def part_badkeys(info: dict, args, results: Path) -> dict:
    """Valid-request latency at a fixed rate without a flood, and while bad keys arrive at
    ``--flood-rate``/s from one address and from 250 addresses; the same server (same model and
    settings as ``load``, failed-authentication limit at its defaults) for every phase, the
    order of the phases rotated between repeats."""
    import httpx

    serve_args = ["--model", info["models"]["v1"], "--index", args.index]
    by_rate = {}
    with serving(info, serve_args, args.workers, results / "badkeys.log") as srv:
        served_index = httpx.get(f"{srv.url}/readyz", timeout=10).json().get("index")
        log(f"server index: {served_index}; workers RSS {server_rss(srv)['workers_mib']} MiB")
        load_once(
            srv, info["keys"]["service"], info["users"], 200, 3, results / "badkeys-warmup.json"
        )
        for rate in args.valid_rates:
            runs = []
            floods = list(FLOODS)
            for repeat in range(args.repeats):
                shift = repeat % len(floods)
                order = floods[shift:] + floods[:shift]
                phases = {
                    flood: badkeys_phase(srv, info, args, rate, flood, repeat, results)
                    for flood in order
                }
                runs.append({"repeat": repeat, "order": order, "phases": phases})
            by_rate[f"{rate:g}"] = summarize_badkeys(rate, runs)
    return {
        "workers": args.workers,
        "index": args.index,
        "served_index": served_index,
        "duration_s": args.duration,
        "repeats": args.repeats,
        "flood_rate_rps": args.flood_rate,
        "floods": FLOODS,
        "auth_failure_limit": "server defaults (1/s per address, burst 20, per worker)",
        "rates": by_rate,
    }


def summarize_badkeys(rate: float, runs: list[dict]) -> dict:
    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    rows = []
    for run in runs:
        phases = run["phases"]
        base = phases["none"]["valid"]["p99_ms"]
        row = {"repeat": run["repeat"], "order": run["order"]}
        for flood, phase in phases.items():
            valid, bad = phase["valid"], phase["bad"] or {}
            statuses = bad.get("statuses", {})
            row[flood] = {
                "p50_ms": valid["p50_ms"],
                "p99_ms": valid["p99_ms"],
                "failed": valid["failed"],
                "throughput_rps": valid["throughput_rps"],
                "p99_over_no_flood": valid["p99_ms"] / base if base else None,
                "bad_sent": bad.get("sent"),
                "bad_401": statuses.get("401", 0),
                "bad_429": statuses.get("429", 0),
                "bad_other": sum(v for k, v in statuses.items() if k not in ("401", "429")),
                "bad_errors": sum(bad.get("errors", {}).values()),
                "bad_p99_ms": bad.get("p99_ms"),
                "rss_before_mib": phase["rss_workers_before_mib"],
                "rss_after_mib": phase["rss_workers_after_mib"],
                "rss_peak_mib": phase["rss_workers_peak_mib"],
                "workers_cpu_s": phase["workers_cpu_s"],
                # Server CPU the flood added, per flood request: (CPU of this phase - CPU of
                # the phase without a flood) / flood requests sent.
                "extra_cpu_per_flood_request_us": (
                    1e6 * (phase["workers_cpu_s"] - phases["none"]["workers_cpu_s"]) / bad["sent"]
                    if bad
                    else None
                ),
                "loadavg_1m": phase["loadavg_before"][0],
            }
        rows.append(row)
    medians = {
        flood: {
            field: med(row[flood][field] for row in rows)
            for field in rows[0][flood]
            if field not in ("bad_sent",)
        }
        for flood in FLOODS
    }
    ratios = [row[f]["p99_over_no_flood"] for row in rows for f in BAD_FLOODS]
    base = medians["none"]["p99_ms"]
    return {
        "valid_rate_rps": rate,
        "per_repeat": rows,
        "medians": medians,
        "p99_ratio_of_medians": {
            f: medians[f]["p99_ms"] / base if base else None for f in FLOODS if f != "none"
        },
        "target": "valid p99 with flood <= 2x without",
        "target_met_by_medians": all(
            medians[f]["p99_over_no_flood"] is not None and medians[f]["p99_over_no_flood"] <= 2
            for f in BAD_FLOODS
        ),
        "target_met_every_repeat": all(r is not None and r <= 2 for r in ratios),
        "runs": runs,
    }


def print_badkeys(summary: dict) -> None:
    """The table of medians (and each repeat) on stdout."""
    names = {
        "none": "no flood",
        "one_address": "flood, 1 address",
        "many_addresses": "flood, 250 addr",
        "healthz_control": "control: /healthz",
    }
    for rate, block in summary["rates"].items():
        print(
            f"\nvalid load {rate} req/s, bad keys {summary['flood_rate_rps']:g}/s, "
            f"{summary['repeats']} repeats x {summary['duration_s']:g} s, "
            f"{summary['workers']} workers, index {(summary['served_index'] or {}).get('kind')}"
        )
        header = (
            f"{'':18} {'p50 ms':>8} {'p99 ms':>8} {'p99/none':>8} {'failed':>6} "
            f"{'401':>6} {'429':>6} {'other':>6} {'RSS MiB before/after/peak':>26} "
            f"{'CPU s':>6} {'us/req':>7} {'load1':>6}"
        )
        for label, rows in [("median", [block["medians"]])] + [
            (f"repeat {r['repeat']}", [r]) for r in block["per_repeat"]
        ]:
            print(f"-- {label}")
            print(header)
            for flood in FLOODS:
                m = rows[0][flood]
                rss = f"{m['rss_before_mib']:.0f}/{m['rss_after_mib']:.0f}/{m['rss_peak_mib']:.0f}"
                ratio = m["p99_over_no_flood"]
                us = m["extra_cpu_per_flood_request_us"]
                extra = "-" if us is None else f"{us:.0f}"
                print(
                    f"{names[flood]:18} {m['p50_ms']:8.1f} {m['p99_ms']:8.1f} "
                    f"{ratio:8.2f} {m['failed']:6.0f} {m['bad_401']:6.0f} {m['bad_429']:6.0f} "
                    f"{m['bad_other']:6.0f} "
                    f"{rss:>26} {m['workers_cpu_s']:6.2f} {extra:>7} {m['loadavg_1m']:6.2f}"
                )
        print(
            f"target p99(bad-key flood) <= 2x p99(no flood): medians "
            f"{'met' if block['target_met_by_medians'] else 'MISSED'}, every repeat "
            f"{'met' if block['target_met_every_repeat'] else 'MISSED'}"
        )


class _Port:
    """Where the load generator sends requests (a server not started by :class:`Server`)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://{HOST}:{port}"


def part_ray(info: dict, args, results: Path) -> dict:
    """The same open-loop load on the Ray Serve deployment (local Ray, one replica, the same
    model, database and keys) at ``--ray-rate`` requests/s."""
    import httpx
    import ray
    from ray import serve

    from privrank.distributed import run_on_ray_serve
    from privrank.serving import ServeSettings

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    settings = ServeSettings(
        model_dir=info["models"]["v1"],
        database_url=f"sqlite:///{Path(info['home']) / 'serving.sqlite'}",
        rate_limit=0,
        index=args.index,
    )
    port = free_port()
    started = time.perf_counter()
    ray.init(
        num_cpus=args.ray_cpus,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=200 * 1024**2,
    )
    runs = []
    try:
        run_on_ray_serve(settings, host=HOST, port=port, num_replicas=args.ray_replicas)
        target = _Port(port)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{target.url}/readyz", timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        ready_s = time.perf_counter() - started
        served_index = httpx.get(f"{target.url}/readyz", timeout=10).json().get("index")
        key, users = info["keys"]["service"], info["users"]
        load_once(target, key, users, args.ray_rate, 3, results / "ray-warmup.json")
        for repeat in range(args.repeats):
            out = results / f"ray-{args.ray_rate:g}-{repeat}.json"
            result = load_once(target, key, users, args.ray_rate, args.duration, out)
            runs.append(result)
            log(
                f"ray {args.ray_rate:g}/s #{repeat}: {result['throughput_rps']:.0f}/s ok, "
                f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                f"failed {result['failed']}, load {result['loadavg_before']}"
            )
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
    return {
        "replicas": args.ray_replicas,
        "ray_cpus": args.ray_cpus,
        "offered_rps": args.ray_rate,
        "duration_s": args.duration,
        "ready_s": ready_s,
        "served_index": served_index,
        "runs": runs,
        **{
            k: statistics.median(r[k] for r in runs)
            for k in ("throughput_rps", "p50_ms", "p99_ms", "failed")
        },
        "loadavg_runs": [r["loadavg_before"][0] for r in runs],
    }


def _busy_core(stop_at: float) -> None:  # pragma: no cover - runs in the neighbour process
    while time.monotonic() < stop_at:
        pass


@contextlib.contextmanager
def cpu_neighbour(enabled: bool, seconds: float = 3600.0) -> Iterator[None]:
    """A CPU-bound neighbour process taking one core for the duration (a busy loop)."""
    if not enabled:
        yield
        return
    import multiprocessing

    process = multiprocessing.get_context("spawn").Process(
        target=_busy_core, args=(time.monotonic() + seconds,), daemon=True
    )
    process.start()
    try:
        yield
    finally:
        process.terminate()
        process.join()


def _drain(server: Server, seconds: float = 15.0) -> None:
    """Wait until an overloaded server has worked off its backlog (healthz answers fast)."""
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{server.url}/healthz", timeout=5)
            if time.perf_counter() - started < 0.01:
                return
        time.sleep(0.5)


def part_compare(info: dict, args, results: Path) -> dict:
    """The ``load`` measurement of this checkout and of ``--baseline-src`` side by side: both
    servers run at once (same model, index and workers), and each offered rate is run on one
    then the other (the order alternates by repeat), so both see the same machine. With
    ``--neighbour`` a busy-loop process takes one core throughout."""
    if args.baseline_src is None:
        raise SystemExit("compare needs --baseline-src (a checkout of the commit to compare to)")
    bare = bare_search(info, args.index, rounds=args.repeats)
    search_p50 = statistics.median(b["search_p50_ms"] for b in bare)
    rates = sorted({100, 500, 1000, *args.sweep})
    serve_args = ["--model", info["models"]["v1"], "--index", args.index]
    sides = {"baseline": args.baseline_src.resolve(), "current": None}
    runs: dict[str, dict[str, list[dict]]] = {side: {str(r): [] for r in rates} for side in sides}
    key, users = info["keys"]["service"], info["users"]
    with contextlib.ExitStack() as stack:
        servers = {
            side: stack.enter_context(
                serving(info, serve_args, args.workers, results / f"compare-{side}.log", source)
            )
            for side, source in sides.items()
        }
        stack.enter_context(cpu_neighbour(args.neighbour))
        for server in servers.values():
            load_once(server, key, users, 200, 3, results / "warmup.json")
        for repeat in range(args.repeats):
            order = list(servers) if repeat % 2 == 0 else list(reversed(servers))
            for rate in rates:
                for side in order:
                    out = results / f"compare-{side}-{rate}-{repeat}.json"
                    result = load_once(servers[side], key, users, rate, args.duration, out)
                    runs[side][str(rate)].append(result)
                    log(
                        f"{side} {rate}/s #{repeat}: {result['throughput_rps']:.0f}/s ok, "
                        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                        f"failed {result['failed']}, load {result['loadavg_before']}"
                    )
                    if result["throughput_rps"] < 0.95 * rate:
                        _drain(servers[side])
    table = {}
    for side in sides:
        rows = []
        for rate in rates:
            rs = runs[side][str(rate)]
            rows.append(
                {
                    "offered_rps": rate,
                    **{
                        k: statistics.median(r[k] for r in rs if r[k] is not None)
                        for k in ("throughput_rps", "p50_ms", "p99_ms", "failed")
                    },
                    "p99_runs": [r["p99_ms"] for r in rs],
                    "throughput_runs": [r["throughput_rps"] for r in rs],
                    "loadavg_runs": [r["loadavg_before"][0] for r in rs],
                }
            )
        table[side] = rows
    saturation = {
        side: statistics.median(
            max(runs[side][str(rate)][i]["throughput_rps"] for rate in rates)
            for i in range(args.repeats)
        )
        for side in sides
    }
    p50_500 = {
        side: next(r["p50_ms"] for r in table[side] if r["offered_rps"] == 500) for side in sides
    }
    return {
        "workers": args.workers,
        "index": args.index,
        "neighbour": args.neighbour,
        "baseline_src": str(sides["baseline"]),
        "duration_s": args.duration,
        "repeats": args.repeats,
        "bare_search_p50_ms": search_p50,
        "table": table,
        "saturation_rps": saturation,
        "saturation_ratio": saturation["current"] / saturation["baseline"],
        "p50_500_over_bare_search": {side: v / search_p50 for side, v in p50_500.items()},
    }


PARTS = {
    "load": part_load,
    "compare": part_compare,
    "swap": part_swap,
    "crash": part_crash,
    "fuzz": part_fuzz,
    "ray": part_ray,
    "badkeys": part_badkeys,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="+", choices=[*PARTS, "all"])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/privrank-bench-serving"))
    parser.add_argument("--n-users", type=int, default=50_000)
    parser.add_argument("--n-interactions", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--index",
        default="auto",
        choices=["auto", "exact", "hnsw", "ivf"],
        help="FAISS index (load)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--sweep", type=lambda s: [int(x) for x in s.split(",") if x], default=[1500, 2000, 3000]
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="compare: a checkout of the commit to compare against (its src/ is served)",
    )
    parser.add_argument(
        "--neighbour", action="store_true", help="compare: a busy-loop process takes one core"
    )
    parser.add_argument("--swap-rate", type=float, default=100.0)
    parser.add_argument("--swap-duration", type=float, default=30.0)
    parser.add_argument("--swap-every", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--kill-after", type=float, default=5.0)
    parser.add_argument("--fuzz-examples", type=int, default=100)
    parser.add_argument("--ray-rate", type=float, default=100.0)
    parser.add_argument("--ray-replicas", type=int, default=1)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument(
        "--valid-rates",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[200.0],
        help="offered valid requests/s (badkeys), comma-separated",
    )
    parser.add_argument("--flood-rate", type=float, default=200.0, help="bad keys/s (badkeys)")
    parser.add_argument(
        "--flood-lead", type=float, default=1.0, help="s the flood runs before the valid load"
    )
    parser.add_argument(
        "--badkeys-out",
        type=Path,
        default=ROOT / "bench" / "results" / "serving_badkeys.json",
        help="where badkeys also writes its JSON",
    )
    args = parser.parse_args(argv)

    info = prepare(args.workdir, args.n_users, args.n_interactions, args.epochs)
    results = args.workdir / "results"
    results.mkdir(parents=True, exist_ok=True)
    parts = (
        [p for p in PARTS if p not in ("ray", "badkeys", "compare")]
        if "all" in args.part
        else args.part
    )
    summary = {}
    for part in parts:
        log(f"--- {part} (load average {loadavg()})")
        started = datetime.now(UTC)
        result = PARTS[part](info, args, results)
        result["started"] = started.isoformat(timespec="seconds")
        stamp = started.strftime("%Y%m%dT%H%M%S")
        (results / f"{part}-{stamp}.json").write_text(json.dumps(result, indent=2))
        summary[part] = result
        if part == "badkeys":
            record = {
                "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
                "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
                "data": info["data"],
                "model_config": info["model_config"],
                **result,
            }
            args.badkeys_out.parent.mkdir(parents=True, exist_ok=True)
            args.badkeys_out.write_text(json.dumps(record, indent=2))
    print(json.dumps(summary, indent=2))
    if "badkeys" in summary:
        print_badkeys(summary["badkeys"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The operator console on real data: what each page costs to render, and the README screenshots.

Builds a workspace on MovieLens 100K with the ``privrank`` commands (the README's own): an
evaluation run (``privrank evaluate --protocol ml100k-holdout --models most-popular,itemknn,ease``),
a privacy budget, EASE trained without DP and with user-level DP (ε = 8), the DP model's release
artifact, both servable models in a model store, an admin key; then runs ``privrank serve
--store`` and, signed in to the console over HTTP, times every console page against
``GET /v1/models`` (the peer: an API read on the same server, in the same run), ``--rounds``
rounds of ``--requests`` sequential requests each, medians reported. Finally Playwright with
Debian's Chromium takes screenshots of the ledger and the run page into ``--screenshots``.

Run (about 2 minutes on a 2-core machine)::

    PRIVRANK_DATA_DIR=../shared/data .venv/bin/python bench/bench_console.py \
        --screenshots docs

(``--work DIR --reuse`` measures again on a workspace built before.)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
PAGES = [
    "/console/models",
    "/console/runs",
    "/console/runs/ml100k-compare",
    "/console/ledger",
    "/console/health",
    "/console/keys",
]
PEER = "/v1/models"


def privrank(env: dict[str, str], *args: str) -> str:
    """Run one ``privrank`` command; its stdout."""
    done = subprocess.run(
        [str(BIN / "privrank"), *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"privrank {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def build(work: Path, env: dict[str, str]) -> dict[str, str]:
    """The workspace (see the module docstring); the admin key and paths."""
    home = work / "home"
    runs = home / "runs"
    privrank(env, "data", "import", "ml-100k")
    privrank(
        env, "evaluate", "--protocol", "ml100k-holdout",
        "--models", "most-popular,itemknn,ease", "--out", str(runs / "ml100k-compare"),
    )  # fmt: skip
    privrank(env, "privacy", "budget", "ml-100k", "--epsilon", "10", "--delta", "1e-3")
    privrank(
        env, "train", "--data", "ml100k-holdout", "--model", "ease",
        "--param", "regularization=300", "--out", str(runs / "ease"),
    )  # fmt: skip
    privrank(
        env, "train", "--data", "ml100k-holdout", "--model", "ease", "--epsilon", "8",
        "--max-per-user", "50", "--out", str(runs / "dp-ease"),
    )  # fmt: skip
    privrank(env, "privacy", "release", str(runs / "dp-ease"), "--out", str(work / "release"))
    store = work / "store"
    privrank(env, "store", "add", str(store), str(runs / "ease"), "--version", "v1")
    privrank(env, "store", "add", str(store), str(work / "release"), "--version", "v2")
    privrank(env, "store", "add", str(store), str(runs / "ease"), "--version", "v3", "--activate")
    database = f"sqlite:///{work / 'serving.sqlite'}"
    admin = privrank(
        env, "keys", "create", "--scope", "admin", "--name", "console-admin",
        "--database", database,
    ).split()[-1]  # fmt: skip
    return {"admin": admin, "store": str(store), "runs": str(runs), "database": database}


def reuse(work: Path, env: dict[str, str]) -> dict[str, str]:
    """A workspace :func:`build` made before, with a new admin key (a key is shown once)."""
    database = f"sqlite:///{work / 'serving.sqlite'}"
    if not (work / "serving.sqlite").is_file():
        raise SystemExit(f"--reuse: no workspace in {work}")
    name = f"console-admin-{int(time.time())}"
    admin = privrank(
        env, "keys", "create", "--scope", "admin", "--name", name, "--database", database
    ).split()[-1]
    runs = work / "home" / "runs"
    return {"admin": admin, "store": str(work / "store"), "runs": str(runs), "database": database}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(env: dict[str, str], built: dict[str, str], port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            str(BIN / "privrank"),
            "serve",
            "--store",
            built["store"],
            "--database",
            built["database"],
            "--runs",
            built["runs"],
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"privrank serve exited: {process.communicate()[1]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("privrank serve did not become ready")


def sign_in(base: str, key: str) -> httpx.Client:
    client = httpx.Client(base_url=base, follow_redirects=False, timeout=30)
    page = client.get("/console/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    done = client.post("/console/login", data={"csrf_token": token.group(1), "api_key": key})
    assert done.status_code == 303, done.text
    return client


def time_pages(client: httpx.Client, key: str, rounds: int, requests: int) -> dict[str, float]:
    """Median (over rounds) of the mean latency (ms) of ``requests`` sequential GETs."""
    targets = [*PAGES, PEER]
    samples: dict[str, list[float]] = {t: [] for t in targets}
    headers = {"Authorization": f"Bearer {key}"}
    for target in targets:  # warm up
        answer = client.get(target, headers=headers if target == PEER else None)
        assert answer.status_code == 200, (target, answer.status_code)
    for _ in range(rounds):
        for target in targets:  # interleaved, so load changes hit every target alike
            started = time.perf_counter()
            for _ in range(requests):
                client.get(target, headers=headers if target == PEER else None)
            samples[target].append(1000 * (time.perf_counter() - started) / requests)
    return {t: statistics.median(v) for t, v in samples.items()}


def screenshots(base: str, key: str, folder: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        raise SystemExit("Debian's chromium is needed: apt-get install chromium")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        page = browser.new_page(base_url=base, viewport={"width": 1280, "height": 900})
        page.goto("/console/login")
        page.fill("#api_key", key)
        page.click("button:has-text('Sign in')")
        page.wait_for_url("**/console/models")
        for name, url in (
            ("console-run", "/console/runs/ml100k-compare"),
            ("console-ledger", "/console/ledger"),
        ):
            page.goto(url)
            path = folder / f"{name}.png"
            page.screenshot(path=str(path), full_page=False)
            written.append(path)
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="Workspace directory (default: a temp dir).")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--screenshots", type=Path, help="Write the README screenshots here.")
    parser.add_argument(
        "--reuse", action="store_true", help="Reuse the workspace already built in --work."
    )
    args = parser.parse_args()
    if not os.environ.get("PRIVRANK_DATA_DIR"):
        raise SystemExit("set PRIVRANK_DATA_DIR to the folder holding ml-100k")
    work = args.work or Path(tempfile.mkdtemp(prefix="privrank-console-"))
    env = {
        **os.environ,
        "PRIVRANK_HOME": str(work / "home"),
        "PRIVRANK_CACHE_DIR": str(work / "cache"),
    }
    env.pop("PRIVRANK_LEDGER_URL", None)
    started = time.perf_counter()
    if args.reuse:
        built = reuse(work, env)
    else:
        built = build(work, env)
        print(f"workspace built in {time.perf_counter() - started:.1f} s under {work}")
    port = free_port()
    server = serve(env, built, port)
    base = f"http://127.0.0.1:{port}"
    try:
        client = sign_in(base, built["admin"])
        medians = time_pages(client, built["admin"], args.rounds, args.requests)
        peer = medians[PEER]
        print(f"\nmedian of {args.rounds} rounds x {args.requests} sequential GETs, 1 worker")
        print(f"{'target':<32}{'ms/request':>12}{'x ' + PEER:>16}")
        for target, value in medians.items():
            print(f"{target:<32}{value:>12.2f}{value / peer:>16.1f}")
        if args.screenshots is not None:
            for path in screenshots(base, built["admin"], args.screenshots):
                print(f"wrote {path}")
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)


if __name__ == "__main__":
    main()

"""Starting the deployment's processes: the SuperLink, SuperNodes, and a run on them.

Every process is a real Flower process talking gRPC on loopback (or the given host):

- :func:`start_superlink`: ``flower-superlink --insecure --host HOST --port PORT``: in flwr
  1.42 the SuperLink serves its Fleet (SuperNodes), Control (``flwr run``) and ServerApp APIs
  over HTTP on that one port (earlier releases had three gRPC ports);
- :func:`start_supernode`: ``flower-supernode --insecure --superlink HOST:PORT --port LOCAL
  --node-config "node-file='…'"`` (``LOCAL``: the SuperNode's own runtime API, where its
  ClientApp process connects);
- :func:`submit_run`: ``flwr run APP privrank --run-config "job='…'" --stream`` against a
  SuperLink connection named ``privrank`` in ``$FLWR_HOME/config.toml``; it returns when the
  run has finished.

The executables are looked up beside the running Python (the Flower environment,
``make flower-env``). ``FLWR_HOME`` (Flower's own state: the connection list, installed app
bundles) is a folder of the run directory, so runs never touch the user's ``~/.flwr``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from privrank.errors import ConfigError

__all__ = [
    "APP_DIR",
    "SuperLinkAddress",
    "flower_env",
    "start_shared_superexec",
    "start_superlink",
    "start_supernode",
    "submit_run",
]

#: The Flower App bundle's folder (a pyproject.toml naming privrank's ServerApp and ClientApp).
APP_DIR = Path(__file__).with_name("app")


@dataclass(frozen=True)
class SuperLinkAddress:
    """Where a SuperLink listens (all its APIs, one HTTP port)."""

    host: str = "127.0.0.1"
    port: int = 9091

    @property
    def fleet(self) -> str:
        """Fleet API (SuperNodes connect here)."""
        return f"{self.host}:{self.port}"

    @property
    def control(self) -> str:
        """Control API (``flwr run`` submits here)."""
        return f"{self.host}:{self.port}"


def _executable(name: str) -> str:
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(
            f"{name} not found: the Flower deployment runs in the Flower environment "
            "(`make flower-env`, then .venv-flower/bin/privrank …)"
        )
    return found


def flower_env(flwr_home: Path) -> dict[str, str]:
    """The environment of the Flower processes: ``FLWR_HOME`` set, the Flower environment's
    ``bin`` first on ``PATH`` (the SuperLink and SuperNodes start ``flwr-serverapp`` and
    ``flwr-clientapp`` from it)."""
    env = dict(os.environ)
    env["FLWR_HOME"] = str(flwr_home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def start_superlink(
    address: SuperLinkAddress, flwr_home: Path, log_file: Path
) -> subprocess.Popen[bytes]:
    """Start ``flower-superlink --insecure`` (``FLWR_HOME``: ``flwr_home``)."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    command = [
        _executable("flower-superlink"),
        "--insecure",
        "--host",
        address.host,
        "--port",
        str(address.port),
        # The ServerApp runs from this environment: nothing is installed at run time.
        "--disable-runtime-dependency-installation",
        # Its state in memory (the default): a SQLite file was locked under load (HTTP 500 to
        # the SuperNodes' pushes). The run's own state is privrank's (the run directory).
    ]
    return _spawn(command, flwr_home, log_file)


def start_supernode(
    node_file: Path,
    superlink_fleet: str,
    local_port: int,
    flwr_home: Path,
    log_file: Path,
    isolation: str = "subprocess",
) -> subprocess.Popen[bytes]:
    """Start one ``flower-supernode --insecure`` holding the devices of ``node_file``.

    ``isolation="process"``: the SuperNode starts no SuperExec of its own; one started by
    :func:`start_shared_superexec` launches its ClientApp processes.

    Raises:
        ConfigError: The node file does not exist.
    """
    node_file = Path(node_file).resolve()
    if not node_file.is_file():
        raise ConfigError(f"--node-file {node_file}: no such file")
    flwr_home.mkdir(parents=True, exist_ok=True)
    command = [
        _executable("flower-supernode"),
        "--insecure",
        "--superlink",
        superlink_fleet,
        "--host",
        "127.0.0.1",
        "--port",
        str(local_port),
        "--node-config",
        f"node-file='{node_file}'",
        "--isolation",
        isolation,
    ]
    return _spawn(command, flwr_home, log_file)


def start_shared_superexec(
    runtime_addresses: list[str], flwr_home: Path, log_file: Path
) -> subprocess.Popen[bytes]:
    """Start one SuperExec for the SuperNodes started with ``isolation="process"`` whose
    runtime APIs listen at ``runtime_addresses`` (:mod:`privrank.federated.flower.superexec`)."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "privrank.federated.flower.superexec"]
    for address in runtime_addresses:
        command += ["--runtime-api-address", address]
    return _spawn(command, flwr_home, log_file)


def _spawn(command: list[str], flwr_home: Path, log_file: Path) -> subprocess.Popen[bytes]:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=flower_env(flwr_home),
            start_new_session=True,  # its own process group: stopped with its children
        )


def _write_connection(flwr_home: Path, address: SuperLinkAddress) -> None:
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        "[superlink]\n"
        'default = "privrank"\n\n'
        "[superlink.privrank]\n"
        f'address = "{address.control}"\n'
        "insecure = true\n",
        encoding="utf-8",
    )


def submit_run(
    job_file: Path,
    address: SuperLinkAddress,
    flwr_home: Path,
    log_file: Path,
    timeout: float | None = None,
) -> int:
    """Submit the run with ``flwr run … --stream`` and wait for it to end.

    Returns:
        ``flwr run``'s exit status.
    """
    _write_connection(flwr_home, address)
    command = [
        _executable("flwr"),
        "run",
        str(APP_DIR),
        "privrank",
        "--run-config",
        f"job='{Path(job_file).resolve()}'",
        "--stream",
    ]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        done = subprocess.run(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=flower_env(flwr_home),
            timeout=timeout,
            check=False,
        )
    return done.returncode


def wait_for_port(
    address: str, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something listens on ``host:port``.

    Raises:
        ConfigError: Nothing did within ``timeout`` seconds, or ``process`` exited first.
    """
    import socket

    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ConfigError(
                f"process {process.pid} exited with status {process.returncode} before listening "
                f"on {address}"
            )
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex((host, int(port))) == 0:
                return
        time.sleep(0.2)
    raise ConfigError(f"nothing listens on {address} after {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a process started here and its children (its own process group)."""
    import signal

    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass

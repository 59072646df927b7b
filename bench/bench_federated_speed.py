"""Simulator speed: privrank's vectorised simulator against Flower's simulation engine and
Apple's pfl-research, on the same model, devices, cohorts and rounds, in one run.

The task (every arm): federated MF (fedmf, Federated Reconstruction on the iALS objective,
:mod:`privrank.models._fedmf_rounds`), non-private, ``--rounds`` rounds, **fixed cohorts** of
``--clients-per-round`` devices (``sampling="fixed"``, seed 0: the same cohort of each round in
every arm, so the arms compute the same model), one local step (the device's exact
reconstruction of its user factor, then its item-side update), server learning rate 0.5
decaying linearly. Each device is one user of the training part (``--data`` protocol, or
``--synthetic-users`` from privrank's generator, or every user of ``--dataset``, a saved
dataset directory such as ``privrank data synth``'s output).

The arms, each in its own process and environment (so each one's peak RSS is its own):

- ``privrank``: :func:`privrank.federated.simulate` (main environment, or any with privrank);
  devices run in vectorised batches, updates summed in factored form.
- ``flower``: Flower's simulation engine (``flwr.simulation.run_simulation``, Ray backend,
  ``.venv-flower``) with a **fixed pool** of ``--flower-nodes`` virtual SuperNodes (at most the
  number of devices). That is how a million devices are simulated in Flower: a virtual SuperNode
  is not a device but a slot that simulates the devices it is asked for. The devices are dealt
  round-robin to the pool (:func:`~privrank.federated.flower.devices.partition`: device ``u``
  to node ``u mod nodes``; the node files together are the one training file, cut by node), each
  node's ClientApp loads its file once per Ray actor (cached), and each round's Message to a
  node carries the ids of the cohort devices it simulates this round; the node runs them as a
  batch. The ServerApp is privrank's deployment server
  (:func:`~privrank.federated.flower.rounds.run_deployment` over a Flower ``Grid``) and the
  ClientApp privrank's (the same device code,
  :func:`~privrank.federated.flower.devices.device_updates`). One deviation, outside the timed
  rounds: the deployment gathers the item counts as one ``|I|``-vector **per device** (8 GB of
  float64 at 1M devices and 1,000 items), so here each node sends its devices' summed counts
  (the same non-private total; the privrank and pfl arms compute the counts centrally).
- ``pfl``: pfl-research's simulated backend (``pfl.aggregate.simulate.SimulatedBackend``,
  ``.venv-pfl``, numpy ops): a :class:`pfl.algorithm.base.FederatedAlgorithm` whose
  ``simulate_one_user`` runs the same device code on one user (the dense update vector as a
  ``MappedVectorStatistics``), pfl's ``SumAggregator`` sums them, and the model steps with
  privrank's :class:`~privrank.models._fedmf_rounds.FedMFServer`; pfl's user sampler is fed the
  same cohorts.

Reported per arm: simulated devices per second over rounds 2.. (round 1 includes numba
compilation and the peers' start-up; every arm's round clock starts when the round's cohort is
sent and stops after the server step), total wall time with start-up, peak RSS (the arm's
process and its children: Flower's Ray workers), and max ``|H_arm − H_privrank|`` of the final
item factors (the same computation, summed in another order). The ratios are privrank's
devices/s over each peer's.

Usage::

    .venv/bin/python bench/bench_federated_speed.py --data ml100k-holdout --rounds 5 \\
        --clients-per-round 100 --factors 16 --json bench/results/federated_speed.json

    privrank data synth --users 1000000 --items 1000 --interactions 20000000 --clusters 20 \\
        --out /tmp/synth1m
    .venv/bin/python bench/bench_federated_speed.py --dataset /tmp/synth1m --rounds 4 \\
        --clients-per-round 1000 --factors 16 --flower-nodes 100 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("privrank", "flower", "pfl")


# ----------------------------------------------------------------------------------- shared
def _settings(spec: dict):  # type: ignore[no-untyped-def]
    from privrank.federated.settings import FederatedSettings

    return FederatedSettings(
        rounds=spec["rounds"],
        clients_per_round=spec["clients_per_round"],
        sampling="fixed",
        seed=0,
    )


def _config(spec: dict):  # type: ignore[no-untyped-def]
    from privrank.models._fedmf_rounds import FedMFConfig

    return FedMFConfig(factors=spec["factors"])


def _load(work: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    spec = json.loads((work / "spec.json").read_text())
    with np.load(work / "train.npz") as data:
        return spec, data["users"], data["items"]


def _interactions(users: np.ndarray, items: np.ndarray, spec: dict):  # type: ignore[no-untyped-def]
    from privrank.data.interactions import Interactions

    return Interactions.from_codes(users, items, n_users=spec["users"], n_items=spec["n_items"])


def _histories(users: np.ndarray, items: np.ndarray, spec: dict):  # type: ignore[no-untyped-def]
    import scipy.sparse as sp

    matrix = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)),
        shape=(spec["users"], spec["n_items"]),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _peak_rss_mb() -> float:
    """This process's own RSS high-water mark (``VmHWM``; not ``getrusage``, whose ``ru_maxrss``
    keeps the forking driver's RSS across ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _metrics_rounds(run_dir: Path) -> tuple[list[float], list[int]]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    return [x["seconds"] for x in lines], [x["accepted"] for x in lines]


# ----------------------------------------------------------------------------------- arms
def arm_privrank(work: Path) -> dict:
    from privrank.federated import simulate

    spec, users, items = _load(work)
    train = _interactions(users, items, spec)
    started = time.perf_counter()
    result = simulate(_config(spec), train, _settings(spec), run_dir=work / "privrank.run")
    wall = time.perf_counter() - started
    seconds, devices = _metrics_rounds(work / "privrank.run")
    np.save(work / "H-privrank.npy", result.state.arrays["item_factors"])
    return {"round_seconds": seconds, "round_devices": devices, "wall_s": wall}


def node_counts(node) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The summed 0/1 item vectors of a node's devices, ``(1, n_items)`` float64 (what the
    bench's node sends instead of one vector per device; non-private)."""
    return np.asarray(node.histories.sum(axis=0), dtype=np.float64).reshape(1, -1)


def arm_flower(work: Path) -> dict:
    from dataclasses import replace
    from unittest import mock

    from flwr.app import Context, Message, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from privrank.federated.flower import client_app as privrank_client
    from privrank.federated.flower import messages
    from privrank.federated.flower import rounds as deployment
    from privrank.federated.flower.devices import partition
    from privrank.federated.flower.job import FlowerJob
    from privrank.federated.flower.server_app import GridTransport

    spec, users, items = _load(work)
    train = _interactions(users, items, spec)
    del users, items
    devices = work / "flower-devices"
    pool = min(spec["flower_nodes"], spec["users"])
    partition(train, pool, devices)  # device u -> virtual SuperNode u mod pool
    del train
    job = FlowerJob(
        model=_config(spec),
        settings=_settings(spec),
        population=spec["users"],
        n_items=spec["n_items"],
        data_fingerprint="bench",
        run_dir=str(work / "flower.run"),
        min_nodes=pool,
        enrol_timeout=3600.0,
        round_timeout=3600.0,
    )

    class PoolTransport(GridTransport):
        def summed_counts(self) -> np.ndarray:
            request = messages.counts_request(None)
            replies = self._exchange(
                {n: request for n in self.nodes}, messages.COUNTS, "counts", 3600.0
            )
            if len(replies) != len(self.nodes):
                raise RuntimeError(f"item counts: {len(replies)} of {len(self.nodes)} nodes")
            return np.sum([messages.answer_of(c).vectors[0] for _, c in replies], axis=0)

    def release_counts(job, transport, resolved, plan, ledger, nodes):  # type: ignore[no-untyped-def]
        if plan is not None:
            raise RuntimeError("the bench's Flower arm is non-private")
        return transport.summed_counts()

    server = ServerApp()
    finished: dict[str, object] = {}

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        with mock.patch.object(deployment, "_release_counts", release_counts):
            finished["result"] = deployment.run_deployment(job, PoolTransport(grid, job))

    client = ClientApp()

    def _own(context: Context) -> Context:
        node = devices / f"node-{int(context.node_config['partition-id'])}.npz"
        return replace(context, node_config={**context.node_config, "node-file": str(node)})

    @client.query("enrol")
    def enrol(message: Message, context: Context) -> Message:
        return privrank_client.enrol(message, _own(context))

    @client.query("counts")
    def counts(message: Message, context: Context) -> Message:
        node = privrank_client._node_of(_own(context))
        content: RecordDict = messages.reply(node.device_ids[:1], node_counts(node))
        return Message(content, reply_to=message)

    @client.train("round")
    def train_round(message: Message, context: Context) -> Message:
        return privrank_client.train(message, _own(context))

    started = time.perf_counter()
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=pool,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    wall = time.perf_counter() - started
    seconds, accepted = _metrics_rounds(work / "flower.run")
    result = finished.get("result")
    if result is None or len(seconds) < spec["rounds"]:
        raise RuntimeError("the Flower simulation ended before its rounds")
    np.save(work / "H-flower.npy", result.state.arrays["item_factors"])  # type: ignore[attr-defined]
    return {
        "round_seconds": seconds,
        "round_devices": accepted,
        "wall_s": wall,
        "supernodes": pool,
    }


def arm_pfl(work: Path) -> dict:
    import scipy.sparse as sp
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.algorithm.base import FederatedAlgorithm
    from pfl.callback.base import TrainingProcessCallback
    from pfl.common_types import Population
    from pfl.context import CentralContext
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.hyperparam import AlgorithmHyperParams, ModelHyperParams
    from pfl.internal.ops import numpy_ops
    from pfl.internal.ops.selector import set_framework_module
    from pfl.metrics import Metrics
    from pfl.model.base import Model
    from pfl.stats import MappedVectorStatistics

    from privrank.federated.cohorts import round_learning_rate, sample_cohort
    from privrank.models._fedmf_rounds import FedMFClient, FedMFServer, MFBroadcast

    set_framework_module(numpy_ops)
    spec, users, items = _load(work)
    settings = _settings(spec)
    histories = _histories(users, items, spec)
    population, n_items = spec["users"], spec["n_items"]
    counts = np.asarray(histories.sum(axis=0)).ravel()  # the simulator's non-private counts
    config = _config(spec).resolved(counts, population)  # α₀ as the simulator fixes it
    fedmf_server = FedMFServer(config, population, counts, settings.server_learning_rate)
    device = FedMFClient(config, n_items)

    class MFModel(Model):
        """The server's item factors H, stepped by privrank's server code."""

        def __init__(self) -> None:
            self.item_factors = FedMFServer.initial_factors(config, n_items, settings.seed)
            self.broadcast = MFBroadcast.of(self.item_factors)
            self.round = 1

        def apply_model_update(self, statistics):  # type: ignore[no-untyped-def]
            mean = statistics["update"] / statistics.weight
            rate = round_learning_rate(settings, self.round)
            self.item_factors = fedmf_server.step(self.item_factors, mean, rate)
            self.broadcast = MFBroadcast.of(self.item_factors)
            self.round += 1
            return self, Metrics()

    class FedMFAlgorithm(FederatedAlgorithm):
        def get_next_central_contexts(  # type: ignore[no-untyped-def]
            self, model, iteration, algorithm_params, model_train_params, model_eval_params=None
        ):
            if iteration == settings.rounds:
                return None, model, Metrics()
            context = CentralContext(
                current_central_iteration=iteration,
                do_evaluation=False,
                cohort_size=settings.clients_per_round,
                population=Population.TRAIN,
                model_train_params=model_train_params.static_clone(),
                model_eval_params=model_train_params.static_clone(),
                algorithm_params=algorithm_params.static_clone(),
                seed=self._get_seed(),
            )
            return (context,), model, Metrics()

        def process_aggregated_statistics(  # type: ignore[no-untyped-def]
            self, central_context, aggregate_metrics, model, statistics
        ):
            return model.apply_model_update(statistics)

        def simulate_one_user(self, model, user_dataset, central_context):  # type: ignore[no-untyped-def]
            own = user_dataset.raw_data[0]  # the device's item codes
            row = sp.csr_matrix(
                (np.ones(len(own), dtype=np.float32), own, [0, len(own)]), shape=(1, n_items)
            )
            updates, _ = device.local_update(row, model.broadcast)
            vector = updates.dense(0, 1)[0]
            return MappedVectorStatistics({"update": vector}, weight=1.0), Metrics()

    # pfl's user sampler is fed the simulator's cohorts, round after round.
    order = iter(
        np.concatenate(
            [sample_cohort(settings, population, r) for r in range(1, settings.rounds + 1)]
        ).tolist()
    )

    def make_dataset(user_id: int) -> Dataset:
        own = histories.indices[histories.indptr[user_id] : histories.indptr[user_id + 1]]
        return Dataset(raw_data=[np.array(own)], user_id=str(user_id))

    data = FederatedDataset(make_dataset, lambda: next(order))
    backend = SimulatedBackend(training_data=data, val_data=data, postprocessors=[])

    class Clock(TrainingProcessCallback):
        def __init__(self) -> None:
            self.ticks = [time.perf_counter()]

        def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):  # type: ignore[no-untyped-def]
            self.ticks.append(time.perf_counter())
            return False, Metrics()

    clock = Clock()
    started = time.perf_counter()
    model = MFModel()
    clock.ticks = [time.perf_counter()]
    FedMFAlgorithm().run(
        algorithm_params=AlgorithmHyperParams(),
        backend=backend,
        model=model,
        model_train_params=ModelHyperParams(),
        callbacks=[clock],
        send_metrics_to_platform=False,
    )
    wall = time.perf_counter() - started
    seconds = list(np.diff(clock.ticks))
    np.save(work / "H-pfl.npy", model.item_factors)
    cohort = [len(sample_cohort(settings, population, r)) for r in range(1, settings.rounds + 1)]
    return {"round_seconds": seconds, "round_devices": cohort, "wall_s": wall}


def run_arm(name: str, work: Path) -> None:
    arm = {"privrank": arm_privrank, "flower": arm_flower, "pfl": arm_pfl}[name]
    from privrank.testing import PeakTreeMemory

    with PeakTreeMemory() as memory:
        result = arm(work)
    result["peak_rss_mb"] = _peak_rss_mb()
    result["peak_tree_rss_mb"] = memory.mebibytes
    (work / f"{name}.json").write_text(json.dumps(result))


# ----------------------------------------------------------------------------------- driver
def _train(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    if args.synthetic_users:
        from privrank.data.synthetic import SyntheticConfig, generate

        data = generate(
            SyntheticConfig(
                n_users=args.synthetic_users,
                n_items=args.synthetic_items,
                n_interactions=20 * args.synthetic_users,
                seed=0,
            )
        )
        return data, f"synthetic {args.synthetic_users} users x {args.synthetic_items} items"
    if args.dataset:
        from privrank.workflow.protocols import load_dataset

        return load_dataset(str(args.dataset)), f"every user of {args.dataset}"
    from privrank.workflow.protocols import prepare

    return prepare(args.data).train, args.data


def _summary(name: str, result: dict) -> dict:
    seconds = result["round_seconds"][1:] or result["round_seconds"]
    devices = result["round_devices"][1:] or result["round_devices"]
    rate = sum(devices) / sum(seconds)
    return {
        **result,
        "devices_per_s": rate,
        "median_round_s": statistics.median(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", default="ml100k-holdout")
    parser.add_argument("--dataset", type=Path, help="a saved dataset (every user a device)")
    parser.add_argument("--synthetic-users", type=int, default=0)
    parser.add_argument("--synthetic-items", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients-per-round", type=int, default=100)
    parser.add_argument("--factors", type=int, default=16)
    parser.add_argument("--flower-nodes", type=int, default=100, help="virtual SuperNodes")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--flower-venv", type=Path, default=ROOT / ".venv-flower")
    parser.add_argument("--pfl-venv", type=Path, default=ROOT / ".venv-pfl")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.arm:
        run_arm(args.arm, args.work)
        return

    train, label = _train(args)
    users, items = train.users(), train.items()
    pythons = {
        "privrank": Path(sys.executable),
        "flower": args.flower_venv / "bin" / "python",
        "pfl": args.pfl_venv / "bin" / "python",
    }
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = {
            "users": train.n_users,
            "n_items": train.n_items,
            "rounds": args.rounds,
            "clients_per_round": args.clients_per_round,
            "factors": args.factors,
            "flower_nodes": args.flower_nodes,
        }
        (work / "spec.json").write_text(json.dumps(spec))
        np.savez(work / "train.npz", users=np.asarray(users), items=np.asarray(items))
        del train, users, items  # the arms read train.npz
        for name in args.arms:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
            env["PATH"] = f"{pythons[name].parent}{os.pathsep}{env['PATH']}"
            command = [str(pythons[name]), __file__, "--arm", name, "--work", str(work)]
            tick = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{name}: failed ({done.returncode})\n{done.stderr[-3000:]}", flush=True)
                results[name] = {"failed": done.stderr[-3000:]}
                continue
            result = _summary(name, json.loads((work / f"{name}.json").read_text()))
            result["process_s"] = time.perf_counter() - tick
            results[name] = result
            print(
                f"{name}: {result['devices_per_s']:.1f} devices/s (median round "
                f"{result['median_round_s']:.3f} s), wall {result['wall_s']:.1f} s, "
                f"peak RSS {result['peak_rss_mb']:.0f} MB (with child processes "
                f"{result['peak_tree_rss_mb']:.0f} MB)",
                flush=True,
            )
        reference = work / "H-privrank.npy"
        for name in args.arms:
            path = work / f"H-{name}.npy"
            entry = results.get(name)
            if isinstance(entry, dict) and path.exists() and reference.exists():
                entry["max_abs_diff_H_vs_privrank"] = float(
                    np.max(np.abs(np.load(path) - np.load(reference)))
                )
    ours = results.get("privrank")
    for name in ("flower", "pfl"):
        peer = results.get(name)
        if isinstance(ours, dict) and isinstance(peer, dict) and "devices_per_s" in peer:
            ratio = ours["devices_per_s"] / peer["devices_per_s"]
            results[f"privrank_over_{name}"] = ratio
            print(f"privrank / {name}: {ratio:.1f}x devices/s", flush=True)
    results["data"] = label
    results["command"] = " ".join(["bench/bench_federated_speed.py", *sys.argv[1:]])
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results["load_average"] = os.getloadavg()
    text = json.dumps(results, indent=2, default=float)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()

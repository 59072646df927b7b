"""Federated training: fedmf against centralised iALS, and DP-FedAvg against non-private FL.

Two parts, each running its peer in the same process:

``utility``: on the named protocols (``ml100k-holdout``, ``beauty-loo``), centralised iALS
(:class:`~privrank.models.IALS`, its defaults: 64 factors, λ = 0.03, ν = 1, α₀ by the
density rule (``unobserved_ratio``), 16 epochs) and fedmf trained by the simulator (the same
objective and hyper-parameters, α₀ the rule's value on the same training part; cohorts
of ``--cohort-fraction`` of the users by Poisson sampling, ``--rounds`` rounds, server
learning rate (decaying linearly to 0 over the rounds) chosen from ``--learning-rates`` on a
validation split carved from the training
part: a per-user 80/20 holdout of train, seed 1; nothing is chosen on test). Both are scored by
the protocol (full ranking, training items excluded; beauty-loo folds in train + validation)
on the same split; the ratio fedmf / iALS of NDCG@10 is the issue's target (≥ 95 %).

``dp``: on :func:`privrank.data.synthetic.generate` data (``--users`` users, 1,000 items in 20
clusters, 20 rows per user on average), per-user 80/20 holdout (seed 0), non-private fedmf and
DP-FedAvg fedmf at each ``--epsilons`` (δ = 1/(10·users), Poisson cohorts of ``--cohort``
devices, adaptive clipping from C₀ = 1, counts bounded to 50 items per device), all with the
same rounds and server learning rate; NDCG@10 on ``--eval-users`` sampled test users; the
ratio DP / non-private at ε = 8 is the target (≥ 90 %).

Usage::

    .venv/bin/python bench/bench_federated.py utility --protocols ml100k-holdout beauty-loo
    .venv/bin/python bench/bench_federated.py dp --users 100000 --epsilons 1 2 4 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from privrank.data.splits import HoldoutSplit, split
from privrank.federated import FederatedSettings, simulate
from privrank.metrics import EvaluationConfig, bootstrap_cis, evaluate
from privrank.models import IALS, FedMFConfig, FitOptions, Query
from privrank.privacy.spec import PrivacySpec
from privrank.workflow.protocols import prepare
from privrank.workflow.spend import RoundLedger


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fedmf_config(train: Any) -> FedMFConfig:
    """fedmf with iALS's default objective (same hyper-parameters as the peer).

    iALS's default α₀ is a rule of the training matrix's density (``unobserved_ratio``); fedmf
    takes an explicit α₀, so the bench gives it the value the rule gives on ``train``.
    """
    ials = IALS().config
    return FedMFConfig(
        factors=ials.factors,
        regularization=ials.regularization,
        regularization_exponent=ials.regularization_exponent,
        unobserved_weight=IALS.resolve_unobserved_weight(ials, train.to_csr()),
        init_std=ials.init_std,
    )


def _score(model: Any, history: Any, fold_in: bool):
    if not fold_in:
        return model.score
    indptr, items = history.sequences()
    query = Query(indptr=indptr.astype(np.int64), items=items.astype(np.int64))
    return lambda users: model.score(query.take(users))


def _ndcg(model: Any, history: Any, test: Any, config: EvaluationConfig, fold_in: bool) -> dict:
    result = evaluate(_score(model, history, fold_in), history, test, config)
    ci = bootstrap_cis(result.per_user, confidence=0.95, n_resamples=1000, seed=0)["ndcg@10"]
    return {"ndcg@10": result.means["ndcg@10"], "ci": [ci.low, ci.high]}


def _fed(train: Any, settings: FederatedSettings, spec=None, ledger=None, config=None):
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = simulate(
            config or FedMFConfig(),
            train,
            settings,
            run_dir=Path(tmp) / "run",
            spec=spec,
            ledger=ledger,
        )
        return result, time.perf_counter() - started


def utility(args) -> list[dict[str, Any]]:
    rows = []
    eval_config = EvaluationConfig(cutoffs=(10,), metrics=("ndcg",), beyond_accuracy=False)
    for name in args.protocols:
        prepared = prepare(name)
        train = prepared.train
        fold_in = prepared.history_extends_train
        cohort = max(1, round(args.cohort_fraction * train.n_users))
        # Selection of the server learning rate on validation carved from train (seed 1).
        inner = split(train, HoldoutSplit(fraction=0.2, seed=1))
        chosen, selection = None, []
        for rate in args.learning_rates:
            settings = FederatedSettings(
                rounds=args.rounds, clients_per_round=cohort, server_learning_rate=rate
            )
            result, _ = _fed(inner.train, settings, config=_fedmf_config(inner.train))
            value = _ndcg(result.model, inner.train, inner.test, eval_config, False)["ndcg@10"]
            selection.append({"learning_rate": rate, "validation_ndcg@10": value})
            print(f"  {name} validation lr {rate}: {value:.4f}", flush=True)
        chosen = max(selection, key=lambda row: row["validation_ndcg@10"])["learning_rate"]
        started = time.perf_counter()
        ials = IALS().fit(train, FitOptions(seed=0, threads=args.threads))
        ials_s = time.perf_counter() - started
        peer = _ndcg(ials, prepared.history, prepared.test, eval_config, fold_in)
        settings = FederatedSettings(
            rounds=args.rounds, clients_per_round=cohort, server_learning_rate=chosen
        )
        result, fed_s = _fed(train, settings, config=_fedmf_config(train))
        fed = _ndcg(result.model, prepared.history, prepared.test, eval_config, fold_in)
        row = {
            "protocol": name,
            "users": train.n_users,
            "items": train.n_items,
            "ials": peer,
            "ials_fit_s": ials_s,
            "fedmf": fed,
            "fedmf_s": fed_s,
            "ratio": fed["ndcg@10"] / peer["ndcg@10"],
            "rounds": args.rounds,
            "cohort": cohort,
            "learning_rate": chosen,
            "selection": selection,
            "peak_rss_mib": _peak_mib(),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _sample(test, n_users: int, seed: int):
    users = np.unique(test.users())
    if users.size <= n_users:
        return test
    keep = np.random.default_rng(seed).choice(users, n_users, replace=False)
    return test.take(np.flatnonzero(np.isin(test.users(), keep)))


def synthetic_split(users: int, eval_users: int) -> tuple[Any, Any]:
    """The DP benches' data: ``users`` synthetic users (1,000 items in 20 clusters, 20 rows per
    user on average, seed 0), per-user 80/20 holdout (seed 0); test sampled to ``eval_users``."""
    from privrank.data.synthetic import SyntheticConfig, generate

    data = generate(
        SyntheticConfig(
            n_users=users,
            n_items=1000,
            n_interactions=users * 20,
            n_clusters=20,
            rating_levels=None,
            seed=0,
        )
    )
    parts = split(data, HoldoutSplit(fraction=0.2, seed=0))
    return parts.train, _sample(parts.test, eval_users, 0)


def machine_header() -> str:
    """The line a DP bench prints first: Python, cores and the load it ran under."""
    return (
        f"python {platform.python_version()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    )


def round_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`FederatedSettings` every arm of a DP bench shares: rounds, cohort, server
    learning rate and batch size from ``--rounds``, ``--cohort``, ``--learning-rate`` and
    ``--batch-size``."""
    return {
        "rounds": args.rounds,
        "clients_per_round": args.cohort,
        "server_learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
    }


def timed_simulate(
    train: Any, settings: FederatedSettings, **kwargs: Any
) -> tuple[Any, float, list[Any]]:
    """fedmf at its defaults through the simulator in a throwaway run directory: the result,
    the wall seconds and the per-round progress reports."""
    reports: list[Any] = []
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = simulate(
            FedMFConfig(), train, settings, run_dir=Path(tmp) / "run", progress=reports.append,
            **kwargs,
        )  # fmt: skip
        return result, time.perf_counter() - started, reports


class ArmRecorder:
    """The rows of a DP bench's arms: each scored (NDCG@10 with its 95 % CI on ``test``),
    printed as a JSON line and saved to ``--json`` as soon as it is recorded, so that an
    interrupted run keeps every arm it finished."""

    def __init__(self, args: argparse.Namespace, train: Any, test: Any) -> None:
        self.args, self.train, self.test = args, train, test
        self.eval_config = EvaluationConfig(cutoffs=(10,), metrics=("ndcg",), beyond_accuracy=False)
        self.rows: list[dict[str, Any]] = []

    def save(self) -> None:
        """Write every row so far (call again after changing a recorded row)."""
        if self.args.json:
            with open(self.args.json, "w") as handle:
                json.dump({"args": vars(self.args), "rows": self.rows}, handle, indent=2)

    def record(self, arm: str, result: Any, seconds: float, **extra: Any) -> dict[str, Any]:
        """Score ``result.model``, print and save its row; returns the row (mutable)."""
        row = {
            "arm": arm,
            **_ndcg(result.model, self.train, self.test, self.eval_config, False),
            "released_rounds": result.state.released_rounds,
            "seconds": round(seconds, 1),
            "peak_rss_mib": round(_peak_mib()),
            **extra,
        }
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        self.save()
        return row


def dp(args) -> list[dict[str, Any]]:
    from privrank.privacy.ledger import Ledger

    started = time.perf_counter()
    train, test = synthetic_split(args.users, args.eval_users)
    print(f"data + split {time.perf_counter() - started:.0f} s", flush=True)
    eval_config = EvaluationConfig(cutoffs=(10,), metrics=("ndcg",), beyond_accuracy=False)
    settings = FederatedSettings(
        rounds=args.rounds,
        clients_per_round=args.cohort,
        server_learning_rate=args.learning_rate,
        batch_size=4096,
    )
    rows = []
    result, seconds = _fed(train, settings)
    base = _ndcg(result.model, train, test, eval_config, False)
    rows.append({"epsilon": None, **base, "seconds": seconds, "peak_rss_mib": _peak_mib()})
    print(json.dumps(rows[-1]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/ledger.sqlite"
        with Ledger(url) as book:
            book.set_budget("synth", 1000.0, 0.5)
        for epsilon in args.epsilons:
            spec = PrivacySpec(epsilon=epsilon, max_interactions_per_user=50)
            with RoundLedger("synth", f"bench eps {epsilon}", url) as ledger:
                result, seconds = _fed(train, settings, spec, ledger)
            scored = _ndcg(result.model, train, test, eval_config, False)
            rows.append(
                {
                    "epsilon": epsilon,
                    **scored,
                    "ratio": scored["ndcg@10"] / base["ndcg@10"],
                    "spent_epsilon": result.guarantee.epsilon,
                    "delta": result.guarantee.delta,
                    "noise_multiplier": result.plan.noise_multiplier,
                    "final_clipping_norm": result.state.clipping_norm,
                    "seconds": seconds,
                    "peak_rss_mib": _peak_mib(),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    one = sub.add_parser("utility")
    one.add_argument("--protocols", nargs="+", default=["ml100k-holdout", "beauty-loo"])
    one.add_argument("--rounds", type=int, default=100)
    one.add_argument("--cohort-fraction", type=float, default=0.1)
    one.add_argument("--learning-rates", type=float, nargs="+", default=[0.5, 1.0])
    one.add_argument("--threads", type=int, default=2)
    two = sub.add_parser("dp")
    two.add_argument("--users", type=int, default=100_000)
    two.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    two.add_argument("--rounds", type=int, default=100)
    two.add_argument("--cohort", type=int, default=5000)
    two.add_argument("--learning-rate", type=float, default=0.5)
    two.add_argument("--eval-users", type=int, default=20_000)
    for p in (one, two):
        p.add_argument("--json")
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows = utility(args) if args.part == "utility" else dp(args)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()

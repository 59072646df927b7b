"""Distributed DP (SecAgg+ with the distributed discrete Gaussian) against central DP-FedAvg.

Issue 12's utility target: fedmf trained with distributed DP reaches ≥ 95 % of the NDCG@10 of
fedmf trained with central DP-FedAvg at the same (ε, δ). All three arms run in this process
on the same split, with the same rounds, cohort and server learning rate:

- ``non-private``: plain sums (the reference of both);
- ``central``: DP-FedAvg (:mod:`privrank.privacy.dp_fedavg`): Poisson cohorts, adaptive
  clipping from C₀ = 1, Gaussian noise added by the server, PLD accounting with amplification
  by sampling;
- ``distributed``: ``--aggregation secagg --distributed-dp``: every round a real SecAgg+
  protocol run (X25519, Shamir, AES-CTR masks) over the cohort, with ``--dropout`` of the
  devices dropping after sharing keys; each device clips at a fixed C, rounds and adds
  discrete Gaussian noise before masking; zCDP accounting, no amplification claimed (with
  ``--secret-sampling``: amplified by secret Poisson sampling at q = m/N); the fewest
  survivors accounted is ``--min-fraction`` of the expected cohort. C is the central arm's
  final adaptive clipping norm (a value of the central run's released state; a
  deployment would take it from a public or separately budgeted estimate).
- ``distributed adaptive`` (with ``--distributed-arms adaptive``): the shipped defaults,
  adaptive clipping from the spec's default C₀ = 1 (each device appends its noised clipping
  bit to its SecAgg+ input; :mod:`privrank.privacy.distributed_dp_plan`), otherwise the same
  as ``distributed``. ``--distributed-arms`` runs the named distributed arms in that order
  (default: ``fixed`` only, the earlier runs' arm).

With ``--no-masks`` the distributed arm elides SecAgg+'s masks
(``SecureAggregation(masks=False)``): the server's sum is computed directly as the modular
sum of the survivors' clipped, conditionally rounded inputs, and their discrete Gaussian noise
shares are drawn at once as their sum (same distribution); the model is what the real protocol
would give (the tests check the elided sum against the protocol's, exactly), only the
protocol's cost is not simulated. That is what lets the arm run at 1M users with cohorts of
thousands (a real SecAgg+ round over 500 devices of 68,096 coordinates takes about 70 s here).

``--more-epsilons`` adds central DP-FedAvg arms at other ε (issue 11's ε = 1, 2, 4), run after
the three main arms, each with its ratio to the non-private arm.

Model: fedmf at its defaults (:class:`~privrank.models.FedMFConfig`, what ``privrank federated
train`` uses; ``bench_federated.py``'s iALS-derived config no longer builds since iALS's
unobserved weight became a rule of the data).

Data: :func:`privrank.data.synthetic.generate` (``--users`` users, 1,000 items in 20 clusters,
20 rows per user on average), per-user 80/20 holdout (seed 0), NDCG@10 on ``--eval-users``
sampled test users, δ = 1/(10·users), counts bounded to 50 items per device.

Usage::

    .venv/bin/python bench/bench_distributed_dp_utility.py --users 100000 --cohort 1000 \\
        --rounds 20 --epsilon 8
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

from bench_federated import (
    ArmRecorder,
    machine_header,
    round_settings,
    synthetic_split,
    timed_simulate,
)
from privrank.federated import FederatedSettings
from privrank.federated.secure_aggregation import SecureAggregation
from privrank.privacy.ledger import Ledger
from privrank.privacy.spec import PrivacySpec
from privrank.workflow.spend import RoundLedger


def _run(train: Any, settings: FederatedSettings, **kwargs: Any) -> tuple[Any, float]:
    result, seconds, _ = timed_simulate(train, settings, **kwargs)
    return result, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--cohort", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--learning-rate", type=float, default=0.5)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--min-fraction", type=float, default=0.8)
    parser.add_argument("--eval-users", type=int, default=20_000)
    parser.add_argument(
        "--secret-sampling",
        action="store_true",
        help="account the distributed arm with amplification by secret Poisson sampling",
    )
    parser.add_argument(
        "--no-masks",
        action="store_true",
        help="distributed arm: elide SecAgg+'s masks (the same sum, no protocol cost)",
    )
    parser.add_argument(
        "--distributed-arms", nargs="+", choices=["fixed", "adaptive"], default=["fixed"]
    )
    parser.add_argument("--more-epsilons", type=float, nargs="*", default=[])
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--json")
    args = parser.parse_args()
    print(machine_header(), flush=True)
    train, test = synthetic_split(args.users, args.eval_users)
    common = round_settings(args)
    recorder = ArmRecorder(args, train, test)
    record, save = recorder.record, recorder.save
    base, seconds = _run(train, FederatedSettings(**common))
    plain = record("non-private", base, seconds)
    save()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/ledger.sqlite"
        with Ledger(url) as book:
            book.set_budget("synth", 1000.0, 0.5)
        spec = PrivacySpec(epsilon=args.epsilon, max_interactions_per_user=50)
        with RoundLedger("synth", "bench central", url) as ledger:
            central, seconds = _run(train, FederatedSettings(**common), spec=spec, ledger=ledger)
        clip = float(central.state.clipping_norm)
        c = record(
            "central",
            central,
            seconds,
            epsilon=central.guarantee.epsilon,
            delta=central.guarantee.delta,
            final_clipping_norm=clip,
            ratio_to_non_private=None,
        )
        c["ratio_to_non_private"] = c["ndcg@10"] / plain["ndcg@10"]
        c["noise_multiplier"] = central.plan.noise_multiplier
        save()
        for kind in args.distributed_arms:
            adaptive = kind == "adaptive"
            settings = FederatedSettings(
                **common,
                adaptive_clipping=adaptive,
                min_clients=max(2, int(args.min_fraction * args.cohort * (1 - args.dropout))),
            )
            spec_d = spec if adaptive else spec.model_copy(update={"clipping_norm": clip})
            arm = "distributed adaptive" if adaptive else "distributed"
            with RoundLedger("synth", f"bench {arm}", url) as ledger:
                distributed, seconds = _run(
                    train,
                    settings,
                    spec=spec_d,
                    ledger=ledger,
                    secure=SecureAggregation(dropout=args.dropout, masks=not args.no_masks),
                    distributed_dp=True,
                    secret_sampling=args.secret_sampling,
                )
            plan = distributed.distributed_plan
            d = record(
                arm,
                distributed,
                seconds,
                epsilon=distributed.guarantee.epsilon,
                delta=distributed.guarantee.delta,
                clipping_norm=spec_d.clipping_norm,
                final_clipping_norm=float(distributed.state.clipping_norm),
                rho_update=plan.rounds.round_rho(),
                rho_bit=None if plan.bits is None else plan.bits.round_rho(),
                min_clients=settings.min_clients,
                sigma_grid_units=plan.rounds.sigma,
                sampling_rate=plan.sampling_rate,
                scale=plan.rounds.scale,
                sum_noise_std_at_cohort=plan.rounds.sum_noise_std(args.cohort),
                central_sum_noise_std=central.plan.noise_multiplier * clip,
                masks=not args.no_masks,
            )
            d["ratio_to_central"] = d["ndcg@10"] / c["ndcg@10"]
            d["ratio_to_non_private"] = d["ndcg@10"] / plain["ndcg@10"]
            print(
                f"{arm} / central NDCG@10 = {d['ratio_to_central']:.4f} (target >= 0.95); "
                f"central / non-private = {c['ratio_to_non_private']:.4f}",
                flush=True,
            )
            save()
        for epsilon in args.more_epsilons:
            spec_e = PrivacySpec(epsilon=epsilon, max_interactions_per_user=50)
            with RoundLedger("synth", f"bench central eps {epsilon}", url) as ledger:
                more, seconds = _run(train, FederatedSettings(**common), spec=spec_e, ledger=ledger)
            e = record(
                f"central eps {epsilon:g}",
                more,
                seconds,
                epsilon=more.guarantee.epsilon,
                delta=more.guarantee.delta,
                noise_multiplier=more.plan.noise_multiplier,
                final_clipping_norm=float(more.state.clipping_norm),
            )
            e["ratio_to_non_private"] = e["ndcg@10"] / plain["ndcg@10"]
            print(f"central eps {epsilon:g} / non-private = {e['ratio_to_non_private']:.4f}")
            save()


if __name__ == "__main__":
    main()

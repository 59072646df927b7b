"""Adaptive clipping under SecAgg+ with distributed DP against fixed clipping, same run.

Issue 12 (with issue 11's adaptive clipping): fedmf trained with distributed DP (SecAgg+ with
the distributed discrete Gaussian, masks elided: the same sum, no protocol cost) at the same
(ε, δ), on the same split, rounds, cohort and server learning rate, with

- ``non-private``: plain sums (the reference);
- ``fixed C=<c>``: each device clips at a fixed C (one arm per ``--fixed``), no bit released;
- ``adaptive from C0=<c>``: each device appends its noised clipping bit to its SecAgg+ input;
  the server moves C towards the ``--quantile`` of the update norms from the unmasked noisy
  bit sum (:mod:`privrank.privacy.distributed_dp_plan`); the bit's release is charged with the
  updates' (so the update noise is a little larger than the fixed arm's at the same ε).

All distributed arms use secret Poisson sampling (``--secret-sampling`` of the simulator) and
account ``--min-fraction`` of the expected cohort as the fewest survivors. NDCG@10 on
``--eval-users`` sampled test users of :func:`bench_federated.synthetic_split`.

Usage::

    nice -n 10 .venv/bin/python bench/bench_ddp_adaptive_clipping.py --users 100000 \\
        --cohort 500 --rounds 20 --epsilon 8 --fixed 1.0 0.1 --adaptive-from 1.0 0.1
"""

from __future__ import annotations

import argparse
import tempfile

from bench_federated import ArmRecorder, machine_header, round_settings, synthetic_split
from bench_federated import timed_simulate as _run
from privrank.federated import FederatedSettings
from privrank.federated.secure_aggregation import SecureAggregation
from privrank.privacy.ledger import Ledger
from privrank.privacy.spec import PrivacySpec
from privrank.workflow.spend import RoundLedger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--cohort", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--learning-rate", type=float, default=0.5)
    parser.add_argument("--min-fraction", type=float, default=0.8)
    parser.add_argument("--eval-users", type=int, default=20_000)
    parser.add_argument("--fixed", type=float, nargs="*", default=[1.0])
    parser.add_argument("--adaptive-from", type=float, nargs="*", default=[1.0])
    parser.add_argument("--quantile", type=float, default=0.5)
    parser.add_argument("--clip-learning-rate", type=float, default=0.2)
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of each private arm (fresh noise each)"
    )
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--json")
    args = parser.parse_args()
    print(machine_header(), flush=True)
    train, test = synthetic_split(args.users, args.eval_users)
    common = round_settings(args)
    recorder = ArmRecorder(args, train, test)
    record, save, rows = recorder.record, recorder.save, recorder.rows
    base, seconds, _ = _run(train, FederatedSettings(**common))
    plain = record("non-private", base, seconds)  # deterministic for the split and seed
    min_clients = max(2, int(args.min_fraction * args.cohort))
    arms = [(f"fixed C={c:g}", c, False) for c in args.fixed]
    arms += [(f"adaptive from C0={c:g}", c, True) for c in args.adaptive_from]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/ledger.sqlite"
        with Ledger(url) as book:
            book.set_budget("synth", 1000.0, 0.5)
        for repeat, (arm, clip, adaptive) in ((r, a) for r in range(args.repeats) for a in arms):
            spec = PrivacySpec(
                epsilon=args.epsilon, max_interactions_per_user=50, clipping_norm=clip
            )
            settings = FederatedSettings(
                **common,
                adaptive_clipping=adaptive,
                target_quantile=args.quantile,
                clipping_learning_rate=args.clip_learning_rate,
                min_clients=min_clients,
            )
            with RoundLedger("synth", f"bench {arm}", url) as ledger:
                result, seconds, reports = _run(
                    train, settings, spec=spec, ledger=ledger,
                    secure=SecureAggregation(masks=False), distributed_dp=True,
                    secret_sampling=True,
                )  # fmt: skip
            plan = result.distributed_plan
            record(
                arm if args.repeats == 1 else f"{arm} #{repeat + 1}",
                result,
                seconds,
                ratio_to_non_private=None,
                epsilon=result.guarantee.epsilon,
                delta=result.guarantee.delta,
                rho_update=plan.rounds.round_rho(),
                rho_bit=None if plan.bits is None else plan.bits.round_rho(),
                update_sum_noise_std_at_cohort_in_C0_units=plan.rounds.sum_noise_std(args.cohort)
                / clip,
                clipping_norms=[round(float(r.clipping_norm), 4) for r in reports],
                final_clipping_norm=float(result.state.clipping_norm),
            )
            rows[-1]["ratio_to_non_private"] = rows[-1]["ndcg@10"] / plain["ndcg@10"]
            save()
    for row in rows:
        print(f"{row['arm']}: NDCG@10 {row['ndcg@10']:.4f} "
              f"({row['ndcg@10'] / plain['ndcg@10']:.4f} of non-private)")  # fmt: skip
    for arm, _, _ in arms:  # mean and sample sd over the repeats (the DP noise differs)
        values = [r["ndcg@10"] for r in rows if r["arm"].split(" #")[0] == arm]
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5
        print(f"{arm}: mean NDCG@10 {mean:.4f} (sd {sd:.4f}, {len(values)} runs), "
              f"{mean / plain['ndcg@10']:.4f} of non-private")  # fmt: skip


if __name__ == "__main__":
    main()

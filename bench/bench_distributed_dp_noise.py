"""Why distributed DP trails central DP-FedAvg: the noise on one round's mean update, by plan.

No training: for the same (ε, δ), rounds T, clipping C = 1 and fedmf's update dimension on the
1,000-item synthetic data (1,000·64 + 64·64), this prints the standard deviation of the noise
on the round's mean update (per coordinate) that each plan adds:

- central DP-FedAvg (:func:`~privrank.privacy.dp_fedavg.plan_dp_fedavg`): ``z·C / m`` with z
  calibrated with amplification by Poisson sampling at ``q = m/N``;
- distributed DP (:func:`~privrank.privacy.distributed_dp_plan.plan_distributed_dp`): the
  discrete Gaussian noise of the ``m`` devices' shares summed, over ``m``, with the accounting
  counting on ``0.8·m`` survivors and no amplification claimed;
- the same with secret sampling at ``q = m/N`` (the sampled accountant), and, to split what is
  left, the same again counting on all ``m`` devices' noise (no drop-out margin: ``√(1/0.8)``
  of the gap is that margin, the rest is the accounting).

Usage::

    .venv/bin/python bench/bench_distributed_dp_noise.py --users 100000 --rounds 10 \\
        --cohorts 500,5000
"""

from __future__ import annotations

import argparse

from privrank.privacy.distributed_dp_plan import plan_distributed_dp
from privrank.privacy.dp_fedavg import plan_dp_fedavg
from privrank.privacy.spec import PrivacySpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--cohorts", default="1000,10000,100000")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--factors", type=int, default=64)
    args = parser.parse_args()
    n, d = args.users, args.items * args.factors + args.factors**2
    spec = PrivacySpec(epsilon=args.epsilon, max_interactions_per_user=50, clipping_norm=1.0)
    spec = spec.resolve(n)
    print(f"N = {n:,}, T = {args.rounds}, ε = {args.epsilon:g}, δ = {spec.require_delta():.3g}")
    print(
        "| cohort m | q = m/N | central z | central noise sd on the mean | distributed noise sd "
        "on the mean | distributed / central | distributed, secret sampling: noise sd | "
        "secret sampling / central | secret sampling, no drop-out margin / central |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cohort in (int(x) for x in args.cohorts.split(",")):
        fed = plan_dp_fedavg(spec, n, cohort, args.rounds, None)
        central = fed.noise_multiplier / fed.expected_cohort
        ddp = plan_distributed_dp(
            spec, population=n, n_items=args.items, dimension=d, rounds=args.rounds,
            min_clients=max(2, int(0.8 * cohort)), max_clients=n, modulus_bits=48,
        )  # fmt: skip
        distributed = ddp.rounds.sum_noise_std(cohort) / cohort
        sampled_plan = plan_distributed_dp(
            spec, population=n, n_items=args.items, dimension=d, rounds=args.rounds,
            min_clients=max(2, int(0.8 * cohort)), max_clients=n, modulus_bits=48,
            sampling_rate=cohort / n,
        )  # fmt: skip
        sampled = sampled_plan.rounds.sum_noise_std(cohort) / cohort
        no_margin_plan = plan_distributed_dp(
            spec, population=n, n_items=args.items, dimension=d, rounds=args.rounds,
            min_clients=cohort, max_clients=n, modulus_bits=48, sampling_rate=cohort / n,
        )  # fmt: skip
        no_margin = no_margin_plan.rounds.sum_noise_std(cohort) / cohort
        print(
            f"| {cohort:,} | {cohort / n:.4g} | {fed.noise_multiplier:.3f} | {central:.3g} | "
            f"{distributed:.3g} | {distributed / central:.2f} | {sampled:.3g} | "
            f"{sampled / central:.2f} | {no_margin / central:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

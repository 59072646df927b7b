"""Distributed DP on a scalar sum: noise of the RDP accountant and of the new PLD accountant
against central DP-FedAvg's PLD, at the same (ε, δ).

A scalar release (a count, or adaptive clipping's clipped-count bit) scaled to the integer grid
by ``--scale`` (so Δ = scale; each device's σ must be ≥ ½ for either distributed bound), from
a Poisson cohort of expected size m = q·N, over T rounds, with the accounting counting on the
noise of ``--survivors``·m devices. For each ε this calibrates (bisection, relative 1e-3):

- central: the Gaussian noise sd on the sum, dp_accounting's PLD of the sampled Gaussian;
- distributed, RDP: ``√(n) σ`` with σ the smallest per-device discrete Gaussian σ that
  :func:`~privrank.privacy.distributed_dp_accounting.ddg_sampled_epsilon` accepts (n devices);
- distributed, PLD: the same with :func:`~privrank.privacy.ddg_pld.ddg_scalar_epsilon`;

and prints the distributed sd on the sum (all m devices' shares: √m σ) over central's.

Usage::

    .venv/bin/python bench/bench_ddg_pld_scalar.py --users 1000000 --cohort 5000 --rounds 20
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import dp_accounting as dpa

from privrank.privacy.ddg_pld import ddg_scalar_epsilon
from privrank.privacy.distributed_dp_accounting import ddg_round_rho, ddg_sampled_epsilon


def _smallest(fits: Callable[[float], bool], lo: float, hi: float) -> float:
    while not fits(hi):
        lo, hi = hi, hi * 2
    while hi / lo > 1 + 1e-3:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--cohort", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--epsilons", default="1,4,8")
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--survivors", type=float, default=0.8)
    args = parser.parse_args()
    q, t, delta = args.cohort / args.users, args.rounds, 1.0 / (10 * args.users)
    n = max(2, int(args.survivors * args.cohort))
    print(f"N = {args.users:,}, m = {args.cohort:,}, q = {q:.4g}, T = {t}, δ = {delta:.3g}, "
          f"Δ = {args.scale}, accounting on n = {n:,} devices")  # fmt: skip
    print(
        "| ε | central sd on the sum | RDP: sigma per device | RDP sd / central | PLD: sigma per "
        "device | PLD sd / central | PLD sd / central, n = m | seconds |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for eps in (float(x) for x in args.epsilons.split(",")):
        start = time.perf_counter()

        def central_fits(sd: float, eps: float = eps) -> bool:
            pld = dpa.pld.privacy_loss_distribution.from_gaussian_mechanism(
                sd / args.scale, sampling_prob=q, value_discretization_interval=1e-4
            )
            return pld.self_compose(t).get_epsilon_for_delta(delta) <= eps

        central = _smallest(central_fits, 0.05 * args.scale, 0.1 * args.scale)

        def rdp_fits(sigma: float, eps: float = eps) -> bool:
            rho = ddg_round_rho(sigma, n, float(args.scale), 1)
            return ddg_sampled_epsilon(rho, t, q, delta) <= eps

        def pld_fits(sigma: float, eps: float = eps, k: int = n) -> bool:
            return ddg_scalar_epsilon(sigma, k, args.scale, t, q, delta) <= eps

        rdp = _smallest(rdp_fits, 0.5, 1.0)
        pld = _smallest(pld_fits, 0.5, 1.0)
        pld_all = _smallest(lambda s: pld_fits(s, k=args.cohort), 0.5, 1.0)
        root_m = math.sqrt(args.cohort)
        print(
            f"| {eps:g} | {central:.4g} | {rdp:.4g} | {rdp * root_m / central:.3f} | "
            f"{pld:.4g} | {pld * root_m / central:.3f} | {pld_all * root_m / central:.3f} | "
            f"{time.perf_counter() - start:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

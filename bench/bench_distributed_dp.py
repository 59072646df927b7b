"""Distributed DP vs central DP-FedAvg noise at the same (ε, δ): the error of one round's sum.

For a round of n clients, each with an update of L2 norm ≤ C = 1 in d coordinates, both
mechanisms release the sum of the updates over T rounds at the same (ε, δ):

- **central DP-FedAvg** (a trusted server adds the noise): the sum plus ``N(0, (m C)²)``, with m
  the smallest multiplier for which T Gaussian releases meet (ε, δ), by privrank's calibration
  service (``calibrate_multiplier``, RDP accountant, the accountant the distributed mechanism
  must use; the PLD multiplier is printed as well);
- **distributed discrete Gaussian** (``DistributedDiscreteGaussian``, no trusted party): each
  client rounds and noises its own update; the server decodes the securely aggregated sum.
  Accounting assumes only ``n_min = (1 − dropout) · n`` survivors.

"drop" is the dropout the accounting tolerates: the noise is calibrated for ``n_min`` survivors
and is larger when more survive (by ``√(n_survivors / n_min)``), so the DDG error is measured
both with all n clients surviving and with only ``n_min``. Expected ratios (from the noise
standard deviations: ``√(n_s · Var N_Z(0, σ²)) / scale`` against ``m · C``) are printed beside
the measured ones.

It measures the root-mean-square error of the decoded sum against the true sum, for both, on
the same random updates (the DDG sum is the real client encoding; the masking of secure
aggregation cancels exactly, tested elsewhere, so it is left out here), and prints the ratio
RMSE(DDG) / RMSE(central). The issue's end-to-end target (NDCG@10 of federated training at ε = 8
against central DP-FedAvg) needs the federated trainer and is not measured here.

Usage::

    .venv/bin/python bench/bench_distributed_dp.py --clients 100,1000,10000 --epsilons 1,8
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from privrank.privacy.calibration import Release, calibrate_multiplier
from privrank.privacy.distributed_dp import (
    DistributedDiscreteGaussian,
    DistributedDPConfig,
    clip_l2,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="100,1000,10000")
    parser.add_argument("--epsilons", default="1,8")
    parser.add_argument("--dropouts", default="0,0.3")
    parser.add_argument("--dim", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--delta", type=float, default=1e-6)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(
        f"d = {args.dim}, T = {args.rounds}, δ = {args.delta:g}, C = 1, ring 2^{args.bits}\n"
        f"{'n':>6}{'ε':>4}{'drop':>6}{'n_min':>7}{'m rdp':>9}{'m pld':>8}{'scale':>10}"
        f"{'RMSE central':>13}{'DDG all':>9}{'ratio':>7}{'exp.':>7}{'DDG n_min':>10}"
        f"{'ratio':>7}{'exp.':>7}{'ε DDG':>8}"
    )
    rng = np.random.default_rng(args.seed)
    for n in (int(s) for s in args.clients.split(",")):
        updates, _ = clip_l2(rng.normal(size=(n, args.dim)), 1.0)
        truth = updates.sum(axis=0)
        for eps in (float(e) for e in args.epsilons.split(",")):
            release = (Release("gaussian", "sum", 1.0, 1.0, count=args.rounds),)
            m_rdp = calibrate_multiplier(eps, args.delta, release, accountant_name="rdp")
            m_pld = calibrate_multiplier(eps, args.delta, release, accountant_name="pld")
            central = truth + rng.normal(0.0, m_rdp, size=args.dim)
            rmse_central = float(np.sqrt(np.mean((central - truth) ** 2)))
            for drop in (float(p) for p in args.dropouts.split(",")):
                n_min = max(1, math.floor((1 - drop) * n))
                mech = DistributedDiscreteGaussian(
                    DistributedDPConfig(
                        epsilon=eps,
                        delta=args.delta,
                        l2_clip=1.0,
                        dimension=args.dim,
                        rounds=args.rounds,
                        min_clients=n_min,
                        max_clients=n,
                        modulus_bits=args.bits,
                    )
                )
                encoded, _ = mech.encode_batch(updates, rng)
                cells = []
                for count in (n, n_min):
                    decoded = mech.decode(encoded[:count].sum(axis=0))
                    error = decoded - updates[:count].sum(axis=0)
                    rmse = float(np.sqrt(np.mean(error**2)))
                    cells.append(
                        f"{rmse:>9.4f}{rmse / rmse_central:>7.3f}"
                        f"{mech.sum_noise_std(count) / m_rdp:>7.3f}"
                    )
                print(
                    f"{n:>6}{eps:>4g}{drop:>6.0%}{n_min:>7}{m_rdp:>9.4f}{m_pld:>8.4f}"
                    f"{mech.scale:>10.3g}{rmse_central:>13.4f}{cells[0]} {cells[1]}"
                    f"{mech.epsilon_after(args.rounds):>8.4f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

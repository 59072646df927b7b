"""DP-FedAvg per-item signal against noise, by data set and cohort (a calculation, no training).

Why DP-FedAvg keeps the non-private NDCG@10 on the 1M-user synthetic data and collapses on
Beauty at the same ε = 8. For each (cohort m, rounds T) the DP-FedAvg plan
(:func:`privrank.privacy.dp_fedavg.plan_dp_fedavg`, Poisson sampling, adaptive clipping, ε = 8,
δ = 1/(10·N), counts bounded to 50 items) gives the noise multiplier z. An item with n_j training
users has q·n_j contributors per round (q = m/N), each moving its d-dimensional row by at most C,
while the noise on that row has norm about z·C·√d. Over T rounds the signal adds up linearly and
the noise as √T, so

    SNR_j ≤ √T · q · n_j / (z · √d)

is an *upper bound* on the run's signal-to-noise ratio for item j (a device's update norm C is
shared by every row it touches, the Gramian block and the α₀ term, so the real ratio is lower).

Usage::

    PRIVRANK_DATA_DIR=/work/shared/data .venv/bin/python bench/bench_federated_dp_snr.py
"""

from __future__ import annotations

import math

import numpy as np

from bench_federated import synthetic_split
from privrank.federated import FederatedSettings
from privrank.privacy.dp_fedavg import plan_dp_fedavg
from privrank.privacy.spec import PrivacySpec
from privrank.workflow.protocols import prepare

FACTORS = 64


def table(name: str, counts: np.ndarray, population: int, grid: list[tuple[int, int]]) -> None:
    print(
        f"== {name}: {population} devices, {counts.size} items, n_j median "
        f"{np.median(counts):.0f}, mean {counts.mean():.1f}"
    )
    spec = PrivacySpec(epsilon=8.0, max_interactions_per_user=50).resolve(population)
    for m, rounds in grid:
        settings = FederatedSettings(rounds=rounds, clients_per_round=m)
        plan = plan_dp_fedavg(spec, population, m, rounds, settings.clipping_rule(), "poisson")
        z = plan.noise_multiplier
        q = min(m, population) / population
        per_round = q * counts
        snr = math.sqrt(rounds) * per_round / (z * math.sqrt(FACTORS))
        print(
            f"  m {m:>6} T {rounds:>4} q {q:.4f} z {z:.3f} | contributors per item and round "
            f"(median) {np.median(per_round):.2f} | SNR bound: median item {np.median(snr):.2f}, "
            f"items below 1: {np.mean(snr < 1):.1%}"
        )


def main() -> None:
    beauty = prepare("beauty-loo").train
    counts = np.bincount(beauty.items(), minlength=beauty.n_items).astype(float)
    grid = [(1000, 300), (1000, 100), (5000, 30), (10000, 20), (beauty.n_users, 10)]
    table("beauty-loo train", counts, beauty.n_users, grid)
    train, _ = synthetic_split(100_000, 1000)
    # the 1M-user data's item counts, approximated by 10x the 100k-user data's (same generator)
    synth = np.bincount(train.items(), minlength=train.n_items).astype(float) * 10
    table("synthetic 1M users (100k counts x 10)", synth, 1_000_000, [(5000, 20), (10000, 30)])


if __name__ == "__main__":
    main()

"""What calibrate_split gives the private two-stage fit of BENCHMARKS run 1 (ML-100K, ε 8).

Shape-only plans: DP-EASE's Gram release (counts + Gram compose exactly to one Gaussian of
multiplier ``gaussian_multiplier(ε_i, δ_i)``, see gram_release) twice (fit part and refit),
and the listwise ranker's DP-SGD (``plan_dpsgd``: 943 users, batch 128, 20 epochs, no counts).
Prints the basic split, the PLD ε of its releases, and the calibrated split.

    PYTHONPATH=src python bench/bench_two_stage_calibrated_split.py
"""

from __future__ import annotations

from privrank.privacy.calibration import (
    PLD_DISCRETIZATION,
    Release,
    composed_epsilon,
    gaussian_multiplier,
)
from privrank.privacy.dpsgd import plan_dpsgd
from privrank.privacy.spec import PrivacySpec
from privrank.ranking.two_stage._private import calibrate_split, split_budget

N_USERS, EPSILON, SHARE = 943, 8.0, 0.2


def ease(eps: float, delta: float) -> list[Release]:
    return [Release("gaussian", "EASE counts+Gram", 1.0, gaussian_multiplier(eps, delta))]


def ranker(eps: float, delta: float) -> list[Release]:
    spec = PrivacySpec(epsilon=eps, delta=delta, accountant="pld")
    plan = plan_dpsgd(spec, N_USERS, 128, 20, with_popularity=False)
    return list(plan.releases())


def main() -> None:
    spec = PrivacySpec(epsilon=EPSILON, max_interactions_per_user=1000).resolve(N_USERS)
    delta = spec.require_delta()
    split = split_budget(spec, 1, True, SHARE)
    specs = [*split.retrievers, split.ranker, *split.refit]
    plans = [ease, ranker, ease]
    parts = [(s.epsilon, s.require_delta(), p) for s, p in zip(specs, plans, strict=True)]
    basic = [r for e, d, p in parts for r in p(e, d)]
    print(f"delta {delta:.3g}; basic split eps {[round(s.epsilon, 3) for s in specs]}")
    loose = composed_epsilon(basic, delta, "pld", PLD_DISCRETIZATION)
    print(f"PLD eps of the basic split's releases: {loose:.3f}")
    scale, per_part, composed = calibrate_split(parts, EPSILON, delta, tolerance=0.02)
    widened = [round(e, 3) for e in per_part]
    print(f"calibrated: s = {scale:.3f}, per-part eps {widened}, PLD eps {composed:.3f}")


if __name__ == "__main__":
    main()

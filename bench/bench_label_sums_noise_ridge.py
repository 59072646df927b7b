"""Choose the noise-ridge coefficient ``c`` of label sums on validation carves (never the test).

For each data set, the training part is split into a fit part and a validation part:
``synthetic:PATH`` — the ad log's first ``--train-rows`` rows fit, the next ``--valid-rows``
validate (both inside what ``bench_label_dp.py`` trains on); ``frappe`` — the protocol's training
part fits and its validation part validates. For every ε and noise seed the label sums are
released once (Laplace, ``LabelSumsLogistic``'s mechanism), then one fit per ``c`` on the same
noisy sums: ``λ = λ₀ + noise_ridge_penalty(...)`` (``LabelSumsConfig.noise_ridge = c``). Printed:
the median validation AUC over the seeds and the median λ, per (ε, c), and the non-private
fit's AUC at λ₀.

    PYTHONPATH=src python bench/bench_label_sums_noise_ridge.py --data frappe \
        --fields user,item --min-count 15 --coefficients 0.01,0.03,0.1,0.3,1 --epsilons 1
    ... --data synthetic:/tmp/ctr5_synth1m --train-rows 240000 --valid-rows 60000 \
        --fields user_segment,ad_category,campaign_id,device,hour,position --min-count 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_label_dp import load_frappe, load_synthetic
from privrank.privacy.conversion_reports import LaplaceHistogramMechanism
from privrank.ranking.label_sums_logistic import (
    OneHotDesign,
    consistent_sums,
    fit_logistic_from_sums,
    noise_ridge_penalty,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="frappe or synthetic:PATH")
    parser.add_argument("--train-rows", type=int, default=240_000)
    parser.add_argument("--valid-rows", type=int, default=60_000)
    parser.add_argument("--fields", required=True)
    parser.add_argument("--min-count", type=int, default=1)
    parser.add_argument("--l2", type=float, default=1.0, help="λ₀")
    parser.add_argument("--coefficients", default="0.01,0.03,0.1")
    parser.add_argument("--epsilons", default="0.5,1,2")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    name, _, path = args.data.partition(":")
    if name == "frappe":
        split = load_frappe("validation", 0, 0)  # train part, scored on validation
    elif name == "synthetic":
        split = load_synthetic(path, args.train_rows, args.valid_rows)  # rows after the fit part
    else:
        raise SystemExit(f"--data: frappe or synthetic:PATH, got {args.data!r}")
    fields = tuple(args.fields.split(","))
    design = OneHotDesign(fields, (), args.min_count).fit(split.train)
    assert design.offsets_ is not None
    x, x_valid = design.transform(split.train), design.transform(split.test)
    labels = split.train_labels.astype(np.float64)
    counts = np.asarray(x.sum(axis=0)).ravel()
    exact = x.T @ labels

    def auc(sums: np.ndarray, total: float, l2: float) -> float:
        w, b = fit_logistic_from_sums(x, sums, total, l2, max_iter=500)
        return float(roc_auc_score(split.test_labels, x_valid @ w + b))

    reference = auc(exact, float(labels.sum()), args.l2)
    print(f"{split.name}: {x.shape[0]:,} fit rows, {x.shape[1]} columns; ε = inf: {reference:.4f}")
    print("| ε | c | median λ | median validation AUC | range |")
    print("|---|---|---:|---:|---|")
    for epsilon in (float(e) for e in args.epsilons.split(",")):
        results: dict[float, list[tuple[float, float]]] = {}
        for seed in range(args.seeds):
            mechanism = LaplaceHistogramMechanism(epsilon, design.groups)
            noisy = mechanism.add_noise(exact.copy(), np.random.default_rng(seed + 1))
            sums, total = consistent_sums(noisy, counts, design.offsets_)
            sums = np.clip(sums, 0.0, counts)
            total = float(np.clip(total, 0.0, labels.size))
            for c in (float(v) for v in args.coefficients.split(",")):
                l2 = args.l2 + noise_ridge_penalty(
                    sums, total, counts, labels.size, mechanism.scale, c
                )
                results.setdefault(c, []).append((l2, auc(sums, total, l2)))
        for c, runs in results.items():
            aucs = [a for _, a in runs]
            print(
                f"| {epsilon:g} | {c:g} | {statistics.median(lam for lam, _ in runs):.3g} | "
                f"{statistics.median(aucs):.4f} | {min(aucs):.4f} to {max(aucs):.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

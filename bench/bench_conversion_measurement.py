"""Private conversion measurement: relative error against ε and against conversions per campaign.

Reads the conversions of a synthetic ad log (``privrank data synth-ads``), computes the exact
aggregates (no cap, no clipping, no noise: the reference, in the same run) and ``--repeats``
noisy reports per ε and unit (:func:`privrank.privacy.conversion_reports.private_report`), and
reports the median relative error of

- each campaign's conversion count (the sum of its type buckets),
- each campaign × type count (one bucket),
- each campaign's conversion value,

all grouped by the campaign's (or key's) true number of conversions: ``[10, 100)``,
``[100, 1000)``, ``≥ 1000``. The issue's target: median relative error ≤ 10 % for campaigns with
≥ 1,000 conversions at ε = 1 per conversion. The error includes every source: the per-user cap
(dropped conversions), value clipping and the Laplace noise.

Usage::

    .venv/bin/python bench/bench_conversion_measurement.py --log /tmp/synth10m --repeats 20
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

import numpy as np

from privrank.privacy.conversion_reports import (
    ConversionReportConfig,
    exact_report,
    private_report,
)
from privrank.workflow.conversion_measurement import load_conversions

BINS = ((10, 100), (100, 1000), (1000, None))


def _label(low: int, high: int | None) -> str:
    return f">= {low:,}" if high is None else f"[{low:,}, {high:,})"


def _median_errors(
    truth: np.ndarray, estimates: list[np.ndarray], size: np.ndarray
) -> dict[str, float | None]:
    """Median relative error, grouped by ``size`` (the true number of conversions)."""
    errors = np.abs(np.stack(estimates) - truth[None, :]) / np.maximum(truth[None, :], 1e-12)
    out: dict[str, float | None] = {}
    for low, high in BINS:
        rows = (size >= low) & (size < (high if high is not None else np.inf))
        out[_label(low, high)] = float(np.median(errors[:, rows])) if rows.any() else None
        out[_label(low, high) + " n"] = int(rows.sum())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", required=True)
    parser.add_argument("--epsilons", default="0.25,0.5,1,2,4")
    parser.add_argument("--units", default="conversion,user")
    parser.add_argument("--max-conversions-per-user", type=int, default=4)
    parser.add_argument("--value-cap", type=float, default=500.0)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    conversions = load_conversions(args.log)
    exact = exact_report(conversions)
    campaign_count = exact.count.sum(axis=1)
    campaign_value = exact.value.sum(axis=1)
    rng = np.random.default_rng(args.seed)
    results = []
    for unit in args.units.split(","):
        for epsilon in (float(e) for e in args.epsilons.split(",")):
            config = ConversionReportConfig(
                epsilon=epsilon,
                unit=unit,  # type: ignore[arg-type]
                max_conversions_per_user=args.max_conversions_per_user,
                value_cap=args.value_cap,
            )
            reports = [private_report(conversions, config, rng) for _ in range(args.repeats)]
            results.append(
                {
                    "unit": unit,
                    "epsilon": epsilon,
                    "user_epsilon": config.user_epsilon,
                    "dropped": reports[0].dropped,
                    "clipped": reports[0].clipped,
                    "campaign_count": _median_errors(
                        campaign_count, [r.count.sum(axis=1) for r in reports], campaign_count
                    ),
                    "key_count": _median_errors(
                        exact.count.ravel(), [r.count.ravel() for r in reports], exact.count.ravel()
                    ),
                    "campaign_value": _median_errors(
                        campaign_value, [r.value.sum(axis=1) for r in reports], campaign_count
                    ),
                }
            )
    print(
        f"{len(conversions.user):,} conversions, {conversions.n_campaigns} campaigns x "
        f"{conversions.n_types} types; campaigns with >= 1,000 conversions: "
        f"{int((campaign_count >= 1000).sum())}; repeats {args.repeats}; C = "
        f"{args.max_conversions_per_user}, value cap {args.value_cap:g}"
    )
    print(
        "| unit | ε | user-level ε | campaign count rel. err. [10,100) / [100,1000) / ≥1000 "
        "| key count ≥1000 | campaign value ≥1000 |"
    )
    print("|---|---|---|---|---|---|")
    for row in results:
        c = row["campaign_count"]
        k = row["key_count"]
        v = row["campaign_value"]

        def fmt(x: float | None) -> str:
            return "-" if x is None else f"{100 * x:.2f} %"

        print(
            f"| {row['unit']} | {row['epsilon']:g} | {row['user_epsilon']:g} | "
            f"{fmt(c['[10, 100)'])} / {fmt(c['[100, 1,000)'])} / {fmt(c['>= 1,000'])} "
            f"(n={c['>= 1,000 n']}) | {fmt(k['>= 1,000'])} (n={k['>= 1,000 n']}) | "
            f"{fmt(v['>= 1,000'])} |"
        )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(
                {"date": datetime.now(UTC).isoformat(), "argv": sys.argv, "results": results},
                handle,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

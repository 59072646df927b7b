"""Reports of CTR results: markdown tables and the reliability diagram (PNG).

:func:`ctr_markdown` writes, per CTR protocol, the headline metrics with their bootstrap CIs
(calibrated and before calibration) and each model's paired comparison with the baseline.
:func:`plot_reliability` draws one reliability diagram per protocol: for every model, the mean
predicted probability against the observed click rate in each of the protocol's equal-width
bins (the points behind the ECE), with the diagonal of perfect calibration. Charts use
matplotlib's object-oriented API on the Agg canvas and are written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from privrank.atomic import atomic_file

__all__ = ["ctr_groups", "ctr_markdown", "is_ctr_record", "plot_reliability"]

_NAMES = {"auc": "AUC", "log_loss": "log loss", "normalized_entropy": "NE", "ece": "ECE"}


def is_ctr_record(record: dict[str, Any]) -> bool:
    """Whether a result record is a CTR result (``kind == "ctr"``)."""
    return record.get("kind") == "ctr"


def ctr_groups(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """CTR records per protocol, in order of appearance."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if is_ctr_record(record):
            groups.setdefault(record["protocol"]["name"], []).append(record)
    return groups


def _ci(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "n/a"
    return f"{entry['estimate']:.4f} [{entry['low']:.4f}, {entry['high']:.4f}]"


def _p(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"


def ctr_markdown(
    records: Sequence[dict[str, Any]], images: dict[str, list[str]] | None = None
) -> str:
    """Markdown tables of CTR results, protocol by protocol."""
    lines: list[str] = []
    for name, group in ctr_groups(records).items():
        first = group[0]
        counts = first["split"]["counts"]
        confidence = first["bootstrap"]["confidence"]
        lines += [f"## {name} (CTR)", ""]
        if first["protocol"].get("description"):
            lines += [first["protocol"]["description"] + ".", ""]
        lines += [
            "Rows (clicks): " + ", ".join(
                f"{part} {c['rows']:,} ({c['clicks']:,})" for part, c in counts.items()
            ) + f"; {confidence:.0%} percentile-bootstrap CIs over test rows.",
            "",
        ]  # fmt: skip
        metrics = ["auc", "log_loss", "normalized_entropy", "ece"]
        header = ["model", *(_NAMES[m] for m in metrics), "ECE uncalibrated", "fit s"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in group:
            cells = [r["model"]["label"], *(_ci(r["metrics"].get(m)) for m in metrics),
                     _ci(r["uncalibrated"].get("ece")), f"{r['timing']['fit_s']:.1f}"]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"Paired comparisons with {first.get('baseline')} on the same test rows:", ""]
        lines += ["| model | ΔAUC [CI] | p (bootstrap) | Δlog loss | p (t / Wilcoxon) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for r in group:
            c = r.get("comparisons") or {}
            if not c:
                lines.append(f"| {r['model']['label']} | baseline | | | |")
                continue
            a, b = c["auc"], c["log_loss"]
            lines.append(
                f"| {r['model']['label']} | {a['mean_difference']:+.4f} "
                f"[{a['difference_ci']['low']:+.4f}, {a['difference_ci']['high']:+.4f}] | "
                f"{_p(a['pvalue'])} | {b['mean_difference']:+.4f} | "
                f"{_p(b['t_pvalue'])} / {_p(b['wilcoxon_pvalue'])} |"
            )
        lines.append("")
        for image in (images or {}).get(name, []):
            lines += [f"![{name} reliability]({image})", ""]
    return "\n".join(lines)


def plot_reliability(group: list[dict[str, Any]], path: str | Path) -> Path:
    """Draw the reliability diagram of one protocol's CTR records to a PNG file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 5.2), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    for record in group:
        points = record["reliability"]["calibrated"]
        pairs = [
            (x, y)
            for x, y in zip(points["mean_predicted"], points["observed_rate"], strict=True)
            if x is not None and y is not None
        ]
        ece = record["metrics"]["ece"]["estimate"]
        axes.plot([x for x, _ in pairs], [y for _, y in pairs], marker="o", markersize=3,
                  label=f"{record['model']['label']} (ECE {ece:.4f})")  # fmt: skip
    axes.set_xlabel("mean predicted click probability (calibrated)")
    axes.set_ylabel("observed click rate")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_title(f"{group[0]['protocol']['name']}: reliability on test rows")
    axes.legend(fontsize=8)
    path = Path(path)
    with atomic_file(path, mode="wb") as handle:
        figure.savefig(handle, format="png")
    return path

"""Reports of evaluation results: markdown tables and PNG charts with confidence intervals.

Works from the JSON results the runner writes (:mod:`privrank.workflow.runner`), so a report
can be made at any time from any set of result files (``privrank report RESULT.json…``):

- :func:`markdown_summary`: per protocol, the dataset and split, a table of the headline
  metrics with their bootstrap CIs, the paired comparisons with the baseline (mean difference
  with its CI, paired t-test and Wilcoxon p-values, Cohen's d_z) and every metric at every
  cutoff;
- :func:`plot_curves`: metric vs cutoff K, one panel per ranking metric, one line per model,
  CI error bars;
- :func:`plot_comparison`: headline metrics as grouped bars per model, CI error bars.

Charts are drawn with matplotlib's object-oriented API on the Agg canvas (no display needed,
no global pyplot state) and written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privrank.atomic import atomic_file
from privrank.errors import ArtifactError, ConfigError
from privrank.workflow.ctr_report import ctr_groups, ctr_markdown, is_ctr_record, plot_reliability
from privrank.workflow.records import safe_name

__all__ = [
    "ReportFiles",
    "group_by_protocol",
    "load_results",
    "markdown_summary",
    "metric_label",
    "plot_comparison",
    "plot_curves",
    "write_report",
]

_FORMAT = "privrank.result"
_RUN_FORMAT = "privrank.run"
_VERSION = 1
_NAMES = {
    "ndcg": "NDCG",
    "recall": "Recall",
    "precision": "Precision",
    "hit_rate": "HR",
    "mrr": "MRR",
    "map": "MAP",
    "novelty": "Novelty",
    "arp": "ARP",
    "coverage": "Coverage",
    "gini": "Gini",
}


def metric_label(name: str) -> str:
    """``ndcg@10`` → ``NDCG@10``, ``hit_rate@10`` → ``HR@10``."""
    metric, _, k = name.partition("@")
    label = _NAMES.get(metric, metric)
    return f"{label}@{k}" if k else label


# ------------------------------------------------------------------ loading
def load_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read result JSON files (a run's ``summary.json`` stands for all its results).

    Raises:
        ArtifactError: A file that is missing, not JSON, or not a privrank result of this
            version (the message names it).
    """
    records: list[dict[str, Any]] = []
    for path in map(Path, paths):
        payload = _read_json(path)
        kind = payload.get("format")
        if kind == _RUN_FORMAT:
            listed = payload.get("results")
            if not isinstance(listed, list):
                raise ArtifactError(f"{path}: a run summary must list its 'results'")
            records.extend(load_results(path.parent / str(p) for p in listed))
            continue
        if kind != _FORMAT:
            raise ArtifactError(f"{path} is not a privrank result (format {kind!r})")
        if payload.get("version") != _VERSION:
            raise ArtifactError(
                f"{path}: result version {payload.get('version')}, this privrank reads {_VERSION}"
            )
        missing = [
            key for key in ("protocol", "model", "metrics", "headline") if key not in payload
        ]
        if missing:
            raise ArtifactError(f"{path}: result lacks {', '.join(missing)}")
        records.append(payload)
    if not records:
        raise ConfigError("no results given")
    return records


def _read_json(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such result file") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot read a JSON result: {exc}") from exc
    if not isinstance(payload, dict):
        raise ArtifactError(f"{path}: a result is a JSON object")
    return payload


def group_by_protocol(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records per protocol, in order of appearance (copies; a repeated label gets ``#2``)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    seen: dict[tuple[str, str], int] = {}
    for record in records:
        protocol, label = record["protocol"]["name"], record["model"]["label"]
        count = seen[protocol, label] = seen.get((protocol, label), 0) + 1
        shown = label if count == 1 else f"{label} #{count}"
        groups.setdefault(protocol, []).append({**record, "_label": shown})
    return groups


def _label(record: dict[str, Any]) -> str:
    return record.get("_label", record["model"]["label"])


# ------------------------------------------------------------------ markdown
def _number(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _p(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"


def _ci(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "n/a"
    return f"{_number(entry['estimate'])} [{_number(entry['low'])}, {_number(entry['high'])}]"


def markdown_summary(
    records: Sequence[dict[str, Any]], images: dict[str, list[str]] | None = None
) -> str:
    """Markdown tables of results, protocol by protocol (see the module docstring).

    Args:
        records: Result records (JSON dicts).
        images: Protocol name → image paths (relative to the markdown file) to embed.
    """
    lines = ["# privrank evaluation", ""]
    for name, group in group_by_protocol(records).items():
        first = group[0]
        lines += [f"## {name}", ""]
        if first["protocol"].get("description"):
            lines += [first["protocol"]["description"] + ".", ""]
        lines += [*_setting_lines(first), ""]
        confidence = first.get("bootstrap", {}).get("confidence", 0.95)
        headline = first["headline"]
        header = (
            ["model"]
            + [f"{metric_label(m)} ({confidence:.0%} CI)" for m in headline]
            + ["fit s", "eval s", "history"]
        )
        lines += _table(
            header,
            [
                [_label(r)]
                + [_ci(r["metrics"].get(m)) for m in headline]
                + [
                    _number(r.get("timing", {}).get("fit_s"), 2),
                    _number(r.get("timing", {}).get("evaluate_s"), 2),
                    r["model"].get("history_mode", ""),
                ]
                for r in group
            ],
        )
        lines += ["", *_comparison_lines(group, headline)]
        for image in (images or {}).get(name, []):
            lines += [f"![{name}]({image})", ""]
        lines += _all_metrics_lines(group)
    return "\n".join(lines).rstrip() + "\n"


def _setting_lines(record: dict[str, Any]) -> list[str]:
    dataset = record.get("dataset", {})
    split = record.get("split", {})
    spec = split.get("spec", {})
    params = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "protocol")
    counts = record.get("evaluation", {}).get("counts", {})
    return [
        f"- dataset `{dataset.get('name')}`: {dataset.get('rows', 0):,} interactions, "
        f"{dataset.get('users', 0):,} users, {dataset.get('items', 0):,} items; "
        f"fingerprint `{str(dataset.get('fingerprint', ''))[:16]}…`",
        f"- split `{spec.get('protocol')}` ({params}); test-time history: "
        f"{record.get('test_history', 'train')}",
        f"- {counts.get('users_evaluated', 0):,} test users, {counts.get('test_pairs', 0):,} "
        f"test pairs; every item ranked, history items excluded",
    ]


def _as_records(
    results: Sequence[str | Path] | Sequence[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Records given as such, or read from their result files."""
    loaded = [r for r in results if isinstance(r, dict)]
    paths = [r for r in results if not isinstance(r, dict)]
    if loaded and paths:
        raise ConfigError("give loaded result records or result files, not both")
    return loaded or load_results(paths)


def _comparison_lines(group: list[dict[str, Any]], headline: list[str]) -> list[str]:
    compared = [r for r in group if r.get("comparisons")]
    if not compared:
        return []
    baseline = compared[0].get("baseline")
    first: dict[str, Any] = next(iter(compared[0]["comparisons"].values()), {})
    n = first.get("n", 0)
    lines = [f"Paired comparison with the baseline `{baseline}` on the same {n:,} users:", ""]
    rows = []
    for record in compared:
        for metric in headline:
            c = record["comparisons"].get(metric)
            if c is None:
                continue
            ci = c["difference_ci"]
            rows.append(
                [
                    _label(record),
                    metric_label(metric),
                    f"{c['mean_difference']:+.4f} [{_number(ci['low'])}, {_number(ci['high'])}]",
                    _p(c["t_pvalue"]),
                    _p(c["wilcoxon_pvalue"]),
                    _number(c["cohens_d"], 3),
                ]
            )
    header = ["model", "metric", "Δ mean [CI]", "t-test p", "Wilcoxon p", "Cohen's d"]
    return lines + _table(header, rows) + [""]


def _all_metrics_lines(group: list[dict[str, Any]]) -> list[str]:
    families = _families(group[0])
    ranking = [name for entries in families.values() for _, name in entries]
    beyond = [name for name in group[0]["metrics"] if name not in ranking]
    aggregate = list(group[0].get("aggregate", {}))
    lines: list[str] = []
    for title, names, source in (
        ("Ranking metrics (means)", ranking, "metrics"),
        ("Beyond accuracy (means)", beyond, "metrics"),
        ("Catalogue (whole run)", aggregate, "aggregate"),
    ):
        if not names:
            continue
        rows = [[_label(r)] + [_value(r, source, m) for m in names] for r in group]
        header = ["model"] + [metric_label(m) for m in names]
        lines += [f"{title}:", "", *_table(header, rows), ""]
    return lines


def _value(record: dict[str, Any], source: str, name: str) -> str:
    entry = record.get(source, {}).get(name)
    if isinstance(entry, dict):
        entry = entry.get("estimate")
    return _number(entry)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return out


# ------------------------------------------------------------------ charts
def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> Path:
    with atomic_file(path, mode="wb") as handle:
        figure.savefig(handle, format="png")
    return path


def _families(record: dict[str, Any]) -> dict[str, list[tuple[int, str]]]:
    ranking = set(record["protocol"].get("metrics", ()))
    families: dict[str, list[tuple[int, str]]] = {}
    for name in record["metrics"]:
        metric, _, k = name.partition("@")
        if metric in ranking and k.isdigit():
            families.setdefault(metric, []).append((int(k), name))
    return {m: sorted(v) for m, v in families.items()}


def plot_curves(group: list[dict[str, Any]], path: str | Path) -> Path:
    """Metric vs K for one protocol's results: a panel per ranking metric, CI error bars."""
    families = _families(group[0])
    if not families:
        raise ConfigError("the results hold no ranking metrics to plot")
    figure = _figure(4.2 * len(families) + 1.6, 3.6)
    axes = figure.subplots(1, len(families), squeeze=False)[0]
    offsets = _offsets(len(group), 0.012)
    for ax, (metric, entries) in zip(axes, families.items(), strict=True):
        for record, offset in zip(group, offsets, strict=True):
            ks, means, low, high = [], [], [], []
            for k, name in entries:
                ci = record["metrics"].get(name)
                if not ci or ci["estimate"] is None:
                    continue
                ks.append(k * (1 + offset))
                means.append(ci["estimate"])
                low.append(ci["estimate"] - (ci["low"] if ci["low"] is not None else 0))
                high.append((ci["high"] if ci["high"] is not None else 0) - ci["estimate"])
            ax.errorbar(ks, means, yerr=[low, high], marker="o", capsize=3, label=_label(record))
        ks = [k for k, _ in entries]
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("cutoff K")
        ax.set_ylabel(_NAMES.get(metric, metric) + "@K")
        ax.set_title(f"{_NAMES.get(metric, metric)}@K")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right center", fontsize="small")
    confidence = group[0].get("bootstrap", {}).get("confidence", 0.95)
    figure.suptitle(f"{group[0]['protocol']['name']}: mean over users, {confidence:.0%} CI")
    return _save(figure, Path(path))


def _offsets(n: int, step: float) -> list[float]:
    """Small multiplicative x-offsets so error bars of different models do not overlap."""
    return [(i - (n - 1) / 2) * step for i in range(n)]


def plot_comparison(group: list[dict[str, Any]], path: str | Path) -> Path:
    """The headline metrics of one protocol's results as grouped bars with CI error bars."""
    headline = group[0]["headline"]
    figure = _figure(max(4.5, 1.2 + 0.55 * len(group) * len(headline)), 4.2)
    ax = figure.subplots()
    width = 0.8 / len(group)
    for index, record in enumerate(group):
        xs, means, low, high = [], [], [], []
        for position, metric in enumerate(headline):
            ci = record["metrics"].get(metric)
            if not ci or ci["estimate"] is None:
                continue
            xs.append(position - 0.4 + width * (index + 0.5))
            means.append(ci["estimate"])
            low.append(ci["estimate"] - ci["low"])
            high.append(ci["high"] - ci["estimate"])
        bars = ax.bar(xs, means, width, yerr=[low, high], capsize=3, label=_label(record))
        ax.bar_label(bars, fmt="%.3g", fontsize="x-small", padding=2)
    ax.set_xticks(range(len(headline)), [metric_label(m) for m in headline])
    ax.set_ylabel("mean over test users")
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    figure.legend(loc="outside lower center", fontsize="small", ncols=min(len(group), 4))
    confidence = group[0].get("bootstrap", {}).get("confidence", 0.95)
    ax.set_title(f"{group[0]['protocol']['name']}: {confidence:.0%} bootstrap CI")
    return _save(figure, Path(path))


# ------------------------------------------------------------------ everything
@dataclass(frozen=True)
class ReportFiles:
    """The files a report wrote.

    Attributes:
        markdown: The markdown summary.
        images: Every PNG written.
    """

    markdown: Path
    images: list[Path]


def write_report(
    results: Sequence[str | Path] | Sequence[dict[str, Any]],
    out: str | Path,
    *,
    markdown_name: str = "report.md",
) -> ReportFiles:
    """Write the curves, the comparison chart (per protocol) and a markdown summary.

    Args:
        results: Result JSON paths, or records already loaded.
        out: Output directory.
        markdown_name: File name of the markdown summary.

    Returns:
        The files written: ``<protocol>.curves.png``, ``<protocol>.comparison.png`` per
        protocol and the markdown.
    """
    everything = _as_records(results)
    records = [r for r in everything if not is_ctr_record(r)]
    out = Path(out)
    images: dict[str, list[str]] = {}
    written: list[Path] = []
    for name, ctr_group in ctr_groups(everything).items():  # CTR protocols: reliability diagram
        diagram = plot_reliability(ctr_group, out / f"{safe_name(name)}.reliability.png")
        written.append(diagram)
        images[name] = [diagram.name]
    for name, group in group_by_protocol(records).items():
        stem = safe_name(name)
        curves = plot_curves(group, out / f"{stem}.curves.png")
        bars = plot_comparison(group, out / f"{stem}.comparison.png")
        written += [curves, bars]
        images[name] = [bars.name, curves.name]
    markdown = out / markdown_name
    with atomic_file(markdown, encoding="utf-8") as handle:
        text = markdown_summary(records, images) if records else "# privrank evaluation\n\n"
        handle.write(text + ctr_markdown(everything, images))
    return ReportFiles(markdown=markdown, images=written)

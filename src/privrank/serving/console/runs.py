"""What the console reads from the runs directory: evaluation runs and trained models.

An evaluation run is a directory written by ``privrank evaluate --out RUN`` (see
:mod:`privrank.workflow.runner`): ``RUN/summary.json`` lists its result JSON files and, unless
``--no-plots`` was given, ``RUN/<protocol>.comparison.png`` and ``RUN/<protocol>.curves.png``
are its charts (:func:`privrank.workflow.report.write_report`). A trained model is a
``privrank train --out DIR`` directory (``training.json`` + ``model/``). The console looks one
level below the runs directory (:attr:`~privrank.serving.settings.ServeSettings.runs_dir`).

Names that come from a URL are checked against a strict pattern and resolved inside the runs
directory before any file is opened, so a request cannot read outside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from privrank.errors import ArtifactError, ConfigError
from privrank.serving.errors import NotFoundError
from privrank.workflow.records import safe_name
from privrank.workflow.report import group_by_protocol, load_results, metric_label

__all__ = ["RunInfo", "find_runs", "find_trained", "plot_path", "run_detail"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_PLOT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.png$")
SUMMARY = "summary.json"
TRAINING = "training.json"


@dataclass(frozen=True)
class RunInfo:
    """An evaluation run directory.

    Attributes:
        name: Its directory name (the run's id in URLs).
        modified: When its summary was written (UTC).
    """

    name: str
    modified: datetime


def _children(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)]


def find_runs(root: Path) -> list[RunInfo]:
    """Evaluation runs directly under ``root``, newest first."""
    runs = []
    for path in _children(root):
        summary = path / SUMMARY
        if summary.is_file():
            modified = datetime.fromtimestamp(summary.stat().st_mtime, UTC)
            runs.append(RunInfo(path.name, modified))
    return sorted(runs, key=lambda r: (r.modified, r.name), reverse=True)


def find_trained(root: Path) -> list[Path]:
    """``privrank train`` output directories directly under ``root``, by name."""
    return sorted(p for p in _children(root) if (p / TRAINING).is_file())


def _run_dir(root: Path, name: str) -> Path:
    if not _NAME.match(name):
        raise NotFoundError("no such evaluation run")
    path = (root / name).resolve()
    if path.parent != root.resolve() or not (path / SUMMARY).is_file():
        raise NotFoundError("no such evaluation run")
    return path


def plot_path(root: Path, run: str, file: str) -> Path:
    """The PNG ``file`` of the run ``run`` (checked to lie inside it).

    Raises:
        NotFoundError: No such run or chart.
    """
    directory = _run_dir(root, run)
    if not _PLOT.match(file):
        raise NotFoundError("no such chart")
    path = (directory / file).resolve()
    if path.parent != directory or not path.is_file():
        raise NotFoundError("no such chart")
    return path


def _interval(entry: dict[str, Any] | None) -> dict[str, float] | None:
    if not entry:
        return None
    return {key: float(entry[key]) for key in ("estimate", "low", "high")}


def run_detail(root: Path, name: str) -> dict[str, Any]:
    """The tables and charts of the run ``name``.

    Returns:
        ``name`` and ``protocols``: per protocol its ``name``, ``dataset`` and ``split`` facts,
        ``confidence``, ``headline`` metric labels, ``rows`` (per model: ``label``, the headline
        ``intervals`` (estimate, low, high or ``None``), ``fit_s``, ``evaluate_s``), the paired
        ``comparisons`` with the baseline, and ``plots`` (the PNG file names that exist).

    Raises:
        NotFoundError: No such run.
        ArtifactError: A result file of the run is unreadable (the message names it).
    """
    directory = _run_dir(root, name)
    try:
        records = load_results([directory / SUMMARY])
    except ConfigError as exc:
        raise ArtifactError(f"{name}: {exc}") from exc
    protocols = []
    for protocol, group in group_by_protocol(records).items():
        first = group[0]
        headline = list(first["headline"])
        stem = safe_name(protocol)
        plots = [
            f"{stem}.{kind}.png"
            for kind in ("comparison", "curves")
            if (directory / f"{stem}.{kind}.png").is_file()
        ]
        rows = []
        for record in group:
            timing = record.get("timing", {})
            rows.append(
                {
                    "label": record["_label"],
                    "intervals": [_interval(record["metrics"].get(m)) for m in headline],
                    "fit_s": timing.get("fit_s"),
                    "evaluate_s": timing.get("evaluate_s"),
                }
            )
        comparisons = []
        for record in group:
            for metric, comparison in (record.get("comparisons") or {}).items():
                if metric in headline and comparison:
                    comparisons.append(
                        {
                            "label": record["_label"],
                            "baseline": record.get("baseline"),
                            "metric": metric_label(metric),
                            "difference": comparison.get("mean_difference"),
                            "low": (comparison.get("difference_ci") or {}).get("low"),
                            "high": (comparison.get("difference_ci") or {}).get("high"),
                            "p_t": comparison.get("t_pvalue"),
                            "p_wilcoxon": comparison.get("wilcoxon_pvalue"),
                        }
                    )
        protocols.append(
            {
                "name": protocol,
                "dataset": first.get("dataset", {}),
                "split": first.get("split", {}),
                "confidence": first.get("bootstrap", {}).get("confidence", 0.95),
                "headline": [metric_label(m) for m in headline],
                "rows": rows,
                "comparisons": comparisons,
                "plots": plots,
            }
        )
    return {"name": name, "protocols": protocols}

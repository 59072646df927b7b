"""Full-ranking evaluation: exact top-k, per-user metrics, beyond-accuracy metrics, statistics.

The default protocol ranks every item for every test user, excludes the user's training items
and breaks ties by the lower item code (:mod:`privrank.metrics.topk`); the formulas of every
metric are in :mod:`privrank.metrics.ranking` and :mod:`privrank.metrics.beyond`. Sampled-negative
metrics exist only behind :func:`evaluate_sampled` and are labelled ``sampled`` in every output.

Names are imported on first use (a module ``__getattr__``): importing :mod:`privrank.metrics`
or one of its light submodules does not import torch or scipy.stats, so the CLI starts fast.

Leaf layer: imports only :mod:`privrank.data` and the base modules (errors, settings, atomic).
Protocols, runs and reports, which fit models, are in :mod:`privrank.workflow`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from privrank.metrics.beyond import (
        average_popularity,
        catalog_coverage,
        exposure_counts,
        gini,
        item_popularity,
        novelty,
    )
    from privrank.metrics.evaluate import (
        AGGREGATE_METRICS,
        BEYOND_METRICS,
        RANKING_METRICS,
        EvaluationConfig,
        EvaluationResult,
        EvaluationTiming,
        Scorer,
        evaluate,
        metric_names,
    )
    from privrank.metrics.ranking import (
        RankedRelevance,
        average_precision,
        compute,
        hit_rate,
        hits,
        mrr,
        ndcg,
        precision,
        recall,
    )
    from privrank.metrics.sampled import (
        SAMPLED_PREFIX,
        SampledConfig,
        evaluate_sampled,
    )
    from privrank.metrics.stats import (
        ConfidenceInterval,
        PairedComparison,
        bootstrap_ci,
        bootstrap_cis,
        compare_results,
        paired_comparison,
    )
    from privrank.metrics.topk import (
        TopK,
        top_k,
    )

_LAZY: dict[str, str] = {
    "AGGREGATE_METRICS": "privrank.metrics.evaluate",
    "BEYOND_METRICS": "privrank.metrics.evaluate",
    "ConfidenceInterval": "privrank.metrics.stats",
    "EvaluationConfig": "privrank.metrics.evaluate",
    "EvaluationResult": "privrank.metrics.evaluate",
    "EvaluationTiming": "privrank.metrics.evaluate",
    "PairedComparison": "privrank.metrics.stats",
    "RANKING_METRICS": "privrank.metrics.evaluate",
    "RankedRelevance": "privrank.metrics.ranking",
    "SAMPLED_PREFIX": "privrank.metrics.sampled",
    "SampledConfig": "privrank.metrics.sampled",
    "Scorer": "privrank.metrics.evaluate",
    "TopK": "privrank.metrics.topk",
    "average_popularity": "privrank.metrics.beyond",
    "average_precision": "privrank.metrics.ranking",
    "bootstrap_ci": "privrank.metrics.stats",
    "bootstrap_cis": "privrank.metrics.stats",
    "catalog_coverage": "privrank.metrics.beyond",
    "compare_results": "privrank.metrics.stats",
    "compute": "privrank.metrics.ranking",
    "evaluate": "privrank.metrics.evaluate",
    "evaluate_sampled": "privrank.metrics.sampled",
    "exposure_counts": "privrank.metrics.beyond",
    "gini": "privrank.metrics.beyond",
    "hit_rate": "privrank.metrics.ranking",
    "hits": "privrank.metrics.ranking",
    "item_popularity": "privrank.metrics.beyond",
    "metric_names": "privrank.metrics.evaluate",
    "mrr": "privrank.metrics.ranking",
    "ndcg": "privrank.metrics.ranking",
    "novelty": "privrank.metrics.beyond",
    "paired_comparison": "privrank.metrics.stats",
    "precision": "privrank.metrics.ranking",
    "recall": "privrank.metrics.ranking",
    "top_k": "privrank.metrics.topk",
}

__all__ = [
    "AGGREGATE_METRICS",
    "BEYOND_METRICS",
    "RANKING_METRICS",
    "SAMPLED_PREFIX",
    "ConfidenceInterval",
    "EvaluationConfig",
    "EvaluationResult",
    "EvaluationTiming",
    "PairedComparison",
    "RankedRelevance",
    "SampledConfig",
    "Scorer",
    "TopK",
    "average_popularity",
    "average_precision",
    "bootstrap_ci",
    "bootstrap_cis",
    "catalog_coverage",
    "compare_results",
    "compute",
    "evaluate",
    "evaluate_sampled",
    "exposure_counts",
    "gini",
    "hit_rate",
    "hits",
    "item_popularity",
    "metric_names",
    "mrr",
    "ndcg",
    "novelty",
    "paired_comparison",
    "precision",
    "recall",
    "top_k",
]


_SUBMODULES = frozenset(("beyond", "ranking", "sampled", "stats", "topk"))


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        if name in _SUBMODULES:  # ``privrank.metrics.stats`` without importing it first
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _MetricsPackage(types.ModuleType):
    """``evaluate`` names both a submodule and its main function. Importing the submodule sets
    the package attribute to the module; keep the function there instead (what the eager
    imports of this package used to leave)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "evaluate" and isinstance(value, types.ModuleType):
            value = value.evaluate
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _MetricsPackage

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

import sys
import types
from typing import TYPE_CHECKING, Any

from privrank._lazy import lazy_exports

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
        EvaluationPairs,
        EvaluationResult,
        EvaluationTiming,
        Scorer,
        evaluate,
        metric_names,
        prepare_pairs,
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

_WHERE = {
    "evaluate": [
        "AGGREGATE_METRICS",
        "BEYOND_METRICS",
        "EvaluationConfig",
        "EvaluationPairs",
        "EvaluationResult",
        "EvaluationTiming",
        "RANKING_METRICS",
        "Scorer",
        "evaluate",
        "metric_names",
        "prepare_pairs",
    ],
    "stats": [
        "ConfidenceInterval",
        "PairedComparison",
        "bootstrap_ci",
        "bootstrap_cis",
        "compare_results",
        "paired_comparison",
    ],
    "ranking": [
        "RankedRelevance",
        "average_precision",
        "compute",
        "hit_rate",
        "hits",
        "mrr",
        "ndcg",
        "precision",
        "recall",
    ],
    "sampled": ["SAMPLED_PREFIX", "SampledConfig", "evaluate_sampled"],
    "topk": ["TopK", "top_k"],
    "beyond": [
        "average_popularity",
        "catalog_coverage",
        "exposure_counts",
        "gini",
        "item_popularity",
        "novelty",
    ],
}

__all__ = [
    "AGGREGATE_METRICS",
    "BEYOND_METRICS",
    "RANKING_METRICS",
    "SAMPLED_PREFIX",
    "ConfidenceInterval",
    "EvaluationConfig",
    "EvaluationPairs",
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
    "prepare_pairs",
    "recall",
    "top_k",
]


__getattr__, __dir__ = lazy_exports(
    __name__,
    _WHERE,
    exported=__all__,
    submodules=("beyond", "ranking", "sampled", "shared", "stats", "topk"),
)


class _MetricsPackage(types.ModuleType):
    """``evaluate`` names both a submodule and its main function. Importing the submodule sets
    the package attribute to the module; keep the function there instead (what the eager
    imports of this package used to leave)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "evaluate" and isinstance(value, types.ModuleType):
            value = value.evaluate
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _MetricsPackage

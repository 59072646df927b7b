"""Full-ranking evaluation: exact top-k, per-user metrics, beyond-accuracy metrics, statistics.

The default protocol ranks every item for every test user, excludes the user's training items
and breaks ties by the lower item code (:mod:`privrank.metrics.topk`); the formulas of every
metric are in :mod:`privrank.metrics.ranking` and :mod:`privrank.metrics.beyond`. Sampled-negative
metrics exist only behind :func:`evaluate_sampled` and are labelled ``sampled`` in every output.
"""

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
from privrank.metrics.sampled import SAMPLED_PREFIX, SampledConfig, evaluate_sampled
from privrank.metrics.stats import (
    ConfidenceInterval,
    PairedComparison,
    bootstrap_ci,
    bootstrap_cis,
    compare_results,
    paired_comparison,
)
from privrank.metrics.topk import TopK, top_k

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

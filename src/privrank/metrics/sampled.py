"""Sampled-negative metrics, **only on explicit request** and labelled ``sampled`` everywhere.

Ranking a handful of random negatives instead of the whole catalogue inflates scores and can
reorder models (Krichene & Rendle, "On Sampled Metrics for Item Recommendation", KDD 2020);
privrank's default is :func:`privrank.metrics.evaluate`. This module exists to reproduce
published sampled numbers, and every output says so: the result's ``protocol`` is ``"sampled"``
and every metric name starts with ``sampled_`` (``sampled_ndcg@10``).

Protocol: for each user with at least one test item, the candidates are all of the user's test
items plus ``n_negatives`` items drawn uniformly **without replacement** from the items the user
has in neither train nor test (all of them if fewer remain; such users are counted). Candidates
are ranked by score with the rule of :mod:`privrank.metrics.topk` (ties: lower item code first)
and the metrics of :mod:`privrank.metrics.ranking` are computed on that ranking. Negatives are
drawn user by user, in ascending user order, from ``numpy.random.default_rng(seed)``, so results
do not depend on the batch size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.metrics import ranking
from privrank.metrics._prepare import PairSet, evaluation_pairs
from privrank.metrics.evaluate import (
    RANKING_METRICS,
    Cutoffs,
    EvaluationResult,
    EvaluationTiming,
    RankingMetric,
    Scorer,
    ranking_metric,
)
from privrank.metrics.topk import as_score_array, ragged_rows, top_k

__all__ = ["SAMPLED_PREFIX", "SampledConfig", "evaluate_sampled"]

SAMPLED_PREFIX = "sampled_"


class SampledConfig(BaseModel):
    """Options of the sampled-negative protocol (see the module docstring).

    Attributes:
        n_negatives: Negatives drawn per user.
        seed: Seed of the negative sampling.
        cutoffs: List lengths ``k`` to report.
        metrics: Ranking metrics at every cutoff.
        graded: Use test values as relevance grades.
        ndcg_gain: Gain of graded NDCG (``linear`` or ``exponential``).
        recall_denominator: ``relevant`` or ``min_k_relevant``.
        map_denominator: ``min_k_relevant`` or ``relevant``.
        batch_size: Users scored at once.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_negatives: int = Field(default=100, ge=1)
    seed: int = 0
    cutoffs: Cutoffs = (10,)
    metrics: tuple[RankingMetric, ...] = RANKING_METRICS
    graded: bool = False
    ndcg_gain: Literal["linear", "exponential"] = "linear"
    recall_denominator: ranking.Denominator = "relevant"
    map_denominator: ranking.Denominator = "min_k_relevant"
    batch_size: int = Field(default=1024, ge=1)


def evaluate_sampled(
    score: Scorer,
    train: Interactions,
    test: Interactions,
    config: SampledConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> EvaluationResult:
    """Evaluate with sampled negatives (explicit opt-in; results are labelled ``sampled``).

    Args:
        score: Maps a batch of user codes to ``[batch, n_items]`` scores.
        train: Training interactions (never sampled as negatives).
        test: Test interactions (the relevant candidates).
        config: The protocol's options; required, there is no default protocol here.
        progress: Called as ``progress(users_done, users_total)`` after every batch.

    Returns:
        An :class:`EvaluationResult` with ``protocol="sampled"`` and ``sampled_``-prefixed
        metric names.
    """
    started = time.perf_counter()
    seen, relevant, users = evaluation_pairs(train, test, graded=config.graded)
    rng = np.random.default_rng(config.seed)
    depth = config.cutoffs[-1]
    names = [f"{SAMPLED_PREFIX}{m}@{k}" for m in config.metrics for k in config.cutoffs]
    per_user = {name: np.empty(len(users)) for name in names}
    short_pool = 0
    scoring = ranking_time = metric_time = 0.0
    for start in range(0, len(users), config.batch_size):
        batch = users[start : start + config.batch_size]
        tick = time.perf_counter()
        scores = as_score_array(score(batch))
        scored = time.perf_counter()
        if scores.shape != (len(batch), test.n_items):
            raise ConfigError(
                f"the scorer returned shape {scores.shape} for {len(batch)} users, "
                f"expected ({len(batch)}, {test.n_items})"
            )
        candidates, short = _candidates(batch, seen, relevant, config.n_negatives, rng)
        short_pool += short
        slots = np.take_along_axis(scores, np.maximum(candidates, 0), axis=1)
        slots[candidates < 0] = -np.inf
        top_slots = top_k(slots, depth).items
        top = np.where(top_slots >= 0, np.take_along_axis(candidates, top_slots, axis=1), -1)
        ranked = time.perf_counter()
        position, items, grades = ragged_rows(
            relevant.indptr, relevant.indices, batch, relevant.grades
        )
        judged = ranking.RankedRelevance.from_lists(top, position, items, grades)
        where = slice(start, start + len(batch))
        for metric in config.metrics:
            for k in config.cutoffs:
                per_user[f"{SAMPLED_PREFIX}{metric}@{k}"][where] = ranking_metric(
                    metric, judged, k, config
                )
        done = time.perf_counter()
        scoring += scored - tick
        ranking_time += ranked - scored
        metric_time += done - ranked
        if progress is not None:
            progress(start + len(batch), len(users))
    counts = {
        "users_evaluated": len(users),
        "users_without_test_items": int(relevant.n_users - len(users)),
        "users_with_fewer_negatives": short_pool,
        "n_negatives": config.n_negatives,
    }
    timing = EvaluationTiming(scoring, ranking_time, metric_time, time.perf_counter() - started)
    return EvaluationResult(
        users=users,
        per_user=per_user,
        aggregate={},
        counts=counts,
        timing=timing,
        config=config,
        protocol="sampled",
    )


def _candidates(
    batch: np.ndarray,
    seen: PairSet,
    relevant: PairSet,
    n_negatives: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, int]:
    """``[batch, width]`` candidate items per user, ascending, ``-1``-padded; short pools."""
    n_items = relevant.n_items
    rows = []
    short = 0
    for user in batch.tolist():
        positives = relevant.indices[relevant.indptr[user] : relevant.indptr[user + 1]]
        trained = seen.indices[seen.indptr[user] : seen.indptr[user + 1]]
        taken = np.union1d(positives, trained)
        pool = n_items - len(taken)
        count = min(n_negatives, pool)
        short += count < n_negatives
        picks = (
            np.sort(rng.choice(pool, size=count, replace=False)) if count else np.zeros(0, np.int64)
        )
        # The j-th item not in `taken` (ascending) is j + #{t in taken: t - rank(t) <= j}.
        negatives = picks + np.searchsorted(taken - np.arange(len(taken)), picks, side="right")
        rows.append(np.union1d(positives, negatives))
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out, short

"""Full-ranking evaluation: score every item for every test user, in bounded-memory batches.

The protocol, spelled out: a user is evaluated when the test data holds at least one
interaction of theirs (users without are excluded and counted). For each evaluated user the
scorer ranks the **whole catalogue**; the user's training items are removed from the ranking
(score set to ``-inf``) unless ``exclude_train=False``; the top ``max(cutoffs)`` items are taken
with the deterministic rule of :mod:`privrank.metrics.topk` (ties: lower item code first); the
metrics of :mod:`privrank.metrics.ranking` and :mod:`privrank.metrics.beyond` are computed per
user and kept. Every test interaction of the user is relevant (grade 1), or, with
``graded=True``, has the test ``value`` as grade (the largest, if a pair repeats).

Memory: one ``[batch_size, n_items]`` score matrix at a time plus ``O(batch_size * n_items / 16)``
for the top-k; the per-user results are ``O(users * metrics)``.

A scorer whose scores are one vector for every user (a non-personalised model) is passed as
:class:`SharedScores`: the catalogue is ranked once and each user's list is the first items of
that order not among their training items (:func:`~privrank.metrics.shared.shared_top_k`), the
same lists as masking and ranking a score matrix, without building one. The ranking metrics
then need no lists at all: a relevant item's rank in a user's list is its rank in the order
minus the user's training items ranked above it (:func:`~privrank.metrics.shared.shared_ranks`),
so they cost ``O(relevant pairs + training pairs)``. The beyond-accuracy metrics take the lists
as the order's head plus the rows that differ from it (users whose training items include one of
the head's, :func:`~privrank.metrics.shared.shared_lists`): novelty, ARP and exposure of the head
are computed once, and only the differing rows are measured; ``[users, k]`` lists are written
out only when kept.

The train/test pair sets (and the counts) depend on the split alone: a caller evaluating several
models on one split builds them once (:func:`~privrank.metrics._prepare.prepare_pairs`) and
passes them as ``pairs``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.metrics import beyond, ranking
from privrank.metrics._prepare import EvaluationPairs, PairSet, prepare_pairs
from privrank.metrics.shared import SharedLists, shared_lists, shared_order, shared_ranks
from privrank.metrics.topk import as_score_array, mask_items, ragged_rows, top_k

__all__ = [
    "AGGREGATE_METRICS",
    "BEYOND_METRICS",
    "RANKING_METRICS",
    "Cutoffs",
    "EvaluationConfig",
    "EvaluationPairs",
    "EvaluationResult",
    "EvaluationTiming",
    "Scorer",
    "SharedScores",
    "evaluate",
    "metric_names",
    "prepare_pairs",
    "ranking_metric",
]

#: Scores every item for a batch of user codes: ``[len(users), n_items]``, higher is better.
#: The evaluator owns the returned array and may overwrite it (set ``copy_scores`` otherwise).
Scorer = Callable[[np.ndarray], "np.ndarray | torch.Tensor"]


@dataclass(frozen=True)
class SharedScores:
    """Scores that are the same for every user: ``scores[i]`` is item ``i``'s score for all.

    Evaluating them gives the lists (and metrics) of a scorer returning ``scores`` for every
    row, at the cost of ranking one vector (see the module docstring).

    Attributes:
        scores: ``[n_items]`` float scores; ``-inf`` marks items never recommended.
    """

    scores: np.ndarray


RankingMetric = Literal["recall", "precision", "ndcg", "mrr", "hit_rate", "map"]
RANKING_METRICS: tuple[RankingMetric, ...] = (
    "recall",
    "precision",
    "ndcg",
    "mrr",
    "hit_rate",
    "map",
)
#: Per-user beyond-accuracy metrics (means skip users with an empty list).
BEYOND_METRICS: tuple[str, ...] = ("novelty", "arp")
#: Catalogue-level metrics (one number per cutoff, no per-user values).
AGGREGATE_METRICS: tuple[str, ...] = ("coverage", "gini")


def _sorted_cutoffs(value: tuple[int, ...]) -> tuple[int, ...]:
    if not value or any(k < 1 for k in value):
        raise ValueError(f"cutoffs must be a non-empty list of integers >= 1, got {value}")
    return tuple(sorted(set(value)))


#: List lengths ``k`` (validated: non-empty, each at least 1; stored sorted and unique).
Cutoffs = Annotated[tuple[int, ...], AfterValidator(_sorted_cutoffs)]


class EvaluationConfig(BaseModel):
    """How to evaluate (see the module docstring for the protocol).

    Attributes:
        cutoffs: List lengths ``k`` to report (sorted, unique).
        metrics: Ranking metrics to compute at every cutoff.
        beyond_accuracy: Also compute novelty, ARP (per user), coverage and Gini (per cutoff).
        graded: Use test values as relevance grades (NDCG with ``ndcg_gain``); otherwise binary.
        ndcg_gain: Gain of graded NDCG: ``linear`` (``rel``) or ``exponential`` (``2^rel - 1``).
        recall_denominator: ``relevant`` (``|R|``) or ``min_k_relevant`` (``min(k, |R|)``).
        map_denominator: ``min_k_relevant`` (``min(k, |R|)``) or ``relevant`` (``|R|``).
        exclude_train: Remove each user's training items from their ranking.
        batch_size: Users scored at once (memory: ``batch_size * n_items`` scores).
        copy_scores: Copy the scorer's output before masking it (when it returns shared state).
        keep_recommendations: Keep the ``[users, max(cutoffs)]`` top lists in the result.
        threads: Top-k worker threads (default: ``torch.get_num_threads()``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cutoffs: Cutoffs = (10, 20)
    metrics: tuple[RankingMetric, ...] = RANKING_METRICS
    beyond_accuracy: bool = True
    graded: bool = False
    ndcg_gain: Literal["linear", "exponential"] = "linear"
    recall_denominator: ranking.Denominator = "relevant"
    map_denominator: ranking.Denominator = "min_k_relevant"
    exclude_train: bool = True
    batch_size: int = Field(default=1024, ge=1)
    copy_scores: bool = False
    keep_recommendations: bool = False
    threads: int | None = Field(default=None, ge=1)

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))


@dataclass(frozen=True)
class EvaluationTiming:
    """Where the time went (seconds, wall clock).

    Attributes:
        scoring: Inside the scorer (the model's work: e.g. the factor matrix multiply).
        ranking: Taking over the scores (a copy only if needed or asked), excluding training
            items and the top-k selection.
        metrics: Matching lists with relevance and computing every metric.
        total: The whole call, preparation (building the train/test pair sets) included.
    """

    scoring: float
    ranking: float
    metrics: float
    total: float

    @property
    def evaluation(self) -> float:
        """Everything but scoring in the batch loop: ``ranking + metrics``."""
        return self.ranking + self.metrics


@dataclass(frozen=True)
class EvaluationResult:
    """Per-user metric vectors, their means and the catalogue-level metrics.

    Attributes:
        users: ``int64`` codes of the evaluated users, ascending.
        per_user: ``"ndcg@10"`` → ``float64`` array aligned with ``users``.
        aggregate: ``"coverage@10"``, ``"gini@10"`` → value.
        counts: Users evaluated, excluded (no test items), cold (no training items), and
            test pairs that are training pairs too (unreachable when excluded).
        timing: Time spent scoring vs ranking and computing metrics.
        config: The configuration used (:class:`EvaluationConfig`, or a
            :class:`~privrank.metrics.sampled.SampledConfig` for sampled results).
        recommendations: ``[users, max(cutoffs)]`` top lists if kept, else ``None``.
        protocol: ``"full_ranking"``.
    """

    users: np.ndarray
    per_user: dict[str, np.ndarray]
    aggregate: dict[str, float]
    counts: dict[str, int]
    timing: EvaluationTiming
    config: BaseModel
    recommendations: np.ndarray | None = None
    protocol: str = "full_ranking"
    _means: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def means(self) -> dict[str, float]:
        """Mean over users of every per-user metric (NaN entries skipped), plus the aggregates."""
        if not self._means:
            for name, values in self.per_user.items():
                finite = values[~np.isnan(values)]
                self._means[name] = float(finite.mean()) if len(finite) else float("nan")
            self._means.update(self.aggregate)
        return self._means

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (no per-user arrays)."""
        timing = self.timing
        return {
            "protocol": self.protocol,
            "config": self.config.model_dump(mode="json"),
            "counts": dict(self.counts),
            "means": dict(self.means),
            "timing": {
                "scoring_s": timing.scoring,
                "ranking_s": timing.ranking,
                "metrics_s": timing.metrics,
                "evaluation_s": timing.evaluation,
                "total_s": timing.total,
            },
        }


def evaluate(
    score: Scorer | SharedScores,
    train: Interactions,
    test: Interactions,
    config: EvaluationConfig | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    pairs: EvaluationPairs | None = None,
) -> EvaluationResult:
    """Evaluate a scorer by full ranking on a train/test split.

    Args:
        score: Maps a batch of user codes to ``[batch, n_items]`` scores (numpy or torch), or
            :class:`SharedScores`: one vector for every user (no score matrix is built; the
            batches then hold as many users' top lists as one score matrix would hold scores).
        train: Training interactions (the items excluded from each user's ranking, and the
            popularity used by novelty and ARP).
        test: Test interactions (relevance); same vocabulary as ``train``.
        config: Options; defaults to :class:`EvaluationConfig()`.
        progress: Called as ``progress(users_done, users_total)`` after every batch.
        pairs: The split's pair sets and counts, built once by :func:`prepare_pairs` from
            these ``train`` and ``test`` and reused (default: built here).

    Returns:
        Per-user metrics, means, counts and timing.

    Raises:
        ConfigError: Vocabularies differ, the scorer returns the wrong shape, or ``pairs``
            were built from another split.
        DataError: Graded values that are not positive, or NaN scores.
    """
    config = config or EvaluationConfig()
    started = time.perf_counter()
    if pairs is None:
        pairs = prepare_pairs(train, test, graded=config.graded)
    else:
        pairs.check(train, test, graded=config.graded)
    seen, relevant, users = pairs.seen, pairs.relevant, pairs.users
    state = _Accumulator(config, len(users), test.n_items, seen)
    if isinstance(score, SharedScores):
        _evaluate_shared(score, pairs, state, progress)
    else:
        depth = config.cutoffs[-1]
        for start in range(0, len(users), config.batch_size):
            batch = users[start : start + config.batch_size]
            tick = time.perf_counter()
            raw = score(batch)
            scored = time.perf_counter()
            scores = as_score_array(raw, copy=config.copy_scores)
            if scores.shape != (len(batch), test.n_items):
                raise ConfigError(
                    f"the scorer returned shape {scores.shape} for {len(batch)} users, "
                    f"expected ({len(batch)}, {test.n_items})"
                )
            if config.exclude_train:
                rows, items, _ = ragged_rows(seen.indptr, seen.indices, batch)
                mask_items(scores, rows, items)
            top = top_k(scores, depth, threads=config.threads)
            ranked = time.perf_counter()
            where = slice(start, start + len(batch))
            state.add_metrics(where, _judge(top.items, batch, relevant))
            state.add_lists(where, top.items)
            done = time.perf_counter()
            state.scoring += scored - tick
            state.ranking += ranked - scored
            state.metrics += done - ranked
            if progress is not None:
                progress(start + len(batch), len(users))
    timing = EvaluationTiming(
        state.scoring, state.ranking, state.metrics, time.perf_counter() - started
    )
    return EvaluationResult(
        users=users,
        per_user=state.per_user,
        aggregate=state.aggregates(),
        counts=dict(pairs.counts),
        timing=timing,
        config=config,
        recommendations=state.recommendations,
    )


def _judge(top: np.ndarray, batch: np.ndarray, relevant: PairSet) -> ranking.RankedRelevance:
    """Match a batch's top lists with its users' relevant items."""
    position, items, grades = ragged_rows(relevant.indptr, relevant.indices, batch, relevant.grades)
    return ranking.RankedRelevance.from_lists(top, position, items, grades)


def _evaluate_shared(
    score: SharedScores,
    pairs: EvaluationPairs,
    state: _Accumulator,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Evaluate one score vector for every user, without score matrices or (unless the
    beyond-accuracy metrics or the lists are asked for) top lists.

    The ranking metrics come from each relevant item's rank in its user's list
    (:func:`~privrank.metrics.shared.shared_ranks`: its position in the catalogue's order minus
    the user's excluded items ranked above it) through
    :meth:`~privrank.metrics.ranking.RankedRelevance.from_ranks`, in
    ``O(relevant pairs + the evaluated users' training pairs)``. They equal the metrics of the
    lists of :func:`~privrank.metrics.shared.shared_top_k`. Those lists are built only for
    novelty, ARP, coverage, Gini or ``keep_recommendations``, in batches holding as many list
    entries as a score matrix holds scores, each as the order's head plus the rows that differ
    (:func:`~privrank.metrics.shared.shared_lists`), which is what the beyond-accuracy metrics
    read (:meth:`_Accumulator.add_shared_lists`); the relevant items' ranks are then read from
    those lists (:meth:`~privrank.metrics.shared.SharedLists.ranks`: the same ranks within the
    lists' depth, which is all the ranking metrics use) instead of
    :func:`~privrank.metrics.shared.shared_ranks`.
    """
    config = state.config
    seen, relevant, users = pairs.seen, pairs.relevant, pairs.users
    n_items = seen.n_items
    tick = time.perf_counter()
    if np.shape(score.scores) != (n_items,):
        raise ConfigError(
            f"shared scores have shape {np.shape(score.scores)}, expected ({n_items},)"
        )
    shared = shared_order(score.scores)
    ranked = time.perf_counter()
    state.scoring += ranked - tick
    # Without exclusion every row's CSR slice is empty: each list is the order's head.
    excluded = seen.indptr if config.exclude_train else np.zeros_like(seen.indptr)
    depth = config.cutoffs[-1]
    position, items, grades = ragged_rows(relevant.indptr, relevant.indices, users, relevant.grades)
    if config.beyond_accuracy or config.keep_recommendations:
        # The lists are needed anyway: each relevant item's rank (within the lists' depth,
        # all the ranking metrics read) is looked up in its user's list.
        ranks = np.empty(len(position), dtype=np.int64)
        batch_size = max(config.batch_size, config.batch_size * n_items // depth)
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            tick = time.perf_counter()
            lists = shared_lists(shared, depth, excluded, seen.indices, batch)
            part = slice(*np.searchsorted(position, [start, start + len(batch)]))
            ranks[part] = lists.ranks(position[part] - start, items[part])
            ranked = time.perf_counter()
            state.add_shared_lists(slice(start, start + len(batch)), lists)
            state.ranking += ranked - tick
            state.metrics += time.perf_counter() - ranked
            if progress is not None:
                progress(start + len(batch), len(users))
    else:
        tick = time.perf_counter()
        ranks = shared_ranks(shared, excluded, seen.indices, users[position], items)
        state.ranking += time.perf_counter() - tick
        if progress is not None:
            progress(len(users), len(users))
    tick = time.perf_counter()
    judged = ranking.RankedRelevance.from_ranks(depth, position, ranks, grades, n_users=len(users))
    state.add_metrics(slice(0, len(users)), judged)
    state.metrics += time.perf_counter() - tick


class _Accumulator:
    """Per-user arrays filled batch by batch, plus exposure counts per cutoff."""

    def __init__(self, config: EvaluationConfig, n_users: int, n_items: int, seen: PairSet):
        self.config = config
        self.n_items = n_items
        self.scoring = self.ranking = self.metrics = 0.0
        names = metric_names(config)
        if config.beyond_accuracy:
            self.popularity = beyond.item_popularity(seen.indptr, seen.indices, n_items)
            self.information = beyond.self_information(
                self.popularity, int(np.count_nonzero(seen.counts()))
            )
            self.exposure = {k: np.zeros(n_items, dtype=np.int64) for k in config.cutoffs}
        self.per_user = {name: np.empty(n_users, dtype=np.float64) for name in names}
        depth = config.cutoffs[-1]
        self.recommendations = (
            np.empty((n_users, depth), dtype=np.int64) if config.keep_recommendations else None
        )

    def add_metrics(self, where: slice, judged: ranking.RankedRelevance) -> None:
        """The ranking metrics of the users at ``where``."""
        config = self.config
        for k in config.cutoffs:
            for metric in config.metrics:
                self.per_user[f"{metric}@{k}"][where] = ranking_metric(metric, judged, k, config)

    def add_lists(self, where: slice, top: np.ndarray) -> None:
        """The beyond-accuracy metrics and kept lists of the users at ``where``."""
        cutoffs = self.config.cutoffs
        if self.config.beyond_accuracy:
            self._add_beyond(
                where,
                beyond.list_means(top, self.information, cutoffs),
                beyond.list_means(top, self.popularity, cutoffs),
                beyond.exposure_by_cutoff(top, cutoffs, self.n_items),
            )
        if self.recommendations is not None:
            self.recommendations[where] = top

    def add_shared_lists(self, where: slice, lists: SharedLists) -> None:
        """:meth:`add_lists` for the lists of one shared order, measured from its head once
        plus the rows that differ from it (the same values as the dense lists)."""
        cutoffs = self.config.cutoffs
        if self.config.beyond_accuracy:
            self._add_beyond(
                where,
                beyond.shared_list_means(lists, self.information, cutoffs),
                beyond.shared_list_means(lists, self.popularity, cutoffs),
                beyond.shared_exposure(lists, cutoffs, self.n_items),
            )
        if self.recommendations is not None:
            self.recommendations[where] = lists.dense().items

    def _add_beyond(
        self,
        where: slice,
        novelty: dict[int, np.ndarray],
        popularity: dict[int, np.ndarray],
        exposure: dict[int, np.ndarray],
    ) -> None:
        """Record per-list novelty and ARP at each cutoff, and add the lists' exposure."""
        for k in self.config.cutoffs:
            self.per_user[f"novelty@{k}"][where] = novelty[k]
            self.per_user[f"arp@{k}"][where] = popularity[k]
            self.exposure[k] += exposure[k]

    def aggregates(self) -> dict[str, float]:
        if not self.config.beyond_accuracy:
            return {}
        out = {}
        for k in self.config.cutoffs:
            out[f"coverage@{k}"] = beyond.catalog_coverage(self.exposure[k])
            out[f"gini@{k}"] = beyond.gini(self.exposure[k])
        return out


def ranking_metric(metric: str, judged: ranking.RankedRelevance, k: int, config: Any) -> np.ndarray:
    """Per-user ``metric@k`` of ranked lists, with the gain and denominators of ``config`` (an
    :class:`EvaluationConfig` or a sampled evaluation's config)."""
    return ranking.compute(
        metric,
        judged,
        k,
        gain=config.ndcg_gain if config.graded else "binary",
        recall_denominator=config.recall_denominator,
        map_denominator=config.map_denominator,
    )


def metric_names(config: EvaluationConfig) -> Sequence[str]:
    """The per-user metric names a result of ``config`` holds, in order."""
    names = [f"{m}@{k}" for m in config.metrics for k in config.cutoffs]
    if config.beyond_accuracy:
        names += [f"{m}@{k}" for m in BEYOND_METRICS for k in config.cutoffs]
    return names

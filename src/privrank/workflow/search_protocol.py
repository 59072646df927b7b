r"""Offline search protocols: queries from held-out items, per-query NDCG with CIs and tests.

A search protocol takes a recommendation protocol's split (``ml100k-holdout``: the same train
and test parts, the same seed) and the data set's item text, and turns each test user into one
search query (:func:`~privrank.ranking.search.build_queries`): a seeded random held-out item
:math:`h` whose genre set is matched by at least ``min_matches`` catalogue items gives the query
"the genre words of :math:`h`", and the relevant results are the user's held-out items that
carry every query genre. Each system ranks the whole catalogue minus the user's training items
(as the recommendation protocols do); the user's training history is what a personalised
system knows. Per-query NDCG@``k`` (binary relevance) is averaged, with percentile-bootstrap
95 % CIs and paired tests (t and Wilcoxon) against the baseline, through
:mod:`privrank.metrics.stats`.

``ml100k-search``
    ML-100K, the ``ml100k-holdout`` split (per-user random 80/20, seed 0), queries from the test
    part with seed 1, ``min_matches = 20``, NDCG@10. See ``docs/search.md`` for the choices
    (why genre queries, why 20) and the leakage checks.

Systems compared (:func:`evaluate_search`): ``bm25+embedding`` (reciprocal-rank fusion of BM25
and embedding retrieval, unpersonalised, the baseline), ``ltr-unpersonalised`` (the LambdaMART
ranker on query features and popularity only) and ``personalised`` (the ranker with the
history's features). Both rankers train on a validation part carved from ``train``; the test
part is read only to build the test queries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from privrank.data._config import FrozenConfig
from privrank.data.interactions import Interactions
from privrank.data.item_text import load_item_text
from privrank.errors import ConfigError
from privrank.metrics.ranking import RankedRelevance, ndcg
from privrank.metrics.stats import ConfidenceInterval, PairedComparison, bootstrap_cis
from privrank.metrics.stats import paired_comparison as paired
from privrank.ranking.search import PersonalisedSearch, SearchConfig, SearchQuery, build_queries
from privrank.workflow.protocols import prepare

__all__ = [
    "SEARCH_PROTOCOLS",
    "PreparedSearch",
    "SearchEvaluation",
    "SearchProtocolSpec",
    "evaluate_search",
    "prepare_search",
    "resolve_search_protocol",
    "search_parts",
]

BASELINE = "bm25+embedding"


class SearchProtocolSpec(FrozenConfig):
    """An offline search protocol.

    Attributes:
        name: Its name.
        base: The recommendation protocol whose split it uses.
        item_text: Where the item text is (a catalog data set with text, or a TSV file).
        min_matches: Least catalogue items a query's genre set must match.
        seed: Seed of each user's query item.
        k: The NDCG cutoff.
        description: One line.
    """

    name: str = Field(min_length=1)
    base: str = Field(min_length=1)
    item_text: str = Field(min_length=1)
    min_matches: int = Field(default=20, ge=1)
    seed: int = Field(default=1, ge=0)
    k: int = Field(default=10, ge=1)
    description: str = ""


SEARCH_PROTOCOLS: dict[str, SearchProtocolSpec] = {
    "ml100k-search": SearchProtocolSpec(
        name="ml100k-search",
        base="ml100k-holdout",
        item_text="ml-100k",
        min_matches=20,
        seed=1,
        k=10,
        description="ML-100K holdout split; one genre query per test user from a held-out "
        "item; relevant = the user's held-out items with every query genre; NDCG@10",
    ),
}
"""The named search protocols (only ML-100K has item text among the catalog data sets)."""


def resolve_search_protocol(protocol: str | SearchProtocolSpec) -> SearchProtocolSpec:
    """A search protocol by name (or a spec, returned as is)."""
    if isinstance(protocol, SearchProtocolSpec):
        return protocol
    try:
        return SEARCH_PROTOCOLS[protocol]
    except KeyError:
        raise ConfigError(
            f"unknown search protocol {protocol!r}; the named ones are "
            f"{', '.join(sorted(SEARCH_PROTOCOLS))}"
        ) from None


@dataclass(frozen=True)
class PreparedSearch:
    """A search protocol applied: the recommendation split, the item text and the queries.

    Attributes:
        spec: The protocol.
        train: What the rankers train on.
        queries: The test queries.
        histories: Each query's user's training items (codes).
        counts: Users with held-out items, users without a query, queries.
    """

    spec: SearchProtocolSpec
    train: Interactions
    queries: list[SearchQuery]
    histories: list[np.ndarray]
    counts: dict[str, int]


def prepare_search(protocol: str | SearchProtocolSpec) -> PreparedSearch:
    """Split the base protocol's data and build the test queries."""
    spec = resolve_search_protocol(protocol)
    parts = prepare(spec.base)
    return search_parts(spec, parts.train, parts.test, parts.history)


def search_parts(
    spec: SearchProtocolSpec, train: Interactions, heldout: Interactions, history: Interactions
) -> PreparedSearch:
    """The search task on given parts: rankers train on ``train``, queries come from
    ``heldout``, each user's ``history`` is what a personalised system knows (and is excluded
    from the ranking). Used with a carve of ``train`` to choose settings on validation."""
    text = load_item_text(spec.item_text)
    rows = text.align(train.item_ids)
    heldout_indptr, heldout_items = heldout.sequences()
    queries, counts = build_queries(
        text, rows, heldout_indptr, heldout_items, seed=spec.seed, min_matches=spec.min_matches
    )
    indptr, items = history.sequences()
    histories = [items[indptr[q.user] : indptr[q.user + 1]].astype(np.int64) for q in queries]
    return PreparedSearch(spec, train, queries, histories, counts)


@dataclass(frozen=True)
class SearchEvaluation:
    """Per-query NDCG of each system, with CIs and paired tests against the baseline.

    Attributes:
        protocol: The protocol's name.
        per_query: System → per-query NDCG@k (same queries, same order).
        cis: System → bootstrap CI of the mean.
        paired: System → paired comparison with the baseline (system − baseline).
        fit_seconds: System → seconds to train.
        search_seconds: System → seconds to answer every query.
        counts: Query counts, and each ranker's training facts.
        catalogue_matches: Per query, the catalogue items carrying every query genre.
    """

    protocol: str
    per_query: dict[str, np.ndarray]
    cis: dict[str, ConfidenceInterval]
    paired: dict[str, PairedComparison]
    fit_seconds: dict[str, float]
    search_seconds: dict[str, float]
    counts: dict[str, Any]
    catalogue_matches: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary."""
        return {
            "protocol": self.protocol,
            "ndcg": {name: ci.to_dict() for name, ci in self.cis.items()},
            "paired_vs_" + BASELINE: {
                name: {
                    "mean_difference": p.mean_difference,
                    "relative": p.mean_difference / p.mean_b if p.mean_b else None,
                    "t_pvalue": p.t_pvalue,
                    "wilcoxon_pvalue": p.wilcoxon_pvalue,
                }
                for name, p in self.paired.items()
            },
            "fit_seconds": self.fit_seconds,
            "search_seconds": self.search_seconds,
            "counts": self.counts,
            "catalogue_matches": {
                "median": float(np.median(self.catalogue_matches)),
                "min": int(self.catalogue_matches.min()),
            },
        }


def _ndcg(items: np.ndarray, queries: list[SearchQuery], k: int) -> np.ndarray:
    positions = np.concatenate([np.full(len(q.relevant), i) for i, q in enumerate(queries)])
    relevant = np.concatenate([q.relevant for q in queries])
    return ndcg(RankedRelevance.from_lists(items, positions, relevant), k)


def evaluate_search(
    protocol: str | SearchProtocolSpec | PreparedSearch,
    config: SearchConfig | dict[str, Any] | None = None,
    *,
    resamples: int = 1000,
    systems: tuple[str, ...] = ("ltr-unpersonalised", "personalised"),
) -> SearchEvaluation:
    """Train and compare the systems of the module docstring on one protocol.

    Args:
        protocol: A search protocol name or spec, or prepared parts (:func:`search_parts`).
        config: The personalised system's settings (the unpersonalised ranker uses the same
            with ``personalised=False``).
        resamples: Bootstrap resamples.
        systems: The learned systems to train (the baseline is always there).
    """
    prepared = protocol if isinstance(protocol, PreparedSearch) else prepare_search(protocol)
    spec = prepared.spec
    text = load_item_text(spec.item_text)
    base = config if isinstance(config, SearchConfig) else SearchConfig.from_mapping(config or {})
    texts = [q.text for q in prepared.queries]
    per_query: dict[str, np.ndarray] = {}
    fit_seconds: dict[str, float] = {}
    search_seconds: dict[str, float] = {}
    counts: dict[str, Any] = dict(prepared.counts)
    variants: dict[str, SearchConfig] = {
        name: base.model_copy(update={"personalised": name == "personalised"})
        for name in ("ltr-unpersonalised", "personalised")
        if name in systems
    }
    for position, (name, variant) in enumerate(variants.items()):
        started = time.perf_counter()
        engine = PersonalisedSearch(variant).fit(prepared.train, text)
        fit_seconds[name] = time.perf_counter() - started
        counts[f"{name}_training"] = engine.training_
        if position == 0:  # the baseline is the same retrieval, not re-ranked
            started = time.perf_counter()
            result = engine.search(texts, prepared.histories, spec.k, rerank=False)
            search_seconds[BASELINE] = time.perf_counter() - started
            per_query[BASELINE] = _ndcg(result.items, prepared.queries, spec.k)
            fit_seconds[BASELINE] = 0.0
        started = time.perf_counter()
        result = engine.search(texts, prepared.histories, spec.k)
        search_seconds[name] = time.perf_counter() - started
        per_query[name] = _ndcg(result.items, prepared.queries, spec.k)
    per_query = {name: per_query[name] for name in (BASELINE, *variants)}
    cis = bootstrap_cis(per_query, n_resamples=resamples, seed=0)
    comparisons = {
        name: paired(per_query[name], per_query[BASELINE], n_resamples=resamples, seed=0)
        for name in variants
    }
    rows = text.align(prepared.train.item_ids)
    genres = [frozenset(text.genres[r]) if r >= 0 else frozenset() for r in rows]
    matches = np.asarray(
        [sum(1 for g in genres if frozenset(q.genres) <= g) for q in prepared.queries]
    )
    return SearchEvaluation(
        protocol=spec.name,
        per_query=per_query,
        cis=cis,
        paired=comparisons,
        fit_seconds=fit_seconds,
        search_seconds=search_seconds,
        counts=counts,
        catalogue_matches=matches,
    )

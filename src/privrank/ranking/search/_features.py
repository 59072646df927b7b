r"""Features of a (query, history, candidate) triple for the search ranker.

Unpersonalised (what the query and the catalogue say):

- ``bm25``, ``log_bm25_rank``: the BM25 score and :math:`\log` of its 1-based rank;
- ``cosine``, ``log_cosine_rank``: the query-item embedding cosine and the log of its rank;
- ``rrf``: the reciprocal-rank-fusion score (the unpersonalised ranking);
- ``log_popularity``: :math:`\log(1 + n_i)`, :math:`n_i` the training users of the item.

Personalised (what the history says):

- ``history_similarity``: cosine of the item's embedding and the history's profile (the unit
  mean of its items' embeddings, as content-knn);
- ``cf_score``, ``log_cf_rank``: a collaborative model's score of the item for the history and
  the log of its rank over the whole catalogue;
- ``log_history_length``: :math:`\log(1 + |H|)`.
"""

from __future__ import annotations

import numpy as np

from privrank.ranking.search._catalogue import CatalogueScores, dense_ranks

__all__ = ["PERSONAL_FEATURES", "QUERY_FEATURES", "candidate_features"]

QUERY_FEATURES = (
    "bm25",
    "log_bm25_rank",
    "cosine",
    "log_cosine_rank",
    "rrf",
    "log_popularity",
)
PERSONAL_FEATURES = ("history_similarity", "cf_score", "log_cf_rank", "log_history_length")


def candidate_features(
    catalogue: CatalogueScores,
    candidates: np.ndarray,
    popularity: np.ndarray,
    *,
    profile_similarity: np.ndarray | None,
    cf_scores: np.ndarray | None,
    history_lengths: np.ndarray | None,
) -> np.ndarray:
    """``(n_queries, n_candidates, n_features)`` float32 features.

    Args:
        catalogue: Every item's catalogue scores for each query.
        candidates: ``(n_queries, n_candidates)`` item codes.
        popularity: Training users per item.
        profile_similarity: ``(n_queries, n_items)`` history-profile cosines, or ``None`` for
            the unpersonalised feature set (then ``cf_scores`` and ``history_lengths`` are
            ``None`` too).
        cf_scores: ``(n_queries, n_items)`` collaborative scores.
        history_lengths: ``(n_queries,)`` history sizes.
    """
    rows = np.arange(candidates.shape[0])[:, None]
    columns = [
        catalogue.bm25[rows, candidates],
        np.log(catalogue.bm25_rank[rows, candidates]),
        catalogue.cosine[rows, candidates],
        np.log(catalogue.cosine_rank[rows, candidates]),
        catalogue.rrf[rows, candidates],
        np.log1p(popularity)[candidates],
    ]
    if profile_similarity is not None:
        assert cf_scores is not None and history_lengths is not None
        cf_rank = dense_ranks(cf_scores)
        columns += [
            profile_similarity[rows, candidates],
            cf_scores[rows, candidates],
            np.log(cf_rank[rows, candidates]),
            np.broadcast_to(np.log1p(history_lengths)[:, None], candidates.shape),
        ]
    return np.stack([np.asarray(c, dtype=np.float32) for c in columns], axis=2)

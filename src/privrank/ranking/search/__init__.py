"""Catalogue search: BM25 and embedding retrieval, merged, re-ranked with the user's history.

- :class:`CatalogueIndex`: unpersonalised lexical (bm25s) and semantic (MiniLM) retrieval,
  fused by reciprocal rank;
- :class:`PersonalisedSearch`: retrieval, per-candidate features (retrieval scores,
  popularity, history content similarity, a collaborative model's score) and a LambdaMART ranker
  (:func:`fit_lambdarank`) trained on a validation part carved from the training data;
- :func:`build_queries`: the offline search task (genre queries from held-out items), shared by
  the ranker's training and the evaluation protocol (:mod:`privrank.workflow.search_protocol`).

It lives in the ranking layer because it is a ranker over recommender models (it imports
``models`` for the collaborative scores and the text encoder, and ``data`` for item text), and
both ``workflow`` (the protocol) and ``serving`` (``/v1/search``) sit above it.
"""

from privrank.ranking.search._catalogue import CatalogueIndex, CatalogueScores
from privrank.ranking.search._engine import PersonalisedSearch, SearchConfig, SearchResult
from privrank.ranking.search._features import PERSONAL_FEATURES, QUERY_FEATURES
from privrank.ranking.search._queries import SearchQuery, build_queries, genre_matches
from privrank.ranking.search._ranker import fit_lambdarank

__all__ = [
    "PERSONAL_FEATURES",
    "QUERY_FEATURES",
    "CatalogueIndex",
    "CatalogueScores",
    "PersonalisedSearch",
    "SearchConfig",
    "SearchQuery",
    "SearchResult",
    "build_queries",
    "fit_lambdarank",
    "genre_matches",
]

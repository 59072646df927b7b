r"""Unpersonalised catalogue search: BM25 and sentence embeddings, merged by reciprocal rank.

For a query :math:`q` and every item :math:`i` of the catalogue (item text :math:`t_i`):

- **lexical**: the BM25 score (bm25s, Lucene variant, :math:`k_1 = 1.5`, :math:`b = 0.75`,
  English stop words removed, lower-cased word tokens) of :math:`q`'s tokens in :math:`t_i`,
  :math:`\sum_{w \in q} \mathrm{idf}(w)\, \frac{f_{w,i}}{f_{w,i} + k_1 (1 - b + b\,|t_i| /
  \overline{|t|})}` with :math:`\mathrm{idf}(w) = \ln(1 + (N - n_w + 0.5)/(n_w + 0.5))`;
- **semantic**: the cosine :math:`e_q \cdot e_i` of the unit MiniLM embeddings
  (:mod:`privrank.models.text_embedding`), computed exactly over the catalogue (a few thousand
  items: a matrix-vector product is faster than building a FAISS index);
- **merged**: reciprocal-rank fusion, :math:`\mathrm{rrf}(i) = \sum_{s} 1 / (k + r_s(i))` over
  the two lists, :math:`r_s(i)` the 1-based rank of :math:`i` in list :math:`s` (ties broken by
  the lower item code) and :math:`k = 60` (Cormack et al., 2009). Items with a zero BM25 score
  get no lexical term.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privrank.errors import ConfigError

__all__ = ["CatalogueIndex", "CatalogueScores", "dense_ranks"]

RRF_K = 60.0


def dense_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each entry of each row (best = 1; ties: the lower index first)."""
    scores = np.atleast_2d(scores)
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(scores.shape[0])[:, None]
    ranks[rows, order] = np.arange(1, scores.shape[1] + 1)[None, :]
    return ranks


@dataclass(frozen=True)
class CatalogueScores:
    """Every item's scores for a batch of queries (``(n_queries, n_items)`` each).

    Attributes:
        bm25: BM25 scores.
        cosine: Embedding cosines.
        rrf: Reciprocal-rank-fusion scores (the unpersonalised ranking).
        bm25_rank: 1-based ranks by BM25.
        cosine_rank: 1-based ranks by cosine.
    """

    bm25: np.ndarray
    cosine: np.ndarray
    rrf: np.ndarray
    bm25_rank: np.ndarray
    cosine_rank: np.ndarray


class CatalogueIndex:
    """BM25 and embedding search over a catalogue's item texts (item codes = row order).

    Args:
        texts: The text of each item code (``""`` for an item without text: it is never a
            lexical match and its embedding is zero).
        embeddings: ``(n_items, d)`` unit item embeddings (zero rows for items without text).
    """

    def __init__(self, texts: list[str], embeddings: np.ndarray) -> None:
        try:
            import bm25s
        except ImportError as exc:  # pragma: no cover - the 'search' extra is in 'dev'
            raise ConfigError(
                "catalogue search needs the 'search' extra (bm25s): pip install 'privrank[search]'"
            ) from exc
        if len(texts) != embeddings.shape[0]:
            raise ConfigError(f"{len(texts)} texts for {embeddings.shape[0]} embeddings")
        self.texts = list(texts)
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self._bm25s = bm25s
        tokens = bm25s.tokenize(self.texts, stopwords="en", show_progress=False)
        self._retriever = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
        self._retriever.index(tokens, show_progress=False)

    @property
    def n_items(self) -> int:
        """Items in the catalogue."""
        return len(self.texts)

    def bm25(self, queries: list[str]) -> np.ndarray:
        """``(n_queries, n_items)`` BM25 scores."""
        out = np.zeros((len(queries), self.n_items), dtype=np.float32)
        tokenised = self._bm25s.tokenize(
            queries, stopwords="en", show_progress=False, return_ids=False
        )
        for row, tokens in enumerate(tokenised):
            if tokens:
                out[row] = self._retriever.get_scores(list(tokens))
        return out

    def scores(self, queries: list[str], query_embeddings: np.ndarray) -> CatalogueScores:
        """Lexical, semantic and fused scores of every item for each query.

        Args:
            queries: The query texts.
            query_embeddings: Their unit embeddings, ``(n_queries, d)``.
        """
        bm25 = self.bm25(queries)
        cosine = np.asarray(query_embeddings, dtype=np.float32) @ self.embeddings.T
        bm25_rank = dense_ranks(bm25)
        cosine_rank = dense_ranks(cosine)
        rrf = 1.0 / (RRF_K + cosine_rank) + np.where(bm25 > 0, 1.0 / (RRF_K + bm25_rank), 0.0)
        return CatalogueScores(
            bm25=bm25,
            cosine=cosine,
            rrf=rrf.astype(np.float32),
            bm25_rank=bm25_rank,
            cosine_rank=cosine_rank,
        )

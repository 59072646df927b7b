r"""Content-based retrieval: items near the user's history in a sentence-embedding space."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrank.data.interactions import Interactions
from privrank.data.item_text import ItemText, load_item_text
from privrank.errors import ConfigError
from privrank.models.base import FitOptions, ModelConfig, Query, Recommender, register
from privrank.models.capabilities import FactorModel
from privrank.models.text_embedding import EMBEDDING_DIM, embed_texts

__all__ = ["ContentKNN", "ContentKNNConfig", "item_embeddings", "profile_vectors"]


class ContentKNNConfig(ModelConfig):
    """Hyper-parameters of :class:`ContentKNN`.

    Attributes:
        item_text: Where the item text is: a catalog data set with text (``ml-100k``) or an
            item-text TSV file (:func:`~privrank.data.item_text.read_item_text_tsv`);
            ``None``: the catalog data set named like the training data
            (``Interactions.metadata.name``).
        min_text_coverage: The fit is refused when fewer than this share of the training items
            have text (a vocabulary that does not match the text file).
    """

    item_text: str | None = Field(None, min_length=1)
    min_text_coverage: float = Field(0.9, ge=0, le=1)


def profile_vectors(embeddings: np.ndarray, histories: sp.csr_matrix) -> np.ndarray:
    r"""Unit-normalised mean of the history items' embeddings, one row per history.

    .. math:: v_q = \frac{\sum_{i \in H_q} e_i}{\lVert \sum_{i \in H_q} e_i \rVert}

    (a zero row when the sum is zero).
    """
    binary = histories.copy()
    binary.data = np.ones_like(binary.data, dtype=np.float32)
    sums = np.asarray(binary @ embeddings, dtype=np.float32)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)


@register("content-knn")
class ContentKNN(Recommender, FactorModel):
    r"""Content similarity: cosine between the user's profile and each item's text embedding.

    Each item :math:`i` with text :math:`t_i` (title and genres, :mod:`privrank.data.item_text`)
    is embedded by all-MiniLM-L6-v2 (:mod:`privrank.models.text_embedding`) into a unit vector
    :math:`e_i \in \mathbb{R}^{384}`; items without text get :math:`e_i = 0`. A history
    :math:`H_q` is the unit-normalised sum of its items' embeddings (:func:`profile_vectors`), and

    .. math:: s(q, i) = v_q \cdot e_i = \cos(v_q, e_i)

    A training user is scored exactly as the same history folded in (there is no per-user
    state), so the model retrieves for ad-hoc histories, new users and histories that stay on
    the device alike. It is a :class:`~privrank.models.capabilities.FactorModel`
    (:math:`h_i = e_i`, no bias), so serving indexes the embeddings with FAISS.

    **Privacy.** The item embeddings come from public text and a public encoder, and no user
    data enters the fit except the popularity counts used for cold start: the model is not
    trained on private data beyond those counts, and it does not claim a differential-privacy
    guarantee (a private fit is refused).

    Attributes:
        item_embeddings_: ``(n_items, 384)`` float32 unit rows (zero rows: no text).
        text_coverage_: Share of the training items that have text.
    """

    Config = ContentKNNConfig
    config: ContentKNNConfig
    item_embeddings_: np.ndarray
    text_coverage_: float

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        source = self.config.item_text or train.metadata.name
        text = load_item_text(source)
        self.item_embeddings_ = item_embeddings(text, train)
        covered = float(np.mean(np.any(self.item_embeddings_ != 0, axis=1)))
        if covered < self.config.min_text_coverage:
            raise ConfigError(
                f"content-knn: only {covered:.1%} of the training items have text in "
                f"{text.source} (min_text_coverage={self.config.min_text_coverage}); is "
                f"{source!r} the item text of these interactions?"
            )
        self.text_coverage_ = covered
        self._report(1, 1)

    def _score_histories(self, histories: Query) -> np.ndarray:
        vectors = self.user_vectors(histories)
        return vectors @ self.item_embeddings_.T

    def user_vectors(self, query: Query) -> np.ndarray:
        """Profiles of the queries' histories (known users: their training histories)."""
        if query.user_codes is not None:
            query = self._training_histories(query.user_codes)
        return profile_vectors(self.item_embeddings_, query.to_csr(self.n_items_))

    def item_vectors(self) -> np.ndarray:
        """The item embeddings :math:`e_i`."""
        return self.item_embeddings_

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "item_embeddings": self.item_embeddings_,
            "text_coverage": np.asarray([self.text_coverage_], dtype=np.float64),
        }

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        embeddings = state["item_embeddings"]
        if embeddings.shape != (self.n_items_, EMBEDDING_DIM):
            raise ValueError(
                f"item_embeddings has shape {embeddings.shape}, expected "
                f"({self.n_items_}, {EMBEDDING_DIM})"
            )
        self.item_embeddings_ = embeddings.astype(np.float32, copy=False)
        self.text_coverage_ = float(state["text_coverage"][0])


def item_embeddings(text: ItemText, train: Interactions) -> np.ndarray:
    """Embeddings of ``train``'s items in code order (zero rows for items without text)."""
    rows = text.align(train.item_ids)
    embedded = embed_texts(text.texts)
    out = np.zeros((train.n_items, EMBEDDING_DIM), dtype=np.float32)
    has = rows >= 0
    out[has] = embedded[rows[has]]
    return out

r"""Candidate generation (merge of several retrievers) and the features of (user, candidate).

**Merge.** Each proposing retriever :math:`r` ranks every item the user has not seen
(:math:`\rho_r(i) = 1, 2, \dots`, by descending score, ties by the lower item code). An item's
merged key is its best rank over the proposing retrievers, :math:`\min_r \rho_r(i)` (ties: the
earlier retriever, then the lower code); the ``N`` items with the smallest keys are the
candidates (an item outside every retriever's top ``N`` has a larger key than each of the
first retriever's top ``N``, so only the top ``N`` of each list needs ranking). So the candidate
set holds every retriever's top :math:`\lfloor N / R \rfloor` at
least, and grows each list by one rank at a time.

**Features** of a candidate :math:`i` for a query with history :math:`H` (the columns of
:func:`feature_names`):

- per retriever :math:`r`: its score relative to the user's best unseen score,
  :math:`s_r(i) / |\max_{j \notin H} s_r(j)|` (0 when that best is 0), and
  :math:`\log(1 + \min(\rho_r(i), N + 1))` (a rank past ``N`` is only "not in this
  retriever's top ``N``": computing it exactly would sort the whole catalogue per query, and
  serving cannot afford that);
- item popularity :math:`\log(1 + |\{u : x_{ui} = 1\}|)`;
- item recency: the time of the item's last training interaction, scaled to [0, 1] over the
  data's time range (0.5 without timestamps), and its mean relative position in the histories
  it appears in (0 = first item of a history, 1 = last);
- user activity :math:`\log(1 + |H|)`.

**Why scale-free scores.** The ranker learns from candidates of retrievers fitted on the *fit
part* (the training data less the carved labels) and scores candidates of retrievers refitted
on all of it: raw scores (and gaps in raw units) of the two fits have different scales (an EASE
or co-occurrence score grows with the data), so a tree's thresholds on them do not transfer.
Ranks and scores relative to the user's best do (on a validation carve of ML-100K's training
ratings, rankers started from EASE's order: raw scores and gaps NDCG@10 0.2586, relative scores
and ranks 0.2623, EASE alone 0.2589; BENCHMARKS.md, "Two-stage quality, round 2").

A content-similarity score plugs in as one more retriever (a registered privrank model whose
scores are the similarity of each item's content to the history's), with ``propose=False`` when it
should only add its three columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from privrank.ranking.two_stage._top_lists import candidate_ranks, merge_top_lists, top_lists

__all__ = ["Candidates", "feature_names", "item_features", "rank_features"]


@dataclass(frozen=True)
class Candidates:
    """The merged candidates of a batch of queries.

    Attributes:
        items: ``(n, N)`` int64 item codes, best merged key first; ``-1`` pads rows with fewer
            than ``N`` eligible items.
        features: ``(n, N, n_features)`` float32 (zeros on padding).
    """

    items: np.ndarray
    features: np.ndarray


def feature_names(retrievers: list[str]) -> tuple[str, ...]:
    """Names of the feature columns, in order."""
    names: list[str] = []
    for position, name in enumerate(retrievers):
        tag = f"r{position}.{name}"
        names += [f"{tag}.relative_score", f"{tag}.log_rank"]
    return (
        *names,
        "item.log_popularity",
        "item.last_seen",
        "item.mean_position",
        "user.log_activity",
    )


def item_features(
    indptr: np.ndarray, items: np.ndarray, timestamps: np.ndarray | None, n_items: int
) -> np.ndarray:
    """``(n_items, 3)`` float32: log popularity, last-seen time in [0, 1], mean position.

    Args:
        indptr: Offsets of the time-ordered training histories.
        items: Their item codes.
        timestamps: Each history entry's timestamp (same order), or ``None``.
        n_items: Items in the vocabulary.
    """
    lengths = np.diff(indptr)
    popularity = np.bincount(items, minlength=n_items).astype(np.float64)
    position = np.arange(len(items)) - np.repeat(indptr[:-1], lengths)
    relative = position / np.maximum(np.repeat(lengths, lengths) - 1, 1)
    mean_position = np.bincount(items, weights=relative, minlength=n_items) / np.maximum(
        popularity, 1
    )
    last_seen = np.full(n_items, 0.5)
    if timestamps is not None and len(timestamps):
        low, high = float(timestamps.min()), float(timestamps.max())
        latest = np.full(n_items, -np.inf)
        np.maximum.at(latest, items, timestamps.astype(np.float64))
        span = max(high - low, 1.0)
        last_seen = np.where(np.isfinite(latest), (latest - low) / span, 0.0)
    return np.stack([np.log1p(popularity), last_seen, mean_position], axis=1).astype(np.float32)


def rank_features(
    scores: list[np.ndarray],
    proposes: list[bool],
    eligible: np.ndarray,
    lengths: np.ndarray,
    items_table: np.ndarray,
    n_candidates: int,
) -> Candidates:
    """Merge the retrievers' candidates and compute every feature (module docstring).

    Args:
        scores: Each retriever's ``(n, n_items)`` scores of the batch.
        proposes: Whether each retriever proposes candidates.
        eligible: ``(n, n_items)`` bool, the items outside each query's history (the others
            are never candidates).
        lengths: ``(n,)`` history lengths.
        items_table: :func:`item_features` of the vocabulary.
        n_candidates: ``N``.
    """
    n_items = scores[0].shape[1]
    depth = min(n_candidates, n_items)
    tops = [top_lists(s, eligible, depth) for s in scores]
    chosen = merge_top_lists(
        [top for (top, _), propose in zip(tops, proposes, strict=True) if propose],
        [position for position, propose in enumerate(proposes) if propose],
        len(scores),
        eligible,
        n_candidates,
    )
    safe = np.maximum(chosen, 0)
    rows = np.arange(chosen.shape[0])[:, None]
    n_columns = 2 * len(scores) + items_table.shape[1] + 1
    features = np.zeros((*chosen.shape, n_columns), dtype=np.float32)
    _assemble(
        np.stack([s[rows, safe] for s in scores]).astype(np.float64),
        np.stack([best for _, best in tops]),
        np.stack([candidate_ranks(top, chosen, n_items) for top, _ in tops]),
        np.log1p(np.arange(depth + 2, dtype=np.float64)),
        items_table.astype(np.float32, copy=False),
        np.log1p(np.asarray(lengths, dtype=np.float64)),
        chosen,
        features,
    )
    return Candidates(items=chosen, features=features)


@njit(cache=True, error_model="numpy")
def _assemble(
    scores, best, ranks, log1p_of, items_table, activity, chosen, out
):  # pragma: no cover - compiled
    """Fill ``out[row, j]`` of each real candidate (padding stays 0): per retriever the score
    over ``|best|`` (0 when ``best`` is 0) and ``log1p`` of the capped rank, read from a table
    numpy computed (numpy's values, bit for bit), then the item's columns and the user's
    activity; each float64 value is rounded to float32 once, as ``astype`` rounds it."""
    n_lists, n_rows, n_candidates = scores.shape
    n_item_columns = items_table.shape[1]
    for row in range(n_rows):
        for j in range(n_candidates):
            item = chosen[row, j]
            if item < 0:
                continue
            for k in range(n_lists):
                scale = abs(best[k, row])
                out[row, j, 2 * k] = scores[k, row, j] / scale if scale > 0 else 0.0
                out[row, j, 2 * k + 1] = log1p_of[ranks[k, row, j]]
            for column in range(n_item_columns):
                out[row, j, 2 * n_lists + column] = items_table[item, column]
            out[row, j, 2 * n_lists + n_item_columns] = activity[row]

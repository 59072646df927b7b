r"""BPR fold-in: the user vector of a history with the item parameters fixed.

A history :math:`P` (its distinct items) gets the user vector minimising BPR's objective
against its negatives :math:`I \setminus P`,

.. math:: w^\star = \arg\min_w \frac{1}{|P|\,|I\setminus P|}\sum_{i\in P}
          \sum_{j\notin P} -\log\sigma(\langle w, h_i - h_j\rangle + b_i - b_j)
          + \lambda\lVert w\rVert^2,

approximated by Adam steps from :math:`w = 0`. Each step estimates the sum over
:math:`j \notin P` by :math:`K` fresh draws, uniform with replacement from
:math:`I \setminus P` (an unbiased estimate of the gradient, the history's positives all
meeting the same draws); when :math:`|I \setminus P| \le K` it uses all of them and the
gradient is exact. The draws come from a generator seeded by the history's sorted distinct
items, so a history gets the same vector alone or in any batch, in any order, with repeats or
not, and in every run.

Cost: a batch of :math:`B` histories with :math:`T` positives in all takes, per step,
:math:`O((T + B K)\,d + T K)` with :math:`d` factors, not :math:`O(T\,|I|)`. Only the item
parameters and the history are read: for a private model, fold-in is post-processing of its
released item factors and biases.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["FOLD_IN_SEED", "fold_in_vectors", "sampled_negatives"]

FOLD_IN_SEED = 20_090_618
"""Mixed with each history's items to seed the draws of its negatives (a fixed constant: the
fold-in of a history is a function of the history and the model, not of the run)."""

_BLOCK_ELEMENTS = 1 << 21
"""Most entries of a block's largest arrays (the ``(B, K, d)`` negative factors and ``(T, K)``
pairs of a step, the ``(steps, B, K)`` drawn item codes): 8 to 16 MB each."""


def fold_in_vectors(
    item_factors: np.ndarray,
    item_bias: np.ndarray,
    rows: sp.csr_matrix,
    *,
    negatives: int,
    steps: int,
    learning_rate: float,
    regularization: float,
    max_users: int = 1024,
) -> np.ndarray:
    """User vectors of the binary histories ``rows`` (see the module docstring).

    Args:
        item_factors: :math:`H`, ``(n_items, d)`` float32.
        item_bias: :math:`b`, ``(n_items,)`` float32.
        rows: One binary history per row, ``(n, n_items)``.
        negatives: :math:`K`, negatives drawn per history and step.
        steps: Adam steps.
        learning_rate: Adam's step size.
        regularization: :math:`\\lambda`.
        max_users: Most histories fitted together (blocks are also bounded in memory).

    Returns:
        ``(n, d)`` float32; zero rows for empty histories (and for histories holding every
        item, which have no negatives).
    """
    rows = _sorted(rows)
    n_items, factors = item_factors.shape
    lengths = np.diff(rows.indptr)
    width = np.minimum(n_items - lengths, negatives)
    out = np.zeros((rows.shape[0], factors), dtype=np.float32)
    items = torch.from_numpy(np.ascontiguousarray(item_factors, dtype=np.float32))
    bias = torch.from_numpy(np.ascontiguousarray(item_bias, dtype=np.float32))
    for start, stop in _blocks(lengths, width, factors, steps, max_users):
        block = rows[start:stop]
        sample, mask = sampled_negatives(block, n_items, negatives, steps)
        out[start:stop] = _fit_block(
            items, bias, block, sample, mask, learning_rate, regularization
        )
    return out


def sampled_negatives(
    rows: sp.csr_matrix, n_items: int, count: int, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each binary history's negatives at each step: ``count`` uniform draws (with
    replacement) from the items not in it, or, when there are at most ``count``, all of them.

    A row's draws come from ``numpy.random.default_rng([FOLD_IN_SEED, *items])`` (its sorted
    distinct items), so they depend on that row only.

    Returns:
        ``(steps, n, width)`` item codes (int64, padded with 0) and the ``(n, width)`` boolean
        mask of real entries (the same at every step).
    """
    rows = _sorted(rows)
    n_rows = rows.shape[0]
    available = n_items - np.diff(rows.indptr)
    width = int(np.minimum(available, count).max(initial=0))
    sample = np.zeros((steps, n_rows, width), dtype=np.int64)
    mask = np.zeros((n_rows, width), dtype=bool)
    for row in range(n_rows):
        positives = rows.indices[rows.indptr[row] : rows.indptr[row + 1]].astype(np.int64)
        if available[row] <= count:  # every negative, at every step
            chosen = np.setdiff1d(np.arange(n_items), positives, assume_unique=True)
        else:
            rng = np.random.default_rng([FOLD_IN_SEED, *positives.tolist()])
            slots = rng.integers(available[row], size=(steps, count))
            # The slot-th item not in the history: skip the positives at or below it.
            chosen = slots + np.searchsorted(positives - np.arange(len(positives)), slots, "right")
        sample[:, row, : chosen.shape[-1]] = chosen
        mask[row, : chosen.shape[-1]] = True
    return sample, mask


def _sorted(rows: sp.csr_matrix) -> sp.csr_matrix:
    """``rows`` as CSR with sorted indices (a copy when they were not: the caller's stays)."""
    rows = sp.csr_matrix(rows)
    return rows if rows.has_sorted_indices else rows.sorted_indices()


def _blocks(
    lengths: np.ndarray, width: np.ndarray, factors: int, steps: int, max_users: int
) -> list[tuple[int, int]]:
    """Consecutive ``[start, stop)`` ranges of users, each at most ``max_users`` long and
    within :data:`_BLOCK_ELEMENTS` (or a single user)."""
    cost = width.astype(np.int64) * (factors + lengths + steps)  # B·K·d, T·K, steps·B·K
    ranges, start, total = [], 0, 0
    for user, value in enumerate(cost.tolist()):
        if user > start and (user - start >= max_users or total + value > _BLOCK_ELEMENTS):
            ranges.append((start, user))
            start, total = user, 0
        total += value
    if start < len(cost):
        ranges.append((start, len(cost)))
    return ranges


def _fit_block(
    items: torch.Tensor,
    bias: torch.Tensor,
    rows: sp.csr_matrix,
    sample: np.ndarray,
    mask: np.ndarray,
    learning_rate: float,
    regularization: float,
) -> np.ndarray:
    r"""Adam on every history of the block at once, one step per ``sample[step]``.

    Positives are flattened (``T`` of them, ``owner[t]`` the row of positive ``t``); each
    positive meets all of its row's negatives of the step. With
    :math:`g_{tj} = c\,\sigma(x_j - x_t)` (:math:`c = 1/(|P|\,|S|)` of the row, 0 for a padded
    negative), a row's gradient is

    .. math:: \sum_j \Big(\sum_{t} g_{tj}\Big) h_j - \sum_t \Big(\sum_j g_{tj}\Big) h_t
              + 2\lambda w,

    computed in closed form (no autograd graph). Rows are independent (the objective is a sum
    over rows and Adam works elementwise), so a row's vector does not depend on the block.
    """
    n_rows, factors = rows.shape[0], items.shape[1]
    lengths = np.diff(rows.indptr)
    owner = torch.from_numpy(np.repeat(np.arange(n_rows), lengths))
    positives = torch.from_numpy(rows.indices.astype(np.int64))
    h_pos, b_pos = items[positives], bias[positives]  # (T, d), (T,)
    drawn = mask.sum(axis=1)
    row_weight = 1.0 / np.maximum(lengths * drawn, 1)
    weight = torch.from_numpy((mask * row_weight[:, None]).astype(np.float32))[owner]  # (T, K)
    vectors = torch.zeros((n_rows, factors))
    optimizer = torch.optim.Adam([vectors], lr=learning_rate)
    # index_select and a (1 × d)(d × K) bmm: several times faster on CPU than fancy indexing
    # and a (K × d)(d × 1) bmm.
    steps, _, width = sample.shape
    for codes in torch.from_numpy(sample).view(steps, n_rows * width):
        h_neg = items.index_select(0, codes).view(n_rows, width, factors)  # (B, K, d)
        b_neg = bias.index_select(0, codes).view(n_rows, width)  # (B, K)
        x_pos = (vectors.index_select(0, owner) * h_pos).sum(-1) + b_pos  # (T,)
        x_neg = torch.bmm(vectors.unsqueeze(1), h_neg.transpose(1, 2)).squeeze(1) + b_neg
        pairs = torch.sigmoid(x_neg.index_select(0, owner) - x_pos.unsqueeze(1)).mul_(weight)
        per_negative = torch.zeros_like(x_neg).index_add_(0, owner, pairs)  # (B, K)
        per_positive = pairs.sum(1, keepdim=True)  # (T, 1)
        gradient = torch.bmm(per_negative.unsqueeze(1), h_neg).squeeze(1)
        gradient.index_add_(0, owner, per_positive * h_pos, alpha=-1.0)
        gradient.add_(vectors, alpha=2.0 * regularization)
        vectors.grad = gradient
        optimizer.step()
    return vectors.numpy()

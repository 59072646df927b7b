"""The former beyond-accuracy implementations (before models24), kept as oracles: the running
sums of :func:`reference_list_means` and the float formula of :func:`reference_gini` define the
values the faster code must reproduce bit for bit."""

from __future__ import annotations

import numpy as np


def reference_list_means(
    top_items: np.ndarray, per_item: np.ndarray, cutoffs: tuple[int, ...]
) -> dict[int, np.ndarray]:
    """Per-row mean of ``per_item`` over the non-padding entries of each top-``k`` list, from
    ``np.cumsum`` over a dense ``[rows, k]`` matrix."""
    depth = max(cutoffs)
    items = np.asarray(top_items)[:, :depth]
    valid = items >= 0
    values = np.where(valid, np.asarray(per_item, dtype=np.float64)[np.maximum(items, 0)], 0.0)
    sums = np.cumsum(values, axis=1)
    lengths = np.cumsum(valid, axis=1)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in cutoffs:
            length = lengths[:, k - 1]
            out[k] = np.where(length > 0, sums[:, k - 1] / length, np.nan)
    return out


def reference_gini(exposure: np.ndarray) -> float:
    """Gini coefficient by the float formula over all sorted counts."""
    counts = np.sort(np.asarray(exposure, dtype=np.float64))
    n, total = len(counts), counts.sum()
    if n == 0 or total == 0:
        return 0.0
    weights = 2.0 * np.arange(1, n + 1) - n - 1
    return float(weights @ counts / (n * total))


def reference_exposure(top_items: np.ndarray, k: int, n_items: int) -> np.ndarray:
    """How many rows' first ``k`` entries contain each item, one row at a time."""
    counts = np.zeros(n_items, dtype=np.int64)
    for row in np.asarray(top_items):
        for item in row[:k]:
            if item >= 0:
                counts[item] += 1
    return counts

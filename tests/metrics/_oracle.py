"""Slow, obviously-correct reference implementations used as oracles by the metric tests."""

from __future__ import annotations

import math

import numpy as np


def reference_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Top-k by (score desc, item code asc), skipping -inf, padded with -1; one row at a time."""
    out = np.full((scores.shape[0], k), -1, dtype=np.int64)
    for row, values in enumerate(scores):
        order = sorted(
            (j for j in range(len(values)) if values[j] != -math.inf),
            key=lambda j, v=values: (-float(v[j]), j),
        )[:k]
        out[row, : len(order)] = order
    return out


def reference_metrics(
    ranked: list[int], grades: dict[int, float], k: int, *, gain: str = "binary"
) -> dict[str, float]:
    """Every ranking metric of one user, straight from the textbook definitions."""
    top = [i for i in ranked[:k]]
    hit = [1.0 if i in grades else 0.0 for i in top] + [0.0] * (k - len(top))

    def g(r: float) -> float:
        return {"binary": 1.0 if r > 0 else 0.0, "linear": r, "exponential": 2.0**r - 1}[gain]

    dcg = sum(g(grades.get(i, 0.0)) / math.log2(j + 2) for j, i in enumerate(top))
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum(g(r) / math.log2(j + 2) for j, r in enumerate(ideal))
    n_rel = len(grades)
    n_hits = sum(hit)
    first = next((j for j, h in enumerate(hit) if h), None)
    ap_sum = sum(sum(hit[: j + 1]) / (j + 1) for j in range(k) if hit[j])
    return {
        "recall": n_hits / n_rel,
        "recall_min": n_hits / min(k, n_rel),
        "precision": n_hits / k,
        "ndcg": dcg / idcg,
        "mrr": 0.0 if first is None else 1.0 / (first + 1),
        "hit_rate": 1.0 if n_hits else 0.0,
        "map": ap_sum / min(k, n_rel),
        "map_rel": ap_sum / n_rel,
    }

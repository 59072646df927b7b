r"""A LightGBM tree ensemble compiled to flat arrays and scored by a numba kernel.

LightGBM's own ``Booster.predict`` walks each tree of the ensemble for one row at a time, with
a branch on every level that the CPU mispredicts about half the time. The two-stage's re-ranked
recommend scores 300 candidates per request with a ranker of a few hundred trees, and that walk
was its largest stage (2.7 ms of 5.7 ms per request for a 224-tree ranker on Beauty). This
module scores the same ensemble with the same arithmetic, faster:

- every internal node is stored as ``(feature, threshold, children[2])``; a leaf is the
  negative index ``~leaf``, LightGBM's own encoding;
- a step is ``node = children[2 node + (x[feature] > threshold)]``: the comparison picks the
  child by index, with no branch to mispredict;
- four rows walk each tree in lockstep, so the loads of one row overlap the others'.

**Exactly LightGBM's scores, where it applies.** For a row without NaN, LightGBM's numerical
decision at a node is ``x <= threshold`` (go left) whatever the node's missing-value type,
except the ``Zero`` type (``zero_as_missing``), which sends values in
:math:`[-10^{-35}, 10^{-35}]` the default way. LightGBM's prediction API reads such tiny values
as 0, and so does :meth:`CompiledTrees.predict`. Values are compared in float64 (float32 input is
widened first, as LightGBM does), thresholds are LightGBM's float64 values (``dump_model``
prints 17 significant digits), and the trees' outputs are added in tree order into one float64,
as LightGBM adds them. So the scores are bit-for-bit LightGBM's: tested against
``Booster.predict`` on real rankers and on random ensembles and rows, including rows exactly at
a threshold. :func:`compile_trees` declines (returns ``None``) an ensemble it cannot score this
way (categorical splits, ``Zero`` missing-value nodes, linear trees, averaged output), and
:meth:`CompiledTrees.predict` declines rows holding a NaN; the caller then uses LightGBM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numba import njit, prange

__all__ = ["CompiledTrees", "compile_trees"]

#: Rows per parallel task; smaller inputs are scored on the calling thread.
_BLOCK = 1024
#: LightGBM's ``kZeroThreshold`` (the float ``1e-35f``, widened): its prediction API reads an
#: input value ``v`` with ``|v| <= kZeroThreshold`` as 0.
_ZERO_THRESHOLD = float(np.float32(1e-35))


@dataclass(frozen=True)
class CompiledTrees:
    """A tree ensemble as flat arrays (see the module docstring).

    Attributes:
        roots: ``(n_trees,)`` int32, each tree's root: a node index, or ``~leaf`` for a tree
            that is a single leaf.
        features: ``(n_nodes,)`` int32, the split feature of each internal node.
        thresholds: ``(n_nodes,)`` float64, its threshold (``x <= t`` goes left).
        children: ``(2 n_nodes,)`` int32, left child at ``2 i``, right at ``2 i + 1``.
        leaves: ``(n_leaves,)`` float64 leaf values (shrinkage applied, as LightGBM stores them).
        n_features: Columns a row must have.
    """

    roots: np.ndarray
    features: np.ndarray
    thresholds: np.ndarray
    children: np.ndarray
    leaves: np.ndarray
    n_features: int

    def predict(self, rows: np.ndarray, threads: int | None = None) -> np.ndarray | None:
        """``(n_rows,)`` float64 raw scores, or ``None`` when a row holds a NaN.

        Args:
            rows: ``(n_rows, n_features)`` float32 or float64.
            threads: Threads for inputs of more than one block (``None``: numba's default).
        """
        rows = np.ascontiguousarray(rows)
        if rows.dtype not in (np.float32, np.float64):
            rows = rows.astype(np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got {rows.shape}")
        if np.isnan(rows).any():
            return None
        tiny = (np.abs(rows) <= _ZERO_THRESHOLD) & (rows != 0)
        if tiny.any():  # LightGBM reads these as 0 (see _ZERO_THRESHOLD)
            rows = np.where(tiny, 0, rows).astype(rows.dtype)
        arrays = (self.roots, self.features, self.thresholds, self.children, self.leaves)
        if rows.shape[0] <= _BLOCK or threads == 1:
            return _predict(rows, *arrays)
        previous = numba.get_num_threads()
        most = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
        if threads is not None:
            numba.set_num_threads(max(1, min(threads, most)))
        try:
            return _predict_blocks(rows, *arrays)
        finally:
            numba.set_num_threads(previous)


def compile_trees(dump: dict[str, Any]) -> CompiledTrees | None:
    """Flatten LightGBM's ``Booster.dump_model()``; ``None`` when it is not compilable here.

    Pass the dump of exactly the trees to score (``dump_model(num_iteration=...)``).
    """
    if dump.get("average_output") or dump.get("num_class", 1) != 1:
        return None
    features: list[int] = []
    thresholds: list[float] = []
    children: list[int] = []
    leaves: list[float] = []

    def add(node: dict[str, Any]) -> int | None:
        if "leaf_value" in node:
            if "leaf_coeff" in node:  # a linear tree's leaf
                return None
            leaves.append(float(node["leaf_value"]))
            return ~(len(leaves) - 1)
        if node.get("decision_type") != "<=" or node.get("missing_type") == "Zero":
            return None
        index = len(features)
        features.append(int(node["split_feature"]))
        thresholds.append(float(node["threshold"]))
        children.extend((0, 0))
        left = add(node["left_child"])
        right = add(node["right_child"])
        if left is None or right is None:
            return None
        children[2 * index], children[2 * index + 1] = left, right
        return index

    roots = []
    for tree in dump["tree_info"]:
        root = add(tree["tree_structure"])
        if root is None:
            return None
        roots.append(root)
    return CompiledTrees(
        roots=np.asarray(roots, dtype=np.int32),
        features=np.asarray(features, dtype=np.int32),
        thresholds=np.asarray(thresholds, dtype=np.float64),
        children=np.asarray(children, dtype=np.int32),
        leaves=np.asarray(leaves, dtype=np.float64),
        n_features=int(dump["max_feature_idx"]) + 1,
    )


@njit(cache=True, inline="always")
def _walk(x, r, node, features, thresholds, children):  # pragma: no cover - compiled
    while node >= 0:
        node = children[2 * node + (x[r, features[node]] > thresholds[node])]
    return node


@njit(cache=True)
def _predict_range(x, start, stop, out, roots, features, thresholds, children, leaves):
    """Add every tree's leaf value to ``out[r]`` for rows ``start <= r < stop``, tree by tree
    (LightGBM's order of summation), four rows in lockstep."""
    for t in range(roots.shape[0]):
        root = roots[t]
        if root < 0:
            for r in range(start, stop):
                out[r] += leaves[~root]
            continue
        r = start
        while r + 4 <= stop:
            a, b, c, d = root, root, root, root
            while a >= 0 or b >= 0 or c >= 0 or d >= 0:
                if a >= 0:
                    a = children[2 * a + (x[r, features[a]] > thresholds[a])]
                if b >= 0:
                    b = children[2 * b + (x[r + 1, features[b]] > thresholds[b])]
                if c >= 0:
                    c = children[2 * c + (x[r + 2, features[c]] > thresholds[c])]
                if d >= 0:
                    d = children[2 * d + (x[r + 3, features[d]] > thresholds[d])]
            out[r] += leaves[~a]
            out[r + 1] += leaves[~b]
            out[r + 2] += leaves[~c]
            out[r + 3] += leaves[~d]
            r += 4
        while r < stop:
            out[r] += leaves[~_walk(x, r, root, features, thresholds, children)]
            r += 1


@njit(cache=True)
def _predict(x, roots, features, thresholds, children, leaves):  # pragma: no cover - compiled
    out = np.zeros(x.shape[0])
    _predict_range(x, 0, x.shape[0], out, roots, features, thresholds, children, leaves)
    return out


@njit(cache=True, parallel=True)
def _predict_blocks(x, roots, features, thresholds, children, leaves):
    n = x.shape[0]
    out = np.zeros(n)
    for block in prange((n + _BLOCK - 1) // _BLOCK):
        start = block * _BLOCK
        stop = min(start + _BLOCK, n)
        _predict_range(x, start, stop, out, roots, features, thresholds, children, leaves)
    return out

"""Two-stage features of one query: capped ranks from top lists against a full argsort.

The serving path builds the candidates and features of one query per request. The first
implementation ranked every retriever's whole catalogue with a full ``argsort``; the current one
(:func:`privrank.ranking.two_stage._features.rank_features`) ranks only each retriever's top
``N`` (a partition of unique per-item keys, then a sort of ``N`` items) and merges those lists.
Both run here, in the same process, on the same inputs (4 retrievers, ML-100K's 1,682 items by
default, ``--items 12101`` for Beauty's catalogue, an 80-item history, N = 300); the script
checks they choose the same candidates and prints the median time per query of each and their
ratio.

Usage::

    .venv/bin/python bench/bench_two_stage_features.py --repeats 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from privrank.ranking.two_stage._features import rank_features


def dense_merge(ranks, n, eligible):  # type: ignore[no-untyped-def]
    """The merge on full rank arrays: the smallest ``rank * R + position`` per item, the ``n``
    smallest keys (ties by the lower code)."""
    key = np.full(eligible.shape, np.iinfo(np.int64).max, dtype=np.int64)
    for position, rank in enumerate(ranks):
        key = np.minimum(key, rank.astype(np.int64) * len(ranks) + position)
    key[~eligible] = np.iinfo(np.int64).max
    order = np.lexsort((np.broadcast_to(np.arange(key.shape[1]), key.shape), key), axis=1)
    return order[:, :n]


def full_sort_features(scores, proposes, eligible, lengths, table, n):  # type: ignore[no-untyped-def]
    """The first implementation's work: a full argsort per retriever, then the merge."""
    ranks = []
    for s in scores:
        masked = np.where(eligible, s.astype(np.float64), -np.inf)
        order = np.argsort(-masked, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(1, s.shape[1] + 1)[None, :], axis=1)
        ranks.append(rank)
    chosen = dense_merge(ranks, n, eligible)
    safe = np.maximum(chosen, 0)
    columns = [np.take_along_axis(s, safe, axis=1) for s in scores]
    columns += [np.log1p(np.take_along_axis(r, safe, axis=1)) for r in ranks]
    return chosen, np.concatenate([np.stack(columns, axis=2), table[safe]], axis=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1682)
    parser.add_argument("--candidates", type=int, default=300)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    scores = [rng.random((1, args.items)).astype(np.float32) for _ in range(4)]
    history = rng.choice(args.items, 80, replace=False)
    eligible = np.ones((1, args.items), dtype=bool)
    eligible[0, history] = False
    table = rng.random((args.items, 3)).astype(np.float32)
    proposes, lengths = [True] * 4, np.array([80])
    new = rank_features(scores, proposes, eligible, lengths, table, args.candidates)
    old, _ = full_sort_features(scores, proposes, eligible, lengths, table, args.candidates)
    assert np.array_equal(new.items, old), "the two implementations chose other candidates"
    ratios = []
    for repeat in range(args.repeats):
        timings = {}
        for name, fn in (("argsort", full_sort_features), ("top lists", rank_features)):
            started = time.perf_counter()
            for _ in range(args.calls):
                fn(scores, proposes, eligible, lengths, table, args.candidates)
            timings[name] = 1000 * (time.perf_counter() - started) / args.calls
        ratios.append(timings["argsort"] / timings["top lists"])
        print(
            f"repeat {repeat}: full argsort {timings['argsort']:.3f} ms/query, "
            f"top lists {timings['top lists']:.3f} ms/query, "
            f"ratio {ratios[-1]:.2f}",
            flush=True,
        )
    print(f"median ratio (argsort / top lists): {np.median(ratios):.2f}")


if __name__ == "__main__":
    main()

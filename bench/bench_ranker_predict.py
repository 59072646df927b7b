"""LambdaMART scoring: the compiled trees against LightGBM's ``Booster.predict``, same rows.

Two sources of rows:

- ``--model-dir``: a two-stage model trained by ``privrank train --model two-stage``. The rows
  are its real re-ranked requests: for each of ``--requests`` users, the candidates' feature
  rows (``N × n_features``, e.g. 300 × 14), as the re-ranked route scores them, one request
  per call, one thread.
- otherwise: LightGBM's lambdarank example (``$PRIVRANK_DATA_DIR/ltr-lightgbm-lambdarank``): a
  LambdaMART fitted on ``rank.train`` with its defaults, each ``rank.test`` query group one
  call, and the whole test file in one call.

Per case it prints the median milliseconds per call of LightGBM (``num_threads=1``) and of the
compiled trees (:mod:`privrank.ranking.ltr._compiled_trees`, one thread), their ratio, and
whether every score is bit-for-bit equal (the run stops if not). Calls alternate between the
two, so both see the same machine load.

Usage::

    .venv/bin/privrank train --data beauty-loo --model two-stage --out /tmp/ts_beauty
    PRIVRANK_DATA_DIR=../shared/data .venv/bin/python bench/bench_ranker_predict.py \\
        --model-dir /tmp/ts_beauty --requests 300 --repeats 5
    PRIVRANK_DATA_DIR=../shared/data .venv/bin/python bench/bench_ranker_predict.py --repeats 5
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from pathlib import Path

import numpy as np


def _cases(args: argparse.Namespace):
    """``(name, ranker, list of row blocks)``."""
    from privrank.ranking.ltr import LambdaMART, LTRFitOptions

    if args.model_dir is not None:
        import privrank.ranking  # noqa: F401  (registers two-stage)
        from privrank.models import Query, Recommender

        model_dir = (
            args.model_dir / "model" if (args.model_dir / "model").is_dir() else args.model_dir
        )
        model = Recommender.load(model_dir)
        blocks = []
        for user in range(min(args.requests, model.n_users_)):
            query = Query.users(np.array([user]))
            candidates = model.featurize(query, model.retrieve(query))
            blocks.append(candidates.features.reshape(-1, candidates.features.shape[2]))
        trees = model.ranker_.info_.get("best_iteration")
        return [
            (
                f"two-stage requests ({blocks[0].shape[0]} rows, {trees} trees)",
                model.ranker_,
                blocks,
            )
        ]
    from privrank.data.readers.ltr import read_ltr

    folder = Path(os.environ["PRIVRANK_DATA_DIR"]) / "ltr-lightgbm-lambdarank"
    train, test = read_ltr(folder / "rank.train"), read_ltr(folder / "rank.test")
    ranker = LambdaMART().fit(train, options=LTRFitOptions(threads=1))
    bounds = np.concatenate([[0], np.cumsum(test.group_sizes)])
    groups = [test.features[a:b] for a, b in itertools.pairwise(bounds)]
    return [
        ("LightGBM example, one query group per call", ranker, groups),
        (
            f"LightGBM example, all {len(test.features)} test rows in one call",
            ranker,
            [test.features],
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for name, ranker, blocks in _cases(args):
        best = ranker.info_.get("best_iteration") or None
        compiled = ranker.compiled_
        if compiled is None:
            raise SystemExit(f"{name}: this ranker's trees are not compiled")
        rows = [np.ascontiguousarray(b, dtype=np.float32) for b in blocks]
        for x in rows:
            ours = compiled.predict(x, threads=1)
            theirs = ranker.booster_.predict(x, num_iteration=best, num_threads=1)
            if ours is None or not np.array_equal(ours, theirs):
                raise SystemExit(f"{name}: the compiled scores differ from LightGBM's")
        timings: dict[str, list[float]] = {"lightgbm": [], "compiled": []}
        for _ in range(args.repeats):
            for label in timings:
                started = time.perf_counter()
                for x in rows:
                    if label == "lightgbm":
                        ranker.booster_.predict(x, num_iteration=best, num_threads=1)
                    else:
                        compiled.predict(x, threads=1)
                timings[label].append(1000 * (time.perf_counter() - started) / len(rows))
        lgb_ms, ours_ms = (statistics.median(timings[k]) for k in ("lightgbm", "compiled"))
        print(
            f"{name}: LightGBM {lgb_ms:.3f} ms/call, compiled {ours_ms:.3f} ms/call "
            f"(medians of {args.repeats}), ratio LightGBM / compiled x{lgb_ms / ours_ms:.2f}; "
            f"scores equal bit for bit on {sum(len(x) for x in rows)} rows"
        )


if __name__ == "__main__":
    main()

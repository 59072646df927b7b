"""Choose the seed ensemble's N on validation parts only (never test), on every data set.

For each data set, the train part is split 90/10 (seeded by ``--carve-seed``): the 90 % trains,
the 10 % early-stops and calibrates; the data set's validation part scores the raw predictions
(AUC, log loss). ``frappe`` uses its protocol's train and validation parts; ``synthetic:PATH``
the first ``--train-rows`` impressions of the log and the next ``--valid-rows`` (the split in
time of ``bench_ctr.py --synthetic``, whose test rows come after and are never read here).

The members of an ``ensemble: N`` fit from seed ``s`` are the networks of seeds
``s, ..., s + N - 1``, each trained exactly as a single model (``NeuralCTRRanker._fit``), so
the first ``n`` members of one ``ensemble: max(N)`` fit *are* the ``ensemble: n`` fit from the
same seed. Each (model, seed) is therefore fitted once with the largest N, and every smaller
N is scored on that fit's first ``n`` members through the ranker's own ``predict_raw`` (the
sigmoid of the members' mean logit). The fit time printed for ``n`` is the time of those
``n`` members (each member's training is timed). Use seeds ``--sizes`` apart (the default
``0,5`` for N up to 5) so that the replicates share no member.

Run::

    PRIVRANK_DATA_DIR=/work/shared/data PYTHONPATH=src .venv/bin/python \
        bench/bench_ctr_ensemble_select.py --data frappe,synthetic:/tmp/ctr5_synth1m \
        --models fm,dcn-v2 --sizes 1,3,5 --seeds 0,5 --out select_ensemble.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench_ctr_select import load  # (train, validation) of a named data set
from privrank.metrics.ctr import auc, log_loss
from privrank.models import FitOptions
from privrank.ranking.ctr import create_ranker
from privrank.ranking.ctr import neural as neural_module


class _MemberClock:
    """Wraps ``train_network`` to record each member's training seconds."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._inner = neural_module.train_network

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        self._inner(*args, **kwargs)
        self.seconds.append(time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="frappe")
    parser.add_argument("--models", default="fm,dcn-v2")
    parser.add_argument("--sizes", default="1,3,5")
    parser.add_argument("--seeds", default="0,5")
    parser.add_argument("--params", default="{}", help="JSON: model -> parameters")
    parser.add_argument("--train-rows", type=int, default=200_000)
    parser.add_argument("--valid-rows", type=int, default=50_000)
    parser.add_argument("--carve-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    overrides = json.loads(args.params)
    rows: list[dict[str, Any]] = []
    for data in args.data.split(","):
        train, valid = load(data, args.train_rows, args.valid_rows)
        order = np.random.default_rng(args.carve_seed).permutation(len(train))
        cut = int(0.9 * len(train))
        inner, carve = train.take(np.sort(order[:cut])), train.take(np.sort(order[cut:]))
        print(f"{data}: inner {len(inner)} carve {len(carve)} validation {len(valid)}", flush=True)
        y = valid.labels
        for model in args.models.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                params = {**overrides.get(model, {}), "ensemble": sizes[-1]}
                ranker = create_ranker(model, params)
                clock = _MemberClock()
                neural_module.train_network = clock  # type: ignore[assignment]
                try:
                    ranker.fit(inner, carve, FitOptions(seed=seed, threads=args.threads))
                finally:
                    neural_module.train_network = clock._inner
                members = list(ranker.members_)  # type: ignore[attr-defined]
                for n in sizes:
                    ranker.members_ = members[:n]  # type: ignore[attr-defined]
                    ranker.network_ = members[0]  # type: ignore[attr-defined]
                    p = ranker.predict_raw(valid)
                    row = {
                        "data": data,
                        "model": model,
                        "seed": seed,
                        "ensemble": n,
                        "val_auc": auc(y, p),
                        "val_log_loss": log_loss(y, p),
                        "fit_s": sum(clock.seconds[:n]),
                        "member_fit_s": clock.seconds[:n],
                    }
                    rows.append(row)
                    print(
                        f"{data} {model} seed={seed} ensemble={n} validation AUC="
                        f"{row['val_auc']:.4f} LL={row['val_log_loss']:.4f} "
                        f"fit_s={row['fit_s']:.1f}",
                        flush=True,
                    )
                ranker.members_ = members  # type: ignore[attr-defined]
                if args.out is not None:
                    _write(args, rows)
    return 0


def _write(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "command": " ".join(sys.argv),
                "platform": platform.platform(),
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    sys.exit(main())

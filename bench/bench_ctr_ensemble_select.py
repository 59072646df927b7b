"""Choose the seed ensemble's N on frappe's validation part (never test).

The protocol's train part is split 90/10 (seeded): the 90 % trains, the 10 % early-stops and
calibrates; the protocol's validation part scores the raw predictions (AUC). Models fm and
dcn-v2 at their defaults, training seeds 0 and 1, N in {1, 3, 5}.

Run::

    PRIVRANK_DATA_DIR=/work/shared/data PYTHONPATH=src .venv/bin/python \
        bench/bench_ctr_ensemble_select.py
"""

import time

import numpy as np

from privrank.metrics.ctr import auc
from privrank.models import FitOptions
from privrank.ranking.ctr import create_ranker
from privrank.workflow.ctr_protocols import CTR_PROTOCOLS, prepare_ctr


def main() -> None:
    """Print the validation AUC and fit time of every (model, seed, N)."""
    p = prepare_ctr(CTR_PROTOCOLS["frappe"])
    n = len(p.train)
    idx = np.random.default_rng(0).permutation(n)
    cut = int(0.9 * n)
    inner, carve = p.train.take(np.sort(idx[:cut])), p.train.take(np.sort(idx[cut:]))
    print("rows", n, flush=True)
    for model in ("fm", "dcn-v2"):
        for seed in (0, 1):
            for n_members in (1, 3, 5):
                t = time.perf_counter()
                ranker = create_ranker(model, {"ensemble": n_members})
                ranker.fit(inner, carve, FitOptions(seed=seed, threads=1))
                a = auc(p.validation.labels, ranker.predict_raw(p.validation))
                elapsed = time.perf_counter() - t
                print(
                    f"{model} seed={seed} ensemble={n_members} validation AUC={a:.4f} "
                    f"fit_s={elapsed:.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()

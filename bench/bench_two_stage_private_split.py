"""How a private two-stage at its default retrievers splits its budget, for each test shape.

Fits the private two-stage (``{"ranker": "listwise"}``, the default retrievers of the test shape,
ε 3) on a synthetic log of 150 users and prints the resolved retrievers, the split (``calibrated``
when every retriever states its releases in advance, else ``basic``), its scale and the PLD ε of
the releases composed (the requested ε when calibrated).

Usage::

    PRIVRANK_DATA_DIR=/work/shared/data .venv/bin/python bench/bench_two_stage_private_split.py
"""

from __future__ import annotations

import time

import privrank.ranking  # noqa: F401  (registers two-stage)
from privrank.models import FitOptions, create_model
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions

CONFIG = {
    "candidates": 15,
    "ranker": "listwise",
    "ranker_params": {"epochs": 2, "hidden": [8], "private": {"batch_size": 16}},
}


def main() -> None:
    data = synthetic_interactions(150, 40, per_user=8, seed=2)
    spec = PrivacySpec(epsilon=3.0, max_interactions_per_user=12, noise_seed=1)
    for shape in ("next", "random"):
        started = time.perf_counter()
        model = create_model("two-stage", CONFIG)
        model.fit(data, FitOptions(threads=1, privacy=spec, test_shape=shape))
        info = model.training_info_["private"]
        retrievers = [(r.name, r.recent) for r in model.config.retrievers]
        print(
            f"{shape}: retrievers {retrievers}, carve {model.config.carve}; "
            f"split {info['split']} (scale {info['split_scale']:.3f}), "
            f"{info['retriever_fits']} retriever fits, PLD epsilon {info['pld_epsilon']:.4f} "
            f"of {spec.epsilon}; {time.perf_counter() - started:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()

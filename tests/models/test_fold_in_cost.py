"""Fold-in cost: every registered model folds in a leave-one-out test set in time proportional
to its size, at a per-user cost that is not absurd.

Issue 16: BPR's fold-in took about 6 s per Amazon Beauty user (one pass over the catalogue per
positive, for each of 100 Adam steps), so a leave-one-out evaluation would have taken a day.
This module fits each registered model briefly (training-length settings only: every fold-in
setting keeps its default) on synthetic data with 1,000 items, and scores the test-time
histories (each user's items but the last, in time order) of ``n`` and ``4n`` new users as
ad-hoc history queries, which is what a leave-one-out protocol evaluates. Times are this
process's CPU seconds with torch and BLAS on one thread (less disturbed by other processes on a
shared machine than wall time), the median of a few alternating runs after a warm-up.

Bounds, both generous:

- **Proportional:** ``t(4n) <= 8 t(n) + 0.1 s`` (linear is ``4 t(n)``; quadratic, ``16``).
- **Per user:** at most 15 ms of CPU per test-time history of 29 items, with 1,000 items in
  the catalogue. Measured on a loaded 2-core machine: BPR 3 to 4.5 ms (its fold-in before
  issue 16: 65 ms, one pass over the catalogue per positive and step), every other model
  0.2 ms or less.

A model that cannot fold in (implicit's BPR) must refuse, which the conformance suite checks.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import threadpoolctl
import torch

import privrank.ranking  # noqa: F401  (registers "two-stage", as the CLI's import does)
from privrank.data.interactions import Interactions
from privrank.models import FitOptions, Query, Recommender, create_model, model_names
from privrank.testing import synthetic_interactions, write_group_item_text

N_ITEMS = 1_000
HISTORY = 30  # items per user; the test-time history holds all but the last
USERS = 16  # n; the larger test set has 4n
REPEATS = 3
RATIO, SLACK_S = 8.0, 0.1
PER_USER_LIMIT_S = 0.015
_TEXT_DIR = Path(tempfile.mkdtemp(prefix="privrank-item-text-"))

# Settings that shorten training only; fold-in settings (steps, negatives, ...) stay default.
BRIEF_FITS: dict[str, dict[str, Any]] = {
    "most-popular": {},
    "ldp-popular": {"m": 64, "k": 16},
    "itemknn": {},
    "content-knn": {"item_text": str(write_group_item_text(_TEXT_DIR / "items.tsv", N_ITEMS))},
    "genre-profile": {"item_text": str(_TEXT_DIR / "items.tsv")},
    "ease": {},
    "ease-sparse": {},
    "ials": {"epochs": 1},
    "fedmf": {"epochs": 1},
    "implicit-als": {"iterations": 1},
    "implicit-bpr": {"iterations": 1},
    "bpr": {"epochs": 1},
    "mult-vae": {"epochs": 1},
    "sasrec": {"epochs": 1},
    "two-stage": {
        "retrievers": [{"name": "ease"}, {"name": "most-popular"}],
        "candidates": 50,
        "ranker_params": {"num_iterations": 20, "min_data_in_leaf": 5, "eval_at": [10]},
    },
}


@pytest.fixture(autouse=True, scope="module")
def _embedding_cache():
    """content-knn caches its embeddings: in a temporary folder, not the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIVRANK_CACHE_DIR", str(_TEXT_DIR / "cache"))
        yield


@pytest.fixture(scope="module")
def train() -> Interactions:
    return synthetic_interactions(n_users=150, n_items=N_ITEMS, per_user=HISTORY, seed=0)


@pytest.fixture(scope="module")
def test_histories() -> list[np.ndarray]:
    """Leave-one-out test-time histories of ``4n`` users the models never saw."""
    users = synthetic_interactions(n_users=4 * USERS + 1, n_items=N_ITEMS, per_user=HISTORY, seed=1)
    indptr, items = users.sequences()
    # The last user has no items (synthetic_interactions leaves one idle user).
    return [items[start : stop - 1] for start, stop in itertools.pairwise(indptr[:-1])]


@contextmanager
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpoolctl.threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(previous)


def cpu_seconds(model: Recommender, query: Query) -> float:
    started = time.process_time()
    model.score(query)
    return time.process_time() - started


def test_every_registered_model_has_a_brief_fit():
    assert sorted(BRIEF_FITS) == model_names(), "add the new model's brief fit to BRIEF_FITS"


@pytest.mark.parametrize("name", sorted(BRIEF_FITS))
def test_fold_in_time_is_proportional_to_the_test_set(name, train, test_histories):
    model = create_model(name, BRIEF_FITS[name]).fit(train, FitOptions(seed=0, threads=1))
    if not model.supports_fold_in:
        pytest.skip(f"{name} cannot fold in histories (it refuses them)")
    small, large = Query.histories(test_histories[:USERS]), Query.histories(test_histories)
    with one_thread():
        model.score(Query.histories(test_histories[:4]))  # warm-up (lazy imports, JIT, caches)
        times: dict[int, list[float]] = {len(small): [], len(large): []}
        for _ in range(REPEATS):
            for query in (small, large):
                times[len(query)].append(cpu_seconds(model, query))
    t_small = statistics.median(times[len(small)])
    t_large = statistics.median(times[len(large)])
    assert t_large <= RATIO * t_small + SLACK_S, (
        f"{name}: folding in {len(large)} histories took {t_large:.3f} s of CPU, "
        f"{len(small)} took {t_small:.3f} s: more than proportional"
    )
    per_user = t_large / len(large)
    assert per_user <= PER_USER_LIMIT_S, (
        f"{name}: {1000 * per_user:.1f} ms of CPU per history of {HISTORY - 1} items "
        f"({N_ITEMS} items in the catalogue); the bound is {1000 * PER_USER_LIMIT_S:.0f} ms"
    )

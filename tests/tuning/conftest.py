"""Shared data of the tuning tests: clustered users whose best model is learnable."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from privrank.data import Interactions
from privrank.tuning import carve_validation


def _clustered(seed: int = 0, users: int = 120, items: int = 60, clusters: int = 4) -> Interactions:
    """Users in clusters, each preferring its own block of items, plus popular noise."""
    rng = np.random.default_rng(seed)
    block = items // clusters
    rows_u, rows_i = [], []
    popularity = 1.0 / np.arange(1, items + 1)
    popularity /= popularity.sum()
    for user in range(users):
        cluster = user % clusters
        own = rng.choice(np.arange(cluster * block, (cluster + 1) * block), 8, replace=False)
        noise = rng.choice(items, 4, replace=False, p=popularity)
        picked = np.unique(np.concatenate([own, noise]))
        rows_u += [user] * len(picked)
        rows_i += picked.tolist()
    return Interactions.from_codes(np.asarray(rows_u), np.asarray(rows_i))


@pytest.fixture(scope="module")
def parts() -> tuple[Interactions, Interactions]:
    return carve_validation(_clustered(), fraction=0.25, seed=0)


@pytest.fixture
def clustered() -> Callable[..., Interactions]:
    """The generator itself, for tests that need other sizes or seeds."""
    return _clustered

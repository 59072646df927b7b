"""Small random train/test splits shared by the evaluator tests."""

from __future__ import annotations

import numpy as np
import pytest

from privrank.data.interactions import Interactions


def make_split(
    seed: int = 0, n_users: int = 120, n_items: int = 90, n_rows: int = 3000
) -> tuple[Interactions, Interactions]:
    """A random interaction log (with integer ratings) split 80/20 by row."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_rows)
    items = rng.integers(0, n_items, n_rows)
    values = rng.integers(1, 6, n_rows).astype(np.float32)
    data = Interactions.from_codes(users, items, n_users=n_users, n_items=n_items, values=values)
    in_train = rng.random(n_rows) < 0.8
    return data.take(in_train), data.take(~in_train)


@pytest.fixture
def split() -> tuple[Interactions, Interactions]:
    return make_split()


def tied_vector(n_items: int, seed: int, levels: int = 4) -> np.ndarray:
    """Few distinct values (many ties), a -0.0 beside 0.0, and some items at -inf."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(-1, levels, n_items).astype(np.float32)
    scores[rng.random(n_items) < 0.1] = -np.inf
    zeros = np.flatnonzero(scores == 0)
    scores[zeros[::2]] = -0.0
    return scores

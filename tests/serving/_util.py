"""Helpers shared by the serving tests."""

from __future__ import annotations

import numpy as np

from privrank.data import Interactions

N_USERS = 20
CLUSTER_A = list(range(100, 115))
CLUSTER_B = list(range(115, 130))


def cluster_interactions(seed: int = 0) -> Interactions:
    """Users u0-u9 interact with items 100-114, u10-u19 with items 115-129 (8 items each)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(N_USERS):
        pool = CLUSTER_A if user < N_USERS // 2 else CLUSTER_B
        for item in rng.choice(pool, size=8, replace=False):
            users.append(f"u{user}")
            items.append(int(item))
    return Interactions.from_columns(users, items)


def auth(key: str) -> dict[str, str]:
    """The request header carrying ``key``."""
    return {"Authorization": f"Bearer {key}"}

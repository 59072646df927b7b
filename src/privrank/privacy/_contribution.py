"""Contribution bounding by rows: keep each user's first ``cap`` rows."""

from __future__ import annotations

import numpy as np

from privrank.errors import ConfigError

__all__ = ["first_rows_per_user"]


def first_rows_per_user(user: np.ndarray, cap: int) -> np.ndarray:
    """Boolean mask keeping the first ``cap`` rows of every user, in row order.

    The choice depends only on the user's own rows' order, never on other users' data.
    """
    if isinstance(cap, bool) or not isinstance(cap, int | np.integer) or cap < 1:
        raise ConfigError(f"first_rows_per_user: cap must be an integer >= 1. Got {cap!r}")
    user = np.asarray(user)
    order = np.argsort(user, kind="stable")
    sorted_users = user[order]
    starts = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1]
    run = np.arange(user.size) - np.repeat(starts, np.diff(np.r_[starts, user.size]))
    keep = np.empty(user.size, dtype=bool)
    keep[order] = run < cap
    return keep

"""Small data sets with known structure for model tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from privrank.data.interactions import Interactions

__all__ = ["checkerboard", "synthetic_interactions", "write_group_item_text"]

_GROUP_GENRES = ("Comedy", "Horror", "Western", "Documentary", "Musical")


def synthetic_interactions(
    n_users: int = 60,
    n_items: int = 40,
    *,
    n_clusters: int = 3,
    per_user: int = 8,
    affinity: float = 0.85,
    seed: int = 0,
) -> Interactions:
    """Clustered implicit feedback with string ids, timestamps and deliberate gaps.

    Users and items are split into ``n_clusters`` groups; each user draws ``per_user`` distinct
    items, a fraction ``affinity`` of them from their own group (so there is structure to
    learn), the rest anywhere. The last user has no interactions and the last item is never
    interacted with, so the vocabulary holds a known-but-empty user and an unused item. Ids are
    strings (``"u007"``, ``"i012"``) in code order; timestamps are distinct and random.

    Returns:
        ``Interactions`` with ``n_users`` users and ``n_items`` items in its vocabulary.
    """
    active_users, active_items = n_users - 1, n_items - 1
    if active_users < 1 or not 1 <= per_user <= active_items or n_clusters < 1:
        raise ValueError(
            f"need n_users >= 2, n_clusters >= 1 and 1 <= per_user <= n_items - 1; got "
            f"n_users={n_users}, n_items={n_items}, per_user={per_user}, n_clusters={n_clusters}"
        )
    rng = np.random.default_rng(seed)
    user_group = np.arange(active_users) % n_clusters
    item_group = np.arange(active_items) % n_clusters
    users, items = [], []
    for user in range(active_users):
        own = np.flatnonzero(item_group == user_group[user])
        n_own = min(len(own), round(per_user * affinity))
        chosen = set(rng.choice(own, size=n_own, replace=False).tolist())
        while len(chosen) < per_user:
            chosen.add(int(rng.integers(active_items)))
        for item in sorted(chosen):
            users.append(user)
            items.append(item)
    users_arr = np.asarray(users, dtype=np.int32)
    items_arr = np.asarray(items, dtype=np.int32)
    timestamps = rng.permutation(len(users_arr)).astype(np.int64) + 1_000_000
    table = pa.table({"user": users_arr, "item": items_arr, "timestamp": timestamps})
    width = len(str(max(n_users, n_items)))
    user_ids = pa.array([f"u{c:0{width}d}" for c in range(n_users)])
    item_ids = pa.array([f"i{c:0{width}d}" for c in range(n_items)])
    return Interactions(table, user_ids, item_ids)


def checkerboard(size: int = 50) -> Interactions:
    """implicit's known-answer data: even users like even items, odd users odd items, except
    that user ``u`` has not seen item ``u``.

    Every other user of ``u``'s parity likes item ``u``, so a collaborative model's best unseen
    item for user ``u`` is ``u`` itself.
    """
    users, items = [], []
    for user in range(size):
        for item in range(user % 2, size, 2):
            if item != user:
                users.append(user)
                items.append(item)
    return Interactions.from_codes(np.asarray(users), np.asarray(items), n_users=size, n_items=size)


def write_group_item_text(path: Path, n_items: int = 100, n_clusters: int = 3) -> Path:
    """An item-text TSV file whose text follows the groups of the data above.

    Items of :func:`synthetic_interactions` (ids ``i00``, ``i000`` or ``i0000`` ..., group
    ``code % n_clusters``) and of :func:`checkerboard` (integer ids, group ``id % 2``) get the
    title ``"<genre> picture"`` and the genre of their group, so items of one group share one
    text and a content model finds the same structure a collaborative one does.
    """
    lines = ["item\ttitle\tgenres"]
    for width in (2, 3, 4):  # synthetic ids have as many digits as n_items
        for code in range(min(n_items, 10**width)):
            genre = _GROUP_GENRES[code % n_clusters]
            lines.append(f"i{code:0{width}d}\t{genre} picture\t{genre}")
    for code in range(n_items):
        parity = _GROUP_GENRES[code % 2]
        lines.append(f"{code}\t{parity} picture\t{parity}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path

"""Curation: the steps that turn raw interaction logs into a clean dataset.

Each step is a function ``Interactions -> Interactions`` that only removes (or, for duplicate
summing, merges) rows and appends a :class:`~privrank.data.interactions.CurationStep` to the
metadata recording its parameters, the row counts before and after, and what it removed: every
step's details include ``users_removed`` and ``items_removed`` (ids that had rows before the step
and have none after), plus step-specific counts (iterations, capped users, ...). Steps keep the
id maps: codes stay those of the input, so every step's
details are in one vocabulary. Kept rows stay in their original order.

:func:`curate` applies the steps a :class:`CurationConfig` switches on, in this fixed order:

1. ``time_window`` — the population is the rows inside ``[start, end)``;
2. ``duplicates`` — repeated (user, item) pairs are resolved before anything counts them
   (``sum`` aggregates values before they are thresholded);
3. ``threshold`` — implicit feedback: rows with value ≥ ``min_value``, optionally binarised;
4. ``k_core`` — iterated to a fixed point on the positive interactions;
5. ``min_per_user`` — one pass;
6. ``max_per_user`` — the contribution bound differential privacy relies on. It comes last so
   the cap chooses among fully curated rows and no later step can change a user's row count;
7. ``compact`` (on by default) — drop ids with no rows left and re-densify codes, so that
   models see dense codes. It is recorded as a step too, since it changes the codes.

Steps 5 and 6 remove rows after the k-core, so they can leave items below the k-core's item
threshold; the config refuses combinations that cannot hold together (a cap below the minimum).

Privacy note: only ``max_per_user`` is a per-user operation. ``k_core`` and
``min_per_user`` decide on data across users and are dataset preprocessing outside any
differential-privacy guarantee made later on the curated data.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from privrank.data._config import FrozenConfig
from privrank.data._ordering import PURPOSE_CAP, random_keys, rank_within_user
from privrank.data.interactions import CurationStep, Interactions
from privrank.errors import ConfigError

__all__ = [
    "CurationConfig",
    "DuplicatePolicy",
    "KCore",
    "MaxPerUser",
    "Threshold",
    "TimeWindow",
    "cap_keep_mask",
    "compact",
    "curate",
    "deduplicate",
    "k_core",
    "max_per_user",
    "min_per_user",
    "threshold",
    "time_window",
]

DuplicatePolicy = Literal["keep", "first", "last", "sum"]


# ------------------------------------------------------------------------ step configs
class TimeWindow(FrozenConfig):
    """Keep rows with ``start <= timestamp < end`` (either bound may be open, not both)."""

    start: int | None = None
    end: int | None = None

    @model_validator(mode="after")
    def _bounds(self) -> TimeWindow:
        if self.start is None and self.end is None:
            raise ValueError("at least one of start and end must be set")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be before end ({self.end})")
        return self


class Threshold(FrozenConfig):
    """Implicit feedback: keep rows with ``value >= min_value``; ``binarize`` drops the values."""

    min_value: float | None = None
    binarize: bool = False

    @model_validator(mode="after")
    def _something(self) -> Threshold:
        if self.min_value is None and not self.binarize:
            raise ValueError("set min_value, binarize, or both")
        if self.min_value is not None and np.isnan(self.min_value):
            raise ValueError("min_value must not be NaN")
        return self


class KCore(FrozenConfig):
    """Every remaining user has ≥ ``user_k`` rows and every remaining item ≥ ``item_k`` rows."""

    user_k: int = Field(ge=1)
    item_k: int = Field(ge=1)


class MaxPerUser(FrozenConfig):
    """Keep at most ``n`` rows per user.

    Attributes:
        n: The cap (the per-user contribution bound).
        strategy: ``most_recent``: the latest ``n`` rows by timestamp, ties (and data without
            timestamps) by row position, later rows first. ``uniform``: a uniform random subset
            of ``n`` rows without replacement, chosen by ``seed``.
        seed: Seed of the ``uniform`` choice (ignored by ``most_recent``).
    """

    n: int = Field(ge=1)
    strategy: Literal["most_recent", "uniform"] = "most_recent"
    seed: int = Field(default=0, ge=0, lt=2**64)


class CurationConfig(FrozenConfig):
    """Which curation steps to apply; :func:`curate` applies them in the module's fixed order.

    Attributes:
        time_window: Keep rows in ``[start, end)``; off when ``None``.
        duplicates: Policy for repeated (user, item) pairs; ``keep`` (default) does nothing.
        threshold: Implicit-feedback thresholding; off when ``None``.
        k_core: Iterated k-core filter; off when ``None``.
        min_per_user: Drop users with fewer rows; off when ``None``.
        max_per_user: The contribution bound; off when ``None``.
        compact: Re-densify codes at the end (default ``True``).
    """

    time_window: TimeWindow | None = None
    duplicates: DuplicatePolicy = "keep"
    threshold: Threshold | None = None
    k_core: KCore | None = None
    min_per_user: int | None = Field(default=None, ge=1)
    max_per_user: MaxPerUser | None = None
    compact: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> CurationConfig:
        cap = self.max_per_user.n if self.max_per_user is not None else None
        if cap is not None and self.min_per_user is not None and cap < self.min_per_user:
            raise ValueError(
                f"max_per_user.n ({cap}) is below min_per_user ({self.min_per_user}): "
                "no user could satisfy both"
            )
        if cap is not None and self.k_core is not None and cap < self.k_core.user_k:
            raise ValueError(
                f"max_per_user.n ({cap}) is below k_core.user_k ({self.k_core.user_k}): "
                "no user could satisfy both"
            )
        return self


# ------------------------------------------------------------------------ the pipeline
def curate(data: Interactions, config: CurationConfig) -> Interactions:
    """Apply the configured steps in the fixed order documented in the module docstring.

    Steps that are off are neither applied nor recorded.

    Args:
        data: The dataset to curate.
        config: Which steps to apply.

    Returns:
        The curated dataset; its metadata lists every applied step. Codes are dense when
        ``config.compact`` is true.
    """
    if config.time_window is not None:
        data = time_window(data, config.time_window.start, config.time_window.end)
    if config.duplicates != "keep":
        data = deduplicate(data, config.duplicates)
    if config.threshold is not None:
        data = threshold(data, config.threshold.min_value, binarize=config.threshold.binarize)
    if config.k_core is not None:
        data = k_core(data, config.k_core.user_k, config.k_core.item_k)
    if config.min_per_user is not None:
        data = min_per_user(data, config.min_per_user)
    if config.max_per_user is not None:
        cap = config.max_per_user
        data = max_per_user(data, cap.n, strategy=cap.strategy, seed=cap.seed)
    if config.compact:
        data = compact(data)
    return data


# ------------------------------------------------------------------------ the steps
def time_window(
    data: Interactions, start: int | None = None, end: int | None = None
) -> Interactions:
    """Keep rows with ``start <= timestamp < end``.

    Args:
        data: A dataset with timestamps.
        start: Inclusive lower bound (seconds since the epoch), or ``None`` for open.
        end: Exclusive upper bound, or ``None`` for open.

    Returns:
        The rows inside the window; details count the rows before and after the window.

    Raises:
        ConfigError: Both bounds open, ``start >= end``, or the data has no timestamps.
    """
    window = TimeWindow(start=start, end=end)
    timestamps = _require_timestamps(data, "time_window")
    early = timestamps < window.start if window.start is not None else np.zeros(len(data), bool)
    late = timestamps >= window.end if window.end is not None else np.zeros(len(data), bool)
    keep = ~(early | late)
    details = {
        "rows_before_start": int(np.count_nonzero(early)),
        "rows_at_or_after_end": int(np.count_nonzero(late)),
    }
    return _filtered(data, keep, "time_window", window.model_dump(), details)


def deduplicate(data: Interactions, policy: DuplicatePolicy) -> Interactions:
    """Resolve repeated (user, item) pairs.

    Within a pair, rows are ordered by timestamp (when present), then by position.

    - ``keep``: nothing changes (the step still records how many duplicates there are);
    - ``first``: the earliest row of each pair is kept;
    - ``last``: the latest row of each pair is kept;
    - ``sum``: the latest row is kept with its value replaced by the sum of the pair's values,
      computed in float64 and stored as float32. Data without values gets a ``value`` column
      holding the number of rows of each pair (a count of repeated clicks).

    Args:
        data: The dataset.
        policy: One of ``keep``, ``first``, ``last``, ``sum``.

    Returns:
        One row per (user, item) pair (all rows for ``keep``), in original order; details give
        ``duplicate_rows`` (rows beyond the first of their pair) and ``duplicate_pairs``.
    """
    if policy not in ("keep", "first", "last", "sum"):
        raise ConfigError(
            f"deduplicate.policy: got {policy!r}; expected one of 'keep', 'first', 'last', 'sum'"
        )
    pair = data.users().astype(np.int64) * max(data.n_items, 1) + data.items()
    timestamps = data.timestamps()
    order = (
        np.lexsort((timestamps, pair))
        if timestamps is not None
        else np.argsort(pair, kind="stable")
    )
    sorted_pair = pair[order]
    boundary = sorted_pair[1:] != sorted_pair[:-1]
    starts = np.concatenate(([True], boundary)) if len(data) else np.zeros(0, dtype=bool)
    ends = np.concatenate((boundary, [True])) if len(data) else np.zeros(0, dtype=bool)
    sizes = np.diff(np.flatnonzero(np.concatenate((starts, [True]))))
    details = {
        "duplicate_rows": int(len(data) - np.count_nonzero(starts)),
        "duplicate_pairs": int(np.count_nonzero(sizes > 1)),
    }
    params = {"policy": policy}
    if policy == "keep":
        return _filtered(data, np.ones(len(data), dtype=bool), "deduplicate", params, details)
    if policy in ("first", "last"):
        keep = np.zeros(len(data), dtype=bool)
        keep[order[starts if policy == "first" else ends]] = True
        return _filtered(data, keep, "deduplicate", params, details)
    # sum: the latest row of each pair carries the pair's total.
    values = data.values()
    weights = values.astype(np.float64) if values is not None else np.ones(len(data))
    totals = np.add.reduceat(weights[order], np.flatnonzero(starts)) if len(data) else weights
    total_of_row = np.zeros(len(data), dtype=np.float64)
    keep = np.zeros(len(data), dtype=bool)
    total_of_row[order[ends]] = totals
    keep[order[ends]] = True
    kept = np.flatnonzero(keep)
    totals = total_of_row[kept]
    out = data.take(kept)
    table = out.table
    column = pa.array(totals.astype(np.float32))
    if out.has_values:
        table = table.set_column(table.column_names.index("value"), "value", column)
    else:
        table = table.append_column("value", column)
    out = Interactions(table, out.user_ids, out.item_ids, out.metadata)
    details["values_added"] = values is None
    return _record(data, out, "deduplicate", params, details)


def threshold(
    data: Interactions, min_value: float | None = None, *, binarize: bool = False
) -> Interactions:
    """Implicit feedback: keep rows whose value is at least ``min_value``.

    Args:
        data: A dataset with a ``value`` column.
        min_value: Rows with ``value >= min_value`` are kept; ``None`` keeps every row.
        binarize: Drop the ``value`` column afterwards (every kept row is a positive).

    Returns:
        The kept rows; details give ``binarized``.

    Raises:
        ConfigError: Neither option set, or the data has no values.
    """
    config = Threshold(min_value=min_value, binarize=binarize)
    values = data.values()
    if values is None:
        raise ConfigError(
            f"threshold: dataset {data.metadata.name!r} has no value column; "
            "thresholding needs ratings or counts"
        )
    keep = values >= config.min_value if config.min_value is not None else np.ones(len(data), bool)
    out = data.take(keep)
    if config.binarize:
        table = out.table.drop_columns(["value"])
        out = Interactions(table, out.user_ids, out.item_ids, out.metadata)
    details = {"binarized": config.binarize}
    return _record(data, out, "threshold", config.model_dump(), details)


def k_core(data: Interactions, user_k: int, item_k: int) -> Interactions:
    """Iterated k-core: the largest subset in which users and items meet their thresholds.

    A round drops every row whose user has fewer than ``user_k`` rows or whose item has fewer
    than ``item_k`` rows (counts over the rows still present, duplicates included); rounds
    repeat until one removes nothing. The result is the unique maximal set of rows, induced
    by a set of users and a set of items, in which every user has ≥ ``user_k`` rows and every
    item ≥ ``item_k`` rows (possibly empty). Applying the step again changes nothing.

    Args:
        data: The dataset.
        user_k: Minimum rows per remaining user (≥ 1).
        item_k: Minimum rows per remaining item (≥ 1).

    Returns:
        The core; details give ``iterations`` (rounds that removed rows).
    """
    config = KCore(user_k=user_k, item_k=item_k)
    rows = np.arange(len(data), dtype=np.int64)
    users, items = data.users(), data.items()
    iterations = 0
    while len(rows):
        user_counts = np.bincount(users, minlength=data.n_users)
        item_counts = np.bincount(items, minlength=data.n_items)
        ok = (user_counts[users] >= config.user_k) & (item_counts[items] >= config.item_k)
        if ok.all():
            break
        rows, users, items = rows[ok], users[ok], items[ok]
        iterations += 1
    out = data.take(rows)
    details = {"iterations": iterations}
    return _record(data, out, "k_core", config.model_dump(), details)


def min_per_user(data: Interactions, n: int) -> Interactions:
    """Drop users with fewer than ``n`` rows (one pass; items are not re-checked).

    Returns:
        The rows of users with at least ``n`` rows.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"min_per_user.n: got {n!r}; expected an integer ≥ 1")
    counts = data.user_counts()
    keep = counts[data.users()] >= n
    return _filtered(data, keep, "min_per_user", {"n": int(n)}, {})


def max_per_user(
    data: Interactions,
    n: int,
    *,
    strategy: Literal["most_recent", "uniform"] = "most_recent",
    seed: int = 0,
) -> Interactions:
    """Keep at most ``n`` rows per user: the per-user contribution bound.

    ``most_recent`` keeps each user's latest ``n`` rows, ordered by timestamp and then by row
    position (without timestamps: the last ``n`` rows in file order). ``uniform`` keeps a
    uniform random subset of ``n`` rows without replacement: each row gets a key that is a
    pure function of ``(seed, user code, rank of the row in the user's time-then-position
    order)`` (see ``privrank.data._ordering``), and the ``n`` smallest keys are kept. The
    choice is therefore the same for the same seed, and no other user's rows (or their order
    in the file) can change it.

    Args:
        data: The dataset.
        n: The cap (≥ 1).
        strategy: ``most_recent`` or ``uniform``.
        seed: Seed of the ``uniform`` choice.

    Returns:
        At most ``n`` rows per user, in original order; details give ``users_capped`` (users
        that had more than ``n`` rows) and ``max_rows_per_user`` after the step.
    """
    config = MaxPerUser(n=n, strategy=strategy, seed=seed)
    counts = data.user_counts()
    users_capped = int(np.count_nonzero(counts > config.n))
    keep = cap_keep_mask(data, config)
    details = {
        "users_capped": users_capped,
        "max_rows_per_user": int(np.minimum(counts, config.n).max(initial=0)),
    }
    params = config.model_dump()
    if config.strategy == "most_recent":
        params.pop("seed")
    return _filtered(data, keep, "max_per_user", params, details)


def cap_keep_mask(data: Interactions, config: MaxPerUser) -> np.ndarray:
    """The rows :func:`max_per_user` keeps, as a boolean mask over ``data``'s rows.

    A user's choice depends only on that user's rows (in time-then-position order), its code
    and the seed, so the mask of a subset of whole users, in the same relative order and with
    the same codes, is the restriction of the full mask (the Ray Data engine relies on it).
    """
    counts = data.user_counts()
    if not np.any(counts > config.n):
        return np.ones(len(data), dtype=bool)
    order = data.sorted_order()
    users_sorted = data.users()[order]
    rank = rank_within_user(users_sorted, counts)
    if config.strategy == "most_recent":
        selected = counts[users_sorted] - 1 - rank < config.n
    else:
        keys = random_keys(config.seed, PURPOSE_CAP, users_sorted, rank)
        by_key = np.lexsort((keys, users_sorted))
        selected = np.zeros(len(data), dtype=bool)
        selected[by_key] = rank_within_user(users_sorted[by_key], counts) < config.n
    keep = np.zeros(len(data), dtype=bool)
    keep[order[selected]] = True
    return keep


def compact(data: Interactions) -> Interactions:
    """Drop ids with no rows and re-densify codes (the order of ids is kept).

    Returns:
        The same rows with dense codes; details give ``users_dropped`` and ``items_dropped``
        (ids removed from the vocabularies).
    """
    out = data.compact()
    details = {
        "users_dropped": data.n_users - out.n_users,
        "items_dropped": data.n_items - out.n_items,
    }
    return _record(data, out, "compact", {}, details)


# ------------------------------------------------------------------------ helpers
def _require_timestamps(data: Interactions, step: str) -> np.ndarray:
    timestamps = data.timestamps()
    if timestamps is None:
        raise ConfigError(
            f"{step}: dataset {data.metadata.name!r} has no timestamp column; "
            f"{step} needs timestamps"
        )
    return timestamps


def _removed_ids(before: Interactions, after: Interactions) -> dict[str, int]:
    return {
        "users_removed": before.n_active_users() - after.n_active_users(),
        "items_removed": before.n_active_items() - after.n_active_items(),
    }


def _filtered(
    data: Interactions,
    keep: np.ndarray,
    name: str,
    params: dict[str, Any],
    details: dict[str, Any],
) -> Interactions:
    out = data if keep.all() else data.take(keep)
    return _record(data, out, name, params, details)


def _record(
    before: Interactions,
    after: Interactions,
    name: str,
    params: dict[str, Any],
    details: dict[str, Any],
) -> Interactions:
    step = CurationStep(
        name=name,
        params=params,
        rows_before=len(before),
        rows_after=len(after),
        details=_removed_ids(before, after) | details,
    )
    return after.with_metadata(after.metadata.with_step(step))

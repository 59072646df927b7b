"""Summary statistics of an interaction data set, and their rich rendering.

:func:`dataset_stats` counts *active* users and items only (those with at least one row), so a
filtered data set that keeps its vocabulary reports what it actually holds; the vocabulary
sizes are reported beside them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rich.table import Table

from privrank.data.interactions import Interactions

__all__ = [
    "QUANTILES",
    "DatasetStats",
    "LengthQuantiles",
    "dataset_stats",
    "gini",
    "stats_table",
]

#: Quantile levels of the per-user and per-item length summaries (``min`` and ``max`` are 0, 1).
QUANTILES: tuple[tuple[str, float], ...] = (
    ("min", 0.0),
    ("p25", 0.25),
    ("p50", 0.5),
    ("p75", 0.75),
    ("p90", 0.9),
    ("p99", 0.99),
    ("max", 1.0),
)
#: Values with at most this many distinct numbers get an exact histogram; others get bins.
MAX_EXACT_VALUES = 32
_VALUE_BINS = 10


@dataclass(frozen=True)
class LengthQuantiles:
    """Quantiles of a number of rows per user (or per item), over active users (items).

    Computed with :func:`numpy.quantile`'s default (linear interpolation between order
    statistics), so ``min`` and ``max`` are exact and the others may fall between integers.
    """

    min: float
    p25: float
    p50: float
    p75: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, counts: np.ndarray) -> LengthQuantiles | None:
        """Quantiles of ``counts``; ``None`` when there are none."""
        if len(counts) == 0:
            return None
        values = np.quantile(counts, [q for _, q in QUANTILES])
        return cls(**{name: float(v) for (name, _), v in zip(QUANTILES, values, strict=True)})


@dataclass(frozen=True)
class DatasetStats:
    """What a data set holds.

    Attributes:
        name: The data set's name (from its metadata).
        users: Users with at least one row.
        items: Items with at least one row.
        interactions: Rows.
        user_vocabulary: Users in the vocabulary (including those without rows).
        item_vocabulary: Items in the vocabulary.
        distinct_pairs: Distinct (user, item) pairs (``interactions`` minus repeats).
        density: ``distinct_pairs / (users * items)``, the filled fraction of the active
            user-item matrix (``None`` when empty).
        gini_items: Gini coefficient of item popularity over active items (see :func:`gini`).
        user_lengths: Quantiles of rows per active user.
        item_lengths: Quantiles of rows per active item.
        value_histogram: ``(label, count)`` pairs: one per distinct value when there are at
            most :data:`MAX_EXACT_VALUES`, else 10 equal-width bins; ``None`` without values.
        value_mean: Mean value, or ``None``.
        time_first: Earliest timestamp (seconds since the epoch), or ``None``.
        time_last: Latest timestamp, or ``None``.
    """

    name: str
    users: int
    items: int
    interactions: int
    user_vocabulary: int
    item_vocabulary: int
    distinct_pairs: int
    density: float | None
    gini_items: float | None
    user_lengths: LengthQuantiles | None
    item_lengths: LengthQuantiles | None
    value_histogram: tuple[tuple[str, int], ...] | None = None
    value_mean: float | None = None
    time_first: int | None = None
    time_last: int | None = None

    @property
    def time_span_days(self) -> float | None:
        """Days between the first and the last timestamp."""
        if self.time_first is None or self.time_last is None:
            return None
        return (self.time_last - self.time_first) / 86_400

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (quantiles as nested dicts, histogram as a list of pairs)."""
        out = asdict(self)
        if self.value_histogram is not None:
            out["value_histogram"] = [[label, count] for label, count in self.value_histogram]
        out["time_span_days"] = self.time_span_days
        return out


def gini(counts: np.ndarray) -> float:
    r"""Gini coefficient of non-negative counts.

    With the counts sorted ascending, :math:`x_{(1)} \le \dots \le x_{(n)}`,

    .. math:: G = \frac{\sum_{i=1}^{n} (2i - n - 1)\, x_{(i)}}{n \sum_{i=1}^{n} x_{(i)}},

    which equals the mean absolute difference over twice the mean,
    :math:`\sum_i \sum_j |x_i - x_j| / (2 n^2 \bar{x})`: 0 when all counts are equal, and
    :math:`1 - 1/n` when one holds everything.

    Args:
        counts: Counts (any shape, flattened), not all zero.

    Returns:
        The coefficient in ``[0, 1)``.

    Raises:
        ValueError: ``counts`` is empty, negative or sums to zero.
    """
    x = np.sort(np.asarray(counts, dtype=np.float64).ravel())
    n = len(x)
    if n == 0 or x[0] < 0 or x.sum() <= 0:
        raise ValueError("the Gini coefficient needs non-negative counts with a positive sum")
    weights = 2.0 * np.arange(1, n + 1, dtype=np.float64) - n - 1.0
    return float(weights @ x / (n * x.sum()))


def dataset_stats(data: Interactions) -> DatasetStats:
    """Summarise ``data``: sizes, density, popularity concentration, lengths, values, time.

    Args:
        data: The interactions.

    Returns:
        The statistics; users and items count only those with at least one row.
    """
    user_counts = data.user_counts()
    item_counts = data.item_counts()
    active_users = user_counts[user_counts > 0]
    active_items = item_counts[item_counts > 0]
    n_rows = len(data)
    pairs = _distinct_pairs(data)
    cells = len(active_users) * len(active_items)

    histogram = mean = None
    if data.has_values and n_rows:
        values = data.table.column("value")
        histogram = _value_histogram(values)
        mean = float(pc.mean(values).as_py())
    first = last = None
    if data.has_timestamps and n_rows:
        low, high = pc.min_max(data.table.column("timestamp")).values()
        first, last = int(low.as_py()), int(high.as_py())

    return DatasetStats(
        name=data.metadata.name,
        users=len(active_users),
        items=len(active_items),
        interactions=n_rows,
        user_vocabulary=data.n_users,
        item_vocabulary=data.n_items,
        distinct_pairs=pairs,
        density=pairs / cells if cells else None,
        gini_items=gini(active_items) if len(active_items) else None,
        user_lengths=LengthQuantiles.of(active_users),
        item_lengths=LengthQuantiles.of(active_items),
        value_histogram=histogram,
        value_mean=mean,
        time_first=first,
        time_last=last,
    )


def stats_table(stats: DatasetStats) -> Table:
    """A two-column rich table of ``stats`` for the terminal (quantiles as a nested table)."""
    table = Table(title=f"Dataset {stats.name}", show_header=True, header_style="bold")
    table.add_column("statistic", style="cyan", no_wrap=True)
    table.add_column("value")
    table.add_row("users", _with_vocabulary(stats.users, stats.user_vocabulary))
    table.add_row("items", _with_vocabulary(stats.items, stats.item_vocabulary))
    table.add_row("interactions", f"{stats.interactions:,}")
    if stats.distinct_pairs != stats.interactions:
        table.add_row("distinct user-item pairs", f"{stats.distinct_pairs:,}")
    table.add_row("density", "—" if stats.density is None else f"{stats.density:.4%}")
    table.add_row(
        "Gini of item popularity", "—" if stats.gini_items is None else f"{stats.gini_items:.4f}"
    )
    table.add_row("rows per user", _quantiles_table(stats.user_lengths))
    table.add_row("rows per item", _quantiles_table(stats.item_lengths))
    if stats.value_histogram is not None:
        total = sum(count for _, count in stats.value_histogram) or 1
        text = "\n".join(
            f"{label}: {count:,} ({count / total:.1%})" for label, count in stats.value_histogram
        )
        table.add_row("values", text)
        table.add_row("mean value", f"{stats.value_mean:.4g}")
    if stats.time_first is not None and stats.time_last is not None:
        table.add_row(
            "time span",
            f"{_iso(stats.time_first)} .. {_iso(stats.time_last)} ({stats.time_span_days:,.1f} d)",
        )
    return table


# -------------------------------------------------------------------- helpers
def _distinct_pairs(data: Interactions) -> int:
    if len(data) == 0:
        return 0
    # Sorting beats hashing here (numpy's and Arrow's hash-based unique are several times slower
    # on tens of millions of keys), and data grouped by user are nearly sorted already.
    keys = data.users().astype(np.int64) * data.n_items + data.items()
    keys.sort()
    return int(np.count_nonzero(keys[1:] != keys[:-1])) + 1


def _value_histogram(values: pa.ChunkedArray) -> tuple[tuple[str, int], ...]:
    counted = pc.value_counts(values).flatten()
    distinct = counted[0].to_numpy(zero_copy_only=False)
    counts = counted[1].to_numpy(zero_copy_only=False)
    if len(distinct) <= MAX_EXACT_VALUES:
        order = np.argsort(distinct)
        return tuple((f"{distinct[i]:g}", int(counts[i])) for i in order)
    binned, edges = np.histogram(distinct, bins=_VALUE_BINS, weights=counts)
    return tuple(
        (f"[{edges[i]:.4g}, {edges[i + 1]:.4g}{']' if i == _VALUE_BINS - 1 else ')'}", int(c))
        for i, c in enumerate(binned)
    )


def _with_vocabulary(active: int, vocabulary: int) -> str:
    if active == vocabulary:
        return f"{active:,}"
    return f"{active:,} with rows (vocabulary {vocabulary:,})"


def _quantiles_table(quantiles: LengthQuantiles | None) -> Table | str:
    if quantiles is None:
        return "—"
    grid = Table(box=None, show_edge=False, pad_edge=False, header_style="dim")
    for name, _ in QUANTILES:
        grid.add_column(name, justify="right")
    grid.add_row(*(_number(getattr(quantiles, name)) for name, _ in QUANTILES))
    return grid


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d")

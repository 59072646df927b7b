"""Synthetic interaction logs with the shape of real ones, at any scale.

:func:`generate` draws a data set from a small generative model with the three properties that
matter for recommenders and for their benchmarks: power-law item popularity, latent user/item
clusters (so that collaborative filtering has structure to find), and time-ordered sessions from
users whose activity is itself heavy-tailed. :func:`write_ratings_csv` writes the MovieLens-20M
``ratings.csv`` layout, streaming, so that import benchmarks can be run on files of any size.

Generation is fully vectorised and proceeds in blocks of users: the memory needed beyond the
output columns is a few arrays of one block (about :data:`BLOCK_ROWS` rows). The output is a
function of the configuration (and of :data:`BLOCK_ROWS`, which sets the blocks: every block
has its own random stream spawned from ``seed``), not of how it is consumed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pydantic import BaseModel, ConfigDict, Field, model_validator

from privrank.atomic import atomic_file
from privrank.data.interactions import CurationStep, DatasetMetadata, Interactions
from privrank.errors import ConfigError

__all__ = [
    "BLOCK_ROWS",
    "RATINGS_CSV_HEADER",
    "SyntheticBlock",
    "SyntheticConfig",
    "SyntheticTruth",
    "generate",
    "ground_truth",
    "iter_blocks",
    "write_ratings_csv",
]

#: Target number of rows per block of users (sets the memory of one generation step).
BLOCK_ROWS = 1_000_000
#: Header of the MovieLens-20M ``ratings.csv`` layout.
RATINGS_CSV_HEADER = "userId,movieId,rating,timestamp"

_MAX_ROUNDS = 512  # rounds of redrawing repeated (user, item) pairs, at most
_EXACT_USERS = 32  # users with repeats left at which the exact fallback takes over
_CSV_CHUNK_ROWS = 1_000_000
_MAX_FORMATTED_VALUES = 4096

Progress = Callable[[int, int], None]


class SyntheticConfig(BaseModel):
    r"""Parameters of the synthetic interaction generator.

    The generative model, with :math:`U` users, :math:`I` items, :math:`K` clusters and
    :math:`N` interactions:

    **Items.** Item popularity ranks :math:`r = 1..I` have weights :math:`w_r = r^{-\alpha}`
    (Zipf, ``popularity_exponent`` :math:`= \alpha`); item codes are a uniformly random
    permutation of the ranks. Ranks are cut into consecutive strata of :math:`K` and each stratum
    deals one rank to every cluster in random order, so the :math:`s`-th most popular item of a
    cluster has global rank :math:`\approx sK` and popularity within every cluster is again a
    power law with exponent :math:`\alpha`. The mass of cluster :math:`c` is
    :math:`P(c) = \sum_{i \in c} w_i / \sum_i w_i`.

    **Users.** User :math:`u` belongs to cluster :math:`z_u \sim \mathrm{Categorical}(P)` and has
    a heavy-tailed activity :math:`a_u \sim \mathrm{LogNormal}(0, \sigma^2)`
    (``activity_sigma`` :math:`= \sigma`). Its number of interactions is
    :math:`n_u = m + \mathrm{Multinomial}(N - Um,\ a / \textstyle\sum a)_u` with
    :math:`m` = ``min_user_interactions``; counts above the cap (``max_user_interactions``, and
    :math:`I` when ``unique_pairs``) are cut to it and the excess is dealt again the same way
    among the users below it, so the total is exactly :math:`N`.

    **Interactions.** Each of the :math:`n_u` draws picks, with probability :math:`\rho`
    (``cluster_affinity``), an item of the user's cluster with probability
    :math:`\propto w_i` and otherwise an item of the whole catalogue with probability
    :math:`\propto w_i`. Because users are assigned to clusters in proportion to their mass, the
    marginal item distribution is exactly :math:`w`:
    :math:`\rho \sum_c P(c)\, w_i [i \in c] / P(c) + (1 - \rho) w_i = w_i`. With
    ``unique_pairs`` an item drawn twice by one user is redrawn from the same distribution (until
    only a few users have repeats left; those are completed exactly from the items they lack, by
    Gumbel top-k), i.e. each user's items are a successive sample without replacement (a user
    who needs more items than the mixture can give, e.g. with :math:`\rho = 1` and a small
    cluster, gets the rest uniformly from the other items). Sampling without replacement
    saturates the head: an item cannot be drawn by more than every user, so the observed
    rank-frequency curve is flatter than :math:`\alpha` at the top when histories are long
    relative to the catalogue (the draws themselves keep exponent :math:`\alpha`).

    **Sessions and time.** Each of a user's interactions after the first opens a new session
    with probability :math:`1/L` (``mean_session_length`` :math:`= L`), so session lengths are
    geometric with mean :math:`L` (truncated by the user's total). The gap before an
    interaction is :math:`\mathrm{Exp}` with mean :math:`g` (``within_session_gap``) inside a
    session and mean :math:`G` (``between_session_gap``) before a new session. The offsets
    :math:`o_j` (cumulative gaps, :math:`o_1 = 0`) span :math:`S_u = o_{n_u}`; a user whose span
    exceeds the time range :math:`T` = ``end_time - start_time`` is compressed by
    :math:`s_u = \min(1, T / S_u)`, and the user starts at
    :math:`t_u \sim \mathrm{Uniform}[t_\mathrm{start}, t_\mathrm{end} - s_u S_u]`. Timestamps
    are :math:`\lfloor t_u + s_u o_j \rfloor` (seconds), non-decreasing within each user.

    **Values.** A rating is drawn from ``rating_levels`` with probabilities
    ``rating_probs_in_cluster`` when the item belongs to the user's cluster and
    ``rating_probs_off_cluster`` otherwise (``rating_levels=None``: no values).

    Attributes:
        n_users: :math:`U`, users in the vocabulary.
        n_items: :math:`I`, items in the vocabulary.
        n_interactions: :math:`N`, rows generated (exactly).
        n_clusters: :math:`K`, latent clusters (``1 <= K <= I``).
        popularity_exponent: :math:`\alpha \ge 0` of the Zipf item popularity.
        cluster_affinity: :math:`\rho \in [0, 1]`, probability that a draw stays in the user's
            cluster.
        activity_sigma: :math:`\sigma \ge 0`, spread of the log-normal user activity (``0``:
            all users equally active; ``1.2`` gives MovieLens-20M's median/mean ratio of
            about 0.5, :math:`e^{-\sigma^2/2}`, and a max/mean of about 60 to 90 at 138 k users).
        min_user_interactions: :math:`m`, rows every user gets at least.
        max_user_interactions: Optional cap on rows per user.
        unique_pairs: No user interacts with the same item twice (as in ratings data).
        mean_session_length: :math:`L \ge 1`.
        within_session_gap: :math:`g`, mean seconds between interactions of a session.
        between_session_gap: :math:`G`, mean seconds between sessions.
        start_time: Start of the time range (naive datetimes are UTC).
        end_time: End of the time range.
        timestamps: Generate the ``timestamp`` column.
        rating_levels: Possible values (``None``: no ``value`` column).
        rating_probs_in_cluster: Probabilities of the levels for in-cluster items.
        rating_probs_off_cluster: Probabilities of the levels for other items.
        seed: Seed of all randomness; the output is a function of the configuration alone.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_users: int = Field(default=1000, ge=1, lt=2**31 - 1)
    n_items: int = Field(default=1000, ge=1, lt=2**31 - 1)
    n_interactions: int = Field(default=50_000, ge=0)
    n_clusters: int = Field(default=10, ge=1)
    popularity_exponent: float = Field(default=1.0, ge=0.0, le=10.0)
    cluster_affinity: float = Field(default=0.8, ge=0.0, le=1.0)
    activity_sigma: float = Field(default=1.2, ge=0.0, le=10.0)
    min_user_interactions: int = Field(default=1, ge=0)
    max_user_interactions: int | None = Field(default=None, ge=1)
    unique_pairs: bool = True
    mean_session_length: float = Field(default=5.0, ge=1.0)
    within_session_gap: float = Field(default=60.0, ge=0.0)
    between_session_gap: float = Field(default=3 * 86_400.0, ge=0.0)
    start_time: datetime = datetime(2010, 1, 1, tzinfo=UTC)
    end_time: datetime = datetime(2020, 1, 1, tzinfo=UTC)
    timestamps: bool = True
    rating_levels: tuple[float, ...] | None = (1.0, 2.0, 3.0, 4.0, 5.0)
    rating_probs_in_cluster: tuple[float, ...] = (0.03, 0.07, 0.22, 0.38, 0.30)
    rating_probs_off_cluster: tuple[float, ...] = (0.12, 0.20, 0.35, 0.23, 0.10)
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = []
        if self.n_clusters > self.n_items:
            problems.append(
                f"n_clusters must be <= n_items; got {self.n_clusters} > {self.n_items}"
            )
        if self.n_users * self.min_user_interactions > self.n_interactions:
            problems.append(
                f"n_interactions must be >= n_users * min_user_interactions "
                f"= {self.n_users * self.min_user_interactions}; got {self.n_interactions}"
            )
        cap = self.user_cap
        if cap is not None:
            if cap < self.min_user_interactions:
                problems.append(
                    f"the per-user cap ({cap}) must be >= min_user_interactions "
                    f"({self.min_user_interactions})"
                )
            elif self.n_users * cap < self.n_interactions:
                problems.append(
                    f"n_interactions must be <= n_users * per-user cap = {self.n_users * cap} "
                    f"(cap = max_user_interactions, or n_items when unique_pairs); "
                    f"got {self.n_interactions}"
                )
        if self.end_seconds <= self.start_seconds:
            problems.append(
                f"end_time must be after start_time; got {self.start_time} .. {self.end_time}"
            )
        if self.rating_levels is not None:
            k = len(self.rating_levels)
            if not 1 <= k <= 127:
                problems.append(
                    f"rating_levels must have 1 to 127 levels (None for no values); got {k}"
                )
            if not all(math.isfinite(v) for v in self.rating_levels):
                problems.append(f"rating_levels must be finite; got {self.rating_levels}")
            for name in ("rating_probs_in_cluster", "rating_probs_off_cluster"):
                probs = getattr(self, name)
                if len(probs) != k:
                    problems.append(f"{name} must have {k} entries (one per level); got {probs}")
                elif min(probs) < 0 or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
                    problems.append(f"{name} must be >= 0 and sum to 1; got {probs}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def user_cap(self) -> int | None:
        """The effective cap on rows per user (``None`` when uncapped)."""
        caps = [c for c in (self.max_user_interactions,) if c is not None]
        if self.unique_pairs:
            caps.append(self.n_items)
        return min(caps) if caps else None

    @property
    def start_seconds(self) -> int:
        """``start_time`` in seconds since the Unix epoch."""
        return _epoch(self.start_time)

    @property
    def end_seconds(self) -> int:
        """``end_time`` in seconds since the Unix epoch."""
        return _epoch(self.end_time)


@dataclass(frozen=True)
class SyntheticBlock:
    """The rows of one block of consecutive users, sorted by user then time.

    Attributes:
        start: Position of the block's first row in the whole data set.
        users: User codes (int32).
        items: Item codes (int32).
        timestamps: Seconds since the epoch (int64), or ``None``.
        values: Ratings (float32), or ``None``.
        value_levels: Index into ``rating_levels`` of each value (int8), or ``None``.
    """

    start: int
    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None
    values: np.ndarray | None
    value_levels: np.ndarray | None

    @property
    def stop(self) -> int:
        """Position after the block's last row."""
        return self.start + len(self.users)


@dataclass(frozen=True)
class SyntheticTruth:
    """The latent structure behind a generated data set (for tests and model diagnostics).

    Attributes:
        item_cluster: Cluster of each item code.
        item_popularity: Marginal probability :math:`w_i / \\sum w` of each item code.
        cluster_mass: :math:`P(c)`, the popularity mass of each cluster.
        user_cluster: :math:`z_u` of each user code.
        user_counts: :math:`n_u`, rows of each user code.
    """

    item_cluster: np.ndarray
    item_popularity: np.ndarray
    cluster_mass: np.ndarray
    user_cluster: np.ndarray
    user_counts: np.ndarray


def ground_truth(config: SyntheticConfig) -> SyntheticTruth:
    """The latent clusters, popularities and user lengths :func:`generate` uses for ``config``."""
    plan = _Plan.build(config, np.random.default_rng(_seeds(config)[0]))
    return SyntheticTruth(
        item_cluster=plan.item_cluster,
        item_popularity=plan.item_weight / plan.item_weight.sum(),
        cluster_mass=plan.cluster_mass,
        user_cluster=plan.user_cluster,
        user_counts=plan.user_counts,
    )


def generate(config: SyntheticConfig, *, progress: Progress | None = None) -> Interactions:
    """Draw a data set from the model described in :class:`SyntheticConfig`.

    The vocabularies always hold all ``n_users`` users and ``n_items`` items (external ids
    ``0..n-1``), including items nobody drew and, with ``min_user_interactions=0``, users with no
    rows: the catalogue exists whether or not it was consumed. Use
    :meth:`Interactions.compact` to drop them.

    Rows are sorted by user, then time. Peak memory is the output columns plus one block.

    Args:
        config: The generator's parameters.
        progress: Called as ``progress(rows_done, rows_total)`` after each block.

    Returns:
        The interactions, with a ``synthetic`` provenance step recording the configuration.
    """
    n = config.n_interactions
    users = np.empty(n, dtype=np.int32)
    items = np.empty(n, dtype=np.int32)
    timestamps = np.empty(n, dtype=np.int64) if config.timestamps else None
    values = np.empty(n, dtype=np.float32) if config.rating_levels is not None else None
    for block in iter_blocks(config, progress=progress):
        rows = slice(block.start, block.stop)
        users[rows] = block.users
        items[rows] = block.items
        if timestamps is not None:
            timestamps[rows] = _required(block.timestamps, "timestamps")
        if values is not None:
            values[rows] = _required(block.values, "values")
    metadata = DatasetMetadata(
        name=f"synthetic-seed{config.seed}",
        source_format="synthetic",
        source_rows=n,
        curation=(
            CurationStep(
                name="synthetic",
                params=config.model_dump(mode="json"),
                rows_before=0,
                rows_after=n,
            ),
        ),
    )
    return Interactions.from_codes(
        users,
        items,
        n_users=config.n_users,
        n_items=config.n_items,
        timestamps=timestamps,
        values=values,
        metadata=metadata,
    )


def iter_blocks(
    config: SyntheticConfig, *, progress: Progress | None = None
) -> Iterator[SyntheticBlock]:
    """Generate the data set block by block (consecutive users, about :data:`BLOCK_ROWS` rows).

    Concatenating the blocks gives exactly the rows of :func:`generate`.

    Args:
        config: The generator's parameters.
        progress: Called as ``progress(rows_done, rows_total)`` after each block.

    Yields:
        One :class:`SyntheticBlock` per block of users, in user order.
    """
    plan_seed, blocks_seed = _seeds(config)
    plan = _Plan.build(config, np.random.default_rng(plan_seed))
    n_total = config.n_interactions
    if progress is not None:
        progress(0, n_total)
    if n_total == 0:
        return
    per_block = max(1, math.ceil(BLOCK_ROWS * config.n_users / n_total))
    bounds = [*range(0, config.n_users, per_block), config.n_users]
    row_starts = np.zeros(config.n_users + 1, dtype=np.int64)
    np.cumsum(plan.user_counts, out=row_starts[1:])
    for (u0, u1), block_seed in zip(
        itertools.pairwise(bounds),
        blocks_seed.spawn(len(bounds) - 1),
        strict=True,
    ):
        block = _generate_block(config, plan, u0, u1, int(row_starts[u0]), block_seed)
        yield block
        if progress is not None:
            progress(block.stop, n_total)


def write_ratings_csv(
    data: Interactions | SyntheticConfig,
    path: str | Path,
    *,
    progress: Progress | None = None,
) -> int:
    """Write interactions in the MovieLens-20M ``ratings.csv`` layout, atomically.

    The file has the header ``userId,movieId,rating,timestamp`` and one row per interaction,
    with ``userId = user code + 1`` and ``movieId = item code + 1`` (1-based, as MovieLens);
    ratings as the shortest decimal that reads back as the same float32, with at least one
    decimal (``4.0``, ``3.5``), and timestamps in seconds. Chunks are written with
    :func:`pyarrow.csv.write_csv` into a temporary file that replaces ``path`` only once
    complete.

    Given a :class:`SyntheticConfig`, the data are generated and written block by block and never
    held in memory whole. A CSV file cannot hold users or items without rows: reading it back
    gives the active users and items only.

    Args:
        data: Interactions with timestamps and values, or a generator configuration.
        path: Destination file.
        progress: Called as ``progress(rows_written, rows_total)`` after each chunk.

    Returns:
        The number of data rows written.

    Raises:
        ConfigError: The data have no timestamps or no values.
    """
    if isinstance(data, SyntheticConfig):
        if not data.timestamps or data.rating_levels is None:
            raise ConfigError(
                "ratings.csv needs timestamps and ratings: set timestamps=True and rating_levels"
            )
        labels = pa.array([_format_rating(v) for v in data.rating_levels], type=pa.string())
        chunks: Iterator[tuple[int, pa.Table]] = (
            (
                b.stop,
                _csv_table(
                    b.users,
                    b.items,
                    pa.DictionaryArray.from_arrays(pa.array(b.value_levels), labels),
                    _required(b.timestamps, "timestamps"),
                ),
            )
            for b in iter_blocks(data)
        )
        total = data.n_interactions
    elif isinstance(data, Interactions):
        timestamps, values = data.timestamps(), data.values()
        if timestamps is None or values is None:
            raise ConfigError(
                "ratings.csv needs timestamps and values; these interactions have columns "
                f"{data.table.column_names}"
            )
        chunks = _interaction_chunks(data.users(), data.items(), timestamps, values)
        total = len(data)
    else:
        raise ConfigError(
            f"write_ratings_csv takes Interactions or a SyntheticConfig; got {type(data).__name__}"
        )
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    written = 0
    if progress is not None:
        progress(0, total)
    with atomic_file(path, "wb") as handle:
        handle.write((RATINGS_CSV_HEADER + "\n").encode())
        for stop, table in chunks:
            pacsv.write_csv(table, handle, write_options=options)
            written = stop
            if progress is not None:
                progress(written, total)
    return written


def _seeds(config: SyntheticConfig) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    """Independent streams for the global plan and for the blocks."""
    plan_seed, blocks_seed = np.random.SeedSequence(config.seed).spawn(2)
    return plan_seed, blocks_seed


# -------------------------------------------------------------------- the model's global state
@dataclass(frozen=True)
class _Plan:
    """Everything drawn once for the whole data set (items, clusters, per-user counts)."""

    item_cluster: np.ndarray  # cluster of each item code (int32)
    item_weight: np.ndarray  # popularity weight w of each item code (float64)
    sampler_cdf: np.ndarray  # K cluster segments then the global one, segment c in (c, c+1]
    sampler_items: np.ndarray  # item code at each position of sampler_cdf
    cluster_mass: np.ndarray  # P(c)
    user_cluster: np.ndarray  # z_u (int32)
    user_counts: np.ndarray  # n_u (int64)

    @classmethod
    def build(cls, config: SyntheticConfig, rng: np.random.Generator) -> _Plan:
        n_items, k = config.n_items, config.n_clusters
        rank_item = rng.permutation(n_items).astype(np.int32)
        strata = math.ceil(n_items / k)
        rank_cluster = np.argsort(rng.random((strata, k)), axis=1).ravel()[:n_items]
        rank_cluster = rank_cluster.astype(np.int32)
        weights = np.arange(1, n_items + 1, dtype=np.float64) ** -config.popularity_exponent

        item_cluster = np.empty(n_items, dtype=np.int32)
        item_cluster[rank_item] = rank_cluster
        item_weight = np.empty(n_items, dtype=np.float64)
        item_weight[rank_item] = weights

        # Cluster segments: ranks ordered by (cluster, rank); the cdf of segment c lies in
        # (c, c + 1], so one searchsorted of ``c + U(0, 1)`` samples within cluster c.
        by_cluster = np.argsort(rank_cluster, kind="stable")
        seg_cluster = rank_cluster[by_cluster]
        seg_weight = weights[by_cluster]
        mass = np.bincount(rank_cluster, weights=weights, minlength=k)
        seg_start = np.zeros(k, dtype=np.int64)
        np.cumsum(np.bincount(rank_cluster, minlength=k)[:-1], out=seg_start[1:])
        cum = np.cumsum(seg_weight)
        base = np.repeat(cum[seg_start] - seg_weight[seg_start], np.bincount(rank_cluster))
        cluster_cdf = (cum - base) / mass[seg_cluster] + seg_cluster
        cluster_cdf[np.r_[seg_start[1:] - 1, n_items - 1]] = np.arange(1, k + 1)
        global_cdf = np.cumsum(weights) / weights.sum() + k
        global_cdf[-1] = k + 1
        sampler_cdf = np.concatenate([cluster_cdf, global_cdf])
        sampler_items = np.concatenate([rank_item[by_cluster], rank_item])

        cluster_mass = mass / mass.sum()
        mass_cdf = np.cumsum(cluster_mass)
        mass_cdf[-1] = 1.0
        user_cluster = np.minimum(
            np.searchsorted(mass_cdf, rng.random(config.n_users), side="right"), k - 1
        ).astype(np.int32)
        user_counts = _allocate_counts(config, rng)
        return cls(
            item_cluster=item_cluster,
            item_weight=item_weight,
            sampler_cdf=sampler_cdf,
            sampler_items=sampler_items,
            cluster_mass=cluster_mass,
            user_cluster=user_cluster,
            user_counts=user_counts,
        )


def _allocate_counts(config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """Rows per user: ``m`` plus a multinomial share by log-normal activity, capped, sum N."""
    n_users = config.n_users
    activity = rng.lognormal(0.0, config.activity_sigma, n_users)
    counts = np.full(n_users, config.min_user_interactions, dtype=np.int64)
    remaining = config.n_interactions - int(counts.sum())
    cap = config.user_cap
    open_users = np.ones(n_users, dtype=bool)
    while remaining > 0:
        weights = np.where(open_users, activity, 0.0)
        counts += rng.multinomial(remaining, weights / weights.sum())
        remaining = 0
        if cap is not None:
            over = counts > cap
            remaining = int((counts[over] - cap).sum())
            counts[over] = cap
            open_users &= counts < cap
    return counts


# -------------------------------------------------------------------- one block of users
def _generate_block(
    config: SyntheticConfig,
    plan: _Plan,
    u0: int,
    u1: int,
    start: int,
    seed: np.random.SeedSequence,
) -> SyntheticBlock:
    rng = np.random.default_rng(seed)
    counts = plan.user_counts[u0:u1]
    n = int(counts.sum())
    local = np.repeat(np.arange(u1 - u0, dtype=np.int32), counts)
    row_cluster = plan.user_cluster[u0:u1][local]
    items = _draw_items(rng, plan, row_cluster, config.cluster_affinity)
    if config.unique_pairs:
        _make_unique(rng, plan, config.cluster_affinity, local, row_cluster, items, counts)

    timestamps = None
    if config.timestamps:
        timestamps = _draw_times(rng, config, counts, n)

    values = levels = None
    if config.rating_levels is not None:
        in_cluster = plan.item_cluster[items] == row_cluster
        r = rng.random(n)
        cum_in = np.cumsum(config.rating_probs_in_cluster)
        cum_off = np.cumsum(config.rating_probs_off_cluster)
        last = len(config.rating_levels) - 1
        levels = np.where(
            in_cluster,
            np.searchsorted(cum_in, r, side="right"),
            np.searchsorted(cum_off, r, side="right"),
        )
        levels = np.minimum(levels, last).astype(np.int8)
        values = np.asarray(config.rating_levels, dtype=np.float32)[levels]

    return SyntheticBlock(
        start=start,
        users=(local + np.int32(u0)).astype(np.int32, copy=False),
        items=items,
        timestamps=timestamps,
        values=values,
        value_levels=levels,
    )


def _draw_items(
    rng: np.random.Generator, plan: _Plan, row_cluster: np.ndarray, affinity: float
) -> np.ndarray:
    """One item per row from the mixture ``rho * w|cluster + (1 - rho) * w``."""
    n = len(row_cluster)
    k = len(plan.cluster_mass)
    segment = np.where(rng.random(n) < affinity, row_cluster, k)
    x = segment + rng.random(n)
    pos = np.searchsorted(plan.sampler_cdf, x, side="right")
    np.minimum(pos, len(plan.sampler_cdf) - 1, out=pos)
    return plan.sampler_items[pos]


def _make_unique(
    rng: np.random.Generator,
    plan: _Plan,
    affinity: float,
    local: np.ndarray,
    row_cluster: np.ndarray,
    items: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Redraw repeated (user, item) pairs in place until every user's items are distinct.

    Repeats are redrawn from the user's own mixture (exact rejection sampling of a successive
    sample without replacement). Each round costs one pass over the block's sorted keys; once
    at most :data:`_EXACT_USERS` users still have repeats, or after :data:`_MAX_ROUNDS` rounds,
    those users are completed exactly by :func:`_fill_exactly`.
    """
    n_items = np.int64(len(plan.item_cluster))
    keys = local.astype(np.int64) * n_items + items
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    repeat = np.zeros(len(keys), dtype=bool)
    repeat[1:] = sorted_keys[1:] == sorted_keys[:-1]
    pending = np.sort(order[repeat])
    accepted = sorted_keys[~repeat]
    del keys, order, sorted_keys, repeat
    for _ in range(_MAX_ROUNDS):
        if pending.size == 0:
            return
        pending_users = local[pending]
        if np.count_nonzero(np.diff(pending_users)) + 1 <= _EXACT_USERS:
            break
        fresh = _draw_items(rng, plan, row_cluster[pending], affinity)
        fresh_keys = pending_users.astype(np.int64) * n_items + fresh
        pos = np.minimum(np.searchsorted(accepted, fresh_keys), len(accepted) - 1)
        candidates = np.flatnonzero(accepted[pos] != fresh_keys)
        cand_keys = fresh_keys[candidates]
        cand_order = np.argsort(cand_keys, kind="stable")
        first = np.ones(len(candidates), dtype=bool)
        first[1:] = cand_keys[cand_order][1:] != cand_keys[cand_order][:-1]
        ok = candidates[cand_order[first]]
        items[pending[ok]] = fresh[ok]
        new_keys = np.sort(fresh_keys[ok])
        accepted = np.insert(accepted, np.searchsorted(accepted, new_keys), new_keys)
        keep = np.ones(len(pending), dtype=bool)
        keep[ok] = False
        pending = pending[keep]
    if pending.size:
        _fill_exactly(rng, plan, affinity, local, row_cluster, items, counts, pending)


def _fill_exactly(
    rng: np.random.Generator,
    plan: _Plan,
    affinity: float,
    local: np.ndarray,
    row_cluster: np.ndarray,
    items: np.ndarray,
    counts: np.ndarray,
    pending: np.ndarray,
) -> None:
    """Complete a few users exactly: Gumbel top-k over the items each one lacks.

    Sorting ``log p_i + Gumbel_i`` and taking the top ``k`` is a successive sample without
    replacement from ``p`` (the user's mixture), restricted to the items the user lacks.
    """
    starts = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    n_items = len(plan.item_cluster)
    total = plan.item_weight.sum()
    pending_users = local[pending]
    cuts = np.flatnonzero(np.diff(pending_users)) + 1
    for rows in np.split(pending, cuts):
        user = int(local[rows[0]])
        have = np.zeros(n_items, dtype=bool)
        have[items[starts[user] : starts[user + 1]]] = True
        # The repeated rows' items are held by another row of the same user: keep them marked.
        in_cluster = plan.item_cluster == row_cluster[rows[0]]
        prob = plan.item_weight * (
            (1.0 - affinity) / total + affinity * in_cluster / plan.item_weight[in_cluster].sum()
        )
        # Lacking items with positive probability score log p + Gumbel; lacking ones with zero
        # probability (only when the mixture cannot fill the user, e.g. affinity 1 and a small
        # cluster) score far below, in random order; items the user has are never chosen.
        gumbel = rng.gumbel(size=n_items)
        positive = prob > 0
        score = np.where(positive, np.log(np.where(positive, prob, 1.0)), -1e4) + gumbel
        score[have] = -np.inf
        chosen = np.argpartition(score, n_items - len(rows))[n_items - len(rows) :]
        items[rows] = rng.permutation(chosen).astype(np.int32)


def _draw_times(
    rng: np.random.Generator, config: SyntheticConfig, counts: np.ndarray, n: int
) -> np.ndarray:
    """Session-structured, non-decreasing timestamps for each user's rows."""
    active = counts > 0
    first = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=first[1:])
    first_rows = first[:-1][active]
    new_session = rng.random(n) < 1.0 / config.mean_session_length
    gaps = rng.exponential(1.0, n)
    gaps *= np.where(new_session, config.between_session_gap, config.within_session_gap)
    gaps[first_rows] = 0.0
    offsets = np.cumsum(gaps)
    del gaps, new_session
    active_counts = counts[active]
    offsets -= np.repeat(offsets[first_rows], active_counts)
    span = offsets[first_rows + active_counts - 1]
    t_range = float(config.end_seconds - config.start_seconds)
    scale = np.ones(len(span))
    long = span > t_range
    scale[long] = t_range / span[long]
    begin = config.start_seconds + rng.random(len(span)) * np.maximum(t_range - span * scale, 0.0)
    offsets *= np.repeat(scale, active_counts)
    offsets += np.repeat(begin, active_counts)
    np.floor(offsets, out=offsets)
    np.clip(offsets, config.start_seconds, config.end_seconds, out=offsets)
    return offsets.astype(np.int64)


# -------------------------------------------------------------------- CSV helpers
def _required(column: np.ndarray | None, name: str) -> np.ndarray:
    """A block's optional column that its configuration asks for."""
    if column is None:
        raise RuntimeError(
            f"a synthetic block has no {name} though its configuration asks for them"
        )
    return column


def _csv_table(
    users: np.ndarray, items: np.ndarray, ratings: pa.Array, timestamps: np.ndarray
) -> pa.Table:
    return pa.table(
        {
            "userId": pa.array(users + np.int32(1)),  # codes < 2**31 - 2 (config bound)
            "movieId": pa.array(items + np.int32(1)),
            "rating": ratings,
            "timestamp": pa.array(timestamps),
        }
    )


def _interaction_chunks(
    users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, values: np.ndarray
) -> Iterator[tuple[int, pa.Table]]:
    for lo in range(0, len(users), _CSV_CHUNK_ROWS):
        hi = min(lo + _CSV_CHUNK_ROWS, len(users))
        yield hi, _csv_table(users[lo:hi], items[lo:hi], _ratings(values[lo:hi]), timestamps[lo:hi])


def _ratings(values: np.ndarray) -> pa.Array:
    """Values as strings with one decimal where exact (``4.0``), via a small dictionary."""
    encoded = pc.dictionary_encode(pa.array(values))
    if len(encoded.dictionary) > _MAX_FORMATTED_VALUES:
        return pa.array(values)
    labels = pa.array([_format_rating(v) for v in encoded.dictionary.to_pylist()], pa.string())
    return pa.DictionaryArray.from_arrays(encoded.indices, labels)


def _format_rating(value: float) -> str:
    """The shortest text that reads back as the same float32, with at least one decimal."""
    text = np.format_float_positional(np.float32(value), trim="-")
    return text if "." in text or "n" in text else f"{text}.0"


def _epoch(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())

"""The Ray fit engine: a fit's sums over users computed as Ray tasks over user partitions.

:class:`RayEngine` implements :class:`~privrank.models.engine.FitEngine` (and
:class:`~privrank.models.engine.NetworkFitEngine`: SASRec and Mult-VAE train data-parallel on
Ray Train, :mod:`privrank.distributed.ray_train`; and
:class:`~privrank.models.engine.ALSEngine`: iALS's half-steps over long-lived Ray actors,
:mod:`privrank.distributed.ray_als`). The training rows
(users) are cut into contiguous partitions, each put once in Ray's object store; every sum the
fit needs is one Ray task per partition (:func:`~privrank.privacy.gram_release.partial_counts`,
:func:`~privrank.privacy.gram_release.partial_gram`, the functions the in-process fit uses on the
whole matrix), and the partial results are added on the driver **in partition order**, so a
weighted sum is the same from run to run (it differs from the in-process sum only by the order
of float additions; sums of 0/1 entries are exact integers and equal it exactly). At most
``workers`` tasks run at once, which also bounds the partial results held at a time.

**Privacy.** The tasks compute plain sums; nothing is released by them. A private fit's noise
is drawn once, on the driver, on the summed statistic, by the same release as in-process
(:func:`~privrank.privacy.gram_release.private_gram_release`): the guarantee, the accountant's
ε and the ledger's single charge (through :func:`privrank.workflow.spend.fit_and_spend`) do not
depend on the engine. The Ray cluster (its workers and object store) sees the raw training rows
and is trusted with them, as the process of an in-process fit is.

Ray is imported when an engine is used: ``pip install 'privrank[ray]'``. An engine connects to
the running Ray instance (``ray.init`` done by the caller, e.g. a test's ``Cluster``), to
``address`` when given, or starts a local one with ``workers`` CPUs.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privrank.config_errors import config_error
from privrank.data.interactions import Interactions
from privrank.models.base import FitOptions, Recommender
from privrank.models.engine import ALSBlocks, ALSProblem
from privrank.privacy.gram_release import partial_counts, partial_gram
from privrank.privacy.mechanisms import binary_matrix

__all__ = ["RayEngine", "RayEngineConfig", "RayGramStatistics", "ensure_ray"]


class RayEngineConfig(BaseModel):
    """Settings of :class:`RayEngine`.

    Attributes:
        workers: Tasks run at once (and CPUs of a local Ray instance the engine starts).
        partitions: User partitions; ``None``: ``2 · workers`` (so a slow partition does not
            hold the others up; batch scoring makes fewer for few users,
            :func:`privrank.distributed.ray_batch.scoring_partitions`).
        address: Address of a Ray cluster to connect to (``auto``, ``ray://host:10001``);
            ``None``: the running instance, or a new local one.
        object_store_mb: Object store of a local instance the engine starts (MiB).
        max_failures: Times a fit recovers from a lost worker (the CLI's ``--max-failures``).
            A data-parallel fit (SASRec, Mult-VAE on Ray Train) is restarted up to this many
            times after a worker dies; it resumes from its last epoch's checkpoint (a private
            fit starts over with the same noise seed), so it ends with the uninterrupted fit's
            weights (:mod:`privrank.distributed.ray_train`). Each iALS actor is restarted by
            Ray up to this many times (:mod:`privrank.distributed.ray_als`). ``0``: a lost
            worker fails the fit.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int = Field(default=2, ge=1)
    partitions: int | None = Field(default=None, ge=1)
    address: str | None = None
    object_store_mb: int = Field(default=512, ge=78)
    max_failures: int = Field(default=2, ge=0)

    def resolved_partitions(self) -> int:
        """``partitions``, or ``2 · workers``."""
        return self.partitions or 2 * self.workers


def ensure_ray(config: RayEngineConfig) -> Any:
    """The ``ray`` module, connected: the running instance, ``config.address``, or a new local
    instance with ``config.workers`` CPUs (no dashboard, no usage statistics sent)."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
        if config.address is not None:
            ray.init(address=config.address, log_to_driver=False)
        else:
            ray.init(
                num_cpus=config.workers,
                object_store_memory=config.object_store_mb * 1024 * 1024,
                include_dashboard=False,
                log_to_driver=False,
            )
    return ray


def _remote(function: Callable[..., Any]) -> Any:
    import ray

    return ray.remote(num_cpus=1)(function)


def ordered_results(ray: Any, tasks: Iterator[Any], window: int) -> Iterator[Any]:
    """The results of ``tasks`` (object refs, submitted lazily) in submission order, with at
    most ``window`` of them submitted and not yet consumed."""
    pending: list[Any] = []
    for ref in tasks:
        pending.append(ref)
        if len(pending) >= window:
            yield ray.get(pending.pop(0))
    while pending:
        yield ray.get(pending.pop(0))


class RayGramStatistics:
    """:class:`~privrank.privacy.gram_release.GramStatistics` summed over user partitions on Ray.

    Args:
        matrix: Binary ``n_users × n_items`` training matrix (rows are users).
        config: The engine's settings.
    """

    def __init__(self, matrix: sp.spmatrix, config: RayEngineConfig) -> None:
        csr = binary_matrix(matrix, "the Ray fit engine")
        self._ray = ensure_ray(config)
        self._config = config
        self._shape = (int(csr.shape[0]), int(csr.shape[1]))
        self._max_row = int(np.diff(csr.indptr).max(initial=0))
        bounds = np.linspace(0, csr.shape[0], config.resolved_partitions() + 1).astype(np.int64)
        self._parts = [
            self._ray.put(csr[int(start) : int(stop)])
            for start, stop in itertools.pairwise(bounds)
            if stop > start
        ]

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_users, n_items)``."""
        return self._shape

    @property
    def n_partitions(self) -> int:
        """Non-empty user partitions."""
        return len(self._parts)

    def max_row_length(self) -> int:
        """The most items any user has."""
        return self._max_row

    def _summed(self, function: Callable[..., np.ndarray], *args: Any) -> np.ndarray:
        task = _remote(function)
        total: np.ndarray | None = None
        results = ordered_results(
            self._ray, (task.remote(part, *args) for part in self._parts), self._config.workers
        )
        for partial in results:
            total = partial.copy() if total is None else np.add(total, partial, out=total)
        if total is None:  # no users: the sums are zero
            return function(sp.csr_matrix((0, self._shape[1]), dtype=np.float64), *args)
        return total

    def weighted_counts(self, norm: float) -> np.ndarray:
        """:func:`~privrank.privacy.gram_release.partial_counts` summed over the partitions."""
        return self._summed(partial_counts, norm)

    def weighted_gram(self, items: np.ndarray | None, norm: float) -> np.ndarray:
        """:func:`~privrank.privacy.gram_release.partial_gram` summed over the partitions."""
        return self._summed(partial_gram, items, norm)


class RayEngine:
    """A :class:`~privrank.models.engine.FitEngine` on Ray (see the module docstring).

    Args:
        config: A :class:`RayEngineConfig`, or its fields as keywords.
    """

    name = "ray"
    #: Data-parallel fits on this engine honour ``FitOptions.checkpoint_dir``.
    supports_checkpoints = True

    def __init__(self, config: RayEngineConfig | None = None, **settings: Any) -> None:
        try:
            self.config = config if config is not None else RayEngineConfig(**settings)
        except ValidationError as exc:
            raise config_error(exc, "RayEngine", model=RayEngineConfig) from None

    def gram_statistics(self, matrix: sp.csr_matrix) -> RayGramStatistics:
        """The Gram statistics of ``matrix`` over user partitions on Ray."""
        return RayGramStatistics(matrix, self.config)

    def als_blocks(self, problem: ALSProblem) -> ALSBlocks:
        """iALS's half-steps over ``workers`` long-lived Ray actors, each holding a block of
        users and a block of items (:class:`privrank.distributed.ray_als.RayALSBlocks`), each
        restarted by Ray up to ``max_failures`` times."""
        from privrank.distributed.ray_als import RayALSBlocks

        ensure_ray(self.config)
        return RayALSBlocks(problem, self.config.workers, max_restarts=self.config.max_failures)

    def fit_network(
        self, model: Recommender, train: Interactions, options: FitOptions
    ) -> Recommender:
        """Fit ``model``'s class and config data-parallel on ``workers`` Ray Train workers
        (:func:`privrank.distributed.ray_train.fit_network`, one CPU each), restarted up to
        ``max_failures`` times after a lost worker (resuming from the last checkpoint)."""
        from privrank.distributed.ray_train import RayTrainConfig, fit_network

        ensure_ray(self.config)
        settings = RayTrainConfig.of(
            workers=self.config.workers, max_failures=self.config.max_failures
        )
        return fit_network(model, train, options, settings)

    def describe(self) -> dict[str, object]:
        """``{"engine": "ray", "workers", "partitions", "address", "max_failures"}``."""
        return {
            "engine": self.name,
            "workers": self.config.workers,
            "partitions": self.config.resolved_partitions(),
            "address": self.config.address,
            "max_failures": self.config.max_failures,
        }

    def __repr__(self) -> str:
        return f"RayEngine({self.config!r})"

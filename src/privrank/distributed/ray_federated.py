"""The federated simulator's devices on Ray: a round's batches of devices run as Ray tasks.

:class:`RayClientRunner` is a :class:`~privrank.federated.clients.ClientRunner`. Each round, the
server's broadcast (:math:`H` and :math:`G`) is put once in Ray's object store; every batch of
``batch_size`` devices of the cohort is one task that runs the *same* function as the
in-process simulator (:func:`~privrank.federated.clients.batch_sum`: the device code on the
batch's histories, each device clipping its own update, the server's checks, the batch's sum)
and returns the batch's :class:`~privrank.federated.aggregation.RoundSum`. The driver adds the
batch sums **in batch order**, as the in-process runner does, so the model of a run is the same,
bit for bit, on either runner (same seed and settings, ``batch_size`` included). At most
``workers`` tasks are in flight, which also bounds the batch sums held at a time. Only the
batches' histories travel (a task receives the CSR rows of its own devices), never the whole
population's.

**Privacy and trust.** Nothing changes: the tasks return what the server's aggregation step
computes from the devices' clipped updates; noise, sampling, accounting and ledger charges stay
on the driver (:mod:`privrank.federated.rounds`). The Ray cluster runs the *simulation* of the
devices and of the server's checks: it holds the simulated devices' histories, as the simulator's
process does, and is trusted with them. In a deployment the devices are real and their
histories never leave them (:mod:`privrank.federated`).

Ray is imported when the runner is used (``pip install 'privrank[ray]'``); it connects as
:func:`~privrank.distributed.ray_engine.ensure_ray` does (the running instance, ``address``, or a
new local one with ``workers`` CPUs).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import ValidationError

from privrank.config_errors import config_error
from privrank.distributed.ray_engine import RayEngineConfig, ensure_ray, ordered_results
from privrank.federated.aggregation import RoundSum
from privrank.federated.clients import batch_sum
from privrank.models._fedmf_rounds import FedMFClient, MFBroadcast

__all__ = ["RayClientRunner"]


class RayClientRunner:
    """Runs a round's device batches as Ray tasks (see the module docstring).

    Args:
        config: A :class:`~privrank.distributed.ray_engine.RayEngineConfig` (``workers``: tasks in
            flight; ``address``: the cluster; ``partitions`` is not used: a batch is a task), or
            its fields as keywords.

    Raises:
        ConfigError: Bad settings.
    """

    name = "ray"

    def __init__(self, config: RayEngineConfig | None = None, **settings: Any) -> None:
        try:
            self.config = config if config is not None else RayEngineConfig(**settings)
        except ValidationError as exc:
            raise config_error(exc, "RayClientRunner", model=RayEngineConfig) from None
        self._ray: Any = None
        self._task: Any = None
        self._client: tuple[FedMFClient, Any] | None = None

    def _connect(self) -> Any:
        if self._ray is None:
            self._ray = ensure_ray(self.config)
            self._task = self._ray.remote(num_cpus=1)(batch_sum)
        return self._ray

    def _client_ref(self, client: FedMFClient) -> Any:
        """The device code, put in the object store once per client object."""
        if self._client is None or self._client[0] is not client:
            self._client = (client, self._ray.put(client))
        return self._client[1]

    def batch_sums(
        self,
        client: FedMFClient,
        batches: Iterable[sp.csr_matrix],
        broadcast: MFBroadcast,
        bound: float | None,
        round_index: int,
    ) -> Iterator[tuple[RoundSum, np.ndarray]]:
        """:func:`~privrank.federated.clients.batch_sum` of every batch as a Ray task, yielded
        in the order of ``batches`` (at most ``workers`` tasks in flight)."""
        ray = self._connect()
        client_ref = self._client_ref(client)
        broadcast_ref = ray.put(broadcast)
        tasks = (
            self._task.remote(client_ref, histories, broadcast_ref, bound, round_index)
            for histories in batches
        )
        yield from ordered_results(ray, tasks, self.config.workers)

    def describe(self) -> dict[str, object]:
        """``{"engine": "ray", "workers", "address"}``."""
        return {"engine": self.name, "workers": self.config.workers, "address": self.config.address}

    def __repr__(self) -> str:
        return f"RayClientRunner({self.config!r})"

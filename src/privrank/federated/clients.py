"""The devices' side of a round, run over a cohort batch by batch.

Each batch of devices runs the client code (a :class:`DeviceCode`: fedmf's
:class:`~privrank.models._fedmf_rounds.FedMFClient`, Mult-VAE's
:class:`~privrank.models._fedvae_rounds.FedVAEClient`) on a CSR of their histories
and, in a private round, clips its own update. With the plain
(non-secure) aggregation a batch is checked and summed on its own (:func:`batch_sum`, a
:class:`~privrank.federated.aggregation.RoundSum` per batch) and the batch sums are added **in
batch order**; a :class:`ClientRunner` decides where the batches run: :class:`LocalRunner` in
this process, ``privrank.distributed.ray_federated.RayClientRunner`` as Ray tasks. Both add the
same batch sums in the same order, so a run's model does not depend on the runner (bit for bit,
for the same settings, ``batch_size`` included). Secure aggregation encodes every batch into one
protocol run on the server and runs in this process.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from privrank.federated.aggregation import RoundSum, SumAggregator
from privrank.federated.canaries import Canaries
from privrank.federated.secure_aggregation import SecAggAggregator, SecureAggregation
from privrank.federated.settings import FederatedSettings
from privrank.federated.state import ServerState
from privrank.privacy.updates import ClientUpdates

__all__ = [
    "ClientRunner",
    "DeviceCode",
    "LocalRunner",
    "ServerCode",
    "batch_sum",
    "clip_on_device",
    "merge_sums",
    "run_clients",
]


class DeviceCode(Protocol):
    """A model's device side (:class:`~privrank.models._fedmf_rounds.FedMFClient`,
    :class:`~privrank.models._fedvae_rounds.FedVAEClient`): the same code for a batch of
    devices in the simulator and a batch of one on a device.

    Attributes:
        update_dim: The dimension of every device's update vector.
    """

    update_dim: int

    def broadcast_of(self, arrays: dict[str, np.ndarray], round_index: int) -> Any:
        """What the server sends the round's devices, from its arrays."""
        ...

    def local_update(self, histories: sp.csr_matrix, broadcast: Any) -> tuple[ClientUpdates, Any]:
        """The batch's updates and each device's loss (a diagnostic)."""
        ...


class ServerCode(Protocol):
    """A model's server side: the step from a round's released mean update.

    Attributes:
        key: The server array that is the released model.
    """

    key: str

    def apply(self, arrays: dict[str, np.ndarray], mean: np.ndarray, learning_rate: float) -> None:
        """Step the server's arrays in place."""
        ...


def batch_sum(
    client: DeviceCode,
    histories: sp.csr_matrix,
    broadcast: Any,
    bound: float | None,
    round_index: int,
) -> tuple[RoundSum, np.ndarray]:
    """One batch of devices: their updates (clipped to ``bound`` by each device in a private
    round), checked and summed, and their loss terms (a simulation diagnostic).

    Args:
        client: The device code.
        histories: ``devices × n_items`` CSR, one row per device of the batch.
        broadcast: The round's model.
        bound: The round's clipping norm :math:`C` (``None``: a non-private round).
        round_index: The round (named in the refusal log).

    Returns:
        ``(the batch's RoundSum, (devices,) losses)``.
    """
    computed, losses = client.local_update(histories, broadcast)
    sent: ClientUpdates = computed
    unclipped = None
    if bound is not None:
        sent, unclipped = clip_on_device(computed, bound)
    aggregator = SumAggregator(client.update_dim, bound, round_index)
    aggregator.add(sent, unclipped)
    return aggregator.finish(), losses


def merge_sums(total: RoundSum, part: RoundSum) -> None:
    """Add a batch's sum, counts and refusals into ``total`` (in place)."""
    total.total += part.total
    total.accepted += part.accepted
    total.unclipped += part.unclipped
    for reason, count in part.refused.items():
        total.refused[reason] = total.refused.get(reason, 0) + count


class ClientRunner(Protocol):
    """Where a round's batches of devices run (see the module docstring).

    Attributes:
        name: Short name recorded with the run (``local``, ``ray``).
    """

    name: str

    def batch_sums(
        self,
        client: DeviceCode,
        batches: Iterable[sp.csr_matrix],
        broadcast: Any,
        bound: float | None,
        round_index: int,
    ) -> Iterator[tuple[RoundSum, np.ndarray]]:
        """:func:`batch_sum` of every batch, yielded in the order of ``batches``."""
        ...

    def describe(self) -> dict[str, object]:
        """What the runner ran on, as JSON."""
        ...


class LocalRunner:
    """Runs the batches one after the other in this process."""

    name = "local"

    def batch_sums(
        self,
        client: DeviceCode,
        batches: Iterable[sp.csr_matrix],
        broadcast: Any,
        bound: float | None,
        round_index: int,
    ) -> Iterator[tuple[RoundSum, np.ndarray]]:
        """:func:`batch_sum` of every batch, in order."""
        for histories in batches:
            yield batch_sum(client, histories, broadcast, bound, round_index)

    def describe(self) -> dict[str, object]:
        """``{"engine": "local"}``."""
        return {"engine": self.name}


def run_clients(
    cohort: np.ndarray,
    settings: FederatedSettings,
    histories: sp.csr_matrix,
    client: DeviceCode,
    state: ServerState,
    bound: float | None,
    round_index: int,
    canaries: Canaries | None,
    secure: SecureAggregation | None = None,
    aggregator: SumAggregator | SecAggAggregator | None = None,
    runner: ClientRunner | None = None,
) -> tuple[RoundSum, np.ndarray]:
    """Run the cohort's devices batch by batch and sum their checked updates: by ``runner``
    (default :class:`LocalRunner`) with the plain aggregation, securely with ``secure``, or
    through the given ``aggregator`` (both in this process)."""
    broadcast = client.broadcast_of(state.arrays, round_index)
    dim = client.update_dim
    if aggregator is None and secure is None:
        return _plain_sum(cohort, settings, histories, client, broadcast, bound, round_index,
                          canaries, runner or LocalRunner())  # fmt: skip
    if aggregator is None and secure is not None:
        extra = 0 if canaries is None else len(canaries.directions)
        aggregator = SecAggAggregator(
            dim,
            bound,
            secure,
            max_clients=len(cohort) + extra,
            round_index=round_index,
            seed=settings.seed,
            min_survivors=settings.min_clients,
        )
    if aggregator is None:
        aggregator = SumAggregator(dim, bound)
    losses = []
    for start in range(0, len(cohort), settings.batch_size):
        devices = cohort[start : start + settings.batch_size]
        computed, batch_losses = client.local_update(histories[devices], broadcast)
        sent: ClientUpdates = computed
        unclipped = None
        if bound is not None:
            sent, unclipped = clip_on_device(computed, bound)
        aggregator.add(sent, unclipped)
        losses.append(batch_losses)
    _add_canaries(aggregator, canaries, settings, histories.shape[0], bound, round_index)
    joined = np.concatenate(losses) if losses else np.zeros(0)
    if isinstance(aggregator, SecAggAggregator):
        from privrank.privacy.crypto.secagg import SecAggAbort

        try:
            return aggregator.finish(), joined
        except SecAggAbort:  # nothing unmasked: the round releases nothing and is not charged
            return RoundSum(np.zeros(aggregator.dim), refused={"secagg_abort": 1}), joined
    return aggregator.finish(), joined


def _plain_sum(
    cohort: np.ndarray,
    settings: FederatedSettings,
    histories: sp.csr_matrix,
    client: DeviceCode,
    broadcast: Any,
    bound: float | None,
    round_index: int,
    canaries: Canaries | None,
    runner: ClientRunner,
) -> tuple[RoundSum, np.ndarray]:
    """The plain sum: the runner's batch sums added in batch order, then the canaries'."""
    total = RoundSum(np.zeros(client.update_dim, dtype=np.float64))
    batches = (
        histories[cohort[start : start + settings.batch_size]]
        for start in range(0, len(cohort), settings.batch_size)
    )
    losses = []
    for part, batch_losses in runner.batch_sums(client, batches, broadcast, bound, round_index):
        merge_sums(total, part)
        losses.append(batch_losses)
    if canaries is not None:
        aggregator = SumAggregator(total.total.shape[0], bound, round_index)
        _add_canaries(aggregator, canaries, settings, histories.shape[0], bound, round_index)
        merge_sums(total, aggregator.finish())
    return total, np.concatenate(losses) if losses else np.zeros(0)


def _add_canaries(
    aggregator: SumAggregator | SecAggAggregator,
    canaries: Canaries | None,
    settings: FederatedSettings,
    population: int,
    bound: float | None,
    round_index: int,
) -> None:
    """The canary devices sampled this round send their fixed direction at the round's bound."""
    if canaries is None:
        return
    rate = min(settings.clients_per_round, population) / population
    chosen = canaries.sampled(round_index, rate)
    if len(chosen):
        scale = 1.0 if bound is None else bound
        aggregator.add(canaries.updates(chosen, scale), np.ones(len(chosen), dtype=bool))


def clip_on_device(updates: ClientUpdates, bound: float) -> tuple[ClientUpdates, np.ndarray]:
    """Each device scales its update to L2 norm at most ``bound`` and reports whether it was
    already within it (the bit of adaptive clipping).

    Returns:
        ``(clipped updates, unclipped bits)``.
    """
    norms = updates.norms()
    unclipped = norms <= bound
    with np.errstate(divide="ignore", invalid="ignore"):
        factors = np.where(unclipped, 1.0, bound / norms)
    factors = np.where(np.isfinite(factors), factors, 1.0)  # a non-finite update stays so
    return updates.scaled(factors), unclipped

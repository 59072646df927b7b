"""The devices' side of a round, run over a cohort batch by batch: each batch of devices runs
the client code (:class:`~privrank.models._fedmf_rounds.FedMFClient`) on a CSR of their
histories, clips its own update (a private round) and hands it to the round's aggregator."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from privrank.federated.aggregation import RoundSum, SumAggregator
from privrank.federated.canaries import Canaries
from privrank.federated.secure_aggregation import SecAggAggregator, SecureAggregation
from privrank.federated.settings import FederatedSettings
from privrank.federated.state import ServerState
from privrank.models._fedmf_rounds import FedMFClient, MFBroadcast
from privrank.privacy.updates import ClientUpdates

__all__ = ["clip_on_device", "run_clients"]


def run_clients(
    cohort: np.ndarray,
    settings: FederatedSettings,
    histories: sp.csr_matrix,
    client: FedMFClient,
    state: ServerState,
    bound: float | None,
    round_index: int,
    canaries: Canaries | None,
    secure: SecureAggregation | None = None,
    aggregator: SumAggregator | SecAggAggregator | None = None,
) -> tuple[RoundSum, np.ndarray]:
    """Run the cohort's devices batch by batch and sum their checked updates (securely with
    ``secure``, or through the given ``aggregator``)."""
    broadcast = MFBroadcast.of(state.arrays["item_factors"])
    n_items, d = broadcast.item_factors.shape
    if aggregator is None and secure is not None:
        extra = 0 if canaries is None else len(canaries.directions)
        aggregator = SecAggAggregator(
            n_items * d + d * d,
            bound,
            secure,
            max_clients=len(cohort) + extra,
            round_index=round_index,
            seed=settings.seed,
            min_survivors=settings.min_clients,
        )
    if aggregator is None:
        aggregator = SumAggregator(n_items * d + d * d, bound)
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
    if canaries is not None:
        rate = min(settings.clients_per_round, histories.shape[0]) / histories.shape[0]
        chosen = canaries.sampled(round_index, rate)
        if len(chosen):
            scale = 1.0 if bound is None else bound
            aggregator.add(canaries.updates(chosen, scale), np.ones(len(chosen), dtype=bool))
    joined = np.concatenate(losses) if losses else np.zeros(0)
    if isinstance(aggregator, SecAggAggregator):
        from privrank.privacy.crypto.secagg import SecAggAbort

        try:
            return aggregator.finish(), joined
        except SecAggAbort:  # nothing unmasked: the round releases nothing and is not charged
            return RoundSum(np.zeros(aggregator.dim), refused={"secagg_abort": 1}), joined
    return aggregator.finish(), joined


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

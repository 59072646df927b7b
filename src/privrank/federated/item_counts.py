"""The item counts every device sends once, before the first round: the cold-start popularity
and the counts the server step uses (summed plainly or by SecAgg+; noised and charged in a
private run, by DP-FedAvg's Gaussian or by distributed DP)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from privrank.errors import ConfigError
from privrank.federated.aggregation import SumAggregator
from privrank.federated.cohorts import bounded_histories, noise_rng, sample_cohort
from privrank.federated.secure_aggregation import SecAggAggregator, SecureAggregation
from privrank.federated.settings import FederatedSettings
from privrank.privacy.distributed_dp_plan import DistributedDPPlan
from privrank.privacy.dp_fedavg import FedAvgPlan
from privrank.privacy.mechanism import current_noise_scale
from privrank.privacy.spec import PrivacySpec
from privrank.privacy.updates import SparseUpdates
from privrank.workflow.spend import RoundLedger

__all__ = ["noisy_counts", "release_counts", "release_counts_secure", "secure_counts_sum"]


def release_counts(
    histories: sp.csr_matrix,
    spec: PrivacySpec | None,
    plan: FedAvgPlan | None,
    ledger: RoundLedger | None,
    secure: SecureAggregation | None = None,
    settings: FederatedSettings | None = None,
) -> np.ndarray:
    """The item counts every device sends once (at most ``c`` items each under DP), summed
    (by SecAgg+ with ``secure``); with Gaussian noise (σ = multiplier · √c) added by the server
    to the sum in a private run, charged to the ledger."""
    n_items = histories.shape[1]
    if secure is not None and settings is not None:
        bounded = (
            histories if plan is None else bounded_histories(histories, plan.contribution_bound)
        )
        total = secure_counts_sum(bounded, settings, secure)
        if spec is None or plan is None or ledger is None:
            return total
        return noisy_counts(total, spec, plan, ledger)
    if spec is None or plan is None or ledger is None:
        rows = SparseUpdates(histories)
        aggregator = SumAggregator(n_items, None)
        aggregator.add(rows)
        return aggregator.finish().total
    bound = plan.contribution_bound
    kept = bounded_histories(histories, bound)
    aggregator = SumAggregator(n_items, float(np.sqrt(bound)))
    aggregator.add(SparseUpdates(kept))
    return noisy_counts(aggregator.finish().total, spec, plan, ledger)


def noisy_counts(
    total: np.ndarray, spec: PrivacySpec, plan: FedAvgPlan, ledger: RoundLedger
) -> np.ndarray:
    """DP-FedAvg's release of the summed counts: Gaussian noise, charged with the run's δ."""
    n_items = total.shape[0]
    bound = plan.contribution_bound
    std = current_noise_scale() * plan.popularity_noise_multiplier * float(np.sqrt(bound))
    with ledger.round(plan.epsilon_after(0), plan.delta, "item counts") as released:
        noisy = total + (noise_rng(spec, 0).normal(0.0, std, n_items) if std > 0 else 0.0)
        released[0] = True
    return np.asarray(noisy, dtype=np.float64)


def secure_counts_sum(
    histories: sp.csr_matrix, settings: FederatedSettings, secure: SecureAggregation
) -> np.ndarray:
    """Every device's 0/1 item vector summed by SecAgg+, in groups of ``clients_per_round``
    devices (one protocol run per group, no simulated dropout: the counts are collected once,
    before training); integers, so the sum is exact. A group that aborts
    raises :class:`~privrank.privacy.crypto.secagg.SecAggAbort` (nothing is released)."""
    population, n_items = histories.shape
    total = np.zeros(n_items)
    group = max(2, settings.clients_per_round)
    exact = secure.model_copy(update={"value_range": 1.0, "scale": 1.0, "dropout": 0.0})
    for number, start in enumerate(range(0, population, group)):
        members = np.arange(start, min(start + group, population))
        aggregator = SecAggAggregator(
            n_items, None, exact, max_clients=len(members), round_index=2**62 - 1 - number,
            seed=settings.seed,
        )  # fmt: skip
        aggregator.add(SparseUpdates(histories[members]))
        total += aggregator.finish().total
    return total


def release_counts_secure(
    histories: sp.csr_matrix,
    settings: FederatedSettings,
    secure: SecureAggregation,
    spec: PrivacySpec | None,
    ddp: DistributedDPPlan | None,
    ledger: RoundLedger | None,
) -> np.ndarray:
    """The item counts under distributed DP, through SecAgg+: the
    devices of the first cohort (Poisson, round 0) send their at most ``c`` items with discrete
    Gaussian noise (release 0 of the plan, charged with the run's δ); the server scales the sum
    by ``N / survivors``.

    Raises:
        ConfigError: Too few devices survived the counts' round (nothing can be trained).
    """
    from privrank.privacy.crypto.secagg import SecAggAbort

    population, n_items = histories.shape
    if ddp is None or spec is None or ledger is None:
        raise ConfigError("the distributed-DP counts need a plan, a spec and a ledger")
    cohort = sample_cohort(settings, population, 0)
    kept = bounded_histories(histories[cohort], ddp.contribution_bound)
    aggregator = SecAggAggregator(
        n_items,
        float(np.sqrt(ddp.contribution_bound)),
        secure,
        max_clients=population,
        round_index=0,
        seed=settings.seed,
        min_survivors=settings.min_clients,
        mechanism=ddp.counts,
        noise_rng=noise_rng(spec, 0),
    )
    with ledger.round(ddp.epsilon_after(0), ddp.delta, "item counts") as released:
        aggregator.add(SparseUpdates(kept))
        try:
            part = aggregator.finish()
        except SecAggAbort as exc:
            raise ConfigError(f"the item counts' secure round aborted: {exc}") from exc
        if part.accepted < settings.min_clients:
            raise ConfigError(
                f"the item counts' secure round had {part.accepted} device(s), fewer than "
                f"min_clients = {settings.min_clients}"
            )
        released[0] = True
    return np.asarray(part.total * (population / part.accepted), dtype=np.float64)

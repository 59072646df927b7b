"""Who takes part in a round and with what: the devices' histories, the cohort sampled from
``(seed, round)``, the round's server learning rate, the per-round noise generator, and the
contribution bound applied to a device's items."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from privrank.data.interactions import Interactions
from privrank.federated.settings import FederatedSettings
from privrank.models._query import Query
from privrank.privacy.spec import PrivacySpec

__all__ = [
    "bounded_histories",
    "device_histories",
    "noise_rng",
    "round_learning_rate",
    "sample_cohort",
]


def device_histories(data: Interactions) -> sp.csr_matrix:
    indptr, items = data.sequences()
    return Query(indptr=indptr.astype(np.int64), items=items.astype(np.int64)).to_csr(data.n_items)


def sample_cohort(settings: FederatedSettings, population: int, round_index: int) -> np.ndarray:
    rng = np.random.default_rng([settings.seed, round_index])
    m = min(settings.clients_per_round, population)
    if settings.sampling == "fixed":
        return np.sort(rng.choice(population, size=m, replace=False))
    return np.flatnonzero(rng.random(population) < m / population)


def round_learning_rate(settings: FederatedSettings, round_index: int) -> float:
    if settings.learning_rate_schedule == "constant":
        return settings.server_learning_rate
    return settings.server_learning_rate * (1.0 - (round_index - 1) / settings.rounds)


def noise_rng(spec: PrivacySpec, round_index: int) -> np.random.Generator:
    if spec.noise_seed is not None:  # reproducible (tests only): a distinct stream per round
        return np.random.default_rng([spec.noise_seed, round_index])
    return spec.noise_generator()


def bounded_histories(histories: sp.csr_matrix, bound: int) -> sp.csr_matrix:
    """Each device keeps at most ``bound`` of its items (its first ones in item order)."""
    lengths = np.diff(histories.indptr)
    positions = np.arange(histories.nnz) - np.repeat(histories.indptr[:-1], lengths)
    keep = positions < bound
    indptr = np.concatenate([[0], np.cumsum(np.minimum(lengths, bound))])
    return sp.csr_matrix(
        (histories.data[keep], histories.indices[keep], indptr), shape=histories.shape
    )

"""Federated training: a device holds one user's history and never sends it.

- :mod:`privrank.models._fedmf_rounds`: Federated Reconstruction on the iALS objective (the device's
  and the server's computations);
- :mod:`privrank.privacy.updates`: a batch of device updates, as the server sees them;
- :mod:`privrank.federated.aggregation`: the checked sum of a round's updates;
- :mod:`privrank.federated.simulator`: the vectorised simulator's run loop (set-up, ledger
  plan, rounds, metrics log, resumable state), built from
  :mod:`~privrank.federated.settings` (what drives and reports a run),
  :mod:`~privrank.federated.cohorts` (histories, cohort sampling, learning rate, noise streams),
  :mod:`~privrank.federated.clients` (the devices' step over a cohort, batch by batch),
  :mod:`~privrank.federated.item_counts` (the counts released before the first round) and
  :mod:`~privrank.federated.rounds` (one server round: DP-FedAvg or distributed DP);
- :mod:`privrank.federated.state`: the server state between rounds.

DP-FedAvg itself (noise, calibration, accounting) is a mechanism of :mod:`privrank.privacy`
(:mod:`privrank.privacy.dp_fedavg`).

Layer: above workflow and tuning, below serving and cli (``pyproject.toml``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privrank._lazy import lazy_exports

if TYPE_CHECKING:
    from privrank.federated.aggregation import REFUSALS, RoundSum, SumAggregator
    from privrank.federated.clients import clip_on_device
    from privrank.federated.settings import FederatedSettings, RoundReport, SimulationResult
    from privrank.federated.simulator import simulate
    from privrank.federated.state import ServerState
    from privrank.models._fedmf_rounds import FedMFClient, FedMFServer, MFBroadcast, MFUpdates
    from privrank.privacy.updates import ClientUpdates, DenseUpdates, SparseUpdates

#: Imported on first use, so that a device's code (``privrank.federated.flower.client_app``)
#: does not import the simulator, the ledger or the accountants with the package.
_LAZY = {
    "aggregation": ["REFUSALS", "RoundSum", "SumAggregator"],
    "clients": ["clip_on_device"],
    "settings": ["FederatedSettings", "RoundReport", "SimulationResult"],
    "simulator": ["simulate"],
    "state": ["ServerState"],
    "privrank.models._fedmf_rounds": ["FedMFClient", "FedMFServer", "MFBroadcast", "MFUpdates"],
    "privrank.privacy.updates": ["ClientUpdates", "DenseUpdates", "SparseUpdates"],
}

__all__ = [
    "REFUSALS",
    "ClientUpdates",
    "DenseUpdates",
    "FedMFClient",
    "FedMFServer",
    "FederatedSettings",
    "MFBroadcast",
    "MFUpdates",
    "RoundReport",
    "RoundSum",
    "ServerState",
    "SimulationResult",
    "SparseUpdates",
    "SumAggregator",
    "clip_on_device",
    "simulate",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, exported=__all__)

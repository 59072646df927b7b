"""Federated training: a device holds one user's history and never sends it.

- :mod:`privrank.models._fedmf_rounds`: Federated Reconstruction on the iALS objective (the device's
  and the server's computations);
- :mod:`privrank.privacy.updates`: a batch of device updates, as the server sees them;
- :mod:`privrank.federated.aggregation`: the checked sum of a round's updates;
- :mod:`privrank.federated.simulator`: the vectorised simulator (rounds, sampling, DP-FedAvg,
  ledger charges, metrics log, resumable state);
- :mod:`privrank.federated.state`: the server state between rounds.

DP-FedAvg itself (noise, calibration, accounting) is a mechanism of :mod:`privrank.privacy`
(:mod:`privrank.privacy.dp_fedavg`).

Layer: above workflow and tuning, below serving and cli (``pyproject.toml``).
"""

from privrank.federated.aggregation import REFUSALS, RoundSum, SumAggregator
from privrank.federated.simulator import (
    FederatedSettings,
    RoundReport,
    SimulationResult,
    clip_on_device,
    simulate,
)
from privrank.federated.state import ServerState
from privrank.models._fedmf_rounds import FedMFClient, FedMFServer, MFBroadcast, MFUpdates
from privrank.privacy.updates import ClientUpdates, DenseUpdates, SparseUpdates

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

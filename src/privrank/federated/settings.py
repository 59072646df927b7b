"""What drives a federated run and what it reports: :class:`FederatedSettings` (rounds, cohort,
sampling, learning rate, clipping), :class:`RoundReport` (one round, as the progress display
and the metrics log show it) and :class:`SimulationResult` (a finished run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from privrank.data._config import FrozenConfig

if TYPE_CHECKING:  # a finished run's parts; a device's code needs only the settings
    from privrank.federated.state import ServerState
    from privrank.models.base import Recommender
    from privrank.privacy.distributed_dp_plan import DistributedDPPlan
    from privrank.privacy.dp_fedavg import AdaptiveClipping, FedAvgPlan
    from privrank.privacy.mechanism import PrivacyGuarantee

__all__ = ["FederatedSettings", "RoundReport", "SimulationResult"]


class FederatedSettings(FrozenConfig):
    """How a federated run is driven (the model's own hyper-parameters are its config).

    Attributes:
        rounds: :math:`T`.
        clients_per_round: :math:`m`, the (expected) cohort size.
        sampling: ``poisson`` (each device with probability :math:`m/N`; add/remove adjacency
            under DP) or ``fixed`` (exactly :math:`m` devices, without replacement; replace-one
            adjacency and the RDP accountant under DP).
        server_learning_rate: :math:`\\eta` of the server step.
        learning_rate_schedule: ``linear``: round :math:`t` of :math:`T` steps with
            :math:`\\eta (1 - (t-1)/T)` (the late rounds average the cohorts' sampling noise
            out); ``constant``: :math:`\\eta` throughout.
        batch_size: Devices simulated together in one vectorised batch.
        min_clients: A round with fewer sampled (or accepted) devices releases nothing
            (non-private and SecAgg+ rounds; a private plain round is always released, so it
            must be 1 under Poisson sampling; central DP over SecAgg+ needs fixed cohorts).
        seed: Seed of the public initial model and of the cohort sampling.
        adaptive_clipping: Adapt :math:`C` to the ``target_quantile`` of the update norms
            (private runs; Andrew et al. 2021).
        target_quantile: :math:`\\gamma`.
        clipping_learning_rate: :math:`\\eta_C`.
    """

    rounds: int = Field(100, ge=1)
    clients_per_round: int = Field(100, ge=1)
    sampling: Literal["poisson", "fixed"] = "poisson"
    server_learning_rate: float = Field(0.5, gt=0, allow_inf_nan=False)
    learning_rate_schedule: Literal["linear", "constant"] = "linear"
    batch_size: int = Field(1024, ge=1)
    min_clients: int = Field(1, ge=1)
    seed: int = Field(0, ge=0)
    adaptive_clipping: bool = True
    target_quantile: float = Field(0.5, gt=0, lt=1)
    clipping_learning_rate: float = Field(0.2, gt=0, allow_inf_nan=False)

    def clipping_rule(self) -> AdaptiveClipping | None:
        """The adaptive clipping of a private run with these settings (``None``: fixed :math:`C`).

        Imported here rather than at the top: a device's code reads these settings and never
        clips on the server's behalf.
        """
        if not self.adaptive_clipping:
            return None
        from privrank.privacy.dp_fedavg import AdaptiveClipping

        return AdaptiveClipping(
            target_quantile=self.target_quantile, learning_rate=self.clipping_learning_rate
        )


@dataclass(frozen=True)
class RoundReport:
    """What the progress display and the metrics log show of one round.

    Attributes:
        round: The round (1-based).
        rounds: :math:`T`.
        clients: Devices sampled.
        accepted: Updates accepted.
        refused: Refused updates per reason.
        released: Whether the round's model was released (and charged).
        loss: The sampled devices' mean objective (diagnostic; ``nan`` for no devices).
        epsilon: ε spent so far (``None``: non-private run).
        clipping_norm: :math:`C` used this round (``None``: non-private).
        seconds: Wall time of the round.
    """

    round: int
    rounds: int
    clients: int
    accepted: int
    refused: dict[str, int]
    released: bool
    loss: float
    epsilon: float | None
    clipping_norm: float | None
    seconds: float

    def to_dict(self) -> dict[str, object]:
        """The metrics-log line."""
        return {
            "round": self.round,
            "clients": self.clients,
            "accepted": self.accepted,
            "refused": self.refused,
            "released": self.released,
            "loss": None if not np.isfinite(self.loss) else self.loss,
            "epsilon": self.epsilon,
            "clipping_norm": self.clipping_norm,
            "seconds": round(self.seconds, 4),
        }


@dataclass(frozen=True)
class SimulationResult:
    """A finished run.

    Attributes:
        model: The trained model (:class:`~privrank.models.fedmf.FedMF` or
            :class:`~privrank.models.vae.MultVAE`).
        state: The final server state.
        plan: The DP-FedAvg plan (``None``: non-private).
        guarantee: The guarantee of the released rounds (``None``: non-private).
        seconds: Wall time of the rounds run by this call.
        rounds_run: Rounds run by this call (fewer than ``rounds`` after a resume).
    """

    model: Recommender
    state: ServerState
    plan: FedAvgPlan | None
    guarantee: PrivacyGuarantee | None
    seconds: float
    rounds_run: int
    distributed_plan: DistributedDPPlan | None = None

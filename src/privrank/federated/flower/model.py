"""The trained-model side of a deployment run: the model of the server state it left.

The ServerApp saves its state (``state.json`` / ``state.npz``) after every round; once the run
has ended, :func:`assemble_model` reads it and builds the same :class:`~privrank.models.fedmf.
FedMF` the simulator returns (:meth:`FedMF.assemble`: the released :math:`H` and popularity,
with the training part's id maps and histories for evaluation, as any fit keeps them), and the
run's privacy guarantee from its plan and released rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from privrank.data.interactions import Interactions
from privrank.federated.flower.job import FlowerJob
from privrank.federated.state import ServerState
from privrank.models.fedmf import FedMF
from privrank.privacy.distributed_dp_plan import distributed_dp_guarantee
from privrank.privacy.dp_fedavg import (
    FedAvgPlan,
    dp_fedavg_guarantee,
    plan_dp_fedavg,
)
from privrank.privacy.mechanism import PrivacyGuarantee, current_noise_scale

__all__ = ["DeployedModel", "assemble_model", "job_plan"]


@dataclass(frozen=True)
class DeployedModel:
    """A deployment run's result.

    Attributes:
        model: The trained model.
        state: The server state it was built from.
        plan: The DP-FedAvg plan (``None``: non-private or distributed DP).
        guarantee: The guarantee of the released rounds (``None``: non-private).
    """

    model: FedMF
    state: ServerState
    plan: FedAvgPlan | None
    guarantee: PrivacyGuarantee | None


def job_plan(job: FlowerJob) -> FedAvgPlan | None:
    """The DP-FedAvg plan of a job (``None``: non-private), as the ServerApp computes it (its
    sampling included: a fixed-cohort job is accounted as fixed cohorts)."""
    if job.privacy is None:
        return None
    settings = job.settings
    return plan_dp_fedavg(
        job.privacy.resolve(job.population),
        job.population,
        settings.clients_per_round,
        settings.rounds,
        settings.clipping_rule(),
        settings.sampling,
    )


def assemble_model(job: FlowerJob, train: Interactions) -> DeployedModel:
    """The model and guarantee of the state in the job's run directory.

    Raises:
        ArtifactError: No readable state.
        ConfigError: The state is another run's.
    """
    from privrank.federated.flower.rounds import _identity

    resolved = None if job.privacy is None else job.privacy.resolve(job.population)
    state = ServerState.load(Path(job.run_dir), _identity(job, resolved))
    plan = None if job.distributed_dp else job_plan(job)
    guarantee = None
    if job.distributed_dp and resolved is not None:
        from privrank.federated.flower.rounds import plan_of

        guarantee = distributed_dp_guarantee(
            plan_of(job, resolved), resolved, state.released_rounds,
            noise_scale=current_noise_scale(),
        )  # fmt: skip
    elif plan is not None and resolved is not None:
        guarantee = dp_fedavg_guarantee(
            plan, resolved, state.released_rounds, noise_scale=current_noise_scale()
        )
    popularity = np.maximum(state.arrays["item_counts"], 0.0)
    config = job.model.resolved(state.arrays["item_counts"], job.population)
    model = FedMF.assemble(config, train, state.arrays["item_factors"], popularity, guarantee)
    return DeployedModel(model, state, plan, guarantee)

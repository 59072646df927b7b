"""What a deployment run is: the job the ServerApp reads (a JSON file named in the run config).

``privrank federated serve`` writes the job into the run directory and submits the run with
``flwr run … --run-config "job='RUN/job.json'"``; the ServerApp, started by the SuperLink in its
own process, reads it back (:meth:`FlowerJob.read`). Everything in it is public or the
operator's: hyper-parameters, the round settings, the privacy target, the population and
catalogue sizes, where the state and the ledger are. No device data.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, model_validator

from privrank.atomic import atomic_file
from privrank.data._config import FrozenConfig
from privrank.errors import ConfigError
from privrank.federated.secure_aggregation import SecureAggregation
from privrank.federated.settings import FederatedSettings
from privrank.models._fedmf_rounds import FedMFConfig
from privrank.privacy.spec import PrivacySpec

__all__ = ["JOB_FILE", "FlowerJob"]

JOB_FILE = "job.json"


class FlowerJob(FrozenConfig):
    """A federated fedmf run on the Flower deployment runtime.

    Attributes:
        model: The objective's hyper-parameters (sent to the devices each round).
        settings: Rounds, cohort, sampling, learning rate, clipping (as the simulator's).
        privacy: DP-FedAvg target (``None``: non-private).
        population: :math:`N`, the devices enrolled (their ids are ``0..N-1``).
        n_items: :math:`|I|`, the public catalogue.
        data_fingerprint: Fingerprint of the training part the devices were made from (the run
            identity a resume is checked against).
        run_dir: Server state and metrics log.
        ledger_key: Ledger key a private run spends from.
        ledger_url: Ledger database URL (``None``: the configured one).
        resume: Continue the run saved in ``run_dir``.
        min_nodes: SuperNodes to wait for before enrolment.
        enrol_timeout: Seconds to wait for them, and for their enrolment answers.
        round_timeout: Seconds the server waits for a round's answers; devices that have not
            answered by then dropped out of the round.
        secure: Aggregate the item counts and every round by SecAgg+ over Flower messages
            (:mod:`privrank.federated.flower.secure`): the server learns only sums. ``None``:
            the devices' checked updates are summed by the server.
        distributed_dp: With ``privacy`` and ``secure``: distributed DP instead of central
            DP-FedAvg (:mod:`privrank.privacy.distributed_dp_plan`): every device adds its own
            discrete Gaussian share before masking, the server adds nothing.
        secret_sampling: With ``distributed_dp`` and Poisson sampling: account the rounds with
            amplification by sampling (the plan's module docstring says who is trusted for the
            secrecy of the sample).
        max_in_flight: The most messages of one exchange outstanding at once
            (:func:`~privrank.federated.flower.waves.exchange_in_waves`): it bounds the
            ClientApp processes the SuperNodes run at the same time, not the cohort. ``None``:
            every message of an exchange is sent at once.
    """

    model: FedMFConfig
    settings: FederatedSettings
    privacy: PrivacySpec | None = None
    population: int = Field(ge=1)
    n_items: int = Field(ge=1)
    data_fingerprint: str
    run_dir: str
    ledger_key: str | None = None
    ledger_url: str | None = None
    resume: bool = False
    min_nodes: int = Field(1, ge=1)
    enrol_timeout: float = Field(120.0, gt=0, allow_inf_nan=False)
    round_timeout: float = Field(60.0, gt=0, allow_inf_nan=False)
    secure: SecureAggregation | None = None
    distributed_dp: bool = False
    secret_sampling: bool = False
    max_in_flight: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _distributed_dp_needs(self) -> FlowerJob:
        if self.distributed_dp and (self.privacy is None or self.secure is None):
            raise ValueError(
                "distributed_dp needs a privacy target (--epsilon) and secure aggregation "
                "(--aggregation secagg)"
            )
        if self.secret_sampling and (
            not self.distributed_dp or self.settings.sampling != "poisson"
        ):
            raise ValueError("secret_sampling needs distributed_dp and Poisson sampling")
        return self

    def write(self, path: Path) -> None:
        """Write the job (atomically)."""
        with atomic_file(path, encoding="utf-8") as handle:
            handle.write(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> FlowerJob:
        """Read a job file.

        Raises:
            ConfigError: Missing or malformed file, or invalid values (named).
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read the federated job: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object (the federated job)")
        return cls.from_mapping(data)

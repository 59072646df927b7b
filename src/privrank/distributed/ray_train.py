"""Data-parallel training of SASRec and Mult-VAE on Ray Train (TorchTrainer over gloo).

:func:`fit_network` trains a torch model (a :class:`~privrank.models.base.Recommender` whose fit
understands ``FitOptions.parallel``: SASRec, Mult-VAE) with ``workers`` Ray Train workers, each
a CPU process holding a full replica of the network: a ``TorchTrainer`` with
``ScalingConfig(use_gpu=False)`` and the gloo backend of ``torch.distributed``. Every worker runs
the model's own fit with a :class:`TorchWorkers` as ``FitOptions.parallel``: all workers draw
the same logical batches from the fit's seed, each computes the gradient of its share, and the
gradients are summed over the workers by ``torch.distributed.all_reduce`` (one flat buffer per
step), so every replica takes the same optimizer step (:mod:`privrank.models.parallel` gives the
maths). With one worker the fit equals the single-process fit with the same seed. The workers
stop after the same epoch: the epoch loop takes its stop decisions collectively (the time budget
on the slowest worker's clock, early stopping on rank 0's validation metrics;
:mod:`privrank.models.parallel`), so no worker is left waiting in the gradient sum.

**Privacy.** A private fit (``FitOptions(privacy=spec)``) is the same user-level DP-SGD as the
single-process fit (:mod:`privrank.privacy.dpsgd`): every worker plans the run from the same
data (the same sampling rate ``q = b/n`` over all ``n`` users, the same steps and multiplier),
draws the same Poisson batch from the same secret stream, clips the per-user gradients of its
share of the users, and rank 0 alone adds the Gaussian noise before the clipped sums are
all-reduced (noise once per logical step, as Opacus's ``DistributedDPOptimizer``). The
guarantee, hence the accountant's ε, is that of the single-process fit; the ledger is charged
by the caller (:func:`privrank.workflow.spend.fit_and_spend`), once per fit, on the driver.
When the spec has no fixed noise seed, the driver draws a fresh secret one (128 bits from
:mod:`secrets`) for the workers, who must share the noise and sampling streams; it is never
recorded (the fitted model's guarantee carries no seed). **Trust:** the Ray cluster (its
workers, object store and Ray Train's storage) sees the training rows and that seed, and is
trusted with them as the process of a single-process fit is; only the fitted weights it returns
are released.

The fitted model travels from rank 0 to the driver as a model artifact (:meth:`Recommender.save`:
atomic, checksummed) in a Ray Train checkpoint, under a temporary storage directory that is
removed afterwards.

**Checkpoints and lost workers.** With ``max_failures > 0`` (or a ``FitOptions.checkpoint_dir``)
a non-private fit checkpoints after every epoch: each worker writes its own state (network,
optimizer, its random streams, the epoch loop's :class:`~privrank.models._epochs.LoopState`;
:mod:`privrank.models._torch_checkpoint`) into its folder ``rank-<r>-of-<w>``, and every worker
reports its folder through ``ray.train.report(..., checkpoint=...)`` from the fit's progress
callback, after the epoch; Ray Train merges the folders into one checkpoint in its storage.
When a worker dies, Ray Train (``FailureConfig(max_failures)``) restarts the whole group; each
new worker takes its rank's folder from ``ray.train.get_checkpoint()`` (the newest checkpoint
Ray Train registered). Every worker waits after each epoch's report until Ray Train's
controller has committed it (``ray.train.get_all_reported_checkpoints(COMMITTED)``, one round
trip to the controller per epoch; the controller is told to poll its workers every
``COMMIT_POLL_INTERVAL_S`` instead of Ray Train's 2 s, so the wait is a fraction of an epoch)
before it starts the next epoch, so a worker lost in epoch
``e + 1`` finds epoch ``e``'s checkpoint registered (without the wait the controller, which
takes reports when it next polls the workers, could still hold epoch ``e - 1``'s as the newest,
and the fit redid an epoch). The fit goes on from the epoch after it
with the same weights, optimizer state and random streams, so it ends with the weights of the
uninterrupted fit with the same seed and workers, bit for bit (torch on a CPU is deterministic
for a given number of threads; the all-reduce of the same inputs over the same workers is
too). The ranks' random streams differ (dropout), which is why every rank
keeps its own folder. A checkpoint folder is only taken by the fit it belongs to (model,
config, seed, data, validation part, rank and number of workers; see
:class:`~privrank.models._torch_checkpoint.TorchCheckpoints`).

A **private** fit writes no state (the secret Poisson-sampling and noise streams would be on
disk; :meth:`~privrank.models.base.Recommender.check_checkpoints`): after a lost worker it
starts over, with the same noise seed (the spec's, or the one the driver drew for this fit), so
it draws the same batches and the same noise and releases the weights of the uninterrupted
fit. Nothing is released before the fit ends, and the ledger is charged once, by the caller,
for the one released model. ``RayTrainRun.recoveries`` (and the model's ``recoveries_``) counts
the restarts: rank 0 reports a small ``attempts.json`` (this run's token, the attempt number;
no data) when every attempt starts.

With ``FitOptions.checkpoint_dir`` the run's storage is ``<checkpoint_dir>/ray-train`` (which
every node must see, as Ray Train's storage) under a name fixed by the fit's identity, and it is
kept: running the same fit again (the driver died, or the run gave up after ``max_failures``)
resumes from its last checkpoint there (Ray Train restores the run of that name).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privrank.config_errors import config_error
from privrank.data.interactions import Interactions
from privrank.errors import ConfigError, DistributedFitError
from privrank.models._torch_checkpoint import histories_digest
from privrank.models.base import FitOptions, FitProgress, Recommender
from privrank.models.parallel import DataParallel
from privrank.privacy.mechanism import _noise_scale_for_testing, current_noise_scale

__all__ = ["RayTrainConfig", "RayTrainRun", "TorchWorkers", "fit_network", "run_ray_train"]

#: The artifact directory inside the final checkpoint.
MODEL_DIR = "model"
#: Rank 0's record of the attempts of a run, inside every checkpoint: ``{"run", "attempt"}``.
ATTEMPTS_FILE = "attempts.json"
#: Checkpoints Ray Train keeps in its storage (the newest ones).
KEPT_CHECKPOINTS = 2
# Ray Train's controller takes the workers' reports (and commits their checkpoints) when it polls
# them, every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default). A checkpointing fit waits for
# that commit after every epoch, so the default interval cost up to 2 s per epoch (0.6 s measured
# on a 1.4 s ML-100K SASRec epoch); polling every 0.2 s costs the controller a few cheap status
# calls a second. A value the user set in the environment is kept.
COMMIT_POLL_INTERVAL_S = 0.2
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def rank_folder(rank: int, world_size: int) -> str:
    """The folder of one worker's fit state inside a checkpoint."""
    return f"rank-{rank}-of-{world_size}"


class RayTrainConfig(BaseModel):
    """Settings of a data-parallel fit on Ray Train.

    Attributes:
        workers: Ray Train workers (replicas); each takes ``cpus_per_worker`` CPUs.
        cpus_per_worker: CPUs (and torch threads) of each worker.
        max_failures: Times the fit is restarted after a worker dies (Ray Train's
            ``FailureConfig``); above 0, a non-private fit checkpoints after every epoch and
            a restart resumes from the last checkpoint (see the module docstring).
        storage_path: Directory of Ray Train's runs (seen by every node); ``None``: a
            temporary directory, removed after the fit.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int = Field(default=2, ge=1)
    cpus_per_worker: int = Field(default=1, ge=1)
    max_failures: int = Field(default=0, ge=0)
    storage_path: str | None = None

    @classmethod
    def of(cls, **settings: Any) -> RayTrainConfig:
        """A config, with invalid settings reported as one :class:`ConfigError`."""
        try:
            return cls(**settings)
        except ValidationError as exc:
            raise config_error(exc, "RayTrainConfig", model=cls) from None


class TorchWorkers:
    """:class:`~privrank.models.parallel.DataParallel` over the default ``torch.distributed``
    process group (Ray Train's, gloo on CPU)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.rank = int(dist.get_rank()) if dist.is_initialized() else 0
        self.world_size = int(dist.get_world_size()) if dist.is_initialized() else 1

    def all_reduce(self, tensors: Sequence[torch.Tensor]) -> None:
        """Sum the tensors over the workers, in place (one flat float64 buffer)."""
        if self.world_size == 1 or not tensors:
            return
        flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
        self._dist.all_reduce(flat)
        offset = 0
        for tensor in tensors:
            tensor.copy_(flat[offset : offset + tensor.numel()].reshape(tensor.shape))
            offset += tensor.numel()

    def broadcast(self, tensor: torch.Tensor) -> None:
        """Rank 0's ``tensor`` on every worker, in place."""
        if self.world_size > 1:
            self._dist.broadcast(tensor, src=0)


class _WorkerReports:
    """One worker's reports to Ray Train: its state folder, rank 0's record of the attempts,
    and (at the end, rank 0) the fitted model, in one checkpoint per report.

    Args:
        workers: This worker's place in the group.
        run: The driver's token of this run (attempts of another run are not counted).
        state: This worker's state folder (the fit's checkpoint directory), or ``None`` for a
            fit that writes no state (a private fit).
    """

    def __init__(self, workers: TorchWorkers, run: str, state: Path | None) -> None:
        self.workers = workers
        self.run = run
        self.state = state
        self.attempt = 1

    def restore(self) -> None:
        """Take this rank's state and the attempt count from Ray Train's latest checkpoint."""
        import ray.train

        previous = ray.train.get_checkpoint()
        if previous is None:
            return
        with previous.as_directory() as directory:
            record = Path(directory) / ATTEMPTS_FILE
            if record.is_file():
                attempts = json.loads(record.read_text())
                if attempts.get("run") == self.run:
                    self.attempt = int(attempts["attempt"]) + 1
            saved = Path(directory) / rank_folder(self.workers.rank, self.workers.world_size)
            if self.state is not None and saved.is_dir():
                shutil.copytree(saved, self.state, dirs_exist_ok=True)

    def report(
        self, metrics: dict[str, Any], model: Recommender | None = None, *, commit: bool = False
    ) -> None:
        """Report ``metrics`` with a checkpoint of this worker's state (and ``model``).

        Every worker must call it the same number of times (Ray Train's report is a barrier).
        With ``commit``, return only once Ray Train's controller has committed the checkpoint
        (so that a restart after this call resumes from it).
        """
        import ray.train

        with tempfile.TemporaryDirectory(prefix="privrank-ray-report-") as scratch:
            staging = Path(scratch)
            if self.state is not None and any(self.state.iterdir()):
                folder = rank_folder(self.workers.rank, self.workers.world_size)
                shutil.copytree(self.state, staging / folder)
            if self.workers.rank == 0:
                record = {"run": self.run, "attempt": self.attempt}
                (staging / ATTEMPTS_FILE).write_text(json.dumps(record))
            if model is not None:
                model.save(staging / MODEL_DIR)
            checkpoint = None
            if any(staging.iterdir()):
                checkpoint = ray.train.Checkpoint.from_directory(scratch)
            ray.train.report({**metrics, "attempt": self.attempt}, checkpoint=checkpoint)
        if commit and checkpoint is not None:
            from ray.train import CheckpointConsistencyMode

            ray.train.get_all_reported_checkpoints(
                consistency_mode=CheckpointConsistencyMode.COMMITTED
            )


def _train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the model's own fit as one of ``world_size`` replicas, resumed from
    its rank's state in Ray Train's latest checkpoint when there is one; with ``checkpoints``,
    its state reported after every epoch; rank 0 reports the fitted model at the end."""
    from privrank.models import create_model

    workers = TorchWorkers()
    parallel: DataParallel = workers
    model = create_model(config["model"], config["config"])
    finished: list[float] = []  # seconds since the fit started, at the end of each epoch
    with tempfile.TemporaryDirectory(prefix="privrank-ray-train-") as scratch:
        state = Path(scratch) / "state" if config["checkpoints"] else None
        if state is not None:
            state.mkdir()
        reports = _WorkerReports(workers, config["run"], state)
        if config["fault_tolerant"]:
            reports.restore()
            reports.report({"epoch": 0})  # counts this attempt even if it dies in epoch 1

        def progress(report: FitProgress) -> None:
            finished.append(report.elapsed_s)
            if state is not None:  # the epoch's state is written (before the progress report)
                reports.report({"epoch": report.epoch}, commit=True)

        options = FitOptions(
            progress=progress,
            seed=config["seed"],
            threads=config["threads"],
            privacy=config["privacy"],
            validation=config["validation"],
            test_shape=config["test_shape"],
            checkpoint_dir=state,
            parallel=parallel,
        )
        with _noise_scale_for_testing(config["noise_scale"]):  # the driver's (1 for real fits)
            model.fit(config["train"], options)
        metrics = {
            "epoch_ends_s": finished,
            "world_size": workers.world_size,
            "resumed_from_epoch": model.resumed_from_epoch_,
        }
        reports.report(metrics, model if workers.rank == 0 else None)


@dataclass(frozen=True)
class RayTrainRun:
    """A finished data-parallel fit.

    Attributes:
        model: The fitted model.
        epoch_seconds: Seconds of each epoch on rank 0 (from its progress reports).
        wall_seconds: Seconds of the whole Ray Train run seen by the driver (worker start-up,
            the fit, the return of the model).
        recoveries: Times Ray Train restarted the workers after one was lost (0 without
            ``max_failures``).
        resumed_from_epoch: The epoch whose checkpoint the last attempt resumed from (``None``:
            it started afresh).
    """

    model: Recommender
    epoch_seconds: tuple[float, ...]
    wall_seconds: float
    recoveries: int = 0
    resumed_from_epoch: int | None = None


def fit_network(
    model: Recommender,
    train: Interactions,
    options: FitOptions,
    config: RayTrainConfig,
) -> Recommender:
    """The model of :func:`run_ray_train` (see there)."""
    return run_ray_train(model, train, options, config).model


def run_ray_train(
    model: Recommender,
    train: Interactions,
    options: FitOptions,
    config: RayTrainConfig,
) -> RayTrainRun:
    """Fit a new model of ``model``'s class and config on ``train`` with Ray Train workers.

    Ray must be initialised by the caller (:func:`privrank.distributed.ray_engine.ensure_ray`).

    Args:
        model: The model whose class and config to fit (not changed).
        train: The training interactions.
        options: Seed, threads (of each worker; ``0``: ``config.cpus_per_worker``), privacy
            spec, validation part, test shape and checkpoint directory (see the module
            docstring); its engine and progress callback stay on the driver.
        config: Workers, CPUs, failures and storage.

    Returns:
        The fitted model (a private fit's guarantee is the single-process fit's; its
        ``recoveries_`` and ``resumed_from_epoch_`` say what the run recovered from) and
        timings.

    Raises:
        ConfigError: The model has no data-parallel fit, or a private fit was given a
            checkpoint directory.
        DistributedFitError: The fit failed on the workers (after ``max_failures`` restarts).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not (model.uses_torch and model.supports_engine):
        raise ConfigError(f"{type(model).__name__} has no data-parallel fit on Ray Train")
    if options.checkpoint_dir is not None:
        model.check_checkpoints(private=options.privacy is not None)
    spec, drawn_seed = options.privacy, False
    if spec is not None and spec.noise_seed is None:
        # The workers must share the secret sampling and noise streams: one fresh secret seed.
        spec, drawn_seed = spec.model_copy(update={"noise_seed": secrets.randbits(128)}), True
    threads = options.threads or config.cpus_per_worker
    fault_tolerant = config.max_failures > 0 or options.checkpoint_dir is not None
    loop_config = {
        "model": model.name,
        "config": model.config.model_dump(),
        "train": train,
        "seed": options.seed,
        "threads": threads,
        "privacy": spec,
        "validation": options.validation,
        "test_shape": options.test_shape,
        "noise_scale": current_noise_scale(),
        "run": uuid.uuid4().hex,
        "fault_tolerant": fault_tolerant,
        "checkpoints": fault_tolerant and spec is None,
    }
    kept = options.checkpoint_dir is not None or config.storage_path is not None
    if options.checkpoint_dir is not None:
        storage = str(Path(options.checkpoint_dir).resolve() / "ray-train")
        name = f"privrank-{model.name}-{_fit_digest(model, train, options, config)[:16]}"
    else:
        storage = config.storage_path or tempfile.mkdtemp(prefix="privrank-ray-train-")
        name = f"privrank-{model.name}-{uuid.uuid4().hex[:12]}"
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=config.workers,
            use_gpu=False,
            resources_per_worker={"CPU": config.cpus_per_worker},
        ),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=KEPT_CHECKPOINTS),
        ),
    )
    try:
        started = time.perf_counter()
        try:
            with _controller_poll_interval(COMMIT_POLL_INTERVAL_S if fault_tolerant else None):
                result = trainer.fit()

        except Exception as exc:  # Ray Train's TrainingFailedError wraps the worker's error
            raise DistributedFitError(
                f"the Ray Train fit of {model.name} failed on its workers: {exc}"
            ) from exc
        if result.checkpoint is None:
            raise DistributedFitError(f"the Ray Train fit of {model.name} returned no model")
        with result.checkpoint.as_directory() as directory:
            fitted = type(model).load(Path(directory) / MODEL_DIR)
        wall = time.perf_counter() - started
    finally:
        if not kept:
            shutil.rmtree(storage, ignore_errors=True)
    if drawn_seed and fitted.privacy_guarantee_ is not None:
        fitted.privacy_guarantee_ = dataclasses.replace(fitted.privacy_guarantee_, noise_seed=None)
    metrics = result.metrics or {}
    ends = [0.0, *(float(t) for t in metrics.get("epoch_ends_s", ()))]
    epochs = tuple(b - a for a, b in itertools.pairwise(ends))
    resumed = metrics.get("resumed_from_epoch")
    fitted.recoveries_ = int(metrics.get("attempt", 1)) - 1
    fitted.resumed_from_epoch_ = None if resumed is None else int(resumed)
    return RayTrainRun(
        model=fitted,
        epoch_seconds=epochs,
        wall_seconds=wall,
        recoveries=fitted.recoveries_,
        resumed_from_epoch=fitted.resumed_from_epoch_,
    )


@contextlib.contextmanager
def _controller_poll_interval(seconds: float | None) -> Iterator[None]:
    """Have the Ray Train controller started inside the block poll its workers every
    ``seconds`` (``None``, or an interval the user set in the environment: unchanged).

    Ray Train passes ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` from the driver's environment to the
    controller it starts in ``fit`` (``get_env_vars_to_propagate``); it is restored afterwards.
    """
    if seconds is None or HEALTH_CHECK_ENV in os.environ:
        yield
        return
    os.environ[HEALTH_CHECK_ENV] = str(seconds)
    try:
        yield
    finally:
        os.environ.pop(HEALTH_CHECK_ENV, None)


def _fit_digest(
    model: Recommender, train: Interactions, options: FitOptions, config: RayTrainConfig
) -> str:
    """SHA-256 of what a data-parallel fit is (model, config, seed, training histories,
    validation part, test shape, workers and threads): the name of its kept Ray Train run."""
    validation = options.validation
    identity = {
        "model": model.name,
        "config": model.config.model_dump(mode="json"),
        "seed": options.seed,
        "histories_sha256": histories_digest(*train.sequences()),
        "validation_sha256": None
        if validation is None
        else histories_digest(*validation.sequences()),
        "test_shape": options.test_shape,
        "workers": config.workers,
        "threads": options.threads or config.cpus_per_worker,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

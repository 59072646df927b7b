"""Data-parallel training of SASRec and Mult-VAE on Ray Train (TorchTrainer over gloo).

:func:`fit_network` trains a torch model (a :class:`~privrank.models.base.Recommender` whose fit
understands ``FitOptions.parallel``: SASRec, Mult-VAE) with ``workers`` Ray Train workers, each
a CPU process holding a full replica of the network: a ``TorchTrainer`` with
``ScalingConfig(use_gpu=False)`` and the gloo backend of ``torch.distributed``. Every worker runs
the model's own fit with a :class:`TorchWorkers` as ``FitOptions.parallel``: all workers draw
the same logical batches from the fit's seed, each computes the gradient of its share, and the
gradients are summed over the workers by ``torch.distributed.all_reduce`` (one flat buffer per
step), so every replica takes the same optimizer step (:mod:`privrank.models.parallel` gives the
maths). With one worker the fit equals the single-process fit with the same seed.

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
"""

from __future__ import annotations

import dataclasses
import itertools
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privrank.config_errors import config_error
from privrank.data.interactions import Interactions
from privrank.errors import ConfigError, DistributedFitError
from privrank.models.base import FitOptions, Recommender
from privrank.models.parallel import DataParallel
from privrank.privacy.mechanism import _noise_scale_for_testing, current_noise_scale

__all__ = ["RayTrainConfig", "RayTrainRun", "TorchWorkers", "fit_network", "run_ray_train"]

#: The artifact directory inside the final checkpoint.
MODEL_DIR = "model"


class RayTrainConfig(BaseModel):
    """Settings of a data-parallel fit on Ray Train.

    Attributes:
        workers: Ray Train workers (replicas); each takes ``cpus_per_worker`` CPUs.
        cpus_per_worker: CPUs (and torch threads) of each worker.
        max_failures: Times the fit is restarted after a worker dies (Ray Train's
            ``FailureConfig``).
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


def _train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the model's own fit as one of ``world_size`` replicas; rank 0
    reports the fitted model as the final checkpoint."""
    import ray.train

    from privrank.models import create_model

    workers = TorchWorkers()
    parallel: DataParallel = workers
    model = create_model(config["model"], config["config"])
    finished: list[float] = []  # seconds since the fit started, at the end of each epoch
    options = FitOptions(
        progress=lambda report: finished.append(report.elapsed_s),
        seed=config["seed"],
        threads=config["threads"],
        privacy=config["privacy"],
        validation=config["validation"],
        parallel=parallel,
    )
    with _noise_scale_for_testing(config["noise_scale"]):  # the driver's (1 for real fits)
        model.fit(config["train"], options)
    metrics = {"epoch_ends_s": finished, "world_size": workers.world_size}
    with tempfile.TemporaryDirectory(prefix="privrank-ray-train-") as scratch:
        checkpoint = None
        if workers.rank == 0:
            model.save(Path(scratch) / MODEL_DIR)
            checkpoint = ray.train.Checkpoint.from_directory(scratch)
        ray.train.report(metrics, checkpoint=checkpoint)


@dataclass(frozen=True)
class RayTrainRun:
    """A finished data-parallel fit.

    Attributes:
        model: The fitted model.
        epoch_seconds: Seconds of each epoch on rank 0 (from its progress reports).
        wall_seconds: Seconds of the whole Ray Train run seen by the driver (worker start-up,
            the fit, the return of the model).
    """

    model: Recommender
    epoch_seconds: tuple[float, ...]
    wall_seconds: float


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
            spec and validation part; its engine and progress callback stay on the driver.
        config: Workers, CPUs, failures and storage.

    Returns:
        The fitted model (a private fit's guarantee is the single-process fit's) and timings.

    Raises:
        ConfigError: The model has no data-parallel fit.
        DistributedFitError: The fit failed on the workers (after ``max_failures`` restarts).
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not (model.uses_torch and model.supports_engine):
        raise ConfigError(f"{type(model).__name__} has no data-parallel fit on Ray Train")
    spec, drawn_seed = options.privacy, False
    if spec is not None and spec.noise_seed is None:
        # The workers must share the secret sampling and noise streams: one fresh secret seed.
        spec, drawn_seed = spec.model_copy(update={"noise_seed": secrets.randbits(128)}), True
    threads = options.threads or config.cpus_per_worker
    loop_config = {
        "model": model.name,
        "config": model.config.model_dump(),
        "train": train,
        "seed": options.seed,
        "threads": threads,
        "privacy": spec,
        "validation": options.validation,
        "noise_scale": current_noise_scale(),
    }
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
        ),
    )
    try:
        started = time.perf_counter()
        try:
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
        if config.storage_path is None:
            shutil.rmtree(storage, ignore_errors=True)
    if drawn_seed and fitted.privacy_guarantee_ is not None:
        fitted.privacy_guarantee_ = dataclasses.replace(fitted.privacy_guarantee_, noise_seed=None)
    ends = [0.0, *(float(t) for t in (result.metrics or {}).get("epoch_ends_s", ()))]
    epochs = tuple(b - a for a, b in itertools.pairwise(ends))
    return RayTrainRun(model=fitted, epoch_seconds=epochs, wall_seconds=wall)

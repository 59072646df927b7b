"""Model and fit configuration: frozen pydantic models validated at construction.

Validation errors become one :class:`~privrank.errors.ConfigError` listing every problem in the
format of :mod:`privrank.config_errors`: ``EASE.regularization: got -1; expected a float > 0``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privrank.config_errors import config_error
from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.models._data_parallel import DataParallel
from privrank.models.engine import FitEngine
from privrank.privacy.spec import PrivacySpec

__all__ = ["FitOptions", "FitProgress", "ModelConfig", "available_cores", "build_model_config"]


class ModelConfig(BaseModel):
    """Base of every model's hyper-parameters: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


C = TypeVar("C", bound=ModelConfig)


@dataclass(frozen=True)
class FitProgress:
    """One progress report from a training run.

    Attributes:
        model: Registry name of the model being trained.
        epoch: Epochs (or steps) completed, from 1.
        epochs: Total epochs planned (1 for closed-form models).
        loss: Training objective after this epoch, when the model computes it.
        elapsed_s: Seconds since ``fit`` started.
        metrics: Any other numbers the model reports (validation metrics, ...).
    """

    model: str
    epoch: int
    epochs: int
    loss: float | None = None
    elapsed_s: float = 0.0
    metrics: Mapping[str, float] = field(default_factory=dict)


class FitOptions(BaseModel):
    """How to run a fit (as opposed to *what* to fit, which is the model's config).

    Attributes:
        seed: Seed of every random draw the fit makes (initialisation, sampling).
        threads: Threads for the fit's numerical kernels (torch intra-op pool, implicit's
            OpenMP pool); ``0`` means every core this process may use.
        progress: Called with a :class:`FitProgress` after each epoch (once for closed forms).
        privacy: A :class:`~privrank.privacy.spec.PrivacySpec` (or its dict form). Models that
            cannot honour it raise :class:`~privrank.errors.ConfigError` rather than train
            without it.
        validation: A validation part (same vocabulary as the training data, disjoint from it).
            Models that early-stop (BPR, Mult-VAE, SASRec) report its NDCG@10 and HR@10 after
            each evaluated epoch and stop early on NDCG@10, keeping the best weights; iALS
            reports them after every epoch when there is a ``progress`` callback (it does not
            stop early); other models ignore it.
        engine: Where the data-parallel part of the fit runs (a
            :class:`~privrank.models.engine.FitEngine`, e.g. ``privrank.distributed.RayEngine``);
            ``None``: in this process. Models without ``supports_engine`` refuse one.
        checkpoint_dir: Directory where an iterative fit that checkpoints (iALS, SASRec,
            Mult-VAE; :mod:`privrank.models._torch_checkpoint`) writes its
            state after each epoch, and resumes from when it holds the checkpoint of the same
            fit (same model, config, seed and training data); ``None``: no checkpoints.
        parallel: This process is one worker of a data-parallel fit of a torch model
            (:class:`~privrank.models.parallel.DataParallel`; set by an engine on its workers,
            e.g. ``privrank.distributed.ray_train``); ``None``: the fit is not shared.
        test_shape: What the fitted model will be tested on, for a model that carves its own
            validation part when given none (SASRec): ``next`` (each user's next items, as a
            leave-last-out or temporal split tests), ``random`` (items missing from anywhere in
            a user's history, as a random per-user holdout tests) or ``None`` (not known: the
            model's own default). Set by the evaluation runner from the protocol's split.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    seed: int = Field(0, ge=0)
    threads: int = Field(0, ge=0)
    progress: Callable[[FitProgress], None] | None = None
    privacy: PrivacySpec | None = None
    validation: Interactions | None = None
    engine: FitEngine | None = None
    checkpoint_dir: Path | None = None
    parallel: DataParallel | None = None
    test_shape: Literal["next", "random"] | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, "FitOptions", model=type(self)) from None

    def resolved_threads(self) -> int:
        """The thread count to use: ``threads``, or the available cores when it is 0."""
        return self.threads or available_cores()


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def build_model_config(
    config_class: type[C], owner: str, config: Any, params: Mapping[str, Any]
) -> C:
    """Build a model's config from an instance, a mapping and/or keyword parameters.

    Args:
        config_class: The model's config class.
        owner: The model's display name, used in messages.
        config: ``None``, an instance of ``config_class`` or a mapping of parameters.
        params: Keyword parameters that override ``config``.

    Raises:
        ConfigError: Listing every invalid or unknown parameter.
    """
    if isinstance(config, config_class) and not params:
        return config
    if isinstance(config, config_class):
        base = config.model_dump()
    elif config is None:
        base = {}
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        raise ConfigError(
            f"The config of {owner} must be a {config_class.__name__} or a mapping of "
            f"parameters. Got {type(config).__name__} instead."
        )
    try:
        return config_class(**(base | dict(params)))
    except ValidationError as exc:
        hint = partial(_private_block_hint, config_class)
        raise config_error(exc, owner, model=config_class, hint=hint) from None


def _private_block_hint(config_class: type[ModelConfig], path: tuple[str, ...]) -> str | None:
    """Where a flat ``private_<setting>`` key belongs: the nested ``private`` block."""
    name = path[0] if len(path) == 1 else ""
    if not name.startswith("private_") or "private" not in config_class.model_fields:
        return None
    setting = name.removeprefix("private_")
    return (
        f"settings of a private fit go in the nested 'private' block: "
        f"private={{{setting!r}: ...}} (CLI: --param private.{setting}=VALUE)"
    )

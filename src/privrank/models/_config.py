"""Model and fit configuration: frozen pydantic models validated at construction.

Validation errors become one :class:`~privrank.errors.ConfigError` listing every problem in
scikit-learn's words: "The 'regularization' parameter of EASE must be a float > 0. Got -1
instead."
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.privacy.spec import PrivacySpec

__all__ = ["FitOptions", "FitProgress", "ModelConfig", "available_cores", "validate_config"]


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
            each evaluated epoch and stop early on NDCG@10, keeping the best weights; other
            models ignore it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    seed: int = Field(0, ge=0)
    threads: int = Field(0, ge=0)
    progress: Callable[[FitProgress], None] | None = None
    privacy: PrivacySpec | None = None
    validation: Interactions | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, type(self), "FitOptions")) from None

    def resolved_threads(self) -> int:
        """The thread count to use: ``threads``, or the available cores when it is 0."""
        return self.threads or available_cores()


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def validate_config(config_class: type[C], owner: str, config: Any, params: Mapping[str, Any]) -> C:
    """Build a config from an instance, a mapping and/or keyword parameters.

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
        raise ConfigError(_describe(exc, config_class, owner)) from None


def _describe(exc: ValidationError, model: type[BaseModel], owner: str) -> str:
    fields = model.model_fields
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else None
        if len(error["loc"]) > 1 and name == "private":
            problems.append(_describe_private(error, owner))
        elif error["type"] == "extra_forbidden":
            known = ", ".join(fields) or "none"
            problems.append(f"{owner} has no parameter {name!r}; its parameters are: {known}.")
            if name is not None and name.startswith("private_") and "private" in fields:
                problems.append(
                    f"Settings of a private fit go in the nested 'private' block: "
                    f"private={{{name.removeprefix('private_')!r}: ...}} "
                    f"(CLI: --param private.{name.removeprefix('private_')}=VALUE)."
                )
        elif name in fields and error["type"] != "value_error":
            got = error.get("input")
            got_text = repr(got) if isinstance(got, str) else str(got)
            problems.append(
                f"The {name!r} parameter of {owner} must be {_expected(fields[name])}. "
                f"Got {got_text} instead."
            )
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(message if name is None else f"{owner} {name!r}: {message}")
    return " ".join(problems)


def _describe_private(error: Any, owner: str) -> str:
    """One problem inside a nested ``private`` block, named by its dotted path."""
    path = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{owner} has no private setting {path!r} ({message})."
    got = error.get("input")
    return f"The {path!r} setting of {owner} is invalid: {message}. Got {got!r} instead."


#: Keyed by a field's annotation, which may be any object (``Literal[...]``, ``X | None``, ...).
_TYPE_WORDS: dict[object, str] = {int: "an int", float: "a float", bool: "a bool", str: "a string"}
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _expected(info: FieldInfo) -> str:
    annotation = info.annotation
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(annotation))
    words = _TYPE_WORDS.get(annotation, f"a {getattr(annotation, '__name__', annotation)}")
    bounds = [
        f"{symbol} {getattr(meta, attr)}"
        for meta in info.metadata
        for attr, symbol in _BOUNDS
        if getattr(meta, attr, None) is not None
    ]
    return words + (" " + " and ".join(bounds) if bounds else "")

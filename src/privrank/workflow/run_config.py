"""What an evaluation run does: its models, protocols and options (:class:`RunConfig`).

A run config is built in code, read from a JSON or TOML file (:meth:`RunConfig.from_file`), or
assembled by ``privrank evaluate``; :func:`privrank.workflow.runner.run` carries it out.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from privrank.data._config import FrozenConfig, validate_as
from privrank.errors import ConfigError
from privrank.privacy.spec import PrivacySpec
from privrank.workflow.ctr_protocols import CTRProtocolSpec
from privrank.workflow.protocols import ProtocolSpec, resolve_protocol

__all__ = ["ModelSpec", "RunConfig"]


class ModelSpec(FrozenConfig):
    """One model of a run.

    Attributes:
        name: Registry name (``ease``, ``implicit-als``, ...; see ``privrank.models``).
        label: Name in tables and file names (default: ``name``); unique within a run.
        params: Hyper-parameters (the model's config; unset ones take their defaults).
        privacy: Fit with user-level differential privacy under this
            :class:`~privrank.privacy.spec.PrivacySpec` (models with ``supports_privacy``
            only). The run reserves the spend in the privacy budget ledger before the fit, keyed
            by the protocol's source dataset, and commits it once the model is evaluated.
    """

    name: str = Field(min_length=1)
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    privacy: PrivacySpec | None = None

    @property
    def display(self) -> str:
        """The label, or the registry name."""
        return self.label or self.name


class RunConfig(FrozenConfig):
    """What to run and how.

    Attributes:
        protocols: Built-in protocol names (``ml100k-holdout``, ``beauty-loo``) or protocol
            specs (:class:`~privrank.workflow.protocols.ProtocolSpec`).
        models: The models; a bare string is a registry name with default parameters.
        baseline: Label of the model every other is compared with (default: the first).
        cutoffs: Cutoffs to evaluate instead of the protocol's (its headline cutoffs are kept).
        seed: Seed of every fit.
        threads: Threads of every fit (``0``: all available cores).
        test_history: ``fold-in`` or ``refit`` (see the module docstring).
        beyond_accuracy: Also compute novelty, ARP, coverage and Gini.
        confidence: Nominal coverage of the intervals.
        n_resamples: Bootstrap resamples.
        bootstrap_seed: Seed of the bootstrap resampling.
        batch_size: Users scored at once.
        validation: Also rank the validation items (history ``train``) with each model fitted
            on ``train``, and record the means under ``validation`` (for tuning).
    """

    protocols: tuple[str | ProtocolSpec | CTRProtocolSpec, ...] = Field(min_length=1)
    models: tuple[ModelSpec, ...] = Field(min_length=1)
    baseline: str | None = None
    cutoffs: tuple[int, ...] | None = None
    seed: int = Field(default=0, ge=0)
    threads: int = Field(default=0, ge=0)
    test_history: Literal["fold-in", "refit"] = "fold-in"
    beyond_accuracy: bool = True
    confidence: float = Field(default=0.95, gt=0, lt=1)
    n_resamples: int = Field(default=1000, ge=1)
    bootstrap_seed: int = Field(default=0, ge=0)
    batch_size: int = Field(default=1024, ge=1)
    validation: bool = False

    @field_validator("models", mode="before")
    @classmethod
    def _bare_names(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple({"name": v} if isinstance(v, str) else v for v in value)
        return value

    @field_validator("protocols", mode="before")
    @classmethod
    def _protocols(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(v if isinstance(v, str) else resolve_protocol(v) for v in value)
        return value

    @field_validator("cutoffs")
    @classmethod
    def _cutoffs(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (not value or any(k < 1 for k in value)):
            raise ValueError(f"cutoffs must be a non-empty list of integers >= 1, got {value}")
        return None if value is None else tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _labels(self) -> RunConfig:
        labels = [m.display for m in self.models]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"model labels must be unique; repeated: {repeated} (set 'label')")
        if self.baseline is not None and self.baseline not in labels:
            raise ValueError(f"baseline {self.baseline!r} is not one of the models {labels}")
        names = [resolve_protocol(p).name for p in self.protocols]
        if len(set(names)) != len(names):
            raise ValueError(f"protocol names must be unique; got {names}")
        return self

    @property
    def baseline_label(self) -> str:
        """The baseline's label (the first model unless ``baseline`` is set)."""
        return self.baseline or self.models[0].display

    def protocol_specs(self) -> list[ProtocolSpec | CTRProtocolSpec]:
        """The protocols, resolved."""
        return [resolve_protocol(p) for p in self.protocols]

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        """Read a run config from a ``.json`` or ``.toml`` file.

        Raises:
            ConfigError: Unreadable file, unknown extension, or an invalid config (every
                problem named).
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read run config {path}: {exc}") from exc
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            elif path.suffix.lower() == ".toml":
                data = tomllib.loads(text)
            else:
                raise ConfigError(f"run config {path}: expected a .json or .toml file")
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"run config {path} is not valid {path.suffix[1:]}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"run config {path}: expected a table/object at the top level")
        try:
            return validate_as(cls, data, f"RunConfig({path.name})")
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def check_models(self) -> None:
        """Build every model once, so that all bad names and parameters are reported together.

        Runs before any data is read or any model is fitted (:func:`privrank.workflow.runner.run`
        calls it first), so a run config is validated whole: a private model whose spec lacks
        ``max_interactions_per_user`` is refused here, not after the other models were fitted.

        Raises:
            ConfigError: Listing every unknown model, invalid parameter, privacy specification
                given to a model without a private fit, and private spec the model cannot fit
                under (:meth:`~privrank.models.Recommender.check_privacy`).
        """
        import privrank.ranking  # noqa: F401  (registers the ranking layer's models)
        from privrank.models import create_model
        from privrank.ranking.ctr import create_ranker, is_ranker

        problems = []
        for spec in self.models:
            if is_ranker(spec.name):  # a CTR ranker (for CTR protocols)
                try:
                    create_ranker(spec.name, spec.params)
                except ConfigError as exc:
                    problems.append(f"{spec.display}: {exc}")
                if spec.privacy is not None:
                    problems.append(
                        f"{spec.display}: the CTR ranker {spec.name} cannot train with "
                        "differential privacy yet (remove 'privacy')"
                    )
                continue
            try:
                model = create_model(spec.name, spec.params)
            except ConfigError as exc:
                problems.append(f"{spec.display}: {exc}")
                continue
            if spec.privacy is None:
                continue
            if not model.supports_privacy:
                problems.append(
                    f"{spec.display}: {spec.name} cannot train with differential privacy "
                    "(remove 'privacy' or pick a model with a private fit)"
                )
                continue
            try:
                model.check_privacy(spec.privacy)
            except ConfigError as exc:
                problems.append(f"{spec.display}: {exc}")
        if problems:
            raise ConfigError("invalid models: " + " | ".join(problems))

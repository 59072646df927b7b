"""Hyper-parameter search on a validation split, with Optuna, within a trial and time budget.

**Protocol.** Each trial draws a config from the model's :class:`SearchSpace`, fits the model
on ``train`` (seeded), and scores it by full ranking on ``validation``: every validation user
gets the whole catalogue ranked, their ``train`` items excluded, and the objective is the mean
of one ranking metric (``ndcg@10`` by default) over those users. Test data never enters
:func:`tune`: it receives only ``train`` and ``validation``, and :func:`carve_validation` makes a
validation split out of a training part (a per-user random holdout of it), so a protocol's test
part stays untouched until the tuned model is evaluated once.

**Budget.** A study stops after ``n_trials`` trials or ``time_budget_s`` seconds, whichever
comes first. The time budget is a wall-clock deadline: no trial starts after it, and a fit still
running when it passes is abandoned at the end of its current epoch (the model's progress
report), its trial recorded as ``PRUNED`` with ``stopped: time budget``. The overshoot is
therefore at most one epoch plus one validation evaluation (a closed-form model reports once,
at the end of its fit). A trial whose fit diverges (:class:`~privrank.models.ModelFitError`)
is recorded as ``FAIL`` and the study goes on.

**Fits.** Every trial fits through :func:`privrank.workflow.spend.fit_and_spend`, the one fit
path; trials carry no privacy spec, so tuning reserves no privacy budget. Searching on private
data is refused, not accounted (:func:`privrank.tuning.auto.refuse_private_tuning`).

**Start.** By default the first trial is the model's default config (when it lies in the
search space); the sampler then explores (TPE: ``startup_trials`` random trials, then modelled).

**Determinism.** The sampler (TPE, or random search) is seeded with ``seed``, and every fit
uses the same ``seed``; with deterministic fits (a fixed thread count) the same call draws the
same configs in the same order.

**Record.** :meth:`TuneResult.save` writes one JSON file atomically: the best config (complete,
as the model's config), its validation score and trial number, every trial (state, value,
params, seconds), the search space, the tuning options, fingerprints of the data and library
versions. :func:`load_best_config` reads the best config back as the model's config object.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from privrank.atomic import atomic_file
from privrank.config_errors import config_error
from privrank.data.fingerprint import fingerprint
from privrank.data.interactions import Interactions
from privrank.data.splits import HoldoutSplit, split
from privrank.errors import ArtifactError, ConfigError
from privrank.metrics.evaluate import RANKING_METRICS, EvaluationConfig, RankingMetric, evaluate
from privrank.tuning.search_spaces import SearchSpace, search_space
from privrank.workflow.records import library_versions
from privrank.workflow.spend import fit_and_spend

__all__ = [
    "TUNING_FORMAT",
    "TrialRecord",
    "TuneConfig",
    "TuneResult",
    "carve_validation",
    "load_best_config",
    "tune",
    "validation_score",
]

TUNING_FORMAT = "privrank.tuning"
_VERSION = 1


class TuneConfig(BaseModel):
    """How to tune (the model and its search space are arguments of :func:`tune`).

    Attributes:
        metric: The validation metric to maximise, ``"<metric>@<k>"`` with a ranking metric of
            :data:`~privrank.metrics.RANKING_METRICS` (``ndcg@10``, ``recall@20``, ...).
        n_trials: Most trials; ``None``: as many as the time budget allows.
        time_budget_s: Wall-clock budget of the whole search in seconds; ``None``: no limit.
            At least one of ``n_trials`` and ``time_budget_s`` must be set.
        seed: Seed of the sampler and of every fit.
        threads: Threads of every fit (``0``: every core this process may use).
        sampler: ``tpe`` (Optuna's tree-structured Parzen estimator) or ``random``.
        startup_trials: Random trials before TPE starts modelling (``tpe`` only).
        start_from_defaults: Make the first trial the model's default config (when every
            default lies in the search space), so the best config is never worse on validation
            than the defaults.
        fixed: Model parameters held fixed in every trial (not searched).
        batch_size: Users scored at once in each validation evaluation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str = "ndcg@10"
    n_trials: int | None = Field(default=None, ge=1)
    time_budget_s: float | None = Field(default=None, gt=0)
    seed: int = Field(default=0, ge=0)
    threads: int = Field(default=0, ge=0)
    sampler: Literal["tpe", "random"] = "tpe"
    startup_trials: int = Field(default=10, ge=1)
    start_from_defaults: bool = True
    fixed: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(default=1024, ge=1)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, "TuneConfig", model=type(self)) from None

    @model_validator(mode="after")
    def _checks(self) -> TuneConfig:
        if self.n_trials is None and self.time_budget_s is None:
            raise ValueError("set n_trials, time_budget_s or both; the search needs a budget")
        self.metric_parts()
        return self

    def metric_parts(self) -> tuple[RankingMetric, int]:
        """``("ndcg", 10)`` for ``metric="ndcg@10"``.

        Raises:
            ValueError: Not ``<ranking metric>@<k>``.
        """
        name, sep, k = self.metric.partition("@")
        if sep and k.isdigit() and int(k) >= 1:
            for metric in RANKING_METRICS:
                if name == metric:
                    return metric, int(k)
        raise ValueError(
            f"metric must be '<metric>@<k>' with metric one of {', '.join(RANKING_METRICS)} "
            f"and k >= 1, e.g. 'ndcg@10'; got {self.metric!r}"
        )


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a study.

    Attributes:
        number: Trial number, from 0, in the order trials ran.
        state: ``COMPLETE``, ``PRUNED`` (stopped by the time budget) or ``FAIL``.
        value: The validation metric (``None`` unless ``COMPLETE``).
        params: The searched parameters drawn for the trial.
        seconds: Wall time of the trial (fit and validation).
        note: Why a trial did not complete (empty otherwise).
    """

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    seconds: float
    note: str = ""


@dataclass(frozen=True)
class TuneResult:
    """The outcome of :func:`tune`.

    Attributes:
        model: Registry name of the tuned model.
        metric: The validation metric maximised.
        best_config: The best trial's complete config (searched, fixed and default parameters).
        best_params: The searched parameters of the best trial.
        best_value: Its validation metric.
        best_trial: Its trial number.
        trials: Every trial, in order.
        config: The tuning options.
        space: The search space, as :meth:`SearchSpace.describe` writes it.
        elapsed_s: Wall time of the whole search.
        stop_reason: ``trials`` (the trial budget ran out) or ``time budget``.
        data: Rows and fingerprints of ``train`` and ``validation``, plus any context the caller
            adds (protocol, dataset, how validation was carved).
    """

    model: str
    metric: str
    best_config: dict[str, Any]
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    trials: tuple[TrialRecord, ...]
    config: TuneConfig
    space: dict[str, Any]
    elapsed_s: float
    stop_reason: str
    data: dict[str, Any] = field(default_factory=dict)

    def model_config(self) -> Any:
        """The best config as the model's config object."""
        from privrank.models import model_class

        return model_class(self.model).Config(**self.best_config)

    def trials_table(self) -> pa.Table:
        """Every trial as an Arrow table: number, state, value, seconds, one column per
        searched parameter, note."""
        names = list(self.space.get("params", {}))
        columns: dict[str, list[Any]] = {
            "number": [t.number for t in self.trials],
            "state": [t.state for t in self.trials],
            "value": [t.value for t in self.trials],
            "seconds": [t.seconds for t in self.trials],
        }
        for name in names:
            columns[name] = [t.params.get(name) for t in self.trials]
        columns["note"] = [t.note for t in self.trials]
        return pa.table(columns)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (see the module docstring)."""
        return {
            "format": TUNING_FORMAT,
            "version": _VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": {"name": self.model, "config": self.best_config},
            "metric": self.metric,
            "best": {
                "trial": self.best_trial,
                "value": self.best_value,
                "params": self.best_params,
            },
            "tune_config": self.config.model_dump(mode="json"),
            "search_space": self.space,
            "elapsed_s": self.elapsed_s,
            "stop_reason": self.stop_reason,
            "trials": [
                {
                    "number": t.number,
                    "state": t.state,
                    "value": t.value,
                    "params": t.params,
                    "seconds": t.seconds,
                    "note": t.note,
                }
                for t in self.trials
            ],
            "data": self.data,
            "versions": library_versions() | {"optuna": _optuna().__version__},
        }

    def save(self, path: str | Path) -> Path:
        """Write the JSON record to ``path`` atomically (temporary file, then rename)."""
        path = Path(path)
        with atomic_file(path, encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=2, allow_nan=False)
            handle.write("\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> TuneResult:
        """Read a record written by :meth:`save`.

        Raises:
            ArtifactError: Unreadable, not a tuning record, or an unknown version.
        """
        record = _read_record(path)
        try:
            best = record["best"]
            return cls(
                model=record["model"]["name"],
                metric=record["metric"],
                best_config=dict(record["model"]["config"]),
                best_params=dict(best["params"]),
                best_value=float(best["value"]),
                best_trial=int(best["trial"]),
                trials=tuple(TrialRecord(**t) for t in record["trials"]),
                config=TuneConfig(**record["tune_config"]),
                space=dict(record["search_space"]),
                elapsed_s=float(record["elapsed_s"]),
                stop_reason=str(record["stop_reason"]),
                data=dict(record.get("data", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: malformed tuning record ({exc!r})") from None


def _read_record(path: str | Path) -> dict[str, Any]:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read tuning record {path}: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != TUNING_FORMAT:
        raise ArtifactError(f"{path} is not a privrank tuning record (format {TUNING_FORMAT!r})")
    if record.get("version") != _VERSION:
        raise ArtifactError(
            f"{path}: tuning record version {record.get('version')!r}, expected {_VERSION}"
        )
    return record


def load_best_config(path: str | Path) -> tuple[str, Any]:
    """The model name and best config (the model's config object) of a saved tuning record.

    Raises:
        ArtifactError: Not a readable tuning record.
        ConfigError: The recorded config is not valid for the model any more.
    """
    from privrank.models import model_class

    record = _read_record(path)
    try:
        name, params = record["model"]["name"], record["model"]["config"]
    except (KeyError, TypeError):
        raise ArtifactError(f"{path}: tuning record without a model config") from None
    cls = model_class(name)
    try:
        return name, cls.Config(**params)
    except ValidationError as exc:
        error = config_error(exc, cls.__name__, model=cls.Config)
        wrapped = ConfigError(
            f"{path}: the best config is not a valid {cls.__name__} config: {error}"
        )
        wrapped.problems = error.problems
        raise wrapped from None


def carve_validation(
    train: Interactions, fraction: float = 0.2, seed: int = 0
) -> tuple[Interactions, Interactions]:
    """Split a training part into a smaller training part and a validation part.

    A per-user random holdout (:class:`~privrank.data.splits.HoldoutSplit`) of ``train`` only:
    both parts keep ``train``'s vocabulary, and no row outside ``train`` is read.

    Args:
        train: The training part of a protocol or split (never its test part).
        fraction: Share of each user's training rows moved to validation.
        seed: Seed of the random choice.

    Returns:
        ``(train_for_tuning, validation)``.
    """
    parts = split(train, HoldoutSplit(fraction=fraction, seed=seed))
    return parts.train, parts.test


class _OutOfTime(Exception):
    """Raised from a fit's progress report once the study's deadline has passed."""


def _optuna() -> Any:
    import optuna

    return optuna


def _sampler(config: TuneConfig) -> Any:
    optuna = _optuna()
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=config.seed)
    return optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=config.startup_trials)


def _check_data(train: Interactions, validation: Interactions) -> None:
    if not isinstance(train, Interactions) or not isinstance(validation, Interactions):
        raise ConfigError("tune needs train and validation as Interactions")
    if not (
        train.user_ids.equals(validation.user_ids) and train.item_ids.equals(validation.item_ids)
    ):
        raise ConfigError(
            "train and validation must share one vocabulary (use carve_validation, or the "
            "parts of one split)"
        )
    if len(validation) == 0:
        raise ConfigError("the validation part is empty; there is nothing to tune on")


def validation_score(
    model: Any, train: Interactions, validation: Interactions, config: TuneConfig
) -> float:
    """The tuning objective: ``config.metric`` of a fitted model, by full ranking on
    ``validation`` with ``train`` items excluded."""
    name, k = config.metric_parts()
    evaluation = EvaluationConfig(
        cutoffs=(k,), metrics=(name,), beyond_accuracy=False, batch_size=config.batch_size
    )
    result = evaluate(model.score, train, validation, evaluation)
    return float(result.means[config.metric])


def tune(
    model: str,
    train: Interactions,
    validation: Interactions,
    config: TuneConfig | Mapping[str, Any] | None = None,
    *,
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> TuneResult:
    """Search ``model``'s hyper-parameters, maximising a metric on ``validation``.

    Args:
        model: Registry name of a model with a search space
            (:data:`~privrank.tuning.search_spaces.SEARCH_SPACES`).
        train: What every trial fits on.
        validation: What every trial is scored on (same vocabulary as ``train``; carve it from
            a training part with :func:`carve_validation`, never from test data).
        config: Budget, metric, seed, threads, sampler (:class:`TuneConfig` or its mapping).
        on_trial: Called with each trial's record as soon as it ends.

    Returns:
        The best config and every trial.

    Raises:
        ConfigError: Unknown model, no search space, invalid options or data, or no trial
            completed within the budget.
    """
    from privrank.models import FitOptions, ModelFitError, create_model, model_class

    if config is None:
        raise ConfigError("tune needs a TuneConfig with n_trials and/or time_budget_s")
    if not isinstance(config, TuneConfig):
        config = TuneConfig(**dict(config))
    space = search_space(model, config.fixed)
    create_model(model, dict(space.fixed))  # a bad fixed value fails before any fit
    _check_data(train, validation)
    optuna = _optuna()
    started = time.perf_counter()
    deadline = None if config.time_budget_s is None else started + config.time_budget_s
    records: list[TrialRecord] = []

    def past_deadline() -> bool:
        return deadline is not None and time.perf_counter() >= deadline

    def check_deadline(_: Any) -> None:
        if past_deadline():
            raise _OutOfTime

    def objective(trial: Any) -> float:
        params = space.suggest(trial)
        trial_started = time.perf_counter()
        note = ""
        try:
            recommender = create_model(model, {**space.fixed, **params})
            options = FitOptions(seed=config.seed, threads=config.threads, progress=check_deadline)
            # The one fit path: a trial without a privacy spec spends nothing.
            with fit_and_spend(
                recommender, train, options, budget_key=None, description=f"tune {model}"
            ):
                return validation_score(recommender, train, validation, config)
        except _OutOfTime:
            note = "time budget"
            raise optuna.TrialPruned(note) from None
        except ModelFitError as exc:
            note = f"fit failed: {exc}"
            raise
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - trial_started)
            trial.set_user_attr("note", note)

    def after_trial(study: Any, trial: Any) -> None:
        record = _record(trial)
        records.append(record)
        if on_trial is not None:
            on_trial(record)
        if past_deadline():
            study.stop()

    logger = logging.getLogger("optuna")
    level = logger.level
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize", sampler=_sampler(config))
        if config.start_from_defaults:
            defaults = space.defaults(model_class(model).Config)
            if defaults:
                study.enqueue_trial(defaults)
        study.optimize(
            objective,
            n_trials=config.n_trials,
            timeout=config.time_budget_s,
            catch=(ModelFitError,),
            callbacks=[after_trial],
            gc_after_trial=False,
        )
    finally:
        logger.setLevel(level)
    elapsed = time.perf_counter() - started
    return _result(model, config, space, records, elapsed, train, validation)


def _record(trial: Any) -> TrialRecord:
    state = trial.state.name
    value = trial.value if state == "COMPLETE" else None
    note = str(trial.user_attrs.get("note", ""))
    return TrialRecord(
        number=trial.number,
        state=state,
        value=None if value is None else float(value),
        params=dict(trial.params),
        seconds=float(trial.user_attrs.get("seconds", 0.0)),
        note=note,
    )


def _result(
    model: str,
    config: TuneConfig,
    space: SearchSpace,
    records: list[TrialRecord],
    elapsed: float,
    train: Interactions,
    validation: Interactions,
) -> TuneResult:
    from privrank.models import create_model

    complete = [
        (r.value, r)
        for r in records
        if r.state == "COMPLETE" and r.value is not None and math.isfinite(r.value)
    ]
    if not complete:
        budget = f"{config.time_budget_s} s" if config.time_budget_s else "the budget"
        raise ConfigError(
            f"no trial of {model} completed within {budget} ({len(records)} started: "
            f"{', '.join(f'{r.state} {r.note}'.strip() for r in records) or 'none'}); "
            "give it more time"
        )
    best_value, best = max(complete, key=lambda scored: (scored[0], -scored[1].number))
    full = create_model(model, {**space.fixed, **best.params}).config.model_dump(mode="json")
    out_of_trials = config.n_trials is not None and len(records) >= config.n_trials
    timed_out = any(r.note == "time budget" for r in records)
    return TuneResult(
        model=model,
        metric=config.metric,
        best_config=full,
        best_params=dict(best.params),
        best_value=float(best_value),
        best_trial=best.number,
        trials=tuple(records),
        config=config,
        space=space.describe(),
        elapsed_s=elapsed,
        stop_reason="trials" if out_of_trials and not timed_out else "time budget",
        data={
            "train": {"rows": len(train), "fingerprint": fingerprint(train)},
            "validation": {"rows": len(validation), "fingerprint": fingerprint(validation)},
        },
    )

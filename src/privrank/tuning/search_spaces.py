"""Hyper-parameter search spaces, one per model, declared here and nowhere else.

A :class:`SearchSpace` lists the parameters a tuner varies (each a :class:`FloatParam`,
:class:`IntParam` or :class:`CategoricalParam`) and the parameters it holds fixed; everything
else keeps the model's default. Scale-like parameters (regularisation, learning rates,
confidence weights) are searched on a log scale, so that each decade gets the same attention.

The two ALS models are searched over the same kind of box, so that a comparison at an equal
budget is fair: the same embedding sizes, the same range of epochs, the L2 weight and the
weight of the unobserved pairs on a log scale over several decades. implicit's ALS weights
*observed* pairs by ``alpha`` where ours weights *unobserved* pairs by
α₀ = ``unobserved_weight``; the two are the same model up to a scaling of the loss
(``alpha ≈ 1 / unobserved_weight``). Ours searches α₀ through the rule its default follows,
α₀ = ρ × density (``unobserved_ratio`` = ρ, four decades around the default 4), so one range
means the same relative weight on every data set. Both may solve exactly (Cholesky) or by
conjugate gradients.

Every space is checked against its model's config when it is used (:func:`search_space`): a
parameter the config lacks, or a range outside the config's bounds, raises
:class:`~privrank.errors.ConfigError` instead of failing in the middle of a study.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from privrank.config_errors import config_error
from privrank.errors import ConfigError

if TYPE_CHECKING:
    import optuna

__all__ = [
    "SEARCH_SPACES",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "SearchSpace",
    "search_space",
    "searchable_models",
]


@dataclass(frozen=True)
class FloatParam:
    """A real parameter drawn from ``[low, high]``, on a log scale when ``log``."""

    name: str
    low: float
    high: float
    log: bool = False

    def suggest(self, trial: optuna.Trial) -> float:
        """Draw a value for ``trial``."""
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` can be drawn."""
        return isinstance(value, int | float) and self.low <= value <= self.high

    def describe(self) -> dict[str, Any]:
        """JSON form of the range."""
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class IntParam:
    """An integer parameter drawn from ``low, low + step, ..., high`` (log scale when ``log``)."""

    name: str
    low: int
    high: int
    step: int = 1
    log: bool = False

    def suggest(self, trial: optuna.Trial) -> int:
        """Draw a value for ``trial``."""
        return trial.suggest_int(self.name, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` can be drawn."""
        return (
            isinstance(value, int)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def describe(self) -> dict[str, Any]:
        """JSON form of the range."""
        return {
            "type": "int",
            "low": self.low,
            "high": self.high,
            "step": self.step,
            "log": self.log,
        }


@dataclass(frozen=True)
class CategoricalParam:
    """A parameter drawn from a fixed list of choices."""

    name: str
    choices: tuple[Any, ...]

    def suggest(self, trial: optuna.Trial) -> Any:
        """Draw a value for ``trial``."""
        return trial.suggest_categorical(self.name, list(self.choices))

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one of the choices."""
        return value in self.choices

    def describe(self) -> dict[str, Any]:
        """JSON form of the choices."""
        return {"type": "categorical", "choices": list(self.choices)}


Param = FloatParam | IntParam | CategoricalParam


@dataclass(frozen=True)
class SearchSpace:
    """What a tuner searches for one model.

    Attributes:
        model: Registry name of the model.
        params: The searched parameters, in the order they are drawn.
        fixed: Parameters held at these values in every trial (not searched).
    """

    model: str
    params: tuple[Param, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the searched parameters."""
        return tuple(p.name for p in self.params)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The searched parameters drawn for ``trial`` (fixed ones not included)."""
        return {p.name: p.suggest(trial) for p in self.params}

    def defaults(self, config: type[BaseModel]) -> dict[str, Any] | None:
        """The searched parameters at the config's defaults, or ``None`` if one lies outside
        the space (so that a first trial can start from the model's defaults)."""
        values = {p.name: config.model_fields[p.name].default for p in self.params}
        inside = all(p.contains(values[p.name]) for p in self.params)
        return values if inside else None

    def with_fixed(self, values: Mapping[str, Any]) -> SearchSpace:
        """This space with ``values`` held fixed; a searched parameter named there stops being
        searched."""
        params = tuple(p for p in self.params if p.name not in values)
        return SearchSpace(self.model, params, {**self.fixed, **values})

    def describe(self) -> dict[str, Any]:
        """JSON form: every searched range and the fixed values."""
        return {
            "model": self.model,
            "params": {p.name: p.describe() for p in self.params},
            "fixed": dict(self.fixed),
        }


_FACTORS = CategoricalParam("factors", (32, 64, 128))
_EPOCH_RANGE = (2, 24)  # low, high: the same for both ALS models

SEARCH_SPACES: dict[str, SearchSpace] = {
    space.model: space
    for space in (
        SearchSpace("most-popular", ()),
        SearchSpace("ease", (FloatParam("regularization", 1.0, 1e4, log=True),)),
        SearchSpace(
            "ease-sparse",
            (
                FloatParam("regularization", 1.0, 1e4, log=True),
                IntParam("neighbors", 20, 500, log=True),
            ),
        ),
        SearchSpace(
            "itemknn",
            (IntParam("neighbors", 5, 1000, log=True), FloatParam("shrinkage", 0.0, 200.0)),
        ),
        SearchSpace(
            "ials",
            (
                _FACTORS,
                IntParam("epochs", *_EPOCH_RANGE),
                FloatParam("regularization", 1e-5, 100.0, log=True),
                FloatParam("unobserved_ratio", 0.04, 400.0, log=True),
                FloatParam("regularization_exponent", 0.0, 1.0),
                CategoricalParam("solver", ("cholesky", "cg")),
            ),
        ),
        SearchSpace(
            "implicit-als",
            (
                _FACTORS,
                IntParam("iterations", *_EPOCH_RANGE),
                FloatParam("regularization", 1e-3, 1e4, log=True),
                FloatParam("alpha", 0.1, 1000.0, log=True),
                CategoricalParam("use_cg", (True, False)),
            ),
        ),
        SearchSpace(
            "implicit-bpr",
            (
                _FACTORS,
                IntParam("iterations", 20, 200, step=20),
                FloatParam("learning_rate", 1e-3, 0.1, log=True),
                FloatParam("regularization", 1e-5, 0.1, log=True),
            ),
        ),
        SearchSpace(
            "bpr",
            (
                _FACTORS,
                FloatParam("learning_rate", 1e-4, 0.05, log=True),
                FloatParam("regularization", 1e-6, 1e-2, log=True),
            ),
        ),
        SearchSpace(
            "mult-vae",
            (
                FloatParam("learning_rate", 1e-4, 1e-2, log=True),
                FloatParam("dropout", 0.0, 0.7),
                FloatParam("beta", 0.05, 1.0, log=True),
            ),
        ),
        SearchSpace(
            "sasrec",
            (
                _FACTORS,
                IntParam("blocks", 1, 3),
                FloatParam("dropout", 0.0, 0.5),
                FloatParam("learning_rate", 1e-4, 1e-2, log=True),
            ),
        ),
    )
}
"""The built-in search spaces, by model name."""


def searchable_models() -> list[str]:
    """Names of the registered models that have a search space, sorted."""
    from privrank.models import model_names

    return [name for name in model_names() if name in SEARCH_SPACES]


def search_space(model: str, fixed: Mapping[str, Any] | None = None) -> SearchSpace:
    """The search space of ``model``, checked against its config, with ``fixed`` values held.

    Args:
        model: Registry name of the model.
        fixed: Parameters to hold fixed (searched ones among them stop being searched).

    Raises:
        ConfigError: Unknown model, a model without a search space, or a space (or a fixed
            value) that does not fit the model's config.
    """
    from privrank.models import model_class

    cls = model_class(model)
    if model not in SEARCH_SPACES:
        raise ConfigError(
            f"no search space for model {model!r}; models with one: "
            f"{', '.join(searchable_models())}"
        )
    space = SEARCH_SPACES[model].with_fixed(dict(fixed or {}))
    _check_against_config(space, cls.Config)
    return space


def _check_against_config(space: SearchSpace, config: type[BaseModel]) -> None:
    fields = config.model_fields
    problems = [
        f"{p.name!r} is not a parameter of {config.__name__}"
        for p in space.params
        if p.name not in fields
    ]
    if not problems:
        for corner in _corners(space):
            try:
                config(**(dict(space.fixed) | corner))
            except ValidationError as exc:
                error = config_error(exc, config.__name__, model=config)
                problems.append(f"{corner} is not a valid {config.__name__}: {error}")
                break
    if problems:
        raise ConfigError(f"search space of {space.model!r} is invalid: " + "; ".join(problems))


def _corners(space: SearchSpace) -> list[dict[str, Any]]:
    """The all-low and all-high corners of the space (every choice of a categorical)."""
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    extra: list[dict[str, Any]] = []
    for p in space.params:
        if isinstance(p, CategoricalParam):
            lows[p.name], highs[p.name] = p.choices[0], p.choices[-1]
            extra += [{p.name: choice} for choice in p.choices]
        else:
            lows[p.name], highs[p.name] = p.low, p.high
    return [lows, highs, *extra]

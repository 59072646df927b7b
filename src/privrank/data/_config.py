"""A frozen pydantic base whose validation errors are privrank :class:`ConfigError` s.

Configs of the data layer (curation steps, split specs) derive from :class:`FrozenConfig`:
``extra="forbid"``, frozen, validated at construction. A violated rule raises one
:class:`~privrank.errors.ConfigError` that lists every problem as ``Owner.parameter: got value;
rule``, so the CLI can show it as one clear line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from privrank.errors import ConfigError, ConfigProblem

__all__ = ["FrozenConfig", "config_error", "validate_config"]


def config_error(exc: ValidationError, owner: str) -> ConfigError:
    """Translate a pydantic error into a :class:`ConfigError` naming parameter, value and rule.

    Problems of nested configs (which raise their own ConfigError) are flattened, so each one
    reads ``Owner.outer.inner: got value; rule``.

    Args:
        exc: The pydantic validation error.
        owner: Name of the config being validated (a class name).

    Returns:
        A ConfigError whose message lists every problem, `` | ``-separated; its ``problems``
        attribute holds them as ``(location, value, rule)`` tuples.
    """
    problems = list(_problems(exc))
    lines = []
    for loc, value, rule in problems:
        where = ".".join((owner, *loc))
        lines.append(f"{where}: got {value!r}; {rule}")
    error = ConfigError("invalid configuration: " + " | ".join(lines))
    error.problems = tuple(ConfigProblem(*problem) for problem in problems)
    return error


def _problems(exc: ValidationError) -> Iterator[tuple[tuple[str, ...], Any, str]]:
    for error in exc.errors(include_url=False):
        loc = tuple(str(part) for part in error["loc"])
        nested = error.get("ctx", {}).get("error")
        if isinstance(nested, ConfigError) and hasattr(nested, "problems"):
            for inner_loc, value, rule in nested.problems:
                yield (*loc, *inner_loc), value, rule
            continue
        rule = error["msg"].removeprefix("Value error, ")
        yield loc, error.get("input"), rule


def validate_config(annotation: Any, data: Any, owner: str) -> Any:
    """Validate ``data`` against a type (e.g. a discriminated union), raising ConfigError.

    Args:
        annotation: The type to validate against.
        data: A dict (e.g. read from JSON) or an already-built config.
        owner: Name used in the error message.

    Returns:
        The validated config object.
    """
    try:
        return TypeAdapter(annotation).validate_python(data)
    except ValidationError as exc:
        raise config_error(exc, owner) from exc


class FrozenConfig(BaseModel):
    """Base of the data layer's configs: frozen, no unknown keys, ConfigError on bad values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, type(self).__name__) from exc

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> Self:
        """Validate values not typed yet (command-line options, JSON) as the constructor does.

        Raises:
            ConfigError: As the constructor: every invalid value, its rule and where.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise config_error(exc, cls.__name__) from exc

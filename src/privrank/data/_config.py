"""A frozen pydantic base whose validation errors are privrank :class:`ConfigError` s.

Configs of the data layer (curation steps, split specs) derive from :class:`FrozenConfig`:
``extra="forbid"``, frozen, validated at construction. A violated rule raises one
:class:`~privrank.errors.ConfigError` that lists every problem in the format of
:mod:`privrank.config_errors` (``Owner.parameter: got value; expected ...``), so the CLI can show
it as one clear line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from privrank.config_errors import config_error

__all__ = ["FrozenConfig", "validate_as"]


def validate_as(annotation: Any, data: Any, owner: str) -> Any:
    """Validate ``data`` as a value of a type (e.g. a discriminated union), raising ConfigError.

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
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model = annotation if is_model else None
        raise config_error(exc, owner, model=model) from exc


class FrozenConfig(BaseModel):
    """Base of the data layer's configs: frozen, no unknown keys, ConfigError on bad values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, type(self).__name__, model=type(self)) from exc

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> Self:
        """Validate values not typed yet (command-line options, JSON) as the constructor does.

        Raises:
            ConfigError: As the constructor: every invalid value, its rule and where.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise config_error(exc, cls.__name__, model=cls) from exc

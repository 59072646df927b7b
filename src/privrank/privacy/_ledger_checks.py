"""Validation of the ledger's arguments (one message shape: what, which rule, what arrived)."""

from __future__ import annotations

import math

from privrank.errors import ConfigError

__all__ = ["as_finite_float", "check_delta", "check_epsilon", "check_key", "check_text"]


def as_finite_float(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` (not a number, a bool, NaN, ±inf, or an int too
    large for a float, such as ``10**400``)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def check_epsilon(value: float, owner: str, *, allow_zero: bool) -> float:
    number = as_finite_float(value)
    if number is None or number < 0 or (number == 0 and not allow_zero):
        rule = "a finite number ≥ 0" if allow_zero else "a finite number > 0"
        raise ConfigError(f"The 'epsilon' parameter of {owner} must be {rule}. Got {value!r}")
    return number


def check_delta(value: float, owner: str) -> float:
    number = as_finite_float(value)
    if number is None or not 0 <= number < 1:
        raise ConfigError(f"The 'delta' parameter of {owner} must be in [0, 1). Got {value!r}")
    return number


def check_key(value: str, owner: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ConfigError(
            f"The 'dataset_key' parameter of {owner} must be a non-empty string of at most 200 "
            f"characters. Got {value!r}"
        )
    return value


def check_text(value: object, name: str, owner: str, limit: int, *, non_empty: bool = False) -> str:
    """A string of at most ``limit`` characters (non-blank when ``non_empty``)."""
    if not isinstance(value, str) or len(value) > limit or (non_empty and not value.strip()):
        rule = "a non-empty string" if non_empty else "a string"
        raise ConfigError(
            f"The {name!r} parameter of {owner} must be {rule} of at most {limit} characters. "
            f"Got {value!r}"
        )
    return value

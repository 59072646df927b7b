"""The one translation of pydantic validation errors into :class:`~privrank.errors.ConfigError`.

Every pydantic config privrank validates (model hyper-parameters, fit options, data-layer specs,
run configs, tuning and serving settings, command-line options) reports its problems in one
shape, one per invalid setting::

    OWNER.FIELD.PATH: got VALUE; expected WHAT

- ``OWNER`` is the config class, the model, or a file (``RunConfig(run.toml)``); the dotted path
  names the field below it, nested blocks and list positions included
  (``EASE.private.count_share``). A field set by a command-line option is shown as the option
  first: ``--users (SyntheticConfig.n_users)``.
- ``VALUE`` is the received value's ``repr`` (cut at 80 characters, a URL's password masked);
  ``nothing`` for a missing required field.
- ``expected WHAT`` comes from the field's declaration (``an int >= 1``, ``one of 'float32',
  'float64'``) or pydantic's own words; a rule written by a validator is given in its own words
  instead. An unknown key reads ``OWNER has no parameter 'key'; expected one of: a, b``.
- A rule about the config as a whole (a model validator) reads ``OWNER: rule``: the value would
  be the whole config (secrets included), so the rule's own words name the values involved.

Examples::

    EASE.regularization: got -1; expected a float > 0
    HoldoutSplit.fraction: got 1.5; expected a number < 1
    EASE.lambda_: got 3; EASE has no parameter 'lambda_'; expected one of: regularization, dtype
    TuneConfig: set n_trials, time_budget_s or both; the search needs a budget

Several problems are joined by `` | `` into one message, and kept one by one in the error's
:attr:`~privrank.errors.ConfigError.problems`. A validator that raises a ``ConfigError`` carrying
problems (a nested config validated by hand) has them flattened into the outer ones, with the
outer path in front.

Base module: imports only :mod:`privrank.errors` (and pydantic).
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from privrank.errors import ConfigError, ConfigProblem

__all__ = ["config_error", "describe_problem", "expected_of_field"]

#: Longest value ``repr`` shown in a message.
MAX_VALUE_CHARS = 80


class _Missing:
    """The value of a required field that was not given (shown as ``nothing``)."""

    def __repr__(self) -> str:
        return "nothing"


MISSING: Any = _Missing()


def config_error(
    exc: ValidationError,
    owner: str,
    *,
    model: type[BaseModel] | None = None,
    options: Mapping[str, str] | None = None,
    hint: Callable[[tuple[str, ...]], str | None] | None = None,
) -> ConfigError:
    """Translate a pydantic error into one :class:`ConfigError` in the module's format.

    Args:
        exc: The pydantic validation error.
        owner: What was being validated: a config class, a model, a file.
        model: The pydantic class validated, when there is one: its field declarations give
            the expectations (``an int >= 1``) and the known keys of an unknown-key problem.
        options: Dotted field path -> the command-line option that sets it (``--users``).
        hint: Called with the path of each unknown key; what it returns is added to that
            problem's rule (e.g. where the setting belongs instead).

    Returns:
        The error; its :attr:`~privrank.errors.ConfigError.problems` hold every problem.
    """
    problems = tuple(_problems(exc, owner, model, hint))
    message = " | ".join(describe_problem(owner, problem, options) for problem in problems)
    error = ConfigError(message)
    error.problems = problems
    return error


def describe_problem(
    owner: str, problem: ConfigProblem, options: Mapping[str, str] | None = None
) -> str:
    """One problem as ``OWNER.PATH: got VALUE; RULE`` (see the module docstring)."""
    dotted = ".".join(problem.path)
    if not dotted and isinstance(problem.value, Mapping):
        return f"{owner}: {problem.rule}"  # the whole config: the rule names what matters
    where = f"{owner}.{dotted}" if dotted else owner
    if options and dotted in options:
        where = f"{options[dotted]} ({where})"
    return f"{where}: got {_shown(problem.value)}; {problem.rule}"


def expected_of_field(info: FieldInfo) -> str | None:
    """What a field accepts, in words (``an int >= 1``, ``one of 'a', 'b'``, ``a float or
    None``), or ``None`` when its type is not a plain scalar or a ``Literal``."""
    annotation = info.annotation
    optional = False
    if _is_union(annotation):
        members = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(members) < len(get_args(annotation))
        if len(members) != 1:
            return None
        annotation = members[0]
    if get_origin(annotation) is Literal:
        words = "one of " + ", ".join(repr(a) for a in get_args(annotation))
    elif annotation in _TYPE_WORDS:
        words = _TYPE_WORDS[annotation]
    else:
        return None
    bounds = [
        f"{symbol} {getattr(meta, attr)}"
        for meta in info.metadata
        for attr, symbol in _BOUNDS
        if getattr(meta, attr, None) is not None
    ]
    if bounds:
        words += " " + " and ".join(bounds)
    return words + (" or None" if optional else "")


_TYPE_WORDS: dict[Any, str] = {int: "an int", float: "a float", bool: "a bool", str: "a string"}
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
_CTX_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}
#: Error types whose message is the rule itself (written by a validator).
_OWN_WORDS = frozenset({"value_error", "assertion_error"})


def _problems(
    exc: ValidationError,
    owner: str,
    model: type[BaseModel] | None,
    hint: Callable[[tuple[str, ...]], str | None] | None,
) -> Iterator[ConfigProblem]:
    for error in exc.errors(include_url=False):
        path = tuple(str(part) for part in error["loc"])
        nested = error.get("ctx", {}).get("error")
        if isinstance(nested, ConfigError) and nested.problems:
            for inner in nested.problems:
                yield ConfigProblem((*path, *inner.path), inner.value, inner.rule)
            continue
        kind = error["type"]
        value = MISSING if kind == "missing" else error.get("input")
        if kind == "extra_forbidden":
            rule = _unknown_key(owner, model, path)
            extra = hint(path) if hint is not None else None
            if extra:
                rule += f"; {extra}"
        else:
            rule = _rule(error, _field(model, path))
        yield ConfigProblem(path, value, rule)


def _rule(error: Any, info: FieldInfo | None) -> str:
    kind = error["type"]
    message = str(error["msg"])
    if kind in _OWN_WORDS:
        return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "missing":
        return "expected a value (the field is required)"
    declared = expected_of_field(info) if info is not None else None
    if declared is not None:
        return f"expected {declared}"
    if kind == "literal_error":
        return f"expected one of {error['ctx']['expected']}"
    if kind in _CTX_BOUNDS:
        attr, symbol = _CTX_BOUNDS[kind]
        return f"expected a number {symbol} {error['ctx'][attr]}"
    if message.startswith("Input should be "):
        return "expected " + message.removeprefix("Input should be ")
    return message


def _unknown_key(owner: str, model: type[BaseModel] | None, path: tuple[str, ...]) -> str:
    parent = ".".join((owner, *path[:-1]))
    rule = f"{parent} has no parameter {path[-1]!r}"
    container = model if len(path) == 1 else _model_of(_field(model, path[:-1]))
    if container is None:
        return rule
    if not container.model_fields:
        return f"{rule}; expected no parameters"
    return f"{rule}; expected one of: {', '.join(container.model_fields)}"


def _field(model: type[BaseModel] | None, path: tuple[str, ...]) -> FieldInfo | None:
    """The declaration of the field at ``path`` below ``model`` (through nested models)."""
    info = None
    current = model
    for part in path:
        if current is None:
            return None
        info = current.model_fields.get(part)
        if info is None:
            return None
        current = _model_of(info)
    return info


def _model_of(info: FieldInfo | None) -> type[BaseModel] | None:
    """The pydantic class a field holds (``Block`` or ``Block | None``), if it holds one."""
    if info is None:
        return None
    annotation = info.annotation
    candidates = get_args(annotation) if _is_union(annotation) else (annotation,)
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if len(models) == 1 else None


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _shown(value: Any) -> str:
    text = _CREDENTIALS.sub(r"\1***@", repr(value))
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


#: The password of a URL (``scheme://user:password@host``), never shown.
_CREDENTIALS = re.compile(r"(//[^/:@\s]*:)[^@\s]*@")

"""The one exception tree of privrank.

Every error privrank raises on purpose is a :class:`PrivrankError`. Each class also inherits the
builtin it refines, so callers that catch ``ValueError`` or ``RuntimeError`` keep working. The CLI
maps the whole tree to exit code 2 in one place (``privrank.cli.main``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

__all__ = [
    "ArtifactError",
    "ConfigError",
    "ConfigProblem",
    "DataError",
    "DatasetUnavailableError",
    "DistributedFitError",
    "NotTrainedError",
    "PrivacyBudgetExceeded",
    "PrivrankError",
    "WorkerLostError",
]


class PrivrankError(Exception):
    """Base class of every error privrank raises on purpose."""


class ConfigProblem(NamedTuple):
    """One invalid setting of a config.

    Attributes:
        path: Where the setting is, below the config (``("private", "count_share")``).
        value: The value received.
        rule: What was expected instead (``expected a float > 0``), or the rule broken.
    """

    path: tuple[str, ...]
    value: object
    rule: str


class ConfigError(PrivrankError, ValueError):
    """A configuration or argument is invalid (names the parameter, the value and the rule).

    Attributes:
        problems: Each invalid setting, when the error comes from validating a config
            (:func:`privrank.config_errors.config_error`); empty otherwise.
    """

    problems: tuple[ConfigProblem, ...] = ()


class DataError(PrivrankError, ValueError):
    """Input data is invalid.

    The message names where the problem is (file, line, column), the offending value and what
    was expected, e.g. ``ratings.csv, line 12, column 3 (rating): got 'abc', expected a finite
    number``.

    Attributes:
        path: The file the problem is in, if any.
        line: 1-based line number in that file, if known.
        column: 1-based column number (field position), if known.
        field: The logical field name (``user``, ``item``, ``rating``, ``timestamp``), if known.
        value: The offending value as read, if any.
        expected: What was expected instead.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
        value: object = None,
        expected: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        self.line = line
        self.column = column
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            col = f"column {self.column}"
            if self.field is not None:
                col += f" ({self.field})"
            where.append(col)
        elif self.field is not None:
            where.append(f"field {self.field}")
        message = self.problem
        if self.value is not None:
            message += f": got {self.value!r}"
        if self.expected is not None:
            message += f", expected {self.expected}"
        return f"{', '.join(where)}: {message}" if where else message


class DatasetUnavailableError(DataError):
    """A named dataset is neither on disk nor downloadable (the message says where to put it)."""


class NotTrainedError(PrivrankError, RuntimeError, AttributeError):
    """A model was used before ``fit`` (or ``load``)."""


class ArtifactError(PrivrankError, OSError):
    """A saved artifact (model, dataset, split) is missing, corrupted or of another version."""


class DistributedFitError(PrivrankError, RuntimeError):
    """A fit on a cluster's workers failed (after the restarts it was allowed)."""


class PrivacyBudgetExceeded(PrivrankError, RuntimeError):
    """A private run would spend more privacy budget than the dataset has left."""


class WorkerLostError(PrivrankError, RuntimeError):
    """A worker of a distributed fit (a Ray actor, ...) died while computing its part.

    The part it was computing is lost; the fit may resume from its last checkpoint (the
    worker is restarted by the engine) or give up.
    """

"""The CLI's output: consoles that print text verbatim, progress displays and log lines.

Rich reads ``[...]`` in a printed string as markup and drops what it takes for a tag, so
``pip install 'privrank[serve]'`` came out as ``pip install 'privrank'``, and a bracketed file
value, id or model label lost its brackets the same way. Every console of the CLI is made here
with markup, emoji codes and highlighting off; styles are given as ``style=`` or
:class:`rich.text.Text` spans, never spelled inside the printed text.

Progress (bytes of an import, epochs of a fit, users of an evaluation) and informational lines
go to standard error through :func:`progress`, :func:`status` and :func:`emit`, which honour
the global ``--quiet`` and ``--log-format json`` options (:func:`configure`); results (tables,
the guarantee, where files went) go to standard output. A log line never holds a user id or a
history: callers pass counts, metrics, model labels and file names.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.text import Text

__all__ = [
    "MODE",
    "JsonFormatter",
    "LogFormat",
    "OutputMode",
    "ProgressTask",
    "StatusUpdate",
    "configure",
    "emit",
    "make_console",
    "progress",
    "status",
    "styled",
]


def make_console(*, stderr: bool = False, **options: Any) -> Console:
    """A Rich console that prints strings as they are (no markup, emoji codes or highlighting).

    Args:
        stderr: Write to standard error instead of standard output.
        **options: Other :class:`rich.console.Console` options (``width``, ``soft_wrap``...).
    """
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False, **options)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Text from plain strings and ``(text, style)`` pairs; no part is read as markup.

    Example: ``styled(("error:", "bold red"), " ", message)``.
    """
    return Text.assemble(*parts)


# ---------------------------------------------------------------- progress and logs
class LogFormat(StrEnum):
    """How progress and messages are written to standard error."""

    text = "text"
    json = "json"


@dataclass
class OutputMode:
    """The global output options (``privrank --quiet``, ``privrank --log-format json``).

    Attributes:
        quiet: No progress and no informational lines; results and errors still print.
        log_format: ``text`` (Rich progress bars and plain lines) or ``json`` (one JSON object
            per line on standard error, for machines).
    """

    quiet: bool = False
    log_format: LogFormat = LogFormat.text


MODE = OutputMode()
_JSON_INTERVAL_S = 0.5  # the most often a progress line is written in JSON mode
#: Units counted in many small steps (a file's bytes, a generator's rows): their JSON lines are
#: throttled to one per :data:`_JSON_INTERVAL_S`; epochs and rounds are each written.
_THROTTLED_UNITS = frozenset({"bytes", "rows"})


_handler: logging.Handler | None = None  # the JSON handler configure() installed


def configure(*, quiet: bool = False, log_format: LogFormat = LogFormat.text) -> None:
    """Set the output mode for this process, and Python logging to match it.

    In JSON mode every log record (privrank's and its libraries', e.g. MLflow's, which is told
    to leave its loggers to the root's) is one JSON object per line on standard error;
    ``--quiet`` keeps warnings and errors only.
    """
    global _handler
    MODE.quiet, MODE.log_format = quiet, LogFormat(log_format)
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler = None
    if MODE.log_format is LogFormat.json:
        os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(JsonFormatter())
        root.addHandler(_handler)
        root.setLevel(logging.WARNING if quiet else logging.INFO)
    elif quiet:
        root.setLevel(logging.WARNING)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``event``, ``message`` and the
    record's ``fields`` (used for ``--log-format json``, by ``privrank serve``'s workers too)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", "message"),
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


_log = logging.getLogger("privrank.cli")


def emit(event: str, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Write one progress or message line (never a user id or history: callers pass counts,
    metrics, model names and file names only).

    Nothing when quiet (below a warning); a JSON object with ``event`` and ``fields`` in JSON
    mode; the plain message on standard error otherwise.
    """
    if MODE.quiet and level < logging.WARNING:
        return
    if MODE.log_format is LogFormat.json:
        _log.log(level, message, extra={"event": event, "fields": fields})
        return
    style = "yellow" if level >= logging.WARNING else "dim"
    make_console(stderr=True, soft_wrap=True).print(message, style=style)


class ProgressTask:
    """One progress display: :meth:`update` it with what is done of what total."""

    def __init__(self, event: str, description: str, unit: str, bar: Any = None) -> None:
        self.event, self.description, self.unit = event, description, unit
        self._bar, self._task = bar, None if bar is None else bar.add_task(description, info="")
        self._last = 0.0
        self._shown: tuple[int, int | None] | None = None

    def update(self, done: int, total: int | None = None, **info: Any) -> None:
        """Report progress: ``done`` of ``total`` (in :attr:`unit`), with facts such as the
        loss and validation metrics of an epoch."""
        if MODE.quiet:
            return
        if MODE.log_format is LogFormat.json:
            now = time.monotonic()
            final = total is not None and done >= total
            due = final or now - self._last >= _JSON_INTERVAL_S or self.unit not in _THROTTLED_UNITS
            if due and (done, total) != self._shown:
                self._last, self._shown = now, (done, total)
                _log.info(
                    f"{self.description}: {done}/{total} {self.unit}",
                    extra={
                        "event": self.event,
                        "fields": {
                            "task": self.description,
                            "unit": self.unit,
                            "done": done,
                            "total": total,
                            **info,
                        },
                    },
                )
            return
        text = " ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()
        )
        self._bar.update(self._task, completed=done, total=total, info=text)


@contextmanager
def progress(event: str, description: str, *, unit: str = "steps") -> Iterator[ProgressTask]:
    """A progress display on standard error: a Rich bar (text), JSON lines, or nothing (quiet).

    Args:
        event: The JSON lines' ``event`` (``import``, ``epoch``, ``evaluation``).
        description: What is in progress (a model label, a file name).
        unit: ``bytes`` (the bar shows sizes and speed) or a count's unit.
    """
    if MODE.quiet or MODE.log_format is LogFormat.json:
        yield ProgressTask(event, description, unit)
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    counts = (
        (DownloadColumn(), TransferSpeedColumn()) if unit == "bytes" else (MofNCompleteColumn(),)
    )
    bar = Progress(
        TextColumn("{task.description}", markup=False, style="bold"),
        BarColumn(),
        *counts,
        TextColumn("{task.fields[info]}", markup=False),
        TimeElapsedColumn(),
        console=make_console(stderr=True),
        refresh_per_second=4,  # Rich's default, 10, costs measurable CPU on a long import
    )
    with bar:
        yield ProgressTask(event, description, unit, bar)


#: Changes a status line: ``update(message, event="status", **fields)``.
StatusUpdate = Callable[..., None]


@contextmanager
def status(message: str) -> Iterator[StatusUpdate]:
    """A spinner with a line of status (text), JSON lines, or nothing (quiet).

    Yields:
        ``update(message, event="status", **fields)``: the new line; in JSON mode one object
        with that ``event`` and ``fields`` (counts, metrics, model labels: never user ids).
    """
    if MODE.quiet:
        yield lambda message, event="status", **fields: None
        return
    if MODE.log_format is LogFormat.json:

        def log(text: str, event: str = "status", **fields: Any) -> None:
            _log.info(text, extra={"event": event, "fields": fields})

        log(message)
        yield log
        return
    with make_console(stderr=True).status(message) as spinner:
        yield lambda text, event="status", **fields: spinner.update(text)

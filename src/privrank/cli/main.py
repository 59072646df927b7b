"""Entry point of the ``privrank`` console script.

Every :class:`~privrank.errors.PrivrankError` becomes one clear line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

from rich.console import Console

from privrank.cli import app as _app_module
from privrank.errors import PrivrankError

# Command modules register their commands on import.
from privrank.cli import (  # noqa: F401  isort: skip
    audit,
    data_io,
    data_split,
    data_synth,
    demo,
    evaluate,
    federated,
    keys,
    privacy,
    release,
    report,
    serve,
    train,
    tune,
)

EXIT_USAGE = 2


def app() -> None:
    """Run the CLI, mapping privrank errors to exit code 2 (usage errors exit 2 too)."""
    try:
        _app_module.app()
    except PrivrankError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    app()

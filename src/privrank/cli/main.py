"""Entry point of the ``privrank`` console script.

Every :class:`~privrank.errors.PrivrankError` becomes one clear line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys

from privrank.cli import app as _app_module
from privrank.cli._console import MODE, LogFormat, emit, make_console, styled
from privrank.errors import PrivrankError

# Command modules register their commands on import.
from privrank.cli import (  # noqa: F401  isort: skip
    ads,
    ads_synth,
    audit,
    data_ctr,
    data_io,
    data_split,
    data_synth,
    demo,
    evaluate,
    federated,
    federated_flower,
    keys,
    privacy,
    rank,
    release,
    report,
    search,
    serve,
    telemetry,
    train,
    tune,
)

EXIT_USAGE = 2


def app() -> None:
    """Run the CLI, mapping privrank errors to exit code 2 (usage errors exit 2 too)."""
    try:
        _app_module.app()
    except PrivrankError as exc:
        if MODE.log_format is LogFormat.json:  # machines get one JSON object, as for progress
            emit("error", str(exc), level=logging.ERROR, error=type(exc).__name__)
        else:
            error = styled(("error:", "bold red"), f" {exc}")
            make_console(stderr=True, soft_wrap=True).print(error)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    app()

"""``privrank privacy release``: write the part of a private model its guarantee covers.

A ``privrank train`` directory holds more than the differentially private model: the training
users' ids, their histories and any per-user state (see "Releasing a private model" in
:mod:`privrank.models.base`), and a training record with the training set's fingerprint. None
of that is covered by the (ε, δ) guarantee. This command writes a directory in the same layout
(``training.json`` + ``model/``, so ``privrank serve --model`` and ``privrank privacy report``
read it) holding only the released item-side state, the private popularity and the guarantee.
It spends no budget: it publishes a subset of what the private fit already paid for.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from privrank.cli._console import make_console
from privrank.cli.privacy import privacy_app
from privrank.errors import ConfigError

__all__ = ["release"]

WITHHELD = "withheld from the release: not covered by the privacy guarantee"


@privacy_app.command("release")
def release(
    model: Annotated[Path, typer.Argument(help="A `privrank train` directory of a private fit.")],
    out: Annotated[Path, typer.Option(help="Directory to write the release to (must be new).")],
) -> None:
    """Write a private model without its training users' ids, histories or per-user state."""
    from privrank.workflow.model_dir import load_trained, write_trained

    trained = load_trained(model)
    if out.exists():
        raise ConfigError(f"--out {out}: already exists; a release is written to a new directory")
    record = trained.require_record()
    data = record.get("data", {})
    dataset = data.get("dataset", {})
    released_record = {
        "format": record["format"],
        "version": record["version"],
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": record["model"],
        "fit": record["fit"],
        "data": {
            "dataset": {"name": dataset.get("name")} if isinstance(dataset, dict) else {},
            "protocol": data.get("protocol"),
            "train_fingerprint": WITHHELD,
            "fitted_on": data.get("fitted_on"),
        },
        "privacy": record.get("privacy"),
        "release": {"from": model.name, "withheld": WITHHELD},  # no absolute paths
        "versions": record.get("versions"),
    }
    write_trained(out, trained.model, released_record, release=True)  # refuses a non-private model
    console = make_console()
    console.print(trained.model.privacy_guarantee_.describe(), highlight=False, soft_wrap=True)
    console.print(
        f"released {record['model']['name']} to {out}: item-side model and private popularity "
        f"only; {trained.model.n_users_:,} training users' ids, histories and per-user state "
        "withheld",
        highlight=False,
        soft_wrap=True,
    )

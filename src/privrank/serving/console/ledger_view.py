"""What the console's ledger page shows: budgets, spends, and each model's guarantee.

The console only reads. Budgets and spends come from the privacy budget ledger
(:class:`privrank.privacy.ledger.Ledger`: the one place spends are reserved, committed and
released); each model's guarantee in plain words comes from
:func:`privrank.workflow.privacy_report.privacy_report`, which reads the guarantee recorded in
the model's verified artifact header. The page claims nothing the ledger or the header does not
say.

The models shown are the serving store's versions and the ``privrank train`` outputs in the
runs directory. A model directory that is not a release artifact keeps the training users' ids
and raw histories, which no guarantee covers: it is flagged with ``raw_histories``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privrank.errors import PrivrankError
from privrank.privacy.ledger import Budget, Ledger, SpendRecord
from privrank.workflow.privacy_report import privacy_report

__all__ = ["LedgerView", "ModelGuarantee", "guarantees", "read_ledger"]


@dataclass(frozen=True)
class LedgerView:
    """The ledger's budgets and spends (oldest first)."""

    budgets: list[Budget]
    spends: list[SpendRecord]


def read_ledger(url: str | None) -> LedgerView:
    """Budgets and spends of the ledger at ``url`` (``None``: the default ledger).

    Raises:
        LedgerError: The database cannot be read.
        ConfigError: An invalid URL.
    """
    with Ledger(url) as book:
        return LedgerView(budgets=book.budgets(), spends=book.spends())


@dataclass(frozen=True)
class ModelGuarantee:
    """One model's privacy facts.

    Attributes:
        source: Where it was found (``store version v2``, ``runs/dp-ease``).
        model: The model's registry name (``?`` when unreadable).
        status: ``private``, ``not-private``, ``not-private-testing``,
            ``not-private-fixed-seed``, or ``unreadable``.
        statement: The guarantee in plain words (or why it could not be read).
        warning: What the directory holds that the guarantee does not cover.
        raw_histories: Whether the directory holds training users' raw histories.
    """

    source: str
    model: str
    status: str
    statement: str
    warning: str | None
    raw_histories: bool


def _facts(source: str, directory: Path) -> ModelGuarantee:
    try:
        facts: dict[str, Any] = privacy_report(directory)
    except PrivrankError as exc:
        return ModelGuarantee(
            source=source,
            model="?",
            status="unreadable",
            statement=f"the model's files cannot be verified: {type(exc).__name__}",
            warning=None,
            raw_histories=False,
        )
    return ModelGuarantee(
        source=source,
        model=str(facts["model"]),
        status=str(facts["status"]),
        statement=str(facts["statement"]),
        warning=str(facts["warning"]),
        raw_histories=not facts["release"],
    )


def guarantees(models: list[tuple[str, Path]]) -> list[ModelGuarantee]:
    """The privacy facts of each ``(source, directory)``."""
    return [_facts(source, directory) for source, directory in models]

"""Server-side ingestion of local-DP telemetry: validate, spend per collection-day, decode, write.

:func:`ingest_reports` is what ``privrank telemetry ingest`` runs:

1. **Validate** every reports file completely (:func:`~privrank.privacy.local_dp.wire.read_reports`:
   file, line, field, value and what was expected) and decode the sketch
   (:func:`~privrank.privacy.local_dp.telemetry.decode_reports`). Nothing is spent and nothing
   written when any line is bad.
2. **Spend** (through :func:`~privrank.workflow.spend.spend_release`, the ledger's reserve →
   commit) ε per user-day for every day of the collection that the ledger has not charged yet.
   The unit of privacy is one user-day: the devices send at most one ε-LDP report a day, so a
   day of reports is ε per user, and ``D`` days compose to ``D·ε`` (basic composition, as the
   ledger adds). A day already charged for this collection is not charged again: decoding the
   same reports again (alone or with later days) is post-processing. Each day's spend is
   recorded under the description ``telemetry <collection> day <day>``, which is also its
   *once-key* (:func:`~privrank.workflow.spend.spend_once`): the ledger looks for an earlier
   charge of the day and reserves it in one atomic step, so two ingestions of the same reports
   running at the same moment charge each day exactly once (the second waits for the first to
   commit, then charges nothing for that day; if the first gives the day back, the second
   charges it). Days charged by ingestions from before once-keys existed are found by their
   description (see :func:`_legacy_charged_days`).
3. **Write** the popularity table atomically (:mod:`privrank.privacy.local_dp.table`); the day
   spends commit only once the table is in place (released if writing fails).

Trust: the server running this is untrusted for individual reports (it sees only randomised
reports without user ids; see :mod:`privrank.privacy.local_dp.telemetry`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from privrank.atomic import atomic_file
from privrank.errors import ConfigError
from privrank.privacy.ledger import Ledger
from privrank.privacy.local_dp.sketch import CMSReports, HCMSReports, SketchConfig
from privrank.privacy.local_dp.table import TABLE_FORMAT
from privrank.privacy.local_dp.telemetry import DecodedCollection, decode_reports
from privrank.privacy.local_dp.wire import read_header, read_reports
from privrank.workflow.spend import Spend, spend_once

__all__ = ["IngestResult", "day_description", "ingest_reports"]


def day_description(collection: str, day: str) -> str:
    """The ledger description of one collection-day's spend."""
    return f"telemetry {collection} day {day}"


@dataclass(frozen=True)
class IngestResult:
    """What an ingestion did.

    Attributes:
        decoded: The decoded sketch.
        new_spends: The days charged by this ingestion.
        earlier_days: Days already charged before (not charged again).
    """

    decoded: DecodedCollection
    new_spends: list[Spend]
    earlier_days: list[str]


def ingest_reports(
    paths: Sequence[str | Path],
    item_ids: Sequence[str],
    out: str | Path,
    *,
    budget_key: str,
    collection: str,
    ledger_url: str | None = None,
) -> IngestResult:
    """Validate and decode reports files, charge their new days, write the popularity table.

    Args:
        paths: Reports files (all of one collection: the same header).
        item_ids: The dictionary to estimate.
        out: The popularity table to write (JSON, atomically).
        budget_key: The ledger key the collection spends from.
        collection: The collection's name (days are charged once per collection).
        ledger_url: Ledger database URL (default: the configured one).

    Raises:
        DataError: A bad reports file (nothing spent, nothing written).
        ConfigError: No files, no items, or files of different collections.
        PrivacyBudgetExceeded: The budget does not cover the new days (nothing written).
    """
    if not paths:
        raise ConfigError("telemetry ingest: give at least one reports file")
    if not item_ids:
        raise ConfigError("telemetry ingest: the item dictionary is empty")
    if not collection.strip():
        raise ConfigError("telemetry ingest: the collection name is empty")
    config = read_header(paths[0])
    # A first pass validates every line of every file before anything is decoded or spent.
    for path in paths:
        for _ in read_reports(path, config):
            pass
    decoded = decode_reports(config, item_ids, _all_batches(paths, config))
    epsilon = decoded.guarantee().epsilon_per_user_per_day
    spends: list[Spend] = []
    earlier = _legacy_charged_days(budget_key, collection, decoded.days, ledger_url)
    with ExitStack() as stack:
        # Days in sorted order, so that concurrent ingestions that wait for each other's open
        # reservations (spend_once) acquire them in one order and cannot wait in a cycle.
        for day in sorted(set(decoded.days) - set(earlier)):
            description = day_description(collection, day)
            spend = stack.enter_context(
                spend_once(
                    budget_key, epsilon, 0.0, description,
                    once_key=description, ledger_url=ledger_url,
                )
            )  # fmt: skip
            if spend is None:
                earlier.append(day)
            else:
                spends.append(spend)
        earlier.sort()
        _write_table(out, collection, decoded, spends, earlier)
    return IngestResult(decoded, spends, earlier)


def _legacy_charged_days(
    budget_key: str, collection: str, days: Sequence[str], ledger_url: str | None
) -> list[str]:
    """Days charged by ingestions from before once-keys: a counted spend with the day's
    description and no once-key. Every charge since carries its once-key, so this set only
    shrinks (an administrator releasing one) and reading it outside the lock is safe."""
    wanted = {day_description(collection, day): day for day in days}
    with Ledger(ledger_url) as book:
        return sorted(
            wanted[spend.description]
            for spend in book.spends(budget_key)
            if spend.once_key is None
            and spend.description in wanted
            and spend.status.value in ("committed", "reserved")
        )


def _all_batches(
    paths: Sequence[str | Path], config: SketchConfig
) -> Iterator[tuple[str, CMSReports | HCMSReports]]:
    for path in paths:
        yield from read_reports(path, config)


def _write_table(
    out: str | Path,
    collection: str,
    decoded: DecodedCollection,
    spends: list[Spend],
    earlier: list[str],
) -> None:
    record = {
        "format": TABLE_FORMAT,
        "version": 1,
        "collection": collection,
        "sketch": decoded.config.model_dump(mode="json"),
        "days": decoded.days,
        "reports": decoded.n_reports,
        "guarantee": decoded.guarantee().to_dict(),
        "spends": [s.to_dict() for s in spends] + [{"earlier_day": day} for day in earlier],
        "items": decoded.item_ids,
        "estimate": [float(x) for x in decoded.estimate],
        "std": [float(x) for x in decoded.std],
    }
    with atomic_file(out, "w", encoding="utf-8") as handle:
        json.dump(record, handle)

"""Local-DP telemetry of item events: one randomised report per user per day, decoded on the server.

**Device side** (:func:`randomise_days`, :class:`DeviceTelemetry`). A device holds its user's item
events of a day (views, plays, purchases: any item id, no dictionary needed). Once per day it
draws **one** of that day's events uniformly at random and sends one Count Mean Sketch (or
Hadamard CMS) report of its item, randomised on the device at ε
(:mod:`privrank.privacy.local_dp.sketch`). A day without events sends nothing. A device never
sends a second report for a day it already reported (:class:`DeviceTelemetry` refuses it).

**Server side** (:func:`decode_reports`). The server adds every report into one sketch per
collection and decodes the frequency estimate ``f̃(d)`` of every item of its dictionary. With
``E_{u,t}`` the events of user ``u`` on day ``t``, ``f̃`` is unbiased for

.. math:: E[f(d)] = \\sum_{(u,t): E_{u,t} \\neq \\emptyset}
          \\frac{|\\{e \\in E_{u,t}: e = d\\}|}{|E_{u,t}|},

each user-day's weight spread over its events. :attr:`DecodedCollection.std` is the estimator's
standard deviation by the variance formula of :func:`~privrank.privacy.local_dp.estimator_variance`
with the clipped estimates plugged in for the true counts.

**Guarantee.** Unit of privacy: **one user-day**. Each report is ε-LDP, and a device sends at
most one report a day, so every user-day is ε-LDP; a user who reports on ``D`` days is ``D·ε``-LDP
over the collection (pure-DP composition, confirmed by dp_accounting through
:func:`~privrank.privacy.local_dp.collection_epsilon`), δ = 0. **Trust:** the server is
untrusted for individual reports: it receives only randomised reports carrying no user id and
learns only post-processing of them. Devices are trusted to randomise honestly and to keep to
one report a day (a dishonest device harms accuracy, not other users' privacy). The hash family
is public. The per-day spending from the ledger is in :mod:`privrank.workflow.telemetry`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from privrank.errors import ConfigError
from privrank.privacy.local_dp.mechanism import LocalGuarantee, collection_epsilon
from privrank.privacy.local_dp.sketch import (
    CMSReports,
    HCMSReports,
    LocalSketch,
    SketchConfig,
    device_reports,
    estimator_variance,
)

__all__ = [
    "DecodedCollection",
    "DeviceDayRecord",
    "DeviceTelemetry",
    "decode_reports",
    "randomise_days",
]


@dataclass
class DeviceTelemetry:
    """One device's telemetry client: at most one ε-LDP report per day.

    Attributes:
        config: The collection's public parameters.
        reported_days: Days this device has already reported (kept on the device).
    """

    config: SketchConfig
    reported_days: set[str] = field(default_factory=set)

    def report_day(
        self, day: str, events: Sequence[str], rng: np.random.Generator
    ) -> CMSReports | HCMSReports | None:
        """The day's report: one event drawn uniformly, randomised; ``None`` without events.

        Raises:
            ConfigError: The device already reported ``day`` (a second report would spend a
                second ε of the same user-day).
        """
        if day in self.reported_days:
            raise ConfigError(
                f"this device already sent its report for {day}: one report per user-day"
            )
        if not events:
            return None
        chosen = events[int(rng.integers(len(events)))]
        self.reported_days.add(day)
        return device_reports(self.config, [chosen], rng)


@dataclass(frozen=True)
class DeviceDayRecord:
    """The user-days already reported by the devices a simulation stands for, kept in a file
    between runs, so that randomising the same user-day twice (two runs over one events file)
    is refused instead of sending a second ε-report the server cannot tell from a new user's.

    The file holds SHA-256 digests of ``user NUL day``, not the ids. It plays the part of each
    device's own memory of :attr:`DeviceTelemetry.reported_days`.

    Attributes:
        path: The record file (JSON ``{"version": 1, "reported": [hex digests]}``).
    """

    path: Path

    @staticmethod
    def digests(users: Sequence[str], days: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``digest → (user, day)`` of every distinct user-day."""
        return {
            hashlib.sha256(f"{u}\0{d}".encode()).hexdigest(): (str(u), str(d))
            for u, d in set(zip(users, days, strict=True))
        }

    def load(self) -> set[str]:
        """The digests recorded so far (none when the file does not exist yet).

        Raises:
            ConfigError: The file is not a record of this kind.
        """
        if not self.path.exists():
            return set()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            reported = data["reported"]
            if data.get("version") != 1 or not all(isinstance(x, str) for x in reported):
                raise ValueError("version 1 with a list of hex digests expected")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{self.path}: not a device-day record (expected JSON {{'version': 1, "
                f"'reported': [...]}}): {exc}"
            ) from exc
        return set(reported)

    def claim(self, users: Sequence[str], days: Sequence[str]) -> int:
        """Record the user-days of ``users``/``days`` as reported, before any report is written
        (a failure afterwards loses reports, never sends a second one).

        Returns:
            The number of user-days claimed.

        Raises:
            ConfigError: A user-day was already reported (nothing is recorded then).
        """
        new = self.digests(users, days)
        recorded = self.load()
        again = [new[d] for d in new if d in recorded]
        if again:
            user, day = sorted(again)[0]
            raise ConfigError(
                f"{self.path}: {len(again):,} user-day(s) of these events were already "
                f"reported (e.g. user {user!r} on {day}); a device sends one report per "
                "user-day: a second would spend a second ε the ledger cannot see"
            )
        from privrank.atomic import atomic_file

        with atomic_file(self.path, "w", encoding="utf-8") as handle:
            json.dump({"version": 1, "reported": sorted(recorded | set(new))}, handle)
        return len(new)


def randomise_days(
    config: SketchConfig,
    users: Sequence[str],
    items: Sequence[str],
    days: Sequence[str],
    rng: np.random.Generator,
    *,
    batch_size: int = 8192,
) -> Iterator[tuple[str, CMSReports | HCMSReports]]:
    """Simulate many devices: every (user, day) with events sends one report of one event.

    Vectorised :meth:`DeviceTelemetry.report_day` for the devices of an events table: the event
    of each user-day is drawn uniformly among its events (each device's own draw), and the
    drawn item ids are randomised as :func:`~privrank.privacy.local_dp.device_reports` does on
    a device (hashing its own id; no dictionary).

    Args:
        config: The collection's public parameters.
        users: The user of every event.
        items: The item id of every event.
        days: The ISO day of every event.
        rng: The devices' randomness.
        batch_size: Devices randomised together.

    Yields:
        ``(day, reports)`` batches, days in sorted order; exactly one report per user-day.
    """
    n = len(users)
    if not (len(items) == len(days) == n):
        raise ConfigError("randomise_days: users, items and days must have the same length")
    if n == 0:
        return
    day_values, day_codes = np.unique(
        np.asarray(days, dtype=object).astype(str), return_inverse=True
    )
    _, user_codes = np.unique(np.asarray(users, dtype=object).astype(str), return_inverse=True)
    order = np.lexsort((user_codes, day_codes))  # groups = user-days, by day then user
    keys = day_codes[order].astype(np.int64) * (int(user_codes.max()) + 1) + user_codes[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    lengths = np.diff(np.r_[starts, n])
    picked = order[starts + (rng.random(len(starts)) * lengths).astype(np.int64)]
    item_array = np.asarray(items, dtype=object)
    group_days = day_codes[picked]
    for code, day in enumerate(day_values.tolist()):
        chosen = picked[group_days == code]
        for start in range(0, len(chosen), batch_size):
            ids = [str(x) for x in item_array[chosen[start : start + batch_size]]]
            yield day, device_reports(config, ids, rng)


@dataclass(frozen=True)
class DecodedCollection:
    """The server's decoded sketch.

    Attributes:
        config: The collection's parameters.
        item_ids: The dictionary decoded.
        estimate: ``f̃(d)`` per item (unbiased, may be negative).
        std: The estimator's standard deviation per item (plug-in of the variance formula).
        reports_per_day: Reports received per day.
    """

    config: SketchConfig
    item_ids: list[str]
    estimate: np.ndarray
    std: np.ndarray
    reports_per_day: dict[str, int]

    @property
    def days(self) -> list[str]:
        """The days the reports are of, sorted."""
        return sorted(self.reports_per_day)

    @property
    def n_reports(self) -> int:
        """Reports decoded."""
        return sum(self.reports_per_day.values())

    def guarantee(self) -> LocalGuarantee:
        """ε per user-day (one report a day) and ``D·ε`` over the collection's ``D`` days."""
        per_day = collection_epsilon(self.config, 1)
        return LocalGuarantee(
            sketch=self.config.kind,
            epsilon_per_report=self.config.epsilon,
            reports_per_user_per_day=1,
            days=len(self.reports_per_day),
            epsilon_per_user_per_day=per_day,
            epsilon_total=collection_epsilon(self.config, 1, max(1, len(self.reports_per_day))),
            m=self.config.m,
            k=self.config.k,
            n_reports=self.n_reports,
            unit="one user-day (one ε-LDP report per user per day; D days compose to D·ε)",
            trust=(
                "the server is untrusted for individual reports: it receives only reports "
                "randomised on the devices, with no user id; devices are trusted to randomise "
                "honestly and to send at most one report a day"
            ),
        )


def decode_reports(
    config: SketchConfig,
    item_ids: Sequence[str],
    batches: Iterable[tuple[str, CMSReports | HCMSReports]],
) -> DecodedCollection:
    """Add every ``(day, reports)`` batch into one sketch and decode the dictionary's items.

    Raises:
        ConfigError: No reports, or reports that do not fit the collection's parameters.
    """
    sketch = LocalSketch(config, item_ids)
    per_day: dict[str, int] = {}
    for day, reports in batches:
        sketch.add(reports)
        per_day[day] = per_day.get(day, 0) + len(reports)
    if not per_day:
        raise ConfigError("no reports to decode")
    estimate = sketch.estimate()
    std = np.sqrt(np.maximum(estimator_variance(config, np.maximum(estimate, 0.0)), 0.0))
    return DecodedCollection(config, list(item_ids), estimate, std, per_day)

"""A day-stamped item-events file: what a device's telemetry client randomises.

CSV (UTF-8) with the header ``user,item,day``; one event per line: the user (device) it happened
on, the item id, and the ISO day ``YYYY-MM-DD``. Strict: every problem raises
:class:`~privrank.errors.DataError` naming the file, line, column, field, value and what was
expected; nothing is skipped.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from privrank.errors import DataError

__all__ = ["DayEvents", "read_day_events"]

HEADER = ("user", "item", "day")


@dataclass(frozen=True)
class DayEvents:
    """The events of a file, column by column (as read, in file order)."""

    users: list[str]
    items: list[str]
    days: list[str]

    def __len__(self) -> int:
        return len(self.users)


def read_day_events(path: str | Path) -> DayEvents:
    """Read and validate an events file.

    Raises:
        DataError: Unreadable file, wrong header, wrong field count, an empty id or a bad day.
    """
    path = Path(path)
    users: list[str] = []
    items: list[str] = []
    days: list[str] = []
    try:
        handle = path.open("r", encoding="utf-8", newline="")
    except OSError as exc:
        raise DataError(f"cannot read the events file ({exc.strerror})", path=path) from None
    with handle:
        reader = csv.reader(handle)
        try:
            for number, row in enumerate(reader, start=1):
                if number == 1:
                    if tuple(c.strip() for c in row) != HEADER:
                        raise DataError(
                            "wrong header", path=path, line=1, value=",".join(row),
                            expected=",".join(HEADER),
                        )  # fmt: skip
                    continue
                if len(row) != 3:
                    raise DataError(
                        "wrong number of fields", path=path, line=number, value=len(row),
                        expected="3 fields: user,item,day",
                    )  # fmt: skip
                user, item, day = (c.strip() for c in row)
                for column, (name, value) in enumerate((("user", user), ("item", item)), 1):
                    if not value:
                        raise DataError(
                            "empty id", path=path, line=number, column=column, field=name,
                            value=value, expected="a non-empty id",
                        )  # fmt: skip
                users.append(user)
                items.append(item)
                days.append(_day(path, number, day))
        except UnicodeDecodeError as exc:
            raise DataError(
                "not UTF-8", path=path, line=len(users) + 2, value=str(exc)[:60],
                expected="UTF-8 text",
            ) from None  # fmt: skip
        except csv.Error as exc:
            raise DataError(
                "malformed CSV", path=path, line=reader.line_num, value=str(exc),
                expected="CSV with the header user,item,day",
            ) from None  # fmt: skip
    if not users:
        raise DataError("no events", path=path, expected="a header and at least one event")
    return DayEvents(users, items, days)


def _day(path: Path, number: int, value: str) -> str:
    if len(value) == 10:
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    raise DataError(
        "not a day", path=path, line=number, column=3, field="day", value=value,
        expected="an ISO date YYYY-MM-DD",
    )  # fmt: skip

"""The popularity table a local-DP telemetry collection releases: items, estimates, guarantee.

One JSON object (written atomically by :mod:`privrank.workflow.telemetry`)::

    {"format": "privrank-ldp-popularity", "version": 1, "collection": "...",
     "sketch": {...SketchConfig...}, "days": [...], "reports": 1000000,
     "guarantee": {...LocalGuarantee...}, "spends": [{...ledger spend...}],
     "items": ["id", ...], "estimate": [...], "std": [...]}

Everything in it is post-processing of ε-LDP reports (the guarantee is the collection's).
:func:`read_popularity_table` validates it and raises :class:`~privrank.errors.DataError`
(file, field, value, what was expected) on anything else.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from privrank.errors import DataError
from privrank.privacy.local_dp.mechanism import LocalGuarantee

__all__ = ["TABLE_FORMAT", "PopularityTable", "read_popularity_table"]

TABLE_FORMAT = "privrank-ldp-popularity"
_FIELDS = {
    "format", "version", "collection", "sketch", "days", "reports", "guarantee", "spends",
    "items", "estimate", "std",
}  # fmt: skip


@dataclass(frozen=True)
class PopularityTable:
    """A released local-DP popularity table.

    Attributes:
        collection: The collection's name.
        item_ids: The items estimated.
        estimate: ``f̃`` per item (unbiased, may be negative).
        std: The estimator's standard deviation per item.
        guarantee: The collection's local guarantee.
        spends: The ledger spends of its days.
        days: The days decoded.
    """

    collection: str
    item_ids: list[str]
    estimate: np.ndarray
    std: np.ndarray
    guarantee: LocalGuarantee
    spends: list[dict[str, Any]]
    days: list[str]

    def aligned(self, item_ids: list[str]) -> tuple[np.ndarray, int, int]:
        """The estimates in the order of ``item_ids`` (0 for an item the table lacks).

        Returns:
            ``(estimates, items missing from the table, table items not in item_ids)``.
        """
        position = {item: i for i, item in enumerate(self.item_ids)}
        out = np.zeros(len(item_ids), dtype=np.float64)
        missing = 0
        for i, item in enumerate(item_ids):
            j = position.get(item)
            if j is None:
                missing += 1
            else:
                out[i] = self.estimate[j]
        unused = len(set(self.item_ids) - set(item_ids))
        return out, missing, unused


def read_popularity_table(path: str | Path) -> PopularityTable:
    """Read and validate a popularity table.

    Raises:
        DataError: Unreadable, not a table, or a field of the wrong type or shape.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read the popularity table ({exc.strerror})", path=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(
            "not a JSON popularity table", path=path, value=str(exc)[:80], expected=TABLE_FORMAT
        ) from None

    def bad(field: str, value: object, expected: str) -> DataError:
        shown = value if not isinstance(value, list | dict) else f"{type(value).__name__}"
        return DataError("invalid field", path=path, field=field, value=shown, expected=expected)

    if not isinstance(record, dict) or record.get("format") != TABLE_FORMAT:
        raise bad("format", None if not isinstance(record, dict) else record.get("format"),
                  repr(TABLE_FORMAT))  # fmt: skip
    missing = sorted(_FIELDS - set(record))
    if missing:
        raise bad(missing[0], None, f"the fields {sorted(_FIELDS)}")
    if record["version"] != 1:
        raise bad("version", record["version"], "1")
    items = record["items"]
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        raise bad("items", items, "a non-empty list of item id strings")
    if len(set(items)) != len(items):
        raise bad("items", items, "distinct item ids")
    arrays = {}
    for name in ("estimate", "std"):
        values = record[name]
        if (
            not isinstance(values, list)
            or len(values) != len(items)
            or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in values
            )
        ):
            raise bad(name, values, f"{len(items)} finite numbers (one per item)")
        arrays[name] = np.asarray(values, dtype=np.float64)
    try:
        guarantee = LocalGuarantee(**record["guarantee"])
    except TypeError as exc:
        raise bad("guarantee", record["guarantee"], f"a local guarantee ({exc})") from None
    if not isinstance(record["spends"], list) or not isinstance(record["days"], list):
        raise bad("spends", record["spends"], "lists of spends and of days")
    return PopularityTable(
        collection=str(record["collection"]),
        item_ids=items,
        estimate=arrays["estimate"],
        std=arrays["std"],
        guarantee=guarantee,
        spends=record["spends"],
        days=[str(d) for d in record["days"]],
    )

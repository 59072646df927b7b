"""The ledger's records and tables: spend statuses, reservations, budgets (SQLAlchemy Core).

Amounts are stored as double-precision floats (the schema is unchanged), but the ledger does its
arithmetic on the *decimal numbers they were written as*: :func:`exact` reads a stored float as
the shortest decimal that round-trips to it (what :func:`repr` prints: ``0.1`` is the decimal
0.1, not the binary double 0.1000000000000000055…) and sums are exact :class:`~fractions.Fraction`
arithmetic, so they neither round nor overflow. Ten spends of ε = 0.1 use exactly ε = 1.0, and a
spend one float step over the remainder is refused. The mechanism itself calibrates its noise
from the double, which differs from the decimal by less than one part in 10¹⁶.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from fractions import Fraction

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
)
from sqlalchemy.engine import RowMapping

__all__ = [
    "Budget",
    "Reservation",
    "SpendRecord",
    "SpendStatus",
    "datasets_table",
    "exact",
    "exact_sum",
    "metadata",
    "once_index",
    "spend_record",
    "spends_table",
]


def exact(value: float) -> Fraction:
    """A finite amount as the exact decimal it was written as (its shortest round-trip repr)."""
    return Fraction(repr(float(value)))


def exact_sum(values: Iterable[float]) -> Fraction:
    """The exact sum of :func:`exact` amounts (no rounding, no overflow)."""
    return sum((exact(v) for v in values), Fraction(0))


class SpendStatus(StrEnum):
    """Lifecycle of a spend: reserved → committed, or reserved → released."""

    reserved = "reserved"
    committed = "committed"
    released = "released"


metadata = MetaData()

datasets_table = Table(
    "privrank_datasets",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("name", String(200), nullable=True),
    Column("epsilon", Float, nullable=False),
    Column("delta", Float, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("epsilon >= 0", name="ck_datasets_epsilon"),
    CheckConstraint("delta >= 0 AND delta < 1", name="ck_datasets_delta"),
)

spends_table = Table(
    "privrank_spends",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("dataset_key", String(200), ForeignKey("privrank_datasets.key"), nullable=False),
    Column("description", String(500), nullable=False),
    Column("epsilon", Float, nullable=False),
    Column("delta", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("owner", String(300), nullable=False),
    Column("reserved_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    # A release charged at most once per dataset (e.g. one telemetry collection-day); NULL for
    # ordinary spends. Added after the first schema: Ledger adds the column to older files.
    Column("once_key", String(300), nullable=True),
    CheckConstraint("status IN ('reserved', 'committed', 'released')", name="ck_spends_status"),
    CheckConstraint("epsilon >= 0 AND delta >= 0", name="ck_spends_values"),
    Index("ix_privrank_spends_dataset", "dataset_key", "status"),
)

#: At most one *counted* (reserved or committed) spend per dataset and once-key: the database
#: itself refuses a second one, whatever the code in front of it does (a partial unique index,
#: which SQLite and PostgreSQL both support). Created by the ledger after the column exists.
once_index = Index(
    "ux_privrank_spends_once",
    spends_table.c.dataset_key,
    spends_table.c.once_key,
    unique=True,
    sqlite_where=spends_table.c.status.in_(["reserved", "committed"])
    & spends_table.c.once_key.isnot(None),
    postgresql_where=spends_table.c.status.in_(["reserved", "committed"])
    & spends_table.c.once_key.isnot(None),
)


@dataclass(frozen=True)
class Reservation:
    """A reserved spend, returned by :meth:`Ledger.reserve`; commit or release it.

    Attributes:
        id: The spend's id (a UUID4 string).
        dataset_key: The dataset it spends from.
        epsilon: Reserved ε.
        delta: Reserved δ.
        description: What it is for (run or model name).
        reserved_at: When it was reserved (UTC).
    """

    id: str
    dataset_key: str
    epsilon: float
    delta: float
    description: str
    reserved_at: datetime


@dataclass(frozen=True)
class SpendRecord:
    """One row of the spends table, as :meth:`Ledger.spends` returns it."""

    id: str
    dataset_key: str
    description: str
    epsilon: float
    delta: float
    status: SpendStatus
    owner: str
    reserved_at: datetime
    finished_at: datetime | None
    once_key: str | None = None


@dataclass(frozen=True)
class Budget:
    """A dataset's budget and what is spent from it (sums by basic composition).

    ``remaining_* = budget - spent - reserved`` (negative when the budget was lowered below what
    is already used). The sums are exact decimal sums (see :func:`exact`) rounded once to the
    nearest float for reporting; the ledger's refusal decision uses the exact sums themselves.
    """

    dataset_key: str
    name: str | None
    epsilon: float
    delta: float
    epsilon_spent: float
    delta_spent: float
    epsilon_reserved: float
    delta_reserved: float
    updated_at: datetime

    @property
    def epsilon_remaining(self) -> float:
        """ε still available: budget − committed − reserved."""
        return float(exact(self.epsilon) - exact(self.epsilon_spent) - exact(self.epsilon_reserved))

    @property
    def delta_remaining(self) -> float:
        """δ still available: budget − committed − reserved."""
        return float(exact(self.delta) - exact(self.delta_spent) - exact(self.delta_reserved))


def _utc(value: datetime) -> datetime:
    # SQLite returns naive datetimes; everything stored is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def spend_record(r: RowMapping) -> SpendRecord:
    """One row of the spends table as a :class:`SpendRecord`."""
    return SpendRecord(
        id=r["id"],
        dataset_key=r["dataset_key"],
        description=r["description"],
        epsilon=r["epsilon"],
        delta=r["delta"],
        status=SpendStatus(r["status"]),
        owner=r["owner"],
        reserved_at=_utc(r["reserved_at"]),
        finished_at=None if r["finished_at"] is None else _utc(r["finished_at"]),
        once_key=r["once_key"],
    )

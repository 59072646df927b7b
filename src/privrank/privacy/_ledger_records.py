"""The ledger's records and tables: spend statuses, reservations, budgets (SQLAlchemy Core).

Amounts are stored as double-precision floats and summed with :func:`math.fsum` (one correctly
rounded sum), so no rounding drift can let spends exceed a budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

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

__all__ = [
    "Budget",
    "Reservation",
    "SpendRecord",
    "SpendStatus",
    "datasets_table",
    "metadata",
    "spends_table",
]


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
    CheckConstraint("status IN ('reserved', 'committed', 'released')", name="ck_spends_status"),
    CheckConstraint("epsilon >= 0 AND delta >= 0", name="ck_spends_values"),
    Index("ix_privrank_spends_dataset", "dataset_key", "status"),
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


@dataclass(frozen=True)
class Budget:
    """A dataset's budget and what is spent from it (sums by basic composition).

    ``remaining_* = budget - spent - reserved`` (negative when the budget was lowered below what
    is already used).
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
        return math.fsum([self.epsilon, -self.epsilon_spent, -self.epsilon_reserved])

    @property
    def delta_remaining(self) -> float:
        """δ still available: budget − committed − reserved."""
        return math.fsum([self.delta, -self.delta_spent, -self.delta_reserved])

"""The privacy budget ledger: each dataset's (ε, δ) budget and every spend against it.

A private run spends privacy budget like money: it **reserves** its (ε, δ) before touching any
data, **commits** after it finished, or **releases** the reservation when it failed before
publishing anything. The ledger lives in a SQL database through SQLAlchemy: a SQLite file by
default (``$PRIVRANK_HOME/ledger.sqlite``, or the URL in ``PRIVRANK_LEDGER_URL``) or PostgreSQL.

Guarantees:

- **Composition.** Spends on one dataset compose by *basic composition* (Dwork & Roth 2014,
  Thm. 3.16): k runs that are (ε_i, δ_i)-DP with respect to one user's history are together
  (Σ ε_i, Σ δ_i)-DP, even when each run is chosen after seeing the earlier ones. The ledger
  therefore refuses a reservation unless ``spent + reserved + requested ≤ budget`` holds for ε
  *and* for δ, summed exactly with no tolerance: each amount is the decimal it was written as
  (``0.1`` is 1/10, see :func:`~privrank.privacy._ledger_records.exact`) and the sums are
  rational arithmetic, which neither rounds nor overflows. Ten spends of ε = 0.1 fit a budget of
  1.0 exactly; a spend one float step over what remains is refused. Basic composition is simple
  and sound for any mix of mechanisms; tighter composition of known mechanisms is available
  from :class:`privrank.privacy.accounting.Accountant`.
- **Nothing is lost.** A reservation counts against the budget until it is released. A run
  that crashes (killed, power loss) leaves its spend *reserved*: it keeps counting, and
  :meth:`Ledger.spends` shows it to an administrator, who may commit or release it.
- **No overspending under concurrency.** The check and the insert run in one transaction that
  first locks the dataset's row: ``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE``
  (the database's write lock) on SQLite. Two concurrent reservations are serialised, so they
  cannot together exceed the budget.
- **Charged once.** A release that must be charged at most once (one telemetry collection-day,
  whichever ingestion decodes it first) is reserved with :meth:`Ledger.reserve_once` under a
  *once-key*. The lookup of an earlier spend with that key and the insert run in the same
  locked transaction as any reservation, and a partial unique index on (dataset, once-key) over
  the counted spends makes the database itself refuse a second one. Two processes that charge
  the same key at the same moment therefore charge it exactly once.
- **Refused before data is touched.** :class:`~privrank.errors.PrivacyBudgetExceeded` names the
  request, the spent, reserved and remaining budget.

**Which key.** A budget protects the users of a *population*: key it by the source dataset
(its catalog name, or the :func:`~privrank.data.fingerprint.fingerprint` of the dataset as
imported), and spend every run on any split, sample or curated version of it from that one key.
Keying by the fingerprint of a derived subset would give each subset a fresh budget for the same
users.

Releasing is only sound when nothing computed from the data under that reservation was
published; :meth:`Ledger.spend` releases on an exception inside its block, so keep publishing
(saving, serving) outside the block or after it.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

from sqlalchemy import (
    Engine,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, Connection, Row, RowMapping
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from privrank.database import normalise_database_url
from privrank.errors import ConfigError, PrivacyBudgetExceeded, PrivrankError
from privrank.privacy._ledger_checks import check_delta, check_epsilon, check_key, check_text
from privrank.privacy._ledger_records import (
    Budget,
    Reservation,
    SpendRecord,
    SpendStatus,
    datasets_table,
    exact_sum,
    metadata,
    once_index,
    spend_record,
    spends_table,
)
from privrank.settings import home_dir

__all__ = [
    "Budget",
    "Ledger",
    "LedgerError",
    "Reservation",
    "SpendRecord",
    "SpendStatus",
    "default_ledger_url",
]

LEDGER_URL_ENV = "PRIVRANK_LEDGER_URL"
_SQLITE_TIMEOUT_S = 60.0
_PG_CREATE_LOCK = 0x70726976  # an arbitrary advisory-lock key ("priv") for schema creation


class LedgerError(PrivrankError, RuntimeError):
    """The ledger cannot do what was asked (unknown spend, spend not reserved, database error)."""


def default_ledger_url() -> str:
    """``$PRIVRANK_LEDGER_URL``, else a SQLite file ``$PRIVRANK_HOME/ledger.sqlite``."""
    value = os.environ.get(LEDGER_URL_ENV)
    if value:
        return value
    return f"sqlite:///{home_dir() / 'ledger.sqlite'}"


def _now() -> datetime:
    return datetime.now(UTC)


_T = TypeVar("_T")
_AGAIN = object()  # _reserve_once: the unique index refused a spend released since; poll again


@overload
def _aware(value: datetime) -> datetime: ...
@overload
def _aware(value: None) -> None: ...
def _aware(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything stored is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _normalise_url(url: str | URL) -> URL:
    return normalise_database_url(url, what="ledger", loses="every spend", example="ledger.sqlite")


class Ledger:
    """A per-dataset privacy budget ledger in SQLite or PostgreSQL.

    See the module docstring for the guarantees (basic composition, nothing lost, no
    overspending under concurrency). Typical use by a private fit::

        ledger = Ledger()
        with ledger.spend(key, epsilon=1.0, delta=1e-6, description="ease ml-100k"):
            model.fit(train, FitOptions(privacy=spec))   # refused before training if over budget
        model.save(out)                                    # publish after the spend committed

    Args:
        url: SQLAlchemy URL (``sqlite:///file`` or ``postgresql://user@host:port/db``; a bare
            ``postgresql://`` uses psycopg 3). ``None``: :func:`default_ledger_url`.
        echo: Log SQL statements.

    Raises:
        ConfigError: The URL is invalid or names an unsupported database.
        LedgerError: The database cannot be reached or its tables cannot be created.
    """

    def __init__(self, url: str | URL | None = None, *, echo: bool = False) -> None:
        self.url = _normalise_url(default_ledger_url() if url is None else url)
        self.backend = self.url.get_backend_name()
        self._engine = self._make_engine(echo)
        try:
            self._guard("create the ledger tables", self._create_tables)
        except BaseException:
            self._engine.dispose()
            raise

    def _make_engine(self, echo: bool) -> Engine:
        if self.backend != "sqlite":
            # READ COMMITTED is what the row lock relies on: after waiting for the lock, the
            # next statement sees the spends the other transaction committed.
            return create_engine(
                self.url, echo=echo, pool_pre_ping=True, isolation_level="READ COMMITTED"
            )
        os.makedirs(os.path.dirname(os.path.abspath(self.url.database or "")), exist_ok=True)
        engine = create_engine(self.url, echo=echo, connect_args={"timeout": _SQLITE_TIMEOUT_S})

        # pysqlite's own transaction handling would defer BEGIN; take the write lock up front.
        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            dbapi_connection.execute("PRAGMA foreign_keys = ON")

        @event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def _create_tables(self) -> None:
        with self._engine.begin() as conn:
            if self.backend == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_CREATE_LOCK})
            metadata.create_all(conn, checkfirst=True)
            # Ledgers created before once-keys existed: add the column, then its unique index.
            columns = {c["name"] for c in inspect(conn).get_columns(spends_table.name)}
            if "once_key" not in columns:
                conn.execute(
                    text(f"ALTER TABLE {spends_table.name} ADD COLUMN once_key VARCHAR(300)")
                )
            once_index.create(conn, checkfirst=True)

    def _guard(self, what: str, action: Callable[..., _T], *args: Any) -> _T:
        try:
            return action(*args)
        except PrivrankError:
            raise
        except SQLAlchemyError as exc:
            where = self.url.render_as_string(hide_password=True)
            raise LedgerError(f"privacy ledger {where}: cannot {what}: {exc}") from exc

    def close(self) -> None:
        """Close the database connections."""
        self._engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.url.render_as_string(hide_password=True)!r})"

    # --- budgets --------------------------------------------------------------------------

    def set_budget(
        self, dataset_key: str, epsilon: float, delta: float, *, name: str | None = None
    ) -> Budget:
        """Create or change a dataset's total budget.

        Lowering a budget below what is used is allowed (it only refuses later spends); raising
        it is an administrative decision about how much one user may be exposed in total.

        Args:
            dataset_key: The dataset's key (e.g. its :func:`~privrank.data.fingerprint`).
            epsilon: Total ε (finite, ≥ 0).
            delta: Total δ in [0, 1).
            name: A human-readable name, shown by ``privrank privacy ledger``.

        Returns:
            The dataset's budget after the change.
        """
        owner = "Ledger.set_budget"
        key = check_key(dataset_key, owner)
        eps = check_epsilon(epsilon, owner, allow_zero=True)
        dlt = check_delta(delta, owner)
        if name is not None:
            check_text(name, "name", owner, 200)
        return self._guard("set the budget", self._set_budget, key, eps, dlt, name)

    def _set_budget(self, key: str, eps: float, dlt: float, name: str | None) -> Budget:
        now = _now()
        with self._engine.begin() as conn:
            row = self._lock_dataset(conn, key)
            if row is None:
                conn.execute(
                    datasets_table.insert().values(
                        key=key, name=name, epsilon=eps, delta=dlt, created_at=now, updated_at=now
                    )
                )
            else:
                values = {"epsilon": eps, "delta": dlt, "updated_at": now}
                if name is not None:
                    values["name"] = name
                conn.execute(
                    update(datasets_table).where(datasets_table.c.key == key).values(**values)
                )
            return self._existing_budget(conn, key)

    def budget(self, dataset_key: str) -> Budget | None:
        """A dataset's budget and usage, or ``None`` when it has none."""
        key = check_key(dataset_key, "Ledger.budget")

        def read() -> Budget | None:
            with self._engine.connect() as conn:
                return self._budget(conn, key)

        return self._guard("read the budget", read)

    def budgets(self) -> list[Budget]:
        """Every dataset's budget and usage, by key."""

        def read() -> list[Budget]:
            with self._engine.connect() as conn:
                keys = conn.scalars(
                    select(datasets_table.c.key).order_by(datasets_table.c.key)
                ).all()
                return [self._existing_budget(conn, key) for key in keys]

        return self._guard("read the budgets", read)

    def _lock_dataset(self, conn: Connection, key: str) -> RowMapping | None:
        query = select(datasets_table).where(datasets_table.c.key == key)
        if self.backend == "postgresql":
            query = query.with_for_update()
        return conn.execute(query).mappings().first()

    def _used(self, conn: Connection, key: str) -> Sequence[Row[Any]]:
        """Status, ε and δ of every spend that counts (reserved or committed)."""
        return conn.execute(
            select(spends_table.c.status, spends_table.c.epsilon, spends_table.c.delta).where(
                spends_table.c.dataset_key == key,
                spends_table.c.status.in_([SpendStatus.reserved, SpendStatus.committed]),
            )
        ).all()

    def _existing_budget(self, conn: Connection, key: str) -> Budget:
        budget = self._budget(conn, key)
        if budget is None:
            raise LedgerError(f"privacy ledger: dataset {key!r} has no budget row")
        return budget

    def _budget(self, conn: Connection, key: str) -> Budget | None:
        row = (
            conn.execute(select(datasets_table).where(datasets_table.c.key == key))
            .mappings()
            .first()
        )
        if row is None:
            return None
        used = self._used(conn, key)
        # Exact sums rounded once for reporting (they are at most the largest budget ever set,
        # so they fit a float).
        sums = {
            status: (
                float(exact_sum(r.epsilon for r in used if r.status == status)),
                float(exact_sum(r.delta for r in used if r.status == status)),
            )
            for status in (SpendStatus.committed, SpendStatus.reserved)
        }
        return Budget(
            dataset_key=key,
            name=row["name"],
            epsilon=row["epsilon"],
            delta=row["delta"],
            epsilon_spent=sums[SpendStatus.committed][0],
            delta_spent=sums[SpendStatus.committed][1],
            epsilon_reserved=sums[SpendStatus.reserved][0],
            delta_reserved=sums[SpendStatus.reserved][1],
            updated_at=_aware(row["updated_at"]),
        )

    # --- spends ---------------------------------------------------------------------------

    def reserve(
        self, dataset_key: str, epsilon: float, delta: float, description: str
    ) -> Reservation:
        """Atomically check the remaining budget and reserve (ε, δ) from it.

        Args:
            dataset_key: The dataset to spend from.
            epsilon: ε of the run (finite, > 0).
            delta: δ of the run, in [0, 1).
            description: What the spend is for (run or model name), at most 500 characters.

        Returns:
            The reservation; pass it to :meth:`commit` or :meth:`release`.

        Raises:
            PrivacyBudgetExceeded: The dataset has no budget, or ``spent + reserved +
                requested`` would exceed it for ε or δ.
        """
        owner = "Ledger.reserve"
        key = check_key(dataset_key, owner)
        eps = check_epsilon(epsilon, owner, allow_zero=False)
        dlt = check_delta(delta, owner)
        check_text(description, "description", owner, 500)
        return self._guard("reserve a spend", self._reserve, key, eps, dlt, description)

    def _reserve(self, key: str, eps: float, dlt: float, description: str) -> Reservation:
        with self._engine.begin() as conn:
            row = self._lock_dataset(conn, key)
            return self._insert_reservation(conn, row, key, eps, dlt, description, None)

    def _insert_reservation(
        self,
        conn: Connection,
        row: RowMapping | None,
        key: str,
        eps: float,
        dlt: float,
        description: str,
        once_key: str | None,
    ) -> Reservation:
        """Check the budget and insert a reserved spend (inside the dataset-locked transaction)."""
        if row is None:
            raise PrivacyBudgetExceeded(
                f"dataset {key!r} has no privacy budget in {self!r}; set one with "
                f"`privrank privacy budget {key} --epsilon E --delta D`"
            )
        used = self._used(conn, key)
        # Exact sums (no rounding, no overflow) of every counted spend and the request.
        eps_after = exact_sum([*(r.epsilon for r in used), eps])
        dlt_after = exact_sum([*(r.delta for r in used), dlt])
        if eps_after > exact_sum([row["epsilon"]]) or dlt_after > exact_sum([row["delta"]]):
            raise PrivacyBudgetExceeded(_refusal(self._existing_budget(conn, key), eps, dlt))
        now = _now()
        spend_id = str(uuid.uuid4())
        conn.execute(
            spends_table.insert().values(
                id=spend_id,
                dataset_key=key,
                description=description,
                epsilon=eps,
                delta=dlt,
                status=SpendStatus.reserved.value,
                owner=_owner(),
                reserved_at=now,
                finished_at=None,
                once_key=once_key,
            )
        )
        return Reservation(spend_id, key, eps, dlt, description, now)

    def reserve_once(
        self,
        dataset_key: str,
        epsilon: float,
        delta: float,
        description: str,
        *,
        once_key: str,
        wait_s: float = 120.0,
    ) -> Reservation | None:
        """Reserve (ε, δ) unless a spend with the same once-key already counts; one atomic step.

        For releases that must be charged at most once, whoever makes them first (a telemetry
        collection-day: decoding the same reports again is post-processing). In one transaction
        that holds the dataset's lock (as :meth:`reserve` does), the ledger looks for a counted
        spend with this once-key and inserts the reservation only when there is none; a partial
        unique index on (dataset, once-key) over reserved and committed spends refuses a second
        one in the database as well.

        * A **committed** spend with the key exists: nothing is reserved; returns ``None``.
        * A **reserved** one exists (another run is charging it now): waits for that run to
          commit (→ ``None``) or release it (→ this call reserves), polling for up to
          ``wait_s`` seconds. Treating a reservation that is still open as charged would be
          unsound: its run may still release it after this caller published.
        * None exists (or only released ones): reserves, as :meth:`reserve`.

        Args:
            dataset_key: The dataset to spend from.
            epsilon: ε of the release (finite, > 0).
            delta: δ of the release, in [0, 1).
            description: What the spend is for, at most 500 characters.
            once_key: What is charged once (non-empty, at most 300 characters).
            wait_s: How long to wait for another run's open reservation of the same key.

        Returns:
            The new reservation, or ``None`` when the key is already charged (committed).

        Raises:
            PrivacyBudgetExceeded: The key is not charged yet and the budget does not cover it.
            LedgerError: Another run's reservation of the key stayed open for ``wait_s`` seconds
                (a crashed run: an administrator resolves it with ``privrank privacy resolve``).
        """
        owner = "Ledger.reserve_once"
        key = check_key(dataset_key, owner)
        eps = check_epsilon(epsilon, owner, allow_zero=False)
        dlt = check_delta(delta, owner)
        check_text(description, "description", owner, 500)
        check_text(once_key, "once_key", owner, 300, non_empty=True)
        deadline = time.monotonic() + max(0.0, float(wait_s))
        pause = 0.05
        while True:
            outcome = self._guard(
                "reserve a once-only spend",
                self._reserve_once,
                key,
                eps,
                dlt,
                description,
                once_key,
            )
            if isinstance(outcome, Reservation) or outcome is None:
                return outcome
            if time.monotonic() >= deadline:
                raise LedgerError(self._still_open(key, once_key, outcome, wait_s))
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _still_open(self, key: str, once_key: str, outcome: object, wait_s: float) -> str:
        if not isinstance(outcome, SpendRecord):  # refused by the unique index, nothing found
            return (
                f"privacy ledger {self!r}: the database refused to reserve {once_key!r} of "
                f"dataset {key!r} (its unique index holds a counted spend of that key) for "
                f"{wait_s:g} s"
            )
        since = outcome.reserved_at.strftime("%Y-%m-%d %H:%M:%S")
        return (
            f"privacy ledger {self!r}: {once_key!r} of dataset {key!r} is reserved by spend "
            f"{outcome.id} ({outcome.owner}, since {since} UTC) and was neither committed nor "
            f"released within {wait_s:g} s; if that run crashed, resolve it with "
            f"`privrank privacy resolve {outcome.id} --as committed|released`"
        )

    def _reserve_once(
        self, key: str, eps: float, dlt: float, description: str, once_key: str
    ) -> Reservation | SpendRecord | object | None:
        """A reservation, ``None`` (already committed), the open reservation to wait for, or
        ``_AGAIN`` (refused by the unique index for a spend released since: try again)."""
        try:
            with self._engine.begin() as conn:
                row = self._lock_dataset(conn, key)
                earlier = _counted_once(conn, key, once_key)
                if earlier is not None:
                    return None if earlier.status == SpendStatus.committed else earlier
                return self._insert_reservation(conn, row, key, eps, dlt, description, once_key)
        except IntegrityError:
            # The unique index refused a second counted spend: another run got there first
            # (possible only for a transaction that bypassed the lock). Report what it holds.
            with self._engine.connect() as conn:
                earlier = _counted_once(conn, key, once_key)
            if earlier is None:  # released meanwhile: the caller's next poll reserves
                return _AGAIN
            return None if earlier.status == SpendStatus.committed else earlier

    def commit(self, reservation: Reservation | str) -> None:
        """Mark a reserved spend as spent (the run finished; its output may be published).

        Raises:
            LedgerError: No such spend, or it is not reserved (already committed or released).
        """
        self._finish(reservation, SpendStatus.committed)

    def release(self, reservation: Reservation | str) -> None:
        """Give a reserved spend back (the run failed and published nothing).

        Raises:
            LedgerError: No such spend, or it is not reserved (already committed or released).
        """
        self._finish(reservation, SpendStatus.released)

    def _finish(self, reservation: Reservation | str, status: SpendStatus) -> None:
        spend_id = reservation.id if isinstance(reservation, Reservation) else reservation
        if not isinstance(spend_id, str):
            raise ConfigError(f"expected a Reservation or a spend id. Got {reservation!r}")

        def run() -> None:
            with self._engine.begin() as conn:
                result = conn.execute(
                    update(spends_table)
                    .where(
                        spends_table.c.id == spend_id,
                        spends_table.c.status == SpendStatus.reserved.value,
                    )
                    .values(status=status.value, finished_at=_now())
                )
                if result.rowcount == 1:
                    return
                current = conn.scalar(
                    select(spends_table.c.status).where(spends_table.c.id == spend_id)
                )
            if current is None:
                raise LedgerError(f"no spend {spend_id!r} in {self!r}")
            raise LedgerError(
                f"cannot mark spend {spend_id!r} {status.value}: it is {current}, not reserved"
            )

        self._guard(f"mark the spend {status.value}", run)

    @contextmanager
    def spend(
        self, dataset_key: str, epsilon: float, delta: float, description: str
    ) -> Iterator[Reservation]:
        """Reserve, run the block, then commit; release if the block raises.

        A process killed inside the block leaves the spend reserved (it keeps counting).

        Yields:
            The reservation.

        Raises:
            PrivacyBudgetExceeded: Before the block runs, when the budget does not allow it.
        """
        reservation = self.reserve(dataset_key, epsilon, delta, description)
        try:
            yield reservation
        except BaseException:
            self.release(reservation)
            raise
        self.commit(reservation)

    def spends(
        self, dataset_key: str | None = None, *, status: SpendStatus | str | None = None
    ) -> list[SpendRecord]:
        """Spends, oldest first, optionally of one dataset and/or one status."""
        query = select(spends_table).order_by(spends_table.c.reserved_at, spends_table.c.id)
        if dataset_key is not None:
            query = query.where(
                spends_table.c.dataset_key == check_key(dataset_key, "Ledger.spends")
            )
        if status is not None:
            try:
                status = SpendStatus(status)
            except ValueError as exc:
                raise ConfigError(
                    f"The 'status' parameter of Ledger.spends must be one of reserved, "
                    f"committed, released. Got {status!r}"
                ) from exc
            query = query.where(spends_table.c.status == status.value)

        def read() -> list[SpendRecord]:
            with self._engine.connect() as conn:
                return [spend_record(r) for r in conn.execute(query).mappings()]

        return self._guard("read the spends", read)

    def count_spends(self) -> int:
        """How many spends (of any status) the ledger holds."""

        def read() -> int:
            with self._engine.connect() as conn:
                return int(conn.scalar(select(func.count()).select_from(spends_table)))

        return self._guard("count the spends", read)


def _counted_once(conn: Connection, key: str, once_key: str) -> SpendRecord | None:
    """The reserved or committed spend of ``key`` under ``once_key``, if any (at most one)."""
    row = (
        conn.execute(
            select(spends_table).where(
                spends_table.c.dataset_key == key,
                spends_table.c.once_key == once_key,
                spends_table.c.status.in_([SpendStatus.reserved, SpendStatus.committed]),
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else spend_record(row)


def _refusal(budget: Budget, eps: float, dlt: float) -> str:
    return (
        f"privacy budget of dataset {budget.dataset_key!r} exceeded: requested ε={eps:g}, "
        f"δ={dlt:g}; spent ε={budget.epsilon_spent:g}, δ={budget.delta_spent:g}; reserved "
        f"ε={budget.epsilon_reserved:g}, δ={budget.delta_reserved:g}; remaining "
        f"ε={budget.epsilon_remaining:g}, δ={budget.delta_remaining:g} of the total "
        f"ε={budget.epsilon:g}, δ={budget.delta:g} (spends add up by basic composition)"
    )

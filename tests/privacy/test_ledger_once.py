"""Spends charged at most once (``Ledger.reserve_once``), and concurrent telemetry ingestions.

Oracle: the ledger's own rows (how many counted spends carry a once-key) after runs that race
on purpose (threads with their own connections, processes started at one instant), on SQLite
and on PostgreSQL; and a ledger with the lookup removed, where the database's unique index alone
must still refuse the second charge.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from privrank.errors import ConfigError, PrivacyBudgetExceeded
from privrank.privacy.ledger import Ledger, LedgerError, SpendStatus
from privrank.privacy.local_dp import SketchConfig
from privrank.privacy.local_dp.telemetry import randomise_days
from privrank.privacy.local_dp.wire import write_reports
from privrank.workflow.telemetry import ingest_reports  # imported before the processes fork

KEY = "shop"
ONCE = "telemetry shop day 2026-12-01"


def _counted(url: str, once_key: str = ONCE) -> list[SpendStatus]:
    with Ledger(url) as book:
        return [
            s.status
            for s in book.spends(KEY)
            if s.once_key == once_key and s.status != SpendStatus.released
        ]


def test_a_committed_key_is_not_charged_again_and_a_released_one_is(ledger_url: str) -> None:
    with Ledger(ledger_url) as book:
        book.set_budget(KEY, 10.0, 0.0)
        first = book.reserve_once(KEY, 4.0, 0.0, "day 1", once_key=ONCE)
        assert first is not None and first.epsilon == 4.0
        book.release(first)
        second = book.reserve_once(KEY, 4.0, 0.0, "day 1", once_key=ONCE)
        assert second is not None and second.id != first.id  # released: charged anew
        book.commit(second)
        assert book.reserve_once(KEY, 4.0, 0.0, "day 1", once_key=ONCE) is None
        assert book.budget(KEY).epsilon_spent == 4.0
        # Other keys and plain spends are independent of it.
        other = book.reserve_once(KEY, 4.0, 0.0, "day 2", once_key="telemetry shop day 2")
        assert other is not None
        with pytest.raises(PrivacyBudgetExceeded):
            book.reserve_once(KEY, 4.0, 0.0, "day 3", once_key="telemetry shop day 3")
        [record] = [s for s in book.spends(KEY) if s.id == second.id]
        assert record.once_key == ONCE and record.status == SpendStatus.committed


def test_an_open_reservation_is_waited_for(ledger_url: str) -> None:
    with Ledger(ledger_url) as book:
        book.set_budget(KEY, 10.0, 0.0)
        held = book.reserve_once(KEY, 4.0, 0.0, "day 1", once_key=ONCE)
        assert held is not None
        # Nobody resolves it: a clear error after the wait, naming the spend and the way out.
        with pytest.raises(LedgerError, match=f"reserved by spend {held.id}.*privacy resolve"):
            book.reserve_once(KEY, 4.0, 0.0, "day 1", once_key=ONCE, wait_s=0.3)
        # Committed while the second caller waits: it charges nothing.
        timer = threading.Timer(0.4, book.commit, args=(held,))
        timer.start()
        started = time.monotonic()
        assert book.reserve_once(KEY, 4.0, 0.0, "day 1", once_key=ONCE, wait_s=30) is None
        assert time.monotonic() - started >= 0.3
        timer.join()
        # Released while the second caller waits: the second caller charges it.
        again = book.reserve_once(KEY, 1.0, 0.0, "day 2", once_key="day 2")
        assert again is not None
        timer = threading.Timer(0.4, book.release, args=(again,))
        timer.start()
        mine = book.reserve_once(KEY, 1.0, 0.0, "day 2", once_key="day 2", wait_s=30)
        timer.join()
        assert mine is not None and mine.id != again.id
    assert _counted(ledger_url, "day 2") == [SpendStatus.reserved]


def test_threads_with_their_own_connections_charge_a_key_once(ledger_url: str) -> None:
    with Ledger(ledger_url) as book:
        book.set_budget(KEY, 100.0, 0.0)
    n_threads = 6
    barrier = threading.Barrier(n_threads)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        with Ledger(ledger_url) as mine:
            barrier.wait()
            reservation = mine.reserve_once(KEY, 4.0, 0.0, "racing", once_key=ONCE)
            if reservation is not None:
                time.sleep(0.2)  # the others find it open and wait
                mine.commit(reservation)
            with lock:
                outcomes.append("charged" if reservation is not None else "already")

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(outcomes) == ["already"] * (n_threads - 1) + ["charged"]
    assert _counted(ledger_url) == [SpendStatus.committed]


def test_the_unique_index_refuses_a_second_charge_without_the_lookup(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database guards the key too: with the lookup removed, the second insert is refused."""
    from privrank.privacy import ledger as ledger_module

    with Ledger(ledger_url) as book:
        book.set_budget(KEY, 100.0, 0.0)
        first = book.reserve_once(KEY, 4.0, 0.0, "day 1", once_key=ONCE)
        assert first is not None
        monkeypatch.setattr(ledger_module, "_counted_once", lambda conn, key, once_key: None)
        with pytest.raises(LedgerError, match="database refused to reserve"):
            book.reserve_once(KEY, 4.0, 0.0, "day 1", once_key=ONCE, wait_s=0.2)
        book.commit(first)
    assert _counted(ledger_url) == [SpendStatus.committed]


def test_bad_once_keys_are_refused(sqlite_url: str) -> None:
    with Ledger(sqlite_url) as book:
        book.set_budget(KEY, 1.0, 0.0)
        for bad in ("", "   ", "x" * 301, None):
            with pytest.raises(ConfigError, match=r"'once_key' parameter of Ledger\.reserve_once"):
                book.reserve_once(KEY, 0.1, 0.0, "d", once_key=bad)  # type: ignore[arg-type]


def test_a_ledger_file_from_before_once_keys_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with Ledger(f"sqlite:///{path}") as book:
        book.set_budget(KEY, 10.0, 0.0)
        book.commit(book.reserve(KEY, 1.0, 0.0, "an old spend"))
    conn = sqlite3.connect(path)  # make it look like the first schema
    conn.execute("DROP INDEX ux_privrank_spends_once")
    conn.execute("ALTER TABLE privrank_spends DROP COLUMN once_key")
    conn.commit()
    conn.close()
    with Ledger(f"sqlite:///{path}") as book:
        [old] = book.spends(KEY)
        assert old.description == "an old spend" and old.once_key is None
        assert book.reserve_once(KEY, 1.0, 0.0, "new", once_key=ONCE) is not None
    conn = sqlite3.connect(path)
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(privrank_spends)")}
    conn.close()
    assert "ux_privrank_spends_once" in indexes


# --- two `telemetry ingest` runs at the same moment ---------------------------------------------


def _reports(tmp_path: Path) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(3)
    items = [f"i{i}" for i in range(6)]
    users, events, days = [], [], []
    for user in range(200):
        for day in ("2026-12-01", "2026-12-02"):
            users.append(f"u{user}")
            events.append(items[user % 6])
            days.append(day)
    config = SketchConfig(kind="cms", epsilon=2.0, m=16, k=8)
    path = tmp_path / "reports.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        write_reports(handle, config, randomise_days(config, users, events, days, rng))
    return path, items


def _ingest_in_process(url, reports, items, out, start_at, results) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    try:
        result = ingest_reports(
            [reports], items, out, budget_key=KEY, collection="shop", ledger_url=url
        )
        results.put((len(result.new_spends), len(result.earlier_days)))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(f"error: {exc!r}")


def test_two_concurrent_ingestions_charge_each_day_exactly_once(
    ledger_url: str, tmp_path: Path
) -> None:
    reports, items = _reports(tmp_path)
    with Ledger(ledger_url) as book:
        book.set_budget(KEY, 100.0, 0.0)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.time() + 1.5
    processes = [
        context.Process(
            target=_ingest_in_process,
            args=(ledger_url, reports, items, tmp_path / f"pop{i}.json", start_at, results),
        )
        for i in range(2)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(60)
    assert all(not isinstance(o, str) for o in outcomes), outcomes
    # Two days, two ingestions: each day charged by exactly one of them.
    assert sum(new for new, _ in outcomes) == 2
    assert all(new + earlier == 2 for new, earlier in outcomes)
    with Ledger(ledger_url) as book:
        spends = [s for s in book.spends(KEY) if s.status != SpendStatus.released]
        assert sorted(s.description for s in spends) == [
            "telemetry shop day 2026-12-01",
            "telemetry shop day 2026-12-02",
        ]
        assert all(s.status == SpendStatus.committed for s in spends)
        assert book.budget(KEY).epsilon_spent == 4.0
    for i in range(2):
        assert (tmp_path / f"pop{i}.json").is_file()


def test_days_charged_before_once_keys_are_not_charged_again(
    sqlite_url: str, tmp_path: Path
) -> None:
    reports, items = _reports(tmp_path)
    with Ledger(sqlite_url) as book:
        book.set_budget(KEY, 100.0, 0.0)
        # What an ingestion of the first version left: a committed day without a once-key.
        book.commit(book.reserve(KEY, 2.0, 0.0, "telemetry shop day 2026-12-01"))
    result = ingest_reports(
        [reports], items, tmp_path / "pop.json", budget_key=KEY, collection="shop",
        ledger_url=sqlite_url,
    )  # fmt: skip
    assert result.earlier_days == ["2026-12-01"]
    assert [s.epsilon for s in result.new_spends] == [2.0]
    with Ledger(sqlite_url) as book:
        assert book.budget(KEY).epsilon_spent == 4.0

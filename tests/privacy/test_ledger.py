"""The privacy budget ledger on SQLite and PostgreSQL: budgets, reservations, crashes and
concurrent reservations that must not overspend."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privrank.errors import ConfigError, PrivacyBudgetExceeded
from privrank.privacy._ledger_records import exact_sum
from privrank.privacy.ledger import (
    Ledger,
    LedgerError,
    SpendStatus,
    default_ledger_url,
)

KEY = "ml-100k"


@pytest.fixture
def ledger(ledger_url: str):
    with Ledger(ledger_url) as book:
        yield book


def test_set_budget_creates_and_updates(ledger: Ledger) -> None:
    assert ledger.budget(KEY) is None
    created = ledger.set_budget(KEY, 4.0, 1e-5, name="MovieLens 100K")
    assert (created.epsilon, created.delta, created.name) == (4.0, 1e-5, "MovieLens 100K")
    assert created.epsilon_remaining == 4.0
    changed = ledger.set_budget(KEY, 2.0, 2e-5)
    assert (changed.epsilon, changed.delta, changed.name) == (2.0, 2e-5, "MovieLens 100K")
    assert [b.dataset_key for b in ledger.budgets()] == [KEY]


def test_reserve_commit_release_and_the_sums(ledger: Ledger) -> None:
    ledger.set_budget(KEY, 1.0, 1e-5)
    a = ledger.reserve(KEY, 0.25, 1e-6, "ease")
    b = ledger.reserve(KEY, 0.5, 2e-6, "ials")
    budget = ledger.budget(KEY)
    assert budget.epsilon_reserved == 0.75 and budget.epsilon_spent == 0.0
    ledger.commit(a)
    ledger.release(b)
    budget = ledger.budget(KEY)
    assert (budget.epsilon_spent, budget.delta_spent) == (0.25, 1e-6)
    assert (budget.epsilon_reserved, budget.delta_reserved) == (0.0, 0.0)
    assert budget.epsilon_remaining == 0.75
    statuses = {s.id: s.status for s in ledger.spends(KEY)}
    assert statuses == {a.id: SpendStatus.committed, b.id: SpendStatus.released}
    record = ledger.spends(KEY, status="committed")[0]
    assert record.description == "ease" and record.finished_at >= record.reserved_at
    assert record.owner.endswith(f":{os.getpid()}")


def test_over_budget_is_refused_with_the_numbers(ledger: Ledger) -> None:
    ledger.set_budget(KEY, 1.0, 1e-5)
    ledger.commit(ledger.reserve(KEY, 0.5, 1e-6, "first"))
    ledger.reserve(KEY, 0.25, 1e-6, "running")
    with pytest.raises(PrivacyBudgetExceeded) as info:
        ledger.reserve(KEY, 0.3, 1e-6, "too much")
    message = str(info.value)
    for part in ("requested ε=0.3", "spent ε=0.5", "reserved ε=0.25", "remaining ε=0.25"):
        assert part in message
    assert isinstance(info.value, RuntimeError)
    assert ledger.count_spends() == 2  # the refused one left no row
    ledger.reserve(KEY, 0.25, 1e-6, "exactly the rest")  # equality is allowed


def test_delta_is_budgeted_too(ledger: Ledger) -> None:
    ledger.set_budget(KEY, 10.0, 1e-5)
    ledger.reserve(KEY, 1.0, 6e-6, "a")
    with pytest.raises(PrivacyBudgetExceeded, match="requested ε=1, δ=5e-06"):
        ledger.reserve(KEY, 1.0, 5e-6, "b")


def test_sums_are_exact_no_float_drift(ledger: Ledger) -> None:
    # 0.1 + 0.1 + ... (10 times) is 0.9999999999999999 in naive float addition, and the exact
    # sum of ten binary doubles 0.1 is above 1. The ledger sums the decimals written: exactly 1.
    ledger.set_budget(KEY, 1.0, 1e-5)
    for i in range(10):
        ledger.commit(ledger.reserve(KEY, 0.1, 1e-6, f"run {i}"))
    budget = ledger.budget(KEY)
    assert (budget.epsilon_spent, budget.epsilon_remaining) == (1.0, 0.0)
    assert (budget.delta_spent, budget.delta_remaining) == (1e-5, 0.0)
    with pytest.raises(PrivacyBudgetExceeded):
        ledger.reserve(KEY, 1e-9, 0.0, "one more")
    with pytest.raises(PrivacyBudgetExceeded):
        ledger.reserve(KEY, 5e-324, 0.0, "the smallest positive float")


def test_a_sum_that_float_addition_rounds_up_still_fits(ledger: Ledger) -> None:
    # 0.1 + 0.2 is 0.30000000000000004 in floats (math.fsum too): the decimals add to 0.3.
    ledger.set_budget(KEY, 0.3, 3e-6)
    ledger.reserve(KEY, 0.1, 1e-6, "a")
    ledger.reserve(KEY, 0.2, 2e-6, "b")
    assert ledger.budget(KEY).epsilon_remaining == 0.0


def test_a_spend_absorbed_by_float_rounding_is_refused(ledger: Ledger) -> None:
    # fsum([1.0, 1e-17]) == 1.0 would accept it; the exact sum exceeds the budget.
    ledger.set_budget(KEY, 1.0, 1e-5)
    ledger.reserve(KEY, 1.0, 0.0, "all of it")
    with pytest.raises(PrivacyBudgetExceeded):
        ledger.reserve(KEY, 1e-17, 0.0, "a sliver")
    with pytest.raises(PrivacyBudgetExceeded):
        ledger.reserve(KEY, 1e-300, 0.0, "less than a sliver")


def test_one_float_step_over_the_budget_is_refused(ledger: Ledger) -> None:
    ledger.set_budget(KEY, 1.0, 1e-5)
    with pytest.raises(PrivacyBudgetExceeded):
        ledger.reserve(KEY, math.nextafter(1.0, 2.0), 0.0, "one step over")
    with pytest.raises(PrivacyBudgetExceeded):
        ledger.reserve(KEY, 0.5, math.nextafter(1e-5, 1.0), "δ one step over")
    for i in range(9):
        ledger.reserve(KEY, 0.1, 0.0, f"run {i}")
    with pytest.raises(PrivacyBudgetExceeded):
        ledger.reserve(KEY, math.nextafter(0.1, 1.0), 0.0, "one step over the rest")
    ledger.reserve(KEY, 0.1, 0.0, "exactly the rest")


@pytest.mark.parametrize("total", [1e308, sys.float_info.max])
def test_huge_budgets_never_overflow(ledger: Ledger, total: float) -> None:
    ledger.set_budget(KEY, total, 0.5)
    ledger.reserve(KEY, total, 0.0, "everything")
    # The sum 2 × total is past the float range: refused as over budget, not an OverflowError.
    with pytest.raises(PrivacyBudgetExceeded, match="exceeded"):
        ledger.reserve(KEY, total, 0.0, "everything again")
    budget = ledger.budget(KEY)
    assert (budget.epsilon_reserved, budget.epsilon_remaining) == (total, 0.0)
    lowered = ledger.set_budget(KEY, 0.0, 0.5)
    assert lowered.epsilon_remaining == -total


@pytest.mark.parametrize(
    ("epsilon", "delta"),
    [(math.inf, 1e-6), (-math.inf, 1e-6), (10**400, 1e-6), (1.0, 10**400), (1.0, math.inf)],
)
def test_non_finite_or_overflowing_amounts_are_config_errors(
    ledger: Ledger, epsilon: float, delta: float
) -> None:
    with pytest.raises(ConfigError, match="must be"):
        ledger.set_budget(KEY, epsilon, delta)
    ledger.set_budget(KEY, 1.0, 1e-5)
    with pytest.raises(ConfigError, match="must be"):
        ledger.reserve(KEY, epsilon, delta, "x")
    assert ledger.count_spends() == 0


def test_no_budget_means_refused(ledger: Ledger) -> None:
    with pytest.raises(PrivacyBudgetExceeded, match="has no privacy budget"):
        ledger.reserve("unknown", 0.1, 1e-6, "x")


def test_lowering_the_budget_below_use_refuses_further_spends(ledger: Ledger) -> None:
    ledger.set_budget(KEY, 2.0, 1e-5)
    ledger.commit(ledger.reserve(KEY, 1.5, 1e-6, "a"))
    lowered = ledger.set_budget(KEY, 1.0, 1e-5)
    assert lowered.epsilon_remaining == -0.5
    with pytest.raises(PrivacyBudgetExceeded):
        ledger.reserve(KEY, 0.01, 0.0, "b")


def test_spend_commits_on_success(ledger: Ledger) -> None:
    ledger.set_budget(KEY, 1.0, 1e-5)
    with ledger.spend(KEY, 0.5, 1e-6, "fit") as reservation:
        assert ledger.spends(KEY)[0].status is SpendStatus.reserved
    assert ledger.spends(KEY)[0].id == reservation.id
    assert ledger.spends(KEY)[0].status is SpendStatus.committed


def test_spend_releases_on_exception(ledger: Ledger) -> None:
    ledger.set_budget(KEY, 1.0, 1e-5)
    with pytest.raises(ZeroDivisionError), ledger.spend(KEY, 0.5, 1e-6, "fit"):
        _ = 1 / 0
    assert ledger.spends(KEY)[0].status is SpendStatus.released
    assert ledger.budget(KEY).epsilon_remaining == 1.0


def test_spend_over_budget_never_runs_the_block(ledger: Ledger) -> None:
    ledger.set_budget(KEY, 1.0, 1e-5)
    ran = []
    with pytest.raises(PrivacyBudgetExceeded), ledger.spend(KEY, 1.5, 1e-6, "fit"):
        ran.append(True)
    assert ran == []


def test_finishing_twice_or_unknown_spends_fails(ledger: Ledger) -> None:
    ledger.set_budget(KEY, 1.0, 1e-5)
    reservation = ledger.reserve(KEY, 0.1, 1e-6, "a")
    ledger.commit(reservation)
    with pytest.raises(LedgerError, match="it is committed, not reserved"):
        ledger.release(reservation)
    with pytest.raises(LedgerError, match="it is committed, not reserved"):
        ledger.commit(reservation.id)
    with pytest.raises(LedgerError, match="no spend"):
        ledger.commit("00000000-0000-0000-0000-000000000000")


def test_the_ledger_persists_across_connections(ledger_url: str) -> None:
    with Ledger(ledger_url) as first:
        first.set_budget(KEY, 1.0, 1e-5)
        reservation = first.reserve(KEY, 0.4, 1e-6, "a")
    with Ledger(ledger_url) as second:
        assert second.budget(KEY).epsilon_reserved == 0.4
        second.commit(reservation.id)
        assert second.budget(KEY).epsilon_spent == 0.4


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.set_budget(KEY, -1.0, 1e-5),
        lambda b: b.set_budget(KEY, math.inf, 1e-5),
        lambda b: b.set_budget(KEY, 1.0, 1.0),
        lambda b: b.set_budget("", 1.0, 1e-5),
        lambda b: b.set_budget("k" * 201, 1.0, 1e-5),
        lambda b: b.set_budget(KEY, 1.0, 1e-5, name="n" * 201),
        lambda b: b.reserve(KEY, 0.0, 1e-6, "zero ε is not a private run"),
        lambda b: b.reserve(KEY, math.nan, 1e-6, "x"),
        lambda b: b.reserve(KEY, 0.1, -1e-6, "x"),
        lambda b: b.reserve(KEY, 0.1, 1e-6, "x" * 501),
        lambda b: b.spends(status="lost"),
    ],
)
def test_invalid_arguments_raise_config_error(ledger: Ledger, call) -> None:
    ledger.set_budget(KEY, 1.0, 1e-5)
    with pytest.raises(ConfigError):
        call(ledger)


# --- crashes -------------------------------------------------------------------------------------


def _reserve_then_die(url: str) -> None:
    book = Ledger(url)
    with book.spend(KEY, 0.6, 1e-6, "crashing fit"):
        os.kill(os.getpid(), signal.SIGKILL)  # no handler, no release: a real crash


def test_a_crash_mid_run_leaves_the_spend_reserved(ledger_url: str) -> None:
    with Ledger(ledger_url) as book:
        book.set_budget(KEY, 1.0, 1e-5)
    process = multiprocessing.get_context("fork").Process(
        target=_reserve_then_die, args=(ledger_url,)
    )
    process.start()
    process.join(60)
    assert process.exitcode == -signal.SIGKILL
    with Ledger(ledger_url) as book:
        (spend,) = book.spends(KEY)
        assert spend.status is SpendStatus.reserved
        assert spend.owner.endswith(f":{process.pid}")
        assert book.budget(KEY).epsilon_reserved == 0.6
        with pytest.raises(PrivacyBudgetExceeded, match=r"reserved ε=0\.6"):
            book.reserve(KEY, 0.5, 1e-6, "next fit")
        # an administrator who knows the crashed run published nothing may release it
        book.release(spend.id)
        book.reserve(KEY, 0.5, 1e-6, "next fit")


# --- concurrency ---------------------------------------------------------------------------------


def test_concurrent_threads_cannot_overspend(ledger_url: str) -> None:
    n_threads, each, total = 8, 0.3, 1.0
    with Ledger(ledger_url) as book:
        book.set_budget(KEY, total, 1e-5)
    barrier = threading.Barrier(n_threads)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        with Ledger(ledger_url) as mine:
            barrier.wait()
            try:
                mine.reserve(KEY, each, 1e-7, f"thread {i}")
                result = "ok"
            except PrivacyBudgetExceeded:
                result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(outcomes) == ["ok"] * 3 + ["refused"] * 5
    with Ledger(ledger_url) as book:
        assert book.budget(KEY).epsilon_reserved == pytest.approx(0.9)


def _reserve_in_process(url: str, start_at: float, index: int, results) -> None:
    book = Ledger(url)
    time.sleep(max(0.0, start_at - time.time()))
    try:
        book.reserve(KEY, 0.25, 1e-7, f"process {index}")
        results.put("ok")
    except PrivacyBudgetExceeded:
        results.put("refused")
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(f"error: {exc!r}")
    finally:
        book.close()


def test_concurrent_processes_cannot_overspend(ledger_url: str) -> None:
    n_processes = 7
    with Ledger(ledger_url) as book:
        book.set_budget(KEY, 1.0, 1e-5)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.time() + 1.5
    processes = [
        context.Process(target=_reserve_in_process, args=(ledger_url, start_at, i, results))
        for i in range(n_processes)
    ]
    for process in processes:
        process.start()
    outcomes = sorted(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(60)
    assert outcomes == ["ok"] * 4 + ["refused"] * 3
    with Ledger(ledger_url) as book:
        budget = book.budget(KEY)
        assert budget.epsilon_reserved == 1.0
        assert budget.epsilon_remaining == 0.0


@pytest.mark.postgres
def test_without_the_row_lock_postgres_would_overspend(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The concurrency test has teeth: drop FOR UPDATE and widen the race, and it overspends.

    The race is widened by a barrier after each thread has read the spends, so every thread
    checks the budget before any inserts (a sleep there left the outcome to the scheduler: on a
    loaded machine the threads woke far enough apart for the first commit to be seen)."""
    from sqlalchemy import select

    from privrank.privacy import ledger as ledger_module

    def unlocked(self, conn, key):
        return (
            conn.execute(
                select(ledger_module.datasets_table).where(
                    ledger_module.datasets_table.c.key == key
                )
            )
            .mappings()
            .first()
        )

    read_spends = threading.Barrier(4, timeout=30)
    original_used = Ledger._used

    def used_then_wait(self, conn, key):
        rows = original_used(self, conn, key)
        read_spends.wait()  # every thread has read the spends before any inserts
        return rows

    with Ledger(postgres_url) as book:
        book.set_budget(KEY, 1.0, 1e-5)
    monkeypatch.setattr(Ledger, "_lock_dataset", unlocked)
    monkeypatch.setattr(Ledger, "_used", used_then_wait)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def worker() -> None:
        with Ledger(postgres_url) as mine:
            barrier.wait()
            try:
                mine.reserve(KEY, 0.6, 1e-7, "racing")
                outcomes.append("ok")
            except PrivacyBudgetExceeded:
                outcomes.append("refused")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes.count("ok") > 1  # 2 × 0.6 > 1.0: overspent without the lock


# --- configuration -------------------------------------------------------------------------------


def test_default_url_is_in_privrank_home(privrank_home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRIVRANK_LEDGER_URL", raising=False)
    assert default_ledger_url() == f"sqlite:///{privrank_home / 'ledger.sqlite'}"
    with Ledger() as book:
        book.set_budget(KEY, 1.0, 1e-5)
    assert (privrank_home / "ledger.sqlite").is_file()


def test_env_var_overrides_the_default(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.sqlite'}"
    monkeypatch.setenv("PRIVRANK_LEDGER_URL", url)
    assert default_ledger_url() == url
    with Ledger() as book:
        assert book.url.database == str(tmp_path / "elsewhere.sqlite")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("mysql://u@h/db", "unsupported ledger database"),
        ("not a url", "invalid ledger URL"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Ledger(url)


def test_bare_postgresql_urls_use_psycopg3() -> None:
    from privrank.privacy.ledger import _normalise_url

    assert _normalise_url("postgresql://u@h:5/db").drivername == "postgresql+psycopg"
    assert _normalise_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"


def test_an_unreachable_database_is_a_ledger_error() -> None:
    with pytest.raises(LedgerError, match="cannot create the ledger tables"):
        Ledger("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")


# --- the invariant, under random sequences of operations -----------------------------------------


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["reserve", "commit", "release"]),
            st.floats(min_value=0.01, max_value=0.7, allow_nan=False),
            st.integers(min_value=0, max_value=20),
        ),
        max_size=25,
    ),
)
def test_used_budget_never_exceeds_the_total(sqlite_url: str, ops) -> None:
    key = f"d-{uuid.uuid4().hex}"
    with Ledger(sqlite_url) as book:
        book.set_budget(key, 1.0, 1e-5)
        open_ids: list[str] = []
        eps_of_spend: dict[str, float] = {}
        expected: dict[str, list[float]] = {"reserved": [], "committed": []}
        for op, eps, pick in ops:
            if op == "reserve":
                try:
                    r = book.reserve(key, eps, 1e-7, "h")
                except PrivacyBudgetExceeded:
                    # refused only when it would overspend
                    assert exact_sum([*expected["reserved"], *expected["committed"], eps]) > 1
                    continue
                open_ids.append(r.id)
                eps_of_spend[r.id] = eps
                expected["reserved"].append(eps)
            elif open_ids:
                spend_id = open_ids.pop(pick % len(open_ids))
                eps_of = eps_of_spend[spend_id]
                expected["reserved"].remove(eps_of)
                if op == "commit":
                    book.commit(spend_id)
                    expected["committed"].append(eps_of)
                else:
                    book.release(spend_id)
            budget = book.budget(key)
            assert exact_sum([*expected["reserved"], *expected["committed"]]) <= 1
            assert budget.epsilon_reserved == float(exact_sum(expected["reserved"]))
            assert budget.epsilon_spent == float(exact_sum(expected["committed"]))


@pytest.mark.slow
def test_many_rounds_of_concurrent_processes_never_overspend(ledger_url: str) -> None:
    """A longer stress run: 10 rounds of 12 racing processes, each round on a fresh budget."""
    context = multiprocessing.get_context("fork")
    for round_ in range(10):
        key = f"stress-{round_}"
        with Ledger(ledger_url) as book:
            book.set_budget(key, 1.0, 1e-5)
        results = context.Queue()
        start_at = time.time() + 1.0
        processes = [
            context.Process(
                target=_reserve_key_in_process, args=(ledger_url, key, start_at, results)
            )
            for _ in range(12)
        ]
        for process in processes:
            process.start()
        outcomes = sorted(results.get(timeout=120) for _ in processes)
        for process in processes:
            process.join(60)
        assert outcomes == ["ok"] * 3 + ["refused"] * 9, outcomes
        with Ledger(ledger_url) as book:
            assert book.budget(key).epsilon_reserved == pytest.approx(0.9)


def _reserve_key_in_process(url: str, key: str, start_at: float, results) -> None:
    book = Ledger(url)
    time.sleep(max(0.0, start_at - time.time()))
    try:
        book.reserve(key, 0.3, 1e-7, "stress")
        results.put("ok")
    except PrivacyBudgetExceeded:
        results.put("refused")
    except Exception as exc:
        results.put(f"error: {exc!r}")
    finally:
        book.close()

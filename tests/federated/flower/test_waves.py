"""The exchange scheduler of the ServerApp (no Flower): a fake grid whose nodes answer after
given delays on a fake clock. The oracle is the exchange sent all at once: the same replies,
with never more than ``W`` messages outstanding, and no wait past the exchange's deadline."""

from __future__ import annotations

import numpy as np
import pytest

from privrank.federated.flower.waves import exchange_in_waves, loopback_in_flight

POLL = 0.5


class FakeGrid:
    """Node ``i`` answers ``delays[i]`` seconds after its message is pushed (``None``: never);
    ``refuse`` holds the messages the SuperLink does not take."""

    def __init__(self, delays, refuse=(), refuse_whole=False) -> None:
        self.now = 0.0
        self.delays = list(delays)
        self.refuse = set(refuse)
        self.refuse_whole = refuse_whole
        self.sent_at: dict[str, tuple[int, float]] = {}
        self.answered: set[str] = set()
        self.pushes: list[list[int]] = []
        self.most_outstanding = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds

    def push(self, messages):
        self.pushes.append(list(messages))
        if self.refuse_whole:
            return []
        ids: list[str | None] = []
        for m in messages:
            if m in self.refuse:
                ids.append(None)
                continue
            ids.append(f"id-{m}")
            self.sent_at[f"id-{m}"] = (m, self.now)
        outstanding = len(set(self.sent_at) - self.answered)
        self.most_outstanding = max(self.most_outstanding, outstanding)
        return ids

    def pull(self, ids):
        out = []
        for message_id in ids:
            node, at = self.sent_at[message_id]
            delay = self.delays[node]
            if message_id not in self.answered and delay is not None and at + delay <= self.now:
                self.answered.add(message_id)
                out.append((message_id, f"reply-{node}"))
        return out

    def run(self, cap, timeout, n=None):
        messages = list(range(len(self.delays) if n is None else n))
        return exchange_in_waves(
            messages, self.push, self.pull, cap, timeout,
            poll_interval=POLL, clock=self.clock, sleep=self.sleep,
        )  # fmt: skip


@pytest.mark.parametrize("cap", [1, 2, 3, 8, 49, 50, 51, None])
def test_every_message_answered_with_at_most_cap_outstanding(cap):
    delays = np.random.default_rng(3).uniform(0.5, 6.0, size=50).round(2).tolist()
    grid = FakeGrid(delays)
    result = grid.run(cap, timeout=10_000)
    assert sorted(result.replies) == sorted(f"reply-{i}" for i in range(50))
    assert result.unanswered == [] and result.unsent == []
    bound = 50 if cap is None else min(cap, 50)
    assert grid.most_outstanding == bound == result.peak_in_flight
    sent = [m for push in grid.pushes for m in push]
    assert sent == list(range(50))  # every message once, in the given order
    if cap is None:
        assert len(grid.pushes) == 1  # all at once, as send_and_receive


def test_no_cap_takes_the_slowest_delay_and_a_cap_serialises():
    delays = [4.0] * 6
    at_once = FakeGrid(delays)
    at_once.run(None, timeout=1000)
    assert at_once.now == pytest.approx(4.0)
    two = FakeGrid(delays)
    two.run(2, timeout=1000)
    assert two.now == pytest.approx(12.0)  # three waves of two, each slot refilled on reply


def test_a_slot_is_refilled_as_soon_as_its_reply_arrives():
    # node 0 is slow, the others fast: with W = 2 the fast ones stream through one slot
    grid = FakeGrid([20.0, 1.0, 1.0, 1.0, 1.0])
    result = grid.run(2, timeout=1000)
    assert result.replies[-1] == "reply-0" and len(result.replies) == 5
    assert grid.now == pytest.approx(20.0)


def test_a_node_that_never_answers_holds_one_slot_until_the_deadline_and_no_longer():
    grid = FakeGrid([None, 1.0, 1.0, 1.0, 1.0, 1.0])
    result = grid.run(2, timeout=30.0)
    assert sorted(result.replies) == [f"reply-{i}" for i in range(1, 6)]
    assert result.unanswered == [0] and result.unsent == []
    assert grid.now == pytest.approx(30.0)  # the deadline, as send_and_receive's timeout


def test_messages_not_sent_by_the_deadline_are_dropped_not_waited_for():
    grid = FakeGrid([10.0] * 6)
    result = grid.run(1, timeout=25.0)
    # 0 sent at 0 s, answered at 10 s; 1 sent at 10 s, answered at 20 s; 2 sent at 20 s
    assert result.replies == ["reply-0", "reply-1"]
    assert result.unanswered == [2]
    assert result.unsent == [3, 4, 5]
    assert grid.now == pytest.approx(25.0)


def test_a_refused_message_frees_its_slot_and_counts_as_unanswered():
    grid = FakeGrid([1.0] * 5, refuse={1, 2})
    result = grid.run(2, timeout=100)
    assert sorted(result.replies) == ["reply-0", "reply-3", "reply-4"]
    assert result.unanswered == [1, 2] and result.unsent == []
    assert grid.most_outstanding <= 2


def test_a_push_refused_whole_ends_without_waiting():
    grid = FakeGrid([1.0] * 4, refuse_whole=True)
    result = grid.run(3, timeout=100)
    assert result.replies == [] and result.unanswered == [0, 1, 2, 3] and result.unsent == []
    assert grid.now == 0.0


def test_no_messages():
    grid = FakeGrid([])
    result = grid.run(4, timeout=10)
    assert result.replies == [] and grid.pushes == [] and grid.now == 0.0


def test_bad_arguments():
    grid = FakeGrid([1.0])
    with pytest.raises(ValueError, match="max_in_flight"):
        grid.run(0, timeout=1)
    with pytest.raises(ValueError, match="timeout"):
        grid.run(1, timeout=-1)


def test_loopback_default_is_four_per_core():
    assert loopback_in_flight(2) == 8
    assert loopback_in_flight(16) == 64
    assert loopback_in_flight() >= 4

"""Sending one exchange's messages with at most ``W`` outstanding (no Flower import).

An exchange (enrolment, item counts, a round, a SecAgg+ stage) sends one message to each of its
SuperNodes and waits for their replies until a deadline. Sent all at once (``Grid.
send_and_receive``), every SuperNode that gets a message starts a ClientApp process at the same
moment: flwr 1.42 starts one ``flwr-clientapp`` process per message (about 200 MB and 1.3 s of
imports each), so a loopback federation of 50 SuperNodes on one machine starts 50 of them at
once. :func:`exchange_in_waves` keeps at most ``max_in_flight`` messages outstanding and sends
the next one as soon as a reply arrives (a sliding window, not fixed waves that wait for their
slowest member).

**What it bounds.** The number of messages the server has sent and not yet seen answered, hence
the number of ClientApp processes the SuperNodes run at the same time. It does not bound or
change the cohort: every message of the exchange is sent, in the order given (the callers sort
by node id), to the nodes the round's sampling chose; the replies are summed as before, so the
aggregate and the accounting are those of an exchange sent at once.

**Timeout.** The exchange keeps one deadline, ``timeout`` seconds after it starts, as
``send_and_receive`` does: a node that never answers holds one slot until the deadline and no
longer; messages still unsent at the deadline are not sent, and their nodes count as dropped out
of the exchange like the nodes that did not answer (whether a node is reached depends on the
order of node ids and on other nodes' speed, never on a device's data, so the DP argument for
drop-outs holds unchanged). A message the SuperLink refuses to take (``push`` gives ``None``)
frees its slot at once and counts as unanswered (so does every message of a push refused
whole: flwr's ``push_messages`` then gives no ids at all).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["WaveResult", "exchange_in_waves", "loopback_in_flight"]

M = TypeVar("M")  # an outgoing message
R = TypeVar("R")  # a reply

#: Seconds between two pulls of the outstanding replies (flwr's ``send_and_receive`` waits 3 s).
POLL_INTERVAL = 0.5


@dataclass
class WaveResult(Generic[R]):
    """What an exchange gave.

    Attributes:
        replies: The replies that arrived before the deadline, in arrival order.
        unanswered: Indices (into the messages) sent but not answered by the deadline, or
            refused by the SuperLink.
        unsent: Indices of the messages never sent (the deadline came first).
        peak_in_flight: The most messages outstanding at once (at most ``max_in_flight``).
    """

    replies: list[R] = field(default_factory=list)
    unanswered: list[int] = field(default_factory=list)
    unsent: list[int] = field(default_factory=list)
    peak_in_flight: int = 0


def exchange_in_waves(
    messages: Sequence[M],
    push: Callable[[Sequence[M]], Sequence[str | None]],
    pull: Callable[[Sequence[str]], Iterable[tuple[str, R]]],
    max_in_flight: int | None,
    timeout: float,
    *,
    poll_interval: float = POLL_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WaveResult[R]:
    """Send ``messages`` with at most ``max_in_flight`` outstanding; collect replies until
    ``timeout`` seconds have passed or every sent message is answered.

    Args:
        messages: The exchange's messages, sent in this order.
        push: Sends messages; gives one id per message (``None``: not taken), in order
            (``Grid.push_messages``).
        pull: The replies that have arrived for some of the given ids, as
            ``(id replied to, reply)`` pairs (``Grid.pull_messages``).
        max_in_flight: The most messages outstanding at once; ``None``: no cap (all are sent
            at once, as ``send_and_receive``).
        timeout: Seconds from the start of the exchange to its deadline.
        poll_interval: Seconds between pulls while replies are awaited.
        clock: Monotonic seconds (tests pass a fake clock).
        sleep: Waits (tests pass the fake clock's).

    Returns:
        The replies and which messages were not answered or not sent.

    Raises:
        ValueError: ``max_in_flight`` < 1, or a negative timeout.
    """
    if max_in_flight is not None and max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1 or None (no cap), got {max_in_flight}")
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {timeout}")
    cap = len(messages) if max_in_flight is None else max_in_flight
    result: WaveResult[R] = WaveResult()
    deadline = clock() + timeout
    outstanding: dict[str, int] = {}  # message id -> index
    following = 0  # the next message to send
    while True:
        room = cap - len(outstanding)
        if room > 0 and following < len(messages) and clock() < deadline:
            batch = range(following, min(following + room, len(messages)))
            ids = list(push([messages[i] for i in batch]))
            following = batch.stop
            if len(ids) != len(batch):  # flwr gives [] for a push it refused whole
                ids = [None] * len(batch)
            for index, message_id in zip(batch, ids, strict=True):
                if message_id is None:
                    result.unanswered.append(index)
                else:
                    outstanding[message_id] = index
            result.peak_in_flight = max(result.peak_in_flight, len(outstanding))
            if len(outstanding) < cap and following < len(messages):
                continue  # some were refused: fill their slots now
        if not outstanding and following >= len(messages):
            break
        if outstanding:
            for replied_to, reply in pull(list(outstanding)):
                if outstanding.pop(replied_to, None) is not None:
                    result.replies.append(reply)
        if clock() >= deadline:
            break
        if len(outstanding) >= cap or (outstanding and following >= len(messages)):
            sleep(min(poll_interval, max(0.0, deadline - clock())))
    result.unanswered.extend(sorted(outstanding.values()))
    result.unsent = list(range(following, len(messages)))
    return result


def loopback_in_flight(cores: int | None = None) -> int:
    """The default cap for a federation whose SuperNodes all run on this machine:
    four messages per usable core.

    A message is mostly waiting, not computing: the SuperNode fetches it on its next poll (every
    3 s when idle), its SuperExec starts the ClientApp on its next poll (every 1 s), the
    ClientApp's start costs about 1.3 s of CPU, the device computation milliseconds, and the
    reply waits for the server's next pull. Four outstanding per core keep the cores busy
    through those waits, and four ClientApp processes per core (about 200 MB each: 1.6 GB on
    2 cores) fit beside the SuperNodes.

    Args:
        cores: Usable cores; default the CPUs this process may run on.
    """
    if cores is None:
        from privrank.models._config import available_cores

        cores = available_cores()
    return 4 * max(1, cores)

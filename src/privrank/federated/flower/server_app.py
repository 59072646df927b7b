"""The fedmf ServerApp: the deployment run over Flower's Message API.

The SuperLink starts this ServerApp in its own process for a run submitted by
``privrank federated serve`` (``flwr run``), which names the job file in the run config
(``job='RUN/job.json'``, :class:`~privrank.federated.flower.job.FlowerJob`). ``main`` drives
:func:`~privrank.federated.flower.rounds.run_deployment` through :class:`GridTransport`: each
exchange is one message per SuperNode (sent and pulled within the job's timeout), and a
SuperNode that has not answered in time has dropped out of that exchange.

**In-flight cap.** An exchange is sent with at most ``job.max_in_flight`` messages outstanding
(:func:`~privrank.federated.flower.waves.exchange_in_waves`: ``Grid.push_messages`` for the
first ``W``, then one more as each reply arrives through ``Grid.pull_messages``, polled every
0.5 s), all within the exchange's one timeout. This bounds how many ClientApp processes the
SuperNodes run at once (flwr 1.42 starts one per message), not the cohort: every sampled node
still gets its message, and the sum and the accounting are unchanged. ``None``: all at once.

Flower features used: ``ServerApp`` with a ``main(grid, context)``, ``Grid.get_node_ids``,
``Grid.push_messages`` and ``Grid.pull_messages``, ``Message`` with ``RecordDict`` /
``ArrayRecord`` / ``ConfigRecord`` content and message types with actions
(``query.enrol``, ``query.counts``, ``train.round``), and the run config.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from privrank.errors import ConfigError
from privrank.federated.flower import messages
from privrank.federated.flower.job import FlowerJob
from privrank.federated.flower.rounds import NodeAnswer, run_deployment
from privrank.federated.flower.secure import SecureReply, SecureRequest
from privrank.federated.flower.waves import exchange_in_waves
from privrank.federated.simulator import RoundReport
from privrank.models._fedmf_rounds import FedMFConfig

__all__ = ["GridTransport", "app"]

log = logging.getLogger("privrank.federated.flower")

app = ServerApp()


class GridTransport:
    """:class:`~privrank.federated.flower.rounds.DeviceTransport` over a Flower ``Grid``."""

    def __init__(self, grid: Grid, job: FlowerJob) -> None:
        self.grid = grid
        self.job = job
        self.nodes: list[int] = []

    def _exchange(
        self, contents: Mapping[int, RecordDict], message_type: str, group: str, timeout: float
    ) -> list[tuple[int, RecordDict]]:
        sent = [
            Message(content, node, message_type, group_id=group)
            for node, content in sorted(contents.items())
        ]
        result = exchange_in_waves(sent, self._push, self._pull, self.job.max_in_flight, timeout)
        if result.unanswered or result.unsent:
            log.warning(
                "%s: %d of %d SuperNode(s) did not answer within %.0f s (%d never sent: the "
                "deadline came first)",
                group, len(result.unanswered) + len(result.unsent), len(sent), timeout,
                len(result.unsent),
            )  # fmt: skip
        answered = []
        for reply in result.replies:
            if reply.has_error():
                log.warning("%s: a SuperNode answered with an error: %s", group, reply.error)
                continue
            answered.append((int(reply.metadata.src_node_id), reply.content))
        return answered

    def _push(self, sent: Sequence[Message]) -> list[str | None]:
        return [None if i is None else str(i) for i in self.grid.push_messages(sent)]

    def _pull(self, ids: Sequence[str]) -> list[tuple[str, Message]]:
        return [(str(m.metadata.reply_to_message_id), m) for m in self.grid.pull_messages(ids)]

    def enrol(self) -> dict[int, np.ndarray]:
        deadline = time.monotonic() + self.job.enrol_timeout
        while True:
            nodes = sorted(int(n) for n in self.grid.get_node_ids())
            if len(nodes) >= self.job.min_nodes or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        log.info("enrolment: %d SuperNode(s) connected", len(nodes))
        replies = self._exchange(
            {n: RecordDict() for n in nodes}, messages.ENROL, "enrol", self.job.enrol_timeout
        )
        enrolled = {}
        for node, content in replies:
            try:
                enrolled[node] = messages.answer_of(content).devices
            except ConfigError as exc:
                log.warning("enrolment: %s", exc)
        self.nodes = sorted(enrolled)
        return enrolled

    def _answers(self, replies: list[tuple[int, RecordDict]], what: str) -> list[NodeAnswer]:
        answers = []
        for _, content in replies:
            try:
                answers.append(messages.answer_of(content))
            except ConfigError as exc:
                log.warning("%s: %s", what, exc)
        return answers

    def counts(self, bound: int | None) -> Sequence[NodeAnswer]:
        request = messages.counts_request(bound)
        replies = self._exchange(
            {n: request for n in self.nodes}, messages.COUNTS, "counts", self.job.round_timeout
        )
        return self._answers(replies, "item counts")

    def updates(
        self,
        round_index: int,
        assignment: Mapping[int, np.ndarray],
        item_factors: np.ndarray,
        bound: float | None,
        config: FedMFConfig,
    ) -> Sequence[NodeAnswer]:
        contents = {
            node: messages.round_request(round_index, devices, bound, config, item_factors)
            for node, devices in assignment.items()
        }
        replies = self._exchange(
            contents, messages.ROUND, f"round {round_index}", self.job.round_timeout
        )
        return self._answers(replies, f"round {round_index}")

    def secure(
        self, stage: str, requests: Mapping[int, SecureRequest]
    ) -> list[tuple[int, SecureReply]]:
        if not requests:
            return []
        contents = {node: messages.secure_request(r) for node, r in requests.items()}
        round_index = next(iter(requests.values())).round_index if requests else 0
        replies = self._exchange(
            contents, messages.SECURE, f"secagg {round_index} {stage}", self.job.round_timeout
        )
        answers = []
        for node, content in replies:
            try:
                answers.append((node, messages.parse_secure_reply(content)))
            except ConfigError as exc:
                log.warning("secagg %s: %s", stage, exc)
        return answers


def _report(update: RoundReport) -> None:
    line = (
        f"round {update.round}/{update.rounds}: devices {update.accepted}/{update.clients}, "
        f"refused {update.refused}, released {update.released}, {update.seconds:.3f} s"
    )
    if update.epsilon is not None:
        line += f", ε {update.epsilon:.4g}"
    log.info(line)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the job named by the run config's ``job``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per pull (every 0.5 s)
    path = context.run_config.get("job")
    if not path:
        raise ConfigError("the run config has no job (flwr run … --run-config \"job='…'\")")
    job = FlowerJob.read(Path(str(path)))
    result = run_deployment(job, GridTransport(grid, job), progress=_report)
    log.info(
        "finished: %d round(s), %d released, %.2f s",
        result.state.round,
        result.state.released_rounds,
        result.seconds,
    )

"""One SuperExec process for many local SuperNodes (``serve --local-devices --shared-superexec``).

A ``flower-supernode`` in its default ``--isolation subprocess`` mode starts its own
``flower-superexec`` process, which polls the SuperNode's runtime API for tasks (every 1 s) and
starts one ``flwr-clientapp`` process per task. On one machine that is one more Python process
(about 90 MB of its own memory) per SuperNode. With ``--isolation process`` (a documented
flower-supernode option: "a separate independent process gets created outside of SuperNode"),
the SuperNode starts none, and this module is that outside process for all of them: one loop
that asks each SuperNode's runtime API in turn for a task and launches it with flwr's own
plugin and executor (``AutoExecPlugin`` over ``SubprocessExecutor``: the same ``flwr-clientapp
--token …`` command flwr's SuperExec runs). The ClientApp processes, their tokens and what they
send are exactly those of the default mode; only the process that starts them is shared.

It uses flwr's SuperExec internals (``flwr.supercore``: ``RuntimeHttpClient``,
``AcquireTaskRequest``, ``AutoExecPlugin``, ``SubprocessExecutor``) as flwr 1.42 has them; a
SuperNode that does not answer (gone, or frozen) is skipped for that pass (one try, no backoff),
so it cannot stall the others.

Run (the Flower environment)::

    python -m privrank.federated.flower.superexec --runtime-api-address 127.0.0.1:9094 \\
        --runtime-api-address 127.0.0.1:9095 [--poll-interval 1.0]
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence

__all__ = ["main", "serve"]

log = logging.getLogger("privrank.federated.flower.superexec")


def serve(addresses: Sequence[str], poll_interval: float = 1.0) -> None:
    """Launch the tasks of the SuperNodes at ``addresses`` until terminated (SIGTERM)."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.superexec.executor import LaunchResultStatus
    from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor
    from flwr.supercore.superexec.plugin import AutoExecPlugin

    executor = SubprocessExecutor()
    nodes = []
    for address in addresses:
        retry = make_simple_http_retry_invoker()
        retry.max_tries = 1  # a silent SuperNode is skipped this pass, not waited for
        client = RuntimeHttpClient.from_server_address(
            server_address=address,
            insecure=True,
            root_certificates=None,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
            retry_invoker=retry,
        )
        plugin = AutoExecPlugin(
            runtime_api_address=address,
            insecure=True,
            root_certificates_path=None,
            executor=executor,
        )
        nodes.append((address, client, plugin))

    def stop(_signal: int, _frame: object) -> None:
        for _, client, _ in nodes:
            client.close()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        for address, client, plugin in nodes:
            types, hashes = executor.get_eligible_capacity(
                set(plugin.supported_task_types), insecure=True, root_certificates_path=None
            )
            try:
                answer = client.AcquireTask(
                    AcquireTaskRequest(supported_task_types=types, agentapp_fab_hashes=hashes)
                )
            except Exception as exc:  # any transport failure: skip this node this pass
                log.debug("%s: no answer (%s)", address, exc)
                continue
            if answer.HasField("task") and answer.token:
                result = plugin.launch_task(token=answer.token, task=answer.task)
                if result.status != LaunchResultStatus.ACCEPTED:
                    log.warning("%s: task %d not launched: %s", address, answer.task.task_id,
                                result.message)  # fmt: skip
        time.sleep(poll_interval)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", action="append", required=True)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per poll per SuperNode
    serve(args.runtime_api_address, args.poll_interval)


if __name__ == "__main__":
    main()

"""A ``privrank serve --workers N`` worker ends when its supervisor does.

uvicorn's supervisor starts each worker with :mod:`multiprocessing` (spawn). When the supervisor
exits cleanly it stops its workers, but when it is killed outright (SIGKILL, the out-of-memory
killer, a crashed container entrypoint) the workers are re-parented and go on serving: they keep
the port, the database connections and the model in memory, and nothing supervises them any more.
:func:`end_with_supervisor` closes that gap: a daemon thread waits on the supervisor's sentinel
(the pipe end that the operating system closes when the supervisor dies; no polling) and then
sends the worker SIGTERM, so it shuts down the way a signalled uvicorn server does (in-flight
requests finish, the lifespan shutdown runs).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading


def end_with_supervisor() -> bool:
    """Make this worker process stop when the process that started it dies.

    Only a process started by :mod:`multiprocessing` (a uvicorn worker) is affected. A
    single-process server (``--workers 1``) has no supervisor: its parent is a shell or a
    service manager, and it must outlive them (``nohup privrank serve &``), so it is left alone.

    Returns:
        True when the watch was started (this is a worker), False otherwise.
    """
    supervisor = multiprocessing.parent_process()
    if supervisor is None:
        return False

    def watch() -> None:
        supervisor.join()  # returns when the supervisor's sentinel closes: it has exited
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="privrank-supervisor-watch", daemon=True).start()
    return True

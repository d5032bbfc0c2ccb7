"""Dask helpers for the tests: a loopback cluster and a plugin that kills a worker once."""

from __future__ import annotations

import os
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin


class KillWorkerOnce(WorkerPlugin):
    """Worker plugin: the first worker to start a task whose key starts with ``prefix``
    dies on the spot (``os._exit``), once per ``marker`` file.

    Register it with ``client.register_plugin(KillWorkerOnce(marker, prefix))``; the
    nanny restarts the worker and the scheduler runs the task again elsewhere. The
    marker file records the key of the task that was interrupted.
    """

    name = "stmatch-kill-worker-once"

    def __init__(self, marker, prefix):
        self.marker = str(marker)
        self.prefix = prefix

    def transition(self, key, start, finish, **kwargs):
        text = key if isinstance(key, str) else str(key)
        if finish != "executing" or not text.startswith(self.prefix):
            return
        if os.path.exists(self.marker):
            return
        Path(self.marker).write_text(text)
        os._exit(1)


def local_cluster(n_workers=2):
    """A ``LocalCluster`` of single-threaded worker processes on 127.0.0.1."""
    import logging

    from distributed import LocalCluster

    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )


def kill_one_worker_during(cluster, marker, prefix):
    """Register :class:`KillWorkerOnce` on ``cluster``'s workers."""
    from distributed import Client

    with Client(cluster, set_as_default=False) as client:
        client.register_plugin(KillWorkerOnce(marker, prefix))

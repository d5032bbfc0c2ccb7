"""Where independent tasks run: in this process, or on Dask.

Steps and pipelines with a ``scheduler`` parameter hand their independent pieces
of work (SkyMatch overlap pairs, ZOGY and PSF-matching tiles, the science
exposures of a difference-imaging association) to an :class:`Engine`:

``None`` (or ``''``, ``'none'``, ``'local'``)
    In this process, one task after another: exactly the behaviour without Dask.
``'threads'``
    A ``dask.distributed`` cluster of one worker with one thread per core, in this
    process (no data is copied; numpy and scipy release the GIL in FFTs and most
    array work).
``'processes'``
    A ``dask.distributed`` cluster of one single-threaded worker process per core
    on this machine (``processes:N`` for N workers).
an address (``tcp://host:8786``, ``host:8786``, ``tls://...``)
    A running ``dask.distributed`` scheduler, e.g. one started by
    ``dask scheduler`` / ``dask worker`` or by dask-jobqueue on an HPC system.
a scheduler file (``*.json``)
    The file written by ``dask scheduler --scheduler-file``.

Dask is an optional dependency (``pip install stmatch[distributed]``); without it
only the in-process engine exists and asking for another one raises an error that
says how to install it.

Tasks must be idempotent: when a worker dies, ``dask.distributed`` runs its tasks
again elsewhere (up to ``distributed.scheduler.allowed-failures`` times), so a task
that writes a file writes it atomically under a name fixed by its inputs, and
anything assembled from several tasks is assembled here, from the results.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path

__all__ = ["SCHEDULER_SPEC", "Engine", "open_engine", "scheduler_kind"]

log = logging.getLogger("stmatch.steps")

#: Line to add to the spec of a step or pipeline that distributes work.
SCHEDULER_SPEC = (
    "scheduler = string(default=None) # where independent tasks run: None (in-process), "
    "'threads', 'processes', 'processes:N', or a dask.distributed scheduler address or file"
)

_SCATTER_ATTEMPTS = 4  # sends of scattered items before giving up on lost workers
_IN_FLIGHT_PER_SLOT = 2  # scattered items queued per task slot

_IN_PROCESS = ("", "none", "local", "in-process", "inprocess", "sync", "synchronous")


def scheduler_kind(scheduler) -> str:
    """Classify a ``scheduler`` value.

    Returns
    -------
    str
        ``'in-process'``, ``'threads'``, ``'processes'``, ``'file'`` or ``'address'``.

    Raises
    ------
    ValueError
        For a value that is none of these (with the accepted forms).
    """
    if scheduler is None:
        return "in-process"
    if not isinstance(scheduler, str):
        raise ValueError(f"scheduler must be a string or None, not {type(scheduler).__name__}")
    text = scheduler.strip()
    low = text.lower()
    if low in _IN_PROCESS:
        return "in-process"
    if low == "threads":
        return "threads"
    if low == "processes" or low.startswith("processes:"):
        if low != "processes":
            count = low.split(":", 1)[1]
            if not count.isdigit() or int(count) < 1:
                raise ValueError(f"scheduler {text!r}: the worker count must be a positive integer")
        return "processes"
    if low.endswith(".json"):
        return "file"
    if "://" in text or (":" in text and text.rsplit(":", 1)[1].isdigit()):
        return "address"
    raise ValueError(
        f"scheduler {text!r} is not understood: use None (in-process), 'threads', "
        "'processes', 'processes:N', a dask.distributed scheduler address "
        "(tcp://host:8786) or a scheduler file (*.json)"
    )


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(
            "scheduler other than None needs Dask: pip install 'stmatch[distributed]'"
        ) from exc
    return distributed


class Engine:
    """Run independent tasks and collect their results in order.

    Use :func:`open_engine` to make one; it is a context manager that shuts down
    any cluster it started.

    Attributes
    ----------
    kind : str
        See :func:`scheduler_kind`.
    description : str
        Human-readable summary for logs (``'in-process'``, ``'dask threads (1 x 2)'``,
        ``'dask tcp://10.0.0.1:8786 (16 workers)'``).
    """

    def __init__(self, kind="in-process", client=None, cluster=None, description="in-process"):
        self.kind = kind
        self.client = client
        self._cluster = cluster
        self.description = description

    @property
    def in_process(self) -> bool:
        """True when tasks run here, one after another."""
        return self.client is None

    @property
    def shares_memory(self) -> bool:
        """True when tasks see this process's objects (in-process or threads)."""
        return self.client is None or self.kind == "threads"

    @property
    def n_workers(self) -> int:
        """Number of task slots (threads over all workers; 1 in-process)."""
        if self.client is None:
            return 1
        try:
            info = self.client.scheduler_info(n_workers=-1)
        except TypeError:  # older distributed
            info = self.client.scheduler_info()
        return max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))

    def map(
        self,
        fn: Callable,
        items: Iterable,
        *,
        name: str = "stmatch-task",
        progress: Callable[[int, int], None] | None = None,
        scatter: bool = False,
    ) -> list:
        """``[fn(item) for item in items]``, possibly on Dask workers.

        Parameters
        ----------
        fn : callable
            A module-level function (pickled by reference for process workers).
        items : iterable
            One argument per task; with process or remote workers each is pickled
            and sent, so pass file names or small arrays, not whole models.
        name : str
            Prefix of the Dask task keys (``<name>-<run id>-<attempt>-<index>``).
        progress : callable, optional
            ``progress(done, total)`` after each finished task.
        scatter : bool
            Send each item to the workers before its task (for large arrays such as
            image tiles: data goes straight to a worker, and through the scheduler
            only when that fails), a few per task slot at a time, so that a worker holds a few
            items at once whatever their number. An item lost with a dead worker is
            sent again.

        Returns
        -------
        list
            Results in the order of ``items``.

        Raises
        ------
        Exception
            The first exception raised by a task (remaining tasks are cancelled).
        """
        items = list(items)
        total = len(items)
        if self.client is None:
            out = []
            for k, item in enumerate(items):
                out.append(fn(item))
                if progress is not None:
                    progress(k + 1, total)
            return out
        if total == 0:
            return []
        from collections import deque
        from concurrent.futures import CancelledError

        from distributed import as_completed

        run = uuid.uuid4().hex[:8]
        scatter = scatter and self.kind != "threads"
        # Large items are sent a few at a time, as workers free up: a worker then
        # holds a few tiles, not its share of the whole image.
        limit = max(2, _IN_FLIGHT_PER_SLOT * self.n_workers) if scatter else total
        results = [None] * total
        attempts = [0] * total
        queue = deque(range(total))
        live = {}  # task key -> (item index, future, scattered data or None)
        waiting = as_completed(loop=self.client.loop)
        done = 0
        t0 = time.perf_counter()

        def submit(k):
            arg, data = items[k], None
            if scatter:
                data = _scatter_one(self.client, arg)
                arg = data
            key = f"{name}-{run}-{attempts[k]}-{k}"
            future = self.client.submit(fn, arg, key=key, pure=False)
            live[key] = (k, future, data)
            waiting.add(future)

        try:
            while queue and len(live) < limit:
                submit(queue.popleft())
            for future in waiting:
                k, _, data = live.pop(future.key)
                try:
                    results[k] = future.result()
                except CancelledError:
                    # Scattered data has no recipe: when the worker holding it dies,
                    # the task is cancelled rather than re-run; send the item again
                    # (tasks are idempotent).
                    if not scatter or attempts[k] + 1 >= _SCATTER_ATTEMPTS:
                        raise
                    attempts[k] += 1
                    log.warning(
                        "A Dask worker was lost with the data of %s task %d; sending it again",
                        name,
                        k,
                    )
                    submit(k)
                    continue
                finally:
                    future.release()
                    if data is not None:
                        data.release()
                done += 1
                if progress is not None:
                    progress(done, total)
                while queue and len(live) < limit:
                    submit(queue.popleft())
        except BaseException:
            for _, future, data in live.values():
                future.cancel()
                if data is not None:
                    data.cancel()
            raise
        log.debug(
            "%d %s task(s) on %s in %.2f s", total, name, self.description, time.perf_counter() - t0
        )
        return results

    def mapper(self, *, name="stmatch-task", progress=None, scatter=False):
        """A ``mapper(fn, items) -> list`` for the algorithms, or None in-process.

        Algorithms that accept a ``mapper`` run their own lazy loop when it is
        None (results consumed one at a time, as before), so the in-process path
        keeps its memory profile.
        """
        if self.client is None:
            return None
        return partial(self.map, name=name, progress=progress, scatter=scatter)

    def close(self):
        """Close the client, and the cluster if this engine started it."""
        if self.client is not None:
            try:
                self.client.close()
            finally:
                if self._cluster is not None:
                    self._cluster.close()
        self.client = None
        self._cluster = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return f"Engine({self.description})"


def _scatter_one(client, item):
    """Send one item to a worker; retried while a dying worker is being replaced."""
    for attempt in range(_SCATTER_ATTEMPTS):
        try:
            # Straight to a worker (not relayed by the scheduler); after a failure
            # (a dying worker, or workers this client cannot reach) through the
            # scheduler.
            [future] = client.scatter([item], hash=False, direct=attempt == 0 or None)
            return future
        except OSError as exc:  # the chosen worker died (CommClosedError is an OSError)
            if attempt + 1 == _SCATTER_ATTEMPTS:
                raise
            log.warning("Sending data to a Dask worker failed (%s); trying again", exc)
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def open_engine(scheduler=None, *, n_workers: int | None = None) -> Engine:
    """Engine for a ``scheduler`` parameter value (see the module docstring).

    Parameters
    ----------
    scheduler : str or None
    n_workers : int, optional
        Workers of a ``'processes'`` cluster (default: ``processes:N``, else the
        number of cores), or threads of a ``'threads'`` cluster.

    Returns
    -------
    Engine
        Use it as a context manager.
    """
    kind = scheduler_kind(scheduler)
    if kind == "in-process":
        return Engine()
    distributed = _import_distributed()
    cores = os.cpu_count() or 1
    # ":0": the scheduler's HTTP routes on a free port (no clash, no warning)
    common = {"dashboard_address": ":0", "silence_logs": logging.WARNING}
    if kind == "threads":
        nthreads = n_workers or cores
        cluster = distributed.LocalCluster(
            n_workers=1, threads_per_worker=nthreads, processes=False, **common
        )
        client = distributed.Client(cluster, set_as_default=False)
        desc = f"dask threads (1 worker x {nthreads} threads)"
        return _started(Engine(kind, client, cluster, desc))
    if kind == "processes":
        text = scheduler.strip().lower()
        count = int(text.split(":", 1)[1]) if ":" in text else (n_workers or cores)
        cluster = distributed.LocalCluster(
            n_workers=count, threads_per_worker=1, processes=True, host="127.0.0.1", **common
        )
        client = distributed.Client(cluster, set_as_default=False)
        desc = f"dask processes ({count} local worker(s) x 1 thread)"
        return _started(Engine(kind, client, cluster, desc))
    if kind == "file":
        path = Path(os.path.expandvars(os.path.expanduser(scheduler.strip())))
        if not path.is_file():
            raise FileNotFoundError(f"scheduler file not found: {path}")
        client = distributed.Client(scheduler_file=str(path), set_as_default=False)
        return _started(Engine(kind, client, None, f"dask scheduler from {path}"))
    address = scheduler.strip()
    try:
        client = distributed.Client(address, set_as_default=False, timeout="30s")
    except OSError as exc:
        raise ConnectionError(f"cannot reach the dask scheduler at {address!r}: {exc}") from exc
    return _started(Engine(kind, client, None, f"dask {address}"))


def _started(engine: Engine) -> Engine:
    engine.description = f"{engine.description}, {engine.n_workers} task slot(s)"
    log.info("Running tasks on %s", engine.description)
    return engine


def split_evenly(items: Sequence, parts: int) -> list[list]:
    """Split ``items`` into at most ``parts`` consecutive, nearly equal chunks."""
    items = list(items)
    parts = max(1, min(int(parts), len(items)))
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for k in range(parts):
        stop = start + size + (1 if k < extra else 0)
        out.append(items[start:stop])
        start = stop
    return [c for c in out if c]

"""Small helpers to measure the wall time and peak memory of one call.

Memory is measured as resident set size (RSS) *above a baseline* taken just
before the call, so that inputs built beforehand are not counted:

* a background thread reads the current RSS from ``/proc/self/statm`` every
  ``interval`` seconds (5 ms by default) and keeps the maximum;
* ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is the process's high-water
  mark: when it rises during the call, that new mark *is* the peak of the call
  (exact, even for spikes shorter than the sampling interval or taken while a C
  extension holds the GIL), so the larger of the two is reported;
* optionally ``tracemalloc`` (Python and numpy allocations only, not memory of
  other C libraries); it slows Python-heavy code, so it is off by default and
  its runs should not be used for timing.

Before the baseline, garbage is collected and glibc's ``malloc_trim(0)``
returns freed heap memory to the system: otherwise memory freed while the
inputs were built stays resident and the call could reuse it unseen.

To measure each case in a clean process, a benchmark script re-runs itself
with a worker flag through `run_isolated`; the worker prints its statistics
with `report`.

Linux only (``/proc``).
"""

import argparse
import ctypes
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
import tracemalloc

__all__ = [
    "MIB",
    "add_worker_arguments",
    "current_rss",
    "measure",
    "package_versions",
    "print_table",
    "report",
    "run_isolated",
    "set_blas_threads",
]

MIB = 1024.0**2
_PAGE = os.sysconf("SC_PAGE_SIZE")


def current_rss():
    """
    Return the current resident set size of this process.

    Returns
    -------
    int
        RSS in bytes, from ``/proc/self/statm``.
    """
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def _trim():
    """Return free heap memory to the system (glibc ``malloc_trim``), if available."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _maxrss():
    """
    Return the high-water mark of the RSS of this process.

    Returns
    -------
    int
        Peak RSS in bytes (``ru_maxrss`` is in KiB on Linux).
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Sampler(threading.Thread):
    """Thread that keeps the largest RSS seen until `stop` is called."""

    def __init__(self, interval):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = current_rss()
        self.samples = 0
        self._done = threading.Event()

    def run(self):
        """Sample until stopped."""
        fd = os.open("/proc/self/statm", os.O_RDONLY)
        try:
            while not self._done.is_set():
                rss = int(os.pread(fd, 128, 0).split()[1]) * _PAGE
                self.peak = max(self.peak, rss)
                self.samples += 1
                self._done.wait(self.interval)
        finally:
            os.close(fd)

    def stop(self):
        """Stop sampling and wait for the thread."""
        self._done.set()
        self.join()


def measure(func, *args, interval=0.005, trace=False, **kwargs):
    """
    Call ``func(*args, **kwargs)`` and measure its wall time and peak memory.

    Parameters
    ----------
    func : callable
        What to measure.
    *args, **kwargs
        Passed to ``func``.
    interval : float, optional
        RSS sampling interval in seconds.
    trace : bool, optional
        Also record the ``tracemalloc`` peak (slows Python-heavy code).

    Returns
    -------
    result : object
        What ``func`` returned.
    stats : dict
        ``wall_s``; ``baseline_mib`` (RSS before the call); ``peak_mib`` (peak
        RSS above the baseline, the larger of the sampled maximum and the
        ``ru_maxrss`` high-water mark when that rose during the call);
        ``sampled_peak_mib``; ``maxrss_rose`` (whether the high-water mark
        rose); ``samples``; ``tracemalloc_peak_mib`` (None unless ``trace``).
    """
    gc.collect()
    _trim()
    baseline = current_rss()
    maxrss_before = _maxrss()
    sampler = _Sampler(interval)
    if trace:
        tracemalloc.start()
    sampler.start()
    t0 = time.perf_counter()
    try:
        result = func(*args, **kwargs)
    finally:
        wall = time.perf_counter() - t0
        sampler.stop()
        traced = tracemalloc.get_traced_memory()[1] if trace else None
        if trace:
            tracemalloc.stop()
    maxrss_after = _maxrss()
    rose = maxrss_after > maxrss_before
    peak = max(sampler.peak, maxrss_after if rose else 0)
    stats = {
        "wall_s": wall,
        "baseline_mib": baseline / MIB,
        "peak_mib": (peak - baseline) / MIB,
        "sampled_peak_mib": (sampler.peak - baseline) / MIB,
        "maxrss_rose": rose,
        "samples": sampler.samples,
        "tracemalloc_peak_mib": None if traced is None else traced / MIB,
    }
    return result, stats


def report(stats):
    """
    Print a worker's statistics as one ``RESULT <json>`` line for `run_isolated`.

    Parameters
    ----------
    stats : dict
        JSON-serialisable statistics.
    """
    print("RESULT " + json.dumps(stats), flush=True)


def run_isolated(script, flag, spec):
    """
    Run ``python script flag <json spec>`` in a fresh process and return its `report`.

    Parameters
    ----------
    script : str
        Path of the benchmark script.
    flag : str
        Command-line flag that makes the script run one measurement.
    spec : dict
        JSON-serialisable description of the measurement.

    Returns
    -------
    dict
        The last reported statistics, or ``{"error": ...}`` if there were none.
        The worker's standard error is passed through.
    """
    proc = subprocess.run(
        [sys.executable, str(script), flag, json.dumps(spec)], stdout=subprocess.PIPE, text=True
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return {"error": f"worker failed (exit code {proc.returncode})"}
    return json.loads(lines[-1][len("RESULT ") :])


def print_table(title, rows, cols, *, label_width=18, min_width=9, note=None):
    """Print rows of measurements as a fixed-width table.

    Parameters
    ----------
    title : str
        Printed above the table.
    rows : list of dict
        Each with a ``label`` and the keys named in ``cols`` (or an ``error`` text).
    cols : list of tuple
        ``(key, header, format)`` per column.
    label_width, min_width : int
        Widths of the label column and of the value columns.
    note : callable, optional
        ``note(row) -> str`` appended to a row's values.
    """
    widths = [max(min_width, len(name)) for _, name, _ in cols]
    head = f"{'run':<{label_width}}" + "".join(
        f" {n:>{w}}" for (_, n, _), w in zip(cols, widths, strict=True)
    )
    print(f"\n{title}\n{head}\n{'-' * len(head)}")
    for r in rows:
        cells = [format(r[k], f) if isinstance(r.get(k), (int, float)) else "-" for k, _, f in cols]
        values = " ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
        if note is not None and "error" not in r:
            values += note(r)
        print(f"{r['label']:<{label_width}} " + (r["error"] if "error" in r else values))


def add_worker_arguments(parser, *, tracemalloc_help="also report tracemalloc peaks"):
    """Add the options every benchmark shares: ``--tracemalloc``, ``--blas-threads``
    and the hidden ``--worker`` (one measurement in a fresh process)."""
    parser.add_argument("--tracemalloc", action="store_true", help=tracemalloc_help)
    parser.add_argument(
        "--blas-threads",
        type=int,
        help="set OPENBLAS/OMP/MKL_NUM_THREADS for the workers (default: unset)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def set_blas_threads(n):
    """Limit the BLAS threads of the worker processes (they inherit the environment)."""
    if n:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(n)


def package_versions(*packages):
    """One line with the versions of Python and of ``packages`` (or 'not installed')."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"python {platform.python_version()}"]
    for pkg in packages:
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            parts.append(f"{pkg} not installed")
    return ", ".join(parts)

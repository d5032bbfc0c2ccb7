"""Scale-out benchmark: SkyMatch on a 2,000-exposure mosaic and tiled ZOGY on a large
pair, in-process versus a local Dask cluster.

Usage: ``python benchmarks/bench_scale.py [--quick] [--cases skymatch,zogy]
[--n-exposures N] [--size S[,S...]] [--tile-size T] [--workers W]
[--modes in-process,cluster] [--blas-threads N]``; see ``benchmarks/README.md``.

* ``skymatch``: ``SkyMatchStep(skymethod='match', in_memory=False)`` on the association
  of an N-exposure mosaic of 256² images on disk (``make_mosaic``/``write_mosaic``,
  generated once into ``benchmarks/.cache/``); the cluster run adds
  ``scheduler=<address>``, which sends the overlap-pair statistics to the workers
  (each task reads its exposures from disk).
* ``zogy``: ``ZogyStep(tile_size=T)`` on a science/template pair of S² pixels on disk
  (written once into ``benchmarks/.cache/``: the star field of ``bench_zogy.make_pair``,
  built by `star_field`, in FITS ``ImageModel`` files with a TAN GWCS, ``err`` and
  ``dq``; the same grid, so no resampling), analytic Gaussian PSFs (FWHM 3.0 and
  2.2 px), ``save_results=False`` (the difference model stays in memory, nothing is
  written); the cluster run adds
  ``scheduler=<address>``, which sends the tile cut-outs to the workers.

Every row is one fresh driver process (this script with ``--worker``, as
``_measure.run_isolated`` does, plus a watchdog that stops it if the machine runs low
on memory). For a cluster row the driver first starts a ``LocalCluster`` of
``--workers`` single-threaded worker processes in a separate process (this script with
``--serve-cluster``; so the scheduler's memory is not counted in the driver's), waits
for the workers, imports the step's modules on them and resets their peak-RSS marks;
then it times ``step.run`` and measures the driver's peak RSS above the RSS before the
call (``_measure.py``).
Afterwards it reads, from each worker and the scheduler, the peak RSS since the reset
(``VmHWM``, reset through ``/proc/self/clear_refs``) above the RSS at the reset, the
bytes the process read (``rchar`` of ``/proc/self/io``: files, and anything else
read with ``read``), and, from a worker plugin, one record per executed task: its
pickled task spec, the bytes of its input data (scattered tile cut-outs), of its
result and its run time.
"""

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ["STMATCH_DISABLE_PARS"] = "true"  # spec defaults, no packaged parameter file
HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
sys.path.insert(0, str(HERE))
import _measure  # noqa: E402
from _measure import (  # noqa: E402
    MIB,
    add_worker_arguments,
    measure,
    package_versions,
    report,
    set_blas_threads,
)

SKY_SIZE, SKY_SEED = 256, 1  # mosaic images (the cache of bench_skymatch.py)
SKY_PARAMS = {"skymethod": "match", "skystat": "mode", "match_down": True, "subtract": False}
ZOGY_SEED = 20261121

RECORDER = "stmatch-bench-task-recorder"
MODES = ("in-process", "cluster")
#: Memory a ZOGY run may be expected to use, as a fraction of MemAvailable before it.
MEMORY_FRACTION = 0.85


def quiet_logging(level=logging.WARNING):
    """Set the pipeline and Dask loggers to ``level``."""
    for name in ("stpipe", "jwst", "stcal", "stmatch", "distributed"):
        logging.getLogger(name).setLevel(level)


# --------------------------------------------------------------------------- inputs


def mosaic_grid(n):
    """``(nx, ny)`` with ``nx * ny == n``, ``ny`` the largest divisor <= sqrt(n)."""
    if n < 2:
        raise ValueError("--n-exposures must be at least 2")
    ny = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return n // ny, ny


def ensure_mosaic(n):
    """Association of the cached mosaic of ``n`` 256² exposures (generated once)."""
    import bench_skymatch

    nx, ny = mosaic_grid(n)
    return bench_skymatch.ensure_cache(nx, ny, SKY_SIZE, SKY_SEED)[nx, ny]


#: Star field of the ZOGY pair (as `bench_zogy.make_pair`): noise sigma, PSF FWHM (px).
SIGMA_NEW, SIGMA_REF = 1.0, 0.5
FWHM_NEW, FWHM_REF = 3.0, 2.2
STAMP, AREA_PER_STAR, N_TRANSIENTS = 31, 2000, 20
ZOGY_PARAMS = {"science_psf_fwhm": FWHM_NEW, "template_psf_fwhm": FWHM_REF, "save_results": False}


def _profiles(centres, fwhm, size):
    """Pixel-integrated 1-D Gaussian profiles (rows) of ``size`` px around each centre."""
    import numpy as np
    from scipy.special import erf

    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    edges = np.arange(size + 1) - size // 2 - 0.5  # pixel edges relative to the stamp centre
    z = (edges[None, :] - centres[:, None]) / (math.sqrt(2.0) * sigma)
    return 0.5 * np.diff(erf(z), axis=1)


def star_field(size, seed=ZOGY_SEED):
    """
    Science and template images of one star field (float32), built cheaply at any size.

    The recipe of `bench_zogy.make_pair`: one star per 2,000 px² at uniform sub-pixel
    positions, fluxes log-uniform in 300-30,000 (the same in both images: flux ratio 1),
    pixel-integrated circular Gaussians of FWHM 3.0 px (science) and 2.2 px (template)
    in 31-px stamps (separable: the outer product of two 1-D integrated profiles), 20
    transients of flux 3,000 in the science image only, white Gaussian noise of sigma
    1.0 and 0.5, no background. Works in float32 with a stamp-wide border, adding the
    noise in row blocks, so the memory is about two images.

    Returns
    -------
    new, ref : numpy.ndarray
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    h = STAMP // 2
    n_star = round(size * size / AREA_PER_STAR)
    pos = rng.uniform(-0.5, size - 0.5, (n_star + N_TRANSIENTS, 2))  # (y, x), pixel centres
    flux = 10 ** rng.uniform(math.log10(300.0), math.log10(3e4), n_star)
    ipos = np.rint(pos).astype(int)
    frac = pos - ipos
    images = []
    for fwhm, n in ((FWHM_NEW, n_star + N_TRANSIENTS), (FWHM_REF, n_star)):
        big = np.zeros((size + 2 * h, size + 2 * h), dtype=np.float32)
        gy = _profiles(frac[:n, 0], fwhm, STAMP)
        gx = _profiles(frac[:n, 1], fwhm, STAMP)
        amp = np.concatenate([flux, np.full(n - n_star, 3000.0)])
        for k in range(n):
            iy, ix = ipos[k]
            big[iy : iy + STAMP, ix : ix + STAMP] += amp[k] * np.outer(gy[k], gx[k])
        images.append(big[h : h + size, h : h + size])
    for image, sigma in zip(images, (SIGMA_NEW, SIGMA_REF), strict=True):
        for r0 in range(0, size, 1024):
            block = image[r0 : r0 + 1024]
            block += sigma * rng.standard_normal(block.shape, dtype=np.float32)
    return images[0], images[1]


def ensure_zogy_pair(size):
    """
    Write a science/template pair of ``size``² pixels into the cache unless present.

    The images are `star_field`; each is an ``ImageModel`` with the metadata of
    `make_zogy_pair` (units MJy/sr for both: flux ratio 1 from the metadata), a TAN
    GWCS of the full size (the same for both: no resampling), ``err`` = the noise
    sigma and ``dq`` = 0, saved as FITS.

    Returns
    -------
    str
        Path of the association (members ``science`` and ``template``).
    """
    directory = CACHE / f"zogy_{size}_s{ZOGY_SEED}"
    asn = directory / "zogy_asn.json"
    if asn.exists():  # written last
        return str(asn)
    import numpy as np

    from stmatch.datasets import make_tan_wcs, make_zogy_pair

    CACHE.mkdir(exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    directory.mkdir(exist_ok=True)
    print(f"Generating a {size}x{size} ZOGY pair into {directory} (once) ...", flush=True)
    new, ref = star_field(size)
    small = make_zogy_pair((64, 64), n_stars=0, n_transients=0, seed=ZOGY_SEED)
    wcs = make_tan_wcs((size, size), ra=150.0, dec=2.0, pixel_scale=0.06)
    members = []
    for role, data, sigma, meta_of in (
        ("science", new, SIGMA_NEW, small.science),
        ("template", ref, SIGMA_REF, small.template),
    ):
        model = meta_of.copy()
        model.data = data
        model.err = np.full(data.shape, sigma, dtype=np.float32)
        model.dq = np.zeros(data.shape, dtype=np.uint32)
        for attr in ("var_poisson", "var_rnoise", "var_flat"):
            if model.hasattr(attr):
                delattr(model, attr)
        model.meta.wcs = wcs
        name = f"zogy_{role}_{size}.fits"
        model.meta.filename = name
        model.save(str(directory / name))
        members.append({"expname": name, "exptype": role, "group_id": f"zogy_{role}"})
        del model, data
    del new, ref
    product = {"name": f"zogy_{size}", "members": members}
    asn.write_text(
        json.dumps(
            {
                "asn_type": "image3",
                "asn_rule": "stmatch_zogy",
                "asn_id": "bench",
                "products": [product],
            },
            indent=1,
        )
    )
    return str(asn)


# --------------------------------------------------------------------------- probes
# The functions below run on the Dask workers and the scheduler (client.run): they are
# pickled by value from this script.


def _proc_stats():
    """RSS, peak RSS since the last reset (VmHWM) and bytes read (rchar) of this process."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    with open("/proc/self/io") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "rchar":
                out["rchar"] = int(value)
    return {"rss": out["VmRSS"], "hwm": out["VmHWM"], "rchar": out.get("rchar", 0)}


def _reset_peak():
    """Collect garbage, trim the heap, reset the peak-RSS mark; return `_proc_stats`."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _proc_stats()


def _warm_up(modules):
    """Import ``modules`` (a worker imports them at its first task anyway)."""
    import importlib

    for name in modules:
        importlib.import_module(name)
    logging.getLogger("stmatch").setLevel(logging.WARNING)
    return True


def _task_records(dask_worker, name):
    """Records of the worker plugin ``name`` (see `_recorder`)."""
    plugin = dask_worker.plugins.get(name)
    return list(plugin.records) if plugin is not None else []


def _deep_nbytes(obj, depth=0):
    """Bytes of the numpy arrays inside ``obj`` (containers, dataclasses, objects), else
    ``sys.getsizeof``; Dask's ``sizeof`` does not look inside dataclasses."""
    import dataclasses

    import numpy as np

    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if depth > 4:
        return sys.getsizeof(obj)
    if isinstance(obj, dict):
        return sum(_deep_nbytes(v, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_deep_nbytes(v, depth + 1) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(_deep_nbytes(getattr(obj, f.name), depth + 1) for f in dataclasses.fields(obj))
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return sum(_deep_nbytes(v, depth + 1) for v in vars(obj).values())
    return sys.getsizeof(obj)


def _recorder():
    """A worker plugin that records every executed task (spec, input, output sizes, time)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class TaskRecorder(WorkerPlugin):
        name = RECORDER

        def setup(self, worker):
            self.worker = worker
            self.records = []
            self.started = {}

        def _held(self, key):
            data = self.worker.data
            return getattr(data, "fast", data).get(key)  # never unspill from disk

        def transition(self, key, start, finish, **kwargs):
            import time as _time

            if finish == "executing":
                ts = self.worker.state.tasks.get(key)
                spec = None
                with contextlib.suppress(Exception):
                    from distributed.protocol.pickle import dumps

                    spec = len(dumps(ts.run_spec))
                deps = 0
                for dep in ts.dependencies if ts is not None else ():
                    value = self._held(dep.key)
                    deps += int(dep.nbytes or 0) if value is None else _deep_nbytes(value)
                self.started[key] = (_time.perf_counter(), spec, deps)
            elif start == "executing" and key in self.started:
                t0, spec, deps = self.started.pop(key)
                value = self._held(key) if finish == "memory" else None
                self.records.append(
                    {
                        "key": str(key),
                        "state": finish,
                        "seconds": _time.perf_counter() - t0,
                        "spec": spec,
                        "in": deps,
                        "out": None if value is None else _deep_nbytes(value),
                    }
                )

    return TaskRecorder()


def _serve_cluster(n_workers):
    """Run a LocalCluster, print its address, keep it until standard input closes."""
    import warnings

    from distributed import LocalCluster

    warnings.filterwarnings("ignore", message="Port .* is already in use")
    with LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:
        print("ADDRESS " + cluster.scheduler_address, flush=True)
        sys.stdin.read()


class ClusterProbe:
    """A LocalCluster in a child process, a client to it, and the measurements.

    Parameters
    ----------
    n_workers : int
        Single-threaded worker processes.
    modules : list of str
        Imported on the workers before the measurement.
    """

    def __init__(self, n_workers, modules):
        from distributed import Client

        t0 = time.perf_counter()
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-cluster", str(n_workers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.address = None
        for line in self._proc.stdout:
            if line.startswith("ADDRESS "):
                self.address = line.split(None, 1)[1].strip()
                break
        if self.address is None:
            raise RuntimeError(f"the cluster process failed (exit code {self._proc.wait()})")
        self.client = Client(self.address, set_as_default=False, timeout="60s")
        self.client.wait_for_workers(n_workers, timeout=120)
        self.start_s = time.perf_counter() - t0
        self.n_workers = n_workers
        self.client.register_plugin(_recorder())
        self.client.run(_warm_up, modules)
        self._before = None

    def reset(self):
        """Reset the peak marks of the workers and the scheduler (just before the run)."""
        self._before = (self.client.run(_reset_peak), self.client.run_on_scheduler(_reset_peak))

    def collect(self):
        """Statistics of the run since `reset` (a dict for the report)."""
        workers_before, sched_before = self._before
        after = self.client.run(_proc_stats)
        sched = self.client.run_on_scheduler(_proc_stats)
        records = [
            r for recs in self.client.run(_task_records, name=RECORDER).values() for r in recs
        ]
        workers = []
        for addr in sorted(after):
            b, a = workers_before.get(addr), after[addr]
            if b is None:  # a worker that was restarted: no baseline
                workers.append({"peak_mib": None, "base_mib": None, "read_mib": None})
                continue
            workers.append(
                {
                    "peak_mib": (a["hwm"] - b["rss"]) / MIB,
                    "base_mib": b["rss"] / MIB,
                    "read_mib": (a["rchar"] - b["rchar"]) / MIB,
                }
            )
        return {
            "cluster_start_s": self.start_s,
            "n_workers": self.n_workers,
            "workers": workers,
            "sched_peak_mib": (sched["hwm"] - sched_before["rss"]) / MIB,
            "sched_base_mib": sched_before["rss"] / MIB,
            "tasks": summarize_tasks(records),
        }

    def close(self):
        """Close the client and stop the cluster process."""
        try:
            self.client.close()
        finally:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def summarize_tasks(records):
    """Per task name (key without run id and index): count, sizes and times."""
    import numpy as np

    groups = {}
    for r in records:  # keys: <name>-<run id>-<index> (or -<attempt>-<index>)
        match = re.match(r"^(.*?)-[0-9a-f]{8}(?:-\d+)+$", r["key"])
        groups.setdefault(match.group(1) if match else r["key"], []).append(r)
    out = {}
    for name, recs in groups.items():

        def column(field, recs=recs):
            vals = [r[field] for r in recs if r[field] is not None]
            return np.asarray(vals, dtype=float) if vals else np.asarray([np.nan])

        spec, inp, res, sec = (column(f) for f in ("spec", "in", "out", "seconds"))
        out[name] = {
            "count": len(recs),
            "failed": sum(r["state"] != "memory" for r in recs),
            "spec_mean": float(np.mean(spec)),
            "spec_max": float(np.max(spec)),
            "in_mean": float(np.mean(inp)),
            "in_max": float(np.max(inp)),
            "out_mean": float(np.mean(res)),
            "out_max": float(np.max(res)),
            "seconds_mean": float(np.mean(sec)),
            "seconds_sum": float(np.sum(sec)),
        }
    return out


@contextlib.contextmanager
def maybe_cluster(spec, modules):
    """Yield a `ClusterProbe` for a cluster row, None for an in-process row."""
    if spec["mode"] != "cluster":
        yield None
        return
    probe = ClusterProbe(spec["workers"], modules)
    try:
        yield probe
    finally:
        probe.close()


def _digest(*arrays):
    """SHA-256 of the bytes of ``arrays`` (first 16 hex digits)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- workers


def skymatch_worker(spec):
    """One SkyMatch run (in-process or on a cluster); print ``RESULT <json>``."""
    import numpy as np

    from stmatch.steps import SkyMatchStep

    asn = Path(spec["asn"])
    members = json.loads(asn.read_text())["products"][0]["members"]
    sizes = np.array([(asn.parent / m["expname"]).stat().st_size for m in members], dtype=float)
    truth = json.loads((asn.parent / "truth.json").read_text())
    with maybe_cluster(spec, ["stmatch.steps", "stmatch.steps.skymatch_step"]) as cluster:
        extra = {} if cluster is None else {"scheduler": cluster.address}
        step = SkyMatchStep(**SKY_PARAMS, in_memory=False, save_results=False, **extra)
        quiet_logging()
        rchar0 = _proc_stats()["rchar"]
        if cluster is not None:
            cluster.reset()
        _, stats = measure(step.run, str(asn))
        stats["driver_read_mib"] = (_proc_stats()["rchar"] - rchar0) / MIB
        if cluster is not None:
            stats.update(cluster.collect())
    sol = step.solution
    images, pairs = sol.images, sol.pairs
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in images["filename"]]
    levels = np.asarray(images["level"], dtype=float)
    sky = np.array([truth[Path(n).with_suffix(".fits").name] for n in names])
    ref = int(np.argmin(sky))
    stats.update(
        n=len(names),
        n_pairs=len(pairs),
        pair_file_mib=float(np.mean(sizes[pairs["image_a"]] + sizes[pairs["image_b"]])) / MIB
        if len(pairs)
        else 0.0,
        file_mib=float(np.mean(sizes)) / MIB,
        levels=levels.tolist(),
        digest=_digest(
            levels,
            np.asarray(images["level_err"], dtype=float),
            np.asarray(pairs["sky_a"], dtype=float),
            np.asarray(pairs["sky_b"], dtype=float),
        ),
        max_err=float(np.max(np.abs((levels - levels[ref]) - (sky - sky[ref])))),
    )
    report(stats)


def zogy_worker(spec):
    """One tiled ZOGY run (in-process or on a cluster); save D and S_corr; print RESULT."""
    import numpy as np

    from stmatch.steps import ZogyStep

    with maybe_cluster(spec, ["stmatch.steps", "stmatch.steps.zogy_step"]) as cluster:
        extra = {} if cluster is None else {"scheduler": cluster.address}
        step = ZogyStep(tile_size=spec["tile"], **ZOGY_PARAMS, **extra)
        quiet_logging()
        if cluster is not None:
            cluster.reset()
        model, stats = measure(step.run, spec["asn"])
        if cluster is not None:
            stats.update(cluster.collect())
    d = np.asarray(model.data)
    s_corr = np.asarray(model.scorr)
    base = Path(spec["save"]) / f"{spec['size']}_{spec['mode']}"
    np.save(f"{base}_d.npy", d)
    np.save(f"{base}_scorr.npy", s_corr)
    stats.update(
        size=spec["size"],
        n_tiles=int(model.meta.zogy.n_tiles),
        n_det=len(step.catalog),
        digest=_digest(d, s_corr),
        finite=float(np.mean(np.isfinite(d))),
    )
    report(stats)


def worker(spec):
    """Dispatch one measurement (``spec['case']``)."""
    {"skymatch": skymatch_worker, "zogy": zogy_worker}[spec["case"]](spec)


# --------------------------------------------------------------------------- parent


def run_row(label, spec, min_available_mib=1024):
    """
    Run one measurement in a fresh process; return its row (``error`` if it failed).

    A watchdog kills the process when the machine's available memory falls below
    ``min_available_mib`` (other users share it); its cluster process then stops
    by itself (its standard input closes).
    """
    import threading

    print(f"  running {label} ...", flush=True)
    t0 = time.perf_counter()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    lowest, killed = float("inf"), False
    while proc.poll() is None:
        available = _available_mib()
        lowest = min(lowest, available)
        if available < min_available_mib and not killed:
            proc.kill()
            killed = True
        time.sleep(0.5)
    reader.join()
    results = [ln for ln in lines if ln.startswith("RESULT ")]
    if killed:
        row = {"error": f"aborted: available memory fell below {min_available_mib} MiB"}
    elif results:
        row = json.loads(results[-1][len("RESULT ") :])
    else:
        row = {"error": f"worker failed (exit code {proc.returncode})"}
    row.update(label=label, process_s=time.perf_counter() - t0, lowest_available_mib=lowest)
    return row


def flatten(row):
    """Add the table's columns (worker maxima, task means) to a row."""
    workers = [w for w in row.get("workers", []) if w["peak_mib"] is not None]
    if workers:
        row["worker_peak"] = max(w["peak_mib"] for w in workers)
        row["worker_base"] = max(w["base_mib"] for w in workers)
        row["worker_read"] = sum(w["read_mib"] for w in workers)
    tasks = row.get("tasks") or {}
    if tasks:
        name, t = max(tasks.items(), key=lambda kv: kv[1]["count"])  # the distributed stage
        row["task_name"] = name
        row["n_tasks"] = t["count"]
        row["spec_kib"] = t["spec_mean"] / 1024
        row["in_mib"] = t["in_mean"] / MIB
        row["out_kib"] = t["out_mean"] / 1024
        row["out_mib"] = t["out_mean"] / MIB
        row["task_s"] = t["seconds_mean"]
        if workers:
            row["read_per_task"] = row["worker_read"] / t["count"]
    return row


def worker_note(row):
    """Per-worker peaks, the scheduler and the cluster start (appended to a row)."""
    if "workers" not in row:
        return ""
    peaks = ", ".join(
        "-" if w["peak_mib"] is None else f"{w['peak_mib']:.0f}" for w in row["workers"]
    )
    return (
        f"  [workers {peaks} MiB above {row.get('worker_base', float('nan')):.0f}; scheduler "
        f"{row['sched_peak_mib']:.0f} MiB; cluster start {row['cluster_start_s']:.1f} s]"
    )


def case_skymatch(args, rows_out):
    """SkyMatch on an N-exposure mosaic from disk, in-process and on the cluster."""
    n = args.n_exposures or (9 if args.quick else 2000)
    asn = ensure_mosaic(n)
    nx, ny = mosaic_grid(n)
    rows = []
    for mode in args.modes:
        spec = {"case": "skymatch", "mode": mode, "asn": asn, "workers": args.workers}
        label = "in-process" if mode == "in-process" else f"cluster {args.workers}x1"
        rows.append(flatten(run_row(label, spec)))
    ok = [r for r in rows if "error" not in r]
    base = next((r for r in ok if r["label"] == "in-process"), None)
    for r in ok:
        if base is not None and r is not base:
            r["max_dlevel"] = max(
                abs(a - b) for a, b in zip(r["levels"], base["levels"], strict=True)
            )
            r["identical"] = r["digest"] == base["digest"]
    cols = [
        ("n", "N", "d"),
        ("n_pairs", "pairs", "d"),
        ("n_tasks", "tasks", "d"),
        ("wall_s", "wall [s]", ".1f"),
        ("peak_mib", "drv peak", ".0f"),
        ("baseline_mib", "drv base", ".0f"),
        ("worker_peak", "wrk peak", ".0f"),
        ("spec_kib", "spec [KiB]", ".1f"),
        ("out_kib", "out [KiB]", ".1f"),
        ("read_per_task", "read/task", ".2f"),
        ("task_s", "s/task", ".2f"),
        ("max_err", "max|err|", ".3f"),
        ("max_dlevel", "max|dlev|", ".1e"),
    ]
    _measure.print_table(
        f"SkyMatch: {nx}x{ny} = {n} exposures of {SKY_SIZE}x{SKY_SIZE} (FITS on disk, "
        f"{ok[0]['file_mib'] if ok else float('nan'):.2f} MiB each), skymethod=match, "
        "skystat=mode, in_memory=False; memory in MiB (drv: driver above its baseline; "
        "wrk: largest worker above its baseline); spec/out: mean pickled task spec and "
        "result; read/task: MiB read by the workers per task",
        rows,
        cols,
        label_width=12,
        min_width=8,
        note=worker_note,
    )
    lines = []
    for r in ok:
        if "n_tasks" in r:
            lines.append(
                f"skymatch {r['label']}: {r['n_tasks']} tasks ({r['task_name']}) for "
                f"{r['n_pairs']} pairs; a pair's two files {r['pair_file_mib']:.2f} MiB; "
                f"workers read {r['read_per_task']:.2f} MiB per task; driver read "
                f"{r['driver_read_mib']:.0f} MiB; levels identical to in-process: "
                f"{r.get('identical', 'n/a')}"
            )
    if base is not None:
        for r in ok:
            if r is not base:
                lines.append(
                    f"skymatch {r['label']}: {base['wall_s'] / r['wall_s']:.2f}x the "
                    f"in-process speed ({r['wall_s']:.0f} s vs {base['wall_s']:.0f} s)"
                )
    rows_out["skymatch"] = rows
    return lines


def _available_mib():
    """MemAvailable of this machine in MiB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def _mode_of(row):
    """``'in-process'`` or ``'cluster NxM'`` (a ZOGY row label without its size)."""
    return row["label"].split(" ", 1)[1]


def _components(row):
    """``{process: (baseline MiB, peak above it MiB)}`` of a row."""
    out = {"driver": (row["baseline_mib"], row["peak_mib"])}
    if "workers" in row:
        out["scheduler"] = (row["sched_base_mib"], row["sched_peak_mib"])
        for i, w in enumerate(row["workers"]):
            if w["peak_mib"] is not None:
                out[f"worker {i}"] = (w["base_mib"], w["peak_mib"])
    return out


def estimate_mib(rows, mode, size, process=None):
    """
    Memory (MiB) a run of ``mode`` at ``size`` would need on this machine.

    The sum over its processes (driver; scheduler and workers for a cluster) of the
    baseline and the peak above it, each peak extrapolated in the number of pixels:
    linearly through the two largest measured sizes of that mode, or in proportion
    to the pixels from one. Only ``process`` (e.g. ``'driver'``) if given. None when
    the mode has no measurement.
    """
    rs = sorted(
        (r for r in rows if "error" not in r and _mode_of(r) == mode), key=lambda r: r["size"]
    )
    if not rs:
        return None
    last, p2 = _components(rs[-1]), rs[-1]["size"] ** 2
    prev = _components(rs[-2]) if len(rs) > 1 else {}
    px, total = size * size, 0.0
    for name, (base, peak) in last.items():
        if process is not None and name != process:
            continue
        if name in prev:
            p1 = rs[-2]["size"] ** 2
            est = peak + (peak - prev[name][1]) / (p2 - p1) * (px - p2)
        else:
            est = peak * px / p2
        total += (base if process is None else 0.0) + max(est, 0.0)
    return total


def case_zogy(args, rows_out):
    """Tiled ZOGY at growing sizes, in-process and on the cluster; check memory first."""
    import numpy as np

    tile = args.tile_size or (512 if args.quick else 2048)
    if args.size:
        sizes, target = sorted(int(s) for s in args.size.split(",")), None
    else:
        sizes, target = ([1024], None) if args.quick else ([4096, 6144, 8192], 16384)
    save = CACHE / "scale_outputs"
    rows, skipped, lines, measured = [], [], [], []
    labels = {
        m: ("in-process" if m == "in-process" else f"cluster {args.workers}x1") for m in MODES
    }
    queue = [*sizes, *([target] if target else [])]
    while queue:
        size = queue.pop(0)
        limit = MEMORY_FRACTION * _available_mib()
        need = {m: estimate_mib(measured, labels[m], size) for m in args.modes}
        fits = [m for m in args.modes if need[m] is None or need[m] <= limit]
        for m in args.modes:
            if m not in fits:
                skipped.append((size, labels[m], need[m], limit))
        if size == target and "in-process" not in fits and measured:
            # 16k does not fit: the largest multiple of 1024 that fits in-process instead
            biggest = max(r["size"] for r in measured)
            s = size - 1024
            while s > biggest and estimate_mib(measured, "in-process", s) > limit:
                s -= 1024
            if s > biggest:
                print(f"  {size}^2 does not fit: running {s}^2 instead", flush=True)
                queue.insert(0, s)
            continue
        if not fits:
            continue
        asn = ensure_zogy_pair(size)
        save.mkdir(parents=True, exist_ok=True)
        pair = []
        for mode in fits:
            spec = {
                "case": "zogy",
                "mode": mode,
                "asn": asn,
                "size": size,
                "tile": tile,
                "workers": args.workers,
                "save": str(save),
            }
            pair.append(flatten(run_row(f"{size} {labels[mode]}", spec)))
            pair[-1]["mode"] = mode
        ok = [r for r in pair if "error" not in r]
        base = next((r for r in ok if r["mode"] == "in-process"), None)
        for r in ok:
            if base is not None and r is not base:
                dif = []
                for what in ("d", "scorr"):
                    a = np.load(save / f"{size}_in-process_{what}.npy", mmap_mode="r")
                    b = np.load(save / f"{size}_{r['mode']}_{what}.npy", mmap_mode="r")
                    dif.append(float(np.nanmax(np.abs(a.astype(np.float64) - b))))
                r["max_dd"], r["max_dscorr"] = dif
                r["identical"] = r["digest"] == base["digest"]
            r["peak_per_mpix"] = r["peak_mib"] / (size * size / 1e6)
        for path in save.glob(f"{size}_*.npy"):
            path.unlink()
        measured += ok
        rows += pair
    shutil.rmtree(save, ignore_errors=True)
    cols = [
        ("size", "size", "d"),
        ("n_tasks", "tasks", "d"),
        ("wall_s", "wall [s]", ".1f"),
        ("peak_mib", "drv peak", ".0f"),
        ("baseline_mib", "drv base", ".0f"),
        ("peak_per_mpix", "MiB/Mpx", ".1f"),
        ("worker_peak", "wrk peak", ".0f"),
        ("in_mib", "in [MiB]", ".1f"),
        ("out_mib", "out [MiB]", ".1f"),
        ("task_s", "s/task", ".2f"),
        ("n_det", "detect", "d"),
        ("max_dscorr", "max|dScorr|", ".1e"),
    ]
    _measure.print_table(
        f"ZOGY: science/template pair from FITS on disk, tile_size={tile}, analytic PSFs, "
        "save_results=False; memory in MiB (drv: driver above its baseline; wrk: largest "
        "worker above its baseline); in/out: mean bytes of a task's input cut-outs and of "
        "its result",
        rows,
        cols,
        label_width=22,
        min_width=8,
        note=worker_note,
    )
    for r in rows:
        if "error" in r:
            continue
        if "n_tasks" in r:
            lines.append(
                f"zogy {r['label']}: {r['n_tasks']} tile tasks ({r['task_name']}), input "
                f"{r['in_mib']:.1f} MiB and result {r['out_mib']:.1f} MiB per task, task spec "
                f"{r['spec_kib']:.1f} KiB; D and S_corr identical to in-process: "
                f"{r.get('identical', 'n/a')} (max|dD| {r.get('max_dd', float('nan')):.1e})"
            )
    for size, mode, need, limit in skipped:
        lines.append(
            f"zogy {size}^2 {mode} NOT RUN: estimated ~{need / 1024:.1f} GiB (all its processes; "
            f"peaks extrapolated in pixels from the measured sizes) > {limit / 1024:.1f} GiB "
            f"({MEMORY_FRACTION:.0%} of the memory available then)"
        )
    for mode in sorted({_mode_of(r) for r in measured}):
        biggest = max(r["size"] for r in measured if _mode_of(r) == mode)
        for size in sorted({biggest, 16384}):
            how = "measured" if size == biggest else "EXTRAPOLATED"
            drv = estimate_mib(measured, mode, size, "driver")
            lines.append(
                f"zogy {size}^2 {mode}: driver peak {how} {drv / 1024:.1f} GiB above its "
                f"baseline; all processes {estimate_mib(measured, mode, size) / 1024:.1f} GiB"
            )
    rows_out["zogy"] = rows
    return lines


def main(argv=None):
    """Run the benchmark (or, with ``--worker``/``--serve-cluster``, one piece of it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test, < 2 min)")
    parser.add_argument("--cases", default="skymatch,zogy", help="comma-separated subset")
    parser.add_argument("--n-exposures", type=int, help="SkyMatch mosaic size (default 2000)")
    parser.add_argument(
        "--size", help="ZOGY image sides, comma-separated (default 4096,8192 then 16384 if it fits)"
    )
    parser.add_argument("--tile-size", type=int, help="ZOGY tile_size (default 2048)")
    parser.add_argument("--workers", type=int, default=2, help="cluster worker processes")
    parser.add_argument(
        "--modes", default="in-process,cluster", help="comma-separated subset of in-process,cluster"
    )
    parser.add_argument("--json", help="also write all rows to this JSON file")
    parser.add_argument("--serve-cluster", type=int, help=argparse.SUPPRESS)
    add_worker_arguments(parser)
    args = parser.parse_args(argv)
    set_blas_threads(args.blas_threads)  # inherited by the worker processes
    if args.serve_cluster:
        return _serve_cluster(args.serve_cluster)
    if args.worker:
        return worker(json.loads(args.worker))
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(args.modes) <= set(MODES) or not args.modes:
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    cases = [c.strip().lower() for c in args.cases.split(",") if c.strip()]
    if not set(cases) <= {"skymatch", "zogy"}:
        parser.error("--cases: choose from skymatch, zogy")
    print(
        package_versions("stmatch", "numpy", "scipy", "jwst", "dask", "distributed")
        + f"\n{os.cpu_count()} cores, {_available_mib() / 1024:.1f} GiB available, "
        f"{'quick' if args.quick else 'full'} run, {args.workers} cluster worker(s) x 1 thread, "
        f"BLAS threads: {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    rows, summary = {}, []
    for case in cases:
        summary += {"skymatch": case_skymatch, "zogy": case_zogy}[case](args, rows)
    print(f"\nSummary (load average at the end: {os.getloadavg()[0]:.2f}; one run per row)")
    for line in summary:
        print("  " + line)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()

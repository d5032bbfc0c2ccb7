"""Benchmark stmatch's SkyMatchStep against jwst's SkyMatchStep on synthetic mosaics.

Usage: ``python benchmarks/bench_skymatch.py [--quick] [--cases A,B,C] [--tracemalloc]
[--profile] [--blas-threads N]``; see ``benchmarks/README.md`` for the cases
(A: 5x5 of 1024^2, ours vs
jwst; B: 1,000 of 256^2, jwst extrapolated from sub-grids; C: our memory versus N).

Each (tool, case) runs in a fresh process (this script with ``--worker``) that builds or
loads its inputs, then times only ``step.run(...)`` and measures the peak RSS above the
RSS just before it (``_measure.py``). The error is max |(level - level[ref]) - (sky -
sky[ref])|, ``ref`` the image of lowest true sky (``match`` levels are relative). Both
tools get identical parameters (``STMATCH_DISABLE_PARS=true``); the stpipe, jwst, stcal
and stmatch loggers are set to WARNING.
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ["STMATCH_DISABLE_PARS"] = "true"  # identical parameters for both tools
HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
sys.path.insert(0, str(HERE))
import _measure  # noqa: E402
from _measure import add_worker_arguments, measure, report, run_isolated, set_blas_threads  # noqa: E402

PARAMS = {"skymethod": "match", "skystat": "mode", "match_down": True, "subtract": False}


def quiet_logging(level=logging.WARNING):
    """Set the pipeline loggers to ``level`` (stpipe's ``Step.run`` leaves levels alone)."""
    for name in ("stpipe", "jwst", "stcal", "stmatch"):
        logging.getLogger(name).setLevel(level)


def ensure_cache(nx, ny, size, seed, subsets=()):
    """
    Write a mosaic (FITS + association) into ``benchmarks/.cache`` unless present.

    Parameters
    ----------
    nx, ny, size, seed : int
        Arguments of ``make_mosaic(nx, ny, shape=(size, size), overlap=0.2)``.
    subsets : sequence of (int, int)
        Sub-grids ``(sx, sy)`` (first ``sx`` columns of the first ``sy`` rows).

    Returns
    -------
    dict
        ``{(sx, sy): association path}``, including ``(nx, ny)``.
    """
    directory = CACHE / f"mosaic_{nx}x{ny}_{size}_s{seed}"
    truth, asn = directory / "truth.json", directory / "mosaic_asn.json"
    if not truth.exists():  # written last: its presence means the cache is complete
        from stmatch.datasets import make_mosaic, write_mosaic

        CACHE.mkdir(exist_ok=True)
        (CACHE / ".gitignore").write_text("*\n")
        print(f"Generating {nx}x{ny} mosaic of {size}^2 into {directory} (once) ...", flush=True)
        mosaic = make_mosaic(nx, ny, shape=(size, size), overlap=0.2, seed=seed)
        write_mosaic(mosaic, directory, asn_name=asn.name)
        truth.write_text(
            json.dumps(
                {
                    Path(m.meta.filename).with_suffix(".fits").name: s
                    for m, s in zip(mosaic.models, mosaic.sky, strict=True)
                }
            )
        )
    paths = {}
    for sx, sy in [(nx, ny), *subsets]:
        paths[sx, sy] = directory / f"sub_{sx}x{sy}_asn.json"
        if not paths[sx, sy].exists():
            full = json.loads(asn.read_text())
            members = full["products"][0]["members"]  # in row-major grid order
            full["products"][0]["members"] = [
                members[r * nx + c] for r in range(sy) for c in range(sx)
            ]
            paths[sx, sy].write_text(json.dumps(full, indent=1))
    return {key: str(path) for key, path in paths.items()}


def build_inputs(source):
    """
    Build (in memory) or locate (on disk) the input of one run.

    Parameters
    ----------
    source : dict
        ``{"mosaic": [nx, ny, size, seed]}`` to generate in memory, or
        ``{"asn": path, "load": bool}``: an association, loaded into an
        in-memory ``ModelLibrary`` when ``load`` (else the path is the input).

    Returns
    -------
    inputs : ModelLibrary or str
        What ``step.run`` gets.
    sky : list of float
        True sky of each image, in library order.
    """
    from jwst.datamodels import ModelLibrary

    if "mosaic" in source:
        from stmatch.datasets import make_mosaic

        nx, ny, size, seed = source["mosaic"]
        mosaic = make_mosaic(nx, ny, shape=(size, size), overlap=0.2, seed=seed)
        return ModelLibrary(mosaic.models), list(mosaic.sky)
    path = Path(source["asn"])
    truth = json.loads((path.parent / "truth.json").read_text())
    members = json.loads(path.read_text())["products"][0]["members"]
    sky = [truth[m["expname"]] for m in members]
    if not source.get("load"):
        return str(path), sky
    library = ModelLibrary(str(path), on_disk=False)
    with library:
        for i in range(len(library)):  # models stay loaded in a library not on disk
            library.shelve(library.borrow(i), i, modify=False)
    return library, sky


def max_error(library, sky):
    """
    Return max |(level - level[ref]) - (sky - sky[ref])|, ``ref``: lowest true sky.

    Parameters
    ----------
    library : ModelLibrary
        Output of a step (``meta.background.level``; a missing level gives NaN).
    sky : list of float
        True sky levels.
    """
    import numpy as np

    levels = []
    with library:
        for i in range(len(library)):
            model = library.borrow(i)
            level = model.meta.background.level
            levels.append(np.nan if level is None else float(level))
            library.shelve(model, i, modify=False)
    levels, sky = np.asarray(levels), np.asarray(sky)
    ref = int(np.argmin(sky))
    return float(np.max(np.abs((levels - levels[ref]) - (sky - sky[ref]))))


def worker(spec):
    """
    Run one (tool, input, parameters) measurement and print ``RESULT <json>``.

    Parameters
    ----------
    spec : dict
        ``tool`` ('ours' or 'jwst'), ``source`` (see `build_inputs`),
        ``params``, ``trace`` (tracemalloc) and ``profile`` (cProfile top 20).
    """
    if spec["tool"] == "ours":
        from stmatch.steps import SkyMatchStep
    else:
        from jwst.skymatch import SkyMatchStep
    inputs, sky = build_inputs(spec["source"])
    step = SkyMatchStep(**spec["params"])
    quiet_logging()
    if spec.get("profile"):
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        result, stats = measure(profiler.runcall, step.run, inputs)
        for order in ("cumulative", "tottime"):
            pstats.Stats(profiler, stream=sys.stderr).sort_stats(order).print_stats(20)
    else:
        result, stats = measure(step.run, inputs, trace=spec.get("trace", False))
    stats.update(n=len(sky), max_err=max_error(result, sky))
    report(stats)


def measure_in_subprocess(label, tool, source, trace=False, profile=False, **params):
    """
    Run `worker` in a fresh Python process and return its row (``error`` if it failed).

    Parameters
    ----------
    label : str
        Row label.
    tool : {'ours', 'jwst'}
        Which step.
    source : dict
        Input, see `build_inputs`.
    trace, profile : bool, optional
        Passed to `worker`.
    **params
        Step parameters overriding `PARAMS`.
    """
    spec = {
        "tool": tool,
        "source": source,
        "params": {**PARAMS, **params},
        "trace": trace,
        "profile": profile,
    }
    print(f"  running {label} ...", flush=True)
    return {"label": label, "tool": tool, **run_isolated(__file__, "--worker", spec)}


def print_table(title, rows, trace=False):
    """
    Print one case's table.

    Parameters
    ----------
    title : str
        Heading.
    rows : list of dict
        Rows from `measure_in_subprocess` (or estimates with ``wall_s`` only).
    trace : bool, optional
        Add the tracemalloc column.
    """
    cols = [
        ("n", "N", "d"),
        ("wall_s", "wall [s]", ".2f"),
        ("peak_mib", "peak [MiB]", ".0f"),
        ("baseline_mib", "base [MiB]", ".0f"),
        ("max_err", "max|err|", ".4f"),
    ]
    cols += [("tracemalloc_peak_mib", "tracemalloc [MiB]", ".0f")] if trace else []
    _measure.print_table(title, rows, cols, label_width=44, min_width=10)


def ratio_line(ours, jwst):
    """Return a line with the ours/jwst ratios of wall time and peak memory of two rows."""
    if "error" in ours or "error" in jwst:
        return "ratio: n/a (a run failed)"
    t = ours["wall_s"] / jwst["wall_s"]
    m = ours["peak_mib"] / jwst["peak_mib"] if jwst["peak_mib"] > 0 else float("nan")
    return f"ours/jwst: time {t:.3f} ({1 / t:.1f}x faster), peak memory {m:.2f}"


def case_a(quick, trace):
    """Case A: ours vs jwst on a 5x5 mosaic of 1024^2 (3x3 of 256^2 if quick)."""
    nx, size = (3, 256) if quick else (5, 1024)
    source = {"mosaic": [nx, nx, size, 0]}
    rows = {
        (tool, stat): measure_in_subprocess(
            f"{tool} skystat={stat}", tool, source, trace=trace, skystat=stat
        )
        for stat in ("mode", "median")
        for tool in ("ours", "jwst")
    }
    print_table(
        f"Case A: {nx}x{nx} = {nx * nx} exposures of {size}x{size}, overlap 0.2, "
        "in memory, skymethod=match",
        list(rows.values()),
        trace,
    )
    for stat in ("mode", "median"):
        print(f"  skystat={stat}: {ratio_line(rows['ours', stat], rows['jwst', stat])}")
    o, j = rows["ours", "mode"], rows["jwst", "mode"]
    speedup = j["wall_s"] / o["wall_s"] if "error" not in o and "error" not in j else float("nan")
    return [
        f"A: ours {speedup:.1f}x faster than jwst (skystat=mode, N={nx * nx}, {size}^2); "
        f"target >= 10x: {'MET' if speedup >= 10 else 'NOT MET'}"
    ]


def case_b(quick, trace):
    """Case B: ours on 1,000 exposures; jwst on sub-grids, extrapolated to N=1,000."""
    nx, ny, subs = (5, 5, [(3, 3), (2, 2)]) if quick else (40, 25, [(10, 10), (5, 5)])
    asn = ensure_cache(nx, ny, 256, 1, subs)
    n = nx * ny
    rows = [
        measure_in_subprocess(
            f"ours in_memory N={n}", "ours", {"asn": asn[nx, ny], "load": True}, trace=trace
        )
    ]
    jw = []
    for k, (sx, sy) in enumerate(subs):
        src = {"asn": asn[sx, sy], "load": True}
        if k == 0:  # ours on the larger subset too, for a direct comparison
            rows.append(
                measure_in_subprocess(f"ours in_memory {sx}x{sy} subset", "ours", src, trace=trace)
            )
        jw.append(
            measure_in_subprocess(f"jwst in_memory {sx}x{sy} subset", "jwst", src, trace=trace)
        )
        rows.append(jw[-1])
    est = {}
    if all("error" not in r for r in jw):
        (n2, t2), (n1, t1) = [(r["n"], r["wall_s"]) for r in jw]
        a = (t2 / n2 - t1 / n1) / (n2 - n1)  # t = a N^2 + b N through both points
        est = {"N^2": t2 * (n / n2) ** 2, "fit": a * n * n + (t1 / n1 - a * n1) * n}
        rows.append(
            {"label": f"jwst N={n} EXTRAPOLATED t~N^2 from N={n2}", "n": n, "wall_s": est["N^2"]}
        )
        rows.append(
            {
                "label": f"jwst N={n} EXTRAPOLATED aN^2+bN (N={n1},{n2})",
                "n": n,
                "wall_s": est["fit"],
            }
        )
    print_table(
        f"Case B: {nx}x{ny} = {n} exposures of 256x256, overlap 0.2 (8 neighbours), in memory",
        rows,
        trace,
    )
    print(f"  {subs[0][0]}x{subs[0][1]} subset: {ratio_line(rows[1], rows[2])}")
    t = rows[0].get("wall_s", float("nan"))
    out = [
        f"B: ours {t:.1f} s for N={n} in memory; target < 60 s: {'MET' if t < 60 else 'NOT MET'}"
    ]
    if est:
        out.append(
            f"B: jwst at N={n} estimated (not run) {est['fit']:.0f}-{est['N^2']:.0f} s "
            f"-> ours ~{est['fit'] / t:.0f}-{est['N^2'] / t:.0f}x faster"
        )
    return out


def case_c(quick, trace):
    """Case C: our peak memory versus N, from an association on disk."""
    nx, ny, subs = (5, 5, [(3, 3)]) if quick else (40, 25, [(10, 10), (20, 20)])
    asn = ensure_cache(nx, ny, 256, 1, subs)
    grids = [*subs, (nx, ny)]
    rows = []
    for in_memory in (False, True):
        for sx, sy in grids:
            rows.append(
                measure_in_subprocess(
                    f"ours in_memory={in_memory} from asn, N={sx * sy}",
                    "ours",
                    {"asn": asn[sx, sy], "load": False},
                    trace=trace,
                    in_memory=in_memory,
                )
            )
    print_table(
        "Case C: peak RSS above baseline vs N, 256x256 images from an association "
        "on disk (reading included in the time)",
        rows,
        trace,
    )
    peaks = [r.get("peak_mib", float("nan")) for r in rows[: len(grids)]]
    flat = peaks[-1] <= 1.5 * peaks[0] + 20
    return [
        f"C: in_memory=False peak above baseline {', '.join(f'{p:.0f}' for p in peaks)} MiB "
        f"for N={', '.join(str(x * y) for x, y in grids)}; target flat in N "
        f"(largest <= 1.5 x smallest + 20 MiB): {'MET' if flat else 'NOT MET'}"
    ]


def main(argv=None):
    """Run the benchmark (or, with ``--worker``, one measurement) for ``argv``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny cases (smoke test)")
    parser.add_argument("--cases", default="A,B,C", help="comma-separated subset of A,B,C")
    parser.add_argument(
        "--profile", action="store_true", help="only print a cProfile top 20 of ours on case A"
    )
    add_worker_arguments(
        parser, tracemalloc_help="also report tracemalloc peaks (slows Python-heavy code)"
    )
    args = parser.parse_args(argv)
    set_blas_threads(args.blas_threads)  # inherited by the worker processes
    if args.worker:
        return worker(json.loads(args.worker))
    if args.profile:
        nx, size = (3, 256) if args.quick else (5, 1024)
        r = measure_in_subprocess(
            "ours (cProfile)", "ours", {"mosaic": [nx, nx, size, 0]}, profile=True
        )
        return print_table("Case A under cProfile (time inflated)", [r])
    import platform
    from importlib.metadata import version

    print(
        f"python {platform.python_version()}, stmatch {version('stmatch')}, jwst "
        f"{version('jwst')}, {os.cpu_count()} cores, {'quick' if args.quick else 'full'} run, "
        f"BLAS threads: {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    summary = []
    for case in args.cases.upper().split(","):
        summary += {"A": case_a, "B": case_b, "C": case_c}[case.strip()](
            args.quick, args.tracemalloc
        )
    print(
        f"\nSummary (load average at the end: {os.getloadavg()[0]:.2f}; one run per row, "
        "times vary by ~10 % between runs)"
    )
    for line in summary:
        print("  " + line)


if __name__ == "__main__":
    main()

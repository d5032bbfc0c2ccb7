"""Benchmark stmatch's BackgroundMatchStep against photutils Background2D on a shared pixel grid.

Usage: ``python benchmarks/bench_bgmatch.py [--quick] [--tools LIST] [--size N]
[--exposures N] [--repeat N] [--profile] [--tracemalloc] [--blas-threads N]``;
see ``benchmarks/README.md``.

Ten exposures (``--exposures``) of 4096 x 4096 pixels and one reference, all on one pixel
grid (``stmatch.datasets.make_bgmatch_exposures``: shared stars and diffuse light, a
quadratic background offset per exposure, white noise), are matched to the reference:

* ``step_akima``: ``BackgroundMatchStep().run(models)`` on the list of the 11 models
  (defaults: 256-px bins, ``MEANCLIP`` 3 sigma, 3 passes, ``AKIMA_SPLINE``; reference
  chosen automatically, nothing written);
* ``step_poly2``: the same with ``use_polynomial=True, order=2``;
* ``step_akima_library``: ``step_akima`` on a ``ModelLibrary`` of the same models (a list
  of models is deep-copied by stpipe's ``prepare_output``, a library is not);
* ``step_akima_library_ref0``: ``step_akima_library`` with ``reference=0`` (the exposure
  the automatic choice picks), which skips the statistics of the automatic choice;
* ``core_akima`` and ``core_poly2``: the numerical core alone on each reference -
  exposure difference (computed beforehand): ``bin_difference``, ``fit_background`` and
  ``BackgroundFit.evaluate_image`` (float32), from ``stmatch.algorithms``;
* ``background2d``: ``photutils.background.Background2D(reference - exposure, 256,
  sigma_clip=SigmaClip(sigma=3, maxiters=3), bkg_estimator=MeanBackground())`` (default
  3x3 median filter of the mesh and default interpolator, ``scipy.ndimage.zoom`` cubic
  splines) on each exposure, its background added to the exposure in place (float32;
  the error is measured on the matched exposure minus the original);
* ``background2d_nofilter``: the same with ``filter_size=(1, 1)`` (no mesh filter: more
  accurate on smooth surfaces).

Each row is measured in fresh processes (this script with ``--worker``) that build their
inputs from a cache of the generated exposures, then time only the call and measure the
peak RSS above the RSS just before it (``_measure.py``). The time per exposure is the
total divided by the number of exposures matched. The error of a match is the RMS over
all pixels of (fitted model - true offset), the true offset being the difference of the
two known background surfaces.
"""

import argparse
import copy
import json
import logging
import os
import statistics
import sys
from pathlib import Path

import numpy as np

os.environ["STMATCH_DISABLE_PARS"] = "true"  # spec defaults, no packaged parameter files
HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
sys.path.insert(0, str(HERE))
import _measure  # noqa: E402
from _measure import (  # noqa: E402
    add_worker_arguments,
    measure,
    package_versions,
    report,
    run_isolated,
    set_blas_threads,
)

SIZE = 4096  # image side, pixels
N_EXPOSURES = 10  # exposures matched to the reference
BIN = 256  # bin size of ours and box size of Background2D
NOISE = 1.0  # white noise sigma of every exposure
AMPLITUDE = 2.0  # largest linear background coefficient (quadratic ones up to half)
STAR_DENSITY = 1.0 / 2000  # stars per pixel (the scene's stars fill a cap ~3.5x the image)
N_DIFFUSE = 3  # shared diffuse sources
SEED = 20261121
TOOLS = (
    "step_akima",
    "step_poly2",
    "step_akima_library",
    "step_akima_library_ref0",
    "core_akima",
    "core_poly2",
    "background2d",
    "background2d_nofilter",
)
OURS_STEP = ("step_akima", "step_poly2")
STEP_PARAMS = {
    "step_akima": {},
    "step_poly2": {"use_polynomial": True, "order": 2},
    "step_akima_library": {},
    "step_akima_library_ref0": {"reference": 0},
}
CORE_PARAMS = {
    "core_akima": {"use_polynomial": False, "interp_style": "AKIMA_SPLINE"},
    "core_poly2": {"use_polynomial": True, "order": 2},
}
#: Background2D options besides the box size and the estimator: its defaults (a 3x3 median
#: filter of the mesh), and no mesh filter (more accurate on these smooth surfaces).
PEERS = {"background2d": {}, "background2d_nofilter": {"filter_size": (1, 1)}}
LIMIT = 0.5  # target: seconds per exposure on a shared grid
SPEEDUP = 5.0  # target: at least this much faster than Background2D ...
EQUAL = 1.1  # ... at an error at most this factor above Background2D's


def quiet_logging(level=logging.WARNING):
    """Set the pipeline loggers to ``level`` (stpipe's ``Step.run`` leaves levels alone)."""
    for name in ("stpipe", "jwst", "stcal", "stmatch", "astropy", "photutils"):
        logging.getLogger(name).setLevel(level)


# --------------------------------------------------------------------------- inputs


def ensure_cache(size, n_exposures, seed=SEED):
    """
    Generate the exposures once into ``benchmarks/.cache`` (not timed).

    ``make_bgmatch_exposures(n_exposures + 1, shape=(size, size), order=2,
    amplitude=2, noise=1, ...)`` on one pixel grid (no shifts or rotations); exposure 0
    gets the lowest mean level (1.0; the others uniform in 3-8), so that the step's
    automatic choice makes it the reference. Per exposure the cache holds the data
    (``data_<k>.npy``), every other array that is not constant (``<name>_<k>.npy``; the
    constant ones are described in ``arrays.json``) and the metadata with the GWCS
    (``meta_<k>.asdf``); ``coefficients.npy`` holds the background coefficients.

    Returns
    -------
    pathlib.Path
        The cache directory.
    """
    import asdf

    n = n_exposures + 1
    directory = CACHE / f"bgmatch_{size}_n{n}_s{seed}"
    done = directory / "arrays.json"  # written last: its presence means the cache is complete
    if done.exists():
        return directory
    from stmatch.datasets import make_bgmatch_exposures

    CACHE.mkdir(exist_ok=True)
    if not (CACHE / ".gitignore").exists():
        (CACHE / ".gitignore").write_text("*\n")
    directory.mkdir(exist_ok=True)
    print(f"Generating {n} exposures of {size}^2 into {directory} (once) ...", flush=True)
    rng = np.random.default_rng(seed)
    levels = np.concatenate([[1.0], rng.uniform(3.0, 8.0, n - 1)])
    cap = np.pi * (1.5 * 0.5 * np.hypot(size, size)) ** 2  # the scene's cap, in pixels
    exposures = make_bgmatch_exposures(
        n, shape=(size, size), order=2, amplitude=AMPLITUDE, levels=levels, noise=NOISE,
        n_stars=round(STAR_DENSITY * cap), n_diffuse=N_DIFFUSE, diffuse_amplitude=5.0,
        seed=seed,
    )  # fmt: skip
    np.save(directory / "coefficients.npy", exposures.coefficients)
    constants = []
    for k, model in enumerate(exposures.models):
        tree, const = {}, {}
        for key, value in model.instance.items():
            if not isinstance(value, np.ndarray):
                tree[key] = value
            elif key != "data" and value.size and np.all(value == value.flat[0]):
                const[key] = [value.dtype.str, value.flat[0].item()]
            else:
                np.save(directory / f"{key}_{k}.npy", value)
        asdf.AsdfFile({"model": tree}).write_to(directory / f"meta_{k}.asdf")
        constants.append(const)
    done.write_text(json.dumps({"shape": [size, size], "constants": constants}))
    return directory


def load_models(directory):
    """Rebuild the cached exposures as ``ImageModel`` objects (exposure 0 first)."""
    import asdf
    from stdatamodels.jwst.datamodels import ImageModel

    info = json.loads((directory / "arrays.json").read_text())
    shape = tuple(info["shape"])
    models = []
    for k, const in enumerate(info["constants"]):
        with asdf.open(directory / f"meta_{k}.asdf", lazy_load=False) as af:
            model = ImageModel(copy.deepcopy(af.tree["model"]))
        for path in sorted(directory.glob(f"*_{k}.npy")):
            setattr(model, path.name[: -len(f"_{k}.npy")], np.load(path))
        for key, (dtype, value) in const.items():
            setattr(model, key, np.full(shape, value, dtype=np.dtype(dtype)))
        models.append(model)
    return models


def load_data(directory):
    """The cached data arrays (float32), exposure 0 first."""
    n = len(json.loads((directory / "arrays.json").read_text())["constants"])
    return [np.load(directory / f"data_{k}.npy") for k in range(n)]


def background_surface(c, shape):
    r"""
    Background of one exposure on its pixel grid from its six coefficients.

    :math:`B = c_0 + c_1 u + c_2 v + c_3 u^2 + c_4 uv + c_5 v^2` with :math:`u, v` the
    pixel coordinates scaled to :math:`[-1, 1]` between the first and last pixel centres
    (the convention of ``stmatch.datasets.make_bgmatch_exposures``).
    """
    ny, nx = shape
    u = ((2.0 * np.arange(nx) - (nx - 1)) / max(nx - 1, 1))[None, :]
    v = ((2.0 * np.arange(ny) - (ny - 1)) / max(ny - 1, 1))[:, None]
    return c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * u * v + c[5] * v * v


def true_offset(coefficients, ref, k, shape):
    """The model that matches exposure ``k`` to ``ref`` on a shared grid: B_ref - B_k."""
    return background_surface(coefficients[ref] - coefficients[k], shape)


def rms_errors(fitted, coefficients, ref, indices, shape):
    """RMS of (fitted model - true offset) per exposure (``fitted[i]``: a 2-D array)."""
    out = []
    for model, k in zip(fitted, indices, strict=True):
        d = np.asarray(model, dtype=np.float64) - true_offset(coefficients, ref, k, shape)
        out.append(float(np.sqrt(np.mean(d * d))))
    return out


# --------------------------------------------------------------------------- worker


def _step_call(tool, directory):
    """Return ``(call, finish)``: the timed step run and what computes its errors after."""
    from jwst.datamodels import ModelLibrary

    from stmatch.steps import BackgroundMatchStep

    models = load_models(directory)
    inputs = ModelLibrary(models) if "library" in tool else models
    step = BackgroundMatchStep(**STEP_PARAMS[tool])
    shape = models[0].data.shape

    def finish(result, coefficients):
        products = step.background_models
        ref = [i for i, p in enumerate(products) if p.meta.bgmatch.is_reference]
        ref = ref[0] if ref else -1
        others = [i for i in range(len(products)) if i != ref]
        fitted = (products[i].evaluate_image(shape) for i in others)
        status = [str(p.meta.bgmatch.status) for p in products]
        flagged = sum(bool(p.meta.bgmatch.flagged) for p in products)
        return {
            "reference": ref,
            "n": len(others),
            "complete": status.count("COMPLETE"),
            "flagged": flagged,
            "errors": rms_errors(fitted, coefficients, ref, others, shape),
        }

    return (lambda: step.run(inputs)), finish


def _core_call(tool, directory):
    """Return ``(call, finish)`` for the numerical core on precomputed differences."""
    from stmatch.algorithms.bgmatch_fit import fit_background
    from stmatch.algorithms.bgmatch_grid import bin_difference

    data = load_data(directory)
    ref = 0
    diffs = [np.subtract(data[ref], d, dtype=np.float32) for d in data[1:]]
    del data
    shape = diffs[0].shape
    params = CORE_PARAMS[tool]

    def call():
        fits = []
        for diff in diffs:
            grid = bin_difference(diff, bin_size=BIN)  # MEANCLIP, 3 sigma, 3 passes
            fit = fit_background(grid, **params)
            fit.evaluate_image(shape, dtype=np.float32)
            fits.append(fit)
        return fits

    def finish(fits, coefficients):
        fitted = (f.evaluate_image(shape) for f in fits)
        indices = list(range(1, len(fits) + 1))
        return {
            "reference": ref,
            "n": len(fits),
            "errors": rms_errors(fitted, coefficients, ref, indices, shape),
        }

    return call, finish


def _background2d_call(tool, directory):
    """Return ``(call, finish)`` for photutils Background2D on each difference."""
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MeanBackground

    data = load_data(directory)
    ref, science = data[0], data[1:]
    shape = ref.shape
    options = PEERS[tool]

    def call():
        for sci in science:  # like the step, each exposure is matched in place
            bkg = Background2D(
                ref - sci, BIN, sigma_clip=SigmaClip(sigma=3.0, maxiters=3),
                bkg_estimator=MeanBackground(), **options,
            )  # fmt: skip
            sci += bkg.background  # float32, like the data
        return science

    def finish(matched, coefficients):
        original = load_data(directory)[1:]
        pairs = zip(matched, original, strict=True)
        fitted = (np.subtract(m, o, dtype=np.float64) for m, o in pairs)
        indices = list(range(1, len(science) + 1))
        return {
            "reference": 0,
            "n": len(science),
            "errors": rms_errors(fitted, coefficients, 0, indices, shape),
        }

    return call, finish


def worker(spec):
    """
    Run one measurement and print ``RESULT <json>``.

    Parameters
    ----------
    spec : dict
        ``tool``, ``cache`` (directory of the generated exposures), ``trace``
        (tracemalloc) and ``profile`` (cProfile top 20 to standard error).
    """
    tool, directory = spec["tool"], Path(spec["cache"])
    if tool.startswith("step_"):
        call, finish = _step_call(tool, directory)
    elif tool.startswith("core_"):
        call, finish = _core_call(tool, directory)
    else:
        call, finish = _background2d_call(tool, directory)
    coefficients = np.load(directory / "coefficients.npy")
    quiet_logging()
    load = os.getloadavg()[0]
    try:
        if spec.get("profile"):
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            out, stats = measure(profiler.runcall, call)
            for order in ("cumulative", "tottime"):
                pstats.Stats(profiler, stream=sys.stderr).sort_stats(order).print_stats(20)
        else:
            out, stats = measure(call, trace=spec.get("trace", False))
    except Exception as exc:  # report and exit cleanly: the table says why
        report({"error": f"failed: {type(exc).__name__}: {exc}"[:200]})
        return
    extra = finish(out, coefficients)
    errors = extra.pop("errors")
    stats.update(extra)
    stats.update(
        load=load,
        per_exp_s=stats["wall_s"] / max(extra["n"], 1),
        err_median=float(np.median(errors)),
        err_max=float(np.max(errors)),
    )
    report(stats)


# --------------------------------------------------------------------------- parent


def run_tool(tool, args, cache):
    """Run one tool ``repeat`` times in fresh processes; return its row."""
    spec = {"tool": tool, "cache": str(cache), "trace": args.tracemalloc}
    runs = []
    for i in range(args.repeat):
        print(f"  running {tool} ({i + 1}/{args.repeat}) ...", flush=True)
        r = run_isolated(__file__, "--worker", spec)
        runs.append(r)
        if "error" in r:
            return {"label": tool, **r}
    per = [r["per_exp_s"] for r in runs]
    row = {
        **runs[0],
        "label": tool,
        "runs": len(runs),
        "per_exp_s": statistics.median(per),
        "per_min": min(per),
        "per_max": max(per),
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "peak_mib": max(r["peak_mib"] for r in runs),
        "load": max(r["load"] for r in runs),
    }
    if args.tracemalloc:
        row["tracemalloc_peak_mib"] = max(r["tracemalloc_peak_mib"] for r in runs)
    return row


def _note(row):
    notes = []
    if row.get("complete") is not None and row["complete"] != row["n"] + 1:
        notes.append(f"{row['n'] + 1 - row['complete']} not COMPLETE")
    if row.get("flagged"):
        notes.append(f"{row['flagged']} flagged")
    if row.get("reference") not in (0, None):
        notes.append(f"reference {row['reference']}")
    return ("  " + ", ".join(notes)) if notes else ""


def print_table(title, rows, trace=False):
    """Print the table (rows: dicts from `run_tool`)."""
    cols = [
        ("runs", "runs", "d"),
        ("per_exp_s", "s/exp", ".3f"),
        ("per_min", "min", ".3f"),
        ("per_max", "max", ".3f"),
        ("wall_s", "total [s]", ".2f"),
        ("peak_mib", "peak [MiB]", ".0f"),
        ("baseline_mib", "base [MiB]", ".0f"),
        ("load", "load", ".1f"),
        ("err_median", "rms err", ".4f"),
        ("err_max", "max rms", ".4f"),
    ]
    cols += [("tracemalloc_peak_mib", "tracemalloc [MiB]", ".0f")] if trace else []
    _measure.print_table(title, rows, cols, label_width=24, min_width=7, note=_note)


def ratio_line(ours, peer):
    """Return the ours/peer ratios of time per exposure, peak memory and error."""
    if "error" in ours or "error" in peer:
        return f"{ours['label']} vs {peer['label']}: n/a ({peer.get('error', ours.get('error'))})"
    t = ours["per_exp_s"] / peer["per_exp_s"]
    m = ours["peak_mib"] / peer["peak_mib"] if peer["peak_mib"] > 0 else float("nan")
    e = ours["err_median"] / peer["err_median"] if peer["err_median"] > 0 else float("nan")
    return (
        f"{ours['label']}/{peer['label']}: time {t:.3f} ({1 / t:.1f}x "
        f"{'faster' if t < 1 else 'slower'}), peak memory {m:.2f}, rms error {e:.2f}"
    )


def targets(rows, size):
    """Return the summary lines with the targets, met or not."""

    def met(ok):
        return "MET" if ok else "NOT MET"

    checked = size == SIZE
    why = "" if checked else f" (the targets refer to {SIZE}^2: not checked)"
    lines = []
    ours = [rows[t] for t in OURS_STEP if t in rows and "error" not in rows[t]]
    if ours:
        times = ", ".join(
            f"{r['label']} {r['per_exp_s']:.3f} s ({r['per_min']:.3f}-{r['per_max']:.3f})"
            for r in ours
        )
        ok = [r["label"] for r in ours if r["per_exp_s"] < LIMIT]
        verdict = f": {met(len(ok) == len(ours))}" if checked else why
        if checked and ok and len(ok) < len(ours):
            verdict += f" (met by {', '.join(ok)} only)"
        lines.append(f"under {LIMIT} s per exposure on a shared grid: {times}{verdict}")
    for name in PEERS:
        peer = rows.get(name)
        if not ours or peer is None:
            continue
        head = f"at least {SPEEDUP:.0f}x faster than {name} at equal accuracy"
        if "error" in peer:
            lines.append(f"{head}: n/a ({peer['error']})")
            continue
        parts, oks = [], []
        for r in ours:
            x = peer["per_exp_s"] / r["per_exp_s"]
            acc = r["err_median"] <= EQUAL * peer["err_median"]
            oks.append(x >= SPEEDUP and acc)
            parts.append(
                f"{r['label']} {x:.1f}x, rms error {r['err_median']:.4f} vs "
                f"{peer['err_median']:.4f}" + ("" if acc else " (less accurate)")
            )
        verdict = f": {met(all(oks))}" if checked else why
        lines.append(
            f"{head} (rms error at most {EQUAL}x the peer's): " + "; ".join(parts) + verdict
        )
    return lines


def versions():
    """Return a line with the versions of Python and the packages involved."""
    return package_versions(
        "stmatch", "numpy", "scipy", "astropy", "photutils", "jwst", "stdatamodels"
    )


def main(argv=None):
    """Run the benchmark (or, with ``--worker``, one measurement) for ``argv``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="3 exposures of 2048^2, one run (smoke test)"
    )
    parser.add_argument("--tools", help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--size", type=int, help=f"image side (default {SIZE}; quick 2048)")
    parser.add_argument(
        "--exposures",
        type=int,
        help=f"exposures matched to the reference (default {N_EXPOSURES}; quick 3)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="fresh processes per row (the median time is shown; default 3, quick 1)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only print a cProfile top 20 of step_akima (or the first of --tools)",
    )
    add_worker_arguments(
        parser, tracemalloc_help="also report tracemalloc peaks (times are then not meaningful)"
    )
    args = parser.parse_args(argv)
    set_blas_threads(args.blas_threads)  # inherited by the worker processes
    if args.worker:
        return worker(json.loads(args.worker))
    size = args.size or (2048 if args.quick else SIZE)
    n_exp = args.exposures or (3 if args.quick else N_EXPOSURES)
    args.repeat = args.repeat or (1 if args.quick else 3)
    tools = [t.strip() for t in args.tools.split(",")] if args.tools else list(TOOLS)
    unknown = set(tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools {sorted(unknown)}; choose from {','.join(TOOLS)}")
    if size < 2 * BIN:
        parser.error(f"--size must be at least {2 * BIN} (bins of {BIN} px)")

    cache = ensure_cache(size, n_exp)
    if args.profile:
        tool = tools[0] if args.tools else "step_akima"
        print(f"cProfile of {tool} on {n_exp} exposures of {size}^2 (standard error)", flush=True)
        r = {"label": f"{tool} (cProfile)"}
        r.update(run_isolated(__file__, "--worker", {"tool": tool, "cache": str(cache),
                                                     "profile": True}))  # fmt: skip
        if "error" not in r:
            r.update(runs=1, per_min=r["per_exp_s"], per_max=r["per_exp_s"])
        return print_table("Under cProfile (times inflated)", [r])

    print(versions())
    print(
        f"{os.cpu_count()} cores, {'quick' if args.quick else 'full'} run, {args.repeat} "
        f"run(s) per row, BLAS threads: {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    rows = {t: run_tool(t, args, cache) for t in tools}
    print_table(
        f"{n_exp} exposures of {size}x{size} matched to one reference on a shared grid "
        f"(bins/boxes of {BIN} px); s/exp: total / {n_exp}, median of the runs (min, max); "
        "rms err: median over the exposures of the RMS of (model - true offset), "
        f"noise sigma {NOISE} per image",
        list(rows.values()),
        args.tracemalloc,
    )
    for peer in PEERS:
        for mine in (*STEP_PARAMS, *CORE_PARAMS):
            if mine in rows and peer in rows:
                print("  " + ratio_line(rows[mine], rows[peer]))
    for core, step in (("core_akima", "step_akima"), ("core_poly2", "step_poly2")):
        if "error" not in rows.get(core, {"error": 1}) | rows.get(step, {"error": 1}):
            share = rows[core]["per_exp_s"] / rows[step]["per_exp_s"]
            print(
                f"  {core}/{step}: the numerical core is {100 * share:.0f} % of the step's "
                f"time per exposure ({rows[step]['per_exp_s'] - rows[core]['per_exp_s']:.3f} s "
                "of step overhead)"
            )
    print(f"\nSummary (load average at the end: {os.getloadavg()[0]:.2f})")
    for line in targets(rows, size):
        print("  " + line)


if __name__ == "__main__":
    main()

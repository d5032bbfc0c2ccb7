"""Benchmark stmatch's ZOGY against properimage 0.7.2 and a plain numpy/scipy ZOGY.

Usage: ``python benchmarks/bench_zogy.py [--quick] [--cases 2048,4096] [--tools LIST]
[--repeat N] [--timeout S] [--skip-properimage-4096] [--tracemalloc] [--blas-threads N]``;
see ``benchmarks/README.md``.

For each image size, every tool computes the difference image D and the corrected score
S_corr of one synthetic pair (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27, eqs. 13-15 and
25-33):

* ``zogy``: ``stmatch.algorithms.zogy.zogy`` on the whole image (all its outputs);
* ``zogy_tiled``: ``stmatch.algorithms.zogy_tiled.zogy_tiled`` with inner tiles of
  1024 px (``outputs=("d", "s_corr")``);
* ``reference``: `reference_zogy` below, the textbook equations with complex float64
  FFTs (``scipy.fft``, all cores) of the unpadded, periodic images and a constant
  variance;
* ``properimage`` and ``properimage_nofit``: ``properimage.operations.subtract`` with
  one Gaussian PSF, no shift fit, with and without its flux-ratio fit (`PROPERIMAGE`);
  it cannot take known PSFs and estimates them itself from the stars of each image.

Each (tool, size) runs in a fresh process (this script with ``--worker``) that builds the
inputs, then times only the subtraction and measures the peak RSS above the RSS just
before it (``_measure.py``). The workers save D and S_corr so that the parent can compare
the tools on the interior of the image.
"""

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _measure  # noqa: E402
from _measure import (  # noqa: E402
    add_worker_arguments,
    measure,
    package_versions,
    report,
    set_blas_threads,
)

SIGMA_NEW, SIGMA_REF = 1.0, 0.5  # background noise of the new and reference images
FWHM_NEW, FWHM_REF = 3.0, 2.2  # Gaussian PSFs, pixels
STAMP = 31  # PSF stamp size
AREA_PER_STAR = 2000  # pixels^2
TILE = 1024  # inner tile size of zogy_tiled
SEED = 20261121
MARGIN = 100  # pixels left out at every edge for the cross-checks
GB = 1e9 / 1024**2  # 1.5 GB target in MiB: 1.5 * GB
#: properimage.operations.subtract options: with the flux-ratio fit (``beta=True``), the
#: cheapest configuration that gives a correct D (its fitted Gaussian PSFs are not
#: normalised to unit sum and the fit absorbs that), and without it (the least work).
PROPERIMAGE = {
    "properimage": {
        "align": False,
        "beta": True,
        "shift": False,
        "iterative": False,
        "fitted_psf": True,
    },
    "properimage_nofit": {
        "align": False,
        "beta": False,
        "shift": False,
        "iterative": False,
        "fitted_psf": True,
    },
}
TOOLS = ("zogy", "zogy_tiled", "reference", *PROPERIMAGE)


# --------------------------------------------------------------------------- inputs


def make_pair(size, seed=SEED):
    """
    Build a synthetic new/reference pair of ``size`` x ``size`` float32 images.

    Stars (one per `AREA_PER_STAR` pixels, fluxes log-uniform in 300-30,000, the same
    in both images: flux ratio 1) at random sub-pixel positions are pixel-integrated
    Gaussians of FWHM 3.0 px (new) and 2.2 px (reference) in stamps of 31 px; 20
    transients of flux 3,000 appear in the new image only. Gaussian noise of
    standard deviation `SIGMA_NEW` (new) and `SIGMA_REF` (reference), no background.

    Parameters
    ----------
    size : int
        Image side in pixels.
    seed : int
        Random seed.

    Returns
    -------
    new, ref : numpy.ndarray
        Float32 images.
    psf_new, psf_ref : numpy.ndarray
        Centred float64 PSF stamps of `STAMP` pixels.
    """
    from stmatch.algorithms.psf import gaussian_psf

    rng = np.random.default_rng(seed)
    h = STAMP // 2
    big = size + 2 * h  # stamps are added to an image with a border, then cropped
    new = np.zeros((big, big))
    ref = np.zeros((big, big))
    n_star = round(size * size / AREA_PER_STAR)
    n_trans = 20
    pos = rng.uniform(0, size, (n_star + n_trans, 2))
    flux = 10 ** rng.uniform(np.log10(300), np.log10(3e4), n_star)
    for k, (y, x) in enumerate(pos):
        iy, ix = int(round(y)), int(round(x))
        centre = (h + y - iy, h + x - ix)
        box = (slice(iy, iy + STAMP), slice(ix, ix + STAMP))
        if k < n_star:
            new[box] += flux[k] * gaussian_psf(STAMP, FWHM_NEW, center=centre)
            ref[box] += flux[k] * gaussian_psf(STAMP, FWHM_REF, center=centre)
        else:
            new[box] += 3000.0 * gaussian_psf(STAMP, FWHM_NEW, center=centre)
    crop = (slice(h, h + size), slice(h, h + size))
    new = (new[crop] + rng.normal(0.0, SIGMA_NEW, (size, size))).astype(np.float32)
    ref = (ref[crop] + rng.normal(0.0, SIGMA_REF, (size, size))).astype(np.float32)
    return new, ref, gaussian_psf(STAMP, FWHM_NEW), gaussian_psf(STAMP, FWHM_REF)


# --------------------------------------------------------------------------- reference


def reference_zogy(new, ref, psf_new, psf_ref, sigma_new, sigma_ref, f_new=1.0, f_ref=1.0):
    r"""
    Textbook ZOGY: D (eqs. 13-15), S (eqs. 12, 16-17) and S_corr (eqs. 25-33).

    Complex float64 FFTs of the unpadded images (convolutions are circular), no
    numerical guards, constant variance and no astrometric term, so that
    :math:`V(S_N) + V(S_R) = \sigma_n^2 \sum k_n^2 + \sigma_r^2 \sum k_r^2` is a
    number (sums by Parseval: :math:`\sum k^2 = \sum |\hat k|^2 / N_\mathrm{pix}`).

    Parameters
    ----------
    new, ref : numpy.ndarray
        Images.
    psf_new, psf_ref : numpy.ndarray
        Odd, centred, unit-sum PSF stamps.
    sigma_new, sigma_ref : float
        Background noise.
    f_new, f_ref : float
        Flux zero points :math:`F_n, F_r`.

    Returns
    -------
    d, s, s_corr : numpy.ndarray
        Float64 images.
    """
    from scipy import fft

    def fft2(a):
        return fft.fft2(a, workers=-1)

    def ifft2(a):
        return fft.ifft2(a, workers=-1)

    def at_origin(stamp):  # centre pixel of the stamp at (0, 0), wrapped
        out = np.zeros(new.shape)
        h, w = stamp.shape
        out[:h, :w] = stamp
        return np.roll(out, (-(h // 2), -(w // 2)), axis=(0, 1))

    n_hat = fft2(np.asarray(new, dtype=np.float64))
    r_hat = fft2(np.asarray(ref, dtype=np.float64))
    pn_hat = fft2(at_origin(psf_new))
    pr_hat = fft2(at_origin(psf_ref))
    den = (
        sigma_new**2 * f_ref**2 * np.abs(pr_hat) ** 2
        + sigma_ref**2 * f_new**2 * np.abs(pn_hat) ** 2
    )
    d_hat = (f_ref * pr_hat * n_hat - f_new * pn_hat * r_hat) / np.sqrt(den)  # eq. 13
    f_d = f_ref * f_new / np.sqrt(sigma_new**2 * f_ref**2 + sigma_ref**2 * f_new**2)  # eq. 15
    pd_hat = f_ref * f_new * pr_hat * pn_hat / (f_d * np.sqrt(den))  # eq. 14
    s_hat = f_d * d_hat * np.conj(pd_hat)  # eq. 17
    kn_hat = f_new * f_ref**2 * np.conj(pn_hat) * np.abs(pr_hat) ** 2 / den  # eq. 28
    kr_hat = f_ref * f_new**2 * np.conj(pr_hat) * np.abs(pn_hat) ** 2 / den  # eq. 29
    npix = new.size
    var_s = (
        sigma_new**2 * np.sum(np.abs(kn_hat) ** 2) + sigma_ref**2 * np.sum(np.abs(kr_hat) ** 2)
    ) / npix  # eqs. 26-27
    d = ifft2(d_hat).real
    s = ifft2(s_hat).real
    return d, s, s / np.sqrt(var_s)  # eq. 25


# --------------------------------------------------------------------------- worker


def _run_tool(tool, new, ref, psf_new, psf_ref):
    """Return a no-argument callable computing ``(D, S_corr, note)`` with ``tool``."""
    if tool == "zogy":
        from stmatch.algorithms.zogy import zogy

        def call():
            r = zogy(new, ref, psf_new, psf_ref, sigma_new=SIGMA_NEW, sigma_ref=SIGMA_REF)
            return r.d, r.s_corr, r

    elif tool == "zogy_tiled":
        from stmatch.algorithms.zogy_tiled import zogy_tiled

        def call():
            r = zogy_tiled(
                new,
                ref,
                psf_new,
                psf_ref,
                tile_size=TILE,
                sigma_new=SIGMA_NEW,
                sigma_ref=SIGMA_REF,
                outputs=("d", "s_corr"),
            )
            return r.d, r.s_corr, r

    elif tool == "reference":

        def call():
            d, s, s_corr = reference_zogy(new, ref, psf_new, psf_ref, SIGMA_NEW, SIGMA_REF)
            return d, s_corr, s

    elif tool in PROPERIMAGE:
        from properimage.operations import subtract

        options = PROPERIMAGE[tool]

        def call():
            # subtract(ref, new): D of new - ref, like ours. It takes the images only:
            # PSFs (one Gaussian per image), noise and zero points are estimated from them.
            d, p, s_corr, mask = subtract(ref=ref, new=new, **options)
            return d.real, s_corr, (p, mask)

    else:
        raise ValueError(f"unknown tool {tool!r}")
    return call


def worker(spec):
    """
    Run one (tool, size) measurement, save D and S_corr, and print ``RESULT <json>``.

    Parameters
    ----------
    spec : dict
        ``tool``, ``size``, ``trace`` (tracemalloc) and ``save`` (a directory or None).
    """
    new, ref, psf_new, psf_ref = make_pair(spec["size"])
    call = _run_tool(spec["tool"], new, ref, psf_new, psf_ref)  # imports before the baseline
    for name in ("stmatch", "properimage", "astropy"):  # after the imports (astropy's logger)
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        (d, s_corr, _), stats = measure(call, trace=spec.get("trace", False))
    except Exception as exc:  # report and exit cleanly: the table says why
        report({"error": f"failed: {type(exc).__name__}: {exc}"[:200]})
        return
    finally:
        if spec["tool"] in PROPERIMAGE:
            from properimage.single_image import TEMP_DIR

            shutil.rmtree(TEMP_DIR, ignore_errors=True)
    if spec.get("save"):
        base = Path(spec["save"]) / f"{spec['tool']}_{spec['size']}"
        np.save(f"{base}_d.npy", np.asarray(d))  # as returned (float32 or float64)
        np.save(f"{base}_scorr.npy", np.asarray(s_corr))
    stats["finite"] = bool(np.isfinite(d).all() and np.isfinite(s_corr).all())
    report(stats)


# --------------------------------------------------------------------------- parent


def run_case(spec, timeout, tmpdir):
    """
    Run `worker` for ``spec`` in a fresh process with a time limit.

    The worker's temporary files (properimage writes some) go under ``tmpdir``
    (``TMPDIR``), so that they are removed even when it is killed.

    Returns
    -------
    dict
        The worker's statistics, or ``{"error": "timeout (...)"}`` /
        ``{"error": "failed: ..."}``.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            text=True,
            timeout=timeout,
            env={**os.environ, "TMPDIR": str(tmpdir)},
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout (> {timeout:.0f} s)"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if lines:
        return json.loads(lines[-1][len("RESULT ") :])
    rc = proc.returncode
    if rc < 0:
        why = f"killed by signal {-rc}" + (" (out of memory?)" if rc == -9 else "")
    else:
        why = f"exit code {rc}"
    return {"error": f"failed: {why}"}


def run_tool(tool, size, args, save):
    """Run one tool at one size ``repeat`` times (properimage once); return its row."""
    n = 1 if tool in PROPERIMAGE else args.repeat
    spec = {"tool": tool, "size": size, "trace": args.tracemalloc}
    runs = []
    for i in range(n):
        print(f"  running {tool} {size}^2 ({i + 1}/{n}) ...", flush=True)
        r = run_case({**spec, "save": save if i == 0 else None}, args.timeout, save)
        runs.append(r)
        if "error" in r:
            return {"label": tool, **r}
    walls = [r["wall_s"] for r in runs]
    row = {
        **runs[0],
        "label": tool,
        "n": n,
        "wall_s": statistics.median(walls),
        "wall_min": min(walls),
        "wall_max": max(walls),
        "peak_mib": max(r["peak_mib"] for r in runs),
    }
    if args.tracemalloc:
        row["tracemalloc_peak_mib"] = max(r["tracemalloc_peak_mib"] for r in runs)
    return row


def cross_check(size, save, rows):
    """
    Compare the saved D and S_corr of the tools with those of ``zogy``.

    Returns
    -------
    list of str
        One line per comparison.
    """
    sl = (slice(MARGIN, size - MARGIN),) * 2

    def load(tool, what):
        path = Path(save) / f"{tool}_{size}_{what}.npy"
        return np.load(path)[sl].astype(np.float64) if path.exists() else None

    ours = {w: load("zogy", w) for w in ("d", "scorr")}
    if ours["d"] is None:
        return ["  (no zogy output to compare with)"]
    out = [f"  cross-check vs zogy on the interior ({MARGIN} px from the edges):"]
    for tool in ("zogy_tiled", "reference"):
        if tool not in rows or "error" in rows[tool]:
            continue
        parts = []
        for w, name in (("d", "D"), ("scorr", "S_corr")):
            other = load(tool, w)
            diff = np.max(np.abs(ours[w] - other))
            parts.append(
                f"max|{name}_zogy - {name}_{tool}| = {diff:.2e} "
                f"({diff / np.max(np.abs(other)):.1e} of max|{name}|)"
            )
        out.append(f"    {tool}: " + "; ".join(parts))
    for tool in PROPERIMAGE:
        if tool not in rows or "error" in rows[tool]:
            continue
        parts = []
        for w, name in (("d", "D"), ("scorr", "S_corr")):
            other = load(tool, w)
            r0 = np.corrcoef(ours[w].ravel(), other.ravel())[0, 1]
            best = _best_shift(ours[w], other)
            parts.append(
                f"corr({name}) = {r0:.4f} (central {best[2]}^2: best {best[0]:.4f} "
                f"at shift {best[1]})"
            )
        out.append(f"    {tool} (own PSF, noise and zero-point estimates): " + "; ".join(parts))
    return out


def _best_shift(a, b, max_shift=2, box=512):
    """
    Largest correlation of the central ``box`` px of ``a`` with ``b`` shifted by <= 2 px.

    Returns
    -------
    tuple
        ``(correlation, (dy, dx), box side)``.
    """
    cy, cx = a.shape[0] // 2, a.shape[1] // 2
    h = min(box // 2, cy - max_shift, cx - max_shift)
    core = a[cy - h : cy + h, cx - h : cx + h].ravel()
    best = (-2.0, (0, 0))
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            other = b[cy - h + dy : cy + h + dy, cx - h + dx : cx + h + dx].ravel()
            best = max(best, (float(np.corrcoef(core, other)[0, 1]), (dy, dx)))
    return (*best, 2 * h)


def print_table(title, rows, trace=False):
    """Print one size's table (rows: dicts from `run_tool`)."""
    cols = [
        ("n", "runs", "d"),
        ("wall_s", "wall [s]", ".2f"),
        ("wall_min", "min [s]", ".2f"),
        ("wall_max", "max [s]", ".2f"),
        ("peak_mib", "peak [MiB]", ".0f"),
        ("baseline_mib", "base [MiB]", ".0f"),
    ]
    cols += [("tracemalloc_peak_mib", "tracemalloc [MiB]", ".0f")] if trace else []
    _measure.print_table(
        title,
        rows,
        cols,
        note=lambda r: "" if r.get("finite", True) else "  (non-finite values in D or S_corr)",
    )


def ratio_line(ours, peer):
    """Return the ours/peer ratios of wall time and peak memory of two rows."""
    if "error" in ours or "error" in peer:
        return f"{ours['label']} vs {peer['label']}: n/a ({peer.get('error', ours.get('error'))})"
    t = ours["wall_s"] / peer["wall_s"]
    m = ours["peak_mib"] / peer["peak_mib"] if peer["peak_mib"] > 0 else float("nan")
    return (
        f"{ours['label']}/{peer['label']}: time {t:.3f} ({1 / t:.1f}x "
        f"{'faster' if t < 1 else 'slower'}), peak memory {m:.2f}"
    )


def _met(ok):
    return "MET" if ok else "NOT MET"


def targets(results, sizes):
    """Return the summary lines with the targets, met or not."""
    lines = []
    limits = {2048: 1.0, 4096: 4.0}
    for size in sizes:
        rows = results[size]
        ours = [rows[t] for t in ("zogy", "zogy_tiled") if t in rows and "error" not in rows[t]]
        if size in limits:
            times = ", ".join(f"{r['label']} {r['wall_s']:.2f} s" for r in ours) or "no run"
            ok = [r["label"] for r in ours if r["wall_s"] < limits[size]]
            lines.append(
                f"{size}^2 in under {limits[size]:.0f} s on {os.cpu_count()} cores: "
                f"{times}: {_met(bool(ok))}" + (f" ({', '.join(ok)})" if ok else "")
            )
        for peer in PROPERIMAGE:
            pi = rows.get(peer)
            if pi is None or not ours:
                continue
            head = f"{size}^2 at least 20x faster than {peer}:"
            if "error" in pi:
                lines.append(f"{head} not measured ({pi['error']})")
                continue
            xs = [(pi["wall_s"] / r["wall_s"], r["label"]) for r in ours]
            lines.append(
                f"{head} "
                + ", ".join(f"{lab} {x:.1f}x" for x, lab in xs)
                + f": {_met(max(xs)[0] >= 20)}"
            )
    big = results.get(4096, {}).get("zogy_tiled")
    if big is not None:
        if "error" in big:
            lines.append(
                f"4096^2 peak memory with tiling under 1.5 GB: not measured ({big['error']})"
            )
        else:
            lines.append(
                f"4096^2 peak memory with tiling (zogy_tiled, tile {TILE}) under 1.5 GB "
                f"(= {1.5 * GB:.0f} MiB): {big['peak_mib']:.0f} MiB above the inputs: "
                f"{_met(big['peak_mib'] < 1.5 * GB)}"
            )
    return lines


def versions():
    """Return a line with the versions of Python and the packages involved."""
    return package_versions(
        "stmatch", "numpy", "scipy", "properimage", "pyFFTW", "sep", "astroscrappy"
    )


def main(argv=None):
    """Run the benchmark (or, with ``--worker``, one measurement) for ``argv``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256^2 and 512^2 (smoke test)")
    parser.add_argument("--cases", help="comma-separated image sizes (default 2048,4096)")
    parser.add_argument(
        "--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="fresh processes per row for all tools but properimage "
        "(the median time is shown; default 3)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds allowed to each worker process (default 600)",
    )
    parser.add_argument(
        "--skip-properimage-4096", action="store_true", help="do not run properimage on 4096^2"
    )
    add_worker_arguments(
        parser, tracemalloc_help="also report tracemalloc peaks (times are then not meaningful)"
    )
    args = parser.parse_args(argv)
    set_blas_threads(args.blas_threads)  # inherited by the worker processes
    if args.worker:
        return worker(json.loads(args.worker))
    sizes = [int(s) for s in (args.cases or ("256,512" if args.quick else "2048,4096")).split(",")]
    tools = [t.strip() for t in args.tools.split(",")]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools {sorted(unknown)}; choose from {','.join(TOOLS)}")
    try:
        import stmatch.algorithms.zogy_tiled  # noqa: F401
    except ImportError as exc:
        print(f"zogy_tiled not importable ({exc}): its rows are skipped", flush=True)
        tools = [t for t in tools if t != "zogy_tiled"]

    print(versions())
    print(
        f"{os.cpu_count()} cores, {'quick' if args.quick else 'full'} run, BLAS threads: "
        f"{os.environ.get('OPENBLAS_NUM_THREADS', 'default')}, load average "
        f"{os.getloadavg()[0]:.2f}",
        flush=True,
    )
    save = tempfile.mkdtemp(prefix="bench_zogy_")
    results, checks = {}, {}
    try:
        for size in sizes:
            rows = {}
            for tool in tools:
                if tool in PROPERIMAGE and size == 4096 and args.skip_properimage_4096:
                    rows[tool] = {"label": tool, "error": "skipped (--skip-properimage-4096)"}
                    continue
                rows[tool] = run_tool(tool, size, args, save)
            results[size] = rows
            print_table(
                f"{size}x{size}: D + S_corr, one new/reference pair "
                f"({round(size * size / AREA_PER_STAR)} stars); wall: median of the runs",
                list(rows.values()),
                args.tracemalloc,
            )
            for mine in ("zogy", "zogy_tiled"):
                for peer in ("reference", *PROPERIMAGE):
                    if mine in rows and peer in rows:
                        print("  " + ratio_line(rows[mine], rows[peer]))
            if "zogy" in rows and "zogy_tiled" in rows:
                print("  " + ratio_line(rows["zogy_tiled"], rows["zogy"]))
            checks[size] = cross_check(size, save, rows)
            for line in checks[size]:
                print(line)
            for f in Path(save).glob(f"*_{size}_*.npy"):
                f.unlink()
            sys.stdout.flush()
    finally:
        shutil.rmtree(save, ignore_errors=True)
    if set(PROPERIMAGE) & set(tools):
        print(
            "\nproperimage: operations.subtract(ref, new, align=False, shift=False, "
            "iterative=False, fitted_psf=True), beta=True ('properimage': flux-ratio fit) or "
            "beta=False ('properimage_nofit'). It cannot take known PSFs: PSF estimated by "
            "properimage (one Gaussian fitted to the stars of each image, not normalised to "
            "unit sum, so that without the flux-ratio fit D keeps star residuals), noise from "
            "its background estimate (sep), zero points from its own photometry; it also "
            "detects cosmic rays (astroscrappy) and interpolates over masked pixels."
        )
    print(f"\nSummary (load average at the end: {os.getloadavg()[0]:.2f})")
    for line in targets(results, sizes):
        print("  " + line)


if __name__ == "__main__":
    main()

"""Benchmark stmatch's PSF matching: kernel solution, its application, and the whole step.

Usage: ``python benchmarks/bench_psfmatch.py [--quick] [--sections solve,apply,step]
[--tools LIST] [--size N] [--step-size N] [--repeat N] [--tracemalloc] [--blas-threads N]``;
see ``benchmarks/README.md``.

Three sections, each row measured in fresh processes (this script with ``--worker``) that
build or load the inputs, then time only the call and measure the peak RSS above the RSS
just before it (``_measure.py``):

* ``solve``: a spatially varying Alard-Lupton kernel (Alard & Lupton 1998, ApJ 503, 325;
  Alard 2000, A&AS 144, 363) of spatial order 2 from Gaussian PSFs realised at the centres
  of 128-px cells of a ``size`` x ``size`` image (1024 cells at 4096^2), FWHM 2.0 px at the
  centre to 3.0 px at the corners, to a Gaussian target of FWHM 4.0 px:

  - ``solve_spatial_kernel``: ``stmatch.algorithms.psfmatch_kernel.solve_spatial_kernel``
    (normal equations built in Fourier space);
  - ``normal_equations_ref``: `reference_solve` below, the textbook real-space least
    squares (each basis image convolved with each cell's PSF, the normal equations
    accumulated cell by cell).

  Both use the 27-image basis the step builds (``alard_lupton_sigmas`` /
  ``alard_lupton_basis``, 21 px). The kernel quality (Aniano et al. 2011, PASP 123, 1218:
  :math:`D = \\sum |K \\ast S - T|`) is measured at every cell after the timed call.
* ``apply``: the solved kernel (6 terms) applied to a ``size`` x ``size`` float32 image of
  stars and noise:

  - ``convolve_image`` and ``convolve_image+var`` (the image, then also a variance map with
    ``convolve_variance``), from ``stmatch.algorithms.convolve_varying``;
  - ``fftconvolve_terms`` (a): `reference_convolve`, ``scipy.signal.fftconvolve(image,
    Kbar_s, mode="same")`` for each term kernel, weighted by its Chebyshev term and summed
    (the same result; scipy.fft set to all cores);
  - ``astropy_constant`` (b): ``astropy.convolution.convolve_fft`` with the kernel at the
    image centre only (a constant kernel: one convolution, less work than ours).
* ``step``: ``PsfModelMatchStep(psf=..., target_psf=...).run(model)`` on a synthetic
  exposure of ``step_size`` x ``step_size`` (``stmatch.datasets.make_psfmatch_exposure``).
"""

import argparse
import json
import logging
import os
import shutil
import statistics
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
    run_isolated,
    set_blas_threads,
)

FWHM_RANGE = (2.0, 3.0)  # exposure PSF FWHM: centre to the corners (quadratic), pixels
TARGET_FWHM = 4.0  # Gaussian target PSF, pixels
STAMP = 31  # PSF stamp size
KERNEL_SIZE = 21  # matching kernel size (the step's default)
CELL = 128  # cell size (the step's default)
ORDER = 2  # spatial order of the kernel (the step's default)
N_TERMS = (ORDER + 1) * (ORDER + 2) // 2
AREA_PER_STAR = 2000  # pixels^2
SIGMA = 1.0  # background noise of the image
SEED = 20261121
SECTIONS = {
    "solve": ("solve_spatial_kernel", "normal_equations_ref"),
    "apply": ("convolve_image", "convolve_image+var", "fftconvolve_terms", "astropy_constant"),
    "step": ("PsfModelMatchStep",),
}
OURS = ("solve_spatial_kernel", "convolve_image", "convolve_image+var", "PsfModelMatchStep")
LABELS = {"fftconvolve_terms": "fftconvolve_terms (a)", "astropy_constant": "astropy_constant (b)"}
LIMITS = {"solve": 0.5, "apply": 2.0}  # targets at 4096^2, seconds on 2 cores
FULL_SIZE = 4096  # image size the targets refer to


def quiet_logging(level=logging.ERROR):
    """Set the pipeline loggers to ``level`` (stpipe's ``Step.run`` leaves levels alone)."""
    for name in ("stpipe", "jwst", "stcal", "stmatch", "astropy"):
        logging.getLogger(name).setLevel(level)


# --------------------------------------------------------------------------- inputs


def fwhm_field(size):
    """Return the FWHM of the exposure PSF over a ``size`` x ``size`` image (callable)."""
    from stmatch.datasets import FwhmField

    return FwhmField((size, size), FWHM_RANGE, "quadratic")


def solve_inputs(size, cell=CELL):
    """
    Build the inputs of the kernel solution for a ``size`` x ``size`` image.

    Gaussian PSFs (pixel-integrated, `STAMP` px) of FWHM `fwhm_field` realised at the
    cell centres, the Gaussian target of FWHM `TARGET_FWHM`, and the Alard-Lupton basis
    built as ``PsfModelMatchStep`` builds it (widths from the FWHMs of the middle cell's
    PSF and of the target, degrees 4, 2, 2).

    Returns
    -------
    sources : numpy.ndarray
        ``(m, STAMP, STAMP)`` PSFs.
    target : numpy.ndarray
        ``(STAMP, STAMP)`` target PSF.
    cx, cy : numpy.ndarray
        ``(m,)`` cell centres.
    basis : stmatch.algorithms.psfmatch_basis.KernelBasis
        The 27-image basis.
    """
    from stmatch.algorithms.psf import gaussian_psf
    from stmatch.algorithms.psfgrid import fwhm_of
    from stmatch.algorithms.psfmatch_basis import alard_lupton_basis, alard_lupton_sigmas
    from stmatch.algorithms.psfmatch_kernel import cell_centres

    cx, cy = cell_centres((size, size), cell)
    sources = np.stack([gaussian_psf(STAMP, f) for f in fwhm_field(size)(cx, cy)])
    target = gaussian_psf(STAMP, TARGET_FWHM)
    mid = sources.shape[0] // 2
    sigmas = alard_lupton_sigmas(fwhm_source=fwhm_of(sources[mid]), fwhm_target=fwhm_of(target))
    basis = alard_lupton_basis(KERNEL_SIZE, sigmas=sigmas, degrees=(4, 2, 2))
    return sources, target, cx, cy, basis


def make_image(size, seed=SEED):
    """
    Build a ``size`` x ``size`` float32 image of stars and noise, and its variance.

    One star per `AREA_PER_STAR` pixels at random sub-pixel positions, fluxes
    log-uniform in 300-30,000, each a pixel-integrated Gaussian of the FWHM of
    `fwhm_field` at its position (stamps of `STAMP` px); white Gaussian noise of
    standard deviation `SIGMA`. The variance is ``SIGMA**2`` plus the noise-free star
    image (Poisson noise with a gain of one).

    Returns
    -------
    image, variance : numpy.ndarray
        Float32 images.
    """
    from stmatch.algorithms.psf import gaussian_psf

    rng = np.random.default_rng(seed)
    h = STAMP // 2
    big = size + 2 * h  # stamps are added to an image with a border, then cropped
    stars = np.zeros((big, big))
    n_star = round(size * size / AREA_PER_STAR)
    pos = rng.uniform(0, size, (n_star, 2))
    flux = 10 ** rng.uniform(np.log10(300), np.log10(3e4), n_star)
    fwhm = fwhm_field(size)(pos[:, 1], pos[:, 0])
    for (y, x), f, w in zip(pos, flux, fwhm, strict=True):
        iy, ix = int(round(y)), int(round(x))
        stamp = gaussian_psf(STAMP, w, center=(h + y - iy, h + x - ix))
        stars[iy : iy + STAMP, ix : ix + STAMP] += f * stamp
    stars = stars[h : h + size, h : h + size]
    image = (stars + rng.normal(0.0, SIGMA, (size, size))).astype(np.float32)
    return image, (SIGMA**2 + stars).astype(np.float32)


def prepare_apply(size, directory):
    """
    Write the inputs of the ``apply`` section under ``directory`` (not timed).

    ``image.npy`` and ``variance.npy`` from `make_image`, and ``kernel.npz`` with the
    term kernels, order and domain of the kernel solved by ``solve_spatial_kernel`` for
    `solve_inputs` of the same size.
    """
    from stmatch.algorithms.chebyshev import image_domain
    from stmatch.algorithms.psfmatch_kernel import solve_spatial_kernel

    sources, target, cx, cy, basis = solve_inputs(size)
    fit = solve_spatial_kernel(
        sources, target, cx, cy, order=ORDER, domain=image_domain((size, size)),
        kernel_size=KERNEL_SIZE, basis=basis,
    )  # fmt: skip
    k = fit.kernel
    np.savez(Path(directory) / "kernel.npz", terms=k.term_kernels, order=k.order, domain=k.domain)
    image, variance = make_image(size)
    np.save(Path(directory) / "image.npy", image)
    np.save(Path(directory) / "variance.npy", variance)


def load_apply(directory):
    """Return ``image, variance, kernel`` (a ``SpatialKernel``) written by `prepare_apply`."""
    from stmatch.algorithms.spatial_kernel import SpatialKernel

    d = Path(directory)
    with np.load(d / "kernel.npz") as z:
        kernel = SpatialKernel(z["terms"], int(z["order"]), tuple(z["domain"]))
    return np.load(d / "image.npy"), np.load(d / "variance.npy"), kernel


# --------------------------------------------------------------------------- references


def chebyshev_factors(x, y, order, domain):
    r"""
    Chebyshev factors :math:`T_i(\tilde x)` and :math:`T_j(\tilde y)` of each spatial term.

    The terms are :math:`T_i(\tilde x)\, T_j(\tilde y)` with :math:`i + j \le n`, ordered
    by total degree and, within one degree, by increasing :math:`j`; :math:`\tilde x =
    (2x - x_0 - x_1) / (x_1 - x_0)` and likewise for :math:`y` (Press et al., Numerical
    Recipes, 3rd ed., §5.8). Written with ``numpy.polynomial.chebyshev``, independently
    of stmatch.

    Parameters
    ----------
    x, y : numpy.ndarray
        1-D coordinates (any lengths).
    order : int
        Spatial order :math:`n`.
    domain : tuple of float
        ``(x0, x1, y0, y1)``.

    Returns
    -------
    list of tuple
        ``(fx, fy)`` per term: the factor at ``x`` and the factor at ``y``.
    """
    from numpy.polynomial import chebyshev

    x0, x1, y0, y1 = domain
    tx = (2.0 * np.asarray(x, dtype=np.float64) - (x0 + x1)) / (x1 - x0)
    ty = (2.0 * np.asarray(y, dtype=np.float64) - (y0 + y1)) / (y1 - y0)

    def t(n, v):
        return chebyshev.chebval(v, [0.0] * n + [1.0])

    return [(t(d - j, tx), t(j, ty)) for d in range(order + 1) for j in range(d + 1)]


def reference_solve(sources, target, cx, cy, basis, order, domain, kernel_sum=1.0):
    r"""
    Textbook real-space least squares for a spatially varying Alard-Lupton kernel.

    With the basis images :math:`B_0` (unit sum) and :math:`B_{i \ge 1}` (zero sum) and
    the spatial terms :math:`w_s(c)` at cell :math:`c`, the kernel is :math:`K_c = \kappa
    B_0 + \sum_{i \ge 1} \sum_s a_{is} w_s(c) B_i` (Alard 2000, A&AS 144, 363). Per cell,
    the full linear convolutions :math:`C_{ic} = B_i \ast S_c` (``scipy.signal.fftconvolve``
    of the basis stack with the cell's PSF) give the Gram matrix :math:`G_c = C_c C_c^T`
    and the projections :math:`r_c = C_c T`; the normal equations

    .. math::

        \sum_{j, t} \Big[\sum_c w_s w_t\, G_{c,ij}\Big] a_{jt}
        = \kappa \sum_c w_s \big(r_{c,i} - G_{c,i0}\big)

    minimise :math:`\sum_c \lVert K_c \ast S_c - \kappa T \rVert^2` and are solved with
    ``numpy.linalg.solve`` (Alard & Lupton 1998, ApJ 503, 325).

    Parameters
    ----------
    sources : numpy.ndarray
        ``(m, L, L)`` unit-sum PSFs at the cells.
    target : numpy.ndarray
        ``(L, L)`` unit-sum target PSF.
    cx, cy : numpy.ndarray
        ``(m,)`` cell centres.
    basis : KernelBasis
        Basis images (``basis.images``, ``(n, k, k)``).
    order : int
        Spatial order.
    domain : tuple of float
        Chebyshev domain.
    kernel_sum : float
        :math:`\kappa`.

    Returns
    -------
    numpy.ndarray
        ``(n_terms, k, k)`` term kernels :math:`\bar K_s = \sum_i a_{is} B_i`.
    """
    from scipy import signal

    w = np.stack([fx * fy for fx, fy in chebyshev_factors(cx, cy, order, domain)])  # (nt, m)
    b = basis.images
    n, k, _ = b.shape
    full = sources.shape[1] + k - 1
    t = np.zeros((full, full))
    o = (full - target.shape[0]) // 2
    t[o : o + target.shape[0], o : o + target.shape[1]] = target
    gram = np.empty((sources.shape[0], n, n))
    proj = np.empty((sources.shape[0], n))
    for c, s in enumerate(sources):
        conv = signal.fftconvolve(b, s[None], mode="full", axes=(1, 2)).reshape(n, -1)
        gram[c] = conv @ conv.T
        proj[c] = conv @ t.ravel()
    nt = w.shape[0]
    a = np.einsum("cij,sc,tc->isjt", gram[:, 1:, 1:], w, w).reshape((n - 1) * nt, -1)
    rhs = kernel_sum * np.einsum("ci,sc->is", proj[:, 1:] - gram[:, 1:, 0], w).ravel()
    coef = np.zeros((n, nt))
    coef[0, 0] = kernel_sum
    coef[1:] = np.linalg.solve(a, rhs).reshape(n - 1, nt)
    return np.tensordot(coef.T, b, axes=1)


def reference_convolve(image, kernel):
    r"""
    Apply a spatially varying kernel term by term with ``scipy.signal.fftconvolve``.

    :math:`O = \sum_s w_s(x, y)\, (\bar K_s \ast I)` with ``fftconvolve(image, Kbar_s,
    mode="same")`` (zero beyond the borders) and the spatial terms of
    `chebyshev_factors` formed as full-size images, accumulated in float64 (Alard 2000,
    A&AS 144, 363, §2). scipy.fft uses all cores (``scipy.fft.set_workers``).

    Parameters
    ----------
    image : numpy.ndarray
        2-D image.
    kernel : SpatialKernel
        ``term_kernels``, ``order`` and ``domain`` are used.

    Returns
    -------
    numpy.ndarray
        Float64 image.
    """
    import scipy.fft
    from scipy import signal

    ny, nx = image.shape
    factors = chebyshev_factors(np.arange(nx), np.arange(ny), kernel.order, kernel.domain)
    out = np.zeros(image.shape)
    with scipy.fft.set_workers(os.cpu_count()):
        for kbar, (fx, fy) in zip(kernel.term_kernels, factors, strict=True):
            out += np.outer(fy, fx) * signal.fftconvolve(image, kbar, mode="same")
    return out


# --------------------------------------------------------------------------- worker


def _call(tool, spec):
    """Build the inputs of ``tool`` and return ``(call, context)``; ``call()`` is timed."""
    size = spec["size"]
    if tool in SECTIONS["solve"]:
        from stmatch.algorithms.chebyshev import image_domain
        from stmatch.algorithms.psfmatch_kernel import solve_spatial_kernel

        sources, target, cx, cy, basis = solve_inputs(size)
        domain = image_domain((size, size))
        ctx = {"sources": sources, "target": target, "cx": cx, "cy": cy, "domain": domain}
        if tool == "solve_spatial_kernel":

            def call():
                fit = solve_spatial_kernel(
                    sources, target, cx, cy, order=ORDER, domain=domain,
                    method="alard_lupton", kernel_size=KERNEL_SIZE, basis=basis,
                )  # fmt: skip
                return fit.kernel.term_kernels

        else:

            def call():
                return reference_solve(sources, target, cx, cy, basis, ORDER, domain)

        return call, ctx
    if tool in SECTIONS["apply"]:
        from stmatch.algorithms.convolve_varying import convolve_image, convolve_variance

        image, variance, kernel = load_apply(spec["inputs"])
        if tool == "convolve_image":
            return (lambda: convolve_image(image, kernel).data), {}
        if tool == "convolve_image+var":
            return (
                lambda: (convolve_image(image, kernel).data, convolve_variance(variance, kernel))
            ), {}
        if tool == "fftconvolve_terms":
            return (lambda: reference_convolve(image, kernel)), {}
        from astropy.convolution import convolve_fft

        centre = kernel.kernel_at((size - 1) / 2.0, (size - 1) / 2.0)
        return (
            lambda: convolve_fft(
                image, centre, normalize_kernel=False, boundary="fill", allow_huge=True
            )
        ), {}
    if tool == "PsfModelMatchStep":
        from stmatch.datasets import make_psfmatch_exposure, write_psfmatch_exposure
        from stmatch.steps import PsfModelMatchStep

        exp = make_psfmatch_exposure(
            (size, size), fwhm_range=FWHM_RANGE, variation="quadratic",
            n_stars=round(size * size / AREA_PER_STAR), noise=SIGMA, grid=(5, 5),
            target_fwhm=TARGET_FWHM, seed=SEED,
        )  # fmt: skip
        tmp = tempfile.mkdtemp(prefix="step_", dir=spec["inputs"])
        paths = write_psfmatch_exposure(tmp, exp)
        step = PsfModelMatchStep(psf=str(paths["psf"]), target_psf=str(paths["target_psf"]))
        return (lambda: step.run(exp.model)), {"tmp": tmp}
    raise ValueError(f"unknown tool {tool!r}")


def worker(spec):
    """
    Run one (tool, size) measurement and print ``RESULT <json>``.

    Parameters
    ----------
    spec : dict
        ``tool``, ``size``, ``inputs`` (directory of the shared inputs), ``trace``
        (tracemalloc) and ``save`` (save the output there for the cross-checks; for
        ``solve`` also measure the kernel quality at the cells).
    """
    tool = spec["tool"]
    call, ctx = _call(tool, spec)  # inputs and imports before the baseline
    quiet_logging()
    load = os.getloadavg()[0]
    try:
        out, stats = measure(call, trace=spec.get("trace", False))
    except Exception as exc:  # report and exit cleanly: the table says why
        report({"error": f"failed: {type(exc).__name__}: {exc}"[:200]})
        return
    finally:
        if "tmp" in ctx:
            shutil.rmtree(ctx["tmp"], ignore_errors=True)
    stats["load"] = load
    if tool in SECTIONS["solve"]:
        stats["n_cells"] = int(ctx["cx"].size)
        if spec.get("save"):
            np.save(Path(spec["save"]) / f"{tool}.npy", out)
            stats.update(_quality(out, ctx))
    elif tool in SECTIONS["apply"]:
        data = out[0] if isinstance(out, tuple) else out
        stats["finite"] = bool(np.isfinite(data).all())
        if spec.get("save"):
            np.save(Path(spec["save"]) / f"{tool}.npy", np.asarray(data))
    else:
        rec = out.meta.stmatch.instance["steps"]["stmatch_psfmatch"]
        stats.update(n_cells=int(rec["n_cells"]), max_d=float(rec["max_aniano_d"]))
    report(stats)


def _quality(terms, ctx):
    """Largest and median Aniano D of the kernel with ``terms`` over the cells."""
    from stmatch.algorithms.psfmatch_metrics import kernel_quality
    from stmatch.algorithms.spatial_kernel import SpatialKernel

    kernels = SpatialKernel(terms, ORDER, ctx["domain"]).kernels_at(ctx["cx"], ctx["cy"])
    d = [
        kernel_quality(k, s, ctx["target"]).aniano_d
        for k, s in zip(kernels, ctx["sources"], strict=True)
    ]
    return {"max_d": float(np.max(d)), "median_d": float(np.median(d))}


# --------------------------------------------------------------------------- parent


def run_tool(tool, size, args, inputs, save):
    """Run one tool at one size ``repeat`` times in fresh processes; return its row."""
    spec = {"tool": tool, "size": size, "inputs": inputs, "trace": args.tracemalloc}
    runs = []
    for i in range(args.repeat):
        print(f"  running {tool} {size}^2 ({i + 1}/{args.repeat}) ...", flush=True)
        r = run_isolated(__file__, "--worker", {**spec, "save": save if i == 0 else None})
        runs.append(r)
        if "error" in r:
            return {"label": LABELS.get(tool, tool), "tool": tool, **r}
    walls = [r["wall_s"] for r in runs]
    row = {
        **runs[0],
        "label": LABELS.get(tool, tool),
        "tool": tool,
        "n": len(runs),
        "wall_s": statistics.median(walls),
        "wall_min": min(walls),
        "wall_max": max(walls),
        "peak_mib": max(r["peak_mib"] for r in runs),
        "load": max(r["load"] for r in runs),
    }
    if args.tracemalloc:
        row["tracemalloc_peak_mib"] = max(r["tracemalloc_peak_mib"] for r in runs)
    return row


def _note(row):
    if row["tool"] == "astropy_constant":
        return "  less work: one constant kernel (the centre's)"
    if not row.get("finite", True):
        return "  (non-finite values in the output)"
    return ""


def print_table(title, rows, section, trace=False):
    """Print one section's table (rows: dicts from `run_tool`)."""
    cols = [
        ("n", "runs", "d"),
        ("wall_s", "wall [s]", ".3f" if section == "solve" else ".2f"),
        ("wall_min", "min [s]", ".3f" if section == "solve" else ".2f"),
        ("wall_max", "max [s]", ".3f" if section == "solve" else ".2f"),
        ("peak_mib", "peak [MiB]", ".0f"),
        ("baseline_mib", "base [MiB]", ".0f"),
        ("load", "load", ".1f"),
    ]
    if section in ("solve", "step"):
        cols += [("n_cells", "cells", "d"), ("max_d", "max D", ".4f")]
    if section == "solve":
        cols += [("median_d", "median D", ".4f")]
    cols += [("tracemalloc_peak_mib", "tracemalloc [MiB]", ".0f")] if trace else []
    _measure.print_table(title, rows, cols, label_width=22, min_width=8, note=_note)


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


def cross_check(section, size, save, rows):
    """Compare the saved outputs of the peers with ours; return one line per comparison."""

    def load(tool):
        path = Path(save) / f"{tool}.npy"
        ok = tool in rows and "error" not in rows[tool] and path.exists()
        return np.load(path).astype(np.float64) if ok else None

    out = []
    if section == "solve":
        ours, ref = load("solve_spatial_kernel"), load("normal_equations_ref")
        if ours is not None and ref is not None:
            diff = np.max(np.abs(ours - ref))
            out.append(
                f"  term kernels, solve_spatial_kernel vs normal_equations_ref: max|diff| = "
                f"{diff:.2e} ({diff / np.max(np.abs(ref)):.1e} of max|Kbar|)"
            )
    elif section == "apply":
        ours = load("convolve_image")
        if ours is None:
            return ["  (no convolve_image output to compare with)"]
        h = KERNEL_SIZE // 2  # interior: the borders' fill does not matter
        sl = (slice(h, size - h),) * 2
        top = np.max(np.abs(ours[sl]))
        ref = load("fftconvolve_terms")
        if ref is not None:
            diff = np.max(np.abs(ours[sl] - ref[sl]))
            out.append(
                f"  convolve_image vs fftconvolve_terms (a) on the interior ({h} px from the "
                f"edges): max|diff| = {diff:.2e} ({diff / top:.1e} of max|O|)"
            )
        const = load("astropy_constant")
        if const is not None:
            diff = np.abs(ours[sl] - const[sl])
            c = size // 2
            q = min(256, c - h)
            box = (slice(c - q, c + q),) * 2
            centre = np.max(np.abs(ours[box] - const[box]))
            out.append(
                f"  convolve_image vs astropy_constant (b): max|diff| = {diff.max():.2e} "
                f"({diff.max() / top:.1e} of max|O|) on the interior, {centre:.2e} "
                f"({centre / top:.1e}) on the central {2 * q}^2 (the kernel varies over the "
                "field)"
            )
    return out


def targets(results, size):
    """Return the summary lines with the targets, met or not."""

    def met(ok):
        return "MET" if ok else "NOT MET"

    lines = []
    checked = size == FULL_SIZE
    why = "" if checked else f" (targets refer to {FULL_SIZE}^2: not checked)"
    solve = results.get("solve", {})
    ours = solve.get("solve_spatial_kernel")
    if ours is not None and "error" not in ours:
        ref = solve.get("normal_equations_ref", {})
        q = f"max D {ours['max_d']:.4f}" if "max_d" in ours else "max D -"
        if "max_d" in ref:
            q += f" (normal_equations_ref {ref['max_d']:.4f})"
        verdict = f": {met(ours['wall_s'] < LIMITS['solve'])}" if checked else why
        lines.append(
            f"kernel solution {size}^2, {ours['n_cells']} cells, order {ORDER}, in under "
            f"{LIMITS['solve']} s: {ours['wall_s']:.3f} s ({ours['wall_min']:.3f}-"
            f"{ours['wall_max']:.3f}), {q}{verdict}"
        )
    apply = results.get("apply", {})
    for tool in ("convolve_image", "convolve_image+var"):
        r = apply.get(tool)
        if r is None or "error" in r:
            continue
        verdict = f": {met(r['wall_s'] < LIMITS['apply'])}" if checked else why
        lines.append(
            f"application {size}^2, order {ORDER} ({N_TERMS} terms), in under "
            f"{LIMITS['apply']:.0f} s on {os.cpu_count()} cores: {tool} {r['wall_s']:.2f} s "
            f"({r['wall_min']:.2f}-{r['wall_max']:.2f}), peak {r['peak_mib']:.0f} MiB"
            + (verdict if tool == "convolve_image" else " (no target)")
        )
    return lines


def versions():
    """Return a line with the versions of Python and the packages involved."""
    return package_versions("stmatch", "numpy", "scipy", "astropy", "jwst", "stpipe")


def main(argv=None):
    """Run the benchmark (or, with ``--worker``, one measurement) for ``argv``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="512^2 images and step, one run (smoke test)"
    )
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated subset of solve,apply,step"
    )
    all_tools = [t for ts in SECTIONS.values() for t in ts]
    parser.add_argument("--tools", help=f"comma-separated subset of {','.join(all_tools)}")
    parser.add_argument(
        "--size", type=int, help="image size of solve and apply (default 4096; quick 512)"
    )
    parser.add_argument(
        "--step-size", type=int, help="image size of the step (default 2048; quick 512)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="fresh processes per row (the median time is shown; default 3, quick 1)",
    )
    add_worker_arguments(
        parser, tracemalloc_help="also report tracemalloc peaks (times are then not meaningful)"
    )
    args = parser.parse_args(argv)
    set_blas_threads(args.blas_threads)  # inherited by the worker processes
    os.environ["STMATCH_DISABLE_PARS"] = "true"  # spec defaults, no packaged parameter files
    if args.worker:
        return worker(json.loads(args.worker))
    size = args.size or (512 if args.quick else FULL_SIZE)
    step_size = args.step_size or (512 if args.quick else 2048)
    args.repeat = args.repeat or (1 if args.quick else 3)
    sections = [s.strip() for s in args.sections.split(",")]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    tools = [t.strip() for t in args.tools.split(",")] if args.tools else all_tools
    unknown = set(tools) - set(all_tools)
    if unknown:
        parser.error(f"unknown tools {sorted(unknown)}; choose from {','.join(all_tools)}")

    print(versions())
    print(
        f"{os.cpu_count()} cores, {'quick' if args.quick else 'full'} run, {args.repeat} "
        f"run(s) per row, BLAS threads: {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    n_cells = int(np.ceil(size / CELL)) ** 2
    titles = {
        "solve": f"Kernel solution: {size}^2 image, {n_cells} cells of {CELL} px, Alard-Lupton "
        f"27-image basis {KERNEL_SIZE} px, spatial order {ORDER}; PSF FWHM {FWHM_RANGE[0]}-"
        f"{FWHM_RANGE[1]} px -> {TARGET_FWHM} px; D = max/median Aniano D over the cells",
        "apply": f"Application: {size}^2 float32 image ({round(size * size / AREA_PER_STAR)} "
        f"stars + noise), order-{ORDER} kernel ({N_TERMS} terms, "
        f"{KERNEL_SIZE} px); (b) convolves with one constant kernel",
        "step": f"PsfModelMatchStep().run(model): {step_size}^2 synthetic exposure, "
        f"{round(step_size * step_size / AREA_PER_STAR)} stars, PSF grid 5x5, defaults "
        f"(cells {CELL} px, order {ORDER})",
    }
    work = tempfile.mkdtemp(prefix="bench_psfmatch_")
    results = {}
    try:
        for section in sections:
            chosen = [t for t in SECTIONS[section] if t in tools]
            if not chosen:
                continue
            n = step_size if section == "step" else size
            if section == "apply":
                print(f"  preparing the {n}^2 image and kernel (not timed) ...", flush=True)
                prepare_apply(n, work)
            save = tempfile.mkdtemp(prefix=f"{section}_", dir=work)
            rows = {t: run_tool(t, n, args, work, save) for t in chosen}
            results[section] = rows
            print_table(titles[section] + "; wall: median of the runs", list(rows.values()),
                        section, args.tracemalloc)  # fmt: skip
            for mine in OURS:
                for peer in rows:
                    if mine in rows and peer not in OURS:
                        print("  " + ratio_line(rows[mine], rows[peer]))
            for line in cross_check(section, n, save, rows):
                print(line)
            shutil.rmtree(save, ignore_errors=True)
            sys.stdout.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if "apply" in results and "astropy_constant" in results["apply"]:
        print(
            "\n(b) astropy.convolution.convolve_fft(image, K(centre), normalize_kernel=False, "
            "boundary='fill', allow_huge=True), other options at their defaults (complex128 "
            "numpy FFTs, one thread; padded to the image plus kernel size; "
            "nan_treatment='interpolate' also transforms a weight image): one constant kernel, "
            "what one would do without spatial variation; it does less work than ours and "
            "gives a different (wrong away from the centre) result."
        )
    print(f"\nSummary (load average at the end: {os.getloadavg()[0]:.2f})")
    for line in targets(results, size):
        print("  " + line)
    step = results.get("step", {}).get("PsfModelMatchStep")
    if step is not None and "error" not in step:
        print(
            f"  PsfModelMatchStep {step_size}^2 ({step['n_cells']} cells): {step['wall_s']:.2f} s "
            f"({step['wall_min']:.2f}-{step['wall_max']:.2f}), peak {step['peak_mib']:.0f} MiB "
            f"above the input model, max D {step['max_d']:.4f} (no target)"
        )


if __name__ == "__main__":
    main()

"""BackgroundMatchStep glue: inputs, the reference, resampling, the model on each grid, outputs."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from jwst.lib.suffix import remove_suffix
from scipy import ndimage
from stdatamodels.jwst.datamodels.dqflags import pixel as DQ_PIXEL

from ..algorithms.noise import clipped_background
from ..algorithms.resample import grids_agree, resample_image
from ._base import atomic_write, products_dir, unvalidated
from ._library import open_library  # noqa: F401 - the step's input handling
from ._wcs import wcs_callables
from ._zogy_inputs import surface_brightness_units

log = logging.getLogger("stmatch.steps.bgmatch")

VARIANCE_ARRAYS = ("var_poisson", "var_rnoise", "var_flat")
MODEL_VARIANCE_ARRAY = "var_flat"
_DIAGNOSTIC_PIXELS = 4_000_000  # above this, diagnostics use every s-th row
_MAX_NODE_STEP = 16  # largest spacing (pixels) of exact model evaluations
_MAX_VARIANCE_NODE_STEP = 64  # the same for the model's variance


# --------------------------------------------------------------------------- inputs
def member_names(library):
    """File name of every member, without loading the models."""
    members = library.asn["products"][0]["members"]
    return [Path(str(m.get("expname") or f"exposure_{i}")).name for i, m in enumerate(members)]


def product_name(library, names):
    """Base name of the run's products (association product name, else first exposure)."""
    try:
        name = library.asn["products"][0].get("name")
    except (AttributeError, KeyError, IndexError, TypeError):
        name = None
    return str(name or (remove_suffix(Path(names[0]).stem)[0] if names else "bgmatch"))


def resolve_reference(value, names):
    """Index of the reference given as an index or a member name (None: automatic).

    An ``int`` or a string of digits is an index (negative counts from the end);
    a name matches a member's file name, its stem, or its stem without the
    pipeline suffix (``a_cal.fits``, ``a_cal`` and ``a`` all name ``a_cal.fits``).
    """
    n = len(names)
    text = str(value).strip()
    if value is None or text.lower() in ("", "none"):
        return None
    if isinstance(value, (int, np.integer)) or text.lstrip("-").isdigit():
        idx = int(text)
        if not -n <= idx < n:
            raise ValueError(f"reference index {idx} is out of range for {n} exposure(s)")
        return idx % n
    for match in (
        lambda p: p.name == Path(text).name,
        lambda p: p.stem == text,
        lambda p: remove_suffix(p.stem)[0] == remove_suffix(Path(text).stem)[0],
    ):
        hits = [i for i, nm in enumerate(names) if match(Path(nm))]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ValueError(f"reference {text!r} names {len(hits)} exposures; give an index")
    raise ValueError(f"reference {text!r} is not one of the exposures: {', '.join(names)}")


def dq_bits(planes):
    """OR of the DQ bits of the named planes (case-insensitive); unknown names are an error."""
    bits = 0
    for name in planes or ():
        key = str(name).strip().upper()
        if key not in DQ_PIXEL:
            raise ValueError(
                f"unknown DQ plane {name!r} in bad_mask_planes; known planes: "
                f"{', '.join(k for k in DQ_PIXEL if k != 'GOOD')}"
            )
        bits |= int(DQ_PIXEL[key])
    return bits


def _present(model, attr, shape):
    if not model.hasattr(attr):
        return None
    value = getattr(model, attr, None)
    if value is None or np.shape(value) != shape:
        return None
    return np.asarray(value)


def variance_sum(model, shape, *, rows=slice(None), source=None):
    """float32 sum of the variance arrays (else err², else None) on ``rows``, and its source.

    ``source`` (``'variance'``, ``'err'`` or ``'none'``) skips the search for it.
    """
    if source in (None, "variance"):
        total = None
        for attr in VARIANCE_ARRAYS:
            v = _present(model, attr, shape)
            if v is not None:
                v = v[rows]
                total = v.astype(np.float32) if total is None else np.add(total, v, out=total)
        if total is not None and (source or np.nanmax(total, initial=0.0) > 0):
            return total, "variance"
    if source in (None, "err"):
        err = _present(model, "err", shape)
        if err is not None and (source or np.nanmax(err[rows], initial=0.0) > 0):
            return np.square(err[rows], dtype=np.float32), "err"
    return None, "none"


@dataclass
class Exposure:
    """The arrays and geometry of one exposure that matching needs."""

    name: str
    model: object
    data: np.ndarray  # float32
    bad: np.ndarray  # bool: selected DQ planes or non-finite data
    var_source: str  # 'variance', 'err' or 'none'
    fwd: object = None  # pixel -> world, None without WCS
    inv: object = None  # world -> pixel
    surface_brightness: bool = True
    shape: tuple = field(init=False)

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.data.shape)

    def variance(self, rows=slice(None)):
        """float32 per-pixel variance on ``rows`` (None when unknown)."""
        if self.var_source == "none":
            return None
        return variance_sum(self.model, self.shape, rows=rows, source=self.var_source)[0]


def read_exposure(model, bits, name):
    """An :class:`Exposure` of a model (2-D data required)."""
    data = getattr(model, "data", None)
    if data is None or np.ndim(data) != 2:
        shape = None if data is None else np.shape(data)
        raise ValueError(f"{name}: background matching needs 2-D image data, got {shape}")
    data = np.asarray(data, dtype=np.float32)
    shape = data.shape
    bad = ~np.isfinite(data)
    dq = _present(model, "dq", shape)
    if bits and dq is not None:
        bad |= (dq & bits) != 0
    _, source = variance_sum(model, shape, rows=diagnostic_rows(shape))
    fwd = inv = None
    if model.meta.wcs is not None:
        fwd, inv = wcs_callables(model)
    return Exposure(name, model, data, bad, source, fwd, inv, surface_brightness_units(model))


def exposure_statistics(model, bits, name):
    """(mean variance, clipped median level, good pixel count) for choosing the reference."""
    exp = read_exposure(model, bits, name)
    npix = int(exp.bad.size - np.count_nonzero(exp.bad))
    if npix < 10:
        raise ValueError(f"{name}: only {npix} usable pixel(s) (all masked or NaN)")
    # level and variance from every s-th row of very large images (a ranking, not a fit)
    rows = diagnostic_rows(exp.shape)
    data, bad = exp.data[rows], exp.bad[rows]
    if not (~bad).any():
        data, bad, rows = exp.data, exp.bad, slice(None)
    try:
        est = clipped_background(data, mask=bad)
        level, variance = est.level, est.sigma**2
    except ValueError:  # e.g. a noise-free (constant) image: no spread to clip with
        values = data[~bad]
        level, variance = float(np.median(values)), float(np.var(values))
    var = exp.variance(rows)
    if var is not None:
        v = var[~bad]
        v = v[np.isfinite(v)]
        if v.size:
            variance = float(np.mean(v, dtype=np.float64))
    return float(variance), float(level), npix


# ------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Placement:
    """How an exposure was put on the reference grid."""

    resampled: bool
    conserve: str = "none"
    flux_scale: float = 1.0  # reference-pixel to exposure-pixel units of the model
    coverage: float = 1.0
    note: str = ""


def on_reference_grid(ref, exp, *, method, with_variance=True):
    """The exposure's data, variance and bad mask on the reference grid.

    Returns ``(data, var, bad, placement)``: the exposure's own data and mask (and
    ``var`` None) when the grids agree or when a WCS is missing and the shapes
    are equal; otherwise the resampled arrays (``var`` resampled when
    ``with_variance`` and the exposure has a variance).
    """
    if ref.fwd is None or exp.fwd is None:
        if exp.shape != ref.shape:
            raise ValueError(
                f"a WCS (meta.wcs) is missing and the shape {exp.shape} differs from the "
                f"reference's {ref.shape}: cannot put the exposure on the reference grid"
            )
        note = "a WCS is missing: assumed to be on the reference grid"
        return exp.data, None, exp.bad, Placement(False, note=note)
    try:
        agree = grids_agree(ref.shape, ref.fwd, exp.shape, exp.inv)
    except ValueError as exc:
        raise ValueError(f"cannot compare the pixel grids: {exc}") from None
    if agree:
        return exp.data, None, exp.bad, Placement(False)
    conserve = "surface_brightness" if exp.surface_brightness else "flux"
    try:
        res = resample_image(
            exp.data,
            ref.shape,
            ref.fwd,
            exp.inv,
            var=exp.variance() if with_variance else None,
            bad=exp.bad,
            method=method,
            conserve=conserve,
            dtype=np.float32,
        )
    except ValueError as exc:
        if "does not overlap" in str(exc):
            raise ValueError("the exposure does not overlap the reference") from None
        raise ValueError(f"cannot resample onto the reference grid: {exc}") from None
    coverage = float(np.mean(res.coverage))
    if coverage == 0:
        raise ValueError("the exposure does not overlap the reference")
    scale = 1.0 / res.jacobian_det if conserve == "flux" and res.jacobian_det > 0 else 1.0
    note = (
        f"resampled onto the reference grid ({method}, {conserve.replace('_', ' ')}, "
        f"largest shift {res.max_shift:.1f} px, coverage {100 * coverage:.1f}%)"
    )
    return res.data, res.var, ~res.coverage, Placement(True, conserve, scale, coverage, note)


def node_axes(shape, step):
    """Node positions along y and x: every ``step`` pixels and the last pixel."""
    return tuple(
        np.unique(np.concatenate([np.arange(0, n, step), [n - 1]])).astype(np.float64)
        for n in shape
    )


def upsample(values, ny_nodes, nx_nodes, shape, dtype=np.float32):
    """Bilinear interpolation of node values (rows ``ny_nodes``, columns ``nx_nodes``).

    The nodes include the first and last pixel of each axis (:func:`node_axes`).
    """
    v = np.asarray(values, dtype=np.float64)
    xq = np.arange(shape[1], dtype=np.float64)
    if nx_nodes.size == 1:
        rows = np.repeat(v, shape[1], axis=1)
    else:
        i = np.clip(np.searchsorted(nx_nodes, xq, side="right") - 1, 0, nx_nodes.size - 2)
        t = (xq - nx_nodes[i]) / (nx_nodes[i + 1] - nx_nodes[i])
        rows = v[:, i] * (1.0 - t) + v[:, i + 1] * t
    out = np.empty(shape, dtype=dtype)
    if ny_nodes.size == 1:
        out[...] = rows[0]
        return out
    rows = rows.astype(dtype)
    # rows between two nodes: a + (b - a) t, written in place one interval at a time
    for j in range(ny_nodes.size - 1):
        r0, r1 = int(ny_nodes[j]), int(ny_nodes[j + 1]) + (j == ny_nodes.size - 2)
        t = ((np.arange(r0, r1) - ny_nodes[j]) / (ny_nodes[j + 1] - ny_nodes[j])).astype(dtype)
        block = out[r0:r1]
        np.multiply(t[:, None], rows[j + 1] - rows[j], out=block)
        block += rows[j]
    return out


def node_step(bin_size, *, variance=False):
    """Spacing of exact evaluations: the model every sixteenth of a bin (at most
    16 px), its variance (smoother, only an error estimate) every quarter of a
    bin (at most 64 px)."""
    if variance:
        return int(max(1, min(_MAX_VARIANCE_NODE_STEP, int(bin_size) // 4)))
    return int(max(1, min(_MAX_NODE_STEP, int(bin_size) // 16)))


def _reference_positions(fit, ref, exp, placement, step):
    """Node axes of the exposure and the nodes' positions on the reference grid."""
    yn, xn = node_axes(exp.shape, step)
    gx, gy = np.meshgrid(xn, yn)
    if not placement.resampled:
        return yn, xn, gx, gy
    ra, dec = exp.fwd(gx, gy)
    xr, yr = (np.asarray(v, dtype=np.float64) for v in ref.inv(ra, dec))
    if not (np.all(np.isfinite(xr)) and np.all(np.isfinite(yr))):
        raise ValueError("the WCS does not map every exposure pixel onto the reference grid")
    x0, x1, y0, y1 = fit.domain
    return yn, xn, np.clip(xr, x0, x1), np.clip(yr, y0, y1)


def model_on_exposure(fit, ref, exp, placement, *, on_reference=None):
    """The model and its variance on the exposure's own pixels (float32).

    On the reference grid the model is evaluated at every pixel. Otherwise each
    node of a grid of exposure pixels (:func:`node_step` apart) is mapped to the
    reference grid with the two WCS (clamped to the reference grid's edges, so
    that a polynomial is never extrapolated), the model is evaluated there and
    interpolated bilinearly in between (scaled by ``placement.flux_scale``). The
    variance (uncertainty squared) is always evaluated on coarser nodes and
    interpolated. ``on_reference``: the model already evaluated on the reference
    grid (used when the grids agree).
    """
    scale = placement.flux_scale
    bin_size = fit.grid.bin_size
    if not placement.resampled:
        model = on_reference
        if model is None or model.shape != exp.shape:
            model = fit.evaluate_image(exp.shape, dtype=np.float32)
    else:
        yn, xn, xr, yr = _reference_positions(fit, ref, exp, placement, node_step(bin_size))
        model = upsample(fit.evaluate(xr, yr) * scale, yn, xn, exp.shape)
    step = node_step(bin_size, variance=True)
    yn, xn, xr, yr = _reference_positions(fit, ref, exp, placement, step)
    var = upsample((fit.uncertainty(xr, yr) * scale) ** 2, yn, xn, exp.shape)
    return model, var


# ----------------------------------------------------------------- sources, diagnostics
def source_mask(diff, mask, grid, *, threshold, grow):
    """Pixels more than ``threshold`` bin stdevs from their bin's value, grown by ``grow`` px."""
    hy, wx = np.diff(grid.y_edges), np.diff(grid.x_edges)

    def expand(a):
        return np.repeat(np.repeat(a.astype(np.float32), hy, axis=0), wx, axis=1)

    with np.errstate(invalid="ignore"):
        found = np.abs(diff - expand(grid.values)) > np.float32(threshold) * expand(grid.stdev)
    found &= ~mask
    if grow > 0 and found.any():
        found = ndimage.binary_dilation(found, iterations=int(grow))
    return found


def diagnostic_rows(shape):
    """Row slice used for the diagnostics (every s-th row of very large images)."""
    s = max(1, math.ceil(shape[0] * shape[1] / _DIAGNOSTIC_PIXELS))
    return slice(None, None, s)


# ------------------------------------------------------------------------ results
def quality_failures(fit, diag, step):
    """Reasons why a match fails the step's quality gates (empty when it passes)."""
    failures = []
    ratio = diag["mse_ratio"]
    if step.max_mse_ratio is not None and not ratio <= step.max_mse_ratio:
        hint = "" if step.detect_sources else " (unmasked sources? try detect_sources=True)"
        failures.append(
            f"matched_mse/diffim_var = {ratio:.3f} > max_mse_ratio = {step.max_mse_ratio:g}{hint}"
        )
    if step.max_fit_rms is not None and not fit.fit_rms <= step.max_fit_rms:
        failures.append(f"fit_rms = {fit.fit_rms:.4g} > max_fit_rms = {step.max_fit_rms:g}")
    return failures


def log_outcome(name, fit, diag, mean_model, status, reason, placement):
    """One INFO line per matched exposure (and a WARNING with the reason, if any)."""
    what = fit.kind
    if fit.kind == "polynomial":
        what += f" order {fit.order}"
    elif fit.kind == "spline":
        what += f" {fit.interp_style}"
    log.info(
        "  %-40s %s: mean model offset %s, fit_rms %.4g, mse ratio %.3f%s, %s",
        name,
        what,
        "n/a" if mean_model is None else f"{mean_model:.5g}",
        fit.fit_rms,
        diag["mse_ratio"],
        " (resampled)" if placement.resampled else "",
        status,
    )
    if reason:
        log.warning("  %-40s %s", name, reason)


def compose_background(model, mean_model):
    """Update ``meta.background.level`` for data' = data + M; return (before, after).

    Not subtracted: the sky still in the data is ``level + mean(M)``. Subtracted:
    the background removed from the original data is ``level - mean(M)``. Without
    a recorded level (or ``subtracted``) nothing is changed.
    """
    bg = model.meta.background
    level, subtracted = bg.level, bg.subtracted
    if level is None or subtracted is None:
        return level, level
    new = float(level) - mean_model if subtracted else float(level) + mean_model
    bg.level = new
    return float(level), new


def apply_model(model, exp, m, var, *, add_variance):
    """Add the model to the data; the model variance to ``var_flat``; keep ``err`` consistent."""
    with unvalidated(model):
        model.data = np.add(exp.data, m, dtype=np.float32)
        if not add_variance:
            return
        flat = _present(model, MODEL_VARIANCE_ARRAY, exp.shape)
        flat = var if flat is None else np.add(flat, var, dtype=np.float32)
        setattr(model, MODEL_VARIANCE_ARRAY, flat)
        if exp.var_source == "variance":
            total, _ = variance_sum(model, exp.shape, source="variance")
            model.err = np.sqrt(total, out=total)
        elif exp.var_source == "err":
            err = _present(model, "err", exp.shape)
            model.err = np.sqrt(np.square(err, dtype=np.float32) + var)


def mark_all(step, library, status, reason):
    """Give every model the same status and reason."""
    with library:
        for i in range(len(library)):
            model = library.borrow(i)
            with unvalidated(model):
                setattr(model.meta.cal_step, step.class_alias, status)
                step.record_stmatch(model, status=status, reason=reason)
            library.shelve(model, i)
    return library


# ------------------------------------------------------------------------ products
def output_directory(step):
    """Where run products go: output_dir, else the input directory, else cwd."""
    return products_dir(step)


SUMMARY_COLUMNS = (
    ("exposure", str),
    ("is_reference", bool),
    ("status", str),
    ("flagged", bool),
    ("kind", str),
    ("order", int),
    ("interp_style", str),
    ("n_valid_bins", int),
    ("resampled", bool),
    ("mean_model", float),
    ("fit_rms", float),
    ("matched_mse", float),
    ("diffim_var", float),
    ("mse_ratio", float),
    ("reason", str),
)


def summary_table(products, reference):
    """One row per exposure (astropy Table) from the background-model products."""
    from astropy.table import Table

    rows = {name: [] for name, _ in SUMMARY_COLUMNS}
    for p in products:
        meta = p.meta.bgmatch
        for name, kind in SUMMARY_COLUMNS:
            value = getattr(meta, name, None)
            if kind is float:
                value = math.nan if value is None else float(value)
            elif value is None:
                value = kind()
            rows[name].append(kind(value))
    table = Table(rows, names=[n for n, _ in SUMMARY_COLUMNS])
    table.meta["reference"] = str(reference)
    return table


def _stems(products):
    """Output stem of each exposure; an index is appended to names that repeat."""
    stems = [remove_suffix(Path(str(p.meta.bgmatch.exposure)).stem)[0] for p in products]
    repeated = {s for s in stems if stems.count(s) > 1}
    return [f"{s}_{i}" if s in repeated else s for i, s in enumerate(stems)]


def save_products(step, products, table, base):
    """Write model products, the summary table and QA figures as asked; return paths."""
    written = {}
    want = step.save_models and (step.save_results or step.output_dir)
    directory = output_directory(step)
    stems = _stems(products)
    if want:
        for p, stem in zip(products, stems, strict=True):
            path = atomic_write(directory / f"{stem}_bgmatch_model.asdf", p.save)
            written.setdefault("models", []).append(path)
        path = atomic_write(
            directory / f"{base}_bgmatch_summary.ecsv",
            lambda tmp: table.write(tmp, format="ascii.ecsv"),
        )
        written["summary"] = path
        log.info("Saved %d background model(s) and the summary %s", len(products), path)
    if step.save_qa:
        from ._qa_bgmatch import bgmatch_figure

        for p, stem in zip(products, stems, strict=True):
            if p.kind == "none" and not np.size(p.bin_values):
                continue  # the reference, or skipped before a fit: nothing to show
            path = atomic_write(
                directory / f"{stem}_bgmatch_qa.png", lambda tmp, p=p: bgmatch_figure(p, tmp)
            )
            written.setdefault("qa", []).append(path)
        log.info("Saved %d QA figure(s)", len(written.get("qa", [])))
    return written

"""ZogyStep outputs: the DifferenceImageModel, the detection catalog, the QA figure."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from astropy.table import Table
from jwst.lib.suffix import remove_suffix

from ..algorithms.detect import find_detections
from ..algorithms.psfgrid import fwhm_of
from ..models import DifferenceImageModel, empty_tiles
from ._base import atomic_write, products_dir, unvalidated
from ._wcs import wcs_callables
from ._zogy_inputs import DO_NOT_USE, NON_SCIENCE, dilate_dq

log = logging.getLogger("stmatch.steps.zogy")


def _footprint_box(kernels):
    """Bounding box (h, w) of the pixels where any kernel exceeds 1e-3 of its peak."""
    h = w = 1
    for k in kernels:
        a = np.abs(k)
        if not a.max() > 0:
            continue
        ys, xs = np.nonzero(a >= 1e-3 * a.max())
        cy, cx = a.shape[0] // 2, a.shape[1] // 2
        h = max(h, 2 * int(max(cy - ys.min(), ys.max() - cy)) + 1)
        w = max(w, 2 * int(max(cx - xs.min(), xs.max() - cx)) + 1)
    return h, w


def difference_model(science, sci, tpl, result, info):
    """Build the DifferenceImageModel of a ZOGY result on the science grid."""
    shape = sci.data.shape
    beta = float(info["flux_ratio"])
    model = DifferenceImageModel(science)  # metadata (incl. WCS) only, deep-copied
    with unvalidated(model):
        # D / F_D is the difference in reference flux units (T ⊗ P_D); times beta in
        # the science image's units. Its background noise is beta / F_D per tile.
        scale = np.empty(shape, dtype=np.float64)
        for tile, f_d in zip(result.tiles, result.f_d, strict=True):
            y0, y1, x0, x1 = tile.inner
            scale[y0:y1, x0:x1] = beta / f_d
        model.data = (result.d * scale).astype(np.float32)
        model.err = scale.astype(np.float32)
        model.var = (scale * scale).astype(np.float32)
        model.score = result.s.astype(np.float32)
        model.scorr = result.s_corr.astype(np.float32)
        model.alpha = result.alpha.astype(np.float32)
        model.alpha_err = result.alpha_err.astype(np.float32)
        model.psf = result.psf_d.astype(np.float32)
        del scale
        bad = result.bad | sci.bad | tpl.bad
        model.err[bad] = np.nan
        model.var[bad] = np.nan
        box = _footprint_box([*result.kernel_n, *result.kernel_r])
        dq = dilate_dq(sci.dq | tpl.dq, box)
        dq[bad] |= DO_NOT_USE
        # Within half a kernel footprint of the image edge the kernels reach beyond
        # the data (into the noise padding): sources there leave residuals.
        ey, ex = box[0] // 2, box[1] // 2
        edge = np.ones(shape, dtype=bool)
        edge[ey : shape[0] - ey, ex : shape[1] - ex] = False
        dq[edge] |= NON_SCIENCE
        model.dq = dq
        for attr in ("var_poisson", "var_rnoise", "var_flat"):
            if model.hasattr(attr):
                delattr(model, attr)
        tiles = empty_tiles(len(result.tiles))
        for i, tile in enumerate(result.tiles):
            tiles[i] = (*tile.inner, *tile.centre, result.f_d[i], result.f_s[i])
        model.tiles = tiles
        zinfo = dict(info)
        zinfo["f_d"] = float(np.median(result.f_d))
        zinfo["f_s"] = float(np.median(result.f_s))
        zinfo["n_tiles"] = len(result.tiles)
        zinfo["units"] = str(getattr(science.meta, "bunit_data", None) or "unknown")
        zinfo["n_detections"] = 0
        model.meta.zogy = {k: _plain(v) for k, v in zinfo.items()}
    return model


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


def detection_table(model, result, *, threshold, science):
    """Detections of S_corr peaks as an astropy Table (pixel and sky positions)."""
    mask = (np.asarray(model.dq) & (DO_NOT_USE | NON_SCIENCE)) != 0
    fwhm_sep = max(2, int(round(fwhm_of(result.psf_d[0]))))
    det = find_detections(
        result.s_corr,
        threshold=threshold,
        alpha=result.alpha,
        alpha_err=result.alpha_err,
        mask=mask,
        min_separation=fwhm_sep,
    )
    table = Table(det)
    ra = np.full(len(det), np.nan)
    dec = np.full(len(det), np.nan)
    if len(det) and science.meta.wcs is not None:
        fwd, _ = wcs_callables(science)
        r, d = fwd(det["x"], det["y"])
        ra, dec = np.asarray(r, dtype=float) % 360.0, np.asarray(d, dtype=float)
    table["ra"] = ra
    table["dec"] = dec
    table["kind"] = np.where(det["sign"] > 0, "new", "gone")
    unit = model.meta.zogy.units if model.meta.zogy else None
    table.meta["threshold"] = float(threshold)
    table.meta["flux_units"] = str(unit)
    table.meta["description"] = (
        "Peaks of the ZOGY corrected score S_corr; x, y 0-based pixels of the science image; "
        "alpha, alpha_err: PSF flux of a point source at the peak in science flux units; "
        "kind: new (flux gained in the science image) or gone (flux lost)."
    )
    cols = [
        "id",
        "x",
        "y",
        "ra",
        "dec",
        "s_corr",
        "alpha",
        "alpha_err",
        "kind",
        "sign",
        "x_peak",
        "y_peak",
        "npix",
    ]
    table = table[cols]
    n_pos = int(np.sum(det["sign"] > 0))
    log.info(
        "%d detection(s) with |S_corr| >= %g: %d new, %d gone",
        len(det),
        threshold,
        n_pos,
        len(det) - n_pos,
    )
    for row in table[:5]:
        log.info(
            "  #%d at (x, y) = (%.1f, %.1f): S_corr %.1f, flux %.4g +- %.2g (%s)",
            row["id"],
            row["x"],
            row["y"],
            row["s_corr"],
            row["alpha"],
            row["alpha_err"],
            row["kind"],
        )
    return table


def record_detections(model, table):
    with unvalidated(model):
        z = dict(model.meta.zogy.instance) if hasattr(model.meta.zogy, "instance") else {}
        z["n_detections"] = len(table)
        model.meta.zogy = z


def _base_name(step, science):
    name = str(science.meta.filename or "zogy")
    stem = remove_suffix(Path(name).stem)[0]
    directory = products_dir(step)
    return directory / f"{stem}_{step.default_suffix()}"


def save_products(step, model, science, sci, tpl, result):
    """Write the detection catalog (ECSV) and the QA figure when asked to."""
    want_catalog = step.save_catalog and (step.save_results or step.output_dir)
    if not (want_catalog or step.save_qa):
        return
    base = _base_name(step, science)
    if want_catalog:
        path = atomic_write(
            f"{base}_cat.ecsv", lambda p: step.catalog.write(p, format="ascii.ecsv")
        )
        log.info("Saved detection catalog %s", path)
    if step.save_qa:
        from ._qa_zogy import zogy_figure

        path = atomic_write(
            f"{base}_qa.png",
            lambda p: zogy_figure(
                sci.data, tpl.data, model.data, result.s_corr, step.catalog, p, n=step.qa_cutouts
            ),
        )
        log.info("Saved QA figure %s", path)

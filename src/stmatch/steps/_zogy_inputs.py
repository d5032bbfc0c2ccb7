"""ZogyStep inputs: open the science/template pair, align it, pull arrays and noise."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.nddata.bitmask import bitfield_to_boolean_mask
from stdatamodels.jwst.datamodels.dqflags import pixel as DQ_PIXEL

from ..algorithms.noise import clipped_background, sigma_from_variance
from ..algorithms.resample import grids_agree, resample_image
from ._wcs import wcs_callables

log = logging.getLogger("stmatch.steps.zogy")

VARIANCE_ARRAYS = ("var_poisson", "var_rnoise", "var_flat")


# --------------------------------------------------------------------------- opening
def _members_from_asn(path):
    """(science, template) paths of an association file with those exptypes."""
    path = Path(path)
    try:
        with open(path) as fh:
            asn = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read association {path}: {exc}") from None
    return _asn_members(asn, path.parent, str(path))


def _asn_members(asn, base, name="the association"):
    """(science, template) of an association dict; paths relative to ``base``."""
    try:
        members = asn["products"][0]["members"]
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"{name} has no products with members") from None
    found = {"science": [], "template": []}
    for m in members:
        kind = str(m.get("exptype", "")).lower()
        if kind in found:
            found[kind].append(Path(base) / m["expname"])
    for kind, paths in found.items():
        if len(paths) != 1:
            raise ValueError(
                f"{name} must have exactly one member of exptype {kind!r}, found {len(paths)}"
            )
    return found["science"][0], found["template"][0]


def open_pair(step, input_data, template):
    """Open the science and template models from any accepted input.

    Accepted: an association (file or dict) with ``science`` and ``template``
    members; a science file or model with ``template`` given (argument or the
    ``template`` parameter); a list or tuple ``(science, template)``.

    Returns
    -------
    science, template : DataModel
    """
    step._input_paths = []
    if isinstance(input_data, (list, tuple)):
        if len(input_data) != 2:
            raise ValueError(
                f"ZogyStep needs one science and one template image, got {len(input_data)} inputs"
            )
        input_data, template = input_data
    if isinstance(input_data, dict):
        input_data, template = _asn_members(input_data, Path.cwd())
    if isinstance(input_data, (str, Path)) and Path(input_data).suffix.lower() == ".json":
        if template is not None:
            log.info("Template given in the association; the template parameter is ignored")
        input_data, template = _members_from_asn(input_data)
    if template is None:
        raise ValueError(
            "no template: give an association with 'science' and 'template' members, "
            "or a science image with --template=<file>"
        )
    science = _open(step, input_data, "science")
    tmpl = _open(step, template, "template")
    return science, tmpl


def _open(step, init, role):
    if isinstance(init, (str, Path)):
        path = Path(init)
        if not path.exists():
            raise FileNotFoundError(f"{role} image not found: {path}")
        step._input_paths.append(str(path.resolve()))
        model = step._datamodels_open(str(path))
    else:
        model = init
    data = getattr(model, "data", None)
    if data is None or np.ndim(data) != 2:
        shape = None if data is None else np.shape(data)
        raise ValueError(f"the {role} image must hold 2-D data, got {shape}")
    return model


def name_of(model, default):
    return str(getattr(model.meta, "filename", None) or default)


# ----------------------------------------------------------------------- arrays
def variance_of(model):
    """Variance array and its source: sum of var_* arrays, else err², else None."""
    shape = np.shape(model.data)
    total = None
    for attr in VARIANCE_ARRAYS:
        v = getattr(model, attr, None) if model.hasattr(attr) else None
        if v is None or np.shape(v) != shape:
            continue
        v = np.asarray(v, dtype=np.float64)
        total = v.copy() if total is None else total + v
    if total is not None and np.nanmax(np.where(np.isfinite(total), total, 0)) > 0:
        return total, "variance"
    err = getattr(model, "err", None) if model.hasattr("err") else None
    if err is not None and np.shape(err) == shape:
        e = np.asarray(err, dtype=np.float64)
        if np.nanmax(np.where(np.isfinite(e), e, 0)) > 0:
            return e * e, "err"
    return None, "robust"


def dq_of(model):
    shape = np.shape(model.data)
    dq = getattr(model, "dq", None) if model.hasattr("dq") else None
    if dq is None or np.shape(dq) != shape:
        return np.zeros(shape, dtype=np.uint32)
    return np.asarray(dq, dtype=np.uint32)


@dataclass
class ImageArrays:
    """One image ready for ZOGY (on the science grid)."""

    name: str
    data: np.ndarray  # float64, background subtracted, NaN at bad pixels
    var: np.ndarray | None
    dq: np.ndarray
    bad: np.ndarray
    sigma: float
    sigma_source: str
    background: float


def prepare_arrays(name, data, var, var_source, dq, dqbits, subtract_background):
    """Mask, background-subtract and measure the noise of one image."""
    data = np.array(data, dtype=np.float64)  # own copy
    bad = ~np.isfinite(data)
    if dqbits is not None:
        bad |= ~bitfield_to_boolean_mask(dq, dqbits, good_mask_value=True, dtype=bool)
    if var is not None:
        with np.errstate(invalid="ignore"):
            bad |= ~(np.isfinite(var) & (var >= 0))
    n_good = int(bad.size - np.count_nonzero(bad))
    if n_good < 100:
        raise ValueError(f"{name}: only {n_good} usable pixel(s) (all masked or NaN)")
    try:
        est = clipped_background(data, mask=bad)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    level = est.level if subtract_background else 0.0
    if subtract_background:
        data -= level
    if var is not None:
        try:
            sigma = sigma_from_variance(var, mask=bad)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        source = var_source
    else:
        sigma, source = est.sigma, "robust"
        log.info("%s: no variance arrays; noise estimated from the pixels (clipped MAD)", name)
    data[bad] = np.nan
    if var is not None:
        var = var.copy()
        var[bad] = np.nan
    return ImageArrays(name, data, var, dq, bad, float(sigma), source, float(level))


# -------------------------------------------------------------------- alignment
@dataclass
class Alignment:
    resampled: bool
    jacobian: np.ndarray  # d(template pixel)/d(science pixel) at the centre, [[dx/dx, dx/dy], ...]
    conserve: str


def surface_brightness_units(model) -> bool:
    unit = str(getattr(model.meta, "bunit_data", None) or "").replace(" ", "").lower()
    return "/sr" in unit or "arcsec" in unit


def align_template(science, template, *, var=None, method="lanczos3"):
    """Template data, variance (``var``: the template's), dq on the science grid.

    Returns ``(None, alignment)`` when the grids agree (nothing to resample).
    """
    sci_shape = np.shape(science.data)
    tpl_shape = np.shape(template.data)
    sci_fwd, _ = wcs_callables(science)
    _, tpl_inv = wcs_callables(template)
    if science.meta.wcs is None or template.meta.wcs is None:
        same_shape = sci_shape == tpl_shape
        if not same_shape:
            raise ValueError(
                "cannot align science and template: a WCS (meta.wcs) is missing and the "
                f"shapes differ ({sci_shape} vs {tpl_shape})"
            )
        log.warning("A WCS is missing: assuming the template is on the science pixel grid")
        return None, Alignment(False, np.eye(2), "none")
    try:
        agree = grids_agree(sci_shape, sci_fwd, tpl_shape, tpl_inv)
    except ValueError as exc:
        raise ValueError(f"cannot align science and template: {exc}") from None
    if agree:
        log.info("Template and science are on the same pixel grid: no resampling")
        return None, Alignment(False, np.eye(2), "none")
    jac = _jacobian(sci_shape, sci_fwd, tpl_inv)
    conserve = "surface_brightness" if surface_brightness_units(template) else "flux"
    log.info(
        "Resampling the template onto the science grid (%s, conserving %s; "
        "template pixels per science pixel %.4f)",
        method,
        conserve.replace("_", " "),
        abs(np.linalg.det(jac)),
    )
    try:
        res = resample_image(
            np.asarray(template.data),
            sci_shape,
            sci_fwd,
            tpl_inv,
            var=var,
            dq=dq_of(template),
            method=method,
            conserve=conserve,
        )
    except ValueError as exc:
        raise ValueError(f"cannot resample the template onto the science grid: {exc}") from None
    covered = float(np.mean(res.coverage))
    if covered == 0:
        raise ValueError("the template does not overlap the science image")
    log.info("Template covers %.1f%% of the science image", 100 * covered)
    return res, Alignment(True, jac, conserve)


def _jacobian(shape, fwd, inv):
    """d(template x, y)/d(science x, y) at the science image centre (central differences)."""
    yc, xc = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    h = 1.0
    xs = np.array([xc - h, xc + h, xc, xc])
    ys = np.array([yc, yc, yc - h, yc + h])
    ra, dec = fwd(xs, ys)
    x, y = inv(ra, dec)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(
            "the template does not overlap the science image (the science image centre "
            "does not map onto the template's WCS)"
        )
    return np.array(
        [
            [(x[1] - x[0]) / (2 * h), (x[3] - x[2]) / (2 * h)],
            [(y[1] - y[0]) / (2 * h), (y[3] - y[2]) / (2 * h)],
        ]
    )


# ------------------------------------------------------------------- flux ratio
def _per_pixel_scale(model):
    """Factor f with value = physical * f (None when unknown)."""
    unit = str(getattr(model.meta, "bunit_data", None) or "").replace(" ", "")
    if not unit:
        return None, "no bunit_data"
    if surface_brightness_units(model) or unit.lower() in ("mjy", "jy", "ujy", "njy"):
        return 1.0, unit
    conv = getattr(model.meta.photometry, "conversion_megajanskys", None)
    if conv is None or not (math.isfinite(conv) and conv > 0):
        return None, f"{unit} without photometric conversion"
    return 1.0 / float(conv), f"{unit} (x {conv:g} to MJy/sr)"


def flux_ratio_from_metadata(science, template):
    """β = F_n/F_r from the photometric metadata, its source and an explanation."""
    fs, us = _per_pixel_scale(science)
    ft, ut = _per_pixel_scale(template)
    if fs is None or ft is None:
        return 1.0, "default", f"units unknown (science: {us}; template: {ut}): flux_ratio = 1"
    if surface_brightness_units(science) != surface_brightness_units(template):
        return (
            1.0,
            "default",
            f"science in {us} and template in {ut} are not comparable: flux_ratio = 1",
        )
    return fs / ft, "metadata", f"science {us}, template {ut}"


def robust_sigma_note(arrays):
    return f"{arrays.sigma:.4g} (from {arrays.sigma_source})"


def dilate_dq(dq, footprint_shape):
    """OR of dq bits over a box of ``footprint_shape`` around each pixel."""
    from scipy import ndimage

    out = np.zeros_like(dq)
    bits = int(np.bitwise_or.reduce(dq, axis=None)) if dq.size else 0
    b = 1
    while bits:
        if bits & 1:
            plane = (dq & b) != 0
            if plane.any():
                grown = ndimage.maximum_filter(plane, size=footprint_shape, mode="constant")
                out[grown] |= b
        bits >>= 1
        b <<= 1
    return out


DO_NOT_USE = int(DQ_PIXEL["DO_NOT_USE"])
NON_SCIENCE = int(DQ_PIXEL["NON_SCIENCE"])


def science_to_template(science, template):
    """Callable ``(y, x) -> (y_t, x_t)``: science pixel to template pixel."""
    fwd, _ = wcs_callables(science)
    _, inv = wcs_callables(template)

    def mapping(y, x):
        ra, dec = fwd(np.atleast_1d(float(x)), np.atleast_1d(float(y)))
        xt, yt = inv(ra, dec)
        return float(np.ravel(yt)[0]), float(np.ravel(xt)[0])

    return mapping

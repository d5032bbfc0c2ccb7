"""PsfModelMatchStep: the exposure PSF and the target PSF on the exposure's grid."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from ..algorithms.resample import affine_resample_stamp
from . import _psf_sources as psfs
from ._wcs import wcs_callables
from ._zogy_inputs import dq_of, prepare_arrays, variance_of

log = logging.getLogger("stmatch.steps.psfmatch")

#: Relative pixel-scale difference above which a target PSF is resampled.
SCALE_TOLERANCE = 1e-3


def pixel_scale(model):
    """Pixel scale (arcsec per pixel, √|det J| at the image centre) from the GWCS, or None."""
    try:
        fwd, _ = wcs_callables(model)
    except Exception:  # no or unusable WCS
        return None
    ny, nx = np.shape(model.data)
    x0, y0 = (nx - 1) / 2.0, (ny - 1) / 2.0
    x = np.array([x0, x0 + 1.0, x0])
    y = np.array([y0, y0, y0 + 1.0])
    try:
        ra, dec = (np.asarray(v, dtype=np.float64) for v in fwd(x, y))
    except Exception:
        return None
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        return None
    cosd = math.cos(math.radians(dec[0]))
    j = np.array(
        [
            [(ra[1] - ra[0]) * cosd, (ra[2] - ra[0]) * cosd],
            [dec[1] - dec[0], dec[2] - dec[0]],
        ]
    )
    scale = math.sqrt(abs(np.linalg.det(j))) * 3600.0
    return scale if scale > 0 else None


def _odd(n):
    n = int(math.ceil(n))
    return n if n % 2 else n + 1


def rescale_source(source: psfs.PsfSource, source_scale, image_scale, what):
    """Carry a PSF given at ``source_scale`` arcsec/px onto pixels of ``image_scale``."""
    if source_scale is None or image_scale is None:
        return source
    ratio = image_scale / source_scale  # image pixel offsets -> source pixel offsets
    if abs(ratio - 1.0) <= SCALE_TOLERANCE:
        return source
    log.info(
        "%s PSF is sampled at %.4g arcsec/px and the exposure at %.4g arcsec/px: "
        "resampling the PSF onto the exposure's pixels",
        what,
        source_scale,
        image_scale,
    )
    matrix = np.eye(2) * ratio
    at = source.at

    def wrapped(y, x):
        stamp = at(y, x)
        shape = tuple(_odd(s / ratio) for s in stamp.shape)
        return affine_resample_stamp(stamp, matrix, method="lanczos3", shape=shape)

    return psfs.PsfSource(
        source.kind,
        f"{source.description}, resampled from {source_scale:.4g} to {image_scale:.4g} arcsec/px",
        wrapped,
        source.fwhm / ratio,
        source.n_stars,
        image_scale,
    )


def _stars_source(step, model, name, dqbits):
    var, var_src = variance_of(model)
    arrays = prepare_arrays(name, model.data, var, var_src, dq_of(model), dqbits, True)
    size = step.psf_size or 25
    try:
        return psfs.from_stars(arrays, size=size, threshold=step.psf_star_threshold, name=name)
    except ValueError as exc:
        message = str(exc)
        if "give a PSF file" not in message:
            message = (
                f"{name}: no PSF could be estimated from its stars ({message}); give a PSF "
                "file or an analytic FWHM"
            )
        raise ValueError(message) from None


def exposure_psf(step, model, name, dqbits) -> psfs.PsfSource:
    """The exposure PSF: file > analytic FWHM > the image's own stars."""
    if step.psf:
        source = psfs.from_file(step.psf)
        source = rescale_source(source, source.pixel_scale, pixel_scale(model), "The exposure")
    elif step.psf_fwhm:
        source = psfs.from_fwhm(
            step.psf_fwhm, kind=step.psf_profile, beta=step.moffat_beta, size=step.psf_size
        )
    else:
        log.info("No exposure PSF given: estimating it from isolated stars of %s", name)
        source = _stars_source(step, model, name, dqbits)
    log.info("Exposure PSF: %s", source.description)
    return source


def target_psf(step, model, dqbits, open_model) -> psfs.PsfSource:
    """The target PSF on the exposure's pixels: file, analytic FWHM or another exposure."""
    given = [
        n for n in ("target_psf", "target_psf_fwhm", "target_image") if getattr(step, n) is not None
    ]
    if not given:
        raise ValueError(
            "no target PSF: give target_psf (a PSF file), target_psf_fwhm (an analytic "
            "FWHM in pixels) or target_image (an exposure whose PSF is the target)"
        )
    if len(given) > 1:
        raise ValueError(f"give only one target PSF, got {', '.join(given)}")
    image_scale = pixel_scale(model)
    if step.target_psf:
        source = psfs.from_file(step.target_psf)
        declared = step.target_pixel_scale or source.pixel_scale
        if declared is not None and image_scale is None:
            log.warning(
                "The target PSF is sampled at %.4g arcsec/px but the exposure has no usable "
                "WCS: its pixel scale cannot be checked, the PSF is used as it is",
                declared,
            )
        source = rescale_source(source, declared, image_scale, "The target")
    elif step.target_psf_fwhm:
        source = psfs.from_fwhm(
            step.target_psf_fwhm,
            kind=step.target_psf_profile,
            beta=step.moffat_beta,
            size=step.psf_size,
        )
    else:
        path = Path(step.target_image)
        if not path.exists():
            raise FileNotFoundError(f"target image not found: {path}")
        other = open_model(str(path))
        attached = _attached_psf(other)
        if attached is not None:
            log.info("Target PSF: the PSF attached to %s (a PSF-matched product)", path.name)
            source = psfs.from_stamp(attached, f"PSF attached to {path.name}")
        else:
            log.info("Target PSF from the stars of %s", path.name)
            source = _stars_source(step, other, path.name, dqbits)
        source = rescale_source(source, pixel_scale(other), image_scale, "The target")
    log.info("Target PSF: %s", source.description)
    return source


def _attached_psf(model):
    """The ``psf`` stamp a PSF-matched product carries, or None."""
    try:
        psf = model.psf if model.hasattr("psf") else None
    except Exception:  # models whose schema has no psf entry
        psf = getattr(model, "psf", None)
    if psf is None:
        return None
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 2 or psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
        return None
    return psf if np.isfinite(psf).all() and psf.sum() > 0 else None


def is_constant(source: psfs.PsfSource, shape) -> bool:
    """Whether a PSF source gives the same stamp at the centre, the corners and two
    asymmetric points of the image."""
    ny, nx = shape
    ref = source.at((ny - 1) / 2.0, (nx - 1) / 2.0)
    for fy, fx in ((0, 0), (0, 1), (1, 0), (1, 1), (0.3, 0.8), (0.85, 0.2)):
        other = source.at(fy * (ny - 1), fx * (nx - 1))
        if other.shape != ref.shape or not np.array_equal(other, ref):
            return False
    return True

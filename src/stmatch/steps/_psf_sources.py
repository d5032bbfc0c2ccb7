"""Step PSFs: from a file, an analytic model, or the image's own stars.

Shared by ZogyStep and PsfModelMatchStep. Every PSF here is returned on the
grid of the image being processed as a callable ``(y, x) -> stamp`` (odd,
centred, unit sum), evaluated where a step needs it (tile or cell centres).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..algorithms.psf import (
    check_psf_pair,
    gaussian_psf,
    moffat_psf,
    normalize_psf,
    recentre_psf,
)
from ..algorithms.psfgrid import empirical_psf, fwhm_of, psf_at
from ..algorithms.resample import affine_resample_stamp
from ..algorithms.stars import find_stars

log = logging.getLogger("stmatch.steps.psf")

#: Largest acceptable centroid offset between the two PSFs (pixels).
CENTRING_TOLERANCE = 0.2


@dataclass
class PsfSource:
    """Where a PSF comes from and how to evaluate it on the science grid."""

    kind: str  # "file", "analytic", "empirical"
    description: str
    at: Callable  # (y, x) -> stamp
    fwhm: float
    n_stars: int = 0
    pixel_scale: float | None = None  # arcsec per pixel of the file, when it says

    def centre(self, shape):
        return self.at((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0)


def _odd(n):
    n = int(math.ceil(n))
    return n if n % 2 else n + 1


def analytic_size(fwhm, kind, size=None):
    """Stamp size for an analytic PSF: ``size`` or ~8 FWHM (12 for Moffat), >= 15."""
    if size:
        return _odd(size)
    return _odd(max(15.0, (12.0 if kind == "moffat" else 8.0) * fwhm))


def analytic_psf(fwhm, *, kind="gaussian", beta=2.5, size=None):
    shape = analytic_size(fwhm, kind, size)
    if kind == "moffat":
        return moffat_psf(shape, fwhm, beta)
    return gaussian_psf(shape, fwhm)


def _constant(stamp):
    stamp = normalize_psf(stamp)

    def at(y, x):
        return stamp

    return at


def _carry(at, jacobian, to_template):
    """Wrap a template-grid PSF callable so that it answers on the science grid."""
    if jacobian is None:
        return at
    identity = np.allclose(jacobian, np.eye(2), atol=1e-3)

    def wrapped(y, x):
        yt, xt = to_template(y, x) if to_template is not None else (y, x)
        stamp = at(yt, xt)
        if identity:
            return stamp
        return affine_resample_stamp(stamp, jacobian)

    return wrapped


def from_file(path, *, jacobian=None, to_template=None):
    """PsfSource from a PSF file (our PsfModel, or an stpsf/webbpsf FITS grid)."""
    from ..models.psf_model import read_psf_file

    model = read_psf_file(path)
    # Oversampled stamps are effective (pixel-integrated) PSFs: the detector-sampled
    # PSF is every k-th sample through the centre, not a k x k block sum.
    stamps = np.asarray(model.detector_stamps(), dtype=np.float64)
    if stamps.ndim == 2:
        stamps = stamps[None]
    over = int(model.oversampling)
    n = stamps.shape[0]
    if n == 1:
        at = _constant(stamps[0])
        desc = f"{path} (one PSF, oversampling {over})"
    else:
        gx, gy = (np.asarray(v, dtype=np.float64) for v in model.positions())

        def at(y, x):
            return psf_at(stamps, gx, gy, x, y)

        desc = f"{path} (grid of {n} PSFs, oversampling {over})"
    at = _carry(at, jacobian, to_template)
    fwhm = fwhm_of(at(0.0, 0.0))
    scale = model.meta.psf.instance.get("pixel_scale")
    return PsfSource("file", desc, at, fwhm, pixel_scale=None if scale is None else float(scale))


def from_stamp(stamp, description, *, kind="file"):
    """PsfSource of one stamp that applies everywhere (normalised to unit sum)."""
    at = _constant(stamp)
    return PsfSource(kind, description, at, fwhm_of(at(0.0, 0.0)))


def from_fwhm(fwhm, *, kind, beta, size, jacobian=None):
    """PsfSource of an analytic PSF (FWHM in the image's own pixels)."""
    stamp = analytic_psf(fwhm, kind=kind, beta=beta, size=size)
    at = _carry(_constant(stamp), jacobian, None)
    desc = f"analytic {kind}, FWHM {fwhm:g} px" + (f", beta {beta:g}" if kind == "moffat" else "")
    return PsfSource("analytic", desc, at, float(fwhm))


def from_stars(arrays, *, size, threshold, saturated=None, name="image"):
    """PsfSource estimated from isolated, unsaturated stars of the image itself."""
    mask = arrays.bad if saturated is None else (arrays.bad | saturated)
    data = np.where(arrays.bad, 0.0, arrays.data)
    size = _odd(size)
    stars = find_stars(
        data,
        sigma=arrays.sigma,
        mask=mask,
        threshold=threshold,
        border=size // 2 + 1,
    )
    good = np.asarray(stars.isolated, dtype=bool)
    pos = np.column_stack([stars.x[good], stars.y[good]])
    if pos.shape[0] == 0:
        raise ValueError(
            f"{name}: no isolated unsaturated stars above {threshold:g} sigma to build a PSF "
            "from; give a PSF file or an analytic FWHM"
        )
    try:
        emp = empirical_psf(data, pos, size=size, sigma=arrays.sigma, mask=mask)
    except ValueError as exc:
        raise ValueError(
            f"{name}: cannot build an empirical PSF ({exc}); give a PSF file or an analytic FWHM"
        ) from None
    desc = f"empirical from {emp.n_used} stars (FWHM {emp.fwhm:.2f} px)"
    return PsfSource("empirical", desc, _constant(emp.psf), float(emp.fwhm), int(emp.n_used))


def checked_pair(psf_new: PsfSource, psf_ref: PsfSource):
    """Callables that re-centre a PSF pair whose centroids differ by > 0.2 px."""
    warned = []

    def pair(y, x):
        pn, pr = psf_new.at(y, x), psf_ref.at(y, x)
        (dy, dx), exceeds = check_psf_pair(pn, pr, tolerance=CENTRING_TOLERANCE)
        if exceeds:
            if not warned:
                log.warning(
                    "PSF centroids differ by (dy, dx) = (%.2f, %.2f) px at (y, x) = (%.0f, %.0f):"
                    " re-centring both PSFs on their stamp centres",
                    dy,
                    dx,
                    y,
                    x,
                )
                warned.append(True)
            pn, pr = recentre_psf(pn), recentre_psf(pr)
        return pn, pr

    cache = {}

    def get(y, x):
        key = (float(y), float(x))
        if key not in cache:
            cache.clear()
            cache[key] = pair(y, x)
        return cache[key]

    return (lambda y, x: get(y, x)[0]), (lambda y, x: get(y, x)[1]), warned

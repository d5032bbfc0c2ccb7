"""Noise-free point sources and analytic PSF stamps for the synthetic data sets.

`psf_stamp` gives a centred, pixel-integrated Gaussian or Moffat stamp of unit
sum; `render_point_sources` renders point sources at sub-pixel positions with
such a profile or with a given PSF stamp; `inject_transients` adds them to a
copy of an image model.  Also holds the argument checks shared with the ZOGY
pair generator.
"""

import math

import numpy as np

from stmatch.algorithms.psf import gaussian_psf, moffat_psf, normalize_psf, recentre_psf

__all__ = ["inject_transients", "psf_stamp", "render_point_sources"]

_PSF_KINDS = ("gaussian", "moffat")
_STAMP_FWHMS = 8.0  # default stamp size: the smallest odd number of pixels >= 8 FWHM


def _check_shape(shape, name="shape"):
    try:
        ny, nx = (int(n) for n in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of positive integers, got {shape!r}") from None
    if ny < 1 or nx < 1:
        raise ValueError(f"{name} must be a pair of positive integers, got {shape!r}")
    return ny, nx


def _default_stamp_size(fwhm):
    """Smallest odd integer >= ``8 * fwhm`` (and >= 3)."""
    n = max(3, int(math.ceil(_STAMP_FWHMS * float(fwhm) - 1e-9)))
    return n if n % 2 else n + 1


def _check_kind(kind):
    kind = str(kind).lower()
    if kind not in _PSF_KINDS:
        raise ValueError(f"PSF kind must be one of {_PSF_KINDS}, got {kind!r}")
    return kind


def _check_positive(value, name):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and positive, got {value!r}")
    return v


def _check_size(size, fwhm):
    if size is None:
        return _default_stamp_size(fwhm)
    if int(size) != size or size < 1 or int(size) % 2 == 0:
        raise ValueError(f"stamp size must be a positive odd integer, got {size!r}")
    return int(size)


def psf_stamp(kind, fwhm, *, size=None, beta=2.5):
    r"""
    Centred, pixel-integrated analytic PSF stamp with unit sum.

    Parameters
    ----------
    kind : {"gaussian", "moffat"}
        Profile: circular Gaussian, or Moffat
        :math:`(1 + r^2/a^2)^{-\beta}` with :math:`a = \mathrm{FWHM} / (2\sqrt{2^{1/\beta} - 1})`.
    fwhm : float
        Full width at half maximum in pixels.
    size : int, optional
        Odd stamp side; default the smallest odd integer ``>= 8 * fwhm``.
    beta : float, optional
        Moffat index (ignored for the Gaussian).

    Returns
    -------
    numpy.ndarray
        Float64 ``(size, size)`` stamp centred on pixel ``(size // 2, size // 2)``,
        normalised to unit sum inside the stamp.  A star rendered by
        `render_point_sources` at an integer pixel position is exactly
        ``flux * psf_stamp(...)`` (same kind, FWHM, beta and size).
    """
    kind = _check_kind(kind)
    fwhm = _check_positive(fwhm, "fwhm")
    size = _check_size(size, fwhm)
    if kind == "gaussian":
        return gaussian_psf(size, fwhm, integrate=True)
    return moffat_psf(size, fwhm, beta=_check_positive(beta, "beta"), integrate=True)


def render_point_sources(
    shape, x, y, flux, psf="gaussian", *, fwhm=2.5, beta=2.5, stamp_size=None, dtype=np.float64
):
    r"""
    Noise-free image of point sources at sub-pixel positions.

    Pixel ``(i, j)`` covers ``[i - 1/2, i + 1/2] x [j - 1/2, j + 1/2]`` (array
    index ``(y, x)``).  Each source is rendered in a stamp of ``stamp_size``
    pixels centred on the pixel nearest to it, ``(floor(y + 1/2), floor(x + 1/2))``,
    and clipped at the image edges.

    - ``psf="gaussian"`` or ``"moffat"``: the analytic profile is centred exactly
      at ``(x, y)`` and integrated over each pixel (`psf_stamp`); the stamp is
      normalised to unit sum, so a source whose stamp lies inside the image
      contributes exactly ``flux`` and, for the Gaussian, its centroid is
      ``(x, y)`` (the Moffat wings beyond the stamp are dropped, which moves
      the centroid of an off-centre Moffat stamp by up to ~1e-2 px).
    - ``psf`` an array: an odd-sized stamp whose centre pixel is the source
      position.  It is normalised to unit sum and moved by the fractional part
      of the position with a Fourier shift,
      :math:`\hat P'(k) = \hat P(k)\, e^{-2\pi i (k_y \delta y + k_x \delta x)}`
      (`stmatch.algorithms.psf.recentre_psf`): an exact band-limited translation
      of a well-sampled PSF that treats the stamp as periodic (the stamp needs an
      empty margin) and may ring on undersampled ones.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    x, y : array_like
        Source positions in pixels (broadcast together with ``flux``).
    flux : array_like
        Total source fluxes (sum over pixels).
    psf : {"gaussian", "moffat"} or numpy.ndarray, optional
        Analytic profile or an odd-sized PSF stamp.
    fwhm : float, optional
        FWHM of the analytic profile in pixels.
    beta : float, optional
        Moffat index.
    stamp_size : int, optional
        Odd stamp side for the analytic profiles; default the smallest odd
        integer ``>= 8 * fwhm``.  Ignored for an array ``psf``.
    dtype : numpy.dtype, optional
        Output dtype (the sum is done in float64).

    Returns
    -------
    numpy.ndarray
        The image.
    """
    ny, nx = _check_shape(shape)
    x, y, flux = (np.ravel(a).astype(np.float64) for a in np.broadcast_arrays(x, y, flux))
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(np.isfinite(flux))):
        raise ValueError("x, y and flux must be finite")
    if isinstance(psf, str):
        kind = _check_kind(psf)
        fwhm = _check_positive(fwhm, "fwhm")
        beta = _check_positive(beta, "beta")
        size = _check_size(stamp_size, fwhm)
        stamp_shape = (size, size)
        base = None
    else:
        base = normalize_psf(psf)
        if any(n % 2 == 0 for n in base.shape):
            raise ValueError(f"psf stamp must have odd sizes, got shape {base.shape}")
        stamp_shape = base.shape
    hy, hx = stamp_shape[0] // 2, stamp_shape[1] // 2

    image = np.zeros((ny, nx), dtype=np.float64)
    cy_all = np.floor(y + 0.5).astype(np.int64)
    cx_all = np.floor(x + 0.5).astype(np.int64)
    for xi, yi, fi, cx, cy in zip(x, y, flux, cx_all, cy_all, strict=True):
        y0, x0 = cy - hy, cx - hx
        ys0, xs0 = max(y0, 0), max(x0, 0)
        ys1, xs1 = min(y0 + stamp_shape[0], ny), min(x0 + stamp_shape[1], nx)
        if ys0 >= ys1 or xs0 >= xs1 or fi == 0.0:
            continue
        dy, dx = yi - cy, xi - cx
        if base is not None:
            stamp = base if dy == 0.0 and dx == 0.0 else recentre_psf(base, shift=(dy, dx))
        elif kind == "gaussian":
            stamp = gaussian_psf(stamp_shape, fwhm, center=(hy + dy, hx + dx))
        else:
            stamp = moffat_psf(stamp_shape, fwhm, beta=beta, center=(hy + dy, hx + dx))
        image[ys0:ys1, xs0:xs1] += fi * stamp[ys0 - y0 : ys1 - y0, xs0 - x0 : xs1 - x0]
    return image.astype(dtype, copy=False)


def inject_transients(model, x, y, flux, *, fwhm, psf_kind="gaussian", beta=2.5, stamp_size=None):
    """
    Add point sources to a copy of an image model.

    Parameters
    ----------
    model : stdatamodels.jwst.datamodels.ImageModel
        Input model (not modified).
    x, y : array_like
        Positions in the model's pixels.
    flux : array_like
        Total fluxes in data units.
    fwhm : float
        PSF FWHM in pixels (ignored when ``psf_kind`` is an array).
    psf_kind : {"gaussian", "moffat"} or numpy.ndarray, optional
        Analytic profile or an odd-sized PSF stamp, see `render_point_sources`.
    beta : float, optional
        Moffat index.
    stamp_size : int, optional
        Odd stamp side, see `render_point_sources`.

    Returns
    -------
    stdatamodels.jwst.datamodels.ImageModel
        A deep copy with the sources added to ``data``; ``err``, the variances
        and ``dq`` are unchanged (no shot noise is added) and NaN pixels stay NaN.
    """
    if getattr(model, "data", None) is None or np.ndim(model.data) != 2:
        raise ValueError("model must be an image model with 2-D data")
    added = render_point_sources(
        model.data.shape, x, y, flux, psf=psf_kind, fwhm=fwhm, beta=beta, stamp_size=stamp_size
    )
    out = model.copy()
    out.data = (out.data.astype(np.float64) + added).astype(model.data.dtype)
    return out

r"""Point-spread-function stamps: normalisation, centring and FFT placement.

This module is the one place that decides where the centre of a PSF stamp is.
All stamps are odd-sized, and the centre of a stamp of shape ``(h, w)`` is the
pixel ``(h // 2, w // 2)``, i.e. the geometric centre :math:`((h-1)/2, (w-1)/2)`
in array index coordinates (pixel :math:`i` covers :math:`[i - 1/2, i + 1/2]`).

* :func:`centroid` gives the first moments of a stamp,
  :math:`\bar y = \sum_{ij} i\,P_{ij} / \sum_{ij} P_{ij}` and
  :math:`\bar x = \sum_{ij} j\,P_{ij} / \sum_{ij} P_{ij}`.
* :func:`recentre_psf` moves the centroid to the stamp centre by a Fourier shift,
  :math:`\hat P'(k) = \hat P(k)\,e^{-2\pi i (k_y \Delta y + k_x \Delta x)}`, which is
  exact (band-limited interpolation) for any sub-pixel shift of a well-sampled PSF.
* :func:`psf_to_fft_origin` puts the centre pixel of a stamp at index ``(0, 0)`` of
  a larger array, wrapping the other pixels around (the placement of
  :func:`numpy.fft.ifftshift`), so that
  ``irfft2(rfft2(image) * rfft2(psf_to_fft_origin(psf, image.shape)))`` is the
  circular convolution of the image with the PSF **without any shift**: a delta
  function at pixel ``(y0, x0)`` becomes the stamp with its centre on ``(y0, x0)``.
  :func:`fft_origin_to_stamp` is its inverse (it cuts a centred stamp out of an
  array whose origin is at ``(0, 0)``).

Centring matters for image subtraction: an origin off by one pixel, or two PSFs
whose centroids differ by a fraction of a pixel, leave dipoles in the difference
image (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27, "ZOGY"). :func:`check_psf_pair`
measures the centroid offset between two stamps.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import fft as sfft
from scipy.special import ndtr

__all__ = [
    "PsfPairCheck",
    "centroid",
    "check_psf_pair",
    "fft_origin_to_stamp",
    "gaussian_psf",
    "moffat_psf",
    "normalize_psf",
    "psf_to_fft_origin",
    "recentre_psf",
    "stamp_centre",
]

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


class PsfPairCheck(NamedTuple):
    """Centroid offset between two PSF stamps (see :func:`check_psf_pair`).

    Attributes
    ----------
    offset : tuple of float
        ``(dy, dx)``: centroid of ``psf_b`` minus centroid of ``psf_a``, each measured
        from its own stamp centre, in pixels.
    exceeds : bool
        True when :math:`\\sqrt{dy^2 + dx^2}` exceeds the tolerance.
    """

    offset: tuple[float, float]
    exceeds: bool


def _as_2d_float(psf, name: str = "psf") -> np.ndarray:
    arr = np.asarray(psf)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got {arr.ndim} dimension(s)")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be a real numeric array, not {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _check_odd(shape, name: str = "psf") -> None:
    if any(n % 2 == 0 for n in shape):
        raise ValueError(
            f"{name} stamp must have odd sizes so that it has a centre pixel, got shape "
            f"{tuple(shape)}; crop or pad it by one pixel (and re-centre it)"
        )


def _odd_shape(shape) -> tuple[int, int]:
    if np.ndim(shape) == 0:
        shape = (shape, shape)
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2 or any(n < 1 for n in shape):
        raise ValueError(f"shape must be a positive int or a pair of them, got {shape}")
    _check_odd(shape)
    return shape


def stamp_centre(shape) -> tuple[float, float]:
    """Geometric centre ``((h - 1) / 2, (w - 1) / 2)`` of a stamp of shape ``(h, w)``."""
    return ((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0)


def centroid(psf) -> tuple[float, float]:
    r"""First moments of a stamp in array index coordinates.

    .. math::

        \bar y = \frac{\sum_{ij} i\, P_{ij}}{\sum_{ij} P_{ij}}, \qquad
        \bar x = \frac{\sum_{ij} j\, P_{ij}}{\sum_{ij} P_{ij}}

    Parameters
    ----------
    psf : array_like
        2-D stamp with finite values and a positive sum.

    Returns
    -------
    tuple of float
        ``(y, x)``; the centre of pixel ``(i, j)`` is ``(i, j)``.

    Raises
    ------
    ValueError
        For non-2-D input, non-finite values or a non-positive sum.
    """
    p = normalize_psf(psf)
    y = float(np.dot(p.sum(axis=1), np.arange(p.shape[0], dtype=np.float64)))
    x = float(np.dot(p.sum(axis=0), np.arange(p.shape[1], dtype=np.float64)))
    return (y, x)


def normalize_psf(psf) -> np.ndarray:
    """Float64 copy of a stamp scaled to unit sum.

    Parameters
    ----------
    psf : array_like
        2-D stamp.

    Returns
    -------
    numpy.ndarray
        ``psf / psf.sum()`` as a new float64 array.

    Raises
    ------
    ValueError
        For non-2-D input, non-finite values or a sum that is not positive.
    """
    p = _as_2d_float(psf)
    if not np.all(np.isfinite(p)):
        raise ValueError("psf contains non-finite values (NaN or inf)")
    total = float(p.sum())
    if not total > 0:
        raise ValueError(f"psf must have a positive sum, got {total!r}")
    return p / total


def _fourier_shift(p: np.ndarray, shift) -> np.ndarray:
    """Shift an odd-sized stamp by ``shift = (dy, dx)`` pixels (circular, exact)."""
    ky = sfft.fftfreq(p.shape[0])[:, None]
    kx = sfft.rfftfreq(p.shape[1])[None, :]
    phase = np.exp(-2j * np.pi * (ky * shift[0] + kx * shift[1]))
    return sfft.irfft2(sfft.rfft2(p) * phase, s=p.shape)


def recentre_psf(psf, *, shift=None, tol: float = 1e-9, max_iter: int = 20) -> np.ndarray:
    r"""Shift a PSF stamp so that its centroid is at the stamp centre.

    The stamp is moved by a Fourier shift,
    :math:`\hat P'(k) = \hat P(k)\, e^{-2\pi i (k_y \Delta y + k_x \Delta x)}`, an
    exact sub-pixel translation of the band-limited interpolant of the stamp (the
    stamp is treated as periodic: flux that leaves one side re-enters on the
    other, so stamps should contain the PSF with some empty margin). Stamps must
    be odd-sized, so there is no Nyquist frequency and the result is real.

    Without ``shift`` the shift is :math:`c - \bar c` (stamp centre minus
    centroid), refined by a few fixed-point iterations (the centroid of a shifted,
    truncated stamp moves by the shift only approximately) until the centroid is
    within ``tol`` pixels of the centre.

    Parameters
    ----------
    psf : array_like
        2-D odd-sized stamp with a positive sum.
    shift : tuple of float, optional
        ``(dy, dx)`` to apply instead of the automatic centring.
    tol : float
        Convergence tolerance of the automatic centring, in pixels.
    max_iter : int
        Maximum number of refinements of the automatic centring.

    Returns
    -------
    numpy.ndarray
        Shifted float64 stamp with unit sum.

    Raises
    ------
    ValueError
        For even sizes and for the cases of :func:`normalize_psf`.
    """
    p = normalize_psf(psf)
    _check_odd(p.shape)
    if shift is not None:
        dy, dx = (float(v) for v in shift)
        if not (math.isfinite(dy) and math.isfinite(dx)):
            raise ValueError(f"shift must be finite, got {shift!r}")
        return normalize_psf(_fourier_shift(p, (dy, dx)))
    cy, cx = stamp_centre(p.shape)
    y, x = centroid(p)
    total = np.array([cy - y, cx - x])
    out = p
    for _ in range(max_iter):
        out = _fourier_shift(p, total)
        out = out / out.sum()
        y, x = centroid(out)
        resid = np.array([cy - y, cx - x])
        if np.all(np.abs(resid) < tol):
            break
        total = total + resid
    return out


def psf_to_fft_origin(psf, shape) -> np.ndarray:
    """Embed a centred, odd-sized stamp in an array with its centre pixel at ``(0, 0)``.

    Pixel ``(i, j)`` of a stamp of shape ``(h, w)`` goes to
    ``((i - h // 2) % shape[0], (j - w // 2) % shape[1])``; everything else is zero.
    With this placement ``irfft2(rfft2(image) * rfft2(result))`` is the circular
    convolution of ``image`` with the stamp, without shift. The values are copied
    as they are (normalise the stamp first if needed).

    Parameters
    ----------
    psf : array_like
        2-D odd-sized stamp.
    shape : tuple of int
        Shape of the output (any parity), at least as large as the stamp.

    Returns
    -------
    numpy.ndarray
        Float64 array of ``shape``.

    Raises
    ------
    ValueError
        For even-sized stamps, non-finite values or a stamp larger than ``shape``.
    """
    p = _as_2d_float(psf)
    _check_odd(p.shape)
    if not np.all(np.isfinite(p)):
        raise ValueError("psf contains non-finite values (NaN or inf)")
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2:
        raise ValueError(f"shape must have two elements, got {shape}")
    if p.shape[0] > shape[0] or p.shape[1] > shape[1]:
        raise ValueError(f"psf stamp {p.shape} is larger than the array shape {shape}")
    out = np.zeros(shape, dtype=np.float64)
    iy = (np.arange(p.shape[0]) - p.shape[0] // 2) % shape[0]
    ix = (np.arange(p.shape[1]) - p.shape[1] // 2) % shape[1]
    out[np.ix_(iy, ix)] = p
    return out


def fft_origin_to_stamp(array, shape) -> np.ndarray:
    """Cut a centred odd-sized stamp out of an array whose origin is at ``(0, 0)``.

    The inverse of :func:`psf_to_fft_origin`: stamp pixel ``(i, j)`` is
    ``array[(i - h // 2) % ny, (j - w // 2) % nx]``.

    Parameters
    ----------
    array : array_like
        2-D array, e.g. the inverse FFT of a kernel's transform.
    shape : tuple of int
        Odd stamp shape ``(h, w)``, not larger than ``array``.

    Returns
    -------
    numpy.ndarray
        New array of shape ``(h, w)`` (values copied, not normalised).
    """
    a = np.asarray(array)
    if a.ndim != 2:
        raise ValueError(f"array must be 2-D, got {a.ndim} dimension(s)")
    shape = _odd_shape(shape)
    if shape[0] > a.shape[0] or shape[1] > a.shape[1]:
        raise ValueError(f"stamp shape {shape} is larger than the array shape {a.shape}")
    iy = (np.arange(shape[0]) - shape[0] // 2) % a.shape[0]
    ix = (np.arange(shape[1]) - shape[1] // 2) % a.shape[1]
    return a[np.ix_(iy, ix)].copy()


def _centre_arg(shape, center) -> tuple[float, float]:
    if center is None:
        return stamp_centre(shape)
    cy, cx = (float(v) for v in center)
    if not (math.isfinite(cy) and math.isfinite(cx)):
        raise ValueError(f"center must be finite, got {center!r}")
    return cy, cx


def _positive(value, name: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and positive, got {value!r}")
    return v


def gaussian_psf(shape, fwhm, *, center=None, integrate: bool = True) -> np.ndarray:
    r"""Circular Gaussian PSF stamp with unit sum.

    With :math:`\sigma = \mathrm{FWHM} / (2\sqrt{2 \ln 2})` and centre
    :math:`(y_0, x_0)`, the pixel-integrated value of pixel :math:`(i, j)` is the
    product of

    .. math::

        g_i = \Phi\!\left(\frac{i + 1/2 - y_0}{\sigma}\right)
              - \Phi\!\left(\frac{i - 1/2 - y_0}{\sigma}\right)

    and the same in :math:`x` (:math:`\Phi` the standard normal distribution
    function, evaluated on the side of the tail that keeps relative precision);
    with ``integrate=False`` the Gaussian is sampled at the pixel centres,
    :math:`\exp(-((i - y_0)^2 + (j - x_0)^2) / 2\sigma^2)`. The stamp is then
    normalised to unit sum.

    Parameters
    ----------
    shape : int or tuple of int
        Odd stamp shape.
    fwhm : float
        Full width at half maximum in pixels.
    center : tuple of float, optional
        ``(y, x)`` of the PSF centre; default the stamp centre.
    integrate : bool
        Integrate over pixels (default) or sample at pixel centres.

    Returns
    -------
    numpy.ndarray
        Float64 stamp.
    """
    shape = _odd_shape(shape)
    sigma = _positive(fwhm, "fwhm") / _FWHM_PER_SIGMA
    cy, cx = _centre_arg(shape, center)

    def profile(n, c):
        i = np.arange(n, dtype=np.float64) - c
        if not integrate:
            return np.exp(-0.5 * (i / sigma) ** 2)
        lo = (i - 0.5) / sigma
        hi = (i + 0.5) / sigma
        # upper tail where the pixel lies right of the centre: Phi(-lo) - Phi(-hi)
        return np.where(lo > 0, ndtr(-lo) - ndtr(-hi), ndtr(hi) - ndtr(lo))

    return normalize_psf(np.outer(profile(shape[0], cy), profile(shape[1], cx)))


def moffat_psf(
    shape, fwhm, beta=2.5, *, center=None, integrate: bool = True, oversample: int = 11
) -> np.ndarray:
    r"""Circular Moffat PSF stamp with unit sum.

    .. math::

        I(r) \propto \left(1 + \frac{r^2}{a^2}\right)^{-\beta}, \qquad
        a = \frac{\mathrm{FWHM}}{2\sqrt{2^{1/\beta} - 1}}

    Pixel integration uses the midpoint rule on ``oversample × oversample``
    sub-pixels per pixel (odd, so that one sub-pixel sits on the pixel centre);
    with ``integrate=False`` the profile is sampled at the pixel centres. The
    stamp is normalised to unit sum (the wings outside the stamp are dropped).

    Parameters
    ----------
    shape : int or tuple of int
        Odd stamp shape.
    fwhm : float
        Full width at half maximum in pixels.
    beta : float
        Moffat index (> 1 for a finite total flux).
    center : tuple of float, optional
        ``(y, x)`` of the PSF centre; default the stamp centre.
    integrate : bool
        Integrate over pixels (default) or sample at pixel centres.
    oversample : int
        Odd number of sub-samples per pixel and axis for the integration.

    Returns
    -------
    numpy.ndarray
        Float64 stamp.
    """
    shape = _odd_shape(shape)
    fwhm = _positive(fwhm, "fwhm")
    beta = _positive(beta, "beta")
    if int(oversample) != oversample or oversample < 1 or oversample % 2 == 0:
        raise ValueError(f"oversample must be a positive odd integer, got {oversample!r}")
    a = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    cy, cx = _centre_arg(shape, center)
    m = int(oversample) if integrate else 1
    sub = (np.arange(m) - (m - 1) / 2.0) / m

    def coords(n, c):
        return (np.arange(n, dtype=np.float64)[:, None] + sub[None, :]).ravel() - c

    yy = coords(shape[0], cy)[:, None]
    xx = coords(shape[1], cx)[None, :]
    img = (1.0 + (yy * yy + xx * xx) / (a * a)) ** (-beta)
    if m > 1:
        img = img.reshape(shape[0], m, shape[1], m).sum(axis=(1, 3))
    return normalize_psf(img)


def check_psf_pair(psf_a, psf_b, *, tolerance: float = 0.2) -> PsfPairCheck:
    """Centroid offset between two PSF stamps, each relative to its own centre.

    Parameters
    ----------
    psf_a, psf_b : array_like
        2-D stamps (any sizes).
    tolerance : float
        Largest acceptable offset length in pixels.

    Returns
    -------
    PsfPairCheck
        ``offset = (dy, dx)`` (``psf_b`` minus ``psf_a``) and ``exceeds``, true when
        ``hypot(dy, dx) > tolerance``. Unpacks as ``(dy, dx), exceeds``.
    """
    tolerance = float(tolerance)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be finite and non-negative, got {tolerance!r}")
    pa = np.asarray(psf_a)
    pb = np.asarray(psf_b)
    ya, xa = centroid(pa)
    yb, xb = centroid(pb)
    ca, cb = stamp_centre(pa.shape), stamp_centre(pb.shape)
    dy = (yb - cb[0]) - (ya - ca[0])
    dx = (xb - cb[1]) - (xa - ca[1])
    return PsfPairCheck((dy, dx), bool(math.hypot(dy, dx) > tolerance))

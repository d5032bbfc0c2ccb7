r"""PSF stamps from grids, oversampled models and stars.

Conventions are those of :mod:`stmatch.algorithms.psf`: odd-sized stamps indexed
``(y, x)``, pixel :math:`i` covering :math:`[i - 1/2, i + 1/2]`, the point-source
position at the centre of the centre pixel.

* :func:`bin_oversampled`: an oversampled pixel holds the PSF integrated over a
  :math:`1/s \times 1/s` detector-pixel square, a detector pixel the integral over
  :math:`s \times s` of them. For even :math:`s` the detector pixel centred on the
  source starts and ends in the middle of an oversampled pixel; the integral is
  taken exactly (for a band-limited PSF) by filtering each axis with the transform
  of a box of :math:`s` pixels, :math:`\hat K(q) = \sin(\pi s q)/\sin(\pi q)` (the
  Dirichlet kernel, for odd :math:`s` exactly the block sum) and keeping every
  :math:`s`-th pixel from the centre.
* :func:`oversample_psf` inverts it for well-sampled PSFs: the intensity behind a
  detector-sampled stamp has :math:`\hat I(k) = \hat P(k)/\mathrm{sinc}(k)`
  (:math:`\mathrm{sinc} \ge 2/\pi` for :math:`|k| < 1/2`: well conditioned).
* :func:`psf_at` interpolates a grid of PSFs; :func:`empirical_psf` stacks stars
  into an effective PSF (Anderson & King 2000, PASP 112, 1360); :func:`fwhm_of`
  uses adaptive second moments (Bernstein & Jarvis 2002, AJ 123, 583).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft

from ._stamps import (
    FWHM_PER_SIGMA,
    _int_at_least,
    _positive_float,
    _stamp,
    adaptive_moments,
    cut_boxes,
    image_and_bad,
    positions_xy,
    shift_stack,
    windowed_centroids,
)
from .psf import normalize_psf, recentre_psf

__all__ = [
    "EmpiricalPsf",
    "bin_oversampled",
    "empirical_psf",
    "fwhm_of",
    "oversample_psf",
    "psf_at",
]


# ----------------------------------------------------------------------------- binning
def _dirichlet(n: int, s: int) -> np.ndarray:
    """Transform of a box of ``s`` samples, sin(pi s q) / sin(pi q), on ``rfftfreq(n)``."""
    q = sfft.rfftfreq(n)
    out = np.full(q.shape, float(s))
    nz = q != 0
    out[nz] = np.sin(np.pi * s * q[nz]) / np.sin(np.pi * q[nz])
    return out


def _bin_axis(a: np.ndarray, s: int, axis: int) -> np.ndarray:
    n = a.shape[axis]
    c = n // 2
    half = (n - s) // (2 * s)  # whole detector pixels on each side of the centre one
    if half < 0:
        raise ValueError(
            f"an oversampled stamp of {n} pixels is smaller than one detector pixel "
            f"({s} oversampled pixels)"
        )
    a = np.moveaxis(a, axis, -1)
    if s % 2:
        start = c - half * s - (s - 1) // 2
        block = a[..., start : start + (2 * half + 1) * s]
        out = block.reshape(*block.shape[:-1], 2 * half + 1, s).sum(axis=-1)
    else:
        filt = sfft.irfft(sfft.rfft(a, axis=-1) * _dirichlet(n, s), n=n, axis=-1)
        out = filt[..., c - half * s : c + half * s + 1 : s]
    return np.moveaxis(out, -1, axis)


def bin_oversampled(stamp, oversampling: int) -> np.ndarray:
    r"""Detector-sampled stamp from a stamp oversampled by an integer factor.

    The source must sit at the centre of the oversampled stamp's centre pixel; the
    output's centre pixel is the detector pixel centred on the source. Along each
    axis the stamp is filtered with :math:`\hat K(q) = \sin(\pi s q)/\sin(\pi q)`
    (:math:`q` in cycles per oversampled pixel) and sampled every :math:`s`-th pixel
    from the centre. For odd :math:`s` this is exactly the sum over
    :math:`s \times s` blocks; for even :math:`s` it is the exact integral over the
    detector pixel, whose edges fall in the middle of oversampled pixels, of the
    band-limited interpolant of the stamp (equivalently: a Fourier shift by half an
    oversampled pixel followed by block sums).

    Only whole detector pixels are returned, ``2 * ((N - s) // (2 s)) + 1`` per
    ``N``-pixel axis: the sum is kept up to the flux in edge slivers that do not fill
    a detector pixel (none for ``N = n s``, odd ``s``; half an oversampled pixel per
    side for ``N = n s + 1``, even ``s``).

    Parameters
    ----------
    stamp : array_like
        2-D odd-sized oversampled stamp.
    oversampling : int
        Integer factor :math:`s \ge 1` (1 returns a copy).

    Returns
    -------
    numpy.ndarray
        Odd-sized float64 detector-sampled stamp (not renormalised).

    Raises
    ------
    ValueError
        For even sizes, non-finite values, a bad factor or a stamp under one pixel.
    """
    s = _int_at_least(oversampling, "oversampling", 1)
    p = _stamp(stamp, "stamp")
    if s == 1:
        return p.copy()
    return _bin_axis(_bin_axis(p, s, 0), s, 1)


def _upsample_matrix(n: int, s: int) -> np.ndarray:
    c = n // 2
    m = n * s if s % 2 else n * s + 1
    u = (np.arange(m) - m // 2) / s  # oversampled pixel centres in detector pixels
    j = np.arange(n) - c
    k = j / n  # the n frequencies of an odd period, cycles per detector pixel
    wk = np.sinc(k / s) / (s * np.sinc(k))
    arg = 2.0 * np.pi * k[None, None, :] * (u[:, None, None] - j[None, :, None])
    return (wk * np.cos(arg)).sum(axis=-1) / n


def oversample_psf(psf, oversampling: int) -> np.ndarray:
    r"""Oversampled stamp (convention of :func:`bin_oversampled`) from a detector-sampled one.

    The stamp is treated as one period of a band-limited, pixel-integrated
    intensity: per axis, with :math:`k = m/n` (:math:`|m| \le (n-1)/2`),

    .. math::

        O(u) = \frac{1}{n} \sum_k \hat P(k)\,
               \frac{\mathrm{sinc}(k/s)}{s\,\mathrm{sinc}(k)}\, e^{2\pi i k u}

    at the oversampled pixel centres :math:`u = (m - M/2)/s`. The result holds the
    intensity integrated over oversampled pixels, so that
    ``bin_oversampled(oversample_psf(P, s), s)`` returns ``P`` (exactly for odd
    :math:`s`). It adds no detail beyond the detector's Nyquist frequency: for an
    undersampled PSF use a model oversampled at the source instead.

    Parameters
    ----------
    psf : array_like
        2-D odd-sized detector-sampled stamp, ``n`` pixels per axis.
    oversampling : int
        Integer factor :math:`s`: ``n s`` (odd ``s``) or ``n s + 1`` output pixels per axis.

    Returns
    -------
    numpy.ndarray
        Odd-sized float64 stamp with the input's sum.
    """
    s = _int_at_least(oversampling, "oversampling", 1)
    p = _stamp(psf, "psf")
    if s == 1:
        return p.copy()
    out = _upsample_matrix(p.shape[0], s) @ p @ _upsample_matrix(p.shape[1], s).T
    return out * (p.sum() / out.sum())


# ----------------------------------------------------------------------------- grids
def _grid_weights(gx: np.ndarray, gy: np.ndarray, x: float, y: float, power: float, nearest: int):
    n = gx.size
    w = np.zeros(n)
    ux, uy = np.unique(gx), np.unique(gy)
    nodes = {(a, b): i for i, (a, b) in enumerate(zip(gx.tolist(), gy.tolist(), strict=True))}
    if len(nodes) == n == ux.size * uy.size:  # every (x, y) pair once: a rectangular grid

        def bracket(u, v):
            v = min(max(v, u[0]), u[-1])  # clamp outside the grid
            if u.size == 1:
                return 0, 0, 0.0
            i = int(np.clip(np.searchsorted(u, v, side="right") - 1, 0, u.size - 2))
            return i, i + 1, (v - u[i]) / (u[i + 1] - u[i])

        ix0, ix1, tx = bracket(ux, x)
        iy0, iy1, ty = bracket(uy, y)
        for ixn, wx in ((ix0, 1.0 - tx), (ix1, tx)):
            for iyn, wy in ((iy0, 1.0 - ty), (iy1, ty)):
                w[nodes[(ux[ixn].item(), uy[iyn].item())]] += wx * wy
        return w
    # scattered nodes: clamp to their bounding box, inverse-distance weights
    x = min(max(x, gx.min()), gx.max())
    y = min(max(y, gy.min()), gy.max())
    d = np.hypot(gx - x, gy - y)
    if d.min() <= 1e-9 * max(np.ptp(gx), np.ptp(gy), 1.0):
        w[np.argmin(d)] = 1.0
        return w
    idx = np.argsort(d, kind="stable")[: min(nearest, n)]
    w[idx] = d[idx] ** (-power)
    return w / w.sum()


def psf_at(
    stamps, grid_x, grid_y, x, y, *, oversampling=1, power: float = 2.0, nearest: int = 4
) -> np.ndarray:
    r"""PSF at detector position ``(x, y)`` interpolated from a grid of PSF stamps.

    When the node positions form a rectangular grid (every pair of the distinct
    ``grid_x`` and ``grid_y`` values present once, spacings may vary), the PSF is
    the bilinear interpolation of the four nodes around the position,
    :math:`P = \sum (1-t_x \mid t_x)(1-t_y \mid t_y) P_{node}`, with the position
    clamped to the grid (constant extrapolation). Otherwise the ``nearest`` nodes
    are combined with inverse-distance weights :math:`d^{-p}` (a node at the
    position is returned as it is) after clamping the position to the nodes'
    bounding box. The result is binned to detector sampling with
    :func:`bin_oversampled` and normalised to unit sum.

    Parameters
    ----------
    stamps : array_like
        ``(n, h, w)`` stack of odd-sized stamps (or one 2-D stamp), all sampled alike.
    grid_x, grid_y : array_like
        Detector positions of the ``n`` stamps (pixels).
    x, y : float
        Detector position where the PSF is wanted.
    oversampling : int
        Integer oversampling of the stamps.
    power : float
        Inverse-distance exponent for scattered nodes.
    nearest : int
        Number of scattered nodes combined.

    Returns
    -------
    numpy.ndarray
        Odd-sized float64 detector-sampled stamp with unit sum.
    """
    cube = np.asarray(stamps)
    cube = cube[None] if cube.ndim == 2 else cube
    if cube.ndim != 3 or cube.shape[0] == 0:
        raise ValueError(f"stamps must be an (n, h, w) stack of PSFs, got shape {cube.shape}")
    cube = np.stack([_stamp(c, "each PSF stamp") for c in cube])
    gx = np.atleast_1d(np.asarray(grid_x, dtype=np.float64)).ravel()
    gy = np.atleast_1d(np.asarray(grid_y, dtype=np.float64)).ravel()
    if gx.size != cube.shape[0] or gy.size != cube.shape[0]:
        raise ValueError(
            f"grid_x and grid_y need one position per stamp ({cube.shape[0]}), "
            f"got {gx.size} and {gy.size}"
        )
    if not (np.all(np.isfinite(gx)) and np.all(np.isfinite(gy))):
        raise ValueError("grid positions must be finite")
    x, y = float(x), float(y)
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"position must be finite, got ({x}, {y})")
    w = _grid_weights(
        gx, gy, x, y, _positive_float(power, "power"), _int_at_least(nearest, "nearest", 1)
    )
    return normalize_psf(bin_oversampled(np.tensordot(w, cube, axes=1), oversampling))


# ----------------------------------------------------------------------------- FWHM
def fwhm_of(psf, *, deconvolve_pixel: bool = False) -> float:
    r"""Gaussian-equivalent FWHM of a PSF stamp, in pixels of the stamp.

    Adaptive second moments (see the module notes) give the covariance :math:`C` of
    the best-matching elliptical Gaussian; the FWHM is
    :math:`2\sqrt{2\ln 2}\,(\det C)^{1/4}` (the geometric mean of the axes). It is
    exact for a Gaussian and measures the core of profiles with wings (a Moffat
    with :math:`\beta = 2.5` reads about 20 % wider than its true FWHM). With
    ``deconvolve_pixel`` the pixel's own variance, :math:`1/12` per axis (Sheppard's
    correction), is removed first: the FWHM of the intensity behind a
    pixel-integrated stamp.

    Parameters
    ----------
    psf : array_like
        2-D stamp with a positive sum, roughly centred.
    deconvolve_pixel : bool
        Remove the pixel-integration width.

    Returns
    -------
    float
        FWHM in pixels.

    Raises
    ------
    ValueError
        If the moments do not converge (an empty or pathological stamp).
    """
    p = normalize_psf(psf)
    cy, cx = np.unravel_index(np.argmax(p), p.shape)
    res = adaptive_moments(p, centre=(float(cy), float(cx)))
    if res is None:
        raise ValueError("cannot measure the FWHM: the adaptive moments of the PSF do not converge")
    cov = res[2]
    if deconvolve_pixel:
        cov = cov - np.eye(2) / 12.0
    det = cov[0, 0] * cov[1, 1] - cov[0, 1] ** 2
    if not det > 0:
        raise ValueError("the PSF is narrower than a pixel: cannot remove the pixel width")
    return float(FWHM_PER_SIGMA * det**0.25)


# ----------------------------------------------------------------------------- stacking
@dataclass(frozen=True, eq=False)
class EmpiricalPsf:
    """Result of :func:`empirical_psf`.

    Attributes
    ----------
    psf : numpy.ndarray
        Odd-sized unit-sum stamp, centroid at the centre, oversampled by ``oversampling``
        (convention of :func:`bin_oversampled`).
    n_used : int
        Number of stars stacked.
    positions_used : numpy.ndarray
        ``(n_used, 2)`` refined (x, y) positions of those stars.
    fwhm : float
        Gaussian-equivalent FWHM in detector pixels (:func:`fwhm_of`).
    oversampling : int
        Oversampling factor of ``psf``.
    """

    psf: np.ndarray
    n_used: int
    positions_used: np.ndarray
    fwhm: float
    oversampling: int = 1


def _clipped_mean(values: np.ndarray, errs: np.ndarray, clip: float, n_iter: int = 10):
    """Per-pixel inverse-variance mean of an (n, h, w) stack with iterative clipping.

    ``errs`` holds one noise level per stamp. A value is rejected when its residual
    exceeds ``clip`` times its error times the robust scale (1.4826 MAD about the
    median, never below 1) of the normalised values at that pixel.
    """
    e = errs[:, None, None]
    w = np.broadcast_to(1.0 / (e * e), values.shape)
    median = np.median(values, axis=0)
    scale = np.maximum(1.4826 * np.median(np.abs(values - median) / e, axis=0), 1.0)
    keep = np.abs(values - median) / e <= clip * scale
    for _ in range(n_iter):
        wk = np.where(keep, w, 0.0)
        sw = wk.sum(axis=0)
        mean = np.where(sw > 0, (wk * values).sum(axis=0) / np.where(sw > 0, sw, 1.0), median)
        new = np.abs(values - mean) / e <= clip * scale
        if np.array_equal(new, keep):
            break
        keep = new
    return mean


def empirical_psf(
    image,
    positions,
    *,
    size: int,
    sigma: float,
    mask=None,
    oversampling: int = 1,
    min_stars: int = 5,
    clip: float = 3.0,
    annulus: int | None = None,
) -> EmpiricalPsf:
    r"""Effective PSF stacked from stars (Anderson & King 2000, PASP 112, 1360).

    For every position a ``size``-square stamp is cut around the nearest pixel and a
    local background, the median of an annulus between radii ``size // 2 + 1/2``
    and ``size // 2 + annulus``, is subtracted. Stars whose stamp touches a masked
    or non-finite pixel or the image edge are rejected. Each stamp is centred on
    its Gaussian-windowed centroid (window of the stack's adaptive width) by a
    Fourier shift and normalised; a first stack :math:`T` is the per-pixel
    sigma-clipped mean weighted by :math:`F_i^2/\sigma^2` (the inverse variance of a
    unit-sum stamp of flux :math:`F_i` on background noise :math:`\sigma`). Then each
    star's flux is refitted by least squares, :math:`a_i \approx F_i T` (set by the
    core, so faint neighbours in the wings do not bias it), and the stamps are
    renormalised with it and stacked again. The result is renormalised to unit sum
    and recentred (first moments) by :func:`~stmatch.algorithms.psf.recentre_psf`;
    with ``oversampling > 1`` it is then resampled by :func:`oversample_psf`.

    Parameters
    ----------
    image : array_like
        2-D background-subtracted image.
    positions : StarList or array_like
        Star positions: an object with ``x`` and ``y`` (e.g. from ``find_stars``) or an
        ``(N, 2)`` array of (x, y). Centroids within about a pixel are enough.
    size : int
        Odd stamp size in detector pixels.
    sigma : float
        Background noise per pixel (weights of the stack).
    mask : array_like of bool, optional
        True for unusable pixels.
    oversampling : int
        Oversampling of the returned stamp (see :func:`oversample_psf`).
    min_stars : int
        Fewest usable stars accepted.
    clip : float
        Clipping threshold of the per-pixel stack, in units of the noise.
    annulus : int, optional
        Width of the background annulus in pixels (default ``max(2, size // 4)``).

    Returns
    -------
    EmpiricalPsf

    Raises
    ------
    ValueError
        For bad inputs and when fewer than ``min_stars`` stars are usable.
    """
    img, bad = image_and_bad(image, mask)
    size = _int_at_least(size, "size", 5)
    if size % 2 == 0:
        raise ValueError(f"size must be odd (a stamp with a centre pixel), got {size}")
    sigma = _positive_float(sigma, "sigma")
    s = _int_at_least(oversampling, "oversampling", 1)
    min_stars = _int_at_least(min_stars, "min_stars", 1)
    clip = _positive_float(clip, "clip")
    h = size // 2
    width = max(2, size // 4) if annulus is None else _int_at_least(annulus, "annulus", 1)
    xs, ys = positions_xy(positions)
    ny, nx = img.shape
    ix, iy = np.rint(xs).astype(np.int64), np.rint(ys).astype(np.int64)
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    ix, iy = ix[inside], iy[inside]
    big = cut_boxes(np.where(bad, np.nan, img), iy, ix, h + width)
    rr = np.hypot(*np.indices(big.shape[1:]) - (h + width))
    ring = (rr >= h + 0.5) & (rr <= h + width + 0.5)
    inner = big[:, width : width + size, width : width + size]
    ok = np.all(np.isfinite(inner), axis=(1, 2))
    ok &= np.isfinite(big[:, ring]).sum(axis=1) >= 0.5 * ring.sum()
    bkg = np.nanmedian(big[ok][:, ring], axis=1) if ok.any() else np.zeros(0)
    stamps, ix, iy = inner[ok] - bkg[:, None, None], ix[ok], iy[ok]
    good = stamps.sum(axis=(1, 2)) > 0
    stamps, ix, iy = stamps[good], ix[good], iy[good]

    def too_few(n: int, what: str):
        return ValueError(
            f"only {n} usable stars for the empirical PSF ({what}; {xs.size} positions given, "
            f"need at least {min_stars}): stars must have clean {size}x{size} stamps "
            "(no masked or non-finite pixels, not at the edge) and positive flux"
        )

    if stamps.shape[0] < min_stars:
        raise too_few(stamps.shape[0], "after the stamp cuts")

    # window width from the adaptive moments of the crude (integer-aligned) stack
    mom = adaptive_moments(stamps.sum(axis=0), sigma0=max(1.0, size / 10.0))
    sigma_w = 1.5 if mom is None else float(np.sqrt(np.sqrt(np.linalg.det(mom[2]))))
    sigma_w = min(max(sigma_w, 0.7), size / 4.0)
    cy, cx, okc = windowed_centroids(stamps, np.full(len(stamps), h), sigma_w)
    okc &= (np.abs(cy - h) < 1.5) & (np.abs(cx - h) < 1.5)
    stamps, cy, cx, ix, iy = stamps[okc], cy[okc], cx[okc], ix[okc], iy[okc]
    if stamps.shape[0] < min_stars:
        raise too_few(stamps.shape[0], "after centroiding")

    aligned = shift_stack(stamps, h - cy, h - cx)
    flux = aligned.sum(axis=(1, 2))
    template = _clipped_mean(aligned / flux[:, None, None], sigma / flux, clip)
    for _ in range(2):
        t = template / template.sum()
        # a_i = F_i t by least squares (equal weights: background-limited); the flux is
        # set by the core, not by neighbours in the wings (a free background would be)
        f = (aligned * t).sum(axis=(1, 2)) / (t * t).sum()
        keep = f > 0
        if keep.sum() < min_stars:
            raise too_few(int(keep.sum()), "after the flux fit")
        aligned, f = aligned[keep], f[keep]
        cy, cx, ix, iy = cy[keep], cx[keep], ix[keep], iy[keep]
        template = _clipped_mean(aligned / f[:, None, None], sigma / f, clip)

    result = recentre_psf(template)
    fwhm = fwhm_of(result)
    if s > 1:
        result = normalize_psf(oversample_psf(result, s))
    pos = np.column_stack([ix + (cx - h), iy + (cy - h)]).astype(np.float64)
    return EmpiricalPsf(
        psf=result, n_used=int(len(f)), positions_used=pos, fwhm=fwhm, oversampling=s
    )

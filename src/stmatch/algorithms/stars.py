r"""Stars: detection of isolated point sources and PSF photometry.

* :func:`find_stars` finds isolated, unsaturated point sources: local maxima of the
  image smoothed by a Gaussian of the PSF's FWHM (a matched filter for a
  Gaussian-like PSF), Gaussian-windowed centroids, and cuts on masked pixels,
  saturation, the border, crowding and sharpness.
* :func:`psf_flux` measures fluxes at fixed positions by linear PSF fitting,
  :math:`d = f\,P(\mathbf{x} - \mathbf{x}_0) + b`, weighted least squares.

The ZOGY flux ratio fitted on these stars is in :mod:`.fluxratio`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from scipy.spatial import cKDTree

from ._stamps import (
    FWHM_PER_SIGMA,
    _gauss_peak_fraction,
    _int_at_least,
    _positive_float,
    _sigma_map,
    _stamp,
    adaptive_moments,
    cut_boxes,
    image_and_bad,
    windowed_centroids,
)
from .psf import normalize_psf

__all__ = ["StarList", "find_stars", "psf_flux"]


@dataclass(frozen=True, eq=False)
class StarList:
    """Stars found by :func:`find_stars`, brightest first.

    Attributes
    ----------
    x, y : numpy.ndarray
        Windowed centroids in pixels (array index coordinates).
    peak : numpy.ndarray
        Highest pixel value near each star.
    flux : numpy.ndarray
        Aperture sums within 1.5 FWHM of the centroid.
    snr : numpy.ndarray
        Detection significance: the smoothed peak over the smoothed image's noise.
    isolated : numpy.ndarray of bool
        No detected neighbour brighter than ``contrast`` times the star within the
        isolation radius (all True unless ``keep_crowded``).
    fwhm : float
        FWHM used (given or estimated), in pixels.
    """

    x: np.ndarray
    y: np.ndarray
    peak: np.ndarray
    flux: np.ndarray
    snr: np.ndarray
    isolated: np.ndarray
    fwhm: float = float("nan")

    def __len__(self) -> int:
        return int(self.x.size)


def _maxima(work, sig, fwhm, low):
    """Local maxima of the Gaussian-smoothed image with significance above ``low``."""
    sg = fwhm / FWHM_PER_SIGMA
    sm = ndimage.gaussian_filter(work, sg, mode="constant")
    delta = np.zeros(int(8 * sg) * 2 + 3)
    delta[delta.size // 2] = 1.0
    g1 = ndimage.gaussian_filter1d(delta, sg, mode="constant")
    snr_map = sm / (sig * float((g1 * g1).sum()))  # noise of sm: sigma * sqrt(sum g^2)
    peaks = (sm == ndimage.maximum_filter(sm, size=3, mode="constant")) & (snr_map > low)
    labels, n = ndimage.label(peaks)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    _, first = np.unique(flat[idx], return_index=True)  # one pixel per plateau
    iy, ix = np.unravel_index(idx[first], work.shape)
    return iy, ix, sm[iy, ix], snr_map[iy, ix]


def _estimate_fwhm(img_nan, work, sig, threshold) -> float:
    """Median adaptive-moment FWHM of the 50 brightest clean sources (0.5 to 12 px)."""
    iy, ix, sm, _ = _maxima(work, sig, 2.0, threshold)
    order = np.argsort(-sm)[:50]
    fw = []
    for b in cut_boxes(img_nan, iy[order], ix[order], 8):
        res = adaptive_moments(b, centre=(8.0, 8.0), sigma0=1.0) if np.all(np.isfinite(b)) else None
        if res is not None and 0.5 < (f := FWHM_PER_SIGMA * np.linalg.det(res[2]) ** 0.25) < 12:
            fw.append(f)
    if len(fw) < 3:
        raise ValueError(
            f"cannot estimate the FWHM from the image ({len(fw)} measurable sources above "
            f"{threshold} sigma); pass fwhm"
        )
    return float(np.median(fw))


def find_stars(
    image,
    *,
    sigma,
    mask=None,
    threshold: float = 10.0,
    fwhm: float | None = None,
    saturation: float | None = None,
    isolation: float | None = None,
    border: float | None = None,
    max_stars: int | None = None,
    contrast: float = 0.01,
    sharpness: tuple[float, float] = (0.5, 2.0),
    keep_crowded: bool = False,
) -> StarList:
    r"""Find isolated, unsaturated point sources.

    The image (bad pixels set to zero) is smoothed with a Gaussian of the FWHM;
    the smoothed image's noise is :math:`\sigma\sqrt{\sum g^2}` for the kernel
    :math:`g`. Local maxima (3x3) above ``threshold`` times that noise are
    candidates; maxima above ``min(threshold, 5)`` are potential neighbours.
    Centroids are Gaussian-windowed first moments (window :math:`\sigma` = FWHM/2.355)
    in a box of half-size :math:`R = \max(2, \lceil 2\,\mathrm{FWHM} \rceil)`.
    A candidate is rejected when

    * its box holds a masked or non-finite pixel or leaves the image (flag
      saturated pixels in ``mask`` to reject saturated stars by that route too),
    * a pixel of its box reaches ``saturation``,
    * its centroid lies within ``border`` pixels of the edge (default :math:`R`),
    * its sharpness, peak pixel over aperture flux, falls outside ``sharpness``
      times that of a pixel-integrated Gaussian of the FWHM (single hot pixels are
      far sharper, galaxies and blends flatter),
    * a neighbour whose smoothed peak exceeds ``contrast`` times its own lies within
      ``isolation`` pixels (default 4 FWHM); both members of a close pair go.

    Parameters
    ----------
    image : array_like
        2-D background-subtracted image.
    sigma : float or array_like
        Background noise per pixel (scalar or an image-shaped map).
    mask : array_like of bool, optional
        True for unusable pixels.
    threshold : float
        Detection significance of accepted stars.
    fwhm : float, optional
        PSF FWHM in pixels; estimated from the brightest sources when omitted.
    saturation : float, optional
        Pixel level at or above which a star is rejected.
    isolation : float, optional
        Neighbour-free radius in pixels.
    border : float, optional
        Minimum distance of a centroid from the image edge.
    max_stars : int, optional
        Keep at most this many (the brightest).
    contrast : float
        Smallest neighbour-to-star smoothed-peak ratio that counts as crowding.
    sharpness : tuple of float
        Accepted range of the sharpness relative to a Gaussian of the FWHM.
    keep_crowded : bool
        Keep stars failing the isolation test (flagged ``isolated = False``).

    Returns
    -------
    StarList
        Sorted by flux, brightest first.
    """
    img, bad = image_and_bad(image, mask)
    sig = _sigma_map(sigma, img.shape)
    threshold = _positive_float(threshold, "threshold")
    contrast = _positive_float(contrast, "contrast")
    lo_sharp, hi_sharp = (_positive_float(v, "sharpness") for v in sharpness)
    work = np.where(bad, 0.0, img)
    img_nan = np.where(bad, np.nan, img)
    fwhm = _estimate_fwhm(img_nan, work, sig, threshold) if fwhm is None else fwhm
    fwhm = _positive_float(fwhm, "fwhm")
    iso = 4.0 * fwhm if isolation is None else float(isolation)
    if not (math.isfinite(iso) and iso >= 0):
        raise ValueError(f"isolation must be finite and >= 0, got {isolation!r}")
    r = max(2, math.ceil(2.0 * fwhm))
    edge = float(r) if border is None else float(border)
    if not (math.isfinite(edge) and edge >= 0):
        raise ValueError(f"border must be finite and >= 0, got {border!r}")

    ny, nx = img.shape
    ny_all, nx_all, sm_all, snr_all = _maxima(work, sig, fwhm, min(threshold, 5.0))
    cand = np.flatnonzero(snr_all >= threshold)
    iy, ix = ny_all[cand], nx_all[cand]
    boxes = cut_boxes(img_nan, iy, ix, r)
    ok = np.all(np.isfinite(boxes), axis=(1, 2))
    if saturation is not None:
        ok &= ~np.any(boxes >= float(saturation), axis=(1, 2))  # NaN compares False
    boxes = np.where(np.isfinite(boxes), boxes, 0.0)
    cy, cx, okc = windowed_centroids(boxes, np.full(len(cand), float(r)), fwhm / FWHM_PER_SIGMA)
    ok &= okc & (np.hypot(cy - r, cx - r) < 1.5)
    x, y = ix + cx - r, iy + cy - r
    ok &= (x >= edge) & (x <= nx - 1 - edge) & (y >= edge) & (y <= ny - 1 - edge)
    o = np.arange(2 * r + 1, dtype=np.float64)
    dy, dx = o[None, :, None] - cy[:, None, None], o[None, None, :] - cx[:, None, None]
    flux = np.where(dy * dy + dx * dx <= (1.5 * fwhm) ** 2, boxes, 0.0).sum(axis=(1, 2))
    peak = boxes[:, r - 1 : r + 2, r - 1 : r + 2].max(axis=(1, 2))
    ref = _gauss_peak_fraction(fwhm)
    with np.errstate(divide="ignore", invalid="ignore"):
        sharp = peak / flux
    ok &= (flux > 0) & (sharp >= lo_sharp * ref) & (sharp <= hi_sharp * ref)

    isolated = np.ones(len(cand), dtype=bool)
    if iso > 0 and len(ny_all) > 1:
        tree = cKDTree(np.column_stack([nx_all, ny_all]).astype(np.float64))
        for k, (i, nbrs) in enumerate(
            zip(cand, tree.query_ball_point(np.column_stack([ix, iy]), iso), strict=True)
        ):
            others = [j for j in nbrs if j != i]
            if others and np.any(sm_all[others] >= contrast * sm_all[i]):
                isolated[k] = False
    if not keep_crowded:
        ok &= isolated
    sel = np.flatnonzero(ok)
    sel = sel[np.argsort(-flux[sel], kind="stable")]
    if max_stars is not None:
        sel = sel[: _int_at_least(max_stars, "max_stars", 0)]
    return StarList(*(a[sel] for a in (x, y, peak, flux, snr_all[cand], isolated)), fwhm=fwhm)


def psf_flux(
    image,
    x,
    y,
    psf,
    *,
    sigma,
    var=None,
    mask=None,
    min_psf_fraction: float = 0.8,
    chunk: int = 2048,
):
    r"""Linear PSF-fit photometry at fixed positions.

    Around each position the stamp of the PSF's shape centred on the nearest pixel
    is fitted with :math:`d = f\,P_{\delta} + b`, where :math:`P_{\delta}` is the
    unit-sum PSF moved by the sub-pixel offset :math:`\delta` by a Fourier shift
    (its centre pixel is the source position) and :math:`b` a constant background.
    With weights :math:`w = 1/V` the normal equations give

    .. math::

        f = \frac{S_{1} S_{Pd} - S_{P} S_{d}}{\Delta},\qquad
        \sigma_f^2 = \frac{S_{1}}{\Delta},\qquad
        \Delta = S_{PP} S_{1} - S_{P}^2,

    with :math:`S_{PP} = \sum w P^2`, :math:`S_P = \sum w P`, :math:`S_1 = \sum w`,
    :math:`S_{Pd} = \sum w P d`, :math:`S_d = \sum w d` over the good pixels of the
    stamp. The error is exact for Gaussian pixel noise of variance :math:`V`.

    Parameters
    ----------
    image : array_like
        2-D image.
    x, y : float or array_like
        Source positions in pixels (array index coordinates).
    psf : array_like
        Odd-sized PSF stamp (normalised to unit sum here): fluxes are totals of the
        PSF model.
    sigma : float or array_like
        Noise per pixel, used when ``var`` is not given.
    var : array_like, optional
        Per-pixel variance (should include the sources' Poisson noise).
    mask : array_like of bool, optional
        True for unusable pixels (excluded from the fit).
    min_psf_fraction : float
        A source whose good pixels hold less than this fraction of the PSF gets NaN.
    chunk : int
        Sources processed at once (memory bound).

    Returns
    -------
    flux, flux_err : float or numpy.ndarray
        Same shape as ``x``; NaN where a source cannot be measured.
    """
    img, bad = image_and_bad(image, mask)
    p = normalize_psf(_stamp(psf, "psf"))
    scalar = np.ndim(x) == 0 and np.ndim(y) == 0
    xs = np.atleast_1d(np.asarray(x, dtype=np.float64))
    ys = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if xs.shape != ys.shape:
        raise ValueError(f"x and y must have one shape, got {xs.shape} and {ys.shape}")
    shape_out = xs.shape
    xs, ys = xs.ravel(), ys.ravel()
    if var is not None:
        v = np.asarray(var, dtype=np.float64)
        if v.shape != img.shape:
            raise ValueError(f"var shape {v.shape} differs from the image shape {img.shape}")
        bad = bad | ~(np.isfinite(v) & (v > 0))
        inv_var = np.where(bad, 0.0, 1.0 / np.where(bad, 1.0, v))
    else:
        sg = _sigma_map(sigma, img.shape)
        inv_var = np.where(bad, 0.0, 1.0 / np.broadcast_to(np.asarray(sg) ** 2, img.shape))
    h, w = p.shape
    hy, hx = h // 2, w // 2
    ny, nx = img.shape
    dpad = np.pad(np.where(bad, 0.0, img), ((hy, hy), (hx, hx)))
    wpad = np.pad(inv_var, ((hy, hy), (hx, hx)))
    gpad = np.pad(~bad, ((hy, hy), (hx, hx)))
    valid = np.isfinite(xs) & np.isfinite(ys)
    ix = np.rint(np.clip(np.where(valid, xs, -1.0), -1.0, nx)).astype(np.int64)
    iy = np.rint(np.clip(np.where(valid, ys, -1.0), -1.0, ny)).astype(np.int64)
    valid &= (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    ix, iy = np.where(valid, ix, 0), np.where(valid, iy, 0)
    # Fit window: the PSF core out to where it falls below 1e-3 of its peak, plus a
    # pixel for the background. A window of the whole stamp would let neighbours
    # near the stamp edge bias the fitted background, hence the flux.
    yy, xx = np.indices(p.shape)
    rr = np.hypot(yy - hy, xx - hx)
    core = rr[p >= 1e-3 * p.max()].max()
    win = (rr <= core + 1.5)[None]
    phat = sfft.rfft2(p)
    ky = sfft.fftfreq(h)[None, :, None]
    kx = sfft.rfftfreq(w)[None, None, :]
    oy = np.arange(h)[None, :, None]
    ox = np.arange(w)[None, None, :]
    flux, err = np.full(xs.size, np.nan), np.full(xs.size, np.nan)
    chunk = _int_at_least(chunk, "chunk", 1)
    for start in range(0, xs.size, chunk):
        sl = slice(start, start + chunk)
        dy, dx = (ys[sl] - iy[sl])[:, None, None], (xs[sl] - ix[sl])[:, None, None]
        model = sfft.irfft2(phat * np.exp(-2j * np.pi * (ky * dy + kx * dx)), s=(h, w))
        rows, cols = iy[sl][:, None, None] + oy, ix[sl][:, None, None] + ox
        d, wt, g = dpad[rows, cols], wpad[rows, cols] * win, gpad[rows, cols]
        spp, sp, s1, spd, sd = (
            (wt * a).sum(axis=(1, 2)) for a in (model**2, model, 1, model * d, d)
        )
        det = spp * s1 - sp * sp
        cover = np.where(g, model, 0.0).sum(axis=(1, 2))
        use = valid[sl] & (det > 0) & (cover >= min_psf_fraction)
        safe = np.where(use, det, 1.0)
        flux[sl] = np.where(use, (s1 * spd - sp * sd) / safe, np.nan)
        err[sl] = np.where(use, np.sqrt(np.where(use, s1 / safe, 1.0)), np.nan)
    flux, err = flux.reshape(shape_out), err.reshape(shape_out)
    if scalar:
        return float(flux[0]), float(err[0])
    return flux, err

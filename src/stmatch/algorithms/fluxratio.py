r"""The ZOGY flux ratio :math:`\beta = F_n / F_r` fitted on matched stars.

:func:`fit_flux_ratio` fits :math:`\beta` (Zackay, Ofek & Gal-Yam 2016, ApJ 830,
27, section 3.3) from the PSF fluxes (:func:`.stars.psf_flux`) of the same stars
(:func:`.stars.find_stars`) in the new and the reference images, with errors in
both coordinates (the effective-variance :math:`\chi^2` of Orear 1982, Am. J.
Phys. 50, 912) and iterative clipping of variable sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._stamps import (
    _int_at_least,
    _positive_float,
    _stamp,
    image_and_bad,
    positions_xy,
)
from .psfgrid import fwhm_of
from .stars import find_stars, psf_flux

__all__ = ["FluxRatioFit", "fit_flux_ratio"]


@dataclass(frozen=True, eq=False)
class FluxRatioFit:
    """Result of :func:`fit_flux_ratio`.

    Attributes
    ----------
    beta, beta_err : float
        :math:`\\beta = F_n/F_r` and its error (inflated by :math:`\\sqrt{\\chi^2/\\nu}`
        when that exceeds 1).
    n_used, n_candidates : int
        Stars kept by the clipping, and stars with finite fluxes in both images.
    chi2_dof : float
        :math:`\\chi^2/\\nu` of the kept stars at ``beta`` (:math:`\\nu` = n_used - 1).
    used : numpy.ndarray of bool
        Per star (all positions), True when used in the final fit.
    flux_new, flux_ref, flux_new_err, flux_ref_err : numpy.ndarray
        PSF fluxes and their measurement errors (without the error floor).
    x, y : numpy.ndarray
        Positions measured.
    """

    beta: float
    beta_err: float
    n_used: int
    n_candidates: int
    chi2_dof: float
    used: np.ndarray
    flux_new: np.ndarray
    flux_ref: np.ndarray
    flux_new_err: np.ndarray
    flux_ref_err: np.ndarray
    x: np.ndarray
    y: np.ndarray


def _chi2_terms(b, fn, vn, fr, vr):
    r = fn - b * fr
    d = vn + b * b * vr
    chi2 = float((r * r / d).sum())
    d1 = float((-2.0 * fr * r / d - 2.0 * b * vr * r * r / (d * d)).sum())
    d2 = float(
        (
            2.0 * fr * fr / d
            + 8.0 * b * vr * fr * r / (d * d)
            - 2.0 * vr * r * r / (d * d)
            + 8.0 * b * b * vr * vr * r * r / (d * d * d)
        ).sum()
    )
    return chi2, d1, d2


def _minimise_beta(fn, vn, fr, vr, b):
    """Minimise chi2(beta) = sum (fn - beta fr)^2 / (vn + beta^2 vr)."""
    for _ in range(100):  # effective-variance iteration: a close starting point
        wgt = 1.0 / (vn + b * b * vr)
        b_new = float((wgt * fn * fr).sum() / (wgt * fr * fr).sum())
        done = abs(b_new - b) <= 1e-12 * abs(b_new)
        b = b_new
        if done:
            break
    chi2, d1, d2 = _chi2_terms(b, fn, vn, fr, vr)
    for _ in range(50):  # Newton on the exact chi2, step halving if it goes uphill
        if not d2 > 0 or d1 == 0.0:
            break
        step = -d1 / d2
        while True:
            c_new, d1_new, d2_new = _chi2_terms(b + step, fn, vn, fr, vr)
            if c_new <= chi2 or abs(step) < 1e-15 * abs(b):
                break
            step *= 0.5
        b += step
        chi2, d1, d2 = c_new, d1_new, d2_new
        if abs(step) <= 1e-13 * abs(b):
            break
    return b, chi2, d2


def fit_flux_ratio(
    new,
    ref,
    psf_new,
    psf_ref,
    *,
    sigma_new,
    sigma_ref,
    var_new=None,
    var_ref=None,
    mask=None,
    positions=None,
    threshold: float = 20.0,
    min_stars: int = 5,
    clip: float = 3.0,
    max_iter: int = 10,
    error_floor: float = 0.01,
    max_stars: int | None = 500,
) -> FluxRatioFit:
    r"""Fit the ZOGY flux ratio :math:`\beta = F_n/F_r` on stars common to both images.

    :math:`\beta` is the new-image flux of a source of unit reference flux. Both
    images lie on one pixel grid and are background-subtracted. Stars are found in
    the reference (:func:`find_stars` with the reference PSF's FWHM) unless
    ``positions`` are given; their PSF fluxes :math:`f_n, f_r` are measured at the
    same positions (:func:`psf_flux`) with errors :math:`s_n, s_r`, to which an
    error floor is added in quadrature,
    :math:`s^2 \to s^2 + (\epsilon f)^2`, so that bright stars with underestimated
    errors (PSF mismatch, flat field) do not dominate. The fit minimises

    .. math::

        \chi^2(\beta) = \sum_i \frac{(f_{n,i} - \beta f_{r,i})^2}
                                   {s_{n,i}^2 + \beta^2 s_{r,i}^2}

    (errors in both coordinates; :math:`\beta` in the denominator) by the
    effective-variance iteration followed by Newton steps on the exact
    :math:`\chi^2`. Starting from the median ratio of well-measured stars,
    stars with :math:`|z_i| > \mathrm{clip}\cdot\max(1, 1.4826\,\mathrm{MAD}(z))`,
    :math:`z_i = (f_{n,i} - \beta f_{r,i}) / \sqrt{s_{n,i}^2 + \beta^2 s_{r,i}^2}`,
    are rejected (variables, transients, blends) and the fit repeated until the
    set is stable. The error is
    :math:`\sigma_\beta = \sqrt{2 / (\partial^2\chi^2/\partial\beta^2)}`, times
    :math:`\sqrt{\chi^2/\nu}` when that exceeds 1.

    Parameters
    ----------
    new, ref : array_like
        Background-subtracted images on one pixel grid.
    psf_new, psf_ref : array_like
        Their odd-sized PSF stamps, centred.
    sigma_new, sigma_ref : float or array_like
        Background noise per pixel of each image.
    var_new, var_ref : array_like, optional
        Per-pixel variances (with the sources' Poisson noise) for the photometry.
    mask : array_like of bool, optional
        True for pixels unusable in either image (include saturated pixels).
    positions : StarList or array_like, optional
        Star positions (x, y) to use instead of a search in ``ref``.
    threshold : float
        Detection significance of the stars found in ``ref``.
    min_stars : int
        Fewest stars accepted in the final fit.
    clip : float
        Clipping threshold in units of the (robustly rescaled) errors.
    max_iter : int
        Maximum number of fit-and-clip rounds.
    error_floor : float
        Fractional error added in quadrature to every flux.
    max_stars : int, optional
        Use at most this many of the brightest stars found.

    Returns
    -------
    FluxRatioFit

    Raises
    ------
    ValueError
        For bad inputs, a non-positive ratio, or when fewer than ``min_stars`` stars
        are found or survive the clipping (the message gives the counts).
    """
    img_n, bad_n = image_and_bad(new, mask, "new")
    img_r, bad_r = image_and_bad(ref, mask, "ref")
    if img_n.shape != img_r.shape:
        raise ValueError(f"new {img_n.shape} and ref {img_r.shape} must have one shape")
    min_stars = _int_at_least(min_stars, "min_stars", 2)
    clip = _positive_float(clip, "clip")
    max_iter = _int_at_least(max_iter, "max_iter", 1)
    floor = float(error_floor)
    if not (math.isfinite(floor) and floor >= 0):
        raise ValueError(f"error_floor must be finite and >= 0, got {error_floor!r}")
    pn, pr = _stamp(psf_new, "psf_new"), _stamp(psf_ref, "psf_ref")
    both_bad = bad_n | bad_r
    if positions is None:
        kw = {"threshold": threshold, "border": max(pn.shape + pr.shape) // 2}
        stars = find_stars(
            img_r, sigma=sigma_ref, mask=both_bad, fwhm=fwhm_of(pr), max_stars=max_stars, **kw
        )
        xs, ys = stars.x, stars.y
    else:
        xs, ys = positions_xy(positions)
    if xs.size < min_stars:
        raise ValueError(
            f"only {xs.size} stars for the flux-ratio fit (need at least {min_stars}); "
            "lower threshold, give positions, or use a flux ratio from calibration"
        )
    fn, sn = psf_flux(img_n, xs, ys, pn, sigma=sigma_new, var=var_new, mask=both_bad)
    fr, sr = psf_flux(img_r, xs, ys, pr, sigma=sigma_ref, var=var_ref, mask=both_bad)
    cand = np.isfinite(fn) & np.isfinite(fr) & np.isfinite(sn) & np.isfinite(sr)
    cand &= (sn > 0) & (sr > 0)
    n_cand = int(cand.sum())
    vn = np.where(cand, sn * sn + (floor * fn) ** 2, 1.0)
    vr = np.where(cand, sr * sr + (floor * fr) ** 2, 1.0)
    fn0, fr0 = np.where(cand, fn, 0.0), np.where(cand, fr, 0.0)
    solid = cand & (fr0 > 5.0 * np.sqrt(vr))
    if solid.sum() < min_stars:
        raise ValueError(
            f"only {int(solid.sum())} stars measured in both images with reference S/N > 5 "
            f"(of {xs.size}; need at least {min_stars})"
        )
    beta = float(np.median(fn0[solid] / fr0[solid]))
    if not beta > 0:
        raise ValueError(f"the median flux ratio new/ref is {beta:.4g}: not positive")

    def zscores(b):
        return (fn0 - b * fr0) / np.sqrt(vn + b * b * vr)

    def clipped(b, among):
        z = np.abs(zscores(b))
        scale = max(1.0, 1.4826 * float(np.median(z[among])))
        return cand & (z <= clip * scale)

    used = clipped(beta, solid)
    chi2, d2 = 0.0, 0.0
    for _ in range(max_iter):
        if used.sum() < min_stars:
            break
        beta, chi2, d2 = _minimise_beta(fn0[used], vn[used], fr0[used], vr[used], beta)
        new_used = clipped(beta, used)
        if np.array_equal(new_used, used):
            break
        used = new_used
    else:
        if used.sum() >= min_stars:
            beta, chi2, d2 = _minimise_beta(fn0[used], vn[used], fr0[used], vr[used], beta)
    n_used = int(used.sum())
    if n_used < min_stars:
        raise ValueError(
            f"only {n_used} stars survive the clipping of the flux-ratio fit (of {n_cand} "
            f"measured; need at least {min_stars})"
        )
    if not beta > 0:
        raise ValueError(f"the fitted flux ratio is {beta:.4g}: not positive")
    chi2_dof = chi2 / (n_used - 1)
    beta_err = math.sqrt(2.0 / d2) if d2 > 0 else math.inf
    beta_err *= math.sqrt(max(1.0, chi2_dof))
    return FluxRatioFit(
        beta=float(beta),
        beta_err=float(beta_err),
        n_used=n_used,
        n_candidates=n_cand,
        chi2_dof=float(chi2_dof),
        used=used,
        flux_new=fn,
        flux_ref=fr,
        flux_new_err=sn,
        flux_ref_err=sr,
        x=np.asarray(xs, dtype=np.float64).copy(),
        y=np.asarray(ys, dtype=np.float64).copy(),
    )

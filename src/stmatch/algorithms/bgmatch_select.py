r"""Choice of the reference exposure and diagnostics of a background match.

Background matching brings science exposures :math:`S` to the background of a
reference exposure :math:`R`. This module scores candidate references
(:func:`reference_scores`: low noise, low background level and good coverage win)
and measures how well a matched exposure :math:`M` agrees with the reference
(:func:`match_diagnostics`: the mean squared difference :math:`\langle (R - M)^2
\rangle` against the variance expected from noise alone). The binning and the
fitted surfaces are in :mod:`stmatch.algorithms.bgmatch_grid` and
:mod:`stmatch.algorithms.bgmatch_fit`.

The robust variance of :func:`match_diagnostics` is a clipped variance corrected
for the truncation of a normal distribution at :math:`\pm\kappa\sigma`
(the variance of a unit normal restricted to :math:`|x| \le \kappa` is
:math:`1 - 2\kappa\varphi(\kappa)/(2\Phi(\kappa) - 1)`; Johnson, Kotz &
Balakrishnan 1994, *Continuous Univariate Distributions*, vol. 1, §10.1).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["match_diagnostics", "reference_scores"]


def _as_float(values, name):
    seq = list(values)
    out = np.array([np.nan if v is None else v for v in seq], dtype=np.float64)
    if out.ndim != 1:
        raise ValueError(f"{name} must be a sequence of scalars")
    return out


def reference_scores(
    variances, levels, npix, *, weight_variance=0.4, weight_level=0.2, weight_coverage=0.4
) -> np.ndarray:
    r"""Scores of candidate reference exposures; the lowest is the best reference.

    .. math::

        q_k = w_v \frac{V_k}{\max_j V_j} + w_l \frac{|L_k|}{\max_j |L_j|}
              + w_c \frac{\min_j N_j}{N_k}

    with the variance :math:`V_k` (e.g. the mean variance), background level
    :math:`L_k` and number of good pixels :math:`N_k` of candidate :math:`k`; the
    maxima and minimum run over the readable candidates. A low-noise, low-background,
    well-covered exposure wins. The absolute level is used so that a negative
    background level (possible after an earlier sky subtraction) does not turn the
    level term into a reward: the candidate with the level closest to zero is
    preferred. A term whose maximum is zero contributes nothing.

    Parameters
    ----------
    variances, levels, npix : sequence of float or None
        One entry per candidate. ``None`` or NaN (an unreadable candidate), a
        negative variance or a non-positive ``npix`` gives the candidate an
        infinite score.
    weight_variance, weight_level, weight_coverage : float
        Non-negative weights :math:`w_v, w_l, w_c`.

    Returns
    -------
    numpy.ndarray
        Scores; ``argmin`` is the reference.

    Raises
    ------
    ValueError
        If the sequences differ in length, a weight is negative or no candidate
        is readable.
    """
    var = _as_float(variances, "variances")
    lev = _as_float(levels, "levels")
    cov = _as_float(npix, "npix")
    if not var.size == lev.size == cov.size:
        raise ValueError("variances, levels and npix need one entry per candidate")
    w = np.array([weight_variance, weight_level, weight_coverage], dtype=np.float64)
    if not np.all(np.isfinite(w) & (w >= 0)):
        raise ValueError("the reference weights must be finite and non-negative")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(var) & np.isfinite(lev) & np.isfinite(cov) & (var >= 0) & (cov > 0)
    if not ok.any():
        raise ValueError("no candidate reference is readable (variance, level and npix)")
    vmax, lmax, cmin = var[ok].max(), np.abs(lev[ok]).max(), cov[ok].min()
    score = np.full(var.size, np.inf)
    score[ok] = (
        w[0] * (var[ok] / vmax if vmax > 0 else 0.0)
        + w[1] * (np.abs(lev[ok]) / lmax if lmax > 0 else 0.0)
        + w[2] * cmin / cov[ok]
    )
    return score


def _truncated_variance_factor(kappa: float) -> float:
    """Variance of a unit normal truncated to :math:`|x| \\le \\kappa`."""
    phi = math.exp(-0.5 * kappa * kappa) / math.sqrt(2.0 * math.pi)
    return 1.0 - 2.0 * kappa * phi / math.erf(kappa / math.sqrt(2.0))


def match_diagnostics(reference, matched, *, mask=None, variance=None) -> tuple[float, float]:
    r"""Agreement of a matched exposure with the reference.

    ``matched_mse`` is :math:`\langle (R - M)^2 \rangle` over the good pixels
    (finite in both images, not masked). ``diffim_var`` is the expected value of
    that quantity for pure noise: the mean of ``variance`` (the per-pixel variance
    of :math:`R - M`) over the good pixels where it is finite, or, without
    ``variance``, a robust variance of :math:`\delta = R - M`: starting from the
    median and :math:`1.4826\,\mathrm{MAD}` of the good pixels, three passes keep
    :math:`|\delta - c| \le 3\sigma`, set :math:`c` to the mean of the kept values
    and :math:`\sigma^2` to their variance divided by
    :math:`\tau(3) = 1 - 2\cdot 3\,\varphi(3)/(2\Phi(3) - 1) = 0.9733`, the
    variance of a unit normal truncated at :math:`\pm 3`, which makes it unbiased
    for Gaussian noise. A well-matched exposure has
    ``matched_mse / diffim_var`` close to 1.

    Parameters
    ----------
    reference, matched : array_like
        2-D images on one grid. Not modified.
    mask : array_like of bool, optional
        True for pixels to ignore.
    variance : array_like, optional
        Per-pixel variance of ``reference - matched``.

    Returns
    -------
    tuple of float
        ``(matched_mse, diffim_var)``.

    Raises
    ------
    ValueError
        If the shapes differ or no good pixel is left.
    """
    r = np.asarray(reference)
    m = np.asarray(matched)
    if r.ndim != 2 or r.shape != m.shape:
        raise ValueError(f"reference {r.shape} and matched {m.shape} must be 2-D of one shape")
    good = np.isfinite(r) & np.isfinite(m)
    if mask is not None:
        mk = np.asarray(mask, dtype=bool)
        if mk.shape != r.shape:
            raise ValueError(f"mask has shape {mk.shape}, the images {r.shape}")
        good &= ~mk
    if variance is not None:
        v = np.asarray(variance, dtype=np.float64)
        if v.shape != r.shape:
            raise ValueError(f"variance has shape {v.shape}, the images {r.shape}")
        good &= np.isfinite(v)
    if not good.any():
        raise ValueError("no good pixel to compare the matched image with the reference")
    d = r[good].astype(np.float64) - m[good].astype(np.float64)
    mse = float(np.dot(d, d) / d.size)
    if variance is not None:
        return mse, float(np.mean(v[good]))
    return mse, _robust_variance(d)


def _robust_variance(d: np.ndarray, kappa: float = 3.0, passes: int = 3) -> float:
    sub = d[:: max(1, d.size // 200_000)]
    c = float(np.median(sub))
    s = 1.482602218505602 * float(np.median(np.abs(sub - c)))
    if not s > 0:
        return float(np.var(d, ddof=1)) if d.size > 1 else 0.0
    tau = _truncated_variance_factor(kappa)
    for _ in range(passes):
        kept = d[np.abs(d - c) <= kappa * s]
        if kept.size < 2:
            break
        c = float(kept.mean())
        s = math.sqrt(float(kept.var(ddof=1)) / tau)
    return s * s

r"""Smooth background-difference surfaces fitted to a grid of bin statistics.

:func:`fit_background` turns the bins of a difference image :math:`d = R - S`
(:class:`~stmatch.algorithms.bgmatch_grid.BinnedGrid`) into a
:class:`BackgroundFit`, and :func:`match_background` bins and fits in one call.
The surface is one of:

* a **Chebyshev polynomial** of order :math:`n` (triangular basis :math:`i + j \le n`
  of :mod:`stmatch.algorithms.chebyshev` on the image's pixel-edge domain), a least-
  squares fit to the valid bin values at the bin centres. With ``approx_weighting``
  the weights are :math:`1/\epsilon_k^2` (bin standard errors; errors that are zero
  or undefined while others are not are raised to :math:`10^{-3}` times the median
  error), unless every bin's stdev is below ``grid_stdev_epsilon`` (noise-free data):
  then the fit is unweighted and says so. Covariance: :math:`C = (A^T W A)^{-1}`
  (weighted, errors taken at face value) or :math:`C = \hat s^2 (A^T A)^{-1}`
  (unweighted) with :math:`\hat s^2 = \sum r_k^2/(m - p)` for :math:`m` bins and
  :math:`p` terms (the mean squared bin error when :math:`m = p`); the model's 1σ
  error is :math:`\sqrt{b^T C b}`, :math:`b_t = T_i(\tilde x) T_j(\tilde y)`
  (Press et al., *Numerical Recipes*, 3rd ed., §15.4).
* a **separable interpolant** through the bins (``CONSTANT``, ``LINEAR``,
  ``NATURAL_SPLINE``, ``AKIMA_SPLINE``; ``NONE`` is no model), evaluated by
  :mod:`stmatch.algorithms.bgmatch_spline`, whose notes give the interpolation,
  its extension past the outer bins and its 1σ error.

Too few valid bins (``undersample_style``): order :math:`n` needs valid bins in
:math:`n + 1` bin columns and rows; a spline line needs 5 (Akima), 3 (natural),
2 (linear) or 1 (constant) points. ``THROW_EXCEPTION`` raises
:class:`UndersampledError`; ``REDUCE_INTERP_ORDER`` lowers the order to (valid
bins per axis) − 1 (further while the fit is rank deficient) or each short line's
style along Akima → natural → linear → constant; ``INCREASE_NXNYSAMPLE`` makes
:func:`match_background` re-bin with a larger bin *count*
:math:`n_b' = \lceil n_b\, n_\mathrm{need}/n_\mathrm{have}\rceil` per axis until the
surface is constrained (lines short only because of masking are then reduced).
Every such decision is recorded in :attr:`BackgroundFit.actions`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.polynomial import chebyshev as _npcheb
from scipy.linalg import solve_triangular

from .bgmatch_grid import BinnedGrid, bin_difference
from .bgmatch_spline import (
    INTERP_STYLES,
    MIN_POINTS,
    UndersampledError,
    _hint,
    _spline_mesh,
    _spline_points,
    _spline_styles,
    _spline_variance,
)
from .chebyshev import chebyshev_basis, chebyshev_terms, image_domain, n_chebyshev_terms

__all__ = [
    "INTERP_STYLES",
    "MIN_POINTS",
    "UNDERSAMPLE_STYLES",
    "BackgroundFit",
    "UndersampledError",
    "fit_background",
    "match_background",
]

#: What to do with too few valid bins.
UNDERSAMPLE_STYLES = ("THROW_EXCEPTION", "REDUCE_INTERP_ORDER", "INCREASE_NXNYSAMPLE")
_CHUNK = 1 << 16


def _cheb_values(v, lo, hi, order):
    """``(order + 1, len(v))`` values :math:`T_k` on the domain ``[lo, hi]``."""
    t = (2.0 * np.asarray(v, dtype=np.float64) - (lo + hi)) / (hi - lo)
    return _npcheb.chebvander(t, order).T


@dataclass(frozen=True, eq=False)
class BackgroundFit:
    """A background-difference surface and how it was obtained.

    Attributes
    ----------
    kind : str
        ``'polynomial'``, ``'spline'`` or ``'none'``.
    order : int
        Polynomial order actually used (-1 for other kinds).
    interp_style : str
        Spline style requested and kept (the lowest style used on any line when
        some were reduced); ``''`` for a polynomial, ``'NONE'`` for no model.
    domain : tuple of float
        ``(x0, x1, y0, y1)`` pixel-edge domain of the binned image.
    coefficients, covariance : numpy.ndarray or None
        Chebyshev coefficients (order of
        :func:`~stmatch.algorithms.chebyshev.chebyshev_terms`) and their covariance.
    grid : BinnedGrid
        The bins used (after any re-binning).
    model_at_bins : numpy.ndarray
        ``(nby, nbx)`` model where each bin measured: at the centroid of its
        good pixels for the polynomial (see `BinnedGrid.positions`), at the
        bin centres for splines.
    fit_rms : float
        RMS of (bin value − model) over the valid bins.
    weighted : bool
        Whether the polynomial fit used inverse-variance weights.
    actions : tuple of str
        Human-readable record of every automatic decision.
    row_styles : tuple of str
        Spline style of each bin row (``''`` for rows without valid bins).
    column_style : str
        Spline style of the interpolation along ``y``.
    """

    kind: str
    order: int
    interp_style: str
    domain: tuple
    coefficients: np.ndarray | None
    covariance: np.ndarray | None
    grid: BinnedGrid
    model_at_bins: np.ndarray
    fit_rms: float
    weighted: bool
    actions: tuple[str, ...]
    row_styles: tuple[str, ...] = ()
    column_style: str = ""

    # -- evaluation ----------------------------------------------------------------
    def _pointwise(self, x, y, poly, spline):
        x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
        xf, yf = x.ravel(), y.ravel()
        out = np.zeros(xf.size)
        for s in range(0, xf.size, _CHUNK):
            sl = slice(s, s + _CHUNK)
            if self.kind != "none":
                out[sl] = (poly if self.kind == "polynomial" else spline)(xf[sl], yf[sl])
        return out.reshape(x.shape)

    def evaluate(self, x, y) -> np.ndarray:
        """Model at pixel positions ``(x, y)`` (broadcast; 0-based, ``x`` = column)."""

        def poly(xs, ys):
            tx, ty = self._cheb(xs, ys)
            return np.einsum("jp,ji,ip->p", ty, self._coef_matrix(), tx)

        return self._pointwise(x, y, poly, lambda xs, ys: _spline_points(self, xs, ys))

    def evaluate_image(self, shape, *, dtype=np.float64) -> np.ndarray:
        """Model on every pixel of an image of ``shape`` (separable, fast)."""
        ny, nx = _shape(shape)
        return self._mesh(np.arange(nx), np.arange(ny), dtype)

    def uncertainty(self, x, y) -> np.ndarray:
        """1σ uncertainty of the model at ``(x, y)`` (see the module notes)."""

        def poly(xs, ys):
            b = chebyshev_basis(xs, ys, self.order, self.domain)
            return np.einsum("tp,tp->p", self.covariance @ b, b)

        def spline(xs, ys):
            return _spline_variance(self, xs, ys, points=True)

        return np.sqrt(np.maximum(self._pointwise(x, y, poly, spline), 0.0))

    def uncertainty_image(self, shape, *, dtype=np.float64) -> np.ndarray:
        """1σ model uncertainty on every pixel of an image of ``shape``."""
        ny, nx = _shape(shape)
        xs, ys = np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64)
        if self.kind == "polynomial":
            # var = sum_ab C_ab T_ia(x) T_ib(x) T_ja(y) T_jb(y): C summed onto index pairs
            tx, ty = self._cheb(xs, ys)
            k = self.order + 1
            i, j = np.array(chebyshev_terms(self.order)).T
            pair = np.zeros((k * k, k * k))
            np.add.at(pair, ((j[:, None] * k + j), (i[:, None] * k + i)), self.covariance)
            yy = (ty[:, None, :] * ty[None, :, :]).reshape(k * k, ny)
            xx = (tx[:, None, :] * tx[None, :, :]).reshape(k * k, nx)
            var = yy.T @ (pair @ xx)
        elif self.kind == "spline":
            var = _spline_variance(self, xs, ys, points=False)
        else:
            var = np.zeros((ny, nx))
        return np.sqrt(np.maximum(var, 0.0)).astype(dtype, copy=False)

    # -- helpers -------------------------------------------------------------------
    def _cheb(self, x, y):
        x0, x1, y0, y1 = self.domain
        return _cheb_values(x, x0, x1, self.order), _cheb_values(y, y0, y1, self.order)

    def _coef_matrix(self):
        k = self.order + 1
        cm = np.zeros((k, k))  # [j, i] = coefficient of T_i(x) T_j(y)
        for c, (i, j) in zip(self.coefficients, chebyshev_terms(self.order), strict=True):
            cm[j, i] = c
        return cm

    def _mesh(self, xs, ys, dtype=np.float64):
        xs = np.asarray(xs, np.float64)
        ys = np.asarray(ys, np.float64)
        if self.kind == "polynomial":
            tx, ty = self._cheb(xs, ys)
            right = (self._coef_matrix() @ tx).astype(dtype)
            return ty.T.astype(dtype) @ right
        if self.kind == "spline":
            return _spline_mesh(self, xs, ys, dtype)
        return np.zeros((ys.size, xs.size), dtype=dtype)


def _shape(shape):
    ny, nx = (int(s) for s in shape)
    if ny < 1 or nx < 1:
        raise ValueError(f"the image shape must be positive, got {tuple(shape)}")
    return ny, nx


# -- fitting ---------------------------------------------------------------------------
def _upper(value, allowed, name):
    v = str(value).upper()
    if v not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, not {value!r}")
    return v


def fit_background(
    grid: BinnedGrid,
    *,
    use_polynomial=True,
    order=8,
    approx_weighting=True,
    grid_stdev_epsilon=1e-8,
    interp_style="AKIMA_SPLINE",
    undersample_style="REDUCE_INTERP_ORDER",
) -> BackgroundFit:
    """Fit a smooth surface to the valid bins of ``grid``.

    Parameters
    ----------
    grid : BinnedGrid
        Bin statistics (from :func:`~stmatch.algorithms.bgmatch_grid.bin_difference`).
    use_polynomial : bool
        Chebyshev polynomial (True) or separable spline (False).
    order : int
        Polynomial order :math:`n` (terms :math:`i + j \\le n`).
    approx_weighting : bool
        Weight the polynomial fit by the inverse squared bin errors.
    grid_stdev_epsilon : float
        Weighting is turned off when every bin's stdev is below this.
    interp_style : {'AKIMA_SPLINE', 'NATURAL_SPLINE', 'LINEAR', 'CONSTANT', 'NONE'}
        Spline style (``use_polynomial=False``).
    undersample_style : {'REDUCE_INTERP_ORDER', 'THROW_EXCEPTION', 'INCREASE_NXNYSAMPLE'}
        What to do with too few valid bins (see the module notes). Here
        ``INCREASE_NXNYSAMPLE`` raises :class:`UndersampledError` (re-binning needs
        the image: :func:`match_background` does it).

    Returns
    -------
    BackgroundFit

    Raises
    ------
    UndersampledError
        Too few bins under ``THROW_EXCEPTION`` or ``INCREASE_NXNYSAMPLE``.
    ValueError
        Bad knobs, no valid bin, or a rank-deficient polynomial fit that cannot be
        reduced.
    """
    if not isinstance(grid, BinnedGrid):
        raise ValueError("grid must be a BinnedGrid (see bin_difference)")
    under = _upper(undersample_style, UNDERSAMPLE_STYLES, "undersample_style")
    style = _upper(interp_style, INTERP_STYLES, "interp_style")
    domain = image_domain(grid.shape)
    if not use_polynomial and style == "NONE":
        vals = grid.values[grid.valid]
        rms = float(np.sqrt(np.mean(vals**2))) if vals.size else math.nan
        return BackgroundFit(
            "none", -1, "NONE", domain, None, None, grid, np.zeros(grid.nbins), rms,
            False, ("interp_style NONE: no background model",),
        )  # fmt: skip
    if grid.n_valid == 0:
        raise ValueError(
            "no bin holds enough good pixels to fit a background "
            "(is the overlap with the reference empty, or min_pixels too high?)"
        )
    if use_polynomial:
        if int(order) != order or order < 0:
            raise ValueError(f"order must be a non-negative integer, got {order!r}")
        if not (np.isfinite(grid_stdev_epsilon) and grid_stdev_epsilon >= 0):
            raise ValueError("grid_stdev_epsilon must be finite and non-negative")
        fit = _fit_polynomial(grid, int(order), bool(approx_weighting), grid_stdev_epsilon, under)
    else:
        fit = _fit_spline(grid, style, under, domain)
    valid = grid.valid
    if use_polynomial:  # the model where the bins measured (their good pixels' centroids)
        px, py = grid.positions()
        model = fit.evaluate(px, py)
    else:
        model = fit._mesh(grid.x, grid.y)
    resid = grid.values[valid] - model[valid]
    return replace(fit, model_at_bins=model, fit_rms=float(np.sqrt(np.mean(resid**2))))


def _poly_solve(xs, ys, v, e, order, domain, weighted):
    """Least-squares coefficients and covariance, or None when rank deficient."""
    nt = n_chebyshev_terms(order)
    if v.size < nt:
        return None
    a = chebyshev_basis(xs, ys, order, domain).T
    aw, rhs = (a / e[:, None], v / e) if weighted else (a, v)
    norms = np.linalg.norm(aw, axis=0)
    if np.any(norms == 0):
        return None
    q, r = np.linalg.qr(aw / norms)
    diag = np.abs(np.diag(r))
    if diag.min() <= 1e-10 * diag.max():
        return None
    coef = solve_triangular(r, q.T @ rhs) / norms
    rinv = solve_triangular(r, np.eye(nt))
    cov = (rinv @ rinv.T) / np.outer(norms, norms)
    if not weighted:
        dof = v.size - nt
        res = v - a @ coef
        s2 = float(res @ res) / dof if dof > 0 else float(np.mean(np.nan_to_num(e) ** 2))
        cov = cov * s2
    return coef, cov


def _fit_polynomial(grid, order, approx_weighting, eps, under):
    valid = grid.valid
    jj, ii = np.nonzero(valid)
    px, py = grid.positions()  # each bin at its good pixels' centroid
    xs, ys, v = px[valid], py[valid], grid.values[valid]
    cols, rows = np.unique(ii).size, np.unique(jj).size
    actions, weighted = [], approx_weighting
    e = grid.error[valid].astype(np.float64)
    pos = e[np.isfinite(e) & (e > 0)]
    if weighted and (np.all(grid.stdev[valid] < eps) or pos.size == 0):
        weighted = False
        actions.append(
            f"weighting turned off: every bin's stdev is below grid_stdev_epsilon={eps:g}"
        )
    if weighted:
        floor = 1e-3 * float(np.median(pos))
        low = ~(np.isfinite(e) & (e >= floor))
        if low.any():
            e = np.where(low, floor, e)
            actions.append(f"{int(low.sum())} zero or undefined bin error(s) raised to {floor:.3g}")
    domain = image_domain(grid.shape)
    need = order + 1
    if min(cols, rows) < need:
        msg = (
            f"{grid.nbins[1]} x {grid.nbins[0]} bins with valid bins in {cols} column(s) and "
            f"{rows} row(s): a Chebyshev polynomial of order {order} needs at least {need} "
            "per axis"
        )
        if under != "REDUCE_INTERP_ORDER":
            raise UndersampledError(f"{msg}; {_hint()}", need=(need, need), have=(rows, cols))
    start = min(order, cols - 1, rows - 1)
    for used in range(start, -1, -1):
        sol = _poly_solve(xs, ys, v, e, used, domain, weighted)
        if sol is not None:
            break
        if under != "REDUCE_INTERP_ORDER":
            raise ValueError(
                f"the {v.size} valid bins do not constrain a Chebyshev polynomial of order "
                f"{used} (rank deficient: too many empty bins); lower the order or use "
                "undersample_style='REDUCE_INTERP_ORDER'"
            )
    else:  # pragma: no cover - order 0 always solves with >= 1 valid bin
        raise ValueError("cannot fit even a constant to the valid bins")
    if used < order:
        actions.append(
            f"polynomial order reduced from {order} to {used}: valid bins in {cols} column(s) "
            f"and {rows} row(s) of {grid.nbins[1]} x {grid.nbins[0]}"
            + ("" if used == start else " and a rank-deficient fit at higher order")
        )
    coef, cov = sol
    return BackgroundFit(
        "polynomial", used, "", domain, coef, cov, grid, np.zeros(grid.nbins), math.nan,
        weighted, tuple(actions),
    )  # fmt: skip


def _fit_spline(grid, style, under, domain):
    lowest, actions, row_styles, column_style = _spline_styles(grid, style, under)
    return BackgroundFit(
        "spline", -1, lowest, domain, None, None, grid, np.zeros(grid.nbins), math.nan,
        False, actions, row_styles, column_style,
    )  # fmt: skip


def match_background(
    diff,
    *,
    mask=None,
    bin_size=256,
    statistic="MEANCLIP",
    nsigma_clip=3.0,
    niter=3,
    min_pixels=5,
    **fit_kwargs,
) -> BackgroundFit:
    """Bin a difference image and fit a background surface to it.

    Runs :func:`~stmatch.algorithms.bgmatch_grid.bin_difference` and
    :func:`fit_background`; with ``undersample_style='INCREASE_NXNYSAMPLE'`` it
    re-bins with more bins per axis (a bin count, see the module notes) until the
    surface is constrained, recording each re-binning.

    Parameters
    ----------
    diff : array_like
        2-D difference image (reference − science). Not modified.
    mask : array_like of bool, optional
        True for bad pixels.
    bin_size, statistic, nsigma_clip, niter, min_pixels
        Passed to :func:`~stmatch.algorithms.bgmatch_grid.bin_difference`.
    **fit_kwargs
        Passed to :func:`fit_background`.

    Returns
    -------
    BackgroundFit

    Raises
    ------
    ValueError
        As :func:`fit_background`, or when re-binning cannot reach enough bins.
    """
    bin_kw = dict(mask=mask, statistic=statistic, nsigma_clip=nsigma_clip, niter=niter,
                  min_pixels=min_pixels)  # fmt: skip
    grid = bin_difference(diff, bin_size=bin_size, **bin_kw)
    increase = str(fit_kwargs.get("undersample_style", "")).upper() == "INCREASE_NXNYSAMPLE"
    actions = []
    for _ in range(8):
        try:
            fit = fit_background(grid, **fit_kwargs)
        except UndersampledError as exc:
            if not increase:
                raise
            old = grid.nbins
            new = tuple(
                nb if have >= need else max(nb + 1, math.ceil(nb * need / max(have, 1)))
                for nb, need, have in zip(old, exc.need, exc.have, strict=True)
            )
            if new[0] > grid.shape[0] // 2 or new[1] > grid.shape[1] // 2:
                raise ValueError(
                    f"cannot re-bin to {new[1]} x {new[0]} bins on a {grid.shape[1]} x "
                    f"{grid.shape[0]} image: {exc}"
                ) from exc
            grid = bin_difference(diff, nbins=new, **bin_kw)
            actions.append(
                f"re-binned from {old[1]} x {old[0]} to {new[1]} x {new[0]} bins "
                f"(~{grid.bin_size} px): {exc.have[1]} x {exc.have[0]} usable, "
                f"{exc.need[1]} x {exc.need[0]} needed"
            )
            continue
        return replace(fit, actions=tuple(actions) + fit.actions)
    raise ValueError(f"re-binning did not give enough valid bins: {'; '.join(actions)}")

r"""Separable spline surfaces through a grid of bin statistics.

The spline surfaces of :func:`~stmatch.algorithms.bgmatch_fit.fit_background`
(``use_polynomial=False``) are held by a
:class:`~stmatch.algorithms.bgmatch_fit.BackgroundFit` of kind ``'spline'``; this
module evaluates them and chooses the style of every line.

A **separable interpolant** through the bins: along :math:`x` within every bin
row holding valid bins (NaN bins dropped), then along :math:`y` through those
rows. A row takes part at column :math:`x` only if :math:`x` lies within its
valid bins' span widened by 1.5 bin spacings (unbounded on a side whose outer
valid bin is on the grid edge; all rows take part where too few qualify), so a
row with a few valid bins is not extrapolated across the image. Styles:
``CONSTANT`` (nearest valid bin), ``LINEAR``, ``NATURAL_SPLINE`` (zero second
derivative at the ends; de Boor 1978, *A Practical Guide to Splines*),
``AKIMA_SPLINE`` (Akima 1970, J. ACM 17, 589); ``NONE`` is no model (zero).
Past the outer points CONSTANT stays constant and the others continue
**linearly** with the end slope (the natural spline's own zero-curvature
extension, used for Akima too so that long extrapolations stay tame). The 1σ
error is that of the bilinear interpolant through the same bins,
:math:`\sigma^2 = \sum_k w_k^2 \epsilon_k^2` with the linear (nearest for
CONSTANT) row-then-column weights :math:`w_k`: exact for LINEAR, close for the
cubic styles, whose weights are dominated by the same neighbours.

Too few valid bins: a line needs 5 (Akima), 3 (natural), 2 (linear) or 1
(constant) points (:data:`MIN_POINTS`). Under ``undersample_style``
``REDUCE_INTERP_ORDER`` a short line's style is lowered along Akima → natural →
linear → constant and the decision recorded; otherwise :class:`UndersampledError`
is raised (see :mod:`stmatch.algorithms.bgmatch_fit`).
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import Akima1DInterpolator, CubicSpline

__all__ = ["INTERP_STYLES", "MIN_POINTS", "UndersampledError"]

#: Spline interpolation styles.
INTERP_STYLES = ("CONSTANT", "LINEAR", "NATURAL_SPLINE", "AKIMA_SPLINE", "NONE")
#: Fewest valid points per line for each spline style.
MIN_POINTS = {"CONSTANT": 1, "LINEAR": 2, "NATURAL_SPLINE": 3, "AKIMA_SPLINE": 5}
_LADDER = ("AKIMA_SPLINE", "NATURAL_SPLINE", "LINEAR", "CONSTANT")


class UndersampledError(ValueError):
    """Too few valid bins for the requested surface.

    Attributes
    ----------
    need, have : tuple of int
        ``(rows, columns)``: bins needed and held along each axis.
    """

    def __init__(self, message, *, need, have):
        super().__init__(message)
        self.need = tuple(int(v) for v in need)
        self.have = tuple(int(v) for v in have)


# -- one-dimensional piecewise cubics ---------------------------------------------------
def _pieces(xk, v, style):
    """Piecewise-cubic form of a 1-D interpolant with linear/constant extension.

    Returns ``(left, coef)``: piece ``k`` starts at ``left[k]`` and is
    ``((c0 t + c1) t + c2) t + c3`` with ``t = x - left[k]``; the first and last
    pieces extend to :math:`\\mp\\infty`. ``v`` is ``(K, ...)``.
    """
    v = np.asarray(v, dtype=np.float64)
    nk = xk.size
    rest = v.shape[1:]
    if style == "CONSTANT" or nk == 1:
        left = np.concatenate([xk[:1], 0.5 * (xk[1:] + xk[:-1])])
        coef = np.zeros((4, nk) + rest)
        coef[3] = v
        return left, coef
    if style == "LINEAR" or nk == 2:
        slope = np.diff(v, axis=0) / np.diff(xk).reshape((-1,) + (1,) * len(rest))
        coef = np.zeros((4, nk) + rest)
        coef[3] = v
        coef[2, :-1] = slope
        coef[2, -1] = slope[-1]
        return xk, coef
    if style == "NATURAL_SPLINE":
        c = CubicSpline(xk, v, axis=0, bc_type="natural").c
    else:
        c = Akima1DInterpolator(xk, v, axis=0).c
    h = xk[-1] - xk[-2]
    coef = np.zeros((4, nk + 1) + rest)
    coef[:, 1:nk] = c
    s0 = c[2, 0]
    s1 = (3.0 * c[0, -1] * h + 2.0 * c[1, -1]) * h + c[2, -1]
    coef[2, 0], coef[3, 0] = s0, v[0] - s0  # linear piece starting one pixel before
    coef[2, nk], coef[3, nk] = s1, v[-1]
    return np.concatenate([[xk[0] - 1.0], xk]), coef


def _locate(left, q):
    k = np.clip(np.searchsorted(left, q, side="right") - 1, 0, left.size - 1)
    return k, q - left[k]


def _horner(c, t):
    return ((c[0] * t + c[1]) * t + c[2]) * t + c[3]


def _lin_weights(xk, q, nearest):
    """Indices and weights of the bilinear (or nearest) interpolant through ``xk``."""
    q = np.asarray(q, dtype=np.float64)
    if xk.size == 1 or nearest:
        left = np.concatenate([xk[:1], 0.5 * (xk[1:] + xk[:-1])])
        k, _ = _locate(left, q)
        return k, k, np.ones_like(q), np.zeros_like(q)
    k = np.clip(np.searchsorted(xk, q, side="right") - 1, 0, xk.size - 2)
    t = (q - xk[k]) / (xk[k + 1] - xk[k])
    return k, k + 1, 1.0 - t, t


# -- separable spline evaluation --------------------------------------------------------
def _rows_at(fit, xq):
    """Kept bin rows, their centres, their support, and their values at ``xq``."""
    g = fit.grid
    rows = np.asarray([j for j, s in enumerate(fit.row_styles) if s], dtype=np.intp)
    dx = float(np.diff(g.x).max()) if g.x.size > 1 else np.inf
    vals = np.empty((rows.size, xq.size))
    lo, hi = np.empty(rows.size), np.empty(rows.size)
    for r, j in enumerate(rows):
        idx = np.flatnonzero(np.isfinite(g.values[j]))
        left, coef = _pieces(g.x[idx], g.values[j, idx], fit.row_styles[j])
        k, t = _locate(left, xq)
        vals[r] = _horner(coef[:, k], t)
        lo[r] = -np.inf if idx[0] == 0 else g.x[idx[0]] - 1.5 * dx
        hi[r] = np.inf if idx[-1] == g.x.size - 1 else g.x[idx[-1]] + 1.5 * dx
    return rows, vals, lo, hi


def _column_groups(fit, xq, lo, hi):
    """Group the query columns by the set of rows that support them.

    A row supports the columns from its first to its last valid bin and the whole
    bin beyond each (1.5 bin spacings from the outer valid centres; to infinity
    when that bin is on the grid edge); the y stage at ``x`` uses the supporting
    rows, or all rows when fewer than the column style needs support it. Yields
    (indices of the queries, boolean row selection).
    """
    bounds = np.unique(np.concatenate([lo, hi]))
    seg = np.searchsorted(bounds[np.isfinite(bounds)], xq, side="right")
    need = MIN_POINTS[fit.column_style]
    for s in np.unique(seg):
        sel = np.flatnonzero(seg == s)
        use = (lo <= xq[sel[0]]) & (xq[sel[0]] < hi)
        yield sel, (use if use.sum() >= need else np.ones_like(use))


def _spline_mesh(fit, xs, ys, dtype):
    rows, vals, lo, hi = _rows_at(fit, xs)
    out = np.empty((ys.size, xs.size), dtype=dtype)
    for sel, use in _column_groups(fit, xs, lo, hi):
        cols = slice(sel[0], sel[-1] + 1)  # xs is sorted: groups are column ranges
        left, coef = _pieces(fit.grid.y[rows[use]], vals[use, cols], fit.column_style)
        k, t = _locate(left, ys)  # ys sorted: in-place Horner on each piece's rows
        for part in np.split(np.arange(ys.size), np.flatnonzero(np.diff(k)) + 1):
            o = out[part[0] : part[-1] + 1, cols]
            c = coef[:, k[part[0]]].astype(dtype)
            tt = t[part, None].astype(dtype)
            np.multiply(tt, c[0], out=o)
            o += c[1]
            o *= tt
            o += c[2]
            o *= tt
            o += c[3]
    return out


def _spline_points(fit, xq, yq):
    rows, vals, lo, hi = _rows_at(fit, xq)
    out = np.empty(xq.size)
    for sel, use in _column_groups(fit, xq, lo, hi):
        left, coef = _pieces(fit.grid.y[rows[use]], vals[np.ix_(use, sel)], fit.column_style)
        k, t = _locate(left, yq[sel])
        out[sel] = _horner(coef[:, k, np.arange(sel.size)], t)
    return out


def _spline_variance(fit, xq, yq, *, points):
    g = fit.grid
    rows, _, lo, hi = _rows_at(fit, xq)
    var_rows = np.empty((rows.size, xq.size))
    for r, j in enumerate(rows):
        ok = np.isfinite(g.values[j])
        e2 = np.nan_to_num(g.error[j, ok]) ** 2
        i0, i1, w0, w1 = _lin_weights(g.x[ok], xq, fit.row_styles[j] == "CONSTANT")
        var_rows[r] = w0**2 * e2[i0] + w1**2 * e2[i1]
    out = np.empty(xq.size if points else (yq.size, xq.size))
    nearest = fit.column_style == "CONSTANT"
    for sel, use in _column_groups(fit, xq, lo, hi):
        v = var_rows[np.ix_(use, sel)]
        if points:
            i0, i1, w0, w1 = _lin_weights(g.y[rows[use]], yq[sel], nearest)
            cols = np.arange(sel.size)
            out[sel] = w0**2 * v[i0, cols] + w1**2 * v[i1, cols]
        else:
            i0, i1, w0, w1 = _lin_weights(g.y[rows[use]], yq, nearest)
            out[:, sel] = (w0**2)[:, None] * v[i0] + (w1**2)[:, None] * v[i1]
    return out


# -- choosing the styles -----------------------------------------------------------------
def _hint():
    return (
        "use a smaller bin_size, a lower order or style, or "
        "undersample_style='REDUCE_INTERP_ORDER' or 'INCREASE_NXNYSAMPLE'"
    )


def _best_style(style, n):
    for s in _LADDER[_LADDER.index(style) :]:
        if n >= MIN_POINTS[s]:
            return s
    return ""


def _spline_styles(grid, style, under):
    """Style of every bin row and of the column stage, and the decisions made.

    Returns ``(lowest, actions, row_styles, column_style)``; raises
    :class:`UndersampledError` as described in the module notes.
    """
    counts = np.count_nonzero(grid.valid, axis=1)
    rows = np.flatnonzero(counts > 0)
    need = MIN_POINTS[style]
    short = [j for j in rows if counts[j] < need]
    n_rows = rows.size
    best_row = int(counts.max())
    if short or n_rows < need:
        what = []
        if short:
            listed = ", ".join(f"{j} ({counts[j]})" for j in short[:8])
            more = f" and {len(short) - 8} more" if len(short) > 8 else ""
            what.append(f"bin row(s) {listed}{more} hold too few valid bins")
        if n_rows < need:
            what.append(f"only {n_rows} bin row(s) hold valid bins")
        msg = f"{'; '.join(what)}: {style} needs at least {need} valid points per line"
        if under == "THROW_EXCEPTION" or (
            under == "INCREASE_NXNYSAMPLE" and (best_row < need or n_rows < need)
        ):
            raise UndersampledError(f"{msg}; {_hint()}", need=(need, need), have=(n_rows, best_row))
    actions = []
    row_styles = [""] * grid.nbins[0]
    reduced = {}
    for j in rows:
        row_styles[j] = _best_style(style, counts[j])
        if row_styles[j] != style:
            reduced.setdefault(row_styles[j], []).append(int(j))
    for s, js in reduced.items():
        actions.append(
            f"interpolation along x reduced from {style} to {s} in bin row(s) "
            f"{', '.join(map(str, js))} (too few valid bins)"
        )
    column_style = _best_style(style, n_rows)
    if column_style != style:
        actions.append(
            f"interpolation along y reduced from {style} to {column_style}: only {n_rows} "
            "bin row(s) hold valid bins"
        )
    used = [s for s in row_styles if s] + [column_style]
    lowest = max(used, key=_LADDER.index)
    return lowest, tuple(actions), tuple(row_styles), column_style

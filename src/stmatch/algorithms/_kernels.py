"""Interpolation kernels of `stmatch.algorithms.resample`.

The kernel definitions (Lanczos, bilinear, Lagrange; half-widths by method
name), their normalised weights tabulated every ``1 / _BINS`` pixel, the
kernel footprint and tap weights along one axis, the separable weighted sum
over the taps, and the look-ups over each footprint (counts of flagged pixels
from summed-area tables, bitwise OR of DQ values).  The equations are in the
docstring of `stmatch.algorithms.resample`.
"""

from __future__ import annotations

import numpy as np

_HALF_WIDTH = {
    "bilinear": 1,
    "lanczos2": 2,
    "lanczos3": 3,
    "lanczos4": 4,
    "lagrange6": 3,
    "lagrange8": 4,
}
_BINS = 65536  # kernel tabulated every 1/_BINS pixel
_TABLES: dict[str, np.ndarray] = {}


def _half_width(method) -> int:
    try:
        return _HALF_WIDTH[method]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown resampling method {method!r}; choose one of {sorted(_HALF_WIDTH)}"
        ) from None


def _kernel_table(method):
    """Normalised weights of the 2a taps for every tabulated fractional position.

    Row ``k``, column ``b`` is the weight of tap ``floor(x) - a + 1 + k`` for
    ``x - floor(x) = b / _BINS``; column 0 is exactly the unit impulse on tap
    ``a - 1`` (the position is on that pixel's centre).
    """
    table = _TABLES.get(method)
    if table is None:
        a = _HALF_WIDTH[method]
        f = np.arange(_BINS + 1, dtype=np.float64) / _BINS
        taps = np.arange(2 * a, dtype=np.float64)
        t = f[None, :] + (a - 1) - taps[:, None]
        if method == "bilinear":
            table = np.maximum(0.0, 1.0 - np.abs(t))
        elif method.startswith("lagrange"):
            # basis polynomial of tap k through the taps m != k, at distance t_m
            table = np.ones_like(t)
            for k in range(2 * a):
                for m in range(2 * a):
                    if m != k:
                        table[k] *= t[m] / (m - k)
        else:
            table = np.where(np.abs(t) < a, np.sinc(t) * np.sinc(t / a), 0.0)
        table[:, 0] = 0.0
        table[a - 1, 0] = 1.0
        table[:, -1] = 0.0
        table[a, -1] = 1.0
        table /= table.sum(axis=0)
        _TABLES[method] = table
    return table


def _footprint(pos, a):
    """Kernel footprint along one axis.

    Returns
    -------
    lo, hi : numpy.ndarray
        First and last pixel with a non-zero weight (a single pixel for a
        position on a pixel centre).
    base : numpy.ndarray
        ``floor(pos)``, moved up by one when ``pos`` rounds to the next centre.
    frac : numpy.ndarray
        Tabulated fractional position (index into :func:`_kernel_table`), in
        ``[0, _BINS)``; 0 means on the centre of pixel ``base``.
    """
    base = np.floor(pos)
    frac = np.rint((pos - base) * _BINS)
    up = frac >= _BINS
    base += up
    frac[up] = 0.0
    on = frac == 0.0
    lo = np.where(on, base, base - (a - 1))
    hi = np.where(on, base, base + a)
    return lo, hi, base, frac.astype(np.intp)


def _axis_weights(base, frac, n, method):
    """First tap index and weights, shape ``(ntap, *pos.shape)``, along one axis.

    Positions whose footprint leaves the axis get clipped taps and meaningless
    weights; the caller masks them.
    """
    a = _HALF_WIDTH[method]
    on = frac == 0
    if on.all():
        return np.clip(base, 0, n - 1).astype(np.intp), np.ones((1, *base.shape))
    ntap = min(2 * a, n)
    first = np.clip(base - (a - 1), 0, n - ntap)
    if ntap == 2 * a:
        weights = np.take(_kernel_table(method), frac, axis=1)
        # a centred position whose taps were clipped at an edge keeps its one pixel
        fix = on & (first != base - (a - 1))
    else:
        weights = np.zeros((ntap, *base.shape))
        fix = on
    if fix.any():
        for k in range(ntap):
            weights[k][fix] = first[fix] + k == base[fix]
    return first.astype(np.intp), weights


def _interpolate(flat, nx_in, fy, wy, fx, wx, squared=False):
    """Weighted sum over the taps of a flattened float64 image (vectorised gathers)."""
    base = fy * nx_in + fx
    idx = np.empty_like(base)
    g = np.empty(base.shape)
    row = np.empty(base.shape)
    acc = np.zeros(base.shape)
    if squared:
        wx = [w * w for w in wx]
    for j, wyj in enumerate(wy):
        np.add(base, j * nx_in, out=idx)
        for k, wxk in enumerate(wx):
            # the k-th tap of the row is the start of the view shifted by k
            np.take(flat[k:], idx, out=g, mode="clip")
            if k == 0:
                np.multiply(g, wxk, out=row)
            else:
                g *= wxk
                row += g
        row *= wyj * wyj if squared else wyj
        acc += row
    return acc


def _box_count(sat, lo_y, hi_y, lo_x, hi_x):
    """Number of flagged pixels in each box, from a (ny+1, nx+1) summed-area table."""
    ny, nx = sat.shape[0] - 1, sat.shape[1] - 1
    y0 = np.clip(lo_y, 0, ny).astype(np.intp)
    y1 = np.clip(hi_y + 1, 0, ny).astype(np.intp)
    x0 = np.clip(lo_x, 0, nx).astype(np.intp)
    x1 = np.clip(hi_x + 1, 0, nx).astype(np.intp)
    y1 = np.maximum(y1, y0)
    x1 = np.maximum(x1, x0)
    return sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]


def _summed_area(mask):
    dtype = np.int32 if mask.size < 2**31 else np.int64
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=dtype)
    np.cumsum(mask, axis=0, out=sat[1:, 1:])
    np.cumsum(sat[1:, 1:], axis=1, out=sat[1:, 1:])
    return sat


def _dq_or(dq, lo_y, hi_y, lo_x, hi_x, a):
    """Bitwise OR of the DQ values inside each (clipped) box; boxes are <= 2a wide."""
    ny, nx = dq.shape
    y0 = np.clip(lo_y, 0, ny - 1).astype(np.intp)
    y1 = np.clip(hi_y, -1, ny - 1).astype(np.intp)
    x0 = np.clip(lo_x, 0, nx - 1).astype(np.intp)
    x1 = np.clip(hi_x, -1, nx - 1).astype(np.intp)
    out = np.zeros(y0.shape, dtype=np.uint32)
    for j in range(2 * a):
        yy = y0 + j
        oky = yy <= y1
        for k in range(2 * a):
            xx = x0 + k
            ok = oky & (xx <= x1)
            out |= np.where(ok, dq[np.minimum(yy, ny - 1), np.minimum(xx, nx - 1)], 0)
    return out

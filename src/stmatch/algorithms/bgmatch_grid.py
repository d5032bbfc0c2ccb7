r"""Binned statistics of a difference image.

Background matching (the numerical core of ``BackgroundMatchStep``) models the
difference :math:`d = R - S` between a reference exposure :math:`R` and a science
exposure :math:`S` on one pixel grid by a smooth surface. This module holds the
bin edges (:func:`bin_edges`), the bin statistics (:class:`BinnedGrid`) and the
reduction of :math:`d` to a coarse grid of them (:func:`bin_difference`). The
choice of the reference (:func:`reference_scores`) and the match diagnostics
(:func:`match_diagnostics`) are in :mod:`stmatch.algorithms.bgmatch_select` (and
importable from here); the surfaces themselves are in
:mod:`stmatch.algorithms.bgmatch_fit` and :mod:`stmatch.algorithms.bgmatch_spline`.

Binning
-------
An axis of :math:`n` pixels is cut into :math:`n_b = \max(1, \lfloor n/b + 1/2\rfloor)`
bins for a bin size :math:`b`, with integer edges
:math:`e_k = \lfloor k\,n/n_b + 1/2\rfloor`, :math:`k = 0..n_b`, so bins differ in
size by at most one pixel. The centre of a bin with edges ``lo, hi`` is the mean
pixel index :math:`(lo + hi - 1)/2` (0-based, ``x`` is the column).

Statistics of the good pixels of a bin (:math:`n` values :math:`d_i`):

* ``MEAN``: :math:`\bar d`, sample standard deviation :math:`s`, standard error
  :math:`s/\sqrt n`;
* ``MEDIAN``: the sample median (mean of the two middle values for even :math:`n`),
  :math:`s` of all good pixels, standard error :math:`\sqrt{\pi/2}\,s/\sqrt n`
  (asymptotic efficiency of the median on Gaussian noise);
* ``MEANCLIP``: ``niter`` clipping passes. Pass 1 keeps the pixels with
  :math:`|d_i - c_0| \le \kappa\,\sigma_0` about a robust centre :math:`c_0` with
  the robust :math:`\sigma_0 = \mathrm{IQR}/1.349`; pass :math:`k > 1` keeps
  :math:`|d_i - \bar d_{k-1}| \le \kappa\,s_{k-1}` with the mean and standard
  deviation of the pixels kept by pass :math:`k-1` (always selecting from all good
  pixels of the bin). The value is the mean of the pixels kept by the last pass,
  ``stdev`` their standard deviation, ``npix`` their number, the error
  :math:`s/\sqrt{n}`. A pass that would keep fewer than ``min_pixels`` pixels is
  not applied to that bin (it keeps the previous pass's result; before pass 1
  that is :math:`c_0` and :math:`\sigma_0`). :math:`\kappa` is ``nsigma_clip``.
  :math:`c_0` and the quartiles are the order statistics of rank
  :math:`\lfloor q(m-1) + 1/2\rfloor` (:math:`q = 1/2, 1/4, 3/4`) of the
  :math:`m` good pixels of a regular subsample of the bin: every :math:`s`-th
  pixel in storage order, :math:`s = \max(1, \lfloor P/2048\rfloor)` for a bin of
  :math:`P` pixels (so bins under 4096 pixels use every pixel, and a bin whose
  subsample holds fewer than 256 good pixels uses all its good pixels). They
  only place the first clipping window; the value comes from the passes.

Bins with fewer than ``min_pixels`` good pixels get NaN value, stdev and error.
All statistics are vectorised over bins: the image is laid out as a
``(n_bins, pixels_per_bin)`` array (a reshape when the bins are equal, a gather
with padding otherwise). The ``MEDIAN`` is exact: order statistics are found by a
two-stage selection (bounds from a regular subsample of each bin, then an exact
selection among the few pixels between the bounds; bins where the bounds miss
fall back to a partial sort of the bin).

Reference: binned background estimation as in Bosch et al. (2018), PASJ 70, S5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .bgmatch_select import match_diagnostics, reference_scores

__all__ = [
    "GRID_STATISTICS",
    "BinnedGrid",
    "bin_difference",
    "bin_edges",
    "match_diagnostics",
    "reference_scores",
]

#: Supported bin statistics.
GRID_STATISTICS = ("MEAN", "MEDIAN", "MEANCLIP")

#: Interquartile range to standard deviation of a normal distribution, 1/1.34898.
IQR_TO_SIGMA = 0.7413011092528009

#: Standard error of the median relative to that of the mean on Gaussian noise.
MEDIAN_EFFICIENCY = math.sqrt(math.pi / 2.0)

_SMALL_BIN = 4096  # bins with at most this many pixels are fully sorted
_SUBSAMPLE = 2048  # subsample size for the selection bounds


@dataclass(frozen=True, eq=False)
class BinnedGrid:
    r"""Bin statistics of a difference image.

    Attributes
    ----------
    x, y : numpy.ndarray
        ``(nbx,)`` and ``(nby,)`` bin centres in pixels (0-based; ``x`` is the column).
    x_edges, y_edges : numpy.ndarray
        ``(nbx + 1,)`` and ``(nby + 1,)`` integer pixel edges; bin ``k`` spans
        ``[edges[k], edges[k + 1])``.
    values : numpy.ndarray
        ``(nby, nbx)`` bin statistic, NaN where a bin had too few good pixels.
    stdev : numpy.ndarray
        ``(nby, nbx)`` standard deviation of the pixels that entered the statistic.
    error : numpy.ndarray
        ``(nby, nbx)`` standard error of ``values``.
    npix : numpy.ndarray
        ``(nby, nbx)`` number of pixels that entered the statistic (after clipping).
    bin_size : int
        Nominal bin size in pixels (for grids made from bin counts: the smallest
        bin side).
    statistic : str
        ``'MEAN'``, ``'MEDIAN'`` or ``'MEANCLIP'``.
    shape : tuple of int
        ``(ny, nx)`` of the binned image.
    x_mean, y_mean : numpy.ndarray or None
        ``(nby, nbx)`` mean position of each bin's good pixels (None: every pixel
        is good and the means are the bin centres). A bin only partly covered
        (at the edge of an overlap, beside a chip gap or a mask) measures the
        background at its good pixels' centroid, not at its centre: with a
        gradient :math:`g` and a centroid :math:`\delta` pixels from the
        centre, evaluating at the centre would bias the bin by :math:`g\delta`.
        The polynomial fit uses these positions.
    """

    x: np.ndarray
    y: np.ndarray
    x_edges: np.ndarray
    y_edges: np.ndarray
    values: np.ndarray
    stdev: np.ndarray
    error: np.ndarray
    npix: np.ndarray
    bin_size: int
    statistic: str
    shape: tuple
    x_mean: np.ndarray | None = None
    y_mean: np.ndarray | None = None

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """``(nby, nbx)`` x and y where each bin measures the background: the centroid
        of its good pixels (bin centre when it has none, or none are bad)."""
        gx, gy = np.meshgrid(self.x, self.y)
        if self.x_mean is None or self.y_mean is None:
            return gx, gy
        ok = np.isfinite(self.x_mean) & np.isfinite(self.y_mean)
        return np.where(ok, self.x_mean, gx), np.where(ok, self.y_mean, gy)

    @property
    def nbins(self) -> tuple[int, int]:
        """``(nby, nbx)``: number of bins along each axis."""
        return (self.y.size, self.x.size)

    @property
    def valid(self) -> np.ndarray:
        """``(nby, nbx)`` boolean: bins with a finite value."""
        return np.isfinite(self.values)

    @property
    def n_valid(self) -> int:
        """Number of bins with a finite value."""
        return int(np.count_nonzero(self.valid))


def _round_half_up(v):
    return np.floor(np.asarray(v, dtype=np.float64) + 0.5).astype(np.intp)


def bin_edges(n: int, *, bin_size: int | None = None, nbins: int | None = None) -> np.ndarray:
    """Integer edges of nearly equal bins along an axis of ``n`` pixels.

    Parameters
    ----------
    n : int
        Number of pixels along the axis.
    bin_size : int, optional
        Bin size; the bin count is ``max(1, round(n / bin_size))`` (half up).
    nbins : int, optional
        Bin count (instead of ``bin_size``).

    Returns
    -------
    numpy.ndarray
        ``(nb + 1,)`` edges ``round(linspace(0, n, nb + 1))`` (half up).

    Raises
    ------
    ValueError
        If ``bin_size`` exceeds ``n`` or the count is not in ``1..n``.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"an axis needs at least one pixel, got {n}")
    if (bin_size is None) == (nbins is None):
        raise ValueError("give exactly one of bin_size and nbins")
    if nbins is None:
        if int(bin_size) != bin_size or bin_size < 1:
            raise ValueError(f"bin_size must be a positive integer, got {bin_size!r}")
        if bin_size > n:
            raise ValueError(
                f"bin_size {bin_size} is larger than the image ({n} pixels along an axis); "
                "use a smaller bin_size"
            )
        nb = max(1, int(_round_half_up(n / bin_size)))
    else:
        nb = int(nbins)
        if nb != nbins or not 1 <= nb <= n:
            raise ValueError(f"the bin count must be an integer in 1..{n}, got {nbins!r}")
    return _round_half_up(np.linspace(0.0, n, nb + 1))


def _check_image(diff, mask):
    d = np.asarray(diff)
    if d.ndim != 2:
        raise ValueError(f"the difference image must be 2-D, got {d.ndim} dimension(s)")
    if d.dtype.kind not in "fiu":
        raise ValueError(f"the difference image must be numeric, got dtype {d.dtype}")
    if d.dtype != np.float32:
        d = d.astype(np.float64, copy=False)
    good = np.isfinite(d)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != d.shape:
            raise ValueError(f"mask has shape {m.shape}, the difference image {d.shape}")
        good &= ~m
    return d, good


def _blocks(data, good, all_good, y_edges, x_edges) -> np.ndarray:
    """``(n_bins, pixels_per_bin)`` copy of ``data`` per bin, NaN for bad or padding."""
    hy, wx = np.diff(y_edges), np.diff(x_edges)
    nby, nbx = hy.size, wx.size
    if hy.min() == hy.max() and wx.min() == wx.max():
        src = data if all_good else np.where(good, data, np.nan)
        four = src.reshape(nby, int(hy[0]), nbx, int(wx[0])).transpose(0, 2, 1, 3)
        return four.reshape(nby * nbx, -1)  # copies: the transposed view is not contiguous
    # unequal bins (sizes differ by at most one pixel): pad each to the largest size
    # by repeating its last row/column, then blank the padding
    hmax, wmax = int(hy.max()), int(wx.max())
    ar_h, ar_w = np.arange(hmax), np.arange(wmax)
    ri = np.minimum(y_edges[:-1, None] + ar_h, y_edges[1:, None] - 1).ravel()
    ci = np.minimum(x_edges[:-1, None] + ar_w, x_edges[1:, None] - 1).ravel()
    ok = (ar_h < hy[:, None]).ravel()[:, None] & (ar_w < wx[:, None]).ravel()[None, :]
    if not all_good:
        ok &= good.take(ri, axis=0).take(ci, axis=1)
    padded = data.take(ri, axis=0).take(ci, axis=1)
    np.copyto(padded, np.nan, where=~ok)
    four = padded.reshape(nby, hmax, nbx, wmax).transpose(0, 2, 1, 3)
    return four.reshape(nby * nbx, hmax * wmax)


def _take_ranks(sorted_rows, ranks):
    p = sorted_rows.shape[1]
    return np.take_along_axis(sorted_rows, np.clip(ranks, 0, p - 1), axis=1)


def _rank_groups(ranks):
    """Split the rank columns into runs of neighbouring ranks (gaps <= 1 in every row)."""
    groups = [[0]]
    for c in range(1, ranks.shape[1]):
        if np.all(ranks[:, c] - ranks[:, c - 1] <= 1):
            groups[-1].append(c)
        else:
            groups.append([c])
    return groups


def _order_stats(blk, n, ranks):
    """Exact order statistics of each row of ``blk`` (NaN = absent).

    ``ranks`` is ``(n_bins, R)``, 0-based among the ``n`` finite values of a row and
    non-decreasing along axis 1. Rows with ``n == 0`` give NaN.
    """
    nb, p = blk.shape
    ranks = np.asarray(ranks, dtype=np.intp)
    if p <= _SMALL_BIN:
        out = _take_ranks(np.sort(blk, axis=1), ranks).astype(np.float64)
        out[n == 0] = np.nan
        return out
    sub = np.sort(blk[:, :: max(1, p // _SUBSAMPLE)], axis=1)  # NaN sorts last
    ns = np.count_nonzero(~np.isnan(sub), axis=1)
    last = sub.shape[1] - 1
    nn = np.maximum(n, 1)
    margin = 3.0 * np.sqrt(0.25 * ns) + 2.0  # 3 binomial sigmas of a sample rank
    out = np.full(ranks.shape, np.nan)
    for cols in _rank_groups(ranks):
        r_lo, r_hi = ranks[:, cols[0]], ranks[:, cols[-1]]
        # bounds from the subsample that bracket the wanted ranks with high probability
        i_lo = np.floor((r_lo + 0.5) / nn * ns - margin).astype(np.intp)
        i_hi = np.ceil((r_hi + 0.5) / nn * ns + margin).astype(np.intp)
        lo = np.where(i_lo >= 0, _take_ranks(sub, i_lo[:, None])[:, 0], -np.inf)
        hi = np.where(i_hi < ns, _take_ranks(sub, np.minimum(i_hi, last)[:, None])[:, 0], np.inf)
        inside = blk >= lo[:, None]
        below = n - _count(inside)  # NaN is neither below nor inside
        inside &= blk <= hi[:, None]
        n_in = _count(inside)
        # exact selection among the values between the bounds, padded with +inf
        vals = blk.ravel().take(np.flatnonzero(inside))
        padded = np.full((nb, max(int(n_in.max()), 1)), np.inf, dtype=blk.dtype)
        ends = np.cumsum(n_in)
        for i in range(nb):
            padded[i, : n_in[i]] = vals[ends[i] - n_in[i] : ends[i]]
        padded.sort(axis=1)
        for c in cols:
            out[:, c] = _take_ranks(padded, (ranks[:, c] - below)[:, None])[:, 0]
        missed = (n > 0) & ((below > r_lo) | (below + n_in <= r_hi))
        for i in np.flatnonzero(missed):  # bounds missed the ranks: partial sort of the bin
            k = ranks[i, cols]
            out[i, cols] = np.partition(blk[i], k)[k]
    out[n == 0] = np.nan
    return out


def _count(mask):
    """Number of True values per row (a byte sum: faster than ``count_nonzero``)."""
    return mask.view(np.uint8).sum(axis=1, dtype=np.int64)


def _moments(blk, centre, lim=None, has_nan=True):
    """Count, mean and sample stdev per row of the finite values of ``blk``.

    With ``lim``, only values with :math:`|v - c| \\le` ``lim`` count. Sums are
    pairwise sums of the deviations from ``centre`` (which keeps them accurate).
    """
    centre = centre.astype(blk.dtype)
    dv = blk - centre[:, None]
    if lim is None:
        keep = np.isnan(dv) if has_nan else None
        if keep is not None:
            np.logical_not(keep, out=keep)
    else:
        lim = lim.astype(blk.dtype)[:, None]
        keep = dv <= lim
        keep &= dv >= -lim
    if keep is None:
        n = np.full(blk.shape[0], blk.shape[1])
    else:
        n = _count(keep)
        np.copyto(dv, 0, where=~keep)
    s1 = dv.sum(axis=1).astype(np.float64)
    np.square(dv, out=dv)
    s2 = dv.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_d = s1 / n
        var = np.maximum(s2 - s1 * mean_d, 0.0) / (n - 1)
    var[n < 2] = np.nan
    return n, centre.astype(np.float64) + mean_d, np.sqrt(var)


def _subsample_quantiles(blk, n_good, fractions, min_count=256):
    """Quantiles of a regular subsample of each row (every ``s``-th value,
    ``s = max(1, P // 2048)``, order statistic of rank ``floor(q (m - 1) + 1/2)``
    among its ``m`` finite values); rows whose subsample holds fewer than
    ``min_count`` finite values (but more in the row) use all their values."""
    sub = np.sort(blk[:, :: max(1, blk.shape[1] // _SUBSAMPLE)], axis=1)
    ns = _count(~np.isnan(sub))
    frac = np.asarray(fractions, dtype=np.float64)
    ranks = np.floor(frac[None, :] * np.maximum(ns - 1, 0)[:, None] + 0.5).astype(np.intp)
    out = _take_ranks(sub, ranks).astype(np.float64)
    few = (ns < min_count) & (n_good > ns)
    if few.any():
        rk = np.floor(frac[None, :] * np.maximum(n_good[few] - 1, 0)[:, None] + 0.5)
        out[few] = _order_stats(blk[few], n_good[few], rk.astype(np.intp))
    out[n_good == 0] = np.nan
    return out


def bin_difference(
    diff,
    *,
    mask=None,
    bin_size=256,
    statistic="MEANCLIP",
    nsigma_clip=3.0,
    niter=3,
    min_pixels=5,
    nbins=None,
) -> BinnedGrid:
    """Grid a difference image into bins and compute a statistic per bin.

    Parameters
    ----------
    diff : array_like
        2-D difference image (reference − science). Non-finite pixels are bad.
        Not modified.
    mask : array_like of bool, optional
        True for bad pixels.
    bin_size : int
        Bin size in pixels (see the module notes for the edges).
    statistic : {'MEANCLIP', 'MEAN', 'MEDIAN'}
        Bin statistic (case-insensitive).
    nsigma_clip : float
        Clipping limit :math:`\\kappa` of ``MEANCLIP``.
    niter : int
        Number of clipping passes of ``MEANCLIP`` (>= 1).
    min_pixels : int
        Bins with fewer good (for ``MEANCLIP``: kept) pixels get NaN (>= 2).
    nbins : int or (int, int), optional
        Bin counts ``(nby, nbx)`` (or one count for both axes) instead of
        ``bin_size``.

    Returns
    -------
    BinnedGrid

    Raises
    ------
    ValueError
        For a bad shape, statistic or knob, or a bin size larger than the image.
    """
    d, good = _check_image(diff, mask)
    ny, nx = d.shape
    stat = str(statistic).upper()
    if stat not in GRID_STATISTICS:
        raise ValueError(f"statistic must be one of {GRID_STATISTICS}, not {statistic!r}")
    if not (np.isfinite(nsigma_clip) and nsigma_clip > 0):
        raise ValueError(f"nsigma_clip must be positive, got {nsigma_clip!r}")
    if int(niter) != niter or niter < 1:
        raise ValueError(f"niter must be a positive integer, got {niter!r}")
    if int(min_pixels) != min_pixels or min_pixels < 2:
        raise ValueError(f"min_pixels must be an integer >= 2, got {min_pixels!r}")
    if nbins is None:
        y_edges, x_edges = bin_edges(ny, bin_size=bin_size), bin_edges(nx, bin_size=bin_size)
        size = int(bin_size)
    else:
        nby, nbx = (nbins, nbins) if np.ndim(nbins) == 0 else nbins
        y_edges, x_edges = bin_edges(ny, nbins=nby), bin_edges(nx, nbins=nbx)
        size = int(min(np.diff(y_edges).min(), np.diff(x_edges).min()))
    nby, nbx = y_edges.size - 1, x_edges.size - 1

    all_good = bool(good.all())
    blk = _blocks(d, good, all_good, y_edges, x_edges)
    full = all_good and blk.shape[1] == d.size // blk.shape[0]
    n_good = np.full(blk.shape[0], blk.shape[1]) if full else _count(~np.isnan(blk))
    if stat == "MEAN":
        shift = np.nan_to_num(_subsample_quantiles(blk, n_good, [0.5])[:, 0])
        npix, value, stdev = _moments(blk, shift, has_nan=not full)
        error = stdev / np.sqrt(np.maximum(npix, 1))
    elif stat == "MEDIAN":
        ranks = np.stack([(n_good - 1) // 2, n_good // 2], axis=1).clip(0)
        value = _order_stats(blk, n_good, ranks).mean(axis=1)
        npix, _, stdev = _moments(blk, np.nan_to_num(value), has_nan=not full)
        error = MEDIAN_EFFICIENCY * stdev / np.sqrt(np.maximum(npix, 1))
    else:
        value, stdev, npix = _meanclip(blk, n_good, float(nsigma_clip), int(niter), min_pixels)
        error = stdev / np.sqrt(np.maximum(npix, 1))

    bad = npix < min_pixels
    value, stdev, error = (
        np.where(bad, np.nan, a).reshape(nby, nbx) for a in (value, stdev, error)
    )
    x_mean = y_mean = None
    if not all_good:
        x_mean, y_mean = _centroids(good, y_edges, x_edges)
    return BinnedGrid(
        x=0.5 * (x_edges[:-1] + x_edges[1:] - 1.0),
        y=0.5 * (y_edges[:-1] + y_edges[1:] - 1.0),
        x_edges=x_edges,
        y_edges=y_edges,
        values=value,
        stdev=stdev,
        error=error,
        npix=npix.reshape(nby, nbx),
        bin_size=size,
        statistic=stat,
        shape=(ny, nx),
        x_mean=x_mean,
        y_mean=y_mean,
    )


def _centroids(good, y_edges, x_edges):
    """Mean x and y of the good pixels of every bin (NaN for empty bins)."""
    g = good.astype(np.float32)
    rows = np.add.reduceat(g, y_edges[:-1], axis=0, dtype=np.float64)  # (nby, nx)
    yy = np.arange(good.shape[0], dtype=np.float64)
    rows_y = np.add.reduceat(g * yy[:, None].astype(np.float32), y_edges[:-1], axis=0,
                             dtype=np.float64)  # fmt: skip
    xx = np.arange(good.shape[1], dtype=np.float64)
    count = np.add.reduceat(rows, x_edges[:-1], axis=1)
    sum_x = np.add.reduceat(rows * xx, x_edges[:-1], axis=1)
    sum_y = np.add.reduceat(rows_y, x_edges[:-1], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sum_x / count, sum_y / count


def _meanclip(blk, n_good, kappa, niter, min_pixels):
    """Clipped mean, stdev and count per row (see the module notes)."""
    q1, med, q3 = _subsample_quantiles(blk, n_good, [0.25, 0.5, 0.75]).T
    centre = np.nan_to_num(med)
    sigma = np.nan_to_num(IQR_TO_SIGMA * (q3 - q1))
    value, stdev, npix = centre.copy(), sigma.copy(), n_good.copy()
    for _ in range(niter):
        n, mean, sd = _moments(blk, centre, kappa * sigma)
        ok = n >= min_pixels
        value = np.where(ok, mean, value)
        stdev = np.where(ok, sd, stdev)
        npix = np.where(ok, n, npix)
        centre = np.where(ok, mean, centre)
        sigma = np.where(ok, np.nan_to_num(sd), sigma)
    return value, stdev, npix

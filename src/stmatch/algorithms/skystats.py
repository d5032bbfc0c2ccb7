r"""Robust sky statistics of a set of pixel values.

The statistics follow the definitions of the IRAF ``imstatistics`` family that
the jwst ``skymatch`` step uses (through ``stsci.imagestats``), written here
from their published definitions:

* iterative sigma clipping: start from the limits ``[lower, upper]``; at each of
  ``nclip`` iterations compute the mean :math:`\mu` and the sample standard
  deviation :math:`s` of the values inside the limits and replace the limits by
  :math:`[\max(\mathrm{lower}, \mu - l_\sigma s), \min(\mathrm{upper}, \mu + u_\sigma s)]`;
* ``mean``: :math:`\mu` of the clipped values; ``median``: their median;
* ``midpt``: the median interpolated in a histogram of bin width
  :math:`h = \mathrm{binwidth}\cdot s`;
* ``mode``: the vertex of the parabola through the highest histogram bin and its
  two neighbours, :math:`m = x_k + \tfrac{h}{2}\,(d_1 - d_2)/(d_1 + d_2)` with
  :math:`d_1 = c_k - c_{k-1}`, :math:`d_2 = c_k - c_{k+1}`.

Each result carries an estimate of its own standard error,
:math:`\sigma_{\mathrm{stat}} = \eta\, s / \sqrt{n}`, with the efficiency factor
:math:`\eta` of the statistic on Gaussian noise (1 for the mean,
:math:`\sqrt{\pi/2}` for the median and midpoint, and the value measured for the
histogram mode, whose error falls more slowly than :math:`n^{-1/2}`: measured by
Monte Carlo on Gaussian noise with ``binwidth`` 0.1 and 5 clipping iterations at
4σ, :math:`\sigma_{\mathrm{mode}} \approx 2\,s\,n^{-0.27}` for
:math:`10^3 \le n \le 10^6` (0.31σ at 10³ values, 0.05σ at 10⁶), see
:data:`STAT_EFFICIENCY` and :data:`MODE_ERROR`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["MODE_ERROR", "STAT_EFFICIENCY", "SKYSTATS", "SkyStatistic", "StatResult"]

#: Names of the supported statistics.
SKYSTATS = ("mean", "median", "midpt", "mode")

#: Standard error of each statistic in units of s/sqrt(n) on Gaussian noise
#: (textbook values; midpt is an interpolated median). The mode is separate.
STAT_EFFICIENCY = {
    "mean": 1.0,
    "median": math.sqrt(math.pi / 2.0),
    "midpt": math.sqrt(math.pi / 2.0),
}

#: Standard error of the histogram mode: ``coefficient * s * n**exponent``,
#: measured by Monte Carlo (see ``tests/algorithms/test_skystats.py``).
MODE_ERROR = (2.0, -0.27)


@dataclass(frozen=True)
class StatResult:
    """Result of a sky statistic.

    Attributes
    ----------
    value : float
        The statistic (NaN when it could not be computed).
    npix : int
        Number of values that entered the final statistic (after clipping).
    std : float
        Sample standard deviation of the clipped values.
    error : float
        Estimated standard error of ``value``.
    """

    value: float
    npix: int
    std: float
    error: float

    @property
    def valid(self) -> bool:
        """True when the statistic is finite and used at least one value."""
        return self.npix > 0 and math.isfinite(self.value)


_INVALID = StatResult(math.nan, 0, math.nan, math.nan)


@dataclass(frozen=True)
class SkyStatistic:
    """A configured sky statistic, callable on an array of values.

    Parameters
    ----------
    skystat : {'mode', 'median', 'mean', 'midpt'}
        Which statistic to return.
    lower, upper : float or None
        Values outside ``[lower, upper]`` are never used.
    nclip : int
        Number of sigma-clipping iterations (0 = no clipping).
    lsigma, usigma : float
        Lower and upper clipping limits in units of the standard deviation.
    binwidth : float
        Histogram bin width for ``mode`` and ``midpt``, in units of the standard
        deviation.

    Examples
    --------
    >>> import numpy as np
    >>> stat = SkyStatistic("median", nclip=0)
    >>> stat(np.array([1.0, 2.0, 3.0, 100.0])).value
    2.5
    """

    skystat: str = "mode"
    lower: float | None = None
    upper: float | None = None
    nclip: int = 5
    lsigma: float = 4.0
    usigma: float = 4.0
    binwidth: float = 0.1

    def __post_init__(self):
        if self.skystat not in SKYSTATS:
            raise ValueError(f"skystat must be one of {SKYSTATS}, not {self.skystat!r}")
        if int(self.nclip) != self.nclip or self.nclip < 0:
            raise ValueError(f"nclip must be a non-negative integer, not {self.nclip!r}")
        if not (self.lsigma > 0 and self.usigma > 0):
            raise ValueError("lsigma and usigma must be positive")
        if not self.binwidth > 0:
            raise ValueError("binwidth must be positive")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ValueError(f"lower ({self.lower}) must not exceed upper ({self.upper})")

    def standard_error(self, std: float, n: int) -> float:
        """Standard error of this statistic for ``n`` values of standard deviation ``std``."""
        if n <= 0:
            return math.nan
        if self.skystat == "mode":
            coefficient, exponent = MODE_ERROR
            return coefficient * std * n**exponent
        return STAT_EFFICIENCY[self.skystat] * std / math.sqrt(n)

    def __call__(self, values: np.ndarray) -> StatResult:
        """Compute the statistic of ``values`` (any shape; non-finite values ignored).

        Parameters
        ----------
        values : numpy.ndarray
            Pixel values. The array is not modified.

        Returns
        -------
        StatResult
            ``value`` is NaN and ``npix`` 0 when no value is usable.
        """
        v = np.asarray(values).ravel()
        if v.dtype.kind != "f":
            v = v.astype(np.float64)
        if v.size == 0:
            return _INVALID
        finite = np.isfinite(v)
        if not finite.all():
            v = v[finite]
            if v.size == 0:
                return _INVALID
        lo = -np.inf if self.lower is None else float(self.lower)
        hi = np.inf if self.upper is None else float(self.upper)
        if lo > -np.inf or hi < np.inf:
            v = v[(v >= lo) & (v <= hi)]
            if v.size == 0:
                return _INVALID

        # Work on values shifted by a typical value for a stable sum of squares.
        shift = float(v[v.size // 2])
        d = v - v.dtype.type(shift)
        lo_d, hi_d = lo - shift, hi - shift
        lo_c, hi_c = lo_d, hi_d
        # `cur` holds the values of d inside [cur_lo, cur_hi]. When new limits nest
        # inside the old ones (the usual case) they select from `cur`, which shrinks,
        # instead of from all values; the result is identical.
        cur = d
        cur_lo, cur_hi = -np.inf, np.inf
        n_prev = -1
        mean_d = std = math.nan
        for iteration in range(self.nclip + 1):
            if iteration:
                base = cur if (lo_c >= cur_lo and hi_c <= cur_hi) else d
                cur = base[(base >= lo_c) & (base <= hi_c)]
                cur_lo, cur_hi = lo_c, hi_c
            n = cur.size
            if n == 0:
                return _INVALID
            if n == n_prev:
                break
            mean_d = float(np.sum(cur, dtype=np.float64)) / n
            dev = cur - cur.dtype.type(mean_d)
            var = float(np.dot(dev, dev)) / (n - 1) if n > 1 else 0.0
            std = math.sqrt(var)
            n_prev = n
            lo_c = max(lo_d, mean_d - self.lsigma * std)
            hi_c = min(hi_d, mean_d + self.usigma * std)

        clipped = cur
        n = clipped.size
        if self.skystat == "mean":
            value_d = mean_d
        elif self.skystat == "median":
            value_d = float(np.median(clipped))
        else:
            value_d = _histogram_statistic(clipped, std * self.binwidth, self.skystat)
        return StatResult(value_d + shift, n, std, self.standard_error(std, n))


def _histogram_statistic(d: np.ndarray, width: float, which: str) -> float:
    """Mode or interpolated median of ``d`` from a histogram of bin ``width``."""
    dmin = float(d.min())
    dmax = float(d.max())
    span = dmax - dmin
    if not width > 0 or span <= 0 or width > span:
        # Everything falls in one bin: its centre (or the value itself).
        return dmin + 0.5 * min(span, width) if span > 0 else dmin
    nbins = int(span / width) + 1
    idx = ((d - dmin) * (1.0 / width)).astype(np.intp)
    np.clip(idx, 0, nbins - 1, out=idx)
    counts = np.bincount(idx, minlength=nbins)
    if which == "mode":
        k = int(np.argmax(counts))
        centre = dmin + (k + 0.5) * width
        if 0 < k < nbins - 1:
            d1 = float(counts[k] - counts[k - 1])
            d2 = float(counts[k] - counts[k + 1])
            if d1 + d2 > 0:
                centre += 0.5 * width * (d1 - d2) / (d1 + d2)
        return centre
    # midpt: where the cumulative histogram crosses half of the values.
    cum = np.cumsum(counts)
    half = 0.5 * cum[-1]
    k = int(np.searchsorted(cum, half))
    below = float(cum[k - 1]) if k > 0 else 0.0
    frac = (half - below) / counts[k] if counts[k] > 0 else 0.5
    return dmin + (k + frac) * width

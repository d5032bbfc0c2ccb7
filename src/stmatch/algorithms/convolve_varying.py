r"""Convolution of images and variance maps with a spatially varying kernel.

The kernel is a :class:`~stmatch.algorithms.spatial_kernel.SpatialKernel`,

.. math::

    K(x, y;\, u, v) = \sum_s B_s(x, y)\, \bar K_s(u, v),

evaluated at the **output** position :math:`(x, y)` (``x`` the column, ``y`` the
row index), with the centre pixel ``(h // 2, w // 2)`` of every term kernel at
offset :math:`(u, v) = (0, 0)`:

.. math::

    O(y, x) = \sum_{v, u} K(x, y;\, u, v)\, I(y - v, x - u)
            = \sum_s B_s(x, y)\, (\bar K_s \ast I)(y, x),

so one forward FFT of the (padded) image and one inverse FFT per spatial term,
each weighted by :math:`B_s` and accumulated, give the exact result (Alard 2000,
A&AS 144, 363, §2). The triangular Chebyshev terms are products
:math:`B_s = T_{i_s}(\tilde x)\, T_{j_s}(\tilde y)`: the row factor
:math:`T_{j_s}(\tilde y)` commutes with the inverse transform along :math:`x`, so it
is applied between the inverse transforms along :math:`y` (one per term) and along
:math:`x` (one per distinct column factor :math:`T_i`, shared by the terms with that
:math:`i`), and no weight is ever formed as a full-size image.

The variance of the output of independent pixels with variance :math:`V` is

.. math::

    \mathrm{Var}\,O(x) = \sum_u K(x;\, u)^2\, V(x - u),
    \qquad
    K(x)^2 = \sum_{s \le t} (2 - \delta_{st})\, B_s B_t\, \bar K_s \bar K_t ,

a convolution with a kernel in the span of the products :math:`\bar K_s \bar K_t`.
:func:`~stmatch.algorithms.variance_propagation.convolve_variance` compresses that
span to a few orthonormal images :math:`E_r` (see its notes and the bound there)
and convolves ``V`` once per :math:`E_r`.

Bad pixels (a mask, or non-finite values) are replaced by zero before the FFTs so
that NaNs never spread through the transforms; the output is NaN on the bad mask
dilated by the kernel *footprint* (:func:`kernel_footprint`), and the band at the
borders where the footprint reaches outside the image is flagged as ``edge``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy import fft as sfft  # noqa: F401 (the transforms used by row_bands)

from .row_bands import _reflect_index, convolve_in_bands, convolve_rows, input_rows, row_chunk
from .spatial_kernel import SpatialKernel

__all__ = [
    "ConvolveResult",
    "convolve_image",
    "convolve_variance",
    "dilate",
    "kernel_footprint",
    "variance_rank",
]

_FILLS = ("reflect", "zero")


@dataclass(frozen=True)
class ConvolveResult:
    """Result of :func:`convolve_image`.

    Attributes
    ----------
    data : numpy.ndarray
        Convolved image (``float32`` or ``float64``), NaN where ``bad``.
    bad : numpy.ndarray
        Boolean: output pixels whose kernel footprint touches a bad input pixel.
    edge : numpy.ndarray
        Boolean: output pixels whose kernel footprint reaches outside the image
        (their values depend on the ``fill`` of the padding).
    """

    data: np.ndarray
    bad: np.ndarray
    edge: np.ndarray


# ----------------------------------------------------------------------------- helpers
def _as_kernel(kernel, shape) -> SpatialKernel:
    if isinstance(kernel, SpatialKernel):
        return kernel
    k = np.asarray(kernel)
    if k.ndim == 2 and k.dtype.kind in "fiu":
        ny, nx = shape
        return SpatialKernel.constant(k, (-0.5, nx - 0.5, -0.5, ny - 0.5))
    raise ValueError(
        "kernel must be a SpatialKernel or a 2-D array (a constant kernel), "
        f"got {type(kernel).__name__}"
    )


def _input(arr, mask, name: str):
    """The 2-D real input (as given) and its bad map (``mask`` or non-finite)."""
    a = np.asarray(arr)
    if a.ndim != 2 or a.size == 0 or a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a non-empty 2-D real array, got {a.dtype} {a.shape}")
    bad = ~np.isfinite(a)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != a.shape or m.dtype != bool:
            raise ValueError(
                f"mask must be a boolean array (True = bad pixel) of the {name} shape "
                f"{a.shape}, got {m.dtype} {m.shape}"
            )
        bad |= m
    return a, bad


def _options(fill, dtype, chunk):
    """Validated ``fill``, output dtype and ``chunk`` (None: automatic)."""
    if fill not in _FILLS:
        raise ValueError(f"fill must be one of {_FILLS}, got {fill!r}")
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    if chunk is not None and (
        isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1
    ):
        raise ValueError(f"chunk must be a positive number of rows or None, got {chunk!r}")
    return fill, dt, None if chunk is None else int(chunk)


def _times(x_factor, r0, r1, c):
    """``post`` callback: multiply a block by a function of the column."""
    c *= x_factor


def _grid(lo: float, hi: float, m: int) -> np.ndarray:
    """``m`` Chebyshev–Lobatto points on ``[lo, hi]`` (ends included)."""
    if m == 1:
        return np.array([0.5 * (lo + hi)])
    return 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.cos(np.pi * np.arange(m) / (m - 1))


def _separable_terms(kernel: SpatialKernel, ny: int, nx: int):
    """Row factors ``(n, ny)`` and column factors ``(n, nx)`` with ``B_s = Y_s X_s``.

    Uses :math:`T_j(1) = 1`: on the edge ``x = x1`` a term reduces to its ``y``
    factor and on ``y = y1`` to its ``x`` factor.
    """
    x1, y1 = kernel.domain[1], kernel.domain[3]
    xs = kernel.spatial_terms(np.arange(nx, dtype=np.float64), y1)
    ys = kernel.spatial_terms(x1, np.arange(ny, dtype=np.float64))
    px, py = np.array([0.1, 0.37, 0.81]) * nx, np.array([0.63, 0.22, 0.95]) * ny  # a guard
    full = kernel.spatial_terms(px, py)
    fac = kernel.spatial_terms(px, y1) * kernel.spatial_terms(x1, py)
    if not np.allclose(full, fac, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(full).max())):
        raise NotImplementedError("the spatial terms of this kernel are not separable")
    return ys, xs


def _dilated_bad(bad, footprint, fill) -> np.ndarray:
    """Bad mask dilated by the footprint; with ``fill="reflect"`` the mirrored copies
    of bad pixels in the padding are bad too."""
    if not bad.any():
        return np.zeros(bad.shape, dtype=bool)
    (ny, nx), hy, hx = bad.shape, footprint.shape[0] // 2, footprint.shape[1] // 2
    if fill == "zero":
        padded = np.pad(bad, ((hy, hy), (hx, hx)))
    else:
        ri = _reflect_index(np.arange(-hy, ny + hy), ny)
        padded = bad[np.ix_(ri, _reflect_index(np.arange(-hx, nx + hx), nx))]
    return dilate(padded, footprint)[hy : hy + ny, hx : hx + nx]


def _edge_band(shape, footprint: np.ndarray) -> np.ndarray:
    """Pixels whose footprint reaches outside an image of ``shape``.

    Output pixel ``y`` reads input rows ``y - v`` for the row offsets ``v`` of the
    footprint, so it leaves the image when ``y < max v`` or ``y >= ny + min v``
    (and likewise for the columns).
    """
    ny, nx = shape
    edge = np.zeros(shape, dtype=bool)
    rows, cols = np.nonzero(footprint)
    if rows.size == 0:
        return edge
    v = rows - footprint.shape[0] // 2
    u = cols - footprint.shape[1] // 2
    edge[: max(int(v.max()), 0), :] = True
    edge[ny + min(int(v.min()), 0) :, :] = True
    edge[:, : max(int(u.max()), 0)] = True
    edge[:, nx + min(int(u.min()), 0) :] = True
    return edge


# ----------------------------------------------------------------------------- public
def kernel_footprint(kernel: SpatialKernel, *, threshold: float = 1e-4) -> np.ndarray:
    r"""Pixels of the kernel stamp that matter anywhere in the domain.

    The kernel is realised on a grid of positions over its domain (at least
    ``5 × 5``, ``2·order + 3`` per axis, domain corners included); a stamp pixel
    belongs to the footprint when :math:`|K(x, y; u, v)| \ge \mathrm{threshold}
    \cdot \max_{u, v} |K(x, y; u, v)|` at any of those positions.

    Parameters
    ----------
    kernel : SpatialKernel
        The kernel.
    threshold : float
        Relative level in ``[0, 1)``; 0 gives the whole stamp.

    Returns
    -------
    numpy.ndarray
        Boolean ``(h, w)`` array.
    """
    if not isinstance(kernel, SpatialKernel):
        raise ValueError(f"kernel must be a SpatialKernel, got {type(kernel).__name__}")
    threshold = float(threshold)
    if not (0.0 <= threshold < 1.0):
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
    m = max(5, 2 * kernel.order + 3)
    x0, x1, y0, y1 = kernel.domain
    gx, gy = np.meshgrid(np.linspace(x0, x1, m), np.linspace(y0, y1, m))
    k = np.abs(kernel.kernels_at(gx, gy))  # (m*m, h, w)
    peak = k.max(axis=(1, 2), keepdims=True)
    keep = (k >= threshold * peak) & (peak > 0)
    return keep.any(axis=0)


def dilate(mask, footprint) -> np.ndarray:
    r"""Binary dilation of a mask by a kernel footprint.

    .. math::

        D(y, x) = \bigvee_{(i, j):\, F_{ij}} M(y - v_i,\, x - u_j),
        \qquad v_i = i - h/\!/2,\ u_j = j - w/\!/2,

    true where the footprint, placed as in the convolution (module notes), touches
    a true pixel of ``M`` (pixels outside the image are false). Sparse masks are
    dilated by scattering the footprint offsets, dense ones by an FFT convolution
    with the footprint (small integer counts in float64: thresholding at 1/2 is exact).

    Parameters
    ----------
    mask : array_like of bool
        2-D mask.
    footprint : array_like of bool
        Odd-sized 2-D footprint; its centre pixel is offset ``(0, 0)``.

    Returns
    -------
    numpy.ndarray
        New boolean array of the mask's shape.
    """
    m = np.asarray(mask)
    if m.ndim != 2 or m.dtype != bool:
        raise ValueError(f"mask must be a 2-D boolean array, got {m.dtype} {m.shape}")
    f = np.asarray(footprint)
    if f.ndim != 2 or f.shape[0] % 2 == 0 or f.shape[1] % 2 == 0:
        raise ValueError(f"footprint must be a 2-D array of odd sizes, got shape {f.shape}")
    f = f.astype(bool)
    ny, nx = m.shape
    out = np.zeros(m.shape, dtype=bool)
    ys, xs = np.nonzero(m)
    fv, fu = np.nonzero(f)
    if ys.size == 0 or fv.size == 0:
        return out
    fv = fv - f.shape[0] // 2
    fu = fu - f.shape[1] // 2
    if ys.size * fv.size <= m.size // 4:
        step = max(1, (1 << 22) // ys.size)
        for a in range(0, fv.size, step):
            yy = (ys[None, :] + fv[a : a + step, None]).ravel()
            xx = (xs[None, :] + fu[a : a + step, None]).ravel()
            ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
            out[yy[ok], xx[ok]] = True
        return out
    ones = f[None].astype(np.float64)
    counts = _fft_convolve_terms(m, None, ones, [([(0, None)], None)], "zero", np.float32, None)
    return counts > 0.5


def _fft_convolve_terms(arr, bad, kernels, groups, fill, out_dtype, chunk):
    r"""Core: :math:`\sum_g P_g \cdot \mathcal{F}_x^{-1}\big[\sum_{s \in g} Y_s(y)\,
    \mathcal{F}_y^{-1}(\hat I\, \hat K_s)\big]` over the whole image (module notes).

    ``groups``: list of ``(members, post)``; ``members``: ``(s, y_factor)`` pairs
    (``y_factor`` over the image rows, or None for 1); ``post(r0, r1, c)``
    multiplies the real block ``c`` of output rows ``[r0, r1)`` in place, or None.
    ``arr`` (real or boolean) is read with its ``bad`` pixels (or None) as 0. Each
    block of rows, with ``hy`` rows of overlap (mirrored or zero beyond the image)
    and ``hx`` padded columns, is transformed once in an array of fast FFT size;
    all blocks share that size, so the kernel transforms (small matrix products,
    the kernels being tiny) are computed once
    (:func:`~stmatch.algorithms.row_bands.convolve_rows`). Float64 sums; all CPUs.
    """
    ny, nx = arr.shape
    h = kernels.shape[1]
    hy = h // 2

    def source(b0, b1):
        return input_rows(arr, bad, fill, b0, b1, hy)

    c = row_chunk(ny, h, chunk)
    return convolve_rows(source, 0, ny, nx, kernels, groups, fill, out_dtype, c)


def _convolve(arr, bad, kernels, weights, fill, out_dtype, chunk, mapper, band_rows):
    """The whole image at once (``mapper`` and ``band_rows`` None), or in row bands."""
    if mapper is None and band_rows is None:
        groups = weights.groups(0, arr.shape[0])
        return _fft_convolve_terms(arr, bad, kernels, groups, fill, out_dtype, chunk)
    if mapper is not None and not callable(mapper):
        raise ValueError(f"mapper must be callable or None, got {type(mapper).__name__}")
    return convolve_in_bands(
        arr, bad, kernels, weights, fill, out_dtype, chunk, mapper=mapper, band_rows=band_rows
    )


@dataclass(frozen=True, eq=False)
class _TermWeights:
    """Spatial weights of :func:`convolve_image`: ``B_s = Y_s(y) X_s(x)``.

    ``layout``: ``((x_term, ((s, use_y), ...)), ...)``, one entry per distinct
    column factor (``x_term`` the term whose :math:`X_s` it is, or None for 1);
    :meth:`groups` evaluates the factors at global rows ``[r0, r1)``.
    """

    kernel: SpatialKernel
    nx: int
    layout: tuple

    def groups(self, r0, r1):
        x1, y1 = self.kernel.domain[1], self.kernel.domain[3]
        ys = self.kernel.spatial_terms(x1, np.arange(r0, r1, dtype=np.float64))
        xs = self.kernel.spatial_terms(np.arange(self.nx, dtype=np.float64), y1)
        return [
            (
                [(s, ys[s] if use_y else None) for s, use_y in members],
                None if x_term is None else partial(_times, xs[x_term]),
            )
            for x_term, members in self.layout
        ]


def convolve_image(
    image,
    kernel,
    *,
    mask=None,
    fill: str = "reflect",
    dtype=np.float32,
    footprint_threshold: float = 1e-4,
    chunk=None,
    mapper=None,
    band_rows=None,
) -> ConvolveResult:
    r"""Convolve an image with a spatially varying kernel.

    Computes :math:`O(y, x) = \sum_{v,u} K(x, y; u, v)\, I(y - v, x - u)` as
    :math:`\sum_s B_s(x, y)\,(\bar K_s \ast I)` (module notes): the image is padded
    by the kernel half-sizes, transformed once with a real FFT (sizes from
    :func:`scipy.fft.next_fast_len`, all CPUs), multiplied by each term kernel's
    transform and transformed back, weighted by the spatial terms and accumulated
    in float64. The padding makes the convolution linear (nothing wraps around).
    For a constant kernel (one term) this is an ordinary convolution,
    ``scipy.signal.fftconvolve(image, kernel, mode="same")`` away from the edges.

    Parameters
    ----------
    image : array_like
        2-D image (not modified).
    kernel : SpatialKernel or array_like
        The kernel; a 2-D array is a constant kernel.
    mask : array_like of bool, optional
        True for bad input pixels; non-finite pixels are bad as well.
    fill : {"reflect", "zero"}
        Values beyond the borders: the image mirrored about its first and last
        pixels (numpy's ``reflect``), or zero.
    dtype : float32 or float64
        Output type (the arithmetic is float64 in either case).
    footprint_threshold : float
        Relative level of :func:`kernel_footprint` used for ``bad`` and ``edge``.
    chunk : int, optional
        Rows of output per block; each block is transformed with ``h // 2``
        overlapping rows on either side. By default blocks whose transforms have
        about 256 rows (at least ``4 h``) are used: small transforms stay in the
        processor caches and the memory of the transforms is a small fraction of
        the image. ``chunk=image.shape[0]`` transforms the whole padded image at once.
    mapper : callable, optional
        ``mapper(fn, items) -> list`` (results in order), e.g. from
        ``Engine.mapper``: the convolution then runs in row bands, one task per
        band (:mod:`~stmatch.algorithms.row_bands`). Each task receives its rows,
        ``h // 2`` halo rows of the padded input on either side and its global row
        offset; the result is identical (bit for bit) to the whole-image one.
    band_rows : int, optional
        Rows per band, rounded to whole blocks of ``chunk`` rows (default
        with a ``mapper``: about 8 bands). Without a ``mapper`` the bands run here,
        one after another.

    Returns
    -------
    ConvolveResult
        ``data`` (NaN where ``bad``), ``bad`` (the bad input mask, mirrored into
        the padding for ``fill="reflect"``, dilated by the footprint) and ``edge``
        (footprint reaches beyond the image).

    Bad pixels read as 0 in the transforms, so a NaN never spreads beyond the
    footprint; outside it (``|K|`` below ``footprint_threshold`` of its peak) that
    zero may leave a correspondingly tiny bias.
    """
    arr, bad = _input(image, mask, "image")
    kern = _as_kernel(kernel, arr.shape)
    fill, out_dtype, chunk = _options(fill, dtype, chunk)
    foot = kernel_footprint(kern, threshold=footprint_threshold)
    ys, xs = _separable_terms(kern, *arr.shape)
    layout = {}  # terms with the same x factor share one inverse transform along x
    for s in range(kern.n_terms):
        x_term = None if np.all(xs[s] == 1.0) else s
        members = layout.setdefault(xs[s].tobytes(), (x_term, []))[1]
        members.append((s, not np.all(ys[s] == 1.0)))
    del ys, xs
    layout = tuple((x_term, tuple(members)) for x_term, members in layout.values())
    weights = _TermWeights(kern, arr.shape[1], layout)
    data = _convolve(
        arr, bad, kern.term_kernels, weights, fill, out_dtype, chunk, mapper, band_rows
    )
    bad_out = _dilated_bad(bad, foot, fill)
    data[bad_out] = np.nan
    return ConvolveResult(data=data, bad=bad_out, edge=_edge_band(arr.shape, foot))


# the variance propagation lives in its own module; it imports the helpers above
from .variance_propagation import convolve_variance, variance_rank  # noqa: E402

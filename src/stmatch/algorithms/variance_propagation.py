r"""Propagation of a variance map through a spatially varying convolution.

The output of :func:`~stmatch.algorithms.convolve_varying.convolve_image` of
independent pixels with variance :math:`V` has the variance

.. math::

    \mathrm{Var}\,O(x) = \sum_u K(x;\, u)^2\, V(x - u),
    \qquad
    K(x)^2 = \sum_{s \le t} (2 - \delta_{st})\, B_s B_t\, \bar K_s \bar K_t ,

a convolution with a kernel in the span of the products :math:`\bar K_s \bar K_t`.
:func:`convolve_variance` compresses that span to a few orthonormal images
:math:`E_r` (see its notes and the bound there) and convolves ``V`` once per
:math:`E_r`, with the padding, bad-pixel and footprint conventions of
:mod:`stmatch.algorithms.convolve_varying`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from .convolve_varying import (
    _as_kernel,
    _convolve,
    _dilated_bad,
    _grid,
    _input,
    _options,
    _separable_terms,
    kernel_footprint,
)
from .spatial_kernel import SpatialKernel

__all__ = ["convolve_variance", "variance_rank"]


# ----------------------------------------------------------------------------- variance
def _variance_basis(kernel: SpatialKernel, rtol: float, box):
    r"""Orthonormal images ``E`` spanning :math:`K(x)^2` to ``rtol`` and the pair
    coefficients ``coef[p, r] = (2 - δ) <K_s K_t, E_r>`` for the pairs ``s <= t``."""
    rtol = float(rtol)
    if not (0.0 <= rtol < 1.0):
        raise ValueError(f"rtol must be in [0, 1), got {rtol!r}")
    tk = kernel.term_kernels
    n, h, w = tk.shape
    pairs = [(s, t) for s in range(n) for t in range(s, n)]
    mult = np.array([1.0 if s == t else 2.0 for s, t in pairs])
    prods = np.stack([(tk[s] * tk[t]).ravel() for s, t in pairs])  # (P, hw)
    m = 2 * kernel.order + 1
    gx, gy = np.meshgrid(_grid(box[0], box[1], m), _grid(box[2], box[3], m))
    b = kernel.spatial_terms(gx.ravel(), gy.ravel())  # (n, G)
    wgt = np.stack([mult[p] * b[s] * b[t] for p, (s, t) in enumerate(pairs)])  # (P, G)
    q = prods.T @ wgt  # (hw, G): K(x_g)^2 at the grid points
    u, sv, _ = np.linalg.svd(q, full_matrices=False)
    total = float(np.sqrt(np.sum(sv**2)))
    if total == 0.0:
        return np.zeros((0, h, w)), np.zeros((len(pairs), 0)), pairs
    tail = np.sqrt(np.cumsum((sv**2)[::-1])[::-1])  # tail[r] = ||discarded part|| keeping r
    tail = np.append(tail, 0.0)
    tol = max(rtol, 1e-13) * total
    rank = int(np.argmax(tail <= tol))
    e = u[:, :rank]
    coef = mult[:, None] * (prods @ e)  # (P, rank)
    return e.T.reshape(rank, h, w), coef, pairs


def _box(kernel: SpatialKernel, shape):
    x0, x1, y0, y1 = kernel.domain
    if shape is None:
        return (x0, x1, y0, y1)
    ny, nx = (int(s) for s in shape)
    return (min(x0, 0.0), max(x1, nx - 1.0), min(y0, 0.0), max(y1, ny - 1.0))


def _weight(zy, gx_r, r0, r1, c):
    """``post`` callback: multiply block ``c`` (band rows ``[r0, r1)``) by :math:`a_r`."""
    c *= np.einsum("yq,qx->yx", zy[r0:r1], gx_r)


@dataclass(frozen=True, eq=False)
class _SquareWeights:
    r"""Spatial weights :math:`a_r(x, y)` of :func:`convolve_variance`.

    :math:`a_r = \sum_p c_{pr}\, Y_s Y_t(y)\, X_s X_t(x)` over the pairs
    :math:`p = (s, t)`; pairs whose row factors :math:`Y_s Y_t` are equal over the
    image share one group ``group[p]`` (``rep[q]`` a pair of group ``q``).
    :meth:`groups` evaluates the factors at global rows ``[r0, r1)``.
    """

    kernel: SpatialKernel
    nx: int
    pairs: tuple
    coef: np.ndarray
    group: np.ndarray
    rep: tuple

    def groups(self, r0, r1):
        x1, y1 = self.kernel.domain[1], self.kernel.domain[3]
        ys = self.kernel.spatial_terms(x1, np.arange(r0, r1, dtype=np.float64))
        xs = self.kernel.spatial_terms(np.arange(self.nx, dtype=np.float64), y1)
        zy = np.stack([ys[self.pairs[p][0]] * ys[self.pairs[p][1]] for p in self.rep])
        zy = np.ascontiguousarray(zy.T)  # (rows, Q)
        rank = self.coef.shape[1]
        gx = np.zeros((rank, len(self.rep), self.nx))
        for p, (s, t) in enumerate(self.pairs):
            gx[:, self.group[p]] += self.coef[p][:, None] * (xs[s] * xs[t])
        return [([(r, None)], partial(_weight, zy, gx[r])) for r in range(rank)]


def variance_rank(kernel: SpatialKernel, *, rtol: float = 1e-4, shape=None) -> int:
    """Number of convolutions :func:`convolve_variance` does for ``kernel``.

    Parameters
    ----------
    kernel : SpatialKernel
        The kernel.
    rtol : float
        Relative truncation level (see :func:`convolve_variance`).
    shape : tuple of int, optional
        Image shape; the sampling grid then also covers the image.

    Returns
    -------
    int
        The rank kept: at most ``n (n + 1) / 2`` for ``n`` terms, and at most
        ``(order + 1)(2 order + 1)`` (the polynomials of degree ``2 order``).
    """
    if not isinstance(kernel, SpatialKernel):
        raise ValueError(f"kernel must be a SpatialKernel, got {type(kernel).__name__}")
    return int(_variance_basis(kernel, rtol, _box(kernel, shape))[0].shape[0])


def convolve_variance(
    variance,
    kernel,
    *,
    mask=None,
    rtol: float = 1e-4,
    dtype=np.float32,
    fill: str = "reflect",
    footprint_threshold: float = 1e-4,
    chunk=None,
    mapper=None,
    band_rows=None,
) -> np.ndarray:
    r"""Propagate a variance map of independent pixels through the convolution.

    .. math::

        \mathrm{Var}\,O(x) = \sum_u K(x;\, u)^2\, V(x - u).

    :math:`K(x)^2` lies in the span of the products :math:`\bar K_s \bar K_t`
    (:math:`s \le t`), with weights :math:`(2 - \delta_{st}) B_s B_t`, polynomials
    of total degree :math:`\le 2n` (:math:`n` the spatial order). The squared
    kernel is sampled on a tensor grid of :math:`(2n+1)^2` Chebyshev–Lobatto
    points covering the domain and the image, :math:`Q = [K(x_g)^2]_g`, and its
    SVD :math:`Q = U \Sigma W^T` gives orthonormal images :math:`E_r = U_{:,r}`;
    the smallest rank :math:`R` with
    :math:`\|Q - U_R U_R^T Q\|_F = (\sum_{r \ge R} \sigma_r^2)^{1/2} \le
    \mathrm{rtol}\,\|Q\|_F` is kept. The coefficients
    :math:`a_r(x, y) = \langle K(x, y)^2, E_r \rangle
    = \sum_{s \le t} (2 - \delta_{st}) B_s B_t \langle \bar K_s \bar K_t, E_r \rangle`
    are evaluated exactly at every pixel, and

    .. math::

        \mathrm{Var}\,O \approx \sum_{r < R} a_r \cdot (E_r \ast V).

    **Error bound.** The residual :math:`e(x) = (1 - U_R U_R^T) K(x)^2` is a
    polynomial of degree :math:`\le 2n` per axis, so it is the tensor
    interpolant of its grid values and, inside the sampled box,
    :math:`\|e(x)\|_2 \le \Lambda\, \mathrm{rtol}\, \|Q\|_F` with the Lebesgue
    constant :math:`\Lambda \le (1 + \tfrac{2}{\pi} \ln 2n)^2` (about 3.6 for
    :math:`n = 2`). The variance error is then
    :math:`|\Delta \mathrm{Var}(x)| \le \|e(x)\|_2\, \|V_x\|_2` with :math:`V_x`
    the variance values under the kernel stamp. With ``rtol = 0`` only round-off
    (:math:`10^{-13}` relative) is discarded and the result is exact.

    Parameters
    ----------
    variance : array_like
        2-D variance map (not modified). Non-finite or negative values are bad.
    kernel : SpatialKernel or array_like
        The kernel; a 2-D array is a constant kernel.
    mask : array_like of bool, optional
        True for bad pixels.
    rtol : float
        Relative truncation level of the squared-kernel basis.
    dtype : float32 or float64
        Output type (float64 arithmetic).
    fill : {"reflect", "zero"}
        Padding beyond the borders, as in
        :func:`~stmatch.algorithms.convolve_varying.convolve_image`.
    footprint_threshold : float
        As in :func:`~stmatch.algorithms.convolve_varying.convolve_image` (the NaN
        masks of both agree).
    chunk : int, optional
        Row blocks, as in :func:`~stmatch.algorithms.convolve_varying.convolve_image`.
    mapper : callable, optional
        Run the convolutions in row bands, one task per band, as in
        :func:`~stmatch.algorithms.convolve_varying.convolve_image` (identical result).
    band_rows : int, optional
        Rows per band, as in :func:`~stmatch.algorithms.convolve_varying.convolve_image`.

    Returns
    -------
    numpy.ndarray
        Non-negative variance of the convolved image (round-off negatives are
        clipped to 0), NaN on the dilated bad mask.
    """
    arr, bad = _input(variance, mask, "variance")
    kern = _as_kernel(kernel, arr.shape)
    fill, out_dtype, chunk = _options(fill, dtype, chunk)
    bad |= np.less(arr, 0, where=~bad, out=np.zeros(arr.shape, dtype=bool))
    foot = kernel_footprint(kern, threshold=footprint_threshold)
    ny, nx = arr.shape
    basis, coef, pairs = _variance_basis(kern, rtol, _box(kern, arr.shape))
    if basis.shape[0] == 0:
        data = np.zeros(arr.shape, dtype=out_dtype)
    else:
        ys = _separable_terms(kern, ny, nx)[0]
        # a_r(x, y) = sum_p coef[p, r] Y_s Y_t(y) X_s X_t(x): pairs sharing a row
        # factor are merged, then each a_r is a thin matrix product per block
        zy = np.stack([ys[s] * ys[t] for s, t in pairs])  # (P, ny)
        _, first, group = np.unique(zy, axis=0, return_index=True, return_inverse=True)
        del ys, zy
        weights = _SquareWeights(
            kern, nx, tuple(pairs), coef, group.ravel(), tuple(int(p) for p in first)
        )
        data = _convolve(arr, bad, basis, weights, fill, out_dtype, chunk, mapper, band_rows)
        np.maximum(data, 0.0, out=data)
    data[_dilated_bad(bad, foot, fill)] = np.nan
    return data

r"""Two-dimensional Chebyshev surfaces on a rectangular pixel domain.

A surface of order :math:`n` is

.. math::

    f(x, y) = \sum_{i + j \le n} c_{ij}\, T_i(\tilde x)\, T_j(\tilde y),
    \qquad \tilde x = \frac{2x - (x_0 + x_1)}{x_1 - x_0},\quad
    \tilde y = \frac{2y - (y_0 + y_1)}{y_1 - y_0},

with the Chebyshev polynomials of the first kind :math:`T_k` and the
*triangular* set of terms :math:`i + j \le n` (:math:`(n+1)(n+2)/2` terms).
The domain ``(x0, x1, y0, y1)`` maps onto :math:`[-1, 1]^2`; an image of shape
``(ny, nx)`` usually takes its pixel edges, ``(-0.5, nx - 0.5, -0.5, ny - 0.5)``
(see :func:`image_domain`). Terms are ordered by total degree and, within one
degree, by increasing power of :math:`y`: ``(0,0), (1,0), (0,1), (2,0), (1,1),
(0,2), ...`` as ``(i, j)`` pairs, so term 0 is the constant.

Used for spatially varying PSF-matching kernels and for smooth background
models. Reference: Press et al., *Numerical Recipes* (3rd ed.), §5.8.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "chebyshev_basis",
    "chebyshev_terms",
    "evaluate_chebyshev",
    "fit_chebyshev",
    "image_domain",
    "n_chebyshev_terms",
]


def n_chebyshev_terms(order: int) -> int:
    """Number of triangular terms of a surface of ``order``: ``(n+1)(n+2)/2``."""
    order = _order(order)
    return (order + 1) * (order + 2) // 2


def chebyshev_terms(order: int) -> list[tuple[int, int]]:
    """The ``(i, j)`` (x degree, y degree) pairs of the triangular basis, in order."""
    order = _order(order)
    return [(n - j, j) for n in range(order + 1) for j in range(n + 1)]


def image_domain(shape) -> tuple[float, float, float, float]:
    """Domain ``(x0, x1, y0, y1)`` spanning the pixel edges of an image of ``shape``."""
    ny, nx = (int(s) for s in shape)
    return (-0.5, nx - 0.5, -0.5, ny - 0.5)


def _order(order) -> int:
    o = int(order)
    if o != order or o < 0:
        raise ValueError(f"Chebyshev order must be a non-negative integer, got {order!r}")
    return o


def _scaled(v, lo, hi):
    lo, hi = float(lo), float(hi)
    if not hi > lo:
        raise ValueError(f"empty Chebyshev domain [{lo}, {hi}]")
    return (2.0 * np.asarray(v, dtype=np.float64) - (lo + hi)) / (hi - lo)


def _cheb_1d(t: np.ndarray, order: int) -> list[np.ndarray]:
    out = [np.ones_like(t)]
    if order >= 1:
        out.append(t.copy())
    for _ in range(2, order + 1):
        out.append(2.0 * t * out[-1] - out[-2])
    return out


def chebyshev_basis(x, y, order: int, domain) -> np.ndarray:
    r"""Values of every term :math:`T_i(\tilde x) T_j(\tilde y)` at ``(x, y)``.

    Parameters
    ----------
    x, y : array_like
        Pixel coordinates (broadcast against each other).
    order : int
        Surface order :math:`n` (terms :math:`i + j \le n`).
    domain : tuple of float
        ``(x0, x1, y0, y1)`` mapped onto :math:`[-1, 1]^2`. Points outside the
        domain are extrapolated by the polynomials.

    Returns
    -------
    numpy.ndarray
        ``(n_terms, *shape)`` float64 array, term order of :func:`chebyshev_terms`.
    """
    order = _order(order)
    x0, x1, y0, y1 = domain
    tx, ty = np.broadcast_arrays(_scaled(x, x0, x1), _scaled(y, y0, y1))
    cx, cy = _cheb_1d(np.asarray(tx), order), _cheb_1d(np.asarray(ty), order)
    return np.stack([cx[i] * cy[j] for i, j in chebyshev_terms(order)])


def evaluate_chebyshev(coeffs, x, y, order: int, domain) -> np.ndarray:
    """Evaluate :math:`\\sum_t c_t B_t(x, y)`; ``coeffs`` has ``n_terms`` entries
    along its first axis (extra axes give several surfaces at once)."""
    c = np.asarray(coeffs, dtype=np.float64)
    nt = n_chebyshev_terms(order)
    if c.shape[0] != nt:
        raise ValueError(f"order {order} needs {nt} coefficients, got {c.shape[0]}")
    basis = chebyshev_basis(x, y, order, domain)
    return np.tensordot(c, basis, axes=([0], [0])) if c.ndim > 1 else np.tensordot(c, basis, 1)


def fit_chebyshev(x, y, values, order: int, domain, *, weights=None) -> np.ndarray:
    r"""Weighted least-squares Chebyshev surface through ``values`` at ``(x, y)``.

    Minimises :math:`\sum_k w_k (v_k - f(x_k, y_k))^2` by a QR-based solver on the
    design matrix whose columns are scaled to unit norm (well conditioned for the
    low orders used here).

    Parameters
    ----------
    x, y : array_like
        1-D sample positions (``m`` points).
    values : array_like
        ``(m,)`` values, or ``(m, k)`` to fit ``k`` surfaces sharing the positions.
    order : int
        Surface order; needs at least :func:`n_chebyshev_terms` points.
    domain : tuple of float
        ``(x0, x1, y0, y1)``.
    weights : array_like, optional
        ``(m,)`` non-negative weights (inverse variances).

    Returns
    -------
    numpy.ndarray
        ``(n_terms,)`` or ``(n_terms, k)`` coefficients.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    v = np.asarray(values, dtype=np.float64)
    if v.shape[0] != x.size or y.size != x.size:
        raise ValueError("x, y and values need the same number of points")
    nt = n_chebyshev_terms(order)
    if x.size < nt:
        raise ValueError(f"a Chebyshev surface of order {order} needs >= {nt} points, got {x.size}")
    a = chebyshev_basis(x, y, order, domain).T  # (m, nt)
    rhs = v.reshape(x.size, -1)
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.size != x.size or np.any(~np.isfinite(w)) or np.any(w < 0):
            raise ValueError("weights must be finite, non-negative, one per point")
        sw = np.sqrt(w)
        a = a * sw[:, None]
        rhs = rhs * sw[:, None]
    norms = np.linalg.norm(a, axis=0)
    if np.any(norms == 0):
        raise ValueError("degenerate Chebyshev fit: a term vanishes at every (weighted) point")
    coef, _, rank, _ = np.linalg.lstsq(a / norms, rhs, rcond=None)
    if rank < nt:
        raise ValueError(
            f"the points do not constrain a Chebyshev surface of order {order} "
            f"(rank {rank} < {nt} terms)"
        )
    coef = coef / norms[:, None]
    return coef[:, 0] if v.ndim == 1 else coef.reshape((nt,) + v.shape[1:])

r"""Spatially varying convolution kernels as Chebyshev expansions.

A spatially varying kernel is stored as

.. math::

    K(x, y;\, u, v) = \sum_{s=0}^{n_s - 1} B_s(x, y)\, \bar K_s(u, v),

where :math:`B_s` are the triangular Chebyshev terms of
:mod:`stmatch.algorithms.chebyshev` over the image domain and :math:`\bar K_s`
are odd-sized *term kernels* whose centre pixel ``(h // 2, w // 2)`` is the
kernel origin (offset :math:`(u, v) = (0, 0)`). The kernel at output position
:math:`(x, y)` acts as :math:`O(x, y) = \sum_{u,v} K(x, y; u, v)\, I(x - u, y - v)`,
so that convolving with the term kernels and weighting the results by the
spatial terms, :math:`O = \sum_s B_s \cdot (\bar K_s \ast I)`, is exact
(Alard 2000, A&AS 144, 363, §2).

When the first term kernel carries the whole sum and the other term kernels sum
to zero, the kernel sum is the same everywhere (flux is conserved uniformly).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .chebyshev import chebyshev_basis, fit_chebyshev, n_chebyshev_terms

__all__ = ["SpatialKernel"]


@dataclass(frozen=True)
class SpatialKernel:
    """Kernel :math:`K(x, y) = \\sum_s B_s(x, y) \\bar K_s` (see the module notes).

    Attributes
    ----------
    term_kernels : numpy.ndarray
        ``(n_terms, h, w)`` float64 term kernels, odd ``h`` and ``w``.
    order : int
        Spatial Chebyshev order (``n_terms = (order+1)(order+2)/2``).
    domain : tuple of float
        ``(x0, x1, y0, y1)`` Chebyshev domain in image pixel coordinates.
    """

    term_kernels: np.ndarray
    order: int
    domain: tuple

    def __post_init__(self):
        k = np.asarray(self.term_kernels, dtype=np.float64)
        if k.ndim == 2:
            k = k[None]
        if k.ndim != 3 or k.shape[1] % 2 == 0 or k.shape[2] % 2 == 0:
            raise ValueError(f"term kernels must be (n, odd, odd), got shape {k.shape}")
        if k.shape[0] != n_chebyshev_terms(self.order):
            raise ValueError(
                f"spatial order {self.order} needs {n_chebyshev_terms(self.order)} term kernels, "
                f"got {k.shape[0]}"
            )
        if not np.all(np.isfinite(k)):
            raise ValueError("term kernels must be finite")
        k.setflags(write=False)
        object.__setattr__(self, "term_kernels", k)
        object.__setattr__(self, "order", int(self.order))
        object.__setattr__(self, "domain", tuple(float(d) for d in self.domain))

    # ------------------------------------------------------------------ builders
    @classmethod
    def constant(cls, kernel, domain) -> SpatialKernel:
        """A kernel that is the same everywhere (order 0)."""
        return cls(np.asarray(kernel, dtype=np.float64)[None], 0, domain)

    @classmethod
    def fit(cls, x, y, kernels, order: int, domain, *, weights=None) -> SpatialKernel:
        """Least-squares Chebyshev fit of kernel images realised at ``(x, y)``.

        Every kernel pixel is fitted independently with the same design matrix, which
        is the least-squares fit of the kernels as a whole; the sums of the fitted
        kernels are the fits of the sums (linearity).

        Parameters
        ----------
        x, y : array_like
            ``(m,)`` positions where the kernels were solved (e.g. cell centres).
        kernels : array_like
            ``(m, h, w)`` kernel images.
        order, domain, weights
            As in :func:`~stmatch.algorithms.chebyshev.fit_chebyshev`.
        """
        k = np.asarray(kernels, dtype=np.float64)
        if k.ndim != 3:
            raise ValueError(f"kernels must be an (m, h, w) stack, got shape {k.shape}")
        m, h, w = k.shape
        coef = fit_chebyshev(x, y, k.reshape(m, h * w), order, domain, weights=weights)
        return cls(coef.reshape(-1, h, w), order, domain)

    # ---------------------------------------------------------------- evaluation
    @property
    def n_terms(self) -> int:
        return int(self.term_kernels.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """Shape ``(h, w)`` of the kernel images."""
        return tuple(int(s) for s in self.term_kernels.shape[1:])

    @property
    def is_constant(self) -> bool:
        return self.n_terms == 1

    def spatial_terms(self, x, y) -> np.ndarray:
        """``(n_terms, *shape)`` values of the spatial terms :math:`B_s(x, y)`."""
        return chebyshev_basis(x, y, self.order, self.domain)

    def kernel_at(self, x, y) -> np.ndarray:
        """Kernel image ``(h, w)`` at one position ``(x, y)``."""
        b = self.spatial_terms(float(x), float(y))
        return np.tensordot(b, self.term_kernels, axes=1)

    def kernels_at(self, x, y) -> np.ndarray:
        """Kernel images ``(m, h, w)`` at ``m`` positions."""
        b = self.spatial_terms(np.ravel(x), np.ravel(y))  # (n_terms, m)
        return np.tensordot(b.T, self.term_kernels, axes=1)

    def sum_at(self, x, y) -> np.ndarray:
        """Kernel sum at positions ``(x, y)`` (array of their broadcast shape)."""
        sums = self.term_kernels.sum(axis=(1, 2))
        return np.tensordot(sums, self.spatial_terms(x, y), axes=1)

    def scaled(self, factor: float) -> SpatialKernel:
        """The same kernel multiplied by ``factor``."""
        return SpatialKernel(self.term_kernels * float(factor), self.order, self.domain)

r"""The data model of a spatially varying PSF-matching kernel.

A `MatchingKernelModel` stores the kernel that turns the PSF :math:`S(x, y)` of
an exposure into a target PSF :math:`T`, :math:`K(x, y) \otimes S(x, y)
\approx k_\Sigma\, T` (``kernel_sum`` :math:`k_\Sigma`), as an expansion over
spatial terms (Alard 2000, A&AS 144, 363, §2):

.. math::

    K(x, y;\, u, v) = \sum_{s=0}^{n_s - 1} B_s(x, y)\, \bar K_s(u, v),
    \qquad B_s(x, y) = T_i(\tilde x)\, T_j(\tilde y),

with the Chebyshev polynomials of the first kind :math:`T_k`, the triangular
set of terms :math:`i + j \le n` (:math:`n` = ``spatial_order``,
:math:`n_s = (n+1)(n+2)/2`) ordered by total degree and, within one degree,
by increasing :math:`j` — ``(0,0), (1,0), (0,1), (2,0), (1,1), (0,2), ...`` —
and the domain ``(x0, x1, y0, y1)`` mapped onto :math:`[-1, 1]^2`:
:math:`\tilde x = (2x - x_0 - x_1)/(x_1 - x_0)`,
:math:`\tilde y = (2y - y_0 - y_1)/(y_1 - y_0)` (Press et al., *Numerical
Recipes*, 3rd ed., §5.8). ``x`` is the detector column and ``y`` the row
(0-based pixels); the term kernels :math:`\bar K_s` are odd-sized with the
kernel origin on their centre pixel.

The model evaluates the kernel itself (`MatchingKernelModel.kernel_at`), so
that a stored kernel can be re-applied without the code that solved it; it
does not depend on stmatch's numerical modules.
"""

import math

import numpy as np

from ._base import StmatchDataModel, schema_uri
from ._kernel_meta import (
    _META_KINDS,
    QUALITY_DTYPE,
    SUMMARY_KEYS,
    _check_stack,
    _domain,
    _float_array,
    _meta_value,
    empty_quality,
    summarize_quality,
)

__all__ = [
    "QUALITY_DTYPE",
    "SUMMARY_KEYS",
    "MatchingKernelModel",
    "empty_quality",
    "summarize_quality",
]

_BASIS_RTOL = 1e-6  # term_kernels == coefficients.T @ basis to this fraction of their peak


class MatchingKernelModel(StmatchDataModel):
    r"""A spatially varying PSF-matching kernel (``matching_kernel-1.0.0``).

    Arrays (float64 unless said; ``h, w`` odd):

    - ``term_kernels``: ``(n_terms, h, w)`` kernel images
      :math:`\bar K_s` of the spatial terms (see the module notes),
      ``n_terms = (n + 1)(n + 2) / 2`` for ``spatial_order`` :math:`n`;
    - ``data``: ``(n_grid, h, w)`` the kernel evaluated at
      ``(grid_x[i], grid_y[i])``, for users and quality assessment;
    - ``basis``: ``(n_basis, h, w)`` basis images of the solution
      (Alard–Lupton Gaussians times polynomials, or delta functions);
      ``(0, h, w)`` for the Fourier method;
    - ``coefficients``: ``(n_basis, n_terms)`` with
      :math:`\bar K_s = \sum_b c_{bs}\, \mathrm{basis}_b` (``(0, n_terms)``
      for Fourier);
    - ``cell_x``, ``cell_y``: ``(m,)`` cell centres where the PSF pair was
      realised and fitted;
    - ``target_psf``: ``(h_t, w_t)`` the target PSF (odd, unit sum,
      detector sampling);
    - ``quality``: table of dtype `QUALITY_DTYPE`;
    - ``meta.psfmatch``: the settings of the solution and the summary numbers
      (`SUMMARY_KEYS`); ``meta.stmatch``: stmatch provenance.

    Build one with `from_arrays`, which checks the shapes against each other
    and fills the derived entries; `check` repeats the checks on a model
    read from a file.
    """

    schema_url = schema_uri("matching_kernel", "1.0.0")
    _table_dtypes = {"quality": QUALITY_DTYPE}

    @classmethod
    def from_arrays(
        cls,
        term_kernels,
        *,
        spatial_order,
        domain,
        target_psf,
        cell_x,
        cell_y,
        grid_x=None,
        grid_y=None,
        data=None,
        basis=None,
        coefficients=None,
        quality=None,
        psfmatch=None,
    ):
        """Build a checked kernel model from its arrays.

        Parameters
        ----------
        term_kernels : array_like
            ``(n_terms, h, w)`` term kernels (a 2-D ``(h, w)`` kernel is a
            constant kernel, ``spatial_order = 0``).
        spatial_order : int
            Order :math:`n` of the Chebyshev spatial variation.
        domain : sequence of float
            ``(x0, x1, y0, y1)`` Chebyshev domain in detector pixels, with
            ``x1 > x0`` and ``y1 > y0``.
        target_psf : array_like
            The target PSF, 2-D and odd-sized (stored as given, as float64).
        cell_x, cell_y : array_like
            Cell centres where the PSF pair was fitted.
        grid_x, grid_y : array_like, optional
            Positions of the kernel images in ``data``; default the cell
            centres.
        data : array_like, optional
            ``(n_grid, h, w)`` kernel images at the grid positions; default
            the kernel evaluated there (`kernel_at`).
        basis : array_like, optional
            ``(n_basis, h, w)`` basis images; default none, ``(0, h, w)``.
        coefficients : array_like, optional
            ``(n_basis, n_terms)``; required with ``basis``.
        quality : numpy.ndarray, optional
            Table of dtype `QUALITY_DTYPE` (see `empty_quality`). Its summary
            (`summarize_quality`) fills the ``meta.psfmatch`` summary numbers
            that are not given explicitly.
        psfmatch : dict, optional
            Further ``meta.psfmatch`` entries (``method``, ``kernel_sum``,
            ``normalized``, ``cell_size``, ``image_shape``,
            ``padded_psf_size``, ``basis_sigmas``, ``basis_degrees``,
            ``regularization_lambda``, ``regularization``, ``penalty``,
            ``window``, ``source_psf``, ``target_psf``, ``target_fwhm``,
            ``deconvolution``, ``condition_number`` and the summary numbers
            of `SUMMARY_KEYS`; ``target_psf`` here is the string that says
            where the target PSF came from). Numbers and sequences (numpy
            arrays too) are converted to the plain types the schema wants;
            None values are left out. ``kernel_size`` (the side ``h`` of
            square kernels) and ``n_cells`` default to the values the
            arrays give.

        Returns
        -------
        MatchingKernelModel
            The model, with ``meta.psfmatch.spatial_order`` and ``domain``
            set.

        Raises
        ------
        ValueError
            If an array has the wrong dimensions, non-finite values or a size
            that disagrees with the others or with ``spatial_order``; if the
            term kernels are not the basis images weighted by the
            coefficients (see `check`); or if a ``meta.psfmatch`` entry has
            a wrong value.
        TypeError
            If ``psfmatch`` holds an unknown entry.

        Examples
        --------
        A constant kernel (spatial order 0) found by the Fourier method:

        >>> import numpy as np
        >>> kernel = np.zeros((5, 5))
        >>> kernel[2, 2] = 1.0
        >>> model = MatchingKernelModel.from_arrays(
        ...     kernel,
        ...     spatial_order=0,
        ...     domain=(-0.5, 99.5, -0.5, 99.5),
        ...     target_psf=np.ones((3, 3)) / 9.0,
        ...     cell_x=[49.5],
        ...     cell_y=[49.5],
        ...     psfmatch={"method": "fourier", "kernel_sum": 1.0, "target_psf": "target.fits"},
        ... )
        >>> model.n_terms, model.data.shape, model.basis.shape
        (1, (1, 5, 5), (0, 5, 5))
        """
        psfmatch = {} if psfmatch is None else dict(psfmatch)
        allowed = set(_META_KINDS) - {"spatial_order", "domain"}  # these are arguments
        unknown = sorted(set(psfmatch) - allowed)
        if unknown:
            raise TypeError(
                f"MatchingKernelModel.from_arrays: unknown meta.psfmatch entries {unknown}; "
                f"allowed are {sorted(allowed)} (spatial_order and domain are arguments)"
            )
        order = _meta_value("spatial_order", spatial_order)
        domain = _domain(domain)
        terms = _float_array(term_kernels, "term_kernels")
        if terms.ndim == 2:
            terms = terms[None]
        _check_stack(terms, "term_kernels")
        _check_n_terms(terms.shape[0], order)
        _, h, w = terms.shape
        cell_x = _float_array(cell_x, "cell_x", ndim=1)
        cell_y = _float_array(cell_y, "cell_y", ndim=1)
        if grid_x is None and grid_y is None:
            grid_x, grid_y = cell_x, cell_y
        elif grid_x is None or grid_y is None:
            raise ValueError("give both grid_x and grid_y, or neither")
        grid_x = _float_array(grid_x, "grid_x", ndim=1)
        grid_y = _float_array(grid_y, "grid_y", ndim=1)
        if basis is None:
            if coefficients is not None:
                raise ValueError("coefficients were given without the basis images")
            basis = np.zeros((0, h, w))
            coefficients = np.zeros((0, terms.shape[0]))
        elif coefficients is None:
            raise ValueError("basis images were given without their coefficients")

        model = cls()
        model.term_kernels = terms
        model.basis = _float_array(basis, "basis", ndim=3)
        model.coefficients = _float_array(coefficients, "coefficients", ndim=2)
        model.cell_x, model.cell_y = cell_x, cell_y
        model.grid_x, model.grid_y = grid_x, grid_y
        model.target_psf = _float_array(target_psf, "target_psf", ndim=2)
        meta = {"spatial_order": order, "domain": list(domain)}
        if h == w:
            meta["kernel_size"] = int(h)
        meta["n_cells"] = int(cell_x.size)
        if quality is not None:
            model.quality = quality
            meta.update(summarize_quality(model.quality))
        for key, value in psfmatch.items():
            if value is not None:
                meta[key] = _meta_value(key, value)
        model.meta.psfmatch = meta
        if data is None:
            data = model.kernel_at(grid_x, grid_y) if grid_x.size else np.zeros((0, h, w))
        model.data = _float_array(data, "data", ndim=3)
        model.check()
        return model

    # ------------------------------------------------------------------ properties
    @property
    def spatial_order(self):
        """int: ``meta.psfmatch.spatial_order``; else inferred from ``term_kernels``."""
        value = self._psfmatch("spatial_order")
        if value is not None:
            return int(value)
        if self.term_kernels is None:
            raise ValueError("MatchingKernelModel has neither a spatial_order nor term kernels")
        return _order_of(int(np.shape(self.term_kernels)[0]))

    @property
    def n_terms(self):
        """int: Number of spatial terms, ``(n + 1)(n + 2) / 2`` for order ``n``."""
        n = self.spatial_order
        return (n + 1) * (n + 2) // 2

    @property
    def domain(self):
        """tuple of float: ``(x0, x1, y0, y1)``, the Chebyshev domain (``meta.psfmatch``)."""
        value = self._psfmatch("domain")
        if value is None:
            raise ValueError("MatchingKernelModel has no meta.psfmatch.domain")
        return _domain(value)

    def summary(self):
        """The summary numbers of ``meta.psfmatch``, for logging.

        Returns
        -------
        dict
            The entries of `SUMMARY_KEYS` that are set, then
            ``condition_number`` if set, as floats.
        """
        out = {}
        for key in (*SUMMARY_KEYS, "condition_number"):
            value = self._psfmatch(key)
            if value is not None:
                out[key] = float(value)
        return out

    # ------------------------------------------------------------------ evaluation
    def spatial_terms(self, x, y):
        r"""Values of the spatial terms :math:`B_s(x, y)` (see the module notes).

        Parameters
        ----------
        x, y : array_like
            Detector positions (0-based pixels; broadcast together). Points
            outside the domain are extrapolated by the polynomials.

        Returns
        -------
        numpy.ndarray
            float64 ``(n_terms, *shape)``.
        """
        order = self.spatial_order
        x0, x1, y0, y1 = self.domain
        tx = (2.0 * np.asarray(x, dtype=np.float64) - (x0 + x1)) / (x1 - x0)
        ty = (2.0 * np.asarray(y, dtype=np.float64) - (y0 + y1)) / (y1 - y0)
        tx, ty = np.broadcast_arrays(tx, ty)
        cx, cy = _chebyshev_1d(tx, order), _chebyshev_1d(ty, order)
        return np.stack([cx[n - j] * cy[j] for n in range(order + 1) for j in range(n + 1)])

    def kernel_at(self, x, y):
        r"""The kernel :math:`K(x, y) = \sum_s B_s(x, y)\, \bar K_s` at detector positions.

        Parameters
        ----------
        x, y : float or array_like
            Detector positions (0-based pixels; broadcast together).

        Returns
        -------
        numpy.ndarray
            float64 ``(h, w)`` for scalar positions, else ``(*shape, h, w)``.
        """
        terms = np.asarray(self.term_kernels, dtype=np.float64)
        _check_n_terms(terms.shape[0], self.spatial_order)
        basis = self.spatial_terms(x, y)
        return np.tensordot(np.moveaxis(basis, 0, -1), terms, axes=1)

    # ------------------------------------------------------------------ checks
    def check(self):
        """Check that the arrays agree with each other and with ``meta.psfmatch``.

        Raises
        ------
        ValueError
            If ``term_kernels`` is missing, not 3-D with odd sides, not
            finite, or its number disagrees with ``spatial_order``; if
            ``data``, ``basis``, ``coefficients``, the positions or the
            target PSF have shapes that disagree; if the term kernels are
            not ``sum_b coefficients[b, s] * basis[b]`` (to 1e-6 of their
            peak); or if the domain is missing or empty.
        """
        if self.term_kernels is None:
            raise ValueError("MatchingKernelModel has no term_kernels")
        terms = np.asarray(self.term_kernels)
        _check_stack(terms, "term_kernels")
        n_terms, h, w = terms.shape
        _check_n_terms(n_terms, self.spatial_order)
        _ = self.domain  # raises for a missing or empty domain
        for xname, yname in (("grid_x", "grid_y"), ("cell_x", "cell_y")):
            gx, gy = getattr(self, xname), getattr(self, yname)
            if (gx is None) != (gy is None):
                raise ValueError(f"MatchingKernelModel has {xname} or {yname} but not both")
            if gx is not None and np.shape(gx) != np.shape(gy):
                raise ValueError(
                    f"{xname} and {yname} have different shapes {np.shape(gx)} and {np.shape(gy)}"
                )
        if self.data is not None:
            data = np.asarray(self.data)
            n_grid = 0 if self.grid_x is None else np.shape(self.grid_x)[0]
            if data.shape != (n_grid, h, w):
                raise ValueError(
                    f"data has shape {data.shape}, expected ({n_grid}, {h}, {w}): one kernel "
                    "image per grid position, of the term kernels' size"
                )
        if self.basis is not None or self.coefficients is not None:
            if self.basis is None or self.coefficients is None:
                raise ValueError(
                    "MatchingKernelModel needs both basis and coefficients, or neither"
                )
            basis, coeffs = np.asarray(self.basis), np.asarray(self.coefficients)
            if basis.shape[1:] != (h, w):
                raise ValueError(f"basis images are {basis.shape[1:]}, term kernels ({h}, {w})")
            if coeffs.shape != (basis.shape[0], n_terms):
                raise ValueError(
                    f"coefficients have shape {coeffs.shape}, expected "
                    f"({basis.shape[0]}, {n_terms}): one row per basis image, one column per "
                    "spatial term"
                )
            if basis.shape[0]:
                rebuilt = np.tensordot(coeffs.T, basis, axes=1)
                scale = max(float(np.max(np.abs(terms))), np.finfo(np.float64).tiny)
                if not np.allclose(rebuilt, terms, rtol=0.0, atol=_BASIS_RTOL * scale):
                    raise ValueError(
                        "term_kernels differ from sum_b coefficients[b, s] * basis[b] by up to "
                        f"{np.max(np.abs(rebuilt - terms)) / scale:.3g} of their peak: the "
                        "basis and coefficients do not belong to these term kernels"
                    )
        if self.target_psf is not None:
            shape = np.shape(self.target_psf)
            if len(shape) != 2 or shape[0] % 2 == 0 or shape[1] % 2 == 0:
                raise ValueError(f"target_psf must be 2-D and odd-sized, got shape {shape}")

    def _psfmatch(self, key):
        """Return ``meta.psfmatch.<key>``, or None."""
        if not self.meta.hasattr("psfmatch"):
            return None
        value = getattr(self.meta.psfmatch, key, None)
        if value is not None and hasattr(value, "instance"):
            value = value.instance
        return value


# --- helpers -----------------------------------------------------------------------------


def _chebyshev_1d(t, order):
    """``[T_0(t), ..., T_order(t)]`` by the recurrence ``T_{k+1} = 2 t T_k - T_{k-1}``."""
    out = [np.ones_like(t)]
    if order >= 1:
        out.append(np.array(t, dtype=np.float64))
    for _ in range(2, order + 1):
        out.append(2.0 * t * out[-1] - out[-2])
    return out


def _check_n_terms(n_terms, order):
    """Check that there is one term kernel per Chebyshev term of ``order``."""
    expected = (order + 1) * (order + 2) // 2
    if n_terms != expected:
        raise ValueError(f"spatial order {order} needs {expected} term kernels, got {n_terms}")


def _order_of(n_terms):
    """Spatial order ``n`` with ``(n + 1)(n + 2) / 2 == n_terms``."""
    n = int(round((math.sqrt(8 * n_terms + 1) - 3) / 2))
    if n < 0 or (n + 1) * (n + 2) // 2 != n_terms:
        raise ValueError(
            f"{n_terms} term kernels is not a triangular number of Chebyshev terms "
            "(1, 3, 6, 10, ...)"
        )
    return n

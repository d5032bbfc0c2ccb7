r"""The data model of a smooth background-difference surface (``background_model-1.0.0``).

A `BackgroundModel` stores the surface :math:`M(x, y)` that background matching
fitted to the difference reference − exposure on the reference's pixel grid, the
bin statistics it was fitted to, and the diagnostics of the match. The model
evaluates itself (`BackgroundModel.evaluate`, `BackgroundModel.evaluate_image`)
with numpy and scipy only, so that a stored model can be inspected and re-applied
without the code that fitted it.

Kinds
-----
``polynomial``
    :math:`M = \sum_t c_t\, T_i(\tilde x)\, T_j(\tilde y)` over the triangular
    Chebyshev terms :math:`i + j \le n`, ordered ``(0,0), (1,0), (0,1), (2,0),
    (1,1), (0,2), ...``, with :math:`\tilde x = (2x - x_0 - x_1)/(x_1 - x_0)` and
    likewise :math:`\tilde y` on the domain ``(x0, x1, y0, y1)`` (Press et al.,
    *Numerical Recipes*, 3rd ed., §5.8).
``spline``
    A separable interpolant through the finite bin values: along :math:`x` in
    every bin row with a style (``row_styles``), then along :math:`y` through
    those rows (``column_style``). A row takes part at column :math:`x` only if
    :math:`x` lies in its finite bins' span widened by 1.5 bin spacings (unbounded
    on a side whose outer finite bin is on the grid edge); all rows take part where
    fewer than the column style needs qualify. ``CONSTANT`` is the nearest point,
    ``LINEAR`` the broken line, ``NATURAL_SPLINE`` the cubic spline with zero
    second derivative at the ends (de Boor 1978, *A Practical Guide to Splines*)
    and ``AKIMA_SPLINE`` Akima's (1970, J. ACM 17, 589) local cubic; past the outer
    points ``CONSTANT`` stays constant and the others continue linearly with the
    end slope.
``none``
    :math:`M = 0`.
"""

import numpy as np
from numpy.polynomial import chebyshev as _npcheb
from scipy.interpolate import Akima1DInterpolator, CubicSpline

from ._background_meta import _META_KINDS, _array, _domain, _meta_value, _n_terms
from ._base import StmatchDataModel, schema_uri

__all__ = ["BACKGROUND_KINDS", "SPLINE_STYLES", "BackgroundModel"]

BACKGROUND_KINDS = ("polynomial", "spline", "none")
"""Kinds of surface a `BackgroundModel` holds."""

SPLINE_STYLES = {"CONSTANT": 1, "LINEAR": 2, "NATURAL_SPLINE": 3, "AKIMA_SPLINE": 5}
"""Spline styles and the fewest points each needs."""

_COLUMN_BLOCK = 256  # columns evaluated at once by evaluate_image (spline kind)
_POINT_BLOCK = 1 << 16  # points evaluated at once by evaluate (spline kind)


class BackgroundModel(StmatchDataModel):
    """A background-difference surface of one exposure (``background_model-1.0.0``).

    Arrays (float64 unless said):

    - ``coefficients`` ``(n_terms,)`` and ``covariance`` ``(n_terms, n_terms)``:
      the Chebyshev surface (kind ``polynomial``; empty otherwise);
    - ``bin_x`` ``(nbx,)``, ``bin_y`` ``(nby,)``: bin centres on the reference grid;
    - ``bin_values``, ``bin_errors``, ``bin_model`` ``(nby, nbx)``: bin statistic
      of reference − exposure (NaN for empty bins), its standard error and the
      model where each bin measured (a polynomial at the centroid of the bin's
      good pixels, a spline at the bin centre); ``bin_npix`` (int64) the pixels in each bin;
    - ``meta.bgmatch``: kind, order, styles, domain, image shape, fit settings,
      exposure and reference names, status, reason and diagnostics
      (``fit_rms``, ``matched_mse``, ``diffim_var``, ``mse_ratio``, ``mean_model``).

    Build one with `from_arrays` or `from_fit`; `check` verifies a model read
    from a file. Saving writes ``meta.model_type = "BackgroundModel"`` so that
    `stmatch.models.open` reads it back as this class.
    """

    schema_url = schema_uri("background_model", "1.0.0")

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_arrays(
        cls,
        kind,
        *,
        domain,
        image_shape,
        order=-1,
        coefficients=None,
        covariance=None,
        interp_style="",
        row_styles=(),
        column_style="",
        bin_x=None,
        bin_y=None,
        bin_values=None,
        bin_errors=None,
        bin_npix=None,
        bin_model=None,
        bgmatch=None,
    ):
        """Build a checked model from its arrays.

        Parameters
        ----------
        kind : {'polynomial', 'spline', 'none'}
            Kind of surface.
        domain : sequence of float
            ``(x0, x1, y0, y1)`` with ``x1 > x0`` and ``y1 > y0``.
        image_shape : sequence of int
            ``(ny, nx)`` of the reference grid.
        order : int, optional
            Chebyshev order (polynomial kind; -1 otherwise).
        coefficients, covariance : array_like, optional
            Chebyshev coefficients and their covariance (polynomial kind).
        interp_style : str, optional
            Spline style requested (the lowest used on any line).
        row_styles : sequence of str, optional
            Spline style of each bin row (spline kind).
        column_style : str, optional
            Spline style along y (spline kind).
        bin_x, bin_y, bin_values, bin_errors, bin_npix, bin_model : array_like, optional
            Bin grid (required for the spline kind).
        bgmatch : dict, optional
            Further ``meta.bgmatch`` entries (``bin_size``, ``statistic``,
            ``weighted``, ``actions``, ``exposure``, ``reference``,
            ``is_reference``, ``resampled``, ``status``, ``flagged``, ``reason``,
            ``mean_model``, ``flux_scale``, ``fit_rms``, ``matched_mse``,
            ``diffim_var``, ``mse_ratio``); non-finite numbers are stored as null.

        Returns
        -------
        BackgroundModel

        Raises
        ------
        ValueError
            For arrays that disagree with each other or with the kind.
        TypeError
            For an unknown ``meta.bgmatch`` entry.
        """
        extra = {} if bgmatch is None else dict(bgmatch)
        unknown = sorted(set(extra) - set(_META_KINDS))
        if unknown:
            raise TypeError(
                f"BackgroundModel: unknown meta.bgmatch entries {unknown}; "
                f"allowed are {sorted(_META_KINDS)}"
            )
        kind = str(kind)
        if kind not in BACKGROUND_KINDS:
            raise ValueError(f"kind must be one of {BACKGROUND_KINDS}, not {kind!r}")
        # assignments are validated once, by check() and when saving, not one by one
        model = cls(validate_on_assignment=False)
        nt = _n_terms(int(order)) if kind == "polynomial" else 0
        model.coefficients = _array(coefficients, (nt,), "coefficients")
        model.covariance = _array(covariance, (nt, nt), "covariance")
        model.bin_x = _array(bin_x, (None,), "bin_x")
        model.bin_y = _array(bin_y, (None,), "bin_y")
        grid = (model.bin_y.size, model.bin_x.size)
        for name, value in (
            ("bin_values", bin_values),
            ("bin_errors", bin_errors),
            ("bin_model", bin_model),
        ):
            setattr(model, name, _array(value, grid, name, finite=False))
        model.bin_npix = _array(bin_npix, grid, "bin_npix", dtype=np.int64)
        meta = {
            "kind": kind,
            "order": int(order) if kind == "polynomial" else -1,
            "interp_style": str(interp_style),
            "row_styles": [str(s) for s in row_styles],
            "column_style": str(column_style),
            "domain": list(_domain(domain)),
            "image_shape": [int(s) for s in image_shape],
            "n_valid_bins": int(np.count_nonzero(np.isfinite(model.bin_values))),
        }
        for key, value in extra.items():
            meta[key] = _meta_value(key, value)
        model.meta.bgmatch = meta
        model.check()
        model._validate_on_assignment = True
        return model

    @classmethod
    def from_fit(cls, fit, *, image_shape=None, bgmatch=None):
        """Build a model from a fitted surface.

        Parameters
        ----------
        fit : object
            A fitted surface with the attributes of
            ``stmatch.algorithms.bgmatch_fit.BackgroundFit`` (``kind``, ``order``,
            ``interp_style``, ``domain``, ``coefficients``, ``covariance``,
            ``grid``, ``model_at_bins``, ``weighted``, ``actions``,
            ``row_styles``, ``column_style``).
        image_shape : sequence of int, optional
            ``(ny, nx)``; default the shape of ``fit.grid``.
        bgmatch : dict, optional
            Further ``meta.bgmatch`` entries (see `from_arrays`).

        Returns
        -------
        BackgroundModel
        """
        grid = fit.grid
        meta = {
            "bin_size": int(grid.bin_size),
            "statistic": str(grid.statistic),
            "weighted": bool(fit.weighted),
            "actions": list(fit.actions),
            "fit_rms": fit.fit_rms,
        }
        meta.update(bgmatch or {})
        return cls.from_arrays(
            fit.kind,
            domain=fit.domain,
            image_shape=grid.shape if image_shape is None else image_shape,
            order=fit.order,
            coefficients=fit.coefficients,
            covariance=fit.covariance,
            interp_style=fit.interp_style,
            row_styles=fit.row_styles,
            column_style=fit.column_style,
            bin_x=grid.x,
            bin_y=grid.y,
            bin_values=grid.values,
            bin_errors=grid.error,
            bin_npix=grid.npix,
            bin_model=fit.model_at_bins,
            bgmatch=meta,
        )

    @classmethod
    def empty(cls, image_shape, *, bgmatch=None):
        """A zero model (kind ``none``) on a grid of ``image_shape`` (a skipped exposure)."""
        ny, nx = (int(s) for s in image_shape)
        return cls.from_arrays(
            "none",
            domain=(-0.5, max(nx, 1) - 0.5, -0.5, max(ny, 1) - 0.5),
            image_shape=(ny, nx),
            bgmatch=bgmatch,
        )

    # ------------------------------------------------------------------ properties
    @property
    def kind(self):
        """str: ``'polynomial'``, ``'spline'`` or ``'none'``."""
        return str(self._meta("kind"))

    @property
    def order(self):
        """int: Chebyshev order (-1 unless polynomial)."""
        return int(self._meta("order"))

    @property
    def domain(self):
        """tuple of float: ``(x0, x1, y0, y1)``."""
        return _domain(self._meta("domain"))

    @property
    def image_shape(self):
        """tuple of int: ``(ny, nx)`` of the reference grid."""
        return tuple(int(s) for s in self._meta("image_shape"))

    @property
    def row_styles(self):
        """tuple of str: spline style of each bin row."""
        return tuple(str(s) for s in (self._meta("row_styles") or ()))

    @property
    def column_style(self):
        """str: spline style along y."""
        return str(self._meta("column_style") or "")

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, x, y):
        """The model at positions ``(x, y)`` of the reference grid (broadcast).

        Parameters
        ----------
        x, y : array_like
            0-based pixel positions (``x`` is the column). Positions outside the
            grid are extrapolated (see the module notes).

        Returns
        -------
        numpy.ndarray
            float64, the broadcast shape of ``x`` and ``y``.
        """
        x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
        xf, yf = x.ravel(), y.ravel()
        kind = self.kind
        if kind == "polynomial":
            tx, ty = self._cheb(xf, yf)
            out = np.einsum("pj,pj->p", ty, tx @ self._coef_matrix().T)
        elif kind == "spline":
            out = np.empty(xf.size)
            for s in range(0, xf.size, _POINT_BLOCK):
                sl = slice(s, s + _POINT_BLOCK)
                out[sl] = self._spline_points(xf[sl], yf[sl])
        else:
            out = np.zeros(xf.size)
        return out.reshape(x.shape)

    def evaluate_image(self, shape=None, *, dtype=np.float64):
        """The model on every pixel of an image (default: the reference grid).

        Parameters
        ----------
        shape : sequence of int, optional
            ``(ny, nx)``; pixels ``0..nx-1`` by ``0..ny-1``. Default ``image_shape``.
        dtype : numpy dtype, optional
            Floating type of the result.

        Returns
        -------
        numpy.ndarray
        """
        ny, nx = self.image_shape if shape is None else (int(s) for s in shape)
        if ny < 1 or nx < 1:
            raise ValueError(f"the image shape must be positive, got {(ny, nx)}")
        xs, ys = np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64)
        kind = self.kind
        if kind == "polynomial":
            tx, ty = self._cheb(xs, ys)
            return (ty @ self._coef_matrix() @ tx.T).astype(dtype, copy=False)
        out = np.zeros((ny, nx), dtype=dtype)
        if kind == "spline":
            rows, vals, support = self._rows_at(xs)
            for cols, use in self._column_groups(support):
                for c0 in range(0, cols.size, _COLUMN_BLOCK):
                    sub = cols[c0 : c0 + _COLUMN_BLOCK]
                    left, coef = _pieces(self._by[rows[use]], vals[np.ix_(use, sub)],
                                         self.column_style)  # fmt: skip
                    k, t = _locate(left, ys)
                    out[:, sub] = _horner(coef[:, k, :], t[:, None])
        return out

    # ------------------------------------------------------------------ checks
    def check(self):
        """Check that the arrays agree with each other and with ``meta.bgmatch``.

        Raises
        ------
        ValueError
            If the kind is unknown; a polynomial's coefficients or covariance do
            not fit its order; the bin arrays disagree in shape; a spline's row
            styles do not cover the bin rows or a row or the columns have fewer
            finite points than their style needs; or the domain is empty.
        """
        kind = self.kind
        if kind not in BACKGROUND_KINDS:
            raise ValueError(f"meta.bgmatch.kind must be one of {BACKGROUND_KINDS}, not {kind!r}")
        _ = self.domain
        grid = (np.size(self.bin_y), np.size(self.bin_x))
        for name in ("bin_values", "bin_errors", "bin_npix", "bin_model"):
            if np.shape(getattr(self, name)) != grid:
                raise ValueError(f"{name} has shape {np.shape(getattr(self, name))}, bins {grid}")
        if kind == "polynomial":
            nt = _n_terms(self.order)
            if np.shape(self.coefficients) != (nt,) or np.shape(self.covariance) != (nt, nt):
                raise ValueError(
                    f"a polynomial of order {self.order} needs {nt} coefficients and a "
                    f"{nt} x {nt} covariance, got {np.shape(self.coefficients)} and "
                    f"{np.shape(self.covariance)}"
                )
            if not np.all(np.isfinite(self.coefficients)):
                raise ValueError("the polynomial coefficients are not all finite")
        elif kind == "spline":
            self._check_spline(grid)

    def _check_spline(self, grid):
        styles = self.row_styles
        if len(styles) != grid[0]:
            raise ValueError(f"row_styles has {len(styles)} entries for {grid[0]} bin rows")
        finite = np.isfinite(np.asarray(self.bin_values))
        kept = 0
        for j, style in enumerate(styles):
            if not style:
                continue
            if style not in SPLINE_STYLES:
                raise ValueError(f"unknown spline style {style!r} in bin row {j}")
            have = int(finite[j].sum())
            if have < SPLINE_STYLES[style]:
                raise ValueError(
                    f"bin row {j} has {have} finite bin(s); {style} needs {SPLINE_STYLES[style]}"
                )
            kept += 1
        column = self.column_style
        if column not in SPLINE_STYLES or kept < SPLINE_STYLES[column]:
            raise ValueError(
                f"column style {column!r} with {kept} usable bin row(s) cannot be evaluated"
            )

    # ------------------------------------------------------------------ helpers
    def _meta(self, key):
        if not self.meta.hasattr("bgmatch"):
            raise ValueError("BackgroundModel has no meta.bgmatch")
        value = getattr(self.meta.bgmatch, key, None)
        if value is not None and hasattr(value, "instance"):
            value = value.instance
        return value

    @property
    def _bx(self):
        return np.asarray(self.bin_x, dtype=np.float64)

    @property
    def _by(self):
        return np.asarray(self.bin_y, dtype=np.float64)

    def _cheb(self, x, y):
        x0, x1, y0, y1 = self.domain
        tx = _npcheb.chebvander((2.0 * x - (x0 + x1)) / (x1 - x0), self.order)
        ty = _npcheb.chebvander((2.0 * y - (y0 + y1)) / (y1 - y0), self.order)
        return tx, ty

    def _coef_matrix(self):
        """``C[j, i]``: coefficient of :math:`T_i(x) T_j(y)`."""
        k = self.order + 1
        cm = np.zeros((k, k))
        coeffs = np.asarray(self.coefficients, dtype=np.float64)
        t = 0
        for n in range(k):
            for j in range(n + 1):
                cm[j, n - j] = coeffs[t]
                t += 1
        return cm

    def _rows_at(self, xq):
        """Kept rows, their interpolated values at ``xq`` and where each row takes part."""
        values = np.asarray(self.bin_values, dtype=np.float64)
        bx = self._bx
        rows = np.array([j for j, s in enumerate(self.row_styles) if s], dtype=np.intp)
        dx = float(np.diff(bx).max()) if bx.size > 1 else np.inf
        vals = np.empty((rows.size, xq.size))
        support = np.empty((rows.size, xq.size), dtype=bool)
        for r, j in enumerate(rows):
            idx = np.flatnonzero(np.isfinite(values[j]))
            left, coef = _pieces(bx[idx], values[j, idx], self.row_styles[j])
            k, t = _locate(left, xq)
            vals[r] = _horner(coef[:, k], t)
            lo = -np.inf if idx[0] == 0 else bx[idx[0]] - 1.5 * dx
            hi = np.inf if idx[-1] == bx.size - 1 else bx[idx[-1]] + 1.5 * dx
            support[r] = (lo <= xq) & (xq < hi)
        return rows, vals, support

    def _column_groups(self, support):
        """Query indices sharing one set of supporting rows, and the rows the y stage uses."""
        need = SPLINE_STYLES[self.column_style]
        keys = np.packbits(support, axis=0)
        _, first, inverse = np.unique(keys.T, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        for g, i0 in enumerate(first):
            use = support[:, i0]
            if use.sum() < need:
                use = np.ones_like(use)
            yield np.flatnonzero(inverse == g), use

    def _spline_points(self, xq, yq):
        rows, vals, support = self._rows_at(xq)
        out = np.empty(xq.size)
        for sel, use in self._column_groups(support):
            left, coef = _pieces(self._by[rows[use]], vals[np.ix_(use, sel)], self.column_style)
            k, t = _locate(left, yq[sel])
            out[sel] = _horner(coef[:, k, np.arange(sel.size)], t)
        return out


# --- one-dimensional piecewise cubics ---------------------------------------------------
def _pieces(xk, v, style):
    """Piecewise-cubic form ``(left, coef)`` of a 1-D interpolant through ``(xk, v)``.

    Piece ``p`` starts at ``left[p]`` and is ``((c0 t + c1) t + c2) t + c3`` with
    ``t = x - left[p]``; the first and last pieces extend to :math:`\\mp\\infty`
    (constant for CONSTANT, linear with the end slope otherwise). ``v`` is
    ``(K, ...)``; ``coef`` is ``(4, P, ...)``.
    """
    v = np.asarray(v, dtype=np.float64)
    nk = xk.size
    rest = v.shape[1:]
    if style == "CONSTANT" or nk == 1:
        coef = np.zeros((4, nk) + rest)
        coef[3] = v
        return np.concatenate([xk[:1], 0.5 * (xk[1:] + xk[:-1])]), coef
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
    start_slope = c[2, 0]
    end_slope = (3.0 * c[0, -1] * h + 2.0 * c[1, -1]) * h + c[2, -1]
    # a linear piece from one pixel before the first point, and one after the last
    coef[2, 0], coef[3, 0] = start_slope, v[0] - start_slope
    coef[2, nk], coef[3, nk] = end_slope, v[-1]
    return np.concatenate([[xk[0] - 1.0], xk]), coef


def _locate(left, q):
    k = np.clip(np.searchsorted(left, q, side="right") - 1, 0, left.size - 1)
    return k, q - left[k]


def _horner(c, t):
    return ((c[0] * t + c[1]) * t + c[2]) * t + c[3]

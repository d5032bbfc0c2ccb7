r"""Resampling of an image onto another image's pixel grid by interpolation.

An output grid (shape and pixel → world callable) and an input image (array and
world → pixel callable) define, for every output pixel centre
:math:`(x, y)`, its position :math:`(x', y') = T(x, y)` in the input image.
:math:`T` is evaluated exactly on a coarse grid of output pixel centres and
interpolated in between by cubic splines (:class:`~.geometry.PixelGrid`,
:func:`~.geometry.map_region`), so the WCS is called only on the nodes.

Interpolation
-------------
The output value is a separable weighted sum over the :math:`2a \times 2a`
input pixels around :math:`(x', y')`,

.. math::

    \tilde I(x, y) = \sum_{j,k} w_j(y')\, w_k(x')\, I_{jk},
    \qquad w_k(x') = \frac{L_a(x' - k)}{\sum_{k'} L_a(x' - k')},

with the Lanczos kernel (Duchon 1979, J. Appl. Meteorol. 18, 1016)

.. math::

    L_a(t) = \operatorname{sinc}(t)\,\operatorname{sinc}(t / a)
           = \frac{a \sin(\pi t) \sin(\pi t / a)}{\pi^2 t^2}, \qquad |t| < a,

and zero elsewhere (``"lanczos2"``, ``"lanczos3"``, ``"lanczos4"``), the
triangle :math:`\max(0, 1 - |t|)` (``"bilinear"``, :math:`a = 1`), or the
Lagrange basis polynomials through the :math:`2a` taps,
:math:`w_k = \prod_{m \ne k} (x' - m) / (k - m)` (``"lagrange6"``, ``"lagrange8"``;
Schafer & Rabiner 1973, Proc. IEEE 61, 692; Meijering 2002, Proc. IEEE 90, 319).
The weights are normalised per axis, so they sum to one and a constant image is
reproduced exactly. They are tabulated every :math:`1/65536` px (a position
quantisation of :math:`\le 7.6 \times 10^{-6}` px, far below the
:math:`\sim 10^{-3}` px accuracy of the spline mapping). A position that rounds to
a pixel centre takes that pixel alone (weights exactly 1 and 0): identity
mappings and integer shifts copy pixels.

Accuracy. Normalised Lanczos weights do not reproduce a linear ramp: their first
moment :math:`\sum_k w_k (x' - k)` reaches 0.020 px for ``"lanczos3"`` (0.032 px
for ``"lanczos2"``, 0.015 px for ``"lanczos4"``) near quarter-pixel offsets, a
sub-pixel position bias that vanishes at integer and half-integer offsets. On a
point-sampled Gaussian of :math:`\sigma = 2` px shifted by (0.37, -0.61) px, the
largest error is :math:`4.3 \times 10^{-3}` of the peak for ``"lanczos3"``,
:math:`2.9 \times 10^{-3}` for ``"lanczos4"``, :math:`1.5 \times 10^{-3}` for
``"lagrange6"`` and :math:`4.6 \times 10^{-4}` for ``"lagrange8"``. Lagrange
weights reproduce polynomials up to degree :math:`2a - 1` (no position bias) but
ring more on undersampled images; Lanczos is the conservative default.

Interpolation is point sampling: when the output pixels are much larger than the
input ones (a scale change beyond ~1.5), noise above the output Nyquist frequency
aliases; that is the price of not smoothing the image.

Flux conservation
-----------------
With ``conserve="surface_brightness"`` (intensities, e.g. MJy/sr) the interpolated
values are returned as they are. With ``conserve="flux"`` (values per pixel, e.g.
DN/s or counts) each output pixel is scaled by the area it covers in input pixels,

.. math::

    F(x, y) = |\det J(x, y)|\;\tilde I(x, y), \qquad
    J = \frac{\partial (x', y')}{\partial (x, y)},

so that :math:`\sum F \approx \sum I` over a source: the sum over output pixels
approximates :math:`\iint I\, dx'\, dy' = \iint I\, |\det J|\, dx\, dy`.
:math:`\det J` is computed on the grid nodes by central differences of the exact
transforms (step 1/2 px) and interpolated like the positions.

Variance
--------
For independent input pixels of variance :math:`V_{jk}`,

.. math::

    V_{\mathrm{out}}(x, y) = c^2 \sum_{j,k} w_j^2(y')\, w_k^2(x')\, V_{jk},

with :math:`c = |\det J|` for ``"flux"`` and :math:`c = 1` otherwise. This is the
variance of each output pixel alone: neighbouring output pixels share input
pixels, so the resampled noise is correlated, and the variance of a sum over
output pixels is not the sum of these variances. Since :math:`\sum w^2 \le 1`,
interpolation lowers the per-pixel variance (to :math:`0.786^2 = 0.62` of the
input for ``"lanczos3"`` at half-pixel offsets on both axes).

Bad pixels and coverage
-----------------------
An input pixel is bad when flagged in ``bad``, when its value is not finite, or
when its variance is not finite or negative. An output pixel is *covered* when
every input pixel with a non-zero weight lies inside the input image and none is
bad; elsewhere data and variance are NaN. A position off the pixel centres needs
:math:`a - 1 \le x' < n - a` (and the same in y), so a band about :math:`a` pixels
wide inside the input's edges is not covered. The output DQ is the bitwise OR of the
DQ values of all input pixels inside the image with a non-zero weight. Counts of
bad and flagged pixels in each kernel footprint come from summed-area tables
(Crow 1984, SIGGRAPH 18, 207), so masks cost four look-ups per output pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline

from ._kernels import (
    _axis_weights,
    _box_count,
    _dq_or,
    _footprint,
    _half_width,
    _interpolate,
    _summed_area,
)
from .geometry import GeometryError, PixelGrid, map_nodes

__all__ = [
    "ResampleResult",
    "affine_resample_stamp",
    "grids_agree",
    "pixel_mapping",
    "resample_image",
]

_CONSERVE = ("surface_brightness", "flux")
_BLOCK_PIXELS = 65536  # output pixels per block of rows
_NO_OVERLAP = "the input image does not overlap the output grid"


@dataclass(frozen=True, eq=False)
class ResampleResult:
    """An image resampled onto another pixel grid (see :func:`resample_image`).

    Attributes
    ----------
    data : numpy.ndarray
        Values on the output grid; NaN where not covered.
    var : numpy.ndarray or None
        Propagated per-pixel variance (NaN where not covered); None without input
        variance. Resampled noise is correlated between neighbouring pixels.
    dq : numpy.ndarray or None
        ``uint32`` OR of the DQ of every input pixel with a non-zero weight; None
        without input DQ.
    coverage : numpy.ndarray
        Boolean, True where the whole kernel footprint lies on valid input pixels.
    jacobian_det : float
        Median over the grid nodes of :math:`|\\det J|`, the area of an output
        pixel in input pixels.
    max_shift : float
        Largest distance, over the grid nodes, between an output pixel centre's
        position in the input image and its own pixel coordinates (0 for
        identical grids).
    method : str
        Interpolation kernel used.
    """

    data: np.ndarray
    var: np.ndarray | None
    dq: np.ndarray | None
    coverage: np.ndarray
    jacobian_det: float
    max_shift: float
    method: str


def _shape2(shape, name) -> tuple[int, int]:
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"{name} must be a (ny, nx) tuple, not {shape!r}") from None
    if len(out) != 2 or min(out) < 1:
        raise ValueError(f"{name} must be two positive sizes (ny, nx), not {tuple(shape)}")
    return out


def _grid_step(shape, step) -> int:
    if int(step) < 1:
        raise ValueError(f"step must be a positive number of pixels, not {step}")
    # At least ~9 nodes along the longer axis, so that a smooth distortion is followed.
    return int(max(1, min(int(step), max(2, max(shape) // 8))))


def _node_grid(shape_out, pixel_to_world_out, step):
    try:
        return PixelGrid(shape_out, pixel_to_world_out, _grid_step(shape_out, step))
    except GeometryError:
        raise ValueError(
            "the output grid's pixel -> world transform gives non-finite coordinates"
        ) from None


def _mapped_nodes(grid, world_to_pixel_in):
    try:
        return map_nodes(grid, world_to_pixel_in)
    except GeometryError:
        raise ValueError(
            "the input image's world -> pixel transform gives non-finite pixel positions "
            "for the output grid"
        ) from None


def grids_agree(
    shape_out, pixel_to_world_out, shape_in, world_to_pixel_in, *, tol=0.01, step=64
) -> bool:
    """Whether two pixel grids are the same to within ``tol`` pixels.

    Parameters
    ----------
    shape_out, shape_in : tuple of int
        ``(ny, nx)`` of the two grids.
    pixel_to_world_out : callable
        ``(x, y) -> world`` of the output grid.
    world_to_pixel_in : callable
        ``world -> (x, y)`` of the input grid.
    tol : float
        Largest accepted distance, in pixels, per axis.
    step : int
        Spacing of the checked pixel centres; the corners are always included.

    Returns
    -------
    bool
        True when the shapes are equal and every checked output pixel centre lands
        on the same pixel coordinates of the input grid, within ``tol``. A
        transform giving non-finite values gives False.
    """
    if _shape2(shape_out, "shape_out") != _shape2(shape_in, "shape_in"):
        return False
    try:
        grid = PixelGrid(shape_out, pixel_to_world_out, max(1, int(step)))
        xo, yo = map_nodes(grid, world_to_pixel_in)
    except GeometryError:
        return False
    gx, gy = np.meshgrid(grid.gx, grid.gy)
    return bool(np.abs(xo - gx).max() <= tol and np.abs(yo - gy).max() <= tol)


def pixel_mapping(shape_out, pixel_to_world_out, world_to_pixel_in, *, step=32):
    """Position in the input image of every output pixel centre.

    The transforms are evaluated exactly on a grid of nodes ``step`` pixels apart
    and interpolated in between by cubic splines (as :func:`~.geometry.map_region`
    does; ~1e-3 px for smooth distortions, exact for affine maps up to rounding).

    Parameters
    ----------
    shape_out : tuple of int
        ``(ny, nx)`` of the output grid.
    pixel_to_world_out, world_to_pixel_in : callable
        ``(x, y) -> world`` of the output grid, ``world -> (x, y)`` of the input.
    step : int
        Node spacing in pixels (reduced for small grids).

    Returns
    -------
    x_in, y_in : numpy.ndarray
        float64 arrays of ``shape_out``.

    Raises
    ------
    ValueError
        When a transform gives non-finite values on the nodes.
    """
    shape_out = _shape2(shape_out, "shape_out")
    grid = _node_grid(shape_out, pixel_to_world_out, step)
    xo, yo = _mapped_nodes(grid, world_to_pixel_in)
    full = (slice(None), slice(None))
    return grid.interpolate(xo, full), grid.interpolate(yo, full)


def _node_jacobian(grid, pixel_to_world_out, world_to_pixel_in):
    """|det J| on the nodes by central differences (step 1/2 px) of the transforms."""
    gx, gy = np.meshgrid(grid.gx, grid.gy)
    h = 0.5
    px = np.concatenate([gx.ravel() + h, gx.ravel() - h, gx.ravel(), gx.ravel()])
    py = np.concatenate([gy.ravel(), gy.ravel(), gy.ravel() + h, gy.ravel() - h])
    try:
        wa, wb = pixel_to_world_out(px, py)
        xi, yi = world_to_pixel_in(np.asarray(wa, float), np.asarray(wb, float))
    except Exception as exc:  # any failure of a user's transform is reported the same way
        raise ValueError(f"the pixel mapping could not be differentiated: {exc}") from exc
    xi = np.asarray(xi, dtype=np.float64).reshape(4, *gx.shape)
    yi = np.asarray(yi, dtype=np.float64).reshape(4, *gx.shape)
    if not (np.isfinite(xi).all() and np.isfinite(yi).all()):
        raise ValueError("the pixel mapping gives non-finite positions next to the grid nodes")
    dxx, dyx = (xi[0] - xi[1]) / (2 * h), (yi[0] - yi[1]) / (2 * h)
    dxy, dyy = (xi[2] - xi[3]) / (2 * h), (yi[2] - yi[3]) / (2 * h)
    return np.abs(dxx * dyy - dxy * dyx)


def _check_inputs(data, var, dq, bad, method, conserve, dtype, chunk_rows):
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"data must be a 2-D image, got {data.ndim} dimension(s)")
    if data.size == 0 or data.dtype.kind not in "fiub":
        raise ValueError(f"data must be a non-empty real numeric image, not {data.dtype}")
    arrays = {}
    for name, arr in (("var", var), ("dq", dq), ("bad", bad)):
        if arr is None:
            arrays[name] = None
            continue
        arr = np.asarray(arr)
        if arr.shape != data.shape:
            raise ValueError(f"{name} has shape {arr.shape}, data has shape {data.shape}")
        if name == "dq" and arr.dtype.kind not in "iub":
            raise ValueError(f"dq must be an integer array, not {arr.dtype}")
        arrays[name] = arr
    a = _half_width(method)
    if conserve not in _CONSERVE:
        raise ValueError(f"unknown conserve={conserve!r}; choose one of {list(_CONSERVE)}")
    if np.dtype(dtype).kind != "f":
        raise ValueError(f"dtype must be a floating-point type, not {np.dtype(dtype)}")
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be a positive number of rows, not {chunk_rows}")
    return data, arrays["var"], arrays["dq"], arrays["bad"], a


@dataclass(frozen=True)
class _Context:
    """What every chunk of rows needs from the input image."""

    a: int
    method: str
    shape: tuple
    work: np.ndarray
    vwork: np.ndarray | None
    bad_sat: np.ndarray | None
    dq_sat: np.ndarray | None
    dq: np.ndarray | None
    flux: bool


def _resample_rows(ctx, rows, mapped, outputs):
    """Resample one chunk of output rows in place; True when a pixel centre lands inside.

    ``mapped`` holds x', y' (and |det J| for flux) side by side; ``outputs`` is
    ``(data, var, dq, coverage)`` of the whole output grid.
    """
    out, out_var, out_dq, coverage = outputs
    nx = coverage.shape[1]
    xin, yin, det = mapped[:, :nx], mapped[:, nx : 2 * nx], mapped[:, 2 * nx :]
    a = ctx.a
    ny_in, nx_in = ctx.shape
    inside = bool(
        np.any((xin >= -0.5) & (xin <= nx_in - 0.5) & (yin >= -0.5) & (yin <= ny_in - 0.5))
    )
    lox, hix, bx, frx = _footprint(xin, a)
    loy, hiy, by, fry = _footprint(yin, a)
    valid = (lox >= 0) & (hix <= nx_in - 1) & (loy >= 0) & (hiy <= ny_in - 1)
    if ctx.dq_sat is not None:
        flagged = _box_count(ctx.dq_sat, loy, hiy, lox, hix) > 0
        if flagged.any():
            out_dq[rows][flagged] = _dq_or(
                ctx.dq, loy[flagged], hiy[flagged], lox[flagged], hix[flagged], a
            )
    if ctx.bad_sat is not None:
        valid &= _box_count(ctx.bad_sat, loy, hiy, lox, hix) == 0
    if not valid.any():
        return inside
    cols = np.flatnonzero(valid.any(axis=0))
    cs = slice(int(cols[0]), int(cols[-1]) + 1)
    fx, wx = _axis_weights(bx[:, cs], frx[:, cs], nx_in, ctx.method)
    fy, wy = _axis_weights(by[:, cs], fry[:, cs], ny_in, ctx.method)
    invalid = ~valid[:, cs]
    scale = np.abs(det[:, cs]) if ctx.flux else None
    block = _interpolate(ctx.work, nx_in, fy, wy, fx, wx)
    if scale is not None:
        block *= scale
    block[invalid] = np.nan
    out[rows, cs] = block
    if ctx.vwork is not None:
        block = _interpolate(ctx.vwork, nx_in, fy, wy, fx, wx, squared=True)
        if scale is not None:
            block *= scale * scale
        block[invalid] = np.nan
        out_var[rows, cs] = block
    coverage[rows, cs] = ~invalid
    return inside


def resample_image(
    data,
    shape_out,
    pixel_to_world_out,
    world_to_pixel_in,
    *,
    var=None,
    dq=None,
    bad=None,
    method="lanczos3",
    conserve="surface_brightness",
    step=32,
    dtype=np.float64,
    chunk_rows=256,
) -> ResampleResult:
    """Resample an image onto another pixel grid (see the module notes for the equations).

    Parameters
    ----------
    data : array_like
        2-D input image (any real dtype; computed in float64).
    shape_out : tuple of int
        ``(ny, nx)`` of the output grid.
    pixel_to_world_out : callable
        ``(x, y) -> world`` of the output grid (vectorised, x the column index).
    world_to_pixel_in : callable
        ``world -> (x, y)`` of the input image.
    var : array_like, optional
        Variance of ``data``; propagated as :math:`\\sum w^2 V`.
    dq : array_like of int, optional
        Data-quality bits of ``data``; OR-ed over each kernel footprint.
    bad : array_like of bool, optional
        Input pixels not to use (non-finite data or variance are always bad).
    method : {"lanczos3", "lanczos2", "lanczos4", "lagrange6", "lagrange8", "bilinear"}
        Interpolation kernel (see the module notes for their accuracy).
    conserve : {"surface_brightness", "flux"}
        Whether values are intensities (kept) or per-pixel quantities (scaled by
        the local :math:`|\\det J|`).
    step : int
        Spacing of the nodes on which the transforms are evaluated exactly.
    dtype : numpy dtype
        Floating type of the output data and variance.
    chunk_rows : int
        Most output rows processed at a time (fewer when a block of rows would
        exceed 65,536 pixels); memory is a few dozen arrays of one block, plus
        float64 copies of the input data and variance.

    Returns
    -------
    ResampleResult

    Raises
    ------
    ValueError
        For a non-2-D image, mismatched ``var``/``dq``/``bad`` shapes, an unknown
        ``method`` or ``conserve``, a transform with non-finite values, or when the
        input image does not overlap the output grid.
    """
    data, var, dq, bad, a = _check_inputs(data, var, dq, bad, method, conserve, dtype, chunk_rows)
    shape_out = _shape2(shape_out, "shape_out")
    ny_in, nx_in = data.shape
    ny, nx = shape_out

    grid = _node_grid(shape_out, pixel_to_world_out, step)
    xo, yo = _mapped_nodes(grid, world_to_pixel_in)
    # Early exit: the spline between nodes stays within one node spacing of them.
    margin = 2.0 + max(
        np.hypot(np.diff(xo, axis=1), np.diff(yo, axis=1)).max(initial=0.0),
        np.hypot(np.diff(xo, axis=0), np.diff(yo, axis=0)).max(initial=0.0),
    )
    if (
        xo.max() < -0.5 - margin
        or xo.min() > nx_in - 0.5 + margin
        or yo.max() < -0.5 - margin
        or yo.min() > ny_in - 0.5 + margin
    ):
        raise ValueError(_NO_OVERLAP)
    det_nodes = _node_jacobian(grid, pixel_to_world_out, world_to_pixel_in)
    gx, gy = np.meshgrid(grid.gx, grid.gy)
    max_shift = float(np.hypot(xo - gx, yo - gy).max())

    # Working copies: bad pixels become 0 so that a zero weight never meets a NaN.
    badmask = ~np.isfinite(data) if data.dtype.kind == "f" else np.zeros(data.shape, bool)
    if bad is not None:
        badmask |= bad.astype(bool)
    if var is not None:
        with np.errstate(invalid="ignore"):
            badmask |= ~(np.isfinite(var) & (var >= 0))
    work = np.where(badmask, 0.0, data).astype(np.float64, copy=False).ravel()
    vwork = None
    if var is not None:
        vwork = np.where(badmask, 0.0, var).astype(np.float64, copy=False).ravel()
    bad_sat = _summed_area(badmask) if badmask.any() else None
    dq_sat = dq_in = None
    if dq is not None and np.any(dq):
        dq_sat = _summed_area(dq != 0)
        dq_in = dq.astype(np.uint32, copy=False)

    # Spline of the node values along x done once; each chunk is one product.
    nodes = (xo, yo, det_nodes) if conserve == "flux" else (xo, yo)
    zx = np.concatenate([z @ grid.wx.T for z in nodes], axis=1)
    ctx = _Context(a, method, data.shape, work, vwork, bad_sat, dq_sat, dq_in, conserve == "flux")
    out = np.full(shape_out, np.nan, dtype=dtype)
    out_var = np.full(shape_out, np.nan, dtype=dtype) if var is not None else None
    out_dq = np.zeros(shape_out, dtype=np.uint32) if dq is not None else None
    coverage = np.zeros(shape_out, dtype=bool)
    # Blocks of at most chunk_rows rows, fewer for wide grids: the ~30 temporaries of
    # a block then stay in cache, which halves the time.
    nrow = max(1, min(int(chunk_rows), _BLOCK_PIXELS // nx))
    chunks = [slice(r0, min(ny, r0 + nrow)) for r0 in range(0, ny, nrow)]

    # Along y, the same not-a-knot spline evaluated piecewise: no BLAS call per block
    # (multi-threaded BLAS calls between the gathers slow them down on busy hosts).
    along_y = CubicSpline(grid.gy, zx, axis=0) if grid.gy.size >= 4 else None

    def run(rows):
        if along_y is None:
            mapped = grid.wy[rows] @ zx
        else:
            mapped = along_y(np.arange(rows.start, rows.stop, dtype=np.float64))
        return _resample_rows(ctx, rows, mapped, (out, out_var, out_dq, coverage))

    any_centre = any([run(rows) for rows in chunks])
    if not any_centre:
        raise ValueError(_NO_OVERLAP)
    return ResampleResult(
        data=out,
        var=out_var,
        dq=out_dq,
        coverage=coverage,
        jacobian_det=float(np.median(det_nodes)),
        max_shift=max_shift,
        method=str(method),
    )


def affine_resample_stamp(stamp, matrix, *, method="lanczos3", shape=None) -> np.ndarray:
    """Resample a centred PSF stamp by a linear map about its centre pixel.

    The output pixel at offset :math:`\\mathbf d = (d_x, d_y)` from the centre
    takes the input stamp's value at offset :math:`M \\mathbf d`, where ``matrix``
    :math:`M` is the local Jacobian from output to input pixels,

    .. math::

        M = \\begin{pmatrix} \\partial x'/\\partial x & \\partial x'/\\partial y \\\\
                             \\partial y'/\\partial x & \\partial y'/\\partial y
            \\end{pmatrix},

    in ``(x, y)`` order (x the column). The input is zero outside the stamp, the
    centre pixel stays on the centre pixel, and the result is normalised to unit
    sum (which absorbs the :math:`|\\det M|` flux factor). A linear map keeps a
    centroid at the centre on the centre, up to truncation at the stamp edges.

    Parameters
    ----------
    stamp : array_like
        2-D stamp with odd sizes and non-zero sum; its centre is pixel
        ``(h // 2, w // 2)``.
    matrix : array_like
        2×2 Jacobian from output to input pixel offsets, ``(x, y)`` order.
    method : str
        Interpolation kernel (see :func:`resample_image`).
    shape : tuple of int, optional
        Odd output shape; the input shape by default.

    Returns
    -------
    numpy.ndarray
        float64 stamp of unit sum.
    """
    arr = np.asarray(stamp)
    if arr.ndim != 2 or arr.size == 0 or arr.dtype.kind not in "fiub":
        raise ValueError("stamp must be a non-empty 2-D real array")
    if arr.shape[0] % 2 == 0 or arr.shape[1] % 2 == 0:
        raise ValueError(f"stamp sizes must be odd so that it has a centre pixel, not {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("stamp contains non-finite values")
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 2) or not np.isfinite(m).all():
        raise ValueError(f"matrix must be a finite 2x2 array, not shape {m.shape}")
    if abs(np.linalg.det(m)) < 1e-12:
        raise ValueError("matrix is singular")
    a = _half_width(method)
    out_shape = arr.shape if shape is None else _shape2(shape, "shape")
    if out_shape[0] % 2 == 0 or out_shape[1] % 2 == 0:
        raise ValueError(f"output stamp sizes must be odd, not {out_shape}")
    # Zero padding by the kernel half-width: positions off the stamp read zeros.
    pad = a + 1
    padded = np.pad(arr, pad)
    hp, wp = padded.shape
    cy, cx = arr.shape[0] // 2 + pad, arr.shape[1] // 2 + pad
    dy, dx = np.mgrid[: out_shape[0], : out_shape[1]].astype(np.float64)
    dy -= out_shape[0] // 2
    dx -= out_shape[1] // 2
    xin = cx + m[0, 0] * dx + m[0, 1] * dy
    yin = cy + m[1, 0] * dx + m[1, 1] * dy
    lox, hix, bx, frx = _footprint(xin, a)
    loy, hiy, by, fry = _footprint(yin, a)
    fx, wx = _axis_weights(bx, frx, wp, method)
    fy, wy = _axis_weights(by, fry, hp, method)
    res = _interpolate(padded.ravel(), wp, fy, wy, fx, wx)
    res[(lox < 0) | (hix > wp - 1) | (loy < 0) | (hiy > hp - 1)] = 0.0
    total = res.sum()
    if not np.isfinite(total) or total == 0.0:
        raise ValueError("the resampled stamp has zero or non-finite sum")
    return res / total

r"""Footprints on the sky, candidate pairs and exact pixel overlaps.

Strategy
--------
1. Each image's footprint is the polygon through its outer pixel edges
   (pixel centres are integers, so edges lie at -0.5 and n - 0.5), mapped to
   the sky with the image's pixel -> world callable. It is summarised by the unit
   vector of its centre and its angular radius.
2. Candidate pairs come from a k-d tree on the centre unit vectors: two
   footprints can only overlap if their centres are closer than the sum of their
   radii. The cost grows with the number of neighbours, not with N².
3. Each image's WCS is evaluated exactly on a coarse grid of pixel centres
   (:class:`PixelGrid`), and a numpy world -> pixel map is fitted to that grid
   (:class:`FastInverse`, checked on nodes it was not fitted to; the exact inverse
   is used when the check fails). For each candidate pair, one image's nodes are
   mapped into the other; the nodes that land on it bound the overlap
   (:func:`box_from_nodes`; an overlap thinner than one grid cell is found by
   clipping the exact outline, :func:`overlap_box`). Every pixel centre in that
   box is then placed in the other image by cubic-spline interpolation between
   the nodes, and a pixel belongs to the overlap when its centre falls inside the
   other image's pixel area. No spherical polygon arithmetic is needed, so the
   failure modes of spherical polygon libraries (near-identical footprints, empty
   intersections of intersecting polygons) cannot occur.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial import cKDTree

__all__ = [
    "FastInverse",
    "Footprint",
    "ImageGeometry",
    "GeometryError",
    "PixelGrid",
    "candidate_pairs",
    "clip_polygon_to_box",
    "edge_points",
    "image_geometry",
    "box_from_nodes",
    "make_footprint",
    "map_nodes",
    "map_region",
    "radec_to_unit",
]


class GeometryError(ValueError):
    """A footprint or overlap could not be computed (bad WCS, non-finite coordinates)."""


def radec_to_unit(ra, dec):
    """Unit vectors (..., 3) of right ascension and declination in degrees."""
    ra = np.radians(np.asarray(ra, dtype=np.float64))
    dec = np.radians(np.asarray(dec, dtype=np.float64))
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def edge_points(shape, stepsize=None, *, min_per_side=2):
    """Points along the outer pixel edges of an image, counter-clockwise, not closed.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    stepsize : int or None
        Largest separation in pixels between consecutive points along a side. None
        gives ``min_per_side`` points per side (the corners when 2).
    min_per_side : int
        Smallest number of points per side (corners included).

    Returns
    -------
    x, y : numpy.ndarray
        Pixel coordinates of the outline; corners are at (-0.5, -0.5) etc.
    """
    ny, nx = shape
    if stepsize is not None and stepsize <= 0:
        raise ValueError(f"stepsize must be a positive number of pixels, not {stepsize}")

    def count(n):
        if stepsize is None:
            return max(2, min_per_side)
        return max(2, min_per_side, int(math.ceil(n / stepsize)) + 1)

    xs = np.linspace(-0.5, nx - 0.5, count(nx))
    ys = np.linspace(-0.5, ny - 0.5, count(ny))
    x = np.concatenate(
        [xs[:-1], np.full(ys.size - 1, nx - 0.5), xs[::-1][:-1], np.full(ys.size - 1, -0.5)]
    )
    y = np.concatenate(
        [np.full(xs.size - 1, -0.5), ys[:-1], np.full(xs.size - 1, ny - 0.5), ys[::-1][:-1]]
    )
    return x, y


@dataclass(frozen=True)
class Footprint:
    """Outline of an image on the sky.

    Attributes
    ----------
    ra, dec : numpy.ndarray
        Outline vertices (degrees), counter-clockwise in pixel space, not closed.
    centre : numpy.ndarray
        Unit vector of the footprint centre.
    radius : float
        Largest angle (radians) between the centre and a vertex.
    """

    ra: np.ndarray
    dec: np.ndarray
    centre: np.ndarray
    radius: float


def make_footprint(shape, pixel_to_world, stepsize=None) -> Footprint:
    """Footprint of an image from its pixel -> world callable.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    pixel_to_world : callable
        ``(x, y) -> (ra, dec)`` in degrees, vectorised.
    stepsize : int or None
        See :func:`edge_points`; at least 5 points per side are always used so that
        distortion bends the outline.

    Raises
    ------
    GeometryError
        When the WCS gives non-finite coordinates on the outline.
    """
    if len(shape) != 2 or min(shape) < 1:
        raise GeometryError(f"expected a 2-D image shape, got {tuple(shape)}")
    x, y = edge_points(shape, stepsize, min_per_side=5)
    xc, yc = (shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0
    try:
        ra, dec = pixel_to_world(np.append(x, xc), np.append(y, yc))
    except Exception as exc:  # any WCS failure is reported the same way
        raise GeometryError(f"pixel -> world transform failed: {exc}") from exc
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    if ra.shape != (x.size + 1,) or not (np.isfinite(ra).all() and np.isfinite(dec).all()):
        raise GeometryError("pixel -> world transform gives non-finite coordinates on the outline")
    vec = radec_to_unit(ra, dec)
    centre = vec[-1]
    cosang = np.clip(vec[:-1] @ centre, -1.0, 1.0)
    return Footprint(ra[:-1], dec[:-1], centre, float(np.arccos(cosang.min())))


def candidate_pairs(footprints) -> np.ndarray:
    """Pairs of footprints whose bounding circles intersect.

    Parameters
    ----------
    footprints : sequence of Footprint

    Returns
    -------
    numpy.ndarray
        ``(m, 2)`` integer array of index pairs with ``i < j``, sorted.
    """
    n = len(footprints)
    if n < 2:
        return np.empty((0, 2), dtype=np.intp)
    centres = np.array([f.centre for f in footprints])
    radii = np.array([f.radius for f in footprints])
    # Chord length for the largest possible separation of two touching circles.
    angle = min(math.pi, 2.0 * float(radii.max()) * (1.0 + 1e-9) + 1e-12)
    chord = 2.0 * math.sin(angle / 2.0)
    pairs = cKDTree(centres).query_pairs(chord, output_type="ndarray")
    if pairs.size == 0:
        return np.empty((0, 2), dtype=np.intp)
    pairs = np.sort(pairs, axis=1)
    sep = np.arccos(
        np.clip(np.einsum("ij,ij->i", centres[pairs[:, 0]], centres[pairs[:, 1]]), -1.0, 1.0)
    )
    keep = sep <= (radii[pairs[:, 0]] + radii[pairs[:, 1]]) * (1.0 + 1e-9)
    pairs = pairs[keep]
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return pairs[order]


def clip_polygon_to_box(x, y, xmin, xmax, ymin, ymax):
    """Clip a polygon with an axis-aligned box (Sutherland–Hodgman).

    Parameters
    ----------
    x, y : numpy.ndarray
        Polygon vertices (not closed).
    xmin, xmax, ymin, ymax : float
        The box.

    Returns
    -------
    x, y : numpy.ndarray
        Vertices of the clipped polygon (empty when the polygon misses the box).
    """
    px, py = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    for axis, bound, keep_greater in (
        (0, xmin, True),
        (0, xmax, False),
        (1, ymin, True),
        (1, ymax, False),
    ):
        if px.size == 0:
            break
        c = px if axis == 0 else py
        inside = c >= bound if keep_greater else c <= bound
        cn = np.roll(c, -1)
        inside_next = np.roll(inside, -1)
        pxn, pyn = np.roll(px, -1), np.roll(py, -1)
        crosses = inside != inside_next
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(crosses, (bound - c) / (cn - c), 0.0)
        ix = px + t * (pxn - px)
        iy = py + t * (pyn - py)
        outx, outy = [], []
        for k in range(px.size):
            if inside[k]:
                outx.append(px[k])
                outy.append(py[k])
            if crosses[k]:
                outx.append(ix[k])
                outy.append(iy[k])
        px, py = np.array(outx), np.array(outy)
    return px, py


def polygon_area(x, y) -> float:
    """Area of a simple polygon (shoelace formula)."""
    if len(x) < 3:
        return 0.0
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


class PixelGrid:
    """Sky coordinates of an image on a coarse grid of pixel centres, computed once.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    pixel_to_world : callable
        ``(x, y) -> (ra, dec)``.
    step : int
        Grid spacing in pixels; the last row and column are always included.

    Notes
    -----
    A smooth function known on the nodes is evaluated at every pixel centre of a
    box as ``Wy[box_y] @ Z @ Wx[box_x].T``, where ``Wx`` and ``Wy`` hold the weights
    of a not-a-knot cubic spline through the nodes (the interpolant is linear in the
    node values). The weights depend only on the image size and the grid step and
    are shared by all images of one shape.
    """

    def __init__(self, shape, pixel_to_world, step=16):
        ny, nx = shape
        self.shape = (int(ny), int(nx))
        self.gx = _grid_nodes(nx, step)
        self.gy = _grid_nodes(ny, step)
        xx, yy = np.meshgrid(self.gx, self.gy)
        ra, dec = pixel_to_world(xx.ravel(), yy.ravel())
        self.ra = np.asarray(ra, dtype=np.float64).reshape(xx.shape)
        self.dec = np.asarray(dec, dtype=np.float64).reshape(xx.shape)
        if not (np.isfinite(self.ra).all() and np.isfinite(self.dec).all()):
            raise GeometryError("pixel -> world transform gives non-finite coordinates")
        self.step = int(step)
        self.wx = _spline_weights(nx, self.step)
        self.wy = _spline_weights(ny, self.step)

    def interpolate(self, z, box, dtype=np.float64):
        """Values at every pixel centre of ``box`` of a function known on the nodes.

        ``dtype=numpy.float32`` halves the memory traffic where ~1e-3 px is enough.
        """
        sy, sx = box
        wy, wx = self.wy, self.wx
        if dtype == np.float32:
            wy, wx = (
                _spline_weights(self.shape[0], self.step, np.float32),
                _spline_weights(self.shape[1], self.step, np.float32),
            )
        return wy[sy] @ np.asarray(z, dtype=dtype) @ wx[sx].T


_WEIGHTS = {}


def _spline_weights(n, step, dtype=np.float64):
    """(n, nodes) matrix of cubic-spline weights from grid nodes to every pixel."""
    key = (int(n), int(step), np.dtype(dtype).str)
    w = _WEIGHTS.get(key)
    if w is None and np.dtype(dtype) != np.float64:
        w = _spline_weights(n, step).astype(dtype)
        _WEIGHTS[key] = w
    if w is None:
        nodes = _grid_nodes(n, step)
        pixels = np.arange(n, dtype=np.float64)
        if nodes.size == 1:
            w = np.ones((n, 1))
        elif nodes.size < 4:
            # Too few nodes for a cubic: piecewise linear.
            w = np.stack([np.interp(pixels, nodes, e) for e in np.eye(nodes.size)], axis=1)
        else:
            w = CubicSpline(nodes, np.eye(nodes.size), axis=0)(pixels)
        if len(_WEIGHTS) > 64:
            _WEIGHTS.clear()
        _WEIGHTS[key] = w
    return w


def map_nodes(grid, world_to_pixel_other):
    """Positions, in another image, of every node of ``grid`` (one transform call).

    Returns
    -------
    xo, yo : numpy.ndarray
        Arrays of the grid's node shape.
    """
    xo, yo = world_to_pixel_other(grid.ra.ravel(), grid.dec.ravel())
    xo = np.asarray(xo, dtype=np.float64).reshape(grid.ra.shape)
    yo = np.asarray(yo, dtype=np.float64).reshape(grid.ra.shape)
    if not (np.isfinite(xo).all() and np.isfinite(yo).all()):
        raise GeometryError("world -> pixel transform gives non-finite coordinates")
    return xo, yo


def box_from_nodes(grid, xo, yo, shape_other):
    """Bounding box, in the grid's image, of the nodes that fall on another image.

    Nodes inside the other image's pixel area are dilated by one node in each
    direction, so the box covers every cell that can hold an overlapping pixel.

    Returns
    -------
    tuple of slice or None
        None when no node falls on the other image (the overlap, if any, is thinner
        than a grid cell: use :func:`overlap_box` to decide).
    """
    ny, nx = shape_other
    inside = (xo >= -0.5) & (xo < nx - 0.5) & (yo >= -0.5) & (yo < ny - 0.5)
    if not inside.any():
        return None
    rows = np.flatnonzero(inside.any(axis=1))
    cols = np.flatnonzero(inside.any(axis=0))
    r0, r1 = max(0, rows[0] - 1), min(grid.gy.size - 1, rows[-1] + 1)
    c0, c1 = max(0, cols[0] - 1), min(grid.gx.size - 1, cols[-1] + 1)
    return (
        slice(int(grid.gy[r0]), int(grid.gy[r1]) + 1),
        slice(int(grid.gx[c0]), int(grid.gx[c1]) + 1),
    )


def _grid_nodes(n, step):
    nodes = np.arange(0, n, max(1, int(step)), dtype=np.float64)
    if nodes[-1] != n - 1:
        nodes = np.append(nodes, n - 1.0)
    return nodes


def overlap_box(shape, world_to_pixel, footprint_other, pad=2):
    """Bounding box, in this image, of the part of another footprint that falls on it.

    Returns
    -------
    tuple of slice or None
        ``(slice_y, slice_x)``, or None when the outlines do not overlap.
    """
    ny, nx = shape
    x, y = world_to_pixel(footprint_other.ra, footprint_other.dec)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise GeometryError("world -> pixel transform gives non-finite coordinates")
    cx, cy = clip_polygon_to_box(x, y, -0.5, nx - 0.5, -0.5, ny - 0.5)
    if polygon_area(cx, cy) < 1e-6:
        return None
    x0 = max(0, int(math.floor(cx.min() + 0.5)) - pad)
    x1 = min(nx, int(math.ceil(cx.max() + 0.5)) + pad)
    y0 = max(0, int(math.floor(cy.min() + 0.5)) - pad)
    y1 = min(ny, int(math.ceil(cy.max() + 0.5)) + pad)
    if x1 <= x0 or y1 <= y0:
        return None
    return slice(y0, y1), slice(x0, x1)


def map_region(grid: PixelGrid, box, world_to_pixel_other):
    """Positions, in another image, of every pixel centre of a box of this image.

    The mapping is evaluated exactly on the grid nodes and interpolated in between
    by cubic splines (:class:`PixelGrid`).

    Parameters
    ----------
    grid : PixelGrid
        Coarse sky grid of this image.
    box : tuple of slice
        ``(slice_y, slice_x)`` region of this image.
    world_to_pixel_other : callable
        ``(ra, dec) -> (x, y)`` of the other image.

    Returns
    -------
    xo, yo : numpy.ndarray
        Arrays of the box's shape (float64).
    """
    xo, yo = map_nodes(grid, world_to_pixel_other)
    return grid.interpolate(xo, box), grid.interpolate(yo, box)


class FastInverse:
    r"""A numpy world → pixel map of one image, fitted to its own forward transform.

    The sky positions of the image's grid nodes are projected onto the tangent
    plane at the image centre (gnomonic projection,
    :math:`\xi = \mathbf{v}\cdot\mathbf{e}_1 / \mathbf{v}\cdot\mathbf{c}`,
    :math:`\eta = \mathbf{v}\cdot\mathbf{e}_2 / \mathbf{v}\cdot\mathbf{c}`), and the
    pixel coordinates are fitted as 2-D Chebyshev series of total degree ``degree``
    in :math:`(\xi, \eta)` on every other node. The fit is checked on all nodes,
    half of which it was not fitted to; ``ok`` is False when it misses any by more
    than ``tol`` pixels (or the grid is too small to leave nodes out), and the
    caller then uses the exact inverse instead.

    Parameters
    ----------
    grid : PixelGrid
        Grid of the image (nodes and their sky coordinates).
    degree : int
        Total degree of the fitted series.
    tol : float
        Largest accepted error at the validation points, in pixels.
    """

    def __init__(self, grid, degree=5, tol=1e-3):
        ny, nx = grid.ra.shape
        centre = radec_to_unit(grid.ra[ny // 2, nx // 2], grid.dec[ny // 2, nx // 2])
        self._c = centre
        helper = np.array([0.0, 0.0, 1.0]) if abs(centre[2]) < 0.9 else np.array([1.0, 0, 0])
        e1 = np.cross(helper, centre)
        self._e1 = e1 / np.linalg.norm(e1)
        self._e2 = np.cross(centre, self._e1)
        xi, eta = self._project(grid.ra.ravel(), grid.dec.ravel())
        self._scale = max(float(np.abs(xi).max()), float(np.abs(eta).max()), 1e-12)
        self._degree = int(degree)
        xx, yy = np.meshgrid(grid.gx, grid.gy)
        # Fit on every other node (edges included) and check on all of them: the
        # nodes left out of the fit lie half-way between fitted ones.
        ry = np.unique(np.append(np.arange(0, ny, 2), ny - 1))
        rx = np.unique(np.append(np.arange(0, nx, 2), nx - 1))
        fit = np.zeros((ny, nx), dtype=bool)
        fit[np.ix_(ry, rx)] = True
        if fit.sum() < 2 * (degree + 1) * (degree + 2) // 2:
            fit[:] = True
        fit = fit.ravel()
        vander = self._vander(xi, eta)
        target = np.column_stack([xx.ravel(), yy.ravel()])
        self._coef, *_ = np.linalg.lstsq(vander[fit], target[fit], rcond=None)
        err = np.hypot(*(vander @ self._coef - target).T)
        self.max_error = float(np.nanmax(err)) if err.size else 0.0
        self.ok = bool(np.isfinite(err).all() and self.max_error <= tol and not fit.all())

    def _project(self, ra, dec):
        v = radec_to_unit(ra, dec)
        w = v @ self._c
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = np.where(w > 1e-6, (v @ self._e1) / w, np.inf)
            eta = np.where(w > 1e-6, (v @ self._e2) / w, np.inf)
        return xi, eta

    def _vander(self, xi, eta):
        u = np.polynomial.chebyshev.chebvander(xi / self._scale, self._degree)
        v = np.polynomial.chebyshev.chebvander(eta / self._scale, self._degree)
        cols = [
            u[:, i] * v[:, j] for i in range(self._degree + 1) for j in range(self._degree + 1 - i)
        ]
        return np.column_stack(cols)

    def __call__(self, ra, dec):
        """Pixel coordinates ``(x, y)`` of sky positions (degrees)."""
        ra = np.asarray(ra, dtype=np.float64)
        xi, eta = self._project(ra.ravel(), np.asarray(dec, dtype=np.float64).ravel())
        far = ~(np.isfinite(xi) & np.isfinite(eta))
        xi[far] = 0.0
        eta[far] = 0.0
        out = self._vander(xi, eta) @ self._coef
        out[far] = np.inf  # behind the tangent plane: nowhere on this image
        return out[:, 0].reshape(ra.shape), out[:, 1].reshape(ra.shape)


@dataclass(frozen=True)
class ImageGeometry:
    """Everything sky matching needs of an image's WCS, computed once.

    Attributes
    ----------
    footprint : Footprint or None
    grid : PixelGrid or None
    inverse : callable or None
        World -> pixel: a validated :class:`FastInverse`, or the exact inverse when
        the fit fails its check.
    error : str
        Why the geometry could not be computed ('' when it could).
    """

    footprint: Footprint | None
    grid: PixelGrid | None
    inverse: object | None
    error: str = ""

    @property
    def ok(self) -> bool:
        """True when footprint, grid and inverse are available."""
        return not self.error


def image_geometry(shape, pixel_to_world, world_to_pixel, *, stepsize=None, grid_step=32):
    """Footprint, WCS grid and world -> pixel map of one image.

    After this, the image's WCS is needed again only when the fitted inverse fails
    its check (``inverse`` is then ``world_to_pixel`` itself), so callers can
    release WCS objects of large mosaics.

    Parameters
    ----------
    shape : tuple of int
    pixel_to_world, world_to_pixel : callable
    stepsize : int or None
        See :func:`make_footprint`.
    grid_step : int
        Largest grid spacing; at least 17 nodes per axis are used.

    Returns
    -------
    ImageGeometry
        With ``error`` set instead of raising when the WCS fails.
    """
    try:
        footprint = make_footprint(shape, pixel_to_world, stepsize)
        step = min(int(grid_step), max(2, min(shape) // 16))
        grid = PixelGrid(shape, pixel_to_world, step)
        fast = FastInverse(grid)
    except GeometryError as exc:
        return ImageGeometry(None, None, None, f"invalid WCS footprint: {exc}")
    except Exception as exc:  # any failure of a user's WCS callable
        return ImageGeometry(None, None, None, f"invalid WCS footprint: {exc}")
    return ImageGeometry(footprint, grid, fast if fast.ok else world_to_pixel)

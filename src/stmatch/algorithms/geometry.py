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
3. For each candidate pair, the other image's outline is mapped into this image's
   pixel frame and clipped with the pixel rectangle (Sutherland–Hodgman); an empty
   clip means no overlap. Inside the clipped bounding box, every pixel centre is
   mapped into the other image exactly on a coarse grid and by a smooth
   interpolant in between, and a pixel belongs to the overlap when its centre
   falls inside the other image's pixel area. No spherical polygon arithmetic is
   needed, so the failure modes of spherical polygon libraries (near-identical
   footprints, empty intersections of intersecting polygons) cannot occur.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import RectBivariateSpline
from scipy.spatial import cKDTree

__all__ = [
    "Footprint",
    "GeometryError",
    "PixelGrid",
    "candidate_pairs",
    "clip_polygon_to_box",
    "edge_points",
    "make_footprint",
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


def map_region(grid: PixelGrid, box, world_to_pixel_other, *, tol=0.01):
    """Positions, in another image, of every pixel centre of a box of this image.

    The mapping is evaluated exactly on the coarse grid nodes covering the box and
    interpolated in between by a separable cubic polynomial (or, when that misses
    the exact nodes by more than ``tol`` pixels, a bicubic spline).

    Parameters
    ----------
    grid : PixelGrid
        Coarse sky grid of this image.
    box : tuple of slice
        ``(slice_y, slice_x)`` region of this image.
    world_to_pixel_other : callable
        ``(ra, dec) -> (x, y)`` of the other image.
    tol : float
        Largest accepted interpolation error at the grid nodes, in pixels.

    Returns
    -------
    xo, yo : numpy.ndarray
        Arrays of the box's shape (float64).
    """
    sy, sx = box
    iy0 = max(0, np.searchsorted(grid.gy, sy.start, side="right") - 1)
    iy1 = min(grid.gy.size, np.searchsorted(grid.gy, sy.stop - 1, side="left") + 1)
    ix0 = max(0, np.searchsorted(grid.gx, sx.start, side="right") - 1)
    ix1 = min(grid.gx.size, np.searchsorted(grid.gx, sx.stop - 1, side="left") + 1)
    gx = grid.gx[ix0:ix1]
    gy = grid.gy[iy0:iy1]
    ra = grid.ra[iy0:iy1, ix0:ix1]
    dec = grid.dec[iy0:iy1, ix0:ix1]
    xo, yo = world_to_pixel_other(ra.ravel(), dec.ravel())
    xo = np.asarray(xo, dtype=np.float64).reshape(ra.shape)
    yo = np.asarray(yo, dtype=np.float64).reshape(ra.shape)
    if not (np.isfinite(xo).all() and np.isfinite(yo).all()):
        raise GeometryError("world -> pixel transform gives non-finite coordinates in the overlap")
    px = np.arange(sx.start, sx.stop, dtype=np.float64)
    py = np.arange(sy.start, sy.stop, dtype=np.float64)
    return _interpolate(gx, gy, xo, px, py, tol), _interpolate(gx, gy, yo, px, py, tol)


def _interpolate(gx, gy, z, px, py, tol):
    """Evaluate on the full grid (py × px) a smooth surface known on nodes (gy × gx)."""
    deg_x = min(3, gx.size - 1)
    deg_y = min(3, gy.size - 1)
    # Separable polynomial in scaled coordinates: z ≈ Vy C Vx^T.
    cx = (gx.min() + gx.max()) / 2.0
    hx = max((gx.max() - gx.min()) / 2.0, 1.0)
    cy = (gy.min() + gy.max()) / 2.0
    hy = max((gy.max() - gy.min()) / 2.0, 1.0)
    vx = np.polynomial.chebyshev.chebvander((gx - cx) / hx, deg_x)
    vy = np.polynomial.chebyshev.chebvander((gy - cy) / hy, deg_y)
    coef = np.linalg.pinv(vy) @ z @ np.linalg.pinv(vx).T
    if np.abs(vy @ coef @ vx.T - z).max() <= tol:
        fx = np.polynomial.chebyshev.chebvander((px - cx) / hx, deg_x)
        fy = np.polynomial.chebyshev.chebvander((py - cy) / hy, deg_y)
        return fy @ coef @ fx.T
    # Strong distortion: a bicubic spline through the nodes (cubic needs 4 per axis,
    # and with fewer the polynomial above already interpolates them exactly).
    spline = RectBivariateSpline(gy, gx, z, kx=deg_y, ky=deg_x)
    return spline(py, px)

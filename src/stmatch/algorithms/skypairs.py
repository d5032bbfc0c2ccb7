"""Pairwise overlap measurements for sky matching.

For every candidate pair of overlapping images, the statistic of each image is
measured on its pixels that fall on a valid pixel of the other image (see
:mod:`.geometry` for how pixels are mapped), and the difference of the two
statistics, with its error, becomes one equation of the solution
(:mod:`.skysolve`). Pairs are visited in reverse Cuthill-McKee order of the overlap
graph so that a small cache of images suffices.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from .geometry import (
    GeometryError,
    PixelGrid,
    box_from_nodes,
    candidate_pairs,
    image_geometry,
    map_nodes,
    overlap_box,
)
from .skystats import StatResult

__all__ = ["PairRecord", "measure_pairs"]

log = logging.getLogger("stmatch.algorithms.skymatch")


@dataclass(frozen=True)
class PairRecord:
    """Measurement on one pair of overlapping images."""

    a: int
    b: int
    group_a: int
    group_b: int
    npix: int
    sky_a: float
    sky_b: float
    diff: float
    diff_err: float
    used: bool
    reason: str = ""
    residual: float = math.nan

    @property
    def weight(self) -> float:
        """Inverse variance of the difference (0 when unused)."""
        if not self.used or not self.diff_err > 0:
            return 0.0
        return 1.0 / self.diff_err**2


def _pair_order(n, pairs):
    """Order pairs so that consecutive ones share images (reverse Cuthill–McKee)."""
    if len(pairs) == 0:
        return pairs
    adj = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    adj = (adj + adj.T).tocsr()
    perm = csgraph.reverse_cuthill_mckee(adj, symmetric_mode=True)
    rank = np.empty(n, dtype=np.intp)
    rank[perm] = np.arange(n)
    ra, rb = rank[pairs[:, 0]], rank[pairs[:, 1]]
    order = np.lexsort((np.maximum(ra, rb), np.minimum(ra, rb)))
    return pairs[order]


def measure_pairs(inputs, group_of_image, params, cache, progress=None):
    """Measure every overlapping pair of ``inputs``.

    Returns
    -------
    records : tuple of PairRecord
    n_candidates : int
    bad_wcs : dict
        Group index -> reason, for images whose WCS gave no usable geometry.
    """
    n = len(inputs)
    geometry = [
        inp.geometry
        if inp.geometry is not None
        else image_geometry(
            inp.shape,
            inp.pixel_to_world,
            inp.world_to_pixel,
            stepsize=params.stepsize,
            grid_step=params.grid_step,
        )
        for inp in inputs
    ]
    bad_wcs = {}
    for i, geo in enumerate(geometry):
        if not geo.ok:
            bad_wcs[int(group_of_image[i])] = geo.error
            log.warning("%s: %s; image left out of matching", inputs[i].name, geo.error)
    ok = [i for i in range(n) if geometry[i].ok]
    cand = candidate_pairs([geometry[i].footprint for i in ok])
    cand = np.array(ok, dtype=np.intp)[cand] if len(cand) else cand
    # Pairs inside one group carry no information about group levels.
    if len(cand):
        cand = cand[group_of_image[cand[:, 0]] != group_of_image[cand[:, 1]]]
    cand = _pair_order(n, cand)

    records = []
    total = len(cand)
    every = max(1, total // 10)
    for k, (a, b) in enumerate(cand):
        a, b = int(a), int(b)
        ga, gb = int(group_of_image[a]), int(group_of_image[b])
        try:
            sides = [
                _SideInput(
                    inputs[i].shape,
                    geometry[i].grid,
                    geometry[j].inverse,
                    inputs[j].shape,
                    cache.get(i),
                    cache.get(j),
                    _fallback_box(inputs[i].shape, geometry[i].inverse, geometry[j].footprint),
                )
                for i, j in ((a, b), (b, a))
            ]
            rec = _measure_pair(a, b, ga, gb, sides, params)
        except _GEOMETRY_ERRORS as exc:
            log.warning(
                "pair %s / %s dropped: geometry failed (%s)", inputs[a].name, inputs[b].name, exc
            )
            rec = PairRecord(
                a,
                b,
                ga,
                gb,
                0,
                math.nan,
                math.nan,
                math.nan,
                math.nan,
                False,
                f"geometry failed: {exc}",
            )
        if rec is not None:
            records.append(rec)
            if not rec.used:
                log.debug("pair %s / %s not used: %s", inputs[a].name, inputs[b].name, rec.reason)
        if progress is not None and ((k + 1) % every == 0 or k + 1 == total):
            progress(k + 1, total)
    return tuple(records), total, bad_wcs


_GEOMETRY_ERRORS = (GeometryError, FloatingPointError, ValueError, np.linalg.LinAlgError)


def _fallback_box(shape, world_to_pixel, footprint_other):
    """Exact-outline overlap box, evaluated only when no grid node decides it."""

    def box():
        return overlap_box(shape, world_to_pixel, footprint_other)

    return box


@dataclass(frozen=True)
class _SideInput:
    """What one side of a pair needs: geometry, the other image's inverse, pixels."""

    shape: tuple
    grid: PixelGrid
    inverse_other: Callable
    shape_other: tuple
    pixels: tuple
    pixels_other: tuple
    fallback_box: Callable


def _side(side: _SideInput):
    """Values of an image in its overlap with another, on pixels valid in both."""
    g = side.grid
    nodes_x, nodes_y = map_nodes(g, side.inverse_other)
    nyj, nxj = side.shape_other
    box = box_from_nodes(g, nodes_x, nodes_y, (nyj, nxj))
    if box is None:
        # No node falls on the other image: the overlap, if any, is thinner than a
        # grid cell; decide with the exact outline.
        box = side.fallback_box()
        if box is None:
            return None
    # float32 positions (~1e-3 px) are plenty to pick the nearest pixel.
    xo = g.interpolate(nodes_x, box, np.float32)
    yo = g.interpolate(nodes_y, box, np.float32)
    # A centre lies on the other image when its position, shifted by half a pixel,
    # is in [0, n): the integer part is then the other image's nearest pixel.
    xo += np.float32(0.5)
    yo += np.float32(0.5)
    mask = (xo >= 0) & (xo < nxj) & (yo >= 0) & (yo < nyj)
    if not mask.any():
        return None
    data_i, good_i = side.pixels
    good_j = side.pixels_other[1]
    mask &= good_i[box]
    flat = yo.astype(np.int32)
    flat *= nxj
    flat += xo.astype(np.int32)
    np.clip(flat, 0, nxj * nyj - 1, out=flat)
    mask &= good_j.ravel().take(flat)
    return data_i[box][mask]


def _measure_pair(a, b, ga, gb, sides, params):
    """Statistics of both sides of one pair and their difference."""
    va = _side(sides[0])
    vb = _side(sides[1]) if va is not None else None
    if va is None or vb is None:
        return None  # bounding circles touch but the images do not overlap
    npix = int(min(va.size, vb.size))
    if npix < params.min_pixels:
        return PairRecord(
            a,
            b,
            ga,
            gb,
            npix,
            math.nan,
            math.nan,
            math.nan,
            math.nan,
            False,
            f"only {npix} pixels valid in both images (min_pixels={params.min_pixels})",
        )
    sa: StatResult = params.statistic(va)
    sb: StatResult = params.statistic(vb)
    if not (sa.valid and sb.valid):
        return PairRecord(
            a,
            b,
            ga,
            gb,
            npix,
            sa.value,
            sb.value,
            math.nan,
            math.nan,
            False,
            "sky statistic could not be computed in the overlap",
        )
    err = math.hypot(sa.error, sb.error)
    if not err > 0:
        # Noise-free data: every such pair gets the same tiny, positive error.
        err = 1e-12 * max(1.0, abs(sa.value), abs(sb.value))
    return PairRecord(
        a, b, ga, gb, int(min(sa.npix, sb.npix)), sa.value, sb.value, sa.value - sb.value, err, True
    )

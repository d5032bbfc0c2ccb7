"""Pairwise overlap measurements for sky matching.

For every candidate pair of overlapping images, the statistic of each image is
measured on its pixels that fall on a valid pixel of the other image (see
:mod:`.geometry` for how pixels are mapped), and the difference of the two
statistics, with its error, becomes one equation of the solution
(:mod:`.skysolve`). Pairs are visited in reverse Cuthill-McKee order of the overlap
graph so that a small cache of images suffices.

With a ``mapper`` (e.g. one that runs tasks on Dask workers), the ordered pairs
are cut into batches of consecutive pairs; each batch becomes one
:class:`PairTask` holding only what its pairs need (shapes, grids, inverse maps,
footprints and ``load`` callables of their images), and
:func:`measure_pair_batch` measures it, reading each image it needs through a
cache of its own. The records are those of the in-process loop, in the same
order.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from .geometry import (
    Footprint,
    GeometryError,
    PixelGrid,
    box_from_nodes,
    candidate_pairs,
    image_geometry,
    map_nodes,
    overlap_box,
)
from .skystats import StatResult

__all__ = [
    "MAX_PAIRS_PER_TASK",
    "PairImage",
    "PairRecord",
    "PairTask",
    "batch_size",
    "measure_pair_batch",
    "measure_pairs",
]

log = logging.getLogger("stmatch.algorithms.skymatch")

#: Largest number of pairs (or groups) in one task when the size is automatic.
MAX_PAIRS_PER_TASK = 64


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


def measure_pairs(
    inputs,
    group_of_image,
    params,
    cache,
    progress=None,
    *,
    mapper=None,
    pairs_per_task=None,
    task_slots=None,
):
    """Measure every overlapping pair of ``inputs``.

    Parameters
    ----------
    inputs : sequence of SkyInput
    group_of_image : numpy.ndarray
        Group index of each image.
    params : SkyMatchParams
    cache : _PixelCache
        Pixels of the in-process loop (unused with a ``mapper``).
    progress : callable, optional
        ``progress(done, total)`` in pairs; not called with a ``mapper`` (which
        reports its own progress).
    mapper : callable, optional
        ``mapper(fn, items) -> list``, equivalent to ``[fn(x) for x in items]``,
        e.g. on Dask workers. None measures the pairs here, one after another.
    pairs_per_task : int, optional
        Pairs per task with a ``mapper`` (None: :func:`batch_size`).
    task_slots : int, optional
        Tasks that can run at once, for the automatic ``pairs_per_task``.

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
    total = len(cand)
    if mapper is not None:
        records = _measure_mapped(
            inputs, group_of_image, geometry, cand, params, mapper, pairs_per_task, task_slots
        )
        return records, total, bad_wcs

    shapes = [inp.shape for inp in inputs]
    records = []
    every = max(1, total // 10)
    for k, (a, b) in enumerate(cand):
        a, b = int(a), int(b)
        rec = _pair_record(
            a, b, int(group_of_image[a]), int(group_of_image[b]), shapes, geometry, cache, params
        )
        if rec is not None:
            records.append(rec)
            _log_record(rec, inputs[a].name, inputs[b].name)
        if progress is not None and ((k + 1) % every == 0 or k + 1 == total):
            progress(k + 1, total)
    return tuple(records), total, bad_wcs


def _pair_record(a, b, ga, gb, shapes, geometry, cache, params):
    """Record of one candidate pair (None when the images do not overlap).

    ``shapes`` and ``geometry`` are indexed by image index (``geometry[i]`` has
    ``grid``, ``inverse`` and ``footprint``); ``cache.get(i)`` gives the pixels.
    """
    try:
        sides = [
            _SideInput(
                shapes[i],
                geometry[i].grid,
                geometry[j].inverse,
                shapes[j],
                cache.get(i),
                cache.get(j),
                _fallback_box(shapes[i], geometry[i].inverse, geometry[j].footprint),
            )
            for i, j in ((a, b), (b, a))
        ]
        return _measure_pair(a, b, ga, gb, sides, params)
    except _GEOMETRY_ERRORS as exc:
        return PairRecord(
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
            f"{_GEOMETRY_FAILED}{exc}",
        )


_GEOMETRY_FAILED = "geometry failed: "


def _log_record(rec, name_a, name_b):
    """The log lines of one pair record (the same in-process and from tasks)."""
    if rec.reason.startswith(_GEOMETRY_FAILED):
        log.warning(
            "pair %s / %s dropped: geometry failed (%s)",
            name_a,
            name_b,
            rec.reason[len(_GEOMETRY_FAILED) :],
        )
    if not rec.used:
        log.debug("pair %s / %s not used: %s", name_a, name_b, rec.reason)


def batch_size(total, task_slots=None, per_task=None):
    r"""Items per task: ``per_task``, or about four tasks per slot, at most 64 each.

    Parameters
    ----------
    total : int
        Number of items (pairs or groups).
    task_slots : int, optional
        Tasks that can run at once (None: 8).
    per_task : int, optional
        Fixed size; validated and returned when given.

    Returns
    -------
    int
        :math:`\min(64, \max(1, \lceil N / (4 S) \rceil))` for ``N`` items and
        ``S`` slots, so that every slot gets several tasks (load balance) while
        tasks stay large enough to amortise their overhead.
    """
    if per_task is not None:
        if isinstance(per_task, bool) or int(per_task) != per_task or per_task < 1:
            raise ValueError(f"pairs_per_task must be a positive integer or None, not {per_task!r}")
        return int(per_task)
    slots = 8 if task_slots is None else max(1, int(task_slots))
    return max(1, min(MAX_PAIRS_PER_TASK, math.ceil(total / (4 * slots))))


@dataclass(frozen=True)
class PairImage:
    """What a pair task needs of one image (all of it picklable for process workers).

    Attributes
    ----------
    index : int
        Position of the image in the inputs.
    name : str
    shape : tuple of int
    grid : PixelGrid
    inverse : callable
        World -> pixel map (a fitted :class:`~.geometry.FastInverse` or the exact one).
    footprint : Footprint
    load : callable
        ``() -> (data, good)``, as :attr:`SkyInput.load`.
    """

    index: int
    name: str
    shape: tuple
    grid: PixelGrid
    inverse: Callable
    footprint: Footprint
    load: Callable


@dataclass(frozen=True)
class PairTask:
    """A batch of consecutive candidate pairs and what measuring them needs.

    Attributes
    ----------
    pairs : tuple of tuple
        ``(a, b, group_a, group_b)`` per pair, in measuring order.
    images : tuple of PairImage
        Every image the pairs use, once.
    params : SkyMatchParams
    """

    pairs: tuple
    images: tuple
    params: object


def measure_pair_batch(task: PairTask) -> tuple:
    """Records of the pairs of one task (None entries dropped), in order.

    Each image is read through a cache of ``params.cache_size`` images (all the
    task's images when None), so an image shared by consecutive pairs is read once.
    """
    images = {img.index: img for img in task.images}
    cache = _PixelCache(images, task.params.cache_size)
    shapes = _Shapes(images)
    records = []
    for a, b, ga, gb in task.pairs:
        rec = _pair_record(a, b, ga, gb, shapes, images, cache, task.params)
        if rec is not None:
            records.append(rec)
    return tuple(records)


class _Shapes:
    """``shapes[i]`` view of a dict of PairImage."""

    def __init__(self, images):
        self._images = images

    def __getitem__(self, i):
        return self._images[i].shape


def _measure_mapped(inputs, group_of_image, geometry, cand, params, mapper, per_task, slots):
    """Pairs measured by ``mapper`` in batches of consecutive pairs."""
    size = batch_size(len(cand), slots, per_task)
    tasks = []
    for start in range(0, len(cand), size):
        pairs = tuple(
            (int(a), int(b), int(group_of_image[a]), int(group_of_image[b]))
            for a, b in cand[start : start + size]
        )
        used = dict.fromkeys(i for p in pairs for i in p[:2])
        images = tuple(
            PairImage(
                i,
                inputs[i].name,
                tuple(inputs[i].shape),
                geometry[i].grid,
                geometry[i].inverse,
                geometry[i].footprint,
                inputs[i].load,
            )
            for i in used
        )
        tasks.append(PairTask(pairs, images, params))
    records = []
    for batch in mapper(measure_pair_batch, tasks) if tasks else ():
        for rec in batch:
            records.append(rec)
            _log_record(rec, inputs[rec.a].name, inputs[rec.b].name)
    return tuple(records)


class _PixelCache:
    """LRU cache of ``(data, good)`` per image; ``good`` excludes non-finite data.

    ``inputs[i]`` must have ``load`` and ``name`` (a list or a dict by index).
    """

    def __init__(self, inputs, size):
        self._inputs = inputs
        self._size = size
        self._store = OrderedDict()
        self.loads = 0

    def get(self, i):
        if i in self._store:
            self._store.move_to_end(i)
            return self._store[i]
        data, good = self._inputs[i].load()
        data = np.asarray(data)
        good = np.asarray(good, dtype=bool)
        if data.ndim != 2 or data.shape != good.shape:
            raise ValueError(f"{self._inputs[i].name}: data and mask must be 2-D of one shape")
        good = good & np.isfinite(data)
        self.loads += 1
        self._store[i] = (data, good)
        if self._size is not None:
            while len(self._store) > self._size:
                self._store.popitem(last=False)
        return data, good


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

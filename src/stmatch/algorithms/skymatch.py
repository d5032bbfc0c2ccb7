r"""Sky matching of overlapping images: local, global, match and global+match.

Semantics follow jwst ``skymatch`` (``stcal.skymatch``); see the step's docs for
where they deliberately differ:

* ``local``: each group's sky is the statistic of its own valid pixels;
* ``global``: the smallest local sky, applied to every group;
* ``match``: relative levels from pairwise differences in the overlaps, solved by
  weighted least squares on the overlap graph (:mod:`.skysolve`); in each
  connected component the lowest (``match_down``) or highest level is zero;
* ``global+match``: ``match``, then each component gets the baseline
  :math:`\min_g(\mathrm{local}_g - \Delta_g)` over its own members, so that the
  component's reference image gets its own sky (jwst uses one baseline for all).

A pair statistic uses only the pixels valid in *both* images: image ``a``'s pixels
inside the overlap whose centres fall on a valid pixel of ``b``, and vice versa.
The difference of the two statistics, :math:`d = s_a - s_b`, has variance
:math:`\sigma_a^2 + \sigma_b^2` from the statistics' own standard errors
(:mod:`.skystats`); it weights the pair in the solution.

Images are read through ``SkyInput.load`` callables with a small LRU cache, and
pairs are visited in reverse Cuthill–McKee order of the overlap graph, so that
with a bounded cache each image is read only a few times.

Given a ``mapper`` (``mapper(fn, items) -> list``, e.g. tasks on Dask workers),
the overlap statistics, and the local skies when the method needs them, are
computed by tasks that each receive only what they need (see
:mod:`.skypairs`); footprints, candidate pairs and the least-squares solution
stay with the caller. Each task runs the same arithmetic on the same pixels as
the in-process loop, so the results are identical.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .geometry import ImageGeometry
from .skypairs import PairRecord, _PixelCache, batch_size, measure_pairs
from .skysolve import solve_offsets
from .skystats import SkyStatistic

__all__ = [
    "LocalSkyTask",
    "PairRecord",
    "SkyInput",
    "SkyMatchParams",
    "SkyMatchResult",
    "local_sky_batch",
    "match_sky",
]

log = logging.getLogger(__name__)

SKYMETHODS = ("local", "global", "match", "global+match")


@dataclass(frozen=True)
class SkyInput:
    """One image for sky matching.

    Parameters
    ----------
    name : str
        Identifier used in logs and tables.
    shape : tuple of int
        ``(ny, nx)`` of the data.
    pixel_to_world : callable
        ``(x, y) -> (ra, dec)`` in degrees, vectorised, defined outside the image too.
    world_to_pixel : callable
        ``(ra, dec) -> (x, y)``, vectorised, defined outside the image too.
    load : callable
        ``() -> (data, good)``: the 2-D data and a boolean mask of usable pixels.
        Called whenever the pixels are needed; results are cached by :func:`match_sky`.
    group : hashable, optional
        Images with equal ``group`` share one sky level (detectors of one exposure).
        None puts the image in a group of its own.
    geometry : ImageGeometry, optional
        Precomputed :func:`~stmatch.algorithms.geometry.image_geometry`; when given,
        the WCS callables are not used (they may be None), so a caller can release
        WCS objects after computing it.
    """

    name: str
    shape: tuple
    pixel_to_world: Callable
    world_to_pixel: Callable
    load: Callable
    group: Hashable = None
    geometry: ImageGeometry | None = None


@dataclass(frozen=True)
class SkyMatchParams:
    """Parameters of :func:`match_sky`; validated on construction.

    Parameters
    ----------
    skymethod : {'match', 'global+match', 'local', 'global'}
    match_down : bool
        In ``match`` modes, the lowest (True) or highest (False) level of each
        component becomes the zero point.
    statistic : SkyStatistic
        Statistic used for local skies and for both sides of every overlap.
    stepsize : int or None
        Largest spacing in pixels of footprint outline vertices.
    grid_step : int
        Largest spacing in pixels of the exact world-coordinate grid used to map
        pixels between overlapping images (smaller images use a finer grid so that
        each axis has at least 17 nodes).
    min_pixels : int
        Fewest pixels valid in both images for a pair to be used.
    cache_size : int or None
        Number of images whose pixels are kept in memory at once (None: all).
    """

    skymethod: str = "match"
    match_down: bool = True
    statistic: SkyStatistic = field(default_factory=SkyStatistic)
    stepsize: int | None = None
    grid_step: int = 32
    min_pixels: int = 10
    cache_size: int | None = None

    def __post_init__(self):
        if self.skymethod not in SKYMETHODS:
            raise ValueError(f"skymethod must be one of {SKYMETHODS}, not {self.skymethod!r}")
        if not isinstance(self.statistic, SkyStatistic):
            raise TypeError("statistic must be a SkyStatistic")
        if self.stepsize is not None and self.stepsize <= 0:
            raise ValueError("stepsize must be positive or None")
        if self.grid_step < 1:
            raise ValueError("grid_step must be at least 1")
        if self.min_pixels < 1:
            raise ValueError("min_pixels must be at least 1")
        if self.cache_size is not None and self.cache_size < 2:
            raise ValueError("cache_size must be at least 2 or None")


@dataclass(frozen=True)
class SkyMatchResult:
    """Sky levels of every group and the record of how they were obtained.

    Attributes
    ----------
    method : str
    group_of_image : numpy.ndarray
        Group index of each input image.
    group_keys : tuple
        Group identifier of each group (the input ``group``, or the image name).
    level : numpy.ndarray
        Sky level of each group: the value to subtract from its images.
    level_err : numpy.ndarray
        1-σ uncertainty of ``level`` (relative to the component's anchor in
        ``match``; includes the baseline's error in ``global+match``).
    local_sky : numpy.ndarray
        Each group's own statistic (NaN when not computed or not computable).
    component : numpy.ndarray
        Connected component of each group (-1 for methods without matching).
    n_pairs : numpy.ndarray
        Number of used pairs involving each group.
    valid : numpy.ndarray
        Whether a level could be determined for each group.
    reason : tuple of str
        Why a group is not valid (empty when valid).
    pairs : tuple of PairRecord
    components : tuple of ComponentSolution
    n_candidates : int
        Candidate pairs from the spatial index (before exact overlap tests).
    """

    method: str
    group_of_image: np.ndarray
    group_keys: tuple
    level: np.ndarray
    level_err: np.ndarray
    local_sky: np.ndarray
    component: np.ndarray
    n_pairs: np.ndarray
    valid: np.ndarray
    reason: tuple
    pairs: tuple = ()
    components: tuple = ()
    n_candidates: int = 0

    @property
    def image_level(self) -> np.ndarray:
        """Sky level of each input image (its group's level)."""
        return self.level[self.group_of_image]

    @property
    def n_components(self) -> int:
        """Number of connected components (0 without matching)."""
        return len(self.components)


def _groups(inputs):
    keys = []
    index = {}
    of_image = np.empty(len(inputs), dtype=np.intp)
    for i, inp in enumerate(inputs):
        key = inp.group if inp.group is not None else ("__image__", i)
        if key not in index:
            index[key] = len(keys)
            keys.append(inp.group if inp.group is not None else inp.name)
        of_image[i] = index[key]
    return of_image, tuple(keys)


def match_sky(
    inputs: Sequence[SkyInput],
    params: SkyMatchParams | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    mapper: Callable[[Callable, list], list] | None = None,
    pairs_per_task: int | None = None,
    task_slots: int | None = None,
) -> SkyMatchResult:
    """Compute sky levels of images (or groups of images) by the chosen method.

    Parameters
    ----------
    inputs : sequence of SkyInput
        The images. Their arrays are never modified.
    params : SkyMatchParams, optional
    progress : callable, optional
        ``progress(done, total)`` called while pairs are measured in this process
        (not with a ``mapper``, which reports its own progress).
    mapper : callable, optional
        ``mapper(fn, items) -> list`` returning ``[fn(item) for item in items]`` in
        order, possibly in other processes: then ``fn`` is a module-level function
        and the items are picklable as long as the inputs' ``load`` callables and
        geometry (including a world -> pixel fallback inverse) are. None (the
        default) measures everything here, reading images through one LRU cache
        of ``params.cache_size`` images.
    pairs_per_task : int, optional
        Candidate pairs per task with a ``mapper`` (None: about four tasks per
        task slot, at most 64 pairs each; see :func:`.skypairs.batch_size`).
    task_slots : int, optional
        Tasks the ``mapper`` runs at once (workers x threads), for the automatic
        task size.

    Returns
    -------
    SkyMatchResult
    """
    params = params or SkyMatchParams()
    inputs = list(inputs)
    if not inputs:
        raise ValueError("no images to sky-match")
    if pairs_per_task is not None:
        batch_size(1, task_slots, pairs_per_task)  # validates it
    group_of_image, keys = _groups(inputs)
    ngroups = len(keys)
    cache = _PixelCache(inputs, params.cache_size)
    method = params.skymethod
    do_match = "match" in method
    need_local = method != "match"

    reason = [""] * ngroups
    pairs: tuple = ()
    comps: tuple = ()
    n_candidates = 0
    component = np.full(ngroups, -1, dtype=np.intp)
    n_pairs = np.zeros(ngroups, dtype=np.intp)
    delta = np.zeros(ngroups)
    delta_err = np.zeros(ngroups)
    matched = np.zeros(ngroups, dtype=bool)

    if do_match:
        t0 = time.perf_counter()
        pairs, n_candidates, bad_wcs = measure_pairs(
            inputs,
            group_of_image,
            params,
            cache,
            progress,
            mapper=mapper,
            pairs_per_task=pairs_per_task,
            task_slots=task_slots,
        )
        for g, why in bad_wcs.items():
            reason[g] = why
        used = [p for p in pairs if p.used]
        log.info(
            "Measured %d overlapping pairs (%d used) from %d candidates in %.2f s",
            len(pairs),
            len(used),
            n_candidates,
            time.perf_counter() - t0,
        )
        sol = solve_offsets(
            ngroups,
            [p.group_a for p in used],
            [p.group_b for p in used],
            [p.diff for p in used],
            [p.diff_err**2 for p in used],
            anchor="min" if params.match_down else "max",
        )
        residual = iter(sol.residuals)
        pairs = tuple(replace(p, residual=float(next(residual))) if p.used else p for p in pairs)
        delta, delta_err, component = sol.levels, sol.errors, sol.component
        for p in used:
            n_pairs[p.group_a] += 1
            n_pairs[p.group_b] += 1
        matched = n_pairs > 0
        comps = sol.components
        for g in np.flatnonzero(~matched):
            if not reason[g]:
                reason[g] = "no overlap with another image that has valid pixels in both"

    local = np.full(ngroups, math.nan)
    local_err = np.full(ngroups, math.nan)
    if need_local and mapper is not None:
        local, local_err = _local_skies_mapped(
            inputs, group_of_image, ngroups, params, mapper, task_slots
        )
    elif need_local:
        local, local_err = _local_skies(inputs, group_of_image, ngroups, params, cache)

    level = np.zeros(ngroups)
    level_err = np.zeros(ngroups)
    valid = np.zeros(ngroups, dtype=bool)
    if method == "local":
        valid = np.isfinite(local)
        level = np.where(valid, local, 0.0)
        level_err = np.where(valid, local_err, math.nan)
        for g in np.flatnonzero(~valid):
            reason[g] = reason[g] or "no valid pixels for the sky statistic"
    elif method == "global":
        ok = np.isfinite(local)
        if ok.any():
            g0 = int(np.flatnonzero(ok)[np.argmin(local[ok])])
            level[:] = local[g0]
            level_err[:] = local_err[g0]
            valid[:] = True
        else:
            reason = ["no image has valid pixels for the sky statistic"] * ngroups
    elif method == "match":
        level = delta
        level_err = delta_err
        valid = matched
    else:  # global+match: each component gets its own baseline
        for comp in comps:
            members = comp.members
            base_terms = local[members] - delta[members]
            ok = np.isfinite(base_terms)
            if not ok.any():
                for g in members:
                    reason[g] = reason[g] or "no valid pixels for the baseline sky"
                continue
            k = int(np.flatnonzero(ok)[np.argmin(base_terms[ok])])
            base = base_terms[k]
            level[members] = delta[members] + base
            level_err[members] = np.hypot(delta_err[members], local_err[members[k]])
            valid[members] = True
        for g in np.flatnonzero(valid):
            if reason[g].startswith("no overlap"):
                reason[g] = ""
    reason = tuple(r if not valid[g] else "" for g, r in enumerate(reason))
    return SkyMatchResult(
        method=method,
        group_of_image=group_of_image,
        group_keys=keys,
        level=level,
        level_err=level_err,
        local_sky=local,
        component=component,
        n_pairs=n_pairs,
        valid=valid,
        reason=reason,
        pairs=pairs,
        components=comps,
        n_candidates=n_candidates,
    )


def _local_skies(inputs, group_of_image, ngroups, params, cache):
    """Statistic of each group's valid pixels, all member images together."""
    local = np.full(ngroups, math.nan)
    err = np.full(ngroups, math.nan)
    for g in range(ngroups):
        members = np.flatnonzero(group_of_image == g)
        values = []
        for i in members:
            data, good = cache.get(int(i))
            values.append(data[good])
        res = params.statistic(np.concatenate(values) if len(values) > 1 else values[0])
        if res.valid:
            local[g] = res.value
            err[g] = res.error
    return local, err


@dataclass(frozen=True)
class LocalSkyTask:
    """Groups whose local sky one task computes.

    Attributes
    ----------
    groups : tuple
        ``(group index, ((name, load), ...))`` per group: its member images.
    statistic : SkyStatistic
    """

    groups: tuple
    statistic: SkyStatistic


def local_sky_batch(task: LocalSkyTask) -> tuple:
    """``(group, value, error)`` of each group of a task (NaN when not computable).

    The statistic of all valid, finite pixels of a group's images together, as in
    the in-process computation.
    """
    out = []
    for g, members in task.groups:
        images = [_Loadable(name, load) for name, load in members]
        cache = _PixelCache(images, 1)
        values = []
        for i in range(len(images)):
            data, good = cache.get(i)
            values.append(data[good])
        res = task.statistic(np.concatenate(values) if len(values) > 1 else values[0])
        out.append((g, res.value, res.error) if res.valid else (g, math.nan, math.nan))
    return tuple(out)


@dataclass(frozen=True)
class _Loadable:
    name: str
    load: Callable


def _local_skies_mapped(inputs, group_of_image, ngroups, params, mapper, task_slots):
    """:func:`_local_skies` with groups measured by ``mapper`` in batches."""
    groups = [
        (g, tuple((inputs[i].name, inputs[i].load) for i in np.flatnonzero(group_of_image == g)))
        for g in range(ngroups)
    ]
    size = batch_size(ngroups, task_slots)
    tasks = [
        LocalSkyTask(tuple(groups[k : k + size]), params.statistic) for k in range(0, ngroups, size)
    ]
    local = np.full(ngroups, math.nan)
    err = np.full(ngroups, math.nan)
    for batch in mapper(local_sky_batch, tasks):
        for g, value, error in batch:
            local[g] = value
            err[g] = error
    return local, err

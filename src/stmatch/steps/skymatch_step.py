"""SkyMatchStep: equalise the sky of overlapping exposures.

Parity with jwst 3.0 ``SkyMatchStep`` (same parameters, same meaning, results in
``meta.background``), plus: candidate pairs from a spatial index, statistics on
pixels valid in both images, noise-weighted sparse least squares with an
uncertainty per level, connected components solved and anchored separately, a
solution table and an optional QA figure. With ``scheduler`` set, the overlap
statistics (and local skies) run as Dask tasks. See ``docs/skymatch.rst``.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
from astropy.nddata.bitmask import interpret_bit_flags
from stdatamodels.jwst.datamodels.dqflags import pixel as DQ_PIXEL
from threadpoolctl import threadpool_limits

from ..algorithms import SkyInput, SkyMatchParams, SkyStatistic, match_sky
from ..algorithms.geometry import image_geometry
from ..algorithms.skymatch import local_sky_batch
from ..algorithms.skypairs import measure_pair_batch
from . import _skymatch_io as io
from ._base import StmatchStep
from ._engine import SCHEDULER_SPEC, open_engine, scheduler_kind
from ._sky_sources import (
    ArraySource,
    FileSource,
    WcsInverse,
    file_members,
    fits_layout,
    good_pixels,
)

__all__ = ["SkyMatchStep"]

log = logging.getLogger("stmatch.steps.skymatch")


class SkyMatchStep(StmatchStep):
    """Subtract or equalise the sky background of overlapping images.

    Parameters are those of jwst's ``SkyMatchStep`` plus a few of our own (see the
    spec). Run it on an association, a ``ModelLibrary``, or a list of models or
    files; each output model gets ``meta.background.level``, ``.subtracted`` and
    ``.method``, ``meta.cal_step.stmatch_skymatch``, and ``meta.stmatch`` with the
    level's uncertainty, connected component and number of pairs. After a run,
    ``step.solution`` holds the :class:`~stmatch.models.SkyMatchSolutionModel`.
    """

    class_alias = "stmatch_skymatch"

    spec = f"""
        # General sky matching parameters (as in jwst):
        skymethod = option('local', 'global', 'match', 'global+match', 'user', default='match') # sky computation method
        match_down = boolean(default=True) # adjust sky to lowest measured value?
        subtract = boolean(default=False) # subtract computed sky from image data?
        skylist = string(default=None) # Filename pointing to list of (imagename skyval) pairs
        # Image's bounding polygon parameters:
        stepsize = integer(default=None) # Max vertex separation
        # Sky statistics parameters:
        skystat = option('median', 'midpt', 'mean', 'mode', default='mode') # sky statistics
        dqbits = string(default='~DO_NOT_USE+NON_SCIENCE') # "good" DQ bits
        lower = float(default=None) # Lower limit of "good" pixel values
        upper = float(default=None) # Upper limit of "good" pixel values
        nclip = integer(min=0, default=5) # number of sky clipping iterations
        lsigma = float(min=0.0, default=4.0) # Lower clipping limit, in sigma
        usigma = float(min=0.0, default=4.0) # Upper clipping limit, in sigma
        binwidth = float(min=0.0, default=0.1) # Bin width for 'mode' and 'midpt' `skystat`, in sigma
        # Memory management:
        in_memory = boolean(default=True) # If False, preserve memory using temporary files
        # stmatch additions:
        min_overlap_pixels = integer(min=1, default=10) # fewest pixels valid in both images for a pair to count
        grid_step = integer(min=1, default=32) # largest spacing (pixels) of exact WCS evaluations when mapping overlaps
        cache_size = integer(min=2, default=16) # images whose pixels and masks are held at once while measuring overlaps
        save_solution = boolean(default=True) # write the solution table (ASDF + ECSV) beside saved outputs
        save_qa = boolean(default=False) # write a QA figure (PNG) of footprints, levels and the overlap graph
        output_use_model = boolean(default=True) # name outputs after each input model
        # Distributed work (Dask):
        {SCHEDULER_SPEC}
        pairs_per_task = integer(min=1, default=None) # overlap pairs per task on Dask (None: about 4 tasks per task slot, at most 64 pairs)
    """  # noqa: E501

    def process(self, input_models):
        """Compute sky levels and record (or subtract) them.

        Parameters
        ----------
        input_models : str, Path, ModelLibrary, list of DataModel or list of str
            An association file, a library, or a list of models or file names.

        Returns
        -------
        ModelLibrary
            The input models with sky information recorded.
        """
        self._solution = None
        self._solution_parts = None
        distributed = scheduler_kind(self.scheduler) != "in-process"  # bad values: ValueError
        library = io.open_library(self, input_models)
        n = len(library)
        if n == 0:
            raise ValueError("SkyMatchStep received no images")
        log.info(
            "Sky matching %d image(s) with skymethod=%r, skystat=%r",
            n,
            self.skymethod,
            self.skystat,
        )
        if self.skymethod == "user":
            return io.apply_user_sky(self, library)

        dqbits = interpret_bit_flags(self.dqbits, flag_name_map=DQ_PIXEL)
        statistic = SkyStatistic(
            self.skystat,
            lower=self.lower,
            upper=self.upper,
            nclip=self.nclip,
            lsigma=self.lsigma,
            usigma=self.usigma,
            binwidth=self.binwidth,
        )
        params = SkyMatchParams(
            skymethod=self.skymethod,
            match_down=self.match_down,
            statistic=statistic,
            stepsize=self.stepsize,
            grid_step=self.grid_step,
            min_pixels=self.min_overlap_pixels,
            cache_size=self.cache_size,
        )
        # Files that hold their members' content, known before anything is borrowed:
        # tasks read them, and so does this process when the library is on disk
        # (reading two arrays is far cheaper than opening the datamodel again).
        files = file_members(library) if (distributed or not self.in_memory) else None
        with library:
            inputs, previous = self._sky_inputs(library, dqbits, files, picklable=distributed)
            if "match" in self.skymethod and len({i.group for i in inputs}) < 2:
                log.warning("Only one image (group): nothing to match; step SKIPPED")
                return io.mark_all(self, library, "SKIPPED")
            log.info(
                "Stage 1/3: footprints and candidate pairs; stage 2/3: overlap "
                "statistics; stage 3/3: solution"
            )
            engine = open_engine(self.scheduler) if distributed else contextlib.nullcontext()
            # The matrix products here are small: multi-threaded BLAS gains nothing
            # and, when another process holds a core, its spinning threads cost 4x.
            with engine, threadpool_limits(limits=1, user_api="blas"):
                if not distributed:
                    result = match_sky(inputs, params, progress=_progress_logger())
                else:
                    result = match_sky(
                        inputs,
                        params,
                        mapper=_engine_mapper(engine),
                        pairs_per_task=self.pairs_per_task,
                        task_slots=engine.n_workers,
                    )
        io.log_solution(result, inputs)
        io.apply_result(self, library, inputs, result, previous)
        self._solution_parts = (library, inputs, result)
        io.save_products(self, library, inputs, result)
        return library

    @property
    def solution(self):
        """The :class:`~stmatch.models.SkyMatchSolutionModel` of the last run (or None).

        Built on first access, so runs that never look at it do not pay for it.
        """
        if getattr(self, "_solution", None) is None and getattr(self, "_solution_parts", None):
            self._solution = io.solution_model(self, *self._solution_parts)
        return getattr(self, "_solution", None)

    def _sky_inputs(self, library, dqbits, files=None, *, picklable=False):
        """SkyInput per model (arrays loaded lazily) and previous background levels.

        ``files`` (``{index: path}``): members read with a :class:`FileSource`
        (identical arrays, without opening the datamodel). The others are
        borrowed from the library when they are needed, or, with ``picklable``
        (tasks on Dask), held in an :class:`ArraySource`; ``picklable`` also
        gives a picklable exact inverse.
        """
        need_geometry = "match" in self.skymethod or self.save_qa
        group_of = {}
        for gid, indices in library.group_indices.items():
            for i in indices:
                group_of[i] = gid
        inputs, previous = [], []
        for i in range(len(library)):
            model = library.borrow(i)
            try:
                name = model.meta.filename or f"image_{i}"
                data = model.data
                if data is None or np.ndim(data) != 2:
                    raise ValueError(
                        f"{name}: SkyMatchStep needs 2-D image data, got "
                        f"{None if data is None else np.shape(data)}"
                    )
                previous.append(io.previous_level(model, self.subtract))
                shape = tuple(int(s) for s in data.shape)
                # Only matching needs the WCS: its geometry is computed now, while
                # the model is open, and the WCS object is not kept (large mosaics).
                geometry = None
                if need_geometry:
                    fwd, inv = io.wcs_callables(model)
                    if picklable and model.meta.wcs is not None:
                        inv = WcsInverse(model.meta.wcs)  # same arithmetic, picklable
                    geometry = image_geometry(
                        shape, fwd, inv, stepsize=self.stepsize, grid_step=self.grid_step
                    )
                if files is not None and i in files:
                    load = FileSource(files[i], dqbits, fits_layout(model, files[i]))
                elif picklable:
                    load = ArraySource(data, good_pixels(model, dqbits))
                else:
                    load = _loader(library, i, dqbits)
            finally:
                library.shelve(model, i, modify=False)
            inputs.append(
                SkyInput(
                    name,
                    shape,
                    None,
                    None,
                    load,
                    group=str(group_of.get(i, name)),
                    geometry=geometry,
                )
            )
        return inputs, previous


def _loader(library, index, dqbits):
    """Return a callable giving (data, good) of one library member."""

    def load():
        model = library.borrow(index)
        try:
            data = model.data
            # NaNs are excluded by the algorithm itself; here only the DQ selection.
            good = good_pixels(model, dqbits)
        finally:
            library.shelve(model, index, modify=False)
        return data, good

    return load


def _progress_logger():
    def progress(done, total):
        if total >= 50:
            log.info("  overlap statistics: %d / %d candidate pairs", done, total)

    return progress


_TASK_NAMES = {measure_pair_batch: "stmatch-skypairs", local_sky_batch: "stmatch-skylocal"}


def _engine_mapper(engine):
    """``mapper(fn, items)`` for match_sky: tasks on ``engine``, logged by kind."""

    def mapper(fn, items):
        items = list(items)
        if fn is measure_pair_batch:
            n = sum(len(task.pairs) for task in items)
            what, unit = "overlap statistics", "candidate pairs"
            log.info(
                "Stage 2/3: overlap statistics of %d candidate pairs in %d task(s) on %s",
                n,
                len(items),
                engine.description,
            )
        else:
            n = sum(len(task.groups) for task in items)
            what, unit = "local skies", "groups"
            log.info(
                "Local skies of %d group(s) in %d task(s) on %s",
                n,
                len(items),
                engine.description,
            )
        progress = _task_progress(what, unit, n) if n >= 50 else None
        return engine.map(fn, items, name=_TASK_NAMES.get(fn, "stmatch-sky"), progress=progress)

    return mapper


def _task_progress(what, unit, n):
    """Progress lines about every tenth of the tasks."""

    def progress(done, total):
        if done == total or done % max(1, total // 10) == 0:
            log.info("  %s: %d / %d tasks (%d %s)", what, done, total, n, unit)

    return progress

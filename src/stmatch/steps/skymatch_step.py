"""SkyMatchStep: equalise the sky of overlapping exposures.

Parity with jwst 3.0 ``SkyMatchStep`` (same parameters, same meaning, results in
``meta.background``), plus: candidate pairs from a spatial index, statistics on
pixels valid in both images, noise-weighted sparse least squares with an
uncertainty per level, connected components solved and anchored separately, a
solution table and an optional QA figure. See ``docs/skymatch.rst``.
"""

from __future__ import annotations

import logging

import numpy as np
from astropy.nddata.bitmask import bitfield_to_boolean_mask, interpret_bit_flags
from stdatamodels.jwst.datamodels.dqflags import pixel as DQ_PIXEL
from threadpoolctl import threadpool_limits

from ..algorithms import SkyInput, SkyMatchParams, SkyStatistic, match_sky
from ..algorithms.geometry import image_geometry
from . import _skymatch_io as io
from ._base import StmatchStep

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

    spec = """
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
        with library:
            inputs, previous = self._sky_inputs(library, dqbits)
            if "match" in self.skymethod and len({i.group for i in inputs}) < 2:
                log.warning("Only one image (group): nothing to match; step SKIPPED")
                return io.mark_all(self, library, "SKIPPED")
            log.info(
                "Stage 1/3: footprints and candidate pairs; stage 2/3: overlap "
                "statistics; stage 3/3: solution"
            )
            # The matrix products here are small: multi-threaded BLAS gains nothing
            # and, when another process holds a core, its spinning threads cost 4x.
            with threadpool_limits(limits=1, user_api="blas"):
                result = match_sky(inputs, params, progress=_progress_logger())
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

    def _sky_inputs(self, library, dqbits):
        """SkyInput per model (arrays loaded lazily) and previous background levels."""
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
                    geometry = image_geometry(
                        shape, fwd, inv, stepsize=self.stepsize, grid_step=self.grid_step
                    )
            finally:
                library.shelve(model, i, modify=False)
            inputs.append(
                SkyInput(
                    name,
                    shape,
                    None,
                    None,
                    _loader(library, i, dqbits),
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
            if dqbits is None or model.dq is None or np.shape(model.dq) != np.shape(data):
                good = np.ones(np.shape(data), dtype=bool)
            else:
                good = bitfield_to_boolean_mask(model.dq, dqbits, good_mask_value=True, dtype=bool)
        finally:
            library.shelve(model, index, modify=False)
        return data, good

    return load


def _progress_logger():
    def progress(done, total):
        if total >= 50:
            log.info("  overlap statistics: %d / %d candidate pairs", done, total)

    return progress

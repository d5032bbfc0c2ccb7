r"""BackgroundMatchStep: make the backgrounds of exposures agree with one reference.

For every exposure :math:`S` and the reference :math:`R` on the reference's pixel
grid, a smooth surface :math:`M` is fitted to the difference :math:`R - S` on the
good pixels (binned statistics, then a Chebyshev polynomial or a spline through
the bins) and added to the exposure, :math:`S' = S + M`. Light common to both
(stars, diffuse emission) cancels in the difference and is kept. See
``docs/bgmatch.rst``; the numerics are in :mod:`stmatch.algorithms.bgmatch_grid`
and :mod:`stmatch.algorithms.bgmatch_fit`.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from ..algorithms.bgmatch_fit import match_background
from ..algorithms.bgmatch_grid import bin_difference, match_diagnostics, reference_scores
from ..models import BackgroundModel
from . import _bgmatch_io as io
from ._base import StmatchStep, unvalidated

__all__ = ["BackgroundMatchStep"]

log = logging.getLogger("stmatch.steps.bgmatch")


class BackgroundMatchStep(StmatchStep):
    r"""Match the smooth background of every exposure to a reference exposure.

    Run it on an association, a ``ModelLibrary``, or a list of models or files:
    ``strun stmatch_bgmatch asn.json`` or ``BackgroundMatchStep.call(library)``.

    **Reference.** ``reference`` names it (member file name, with or without the
    suffix, or an index), or it is the exposure with the lowest score
    :math:`w_v V/V_\max + w_l |L|/|L|_\max + w_c N_\min/N` over the readable
    exposures, with the mean variance :math:`V` (variance arrays, else the
    clipped pixel variance), the clipped median level :math:`L` and the number of
    good pixels :math:`N`; weights ``best_ref_weight_variance``,
    ``best_ref_weight_level`` and ``best_ref_weight_coverage``. Unreadable
    candidates are skipped with a warning.

    **Fit.** Exposures not on the reference grid are resampled onto it with their
    GWCS (``resample_method``; only for the fit). The difference reference −
    exposure is binned (``bin_size``, ``grid_statistic``, ``nsigma_clip``,
    ``niter``, ``min_bin_pixels``) over the pixels good in both: not NaN and not
    flagged with any of ``bad_mask_planes``; with ``detect_sources`` also pixels
    more than ``source_threshold`` clipped standard deviations from their bin's
    clipped mean (``MEANCLIP`` bins, whatever ``grid_statistic``), grown by
    ``source_grow`` pixels: light that only one of the two exposures has
    (transients, artefacts, resampling residuals of stars). This costs one more
    binning pass; ``MEANCLIP`` already rejects most such pixels bin by bin. A Chebyshev
    polynomial (``use_polynomial``, ``order``, ``approx_weighting``,
    ``grid_stdev_epsilon``) or a spline (``interp_style``) is fitted;
    ``undersample_style`` says what to do with too few bins.

    **Apply.** The model is evaluated on the exposure's own pixels (directly on
    the reference grid; otherwise each exposure pixel is mapped to the reference
    grid with the two GWCS, clamped to its edges so that a polynomial is never
    extrapolated, on nodes a sixteenth of a bin apart, at most 16 px, with
    bilinear interpolation in between; for per-pixel units the model is divided
    by the pixel-area ratio) and added to ``data`` (float32). With
    ``add_model_variance`` the model's variance (its 1σ uncertainty squared, a
    systematic error common to the whole exposure; evaluated every quarter of a
    bin, at most 64 px, and interpolated) is added to ``var_flat``, the
    variance array of calibration errors, and ``err`` becomes the square root of
    the sum of the variance arrays (or :math:`\sqrt{err^2 + \sigma_M^2}` when the
    exposure has only ``err``).

    **meta.background.** With data' = data + M, SkyMatch-style levels compose:
    when ``subtracted`` is False, the sky still in the data is
    ``level + mean(M)`` and that is recorded; when it is True, the background
    removed from the original data is ``level - mean(M)``. Without a recorded
    level nothing is changed. ``meta.stmatch.steps.stmatch_bgmatch`` holds the
    reference, the mean model, the diagnostics, the status and the reason.

    **Quality.** ``fit_rms`` (RMS of bin value − model), ``matched_mse``
    (mean of (reference − matched)²) and ``diffim_var`` (mean variance of the
    difference from the variance arrays, else a clipped estimate) are measured on
    the reference grid over the pixels used by the fit (every s-th row of images
    above 4 million pixels). A match with ``matched_mse / diffim_var > max_mse_ratio``
    or ``fit_rms > max_fit_rms`` fails its quality gate: ``on_failure='flag'``
    applies the model and records the reason, ``'skip'`` leaves the exposure
    unchanged (SKIPPED). An exposure that cannot be matched (no overlap with the
    reference, every pixel masked, a bin larger than the image, too few bins with
    ``THROW_EXCEPTION``, a missing WCS with another shape) is SKIPPED with the
    reason while the others go on; a single exposure is SKIPPED (nothing to
    match). ``meta.cal_step.stmatch_bgmatch`` is COMPLETE or SKIPPED.

    **Products.** Matched exposures get the suffix ``bgmatch``. Per exposure a
    :class:`~stmatch.models.BackgroundModel` (``<exposure>_bgmatch_model.asdf``,
    with ``save_models``) that re-evaluates the model, a summary table
    (``<product>_bgmatch_summary.ecsv``) and, with ``save_qa``, a figure of the
    bin values, the model and the residuals (``<exposure>_bgmatch_qa.png``).
    After a run ``step.background_models`` and ``step.summary`` hold them. Inputs
    on disk are never modified. The reference is COMPLETE with a zero model.

    References: binned background surfaces as in Bosch et al. (2018), PASJ 70,
    S5; Chebyshev surfaces, Press et al., *Numerical Recipes* (3rd ed.), §5.8 and
    §15.4; Akima (1970), J. ACM 17, 589.
    """

    class_alias = "stmatch_bgmatch"

    spec = """
        reference = pass(default=None) # reference exposure: member file name (or stem) or index; default automatic
        best_ref_weight_variance = float(min=0.0, default=0.4) # weight of the mean variance in the reference score
        best_ref_weight_level = float(min=0.0, default=0.2) # weight of the background level in the reference score
        best_ref_weight_coverage = float(min=0.0, default=0.4) # weight of the good-pixel coverage in the reference score
        bad_mask_planes = string_list(default=list('DO_NOT_USE', 'SATURATED', 'JUMP_DET', 'NON_SCIENCE', 'OUTLIER')) # DQ planes of pixels left out of the fit
        detect_sources = boolean(default=False) # also mask pixels that stand out in the difference (one more binning pass)
        source_threshold = float(min=0.0, default=5.0) # detection threshold in bin standard deviations
        source_grow = integer(min=0, default=2) # grow detections by this many pixels
        bin_size = integer(min=1, default=256) # bin size (pixels) of the difference statistics
        grid_statistic = option('MEANCLIP', 'MEAN', 'MEDIAN', default='MEANCLIP') # bin statistic
        nsigma_clip = float(min=0.5, default=3.0) # clipping limit of MEANCLIP (sigma)
        niter = integer(min=1, default=3) # clipping passes of MEANCLIP
        min_bin_pixels = integer(min=2, default=5) # bins with fewer good pixels are empty
        use_polynomial = boolean(default=False) # Chebyshev polynomial (True) or spline (False)
        order = integer(min=0, default=8) # polynomial order (terms i + j <= order)
        approx_weighting = boolean(default=True) # weight the polynomial fit by the bin errors
        grid_stdev_epsilon = float(min=0.0, default=1e-8) # weighting off when every bin stdev is below this
        interp_style = option('AKIMA_SPLINE', 'NATURAL_SPLINE', 'LINEAR', 'CONSTANT', 'NONE', default='AKIMA_SPLINE') # spline style
        undersample_style = option('REDUCE_INTERP_ORDER', 'THROW_EXCEPTION', 'INCREASE_NXNYSAMPLE', default='REDUCE_INTERP_ORDER') # what to do with too few bins
        max_mse_ratio = float(min=0.0, default=1.1) # quality gate on matched_mse / diffim_var (None: off)
        max_fit_rms = float(min=0.0, default=None) # quality gate on the RMS of bin value - model (None: off)
        on_failure = option('flag', 'skip', default='flag') # a failed gate: apply and flag, or leave the exposure unchanged
        add_model_variance = boolean(default=True) # add the model's variance to var_flat (and err)
        resample_method = option('lanczos3', 'lanczos2', 'lanczos4', 'bilinear', default='lanczos3') # interpolation when resampling onto the reference grid
        in_memory = boolean(default=True) # If False, preserve memory using temporary files
        save_models = boolean(default=True) # write the background models (ASDF) and the summary (ECSV) beside saved outputs
        save_qa = boolean(default=False) # write a QA figure (PNG) per exposure
        output_use_model = boolean(default=True) # name outputs after each input model
    """  # noqa: E501

    def process(self, input_models):
        """Match the backgrounds of the exposures to the reference.

        Parameters
        ----------
        input_models : str, Path, ModelLibrary, list of DataModel or list of str
            An association file, a library, or a list of models or file names.

        Returns
        -------
        ModelLibrary
            The exposures, matched (or left unchanged where SKIPPED).
        """
        self.background_models, self.summary = [], None
        library = io.open_library(self, input_models)
        n = len(library)
        if n == 0:
            raise ValueError("BackgroundMatchStep received no exposures")
        names = io.member_names(library)
        bits = io.dq_bits(self.bad_mask_planes)
        log.info("Background matching of %d exposure(s)", n)
        if n == 1:
            reason = "only one exposure: nothing to match"
            log.warning("%s; step SKIPPED", reason.capitalize())
            return io.mark_all(self, library, "SKIPPED", reason)

        log.info("Stage 1/3: reference exposure")
        with library:
            ref_index = self._choose_reference(library, names, bits)
        if ref_index is None:
            reason = "no exposure can serve as the reference (none is readable)"
            log.warning("%s; step SKIPPED", reason.capitalize())
            return io.mark_all(self, library, "SKIPPED", reason)
        with library:
            ref_model = library.borrow(ref_index)
            try:
                ref = io.read_exposure(ref_model, bits, names[ref_index])
                self._ref_var_rows = ref.variance(io.diagnostic_rows(ref.shape))
            finally:
                library.shelve(ref_model, ref_index, modify=False)
        ref.model = None  # the arrays it needs are kept; the model goes back to the library
        if np.all(ref.bad):
            raise ValueError(f"the reference {ref.name} has no usable pixel")

        log.info("Stage 2/3: matching %d exposure(s) to %s", n - 1, ref.name)
        products = []
        with library:
            for i in range(n):
                model = library.borrow(i)
                try:
                    products.append(self._process_one(model, i, ref_index, ref, names[i], bits))
                finally:
                    library.shelve(model, i)

        log.info("Stage 3/3: outputs")
        self.background_models = products
        self.summary = io.summary_table(products, ref.name)
        io.save_products(self, products, self.summary, io.product_name(library, names))
        n_done = sum(p.meta.bgmatch.status == "COMPLETE" for p in products)
        n_flag = sum(bool(p.meta.bgmatch.flagged) for p in products)
        log.info(
            "Matched %d of %d exposure(s) to %s (%d flagged, %d skipped)",
            n_done - 1,
            n - 1,
            ref.name,
            n_flag,
            n - n_done,
        )
        return library

    # ------------------------------------------------------------------ reference
    def _choose_reference(self, library, names, bits):
        index = io.resolve_reference(self.reference, names)
        if index is not None:
            log.info("Reference: %s (given as %r)", names[index], self.reference)
            return index
        stats = []
        for i in range(len(library)):
            model = library.borrow(i)
            try:
                stats.append(io.exposure_statistics(model, bits, names[i]))
            except (ValueError, OSError) as exc:
                log.warning("%s cannot be a reference candidate: %s", names[i], exc)
                stats.append((None, None, None))
            finally:
                library.shelve(model, i, modify=False)
        var, level, npix = zip(*stats, strict=True)
        try:
            scores = reference_scores(
                var,
                level,
                npix,
                weight_variance=self.best_ref_weight_variance,
                weight_level=self.best_ref_weight_level,
                weight_coverage=self.best_ref_weight_coverage,
            )
        except ValueError as exc:
            if "readable" in str(exc):
                return None
            raise
        for i, s in enumerate(scores):
            if np.isfinite(s):
                log.debug(
                    "  %-40s score %.4f (variance %.4g, level %.4g, %d good pixels)",
                    names[i], s, var[i], level[i], npix[i],
                )  # fmt: skip
        index = int(np.argmin(scores))
        log.info(
            "Reference: %s (lowest score %.4f: variance %.4g, level %.4g, %d good pixels)",
            names[index], scores[index], var[index], level[index], npix[index],
        )  # fmt: skip
        return index

    # ------------------------------------------------------------------ one exposure
    def _process_one(self, model, index, ref_index, ref, name, bits):
        """Match one exposure (or record the reference); return its product."""
        shape = np.shape(model.data) if model.data is not None else ()
        shape = tuple(int(s) for s in shape) if len(shape) == 2 and min(shape) > 0 else ref.shape
        info = {"exposure": name, "reference": ref.name, "is_reference": index == ref_index}
        if index == ref_index:
            info.update(status="COMPLETE", flagged=False, reason="reference exposure",
                        mean_model=0.0, resampled=False)  # fmt: skip
            product = BackgroundModel.empty(ref.shape, bgmatch=info)
            self._record(model, product, None, None)
            log.info("  %-40s reference", name)
            return product
        try:
            exp = io.read_exposure(model, bits, name)
            fit, diag, placement, extra, on_ref = self._fit(ref, exp)
        except ValueError as exc:
            reason = str(exc)
            log.warning("  %-40s SKIPPED: %s", name, reason)
            info.update(status="SKIPPED", flagged=False, reason=reason, resampled=False)
            product = BackgroundModel.empty(shape, bgmatch=info)
            self._record(model, product, None, None)
            return product
        failures = io.quality_failures(fit, diag, self)
        skip = bool(failures) and self.on_failure == "skip"
        reason = ""
        if failures:
            action = "exposure left unchanged" if skip else "model applied"
            reason = (
                f"quality gate failed: {'; '.join(failures)} ({action}, "
                f"on_failure={self.on_failure!r})"
            )
        m = var = mean_model = None
        if not skip:
            try:
                m, var = io.model_on_exposure(fit, ref, exp, placement, on_reference=on_ref)
                mean_model = float(np.mean(m, dtype=np.float64))
            except ValueError as exc:
                skip, reason = True, f"the model cannot be evaluated on the exposure: {exc}"
        status = "SKIPPED" if skip else "COMPLETE"
        info.update(
            status=status,
            flagged=bool(failures),
            reason=reason,
            mean_model=mean_model,
            resampled=placement.resampled,
            flux_scale=placement.flux_scale,
            **diag,
        )
        product = BackgroundModel.from_fit(fit, image_shape=ref.shape, bgmatch=info)
        if not skip:
            io.apply_model(model, exp, m, var, add_variance=self.add_model_variance)
        self._record(model, product, exp if not skip else None, extra)
        io.log_outcome(name, fit, diag, mean_model, status, reason, placement)
        return product

    def _fit(self, ref, exp):
        """Fit the model to reference - exposure on the reference grid."""
        rows = io.diagnostic_rows(ref.shape)
        ref_var = self._ref_var_rows
        with_var = ref_var is not None and exp.var_source != "none"
        data, var, bad, placement = io.on_reference_grid(
            ref, exp, method=self.resample_method, with_variance=with_var
        )
        if placement.note:  # a missing WCS deserves a warning, resampling a debug line
            (log.debug if placement.resampled else log.warning)(
                "  %s: %s", exp.name, placement.note
            )
        diff = np.subtract(ref.data, data, dtype=np.float32)
        mask = ref.bad | bad
        n_good = int(mask.size - np.count_nonzero(mask))  # NaN in either image is masked
        if n_good == 0:
            raise ValueError(
                "no usable pixel in the overlap with the reference (all masked or NaN)"
            )
        bin_kw = dict(bin_size=self.bin_size, statistic=self.grid_statistic,
                      nsigma_clip=self.nsigma_clip, niter=self.niter,
                      min_pixels=self.min_bin_pixels)  # fmt: skip
        extra = {"n_good_pixels": n_good}
        if self.detect_sources:
            # robust bins (clipped mean and stdev), whatever the fit's statistic
            robust = bin_difference(diff, mask=mask, **{**bin_kw, "statistic": "MEANCLIP"})
            sources = io.source_mask(
                diff, mask, robust, threshold=self.source_threshold, grow=self.source_grow
            )
            extra["n_source_pixels"] = int(np.count_nonzero(sources))
            mask = mask | sources
            log.debug("  %s: %d source pixel(s) masked", exp.name, extra["n_source_pixels"])
        fit = match_background(
            diff,
            mask=mask,
            use_polynomial=self.use_polynomial,
            order=self.order,
            approx_weighting=self.approx_weighting,
            grid_stdev_epsilon=self.grid_stdev_epsilon,
            interp_style=self.interp_style,
            undersample_style=self.undersample_style,
            **bin_kw,
        )
        for action in fit.actions:
            log.debug("  %s: %s", exp.name, action)
        model_ref = fit.evaluate_image(diff.shape, dtype=np.float32)
        variance = None
        if with_var:
            variance = ref_var + (var[rows] if placement.resampled else exp.variance(rows))
        mse, dvar = match_diagnostics(diff[rows], model_ref[rows], mask=mask[rows],
                                      variance=variance)  # fmt: skip
        ratio = mse / dvar if dvar > 0 else (1.0 if mse == 0 else math.inf)
        diag = {"fit_rms": fit.fit_rms, "matched_mse": mse, "diffim_var": dvar,
                "mse_ratio": ratio}  # fmt: skip
        return fit, diag, placement, extra, (None if placement.resampled else model_ref)

    def _record(self, model, product, exp, extra):
        """Status, meta.background and meta.stmatch of one exposure."""
        meta = product.meta.bgmatch
        status = str(meta.status)
        applied = exp is not None and status == "COMPLETE"
        mean_model = float(meta.mean_model) if applied else 0.0
        with unvalidated(model):
            before, after = io.compose_background(model, mean_model) if applied else (None, None)
            setattr(model.meta.cal_step, self.class_alias, status)
            record = {
                key: getattr(meta, key, None)
                for key in ("reference", "is_reference", "status", "flagged", "reason",
                            "mean_model", "fit_rms", "matched_mse", "diffim_var",
                            "mse_ratio", "resampled")
            }  # fmt: skip
            record.update(kind=product.kind, order=product.order, level_before=before,
                          level_after=after)  # fmt: skip
            if applied and self.add_model_variance:
                record["model_variance_in"] = io.MODEL_VARIANCE_ARRAY
            record.update(extra or {})
            self.record_stmatch(model, **{k: v for k, v in record.items() if v is not None})

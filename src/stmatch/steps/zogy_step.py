"""ZogyStep: proper image subtraction of a template from a science exposure.

Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27 ("ZOGY"). The step aligns the template
to the science grid (resampling with both GWCS when needed), finds both PSFs,
the noise and the flux ratio, runs ZOGY (tiled for spatially varying PSFs), and
writes a :class:`~stmatch.models.DifferenceImageModel`, a detection catalog and
optionally a QA figure. See ``docs/zogy.rst``.
"""

from __future__ import annotations

import contextlib
import logging
import math

import numpy as np
from astropy.nddata.bitmask import interpret_bit_flags
from stdatamodels.jwst.datamodels.dqflags import pixel as DQ_PIXEL

from ..algorithms.fluxratio import fit_flux_ratio
from ..algorithms.zogy_tiled import zogy_tiled
from . import _psf_sources as psfs
from . import _zogy_inputs as inputs
from . import _zogy_output as output
from ._base import StmatchStep
from ._engine import SCHEDULER_SPEC, open_engine, scheduler_kind

__all__ = ["ZogyStep"]

log = logging.getLogger("stmatch.steps.zogy")


class ZogyStep(StmatchStep):
    """ZOGY proper image subtraction: difference, its PSF, scores, fluxes, detections.

    Run it on an association with one ``science`` and one ``template`` member, on a
    science image with ``template=`` (parameter or second argument), or on a pair
    ``(science, template)``. The result is a
    :class:`~stmatch.models.DifferenceImageModel` on the science grid; after a run
    ``step.catalog`` holds the detections (an `~astropy.table.Table`) and
    ``step.flux_ratio_fit`` the flux-ratio fit when one was made.
    """

    class_alias = "stmatch_zogy"

    spec = f"""
        template = string(default=None) # template image when the input is the science image
        science_psf = string(default=None) # PSF file of the science image (PsfModel ASDF or stpsf/webbpsf FITS)
        template_psf = string(default=None) # PSF file of the template (in template pixels)
        science_psf_fwhm = float(min=0, default=None) # analytic science PSF FWHM (science pixels)
        template_psf_fwhm = float(min=0, default=None) # analytic template PSF FWHM (template pixels)
        psf_model = option('gaussian', 'moffat', default='gaussian') # analytic PSF profile
        moffat_beta = float(min=1.0, default=2.5) # Moffat index of analytic PSFs
        psf_size = integer(min=5, default=None) # PSF stamp size (odd, pixels); default ~8 FWHM (25 for empirical PSFs)
        psf_star_threshold = float(min=3.0, default=20.0) # S/N of stars used for empirical PSFs and the flux-ratio fit
        flux_ratio = float(min=0.0, default=None) # F_science/F_template; default from photometric metadata
        fit_flux_ratio = boolean(default=False) # fit the flux ratio on stars matched in both images
        astrometric_noise = float_list(min=1, max=2, default=None) # registration noise (x, y) in pixels, or one value
        tile_size = integer(min=16, default=None) # inner tile size for spatially varying PSFs (None: whole image)
        tile_border = integer(min=0, default=None) # border around tiles (default: PSF stamp size)
        subtract_background = boolean(default=True) # subtract a clipped-median background from both images first
        dqbits = string(default='~DO_NOT_USE+NON_SCIENCE') # "good" DQ bits (pixels with other bits are masked)
        resample_method = option('lanczos3', 'bilinear', default='lanczos3') # interpolation when resampling the template
        detection_threshold = float(min=0.1, default=5.0) # |S_corr| threshold of the detection catalog
        save_catalog = boolean(default=True) # write the detection catalog (ECSV) beside the output
        save_qa = boolean(default=False) # write a QA figure (PNG) of the strongest detections
        qa_cutouts = integer(min=1, max=25, default=9) # detections shown in the QA figure
        output_use_model = boolean(default=True) # name the output after the science image
        {SCHEDULER_SPEC}
    """  # noqa: E501

    def process(self, input_data, template=None):
        """Subtract the template from the science image.

        Parameters
        ----------
        input_data : str, dict, DataModel or tuple
            Association (file or dict), science image (file or model), or
            ``(science, template)``.
        template : str or DataModel, optional
            Template image (default: the ``template`` parameter).

        Returns
        -------
        stmatch.models.DifferenceImageModel
        """
        self.catalog = None
        self.flux_ratio_fit = None
        distributed = scheduler_kind(self.scheduler) != "in-process"  # bad values: ValueError
        science, tmpl = inputs.open_pair(self, input_data, template or self.template)
        sci_name = inputs.name_of(science, "science")
        tpl_name = inputs.name_of(tmpl, "template")
        log.info("ZOGY subtraction of %s (template) from %s (science)", tpl_name, sci_name)
        dqbits = interpret_bit_flags(self.dqbits, flag_name_map=DQ_PIXEL)

        # Stage 1: alignment.
        log.info("Stage 1/5: alignment")
        tpl_var, tpl_var_src = inputs.variance_of(tmpl)
        resampled, align = inputs.align_template(
            science, tmpl, var=tpl_var, method=self.resample_method
        )
        sci_var, sci_var_src = inputs.variance_of(science)
        sci = inputs.prepare_arrays(
            sci_name,
            science.data,
            sci_var,
            sci_var_src,
            inputs.dq_of(science),
            dqbits,
            self.subtract_background,
        )
        if resampled is None:
            if np.shape(tmpl.data) != np.shape(science.data):
                raise ValueError(
                    f"science {np.shape(science.data)} and template {np.shape(tmpl.data)} "
                    "differ in shape and cannot be aligned"
                )
            tpl_data, tpl_dq = tmpl.data, inputs.dq_of(tmpl)
        else:
            tpl_data, tpl_var, tpl_dq = resampled.data, resampled.var, resampled.dq
            if tpl_var is None:
                tpl_var_src = "robust"
        tpl = inputs.prepare_arrays(
            tpl_name, tpl_data, tpl_var, tpl_var_src, tpl_dq, dqbits, self.subtract_background
        )
        del resampled, tpl_data
        overlap = ~(sci.bad | tpl.bad)
        if not overlap.any():
            raise ValueError(f"{sci_name} and {tpl_name} have no valid pixels in common")
        for arr in (sci, tpl):
            log.info(
                "%s: background %.4g subtracted, noise sigma %s",
                arr.name,
                arr.background,
                inputs.robust_sigma_note(arr),
            )

        # Stage 2: PSFs.
        log.info("Stage 2/5: PSFs")
        psf_new, psf_ref = self._psfs(science, tmpl, sci, tpl, align)
        log.info("Science PSF: %s", psf_new.description)
        log.info("Template PSF: %s", psf_ref.description)
        at_new, at_ref, recentred = psfs.checked_pair(psf_new, psf_ref)

        # Stage 3: flux ratio.
        log.info("Stage 3/5: flux ratio")
        beta, beta_err, beta_src = self._flux_ratio(science, tmpl, sci, tpl, at_new, at_ref)

        # Stage 4: subtraction.
        ast = self.astrometric_noise or [0.0]
        ast = [float(a) for a in ast]
        ast_x, ast_y = (ast[0], ast[0]) if len(ast) == 1 else (ast[0], ast[1])
        shape = sci.data.shape
        n_tiles_hint = 1
        if self.tile_size:
            n_tiles_hint = math.ceil(shape[0] / self.tile_size) * math.ceil(
                shape[1] / self.tile_size
            )
        log.info(
            "Stage 4/5: ZOGY on %d tile(s) (flux ratio %.5g, sigma_new %.4g, sigma_ref %.4g, "
            "astrometric noise x %.3g y %.3g px)",
            n_tiles_hint,
            beta,
            sci.sigma,
            tpl.sigma,
            ast_x,
            ast_y,
        )
        if distributed and n_tiles_hint == 1:
            log.info("ZOGY on one tile runs in-process (scheduler %s not used)", self.scheduler)
        distributed = distributed and n_tiles_hint > 1
        engine = open_engine(self.scheduler) if distributed else contextlib.nullcontext()
        try:
            with engine:
                mapper = None
                if distributed:
                    log.info("ZOGY tiles: %d task(s) on %s", n_tiles_hint, engine.description)
                    mapper = engine.mapper(
                        name="stmatch-zogy-tiles", progress=_task_progress, scatter=True
                    )
                elif n_tiles_hint > 1:
                    log.info("ZOGY tiles: %d, in-process", n_tiles_hint)
                result = zogy_tiled(
                    sci.data,
                    tpl.data,
                    at_new,
                    at_ref,
                    tile_size=self.tile_size,
                    border=self.tile_border,
                    sigma_new=sci.sigma,
                    sigma_ref=tpl.sigma,
                    var_new=sci.var,
                    var_ref=tpl.var,
                    flux_ratio=beta,
                    astrometric_noise=(ast_y, ast_x),
                    progress=None if mapper is not None else _progress(n_tiles_hint),
                    mapper=mapper,
                )
        except ValueError as exc:
            raise ValueError(f"ZOGY failed: {exc}") from None
        log.info(
            "F_D = %.5g, F_S = %.5g%s",
            float(np.median(result.f_d)),
            float(np.median(result.f_s)),
            " (median over tiles)" if len(result.tiles) > 1 else "",
        )

        # Stage 5: outputs.
        log.info("Stage 5/5: outputs and detections")
        info = dict(
            flux_ratio=beta,
            flux_ratio_err=beta_err,
            flux_ratio_source=beta_src,
            sigma_new=sci.sigma,
            sigma_ref=tpl.sigma,
            sigma_source_new=sci.sigma_source,
            sigma_source_ref=tpl.sigma_source,
            astrometric_noise_x=ast_x,
            astrometric_noise_y=ast_y,
            tile_size=self.tile_size,
            psf_source_new=psf_new.description,
            psf_source_ref=psf_ref.description,
            psf_recentred=bool(recentred),
            template_resampled=bool(align.resampled),
            template=tpl_name,
            detection_threshold=float(self.detection_threshold),
            background_new=sci.background,
            background_ref=tpl.background,
        )
        model = output.difference_model(science, sci, tpl, result, info)
        self.catalog = output.detection_table(
            model, result, threshold=self.detection_threshold, science=science
        )
        output.record_detections(model, self.catalog)
        setattr(model.meta.cal_step, self.class_alias, "COMPLETE")
        self.record_stmatch(
            model,
            template=tpl_name,
            flux_ratio=beta,
            n_detections=len(self.catalog),
        )
        output.save_products(self, model, science, sci, tpl, result)
        return model

    # ------------------------------------------------------------------ helpers
    def _psfs(self, science, tmpl, sci, tpl, align):
        jac = align.jacobian if align.resampled else None
        to_template = None
        if align.resampled:
            to_template = inputs.science_to_template(science, tmpl)
        empirical_size = self.psf_size or 25
        saturated_bit = int(DQ_PIXEL["SATURATED"])

        if self.science_psf:
            pn = psfs.from_file(self.science_psf)
        elif self.science_psf_fwhm:
            pn = psfs.from_fwhm(
                self.science_psf_fwhm,
                kind=self.psf_model,
                beta=self.moffat_beta,
                size=self.psf_size,
            )
        else:
            pn = psfs.from_stars(
                sci,
                size=empirical_size,
                threshold=self.psf_star_threshold,
                saturated=(sci.dq & saturated_bit) != 0,
                name=sci.name,
            )
        if self.template_psf:
            pr = psfs.from_file(self.template_psf, jacobian=jac, to_template=to_template)
        elif self.template_psf_fwhm:
            pr = psfs.from_fwhm(
                self.template_psf_fwhm,
                kind=self.psf_model,
                beta=self.moffat_beta,
                size=self.psf_size,
                jacobian=jac,
            )
        else:
            pr = psfs.from_stars(
                tpl,
                size=empirical_size,
                threshold=self.psf_star_threshold,
                saturated=(tpl.dq & saturated_bit) != 0,
                name=tpl.name,
            )
        shape = sci.data.shape
        for src, name in ((pn, "science"), (pr, "template")):
            stamp = src.centre(shape)
            if stamp.shape[0] > shape[0] or stamp.shape[1] > shape[1]:
                raise ValueError(
                    f"the {name} PSF stamp {stamp.shape} is larger than the image {shape}"
                )
        return pn, pr

    def _flux_ratio(self, science, tmpl, sci, tpl, at_new, at_ref):
        if self.flux_ratio is not None:
            if not self.flux_ratio > 0:
                raise ValueError(f"flux_ratio must be positive, got {self.flux_ratio}")
            beta, src, why = float(self.flux_ratio), "user", "given"
        else:
            beta, src, why = inputs.flux_ratio_from_metadata(science, tmpl)
        log.info("Flux ratio F_science/F_template = %.6g (%s: %s)", beta, src, why)
        beta_err = None
        if self.fit_flux_ratio:
            shape = sci.data.shape
            yc, xc = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
            mask = sci.bad | tpl.bad
            try:
                fit = fit_flux_ratio(
                    np.where(mask, 0.0, sci.data),
                    np.where(mask, 0.0, tpl.data),
                    at_new(yc, xc),
                    at_ref(yc, xc),
                    sigma_new=sci.sigma,
                    sigma_ref=tpl.sigma,
                    var_new=None if sci.var is None else np.where(mask, 0.0, sci.var),
                    var_ref=None if tpl.var is None else np.where(mask, 0.0, tpl.var),
                    mask=mask,
                    threshold=self.psf_star_threshold,
                )
            except ValueError as exc:
                raise ValueError(f"flux-ratio fit failed: {exc}") from None
            self.flux_ratio_fit = fit
            log.info(
                "Fitted flux ratio %.5f +- %.5f from %d of %d stars (chi2/dof %.2f); "
                "%s value was %.5g",
                fit.beta,
                fit.beta_err,
                fit.n_used,
                fit.n_candidates,
                fit.chi2_dof,
                src,
                beta,
            )
            beta, beta_err, src = float(fit.beta), float(fit.beta_err), "fit"
        return beta, beta_err, src


def _task_progress(done, total):
    if total > 1 and (total <= 16 or done % max(1, total // 10) == 0 or done == total):
        log.info("  tile %d / %d done", done, total)
    else:
        log.debug("  tile %d / %d done", done, total)


def _progress(n_tiles):
    def progress(i, n, tile):
        _task_progress(i + 1, n)

    return progress

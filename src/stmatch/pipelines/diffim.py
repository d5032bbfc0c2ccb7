"""DiffImagePipeline: difference imaging of science exposures against a template.

For every science exposure of an association: align the template, match its
background (`~stmatch.steps.BackgroundMatchStep`), optionally match its PSF
(`~stmatch.steps.PsfModelMatchStep`), subtract it with ZOGY
(`~stmatch.steps.ZogyStep`); write a difference product and a detection catalog
per exposure and a combined catalog per product. See ``docs/diffim.rst``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from stpipe.utilities import _not_set

from ..steps import BackgroundMatchStep, PsfModelMatchStep, ZogyStep
from ..steps._base import products_dir
from ..steps._engine import SCHEDULER_SPEC, open_engine
from . import _diffim_chain as chain
from ._asn import read_diffim_association
from ._base import StmatchPipeline

__all__ = ["DiffImagePipeline"]

log = logging.getLogger("stmatch.pipelines.diffim")


class DiffImagePipeline(StmatchPipeline):
    r"""Difference imaging: subtract a template from each science exposure of an association.

    The input is an association (file or mapping, e.g. from
    `~stmatch.pipelines._asn.make_diffim_association` or ``stmatch asn``) whose
    products each have one or more members of ``exptype`` ``science`` and exactly
    one of ``exptype`` ``template``. For each science exposure :math:`N` the
    pipeline runs, with the parameters of its sub-steps:

    1. **align**: the template's geometry relative to the science grid from the
       two GWCS (offset at the science centre, scale, rotation, overlap); an
       error when they do not overlap. Nothing is resampled here.
    2. **bgmatch** (`~stmatch.steps.BackgroundMatchStep`, reference = the science
       exposure): a smooth surface fitted to :math:`N - R` (on the science grid;
       the template is resampled there for the fit only) is added to the
       template :math:`R` on its own pixels, so that :math:`R` has the science
       exposure's background.
    3. **psfmatch** (`~stmatch.steps.PsfModelMatchStep`), skipped by default
       (``steps.psfmatch.skip=True``): ZOGY is exact for any pair of PSFs, and
       convolving the template only correlates its noise. When enabled, the
       template is convolved, on its own pixels, so that its PSF becomes the
       science PSF; a science PSF narrower than the template's would need a
       deconvolution, which the step refuses: the pipeline then logs a warning
       and goes on without PSF matching for that exposure.
    4. **zogy** (`~stmatch.steps.ZogyStep`): the (matched) template is resampled
       once onto the science grid and subtracted (Zackay, Ofek & Gal-Yam 2016).

    **Why the template stays on its own grid until ZOGY.** Resampling is done
    once, by ZOGY, which also carries the template PSF from template pixels to
    science pixels with the Jacobian of the mapping. So the PSF parameters keep
    the meaning the steps give them: ``steps.zogy.science_psf`` /
    ``science_psf_fwhm`` are in science pixels, ``steps.zogy.template_psf`` /
    ``template_psf_fwhm`` in template pixels, and ``steps.psfmatch.psf`` /
    ``psf_fwhm`` (the template's PSF) in template pixels. When the psfmatch
    sub-step is not given its PSFs, the template PSF is taken from the zogy
    parameters and the target from the science PSF: a FWHM is converted to
    template pixels with the ratio of the pixel scales, a file is resampled by
    the step to the template's pixel scale, and without either the target is
    measured on the science exposure's stars. After PSF matching, ZOGY is given
    the matched template's PSF (the psfmatch target, in template pixels) as the
    template PSF. The template is never interpolated twice: background matching
    resamples only to fit, and evaluates its model on the template's pixels.

    **Outputs** (into ``output_dir``, else the current directory): per science
    exposure the difference product ``<science>_diffim.fits``
    (`~stmatch.models.DifferenceImageModel`, with ``save_results``) and its
    detection catalog ``<science>_diffim_cat.ecsv``; per product a combined
    catalog ``<product>_diffim_cat.ecsv`` (the union of the exposures' catalogs
    with an ``exposure`` column), written with ``save_results`` or an
    ``output_dir`` unless ``steps.zogy.save_catalog=False``; with
    ``steps.zogy.save_qa`` a QA figure ``<science>_zogy_qa.png``. Each product
    records ``meta.cal_step.stmatch_bgmatch``, ``stmatch_psfmatch``,
    ``stmatch_zogy`` and ``stmatch_diffim``, and the alignment, the sub-steps'
    outcomes and the detection count in ``meta.stmatch.steps.stmatch_diffim``.
    After a run ``pipeline.results`` holds one summary per exposure and
    ``pipeline.catalogs`` the combined catalog of each product.

    **Scheduler.** ``scheduler`` (None: here, one exposure after another)
    distributes the science exposures over Dask workers: each task opens the
    files, runs the chain with the sub-steps' parameters in its own process and
    writes that exposure's products; the combined catalogs and the summary are
    assembled here from what the tasks return, so a task that runs twice (a lost
    worker) changes nothing. With ``scheduler`` None the sub-steps keep their own
    ``scheduler`` parameters.
    """

    class_alias = "stmatch_diffim"

    spec = f"""
        {SCHEDULER_SPEC}
        output_use_model = boolean(default=True) # name each product after its science exposure
    """  # noqa: E501

    step_defs = {"bgmatch": BackgroundMatchStep, "psfmatch": PsfModelMatchStep, "zogy": ZogyStep}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # PSF matching is off unless ``skip`` was given for it. A default filled in by
        # validation is not "given": stpipe validates each sub-step's section again
        # against the sub-step's own spec, which resets such defaults to its own.
        section = self.steps.get("psfmatch") if isinstance(self.steps, Mapping) else None
        given = (
            section is not None
            and "skip" in section
            and "skip" not in getattr(section, "defaults", ())
        )
        if not given:
            self.psfmatch.skip = True

    @classmethod
    def load_spec_file(cls, preserve_comments=_not_set):
        """The pipeline's spec, with PSF matching skipped by default."""
        spec = super().load_spec_file(preserve_comments=preserve_comments)
        spec["steps"]["psfmatch"]["skip"] = "boolean(default=True)"
        return spec

    @classmethod
    def get_config_from_reference(cls, dataset, disable=None, crds_observatory=None):
        """Parameter files for the instrument of the first science exposure."""
        try:
            products = read_diffim_association(dataset)
            dataset = products[0].science[0]
        except (ValueError, OSError, TypeError) as exc:
            log.debug("No science exposure for the parameter lookup (%s)", exc)
        return super().get_config_from_reference(dataset, disable, crds_observatory)

    def default_suffix(self):
        """Suffix of the difference products."""
        return chain.SUFFIX

    def process(self, input_data):
        """Subtract the template from every science exposure of the association.

        Parameters
        ----------
        input_data : str, Path or mapping
            A difference-imaging association (file or mapping).

        Returns
        -------
        list of stmatch.models.DifferenceImageModel
            One product per science exposure, in association order.
        """
        if self.zogy.skip:
            raise ValueError("steps.zogy cannot be skipped: it makes the difference images")
        products = read_diffim_association(input_data)
        outdir = products_dir(self).resolve()
        save_catalog = bool((self.save_results or self.output_dir) and self.zogy.save_catalog)
        jobs = []
        total = sum(len(p.science) for p in products)
        for product in products:
            log.info(
                "Product %r: %d science exposure(s), template %s",
                product.name,
                len(product.science),
                product.template,
            )
            for science in product.science:
                jobs.append(
                    chain.ExposureJob(
                        product=product.name,
                        index=len(jobs) + 1,
                        total=total,
                        science=os.path.abspath(science),
                        template=os.path.abspath(product.template),
                        output_dir=str(outdir),
                        save_product=bool(self.save_results),
                        save_catalog=save_catalog,
                    )
                )
        log.info(
            "Difference imaging of %d science exposure(s): align, bgmatch, psfmatch (%s), zogy",
            total,
            "skipped" if self.psfmatch.skip else "enabled",
        )
        with open_engine(self.scheduler) as engine:
            if engine.in_process:
                results = [chain.run_exposure(self, job) for job in jobs]
            else:
                log.info("Running %d exposure task(s) on %s", len(jobs), engine.description)
                pars = chain.task_parameters(self, outdir)
                results = engine.map(
                    chain.exposure_task,
                    [(pars, job) for job in jobs],
                    name="stmatch-diffim",
                    progress=_progress,
                )
                for job, result in zip(jobs, results, strict=True):
                    for level, text in result["notes"]:
                        log.log(level, "%s: %s", job.label, text)
        self.results = results
        self.catalogs = {}
        self._saved = {}
        models = []
        for result in results:
            model = result.pop("model")
            if model is None:
                from ..models import open as open_model

                model = open_model(result["path"])
            if result["path"] is not None:
                self._saved[id(model)] = result["path"]
            models.append(model)
        for product in products:
            self.catalogs[product.name] = self._combined_catalog(product, results, outdir)
        self._summary(products, results)
        return models

    # ------------------------------------------------------------------ helpers
    def _combined_catalog(self, product, results, outdir):
        from astropy.table import Table, vstack

        tables = []
        for result in results:
            if result["product"] != product.name:
                continue
            table = Table(result["catalog"], copy=True)
            table.add_column([result["science"]] * len(table), name="exposure", index=0)
            if not len(table):
                table["exposure"] = table["exposure"].astype(str)
            tables.append(table)
        combined = vstack(tables, metadata_conflicts="silent") if tables else Table()
        combined.meta["template"] = Path(product.template).name
        combined.meta["exposures"] = [r["science"] for r in results if r["product"] == product.name]
        if (self.save_results or self.output_dir) and self.zogy.save_catalog:
            from ..steps._base import atomic_write

            path = outdir / f"{product.name}_{chain.SUFFIX}_cat.ecsv"
            atomic_write(path, lambda p: combined.write(p, format="ascii.ecsv"))
            log.info("Saved combined catalog %s (%d detection(s))", path, len(combined))
        return combined

    def _summary(self, products, results):
        log.info("Summary of the difference imaging:")
        for product in products:
            rows = [r for r in results if r["product"] == product.name]
            log.info("  product %r (template %s):", product.name, rows[0]["template"])
            for r in rows:
                log.info(
                    "    %-40s %4d detection(s) (%d new, %d gone); bgmatch %s, psfmatch %s",
                    r["science"],
                    r["n_detections"],
                    r["n_new"],
                    r["n_gone"],
                    r["bgmatch"],
                    r["psfmatch"],
                )
        log.info(
            "  %d detection(s) in %d science exposure(s)",
            sum(r["n_detections"] for r in results),
            len(results),
        )

    def save_model(self, model, suffix=None, idx=None, output_file=None, force=False, **components):
        """Products are written (atomically) as they are made; report where."""
        path = getattr(self, "_saved", {}).get(id(model))
        if path is not None:
            return path
        return super().save_model(
            model, suffix=suffix, idx=idx, output_file=output_file, force=force, **components
        )


def _progress(done, total):
    log.info("  %d / %d exposure(s) done", done, total)

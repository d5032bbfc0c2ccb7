"""DiffImagePipeline: the chain run for one science exposure, here or in a Dask task.

`run_exposure` runs align → bgmatch → psfmatch → zogy for one science exposure
with a pipeline's sub-steps and writes that exposure's products; `exposure_task`
is the same for a Dask worker (a module-level function: it builds the pipeline
from its parameters and runs its sub-steps in the worker's process).
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jwst.lib.suffix import remove_suffix

from ..algorithms.psfgrid import fwhm_of
from ..algorithms.resample import grids_agree
from ..steps._base import atomic_write, unvalidated
from ..steps._wcs import wcs_callables

log = logging.getLogger("stmatch.pipelines.diffim")

ALIAS = "stmatch_diffim"
SUFFIX = "diffim"


@dataclass(frozen=True)
class ExposureJob:
    """What one task needs: file names, where outputs go, what to write."""

    product: str
    index: int  # 1-based position among all science exposures of the run
    total: int
    science: str
    template: str
    output_dir: str  # absolute
    save_product: bool
    save_catalog: bool

    @property
    def label(self):
        return f"[{self.index}/{self.total}] {Path(self.science).name}"


def stem_of(name):
    """File stem without the pipeline suffix (``a_cal.fits`` → ``a``)."""
    return remove_suffix(Path(str(name)).stem)[0]


@contextmanager
def overridden(step, **values):
    """Set attributes of a step for the duration of a block, then restore them."""
    old = {k: getattr(step, k) for k in values}
    for k, v in values.items():
        setattr(step, k, v)
    try:
        yield step
    finally:
        for k, v in old.items():
            setattr(step, k, v)


class _Notes:
    """INFO/WARNING lines of one exposure: logged here and kept for the caller."""

    def __init__(self, label):
        self.label = label
        self.lines = []

    def __call__(self, message, *args, level=logging.INFO):
        text = message % args if args else message
        self.lines.append((int(level), text))
        log.log(level, "%s: %s", self.label, text)


# --------------------------------------------------------------------------- stages
def alignment(science, template):
    """Geometry of the template relative to the science grid (nothing is resampled).

    Returns a dict: ``same_grid``, ``shift_x``/``shift_y`` (template pixel minus
    science pixel at the science centre), ``scale`` (template pixels per science
    pixel, √|det J|), ``rotation`` (degrees) and ``overlap`` (fraction of a 17×17
    grid of science pixels that falls on the template).
    """
    sname = str(science.meta.filename or "science")
    tname = str(template.meta.filename or "template")
    s_shape, t_shape = np.shape(science.data), np.shape(template.data)
    if science.meta.wcs is None or template.meta.wcs is None:
        if s_shape != t_shape:
            raise ValueError(
                f"cannot align {tname} to {sname}: a WCS (meta.wcs) is missing and the "
                f"shapes differ ({t_shape} vs {s_shape})"
            )
        return dict(same_grid=True, wcs=False, shift_x=0.0, shift_y=0.0, scale=1.0,
                    rotation=0.0, overlap=1.0)  # fmt: skip
    from ..steps._zogy_inputs import _jacobian

    fwd, _ = wcs_callables(science)
    _, inv = wcs_callables(template)
    ny, nx = s_shape
    gy, gx = np.meshgrid(np.linspace(0, ny - 1, 17), np.linspace(0, nx - 1, 17), indexing="ij")
    xt, yt = (np.asarray(v, dtype=float) for v in inv(*fwd(gx.ravel(), gy.ravel())))
    with np.errstate(invalid="ignore"):
        inside = (
            np.isfinite(xt)
            & np.isfinite(yt)
            & (xt >= -0.5)
            & (xt <= t_shape[1] - 0.5)
            & (yt >= -0.5)
            & (yt <= t_shape[0] - 0.5)
        )
    overlap = float(np.mean(inside))
    if overlap == 0:
        raise ValueError(f"the template {tname} does not overlap the science exposure {sname}")
    try:
        jac = _jacobian(s_shape, fwd, inv)
        same = bool(grids_agree(s_shape, fwd, t_shape, inv))
    except ValueError as exc:
        raise ValueError(f"cannot align {tname} to {sname}: {exc}") from None
    xc, yc = (nx - 1) / 2.0, (ny - 1) / 2.0
    xtc, ytc = (float(np.ravel(v)[0]) for v in inv(*fwd(np.array([xc]), np.array([yc]))))
    rotation = math.degrees(math.atan2(jac[1, 0], jac[0, 0]))
    return dict(
        same_grid=same,
        wcs=True,
        shift_x=xtc - xc,
        shift_y=ytc - yc,
        scale=math.sqrt(abs(float(np.linalg.det(jac)))),
        rotation=rotation if abs(rotation) > 1e-6 else 0.0,
        overlap=overlap,
    )


def _bgmatch(pipe, science, template, note):
    step = pipe.bgmatch
    if step.skip:
        note("bgmatch: skipped (skip=True): the template keeps its own background")
        return template, {"status": "SKIPPED", "reason": "skip=True"}
    if step.reference not in (None, "", 0, "0"):
        log.warning(
            "steps.bgmatch.reference=%r is ignored: the science exposure is the reference",
            step.reference,
        )
    # Inside a pipeline the step does not copy its inputs: it records the science
    # exposure as its reference. Those records describe the template's matching, not the
    # science exposure, so the science metadata is put back as it was.
    saved = copy.deepcopy(science.meta.instance.get("stmatch"))
    saved_status = science.meta.cal_step.instance.get("stmatch_bgmatch")
    try:
        with overridden(step, reference=0):
            library = step.run([science, template])
    finally:
        _restore(science, saved, saved_status)
    with library:
        matched = library.borrow(1)
        library.shelve(matched, 1, modify=False)
    status = str(matched.meta.cal_step.instance.get("stmatch_bgmatch", "COMPLETE"))
    steps = matched.meta.instance.get("stmatch", {}).get("steps", {})
    rec = dict(steps.get("stmatch_bgmatch", {}))
    info = {
        "status": status,
        "mean_model": rec.get("mean_model"),
        "kind": rec.get("kind"),
        "flagged": bool(rec.get("flagged", False)),
        "reason": str(rec.get("reason") or ""),
    }
    if status == "COMPLETE":
        note(
            "bgmatch: template background matched to the science exposure (%s model, mean "
            "offset %s added)%s",
            info["kind"],
            "n/a" if info["mean_model"] is None else f"{info['mean_model']:.5g}",
            " - flagged: " + info["reason"] if info["flagged"] else "",
        )
    else:
        note("bgmatch: %s (%s)", status, info["reason"], level=logging.WARNING)
    return matched, info


def _restore(model, stmatch, status):
    with unvalidated(model):
        if stmatch is None:
            model.meta.instance.pop("stmatch", None)
        else:
            model.meta.stmatch = stmatch
        cal = model.meta.cal_step.instance
        if status is None:
            cal.pop("stmatch_bgmatch", None)
        else:
            cal["stmatch_bgmatch"] = status


def psfmatch_inputs(pipe, science, template, job):
    """Exposure (template) PSF and target (science) PSF for the psfmatch sub-step.

    What the psfmatch sub-step has been given is kept; otherwise the template PSF
    comes from ``steps.zogy.template_psf``/``template_psf_fwhm`` (template pixels)
    and the target from ``steps.zogy.science_psf`` (with the science pixel scale
    when the file does not declare one) or ``science_psf_fwhm`` converted to
    template pixels, else from the science exposure's stars.
    """
    from ..steps import _psf_sources as psfs
    from ..steps._psfmatch_psf import pixel_scale

    ps, zs = pipe.psfmatch, pipe.zogy
    values = {}
    if not (ps.psf or ps.psf_fwhm):
        if zs.template_psf:
            values["psf"] = zs.template_psf
        elif zs.template_psf_fwhm:
            values.update(psf_fwhm=zs.template_psf_fwhm, psf_profile=zs.psf_model)
    if not (ps.target_psf or ps.target_psf_fwhm or ps.target_image):
        s_scale, t_scale = pixel_scale(science), pixel_scale(template)
        if zs.science_psf:
            values["target_psf"] = zs.science_psf
            if psfs.from_file(zs.science_psf).pixel_scale is None and s_scale:
                values["target_pixel_scale"] = s_scale
        elif zs.science_psf_fwhm:
            ratio = s_scale / t_scale if (s_scale and t_scale) else 1.0
            values.update(
                target_psf_fwhm=float(zs.science_psf_fwhm) * ratio, target_psf_profile=zs.psf_model
            )
        else:
            values["target_image"] = job.science
    if (values.get("psf_profile") == "moffat" or values.get("target_psf_profile") == "moffat") and (
        zs.moffat_beta != ps.moffat_beta
    ):
        values["moffat_beta"] = zs.moffat_beta
    return values


def _psfmatch(pipe, science, template, job, note, workdir):
    step = pipe.psfmatch
    if step.skip:
        note("psfmatch: skipped (ZOGY needs no PSF matching; --steps.psfmatch.skip=false runs it)")
        return template, {"status": "SKIPPED", "reason": "skip=True"}, None
    values = psfmatch_inputs(pipe, science, template, job)
    try:
        with overridden(step, **values):
            matched = step.run(template)
    except ValueError as exc:
        if "deconvolve" not in str(exc):
            raise
        note(
            "psfmatch: not possible (%s); going on without PSF matching",
            exc,
            level=logging.WARNING,
        )
        return template, {"status": "SKIPPED", "reason": str(exc)}, None
    from ..steps._psfmatch_psf import _attached_psf

    psf = _attached_psf(matched)
    path = None
    if psf is None:
        note(
            "psfmatch: the matched template carries no PSF; zogy uses the template PSF parameters",
            level=logging.WARNING,
        )
    else:
        from astropy.io import fits

        path = Path(workdir) / "matched_template_psf.fits"
        fits.PrimaryHDU(np.asarray(psf, dtype=np.float32)).writeto(path, overwrite=True)
    rec = matched.meta.instance.get("stmatch", {}).get("steps", {}).get("stmatch_psfmatch", {})
    info = {"status": "COMPLETE", "reason": "", "target_psf": str(rec.get("target_psf", ""))}
    if path is not None:
        info["zogy_template_psf"] = "the matched template's PSF (the psfmatch target)"
    note(
        "psfmatch: template convolved to the science PSF (%s; matched FWHM %.3g template px)",
        info["target_psf"],
        fwhm_of(psf) if psf is not None else float("nan"),
    )
    return matched, info, path


# ------------------------------------------------------------------------ the chain
def run_exposure(pipe, job):
    """Run the chain for one science exposure; write its products; return a summary.

    Returns
    -------
    dict
        ``science`` (file name), ``product``, ``path`` (difference product or None),
        ``catalog_path``, ``catalog`` (astropy Table), ``n_detections``, ``n_new``,
        ``n_gone``, ``bgmatch``, ``psfmatch`` (statuses), ``notes`` (the logged
        lines as ``(level, text)``) and ``model`` (the difference product).
    """
    note = _Notes(job.label)
    science = pipe._datamodels_open(job.science)
    template = pipe._datamodels_open(job.template)
    workdir = tempfile.mkdtemp(prefix=".stmatch-diffim-")
    try:
        for model, role in ((science, "science exposure"), (template, "template")):
            if getattr(model, "data", None) is None or np.ndim(model.data) != 2:
                raise ValueError(f"the {role} {Path(model.meta.filename or '')} is not a 2-D image")
        s_name, t_name = Path(job.science).name, Path(job.template).name
        align = alignment(science, template)
        note(
            "align: template %s; at the science centre template pixel = science pixel + "
            "(%.2f, %.2f), scale %.4f, rotation %.3f deg, overlap %.0f%% (%s)",
            t_name,
            align["shift_x"],
            align["shift_y"],
            align["scale"],
            align["rotation"],
            100 * align["overlap"],
            "same pixel grid" if align["same_grid"] else "resampled once, inside zogy",
        )
        # The working copy of the template is named after the exposure it is matched
        # to, so that the side products of bgmatch and psfmatch do not collide.
        working_name = f"{stem_of(t_name)}_to_{stem_of(s_name)}{Path(t_name).suffix}"
        with overridden(template.meta, filename=working_name):
            tmpl, bg = _bgmatch(pipe, science, template, note)
            tmpl, pm, psf_file = _psfmatch(pipe, science, tmpl, job, note, workdir)
        tmpl.meta.filename = t_name
        zogy_values = {"save_catalog": False}
        if psf_file is not None:
            zogy_values.update(template_psf=str(psf_file), template_psf_fwhm=None)
        with overridden(pipe.zogy, **zogy_values):
            diff = pipe.zogy.run(science, tmpl)
        catalog = pipe.zogy.catalog
        n_new = int(np.sum(np.asarray(catalog["sign"]) > 0)) if len(catalog) else 0
        note(
            "zogy: %d detection(s) (%d new, %d gone), flux ratio %.4g",
            len(catalog),
            n_new,
            len(catalog) - n_new,
            float(diff.meta.zogy.flux_ratio),
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        science.close()
        template.close()

    out = Path(job.output_dir)
    stem = stem_of(s_name)
    record = {
        "product": job.product,
        "template": t_name,
        "science": s_name,
        "alignment": align,
        "bgmatch": bg,
        "psfmatch": pm,
        "n_detections": len(catalog),
    }
    path = cat_path = None
    if job.save_product:
        path = out / Path(pipe.make_output_path(basepath=s_name, suffix=SUFFIX)).name
        record["product_file"] = path.name
    if job.save_catalog:
        cat_path = out / f"{stem}_{SUFFIX}_cat.ecsv"
        record["catalog_file"] = cat_path.name
    _record(diff, record)
    if cat_path is not None:
        atomic_write(cat_path, lambda p: catalog.write(p, format="ascii.ecsv"))
        log.info("%s: saved detection catalog %s", job.label, cat_path)
    if path is not None:
        pipe.finalize_result(diff, [])
        atomic_write(path, diff.save)
        log.info("%s: saved difference product %s", job.label, path)
    return {
        "product": job.product,
        "science": s_name,
        "template": t_name,
        "path": None if path is None else str(path),
        "catalog_path": None if cat_path is None else str(cat_path),
        "catalog": catalog,
        "n_detections": len(catalog),
        "n_new": n_new,
        "n_gone": len(catalog) - n_new,
        "bgmatch": bg["status"],
        "psfmatch": pm["status"],
        "notes": note.lines,
        "model": diff,
    }


def _record(model, record):
    """cal_step statuses and ``meta.stmatch.steps.stmatch_diffim`` of a product."""
    from .. import __version__
    from ..steps._base import _plain

    with unvalidated(model):
        cal = model.meta.cal_step
        cal.stmatch_bgmatch = record["bgmatch"]["status"]
        cal.stmatch_psfmatch = record["psfmatch"]["status"]
        setattr(cal, ALIAS, "COMPLETE")
        current = model.meta.instance.get("stmatch", {})
        current = dict(current) if isinstance(current, dict) else {}
        steps = dict(current.get("steps", {}))
        steps[ALIAS] = _plain({k: v for k, v in record.items() if v is not None})
        current.update(version=__version__, steps=steps)
        model.meta.stmatch = current


# -------------------------------------------------------------------------- tasks
def task_parameters(pipe, output_dir):
    """The pipeline's parameters for a task: sub-steps in-process, absolute output_dir."""
    pars = pipe.get_pars()
    pars["scheduler"] = None
    pars["output_dir"] = str(output_dir)
    for sub in pars.get("steps", {}).values():
        if "scheduler" in sub:
            sub["scheduler"] = None
    return pars


def exposure_task(item):
    """Dask task: build the pipeline from ``(parameters, job)`` and run one exposure.

    Idempotent: the products are written atomically under names fixed by the
    inputs; the combined catalog is assembled by the caller from the returned
    catalogs. The difference product travels back only when it was not saved.
    """
    pars, job = item
    from .diffim import DiffImagePipeline

    pipe = DiffImagePipeline(**pars)
    result = run_exposure(pipe, job)
    if result["path"] is not None:
        result["model"].close()
        result["model"] = None
    return result

"""PsfModelMatchStep: convolve the exposure, build the kernel product, write files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from jwst.lib.suffix import remove_suffix
from stdatamodels.jwst.datamodels.dqflags import pixel as DQ_PIXEL

from ..algorithms.convolve_varying import convolve_image, convolve_variance, kernel_footprint
from ..algorithms.row_bands import band_rows_for, plan_bands, row_chunk
from ._base import atomic_write, products_dir, unvalidated
from ._engine import open_engine, scheduler_kind
from ._zogy_inputs import dilate_dq, dq_of

log = logging.getLogger("stmatch.steps.psfmatch")

DO_NOT_USE = int(DQ_PIXEL["DO_NOT_USE"])
NON_SCIENCE = int(DQ_PIXEL["NON_SCIENCE"])
VARIANCE_ARRAYS = ("var_poisson", "var_rnoise", "var_flat", "var_sky")


def _present(model, attr, shape):
    if not model.hasattr(attr):
        return None
    value = getattr(model, attr, None)
    if value is None or np.shape(value) != shape:
        return None
    return np.asarray(value)


def convolve_model(model, kernel, bad, *, mapper=None, band_rows=None):
    """A copy of ``model`` convolved with ``kernel`` (data, variances, err, dq).

    Parameters
    ----------
    model : DataModel
        The exposure (not modified).
    kernel : SpatialKernel
        The kernel to apply (already normalised as wanted).
    bad : numpy.ndarray
        Boolean mask of unusable input pixels.
    mapper : callable, optional
        Run each convolution in row bands of ``band_rows`` rows, one task per band
        (see :func:`~stmatch.algorithms.convolve_varying.convolve_image`); the
        result is the same.
    band_rows : int, optional
        Rows per band.

    Returns
    -------
    result : DataModel
        Same type as ``model``.
    stats : dict
        Pixel counts of the masks.
    """
    shape = np.shape(model.data)
    footprint = kernel_footprint(kernel)
    bands = {"mapper": mapper, "band_rows": band_rows}
    conv = convolve_image(model.data, kernel, mask=bad, dtype=np.float32, **bands)
    result = model.copy()
    with unvalidated(result):
        result.data = conv.data
        variances = {}
        for attr in VARIANCE_ARRAYS:
            v = _present(model, attr, shape)
            if v is None:
                continue
            if not np.any(v):  # an all-zero array stays zero (no convolution needed)
                variances[attr] = np.where(conv.bad, np.float32(np.nan), np.float32(0.0))
            else:
                variances[attr] = convolve_variance(v, kernel, mask=bad, dtype=np.float32, **bands)
            setattr(result, attr, variances[attr])
        err = _present(model, "err", shape)
        if variances:
            total = sum(v.astype(np.float64) for v in variances.values())
            result.err = np.sqrt(total).astype(np.float32)
        elif err is not None:
            e2 = convolve_variance(np.square(err, dtype=np.float64), kernel, mask=bad, **bands)
            result.err = np.sqrt(e2).astype(np.float32)
        ys, xs = np.nonzero(footprint)
        box = (
            2 * int(np.abs(ys - footprint.shape[0] // 2).max()) + 1,
            2 * int(np.abs(xs - footprint.shape[1] // 2).max()) + 1,
        )
        dq = dilate_dq(dq_of(model), box)
        dq[conv.bad] |= DO_NOT_USE
        dq[conv.edge] |= NON_SCIENCE
        result.dq = dq
    stats = {
        "n_bad_out": int(np.count_nonzero(conv.bad)),
        "n_edge": int(np.count_nonzero(conv.edge)),
        "footprint": [int(box[0]), int(box[1])],
    }
    return result, stats


def convolve_on(scheduler, model, kernel, bad):
    """:func:`convolve_model` in-process, or in row bands on Dask.

    With a ``scheduler`` (see :mod:`stmatch.steps._engine`), each convolution (the
    data, then every variance array) runs as tasks of about 4 row bands per task
    slot, each at least 4 kernel heights tall and whole blocks of rows
    (:func:`~stmatch.algorithms.row_bands.band_rows_for`); an image of one band
    runs in-process. The result is identical to the in-process one.
    """
    ny, h = int(np.shape(model.data)[0]), kernel.shape[0]
    if scheduler_kind(scheduler) == "in-process":
        return convolve_model(model, kernel, bad)
    if row_chunk(ny, h) >= ny:
        log.info(
            "The convolution is one row band: it runs in-process (scheduler %s not used)",
            scheduler,
        )
        return convolve_model(model, kernel, bad)
    with open_engine(scheduler) as engine:
        band_rows = band_rows_for(ny, h, engine.n_workers)
        bands = plan_bands(ny, h, band_rows)
        log.info(
            "Convolution in %d row band(s) of up to %d rows per array: tasks on %s",
            len(bands),
            max(r1 - r0 for r0, r1 in bands),
            engine.description,
        )
        mapper = engine.mapper(name="stmatch-psfmatch-bands", scatter=True)
        return convolve_model(model, kernel, bad, mapper=mapper, band_rows=band_rows)


def base_name(step, model):
    """Output stem ``<dir>/<input stem>_<suffix>`` for the side products."""
    name = str(getattr(model.meta, "filename", None) or "psfmatch")
    stem = remove_suffix(Path(name).stem)[0]
    directory = products_dir(step)
    return directory / f"{stem}_{step.default_suffix()}"


def save_products(step, model, kernel_model, qa_args):
    """Write the kernel product (ASDF) and the QA figure when asked to."""
    want_kernel = step.save_kernel and (step.save_results or step.output_dir)
    if not (want_kernel or step.save_qa):
        return {}
    base = base_name(step, model)
    written = {}
    if want_kernel:
        path = atomic_write(f"{base}kernel.asdf", kernel_model.save)
        written["kernel"] = str(path)
        log.info("Saved matching kernel %s", path)
    if step.save_qa:
        from ._qa_psfmatch import psfmatch_figure

        path = atomic_write(f"{base}_qa.png", lambda p: psfmatch_figure(*qa_args, p))
        written["qa"] = str(path)
        log.info("Saved QA figure %s", path)
    return written

"""PsfModelMatchStep: convolve the exposure, build the kernel product, write files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from jwst.lib.suffix import remove_suffix
from stdatamodels.jwst.datamodels.dqflags import pixel as DQ_PIXEL

from ..algorithms.convolve_varying import convolve_image, convolve_variance, kernel_footprint
from ._base import atomic_write, products_dir, unvalidated
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


def convolve_model(model, kernel, bad):
    """A copy of ``model`` convolved with ``kernel`` (data, variances, err, dq).

    Parameters
    ----------
    model : DataModel
        The exposure (not modified).
    kernel : SpatialKernel
        The kernel to apply (already normalised as wanted).
    bad : numpy.ndarray
        Boolean mask of unusable input pixels.

    Returns
    -------
    result : DataModel
        Same type as ``model``.
    stats : dict
        Pixel counts of the masks.
    """
    shape = np.shape(model.data)
    footprint = kernel_footprint(kernel)
    conv = convolve_image(model.data, kernel, mask=bad, dtype=np.float32)
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
                variances[attr] = convolve_variance(v, kernel, mask=bad, dtype=np.float32)
            setattr(result, attr, variances[attr])
        err = _present(model, "err", shape)
        if variances:
            total = sum(v.astype(np.float64) for v in variances.values())
            result.err = np.sqrt(total).astype(np.float32)
        elif err is not None:
            e2 = convolve_variance(np.square(err, dtype=np.float64), kernel, mask=bad)
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

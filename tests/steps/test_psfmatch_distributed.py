"""PsfModelMatchStep with the convolution in row bands on Dask: same result as in-process."""

import logging

import numpy as np
import pytest

from stmatch.datasets import make_psfmatch_exposure, write_psfmatch_exposure
from stmatch.steps import PsfModelMatchStep

pytest.importorskip("distributed")

ARRAYS = ("data", "dq", "err", "var_poisson", "var_rnoise", "var_flat")


@pytest.fixture(autouse=True)
def _no_pars(monkeypatch):
    monkeypatch.setenv("STMATCH_DISABLE_PARS", "true")


@pytest.fixture(scope="module")
def exposure(tmp_path_factory):
    """A PSF varying over a 560 x 160 field: 3 row bands of a 15-pixel kernel."""
    exp = make_psfmatch_exposure(
        (560, 160),
        fwhm_range=(2.0, 2.8),
        variation="quadratic",
        n_stars=50,
        noise=0.3,
        grid=(3, 3),
        seed=21,
        nan_patch=True,
    )
    paths = write_psfmatch_exposure(tmp_path_factory.mktemp("psfmatch_dask"), exp)
    return exp, paths


def _pars(paths, **kw):
    return dict(
        psf=str(paths["psf"]),
        target_psf=str(paths["target_psf"]),
        kernel_size=15,
        cell_size=80,
        n_random_checks=0,
        **kw,
    )


def test_bands_on_dask_equal_in_process(exposure, dask_cluster, caplog):
    exp, paths = exposure
    local = PsfModelMatchStep(**_pars(paths)).run(exp.model)
    with caplog.at_level(logging.INFO, logger="stmatch"):
        step = PsfModelMatchStep(**_pars(paths, scheduler=dask_cluster))
        remote = step.run(exp.model)
    assert "Convolution in 3 row band(s)" in caplog.text
    assert "tasks on dask" in caplog.text
    rec = remote.meta.stmatch.instance["steps"]["stmatch_psfmatch"]
    assert rec["spatial_order"] == 2  # a spatially varying kernel was applied
    for name in ARRAYS:
        a = np.asarray(getattr(local, name))
        b = np.asarray(getattr(remote, name))
        assert np.array_equal(np.isnan(a), np.isnan(b)), name
        if a.dtype.kind == "f":
            ok = np.isfinite(a)
            assert ok.any() and not ok.all(), name  # the NaN patch and its dilation
            scale = float(np.max(np.abs(a[ok]))) or 1.0
            assert float(np.max(np.abs(a[ok] - b[ok]))) <= 1e-5 * scale, name
        # same blocks, same transform sizes: identical on one machine
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_one_band_runs_in_process(caplog):
    small = make_psfmatch_exposure(
        (96, 96), fwhm_range=(2.0, 2.0), variation="none", n_stars=8, noise=0.5, seed=4
    )
    kw = dict(psf_fwhm=2.0, target_psf_fwhm=3.0, kernel_size=11, n_random_checks=0)
    with caplog.at_level(logging.INFO, logger="stmatch"):
        # never contacted: a one-band image does not open the engine
        remote = PsfModelMatchStep.call(small.model, scheduler="tcp://127.0.0.1:9", **kw)
    assert "one row band: it runs in-process" in caplog.text
    local = PsfModelMatchStep.call(small.model, **kw)
    np.testing.assert_array_equal(remote.data, local.data)


def test_bad_scheduler_is_refused(exposure):
    exp, paths = exposure
    with pytest.raises(ValueError, match="scheduler"):
        PsfModelMatchStep.call(exp.model, **_pars(paths, scheduler="processes:0"))

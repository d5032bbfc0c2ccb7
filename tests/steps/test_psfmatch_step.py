"""PsfModelMatchStep end to end: PSFs in, matched exposure and kernel product out."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest
from stdatamodels.jwst.datamodels import ImageModel

from stmatch.algorithms.psf import gaussian_psf, recentre_psf
from stmatch.algorithms.psfgrid import fwhm_of
from stmatch.algorithms.psfmatch_metrics import encircled_energy
from stmatch.datasets import make_psfmatch_exposure, write_psfmatch_exposure
from stmatch.models import MatchingKernelModel, PsfModel
from stmatch.steps import PsfModelMatchStep


def _run(model, **pars):
    step = PsfModelMatchStep(**pars)
    result = step.run(model)
    return step, result


def _cutout(img, x, y, half):
    iy, ix = int(round(y)), int(round(x))
    return np.asarray(img[iy - half : iy + half + 1, ix - half : ix + half + 1], dtype=np.float64)


def _isolated_bright(stars, shape, margin, n=12, min_sep=25.0):
    order = np.argsort(stars["flux"])[::-1]
    keep = []
    for i in order:
        x, y = stars["x"][i], stars["y"][i]
        if not (margin <= x < shape[1] - margin and margin <= y < shape[0] - margin):
            continue
        d = np.hypot(stars["x"] - x, stars["y"] - y)
        if np.sort(d)[1] < min_sep:
            continue
        keep.append(i)
        if len(keep) == n:
            break
    return keep


@pytest.fixture(scope="module")
def constant_exposure():
    return make_psfmatch_exposure(
        (256, 256), fwhm_range=(2.0, 2.0), variation="none", n_stars=60, noise=0.5, seed=3
    )


def test_gaussian_to_gaussian_constant(constant_exposure):
    exp = constant_exposure
    before = hashlib.sha1(np.ascontiguousarray(exp.model.data).tobytes()).hexdigest()
    step, result = _run(exp.model, psf_fwhm=2.0, target_psf_fwhm=3.5)
    assert hashlib.sha1(np.ascontiguousarray(exp.model.data).tobytes()).hexdigest() == before
    assert isinstance(result, ImageModel) and result is not exp.model
    rec = result.meta.stmatch.instance["steps"]["stmatch_psfmatch"]
    assert rec["spatial_order"] == 0 and rec["n_cells"] == 1
    assert rec["max_aniano_d"] < 1e-3
    assert rec["kernel_sum_min"] == pytest.approx(1.0, abs=1e-12)
    # the target PSF is attached and stars now have its width
    assert fwhm_of(result.psf, deconvolve_pixel=True) == pytest.approx(3.5, rel=0.01)
    ok = ~np.isnan(result.data)
    half = 12
    for i in _isolated_bright(exp.stars, result.data.shape, 20, n=5):
        cut = _cutout(result.data, exp.stars["x"][i], exp.stars["y"][i], half)
        assert fwhm_of(cut / cut.sum(), deconvolve_pixel=True) == pytest.approx(3.5, rel=0.03)
    # flux conservation away from the edges (noise-free comparison on the sources)
    edge = 15
    inner = (slice(edge, -edge), slice(edge, -edge))
    assert ok[inner].all()
    assert isinstance(step.kernel_model, MatchingKernelModel)


def test_flux_conservation_and_variance_of_white_noise():
    rng = np.random.default_rng(5)
    m = ImageModel((200, 220))
    m.data = rng.normal(0.0, 1.0, m.data.shape).astype(np.float32)
    m.var_rnoise = np.ones(m.data.shape, np.float32)
    m.var_poisson = np.zeros(m.data.shape, np.float32)
    m.var_flat = np.zeros(m.data.shape, np.float32)
    m.err = np.ones(m.data.shape, np.float32)
    # a bright source in the middle: its flux is conserved
    m.data[100, 110] += 1e5
    step, out = _run(m, psf_fwhm=2.0, target_psf_fwhm=3.0, kernel_size=15)
    k = step.kernel_model.data[0]
    k = k / k.sum()
    box = (slice(80, 121), slice(90, 131))
    assert float(out.data[box].sum()) == pytest.approx(float(m.data[box].sum()), rel=1e-4)
    expected = float(np.sum(k * k))
    inner = (slice(20, -20), slice(20, -20))
    np.testing.assert_allclose(out.var_rnoise[inner], expected, rtol=2e-3)
    assert float(np.var(out.data[20:70, 20:-20])) == pytest.approx(expected, rel=0.1)
    np.testing.assert_allclose(out.err[inner], np.sqrt(expected), rtol=2e-3)


@pytest.fixture(scope="module")
def varying_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("psfmatch")
    exp = make_psfmatch_exposure(
        (384, 384),
        fwhm_range=(2.0, 3.0),
        variation="quadratic",
        n_stars=120,
        noise=0.2,
        grid=(5, 5),
        seed=11,
    )
    paths = write_psfmatch_exposure(d, exp)
    return exp, paths


def test_spatially_varying_psf_reaches_the_target(varying_files):
    """Isolated stars all over the field end with the target PSF (EE within 1 %).

    The PSF grid must describe the PSF well between its nodes: with a 3 x 3 grid of
    this quadratic FWHM field, bilinear interpolation of the stamps itself is ~2 %
    off in encircled energy, and no kernel can do better than its input PSF model.
    """
    exp, paths = varying_files
    model = ImageModel(paths["image"])
    step, result = _run(
        model, psf=str(paths["psf"]), target_psf=str(paths["target_psf"]), cell_size=64
    )
    rec = result.meta.stmatch.instance["steps"]["stmatch_psfmatch"]
    assert rec["spatial_order"] == 2 and rec["n_cells"] >= 6
    with PsfModel(str(paths["target_psf"])) as tm:
        target = np.array(tm.data[0], dtype=np.float64)
    r_t, ee_t = encircled_energy(target / target.sum())
    half = target.shape[0] // 2
    worst = 0.0
    for i in _isolated_bright(exp.stars, result.data.shape, half + 12, n=12):
        cut = _cutout(result.data, exp.stars["x"][i], exp.stars["y"][i], half)
        # centre the star on its stamp (sub-pixel Fourier shift) before comparing profiles
        r, ee = encircled_energy(recentre_psf(cut / cut.sum()))
        worst = max(worst, float(np.max(np.abs(np.interp(r_t, r, ee) - ee_t))))
    assert worst < 0.01


def test_residuals_fall_with_spatial_order(tmp_path):
    # a FWHM ramp from one corner to the other: the kernel width varies non-linearly
    exp = make_psfmatch_exposure(
        (256, 256), fwhm_range=(2.0, 3.2), variation="linear", n_stars=40, grid=(5, 5), seed=2
    )
    paths = write_psfmatch_exposure(tmp_path, exp)
    model = ImageModel(paths["image"])
    d = []
    for order in range(4):
        step = PsfModelMatchStep(
            psf=str(paths["psf"]),
            target_psf=str(paths["target_psf"]),
            spatial_kernel_order=order,
            cell_size=48,
        )
        step.run(model)
        d.append(step.kernel_model.meta.psfmatch.max_aniano_d_off_grid)
    assert d[0] > d[1] > d[2] > d[3]
    assert d[3] < 0.2 * d[0]


def test_outputs_written_and_kernel_reapplies(varying_files, tmp_path):
    exp, paths = varying_files
    PsfModelMatchStep.call(
        str(paths["image"]),
        psf=str(paths["psf"]),
        target_psf=str(paths["target_psf"]),
        output_dir=str(tmp_path),
        save_results=True,
        save_qa=True,
        cell_size=64,
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    out = [n for n in names if n.endswith("_psfmatch.fits")]
    kern = [n for n in names if n.endswith("_psfmatchkernel.asdf")]
    qa = [n for n in names if n.endswith("_psfmatch_qa.png")]
    assert out and kern and qa, names
    km = MatchingKernelModel(str(tmp_path / kern[0]))
    x, y = float(km.grid_x[7]), float(km.grid_y[7])
    np.testing.assert_allclose(km.kernel_at(x, y), km.data[7], atol=1e-12)
    assert km.quality.size > 0 and km.meta.psfmatch.method == "alard_lupton"


def test_deconvolution_is_refused_or_warned(constant_exposure, caplog):
    with pytest.raises(ValueError, match="narrower"):
        _run(constant_exposure.model, psf_fwhm=3.0, target_psf_fwhm=2.5)
    caplog.set_level(logging.WARNING, logger="stmatch")
    step, _ = _run(
        constant_exposure.model, psf_fwhm=3.0, target_psf_fwhm=2.5, allow_deconvolution=True
    )
    assert step.kernel_model.meta.psfmatch.deconvolution is True
    assert any("noise gain" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("method", ["delta_function", "fourier"])
def test_other_methods(constant_exposure, method):
    step, result = _run(constant_exposure.model, psf_fwhm=2.0, target_psf_fwhm=3.5, method=method)
    assert step.kernel_model.meta.psfmatch.method == method
    assert result.meta.stmatch.instance["steps"]["stmatch_psfmatch"]["max_aniano_d"] < 2e-2


def test_target_with_another_pixel_scale_is_resampled(constant_exposure, tmp_path):
    # the exposure has a WCS; a target PSF sampled twice as finely must be resampled
    from stmatch.steps._psfmatch_psf import pixel_scale

    scale = pixel_scale(constant_exposure.model)
    assert scale is not None
    fine = gaussian_psf(61, 7.0)  # 7 px at half the pixel size = 3.5 exposure pixels
    pm = PsfModel.from_arrays(fine, pixel_scale=scale / 2.0)
    path = tmp_path / "fine_psf.asdf"
    pm.save(str(path))
    step, result = _run(constant_exposure.model, psf_fwhm=2.0, target_psf=str(path))
    assert fwhm_of(result.psf, deconvolve_pixel=True) == pytest.approx(3.5, rel=0.02)


@pytest.mark.parametrize(
    ("pars", "match"),
    [
        ({"psf_fwhm": 2.0}, "no target PSF"),
        ({"psf_fwhm": 2.0, "target_psf_fwhm": 3.0, "target_image": "x.fits"}, "only one"),
        ({"psf_fwhm": 2.0, "target_psf_fwhm": 3.0, "kernel_size": 20}, "odd"),
        ({"psf_fwhm": 2.0, "target_psf_fwhm": 3.0, "kernel_size": 301}, "larger than the image"),
        ({"psf_fwhm": 2.0, "target_psf_fwhm": 3.0, "pad_psf_by": 3}, "even"),
        (
            {"psf_fwhm": 2.0, "target_psf_fwhm": 3.0, "psf_size": 9, "pad_psf_by": 0},
            "pad",
        ),
    ],
)
def test_bad_parameters_are_refused(constant_exposure, pars, match):
    with pytest.raises(ValueError, match=match):
        _run(constant_exposure.model, **pars)


def test_no_psf_obtainable():
    m = ImageModel((128, 128))
    m.data = np.random.default_rng(1).normal(size=(128, 128)).astype(np.float32)
    with pytest.raises(ValueError, match="give a PSF file"):
        _run(m, target_psf_fwhm=3.0)


def test_even_or_unnormalisable_psf_files(constant_exposure, tmp_path):
    from astropy.io import fits

    even = tmp_path / "even.fits"
    fits.PrimaryHDU(np.ones((10, 10), np.float32)).writeto(even)
    with pytest.raises(ValueError, match="odd"):
        _run(constant_exposure.model, psf=str(even), target_psf_fwhm=3.0)
    zero = tmp_path / "zero.fits"
    fits.PrimaryHDU(np.zeros((11, 11), np.float32)).writeto(zero)
    with pytest.raises(ValueError, match="sum"):
        _run(constant_exposure.model, psf=str(zero), target_psf_fwhm=3.0)


def test_nan_pixels_are_contained(constant_exposure):
    m = constant_exposure.model.copy()
    m.data[100, 100] = np.nan
    step, result = _run(m, psf_fwhm=2.0, target_psf_fwhm=3.5)
    nan = np.isnan(result.data)
    assert nan[100, 100]
    ys, xs = np.nonzero(nan)
    assert ys.min() >= 100 - 10 and ys.max() <= 100 + 10
    assert xs.min() >= 100 - 10 and xs.max() <= 100 + 10
    assert (result.dq[nan] & 1).all()


def test_target_from_another_exposure(constant_exposure, tmp_path):
    """target_image: a PSF-matched product's attached PSF, else the exposure's stars."""
    _, matched = _run(constant_exposure.model, psf_fwhm=2.0, target_psf_fwhm=3.5)
    path = tmp_path / "reference_psfmatch.fits"
    matched.save(str(path))
    step, again = _run(constant_exposure.model, psf_fwhm=2.0, target_image=str(path))
    assert "attached" in step.kernel_model.meta.psfmatch.target_psf
    assert fwhm_of(again.psf, deconvolve_pixel=True) == pytest.approx(3.5, rel=0.01)
    wide = make_psfmatch_exposure(
        (256, 256), fwhm_range=(3.2, 3.2), variation="none", n_stars=60, noise=0.5, seed=8
    )
    other = tmp_path / "wide_cal.fits"
    wide.model.save(str(other))
    step, out = _run(constant_exposure.model, psf_fwhm=2.0, target_image=str(other))
    assert "empirical" in step.kernel_model.meta.psfmatch.target_psf
    assert fwhm_of(out.psf, deconvolve_pixel=True) == pytest.approx(3.2, rel=0.05)

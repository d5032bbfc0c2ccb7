"""ZogyStep end to end on synthetic pairs (stmatch.datasets.make_zogy_pair)."""

import logging
import os

import numpy as np
import pytest

from stmatch.datasets import make_zogy_pair, write_zogy_pair
from stmatch.models import DifferenceImageModel
from stmatch.steps import ZogyStep

from ._util import digest

SHAPE = (192, 192)


@pytest.fixture(autouse=True)
def _no_pars(monkeypatch):
    # Packaged NIRCam parameters (tiles, astrometric noise) are tested separately.
    monkeypatch.setenv("STMATCH_DISABLE_PARS", "true")


@pytest.fixture(scope="module")
def pair():
    return make_zogy_pair(SHAPE, n_stars=40, n_transients=6, n_vanished=2, seed=3)


def _run(pair, **kw):
    kw.setdefault("science_psf_fwhm", 3.0)
    kw.setdefault("template_psf_fwhm", 2.2)
    return ZogyStep.call(pair.science, pair.template, **kw)


def _matched(catalog, truth, radius=1.5):
    """Index of the detection within ``radius`` px of each true position (-1 if none)."""
    out = []
    for x, y in zip(truth["x"], truth["y"], strict=True):
        d = np.hypot(catalog["x"] - x, catalog["y"] - y) if len(catalog) else np.array([])
        out.append(int(np.argmin(d)) if d.size and d.min() < radius else -1)
    return np.array(out)


def test_transients_found_with_right_sign_and_flux(pair):
    step = ZogyStep(science_psf_fwhm=3.0, template_psf_fwhm=2.2)
    result = step.run(pair.science, pair.template)
    assert isinstance(result, DifferenceImageModel)
    cat = step.catalog
    idx = _matched(cat, pair.transients)
    assert (idx >= 0).all(), "every transient is detected"
    kinds = np.asarray(cat["kind"])[idx]
    assert list(kinds) == list(pair.transients["kind"])
    # Flux of the detection (science units) agrees with the truth within 4 sigma.
    alpha = np.asarray(cat["alpha"])[idx]
    err = np.asarray(cat["alpha_err"])[idx]
    truth = np.where(pair.transients["kind"] == "new", 1, -1) * pair.transients["flux"]
    assert np.all(np.abs(alpha - truth) < 4 * err + 0.05 * np.abs(truth))
    # Static stars with correct PSFs leave no detections.
    assert len(cat) == len(pair.transients)
    z = result.meta.zogy
    assert z.flux_ratio == pytest.approx(1.0)
    assert z.flux_ratio_source == "metadata"
    assert z.sigma_source_new == "variance"
    assert z.sigma_new == pytest.approx(pair.sigma_science, rel=1e-6)
    assert z.n_detections == len(cat)
    assert z.template_resampled is False
    assert z.psf_recentred is False
    assert abs(z.background_new) < 0.2 and abs(z.background_ref) < 0.1
    assert result.meta.cal_step.stmatch_zogy == "COMPLETE"
    assert result.psf.shape[0] == 1 and result.psf.sum() == pytest.approx(1.0, rel=1e-5)
    assert result.meta.wcs is not None


def test_outputs_are_consistent(pair):
    result = _run(pair)
    z = result.meta.zogy
    ok = np.isfinite(result.data) & (result.dq == 0)
    # D / err is unit-variance white noise on empty sky: D has std err.
    far = ok & (np.abs(result.scorr) < 3)
    pull = result.data[far] / result.err[far]
    assert np.std(pull) == pytest.approx(1.0, abs=0.06)
    # alpha = S / F_S in science units (flux ratio 1 here), err consistent with S_corr.
    sel = ok & (result.alpha_err > 0)
    np.testing.assert_allclose(
        result.alpha[sel] / result.alpha_err[sel], result.scorr[sel], rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(result.alpha[sel], result.score[sel] / z.f_s, rtol=1e-4, atol=1e-6)
    assert result.var[ok] == pytest.approx(result.err[ok] ** 2, rel=1e-5)


def test_inputs_untouched_and_products_written(pair, tmp_path):
    files = write_zogy_pair(pair, tmp_path / "in")
    before = digest(tmp_path / "in")
    out = tmp_path / "out"
    ZogyStep.call(
        str(files["asn"]),
        science_psf=str(files["psf_science"]),
        template_psf=str(files["psf_template"]),
        output_dir=str(out),
        save_results=True,
        save_qa=True,
        qa_cutouts=3,
    )
    assert digest(tmp_path / "in") == before
    names = sorted(p.name for p in out.iterdir())
    assert "zogy_science_zogy.fits" in names
    assert "zogy_science_zogy_cat.ecsv" in names
    assert "zogy_science_zogy_qa.png" in names
    assert not [n for n in names if n.startswith(".")], "no temporary files left"
    from astropy.table import Table

    import stmatch.models

    cat = Table.read(out / "zogy_science_zogy_cat.ecsv")
    assert len(cat) == len(pair.transients)
    assert {"ra", "dec", "s_corr", "alpha", "alpha_err", "kind"} <= set(cat.colnames)
    with stmatch.models.open(out / "zogy_science_zogy.fits") as model:
        assert isinstance(model, DifferenceImageModel)
        assert "file" in model.meta.zogy.psf_source_new or ".fits" in (
            model.meta.zogy.psf_source_new
        )
        # Sky positions of detections agree with the truth (to 0.3 px).
        idx = _matched(cat, pair.transients)
        ra_true = pair.transients["ra"]
        d_arcsec = (
            np.hypot(
                (np.asarray(cat["ra"])[idx] - ra_true) * np.cos(np.radians(2.0)),
                np.asarray(cat["dec"])[idx] - pair.transients["dec"],
            )
            * 3600
        )
        assert d_arcsec.max() < 0.3 * 0.06


def test_template_on_another_grid_is_resampled(caplog):
    pair = make_zogy_pair(
        SHAPE,
        n_stars=30,
        n_transients=5,
        template_shift=(7.3, -4.6),
        template_rotation=20.0,
        template_shape=(230, 230),
        fwhm_template=2.6,
        seed=5,
    )
    with caplog.at_level(logging.INFO, logger="stmatch"):
        step = ZogyStep(science_psf_fwhm=3.0, template_psf_fwhm=2.6)
        result = step.run(pair.science, pair.template)
    assert "Resampling the template" in caplog.text
    assert result.meta.zogy.template_resampled is True
    idx = _matched(step.catalog, pair.transients)
    assert (idx >= 0).all()
    # Stars away from the transients leave at most weak residuals.
    ok = np.isfinite(result.scorr)
    assert np.nanmax(np.abs(result.scorr[ok])) < 200
    stars = pair.stars[pair.stars["in_science"]]
    for x, y in zip(stars["x_sci"], stars["y_sci"], strict=True):
        yi, xi = int(round(y)), int(round(x))
        if 5 <= yi < SHAPE[0] - 5 and 5 <= xi < SHAPE[1] - 5:
            assert np.nanmax(np.abs(result.scorr[yi - 1 : yi + 2, xi - 1 : xi + 2])) < 6


def test_empirical_psfs_when_none_given():
    pair = make_zogy_pair(SHAPE, n_stars=45, star_flux_range=(2e3, 4e4), n_transients=4, seed=8)
    step = ZogyStep()
    result = step.run(pair.science, pair.template)
    z = result.meta.zogy
    assert z.psf_source_new.startswith("empirical")
    assert z.psf_source_ref.startswith("empirical")
    cat = step.catalog
    idx = _matched(cat, pair.transients)
    assert (idx >= 0).all()
    # Empirical PSFs are good to a few 1e-3 of the peak: the brightest stars (S/N in the
    # thousands) may leave weak residuals, but nothing else is detected.
    others = np.setdiff1d(np.arange(len(cat)), idx)
    stars = pair.stars
    for k in others:
        d = np.hypot(stars["x_sci"] - cat["x"][k], stars["y_sci"] - cat["y"][k])
        assert d.min() < 6.0, "a false detection away from any star"
        assert abs(cat["s_corr"][k]) < 0.01 * stars["flux_sci"][np.argmin(d)]


def test_flux_ratio_fit_catches_a_two_percent_error():
    pair = make_zogy_pair(
        SHAPE, n_stars=50, star_flux_range=(2e3, 5e4), n_transients=3, flux_ratio=1.02, seed=9
    )
    # Metadata says "same units" (beta = 1): bright stars leave residuals.
    plain = _run(pair)
    step = ZogyStep(science_psf_fwhm=3.0, template_psf_fwhm=2.2, fit_flux_ratio=True)
    fitted = step.run(pair.science, pair.template)
    z = fitted.meta.zogy
    assert z.flux_ratio_source == "fit"
    assert abs(z.flux_ratio - 1.02) < 3 * z.flux_ratio_err
    assert z.flux_ratio_err < 0.005
    assert np.nanmax(np.abs(plain.scorr)) > np.nanmax(np.abs(fitted.scorr[fitted.dq == 0])) - 1
    n_plain = int(np.sum(np.abs(plain.scorr) > 5))
    n_fit = int(np.sum(np.abs(fitted.scorr) > 5))
    assert n_fit < n_plain


def test_tiled_equals_untiled_in_the_interior(pair):
    whole = _run(pair)
    tiled = _run(pair, tile_size=64)
    assert tiled.meta.zogy.n_tiles == 9 and len(tiled.tiles) == 9
    assert tiled.psf.shape[0] == 9
    inner = (slice(20, -20), slice(20, -20))
    np.testing.assert_allclose(tiled.scorr[inner], whole.scorr[inner], atol=2e-4)
    np.testing.assert_allclose(tiled.data[inner], whole.data[inner], atol=2e-4)


def test_physical_units_and_float32():
    a = make_zogy_pair((128, 128), n_stars=15, n_transients=3, seed=4)
    b = make_zogy_pair((128, 128), n_stars=15, n_transients=3, seed=4, unit_scale=1e-19)
    ra = _run(a)
    rb = _run(b)
    np.testing.assert_allclose(rb.scorr, ra.scorr, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(rb.data, ra.data * 1e-19, rtol=1e-4, atol=1e-4 * 1e-19)
    assert rb.data.dtype == np.float32


def test_nan_patches_are_masked_not_spread():
    pair = make_zogy_pair((160, 160), n_stars=20, n_transients=3, nan_patches=2, seed=6)
    result = _run(pair)
    bad = ~np.isfinite(pair.science.data)
    assert bad.any()
    assert np.all(result.dq[bad] & 1)
    assert np.isnan(result.scorr[bad]).all()
    # Most of the image is still good.
    assert np.mean(np.isfinite(result.scorr)) > 0.7


@pytest.mark.parametrize(
    "case, match",
    [
        ("no_overlap", "overlap"),
        ("no_wcs", "WCS"),
        ("psf_too_large", "larger than the image"),
        ("all_masked", "usable pixel"),
        ("zero_variance", "zero"),
        ("no_template", "no template"),
    ],
)
def test_bad_input_gives_clear_errors_and_writes_nothing(case, match, tmp_path):
    pair = make_zogy_pair((96, 96), n_stars=8, n_transients=1, seed=2)
    sci, tpl = pair.science.copy(), pair.template.copy()
    kw = dict(science_psf_fwhm=3.0, template_psf_fwhm=2.2)
    args = (sci, tpl)
    if case == "no_overlap":
        far = make_zogy_pair((96, 96), n_stars=8, n_transients=1, seed=2, ra=10.0, dec=-30.0)
        args = (sci, far.template)
    elif case == "no_wcs":
        tpl = make_zogy_pair((80, 80), n_stars=8, n_transients=1, seed=2).template
        tpl.meta.wcs = None
        args = (sci, tpl)
    elif case == "psf_too_large":
        kw["psf_size"] = 151
    elif case == "all_masked":
        sci.dq[:] = 1
    elif case == "zero_variance":
        tpl.var_rnoise[:] = 0.0
        tpl.err[:] = 0.0
        tpl.data[:] = 0.0
    elif case == "no_template":
        args = (sci,)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        ZogyStep.call(*args, output_dir=str(tmp_path), save_results=True, **kw)
    assert os.listdir(tmp_path) == []


def test_psf_grid_file_with_tiles(pair, tmp_path):
    """A PsfModel grid file (4 PSFs at detector positions) is evaluated per tile."""
    from stmatch.algorithms.psf import gaussian_psf
    from stmatch.models import PsfModel

    stamps = np.stack([gaussian_psf(25, 3.0)] * 4)
    grid = PsfModel.from_arrays(stamps, x=[0.0, 191.0, 0.0, 191.0], y=[0.0, 0.0, 191.0, 191.0])
    path = tmp_path / "sci_psf.asdf"
    grid.save(str(path))
    ref = _run(pair)
    step = ZogyStep(science_psf=str(path), template_psf_fwhm=2.2, tile_size=96)
    res = step.run(pair.science, pair.template)
    assert "grid of 4 PSFs" in res.meta.zogy.psf_source_new
    assert res.meta.zogy.n_tiles == 4 and res.psf.shape[0] == 4
    inner = (slice(20, -20), slice(20, -20))
    np.testing.assert_allclose(res.scorr[inner], ref.scorr[inner], atol=1e-3)
    assert len(step.catalog) == len(pair.transients)


def test_off_centre_psf_pair_is_recentred_with_a_warning(pair, tmp_path, caplog):
    from astropy.io import fits

    from stmatch.algorithms.psf import centroid, gaussian_psf

    off = gaussian_psf(25, 3.0, center=(12.0, 12.4))  # centroid 0.4 px off centre
    path = tmp_path / "off_psf.fits"
    fits.PrimaryHDU(off.astype(np.float32)).writeto(path)
    assert centroid(off)[1] == pytest.approx(12.4, abs=1e-3)
    with caplog.at_level(logging.WARNING, logger="stmatch"):
        res = ZogyStep.call(
            pair.science, pair.template, science_psf=str(path), template_psf_fwhm=2.2
        )
    assert "re-centring both PSFs" in caplog.text
    assert res.meta.zogy.psf_recentred is True
    # After re-centring the result equals the run with centred PSFs.
    ref = _run(pair)
    inner = (slice(15, -15), slice(15, -15))
    np.testing.assert_allclose(res.scorr[inner], ref.scorr[inner], atol=0.2)


def test_association_as_a_dict_and_bad_associations(pair, tmp_path, monkeypatch):
    import json

    files = write_zogy_pair(pair, tmp_path)
    asn = json.loads(files["asn"].read_text())
    monkeypatch.chdir(tmp_path)
    res = ZogyStep.call(asn, science_psf_fwhm=3.0, template_psf_fwhm=2.2)
    assert res.meta.zogy.template == "zogy_template_i2d.fits"
    asn["products"][0]["members"] = [
        m for m in asn["products"][0]["members"] if m["exptype"] == "science"
    ]
    bad = tmp_path / "bad_asn.json"
    bad.write_text(json.dumps(asn))
    with pytest.raises(ValueError, match="exactly one member of exptype 'template'"):
        ZogyStep.call(str(bad), science_psf_fwhm=3.0, template_psf_fwhm=2.2)

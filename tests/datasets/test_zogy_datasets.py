"""Tests of the synthetic ZOGY science/template pairs in `stmatch.datasets`."""

import json
import math

import numpy as np
import pytest
from astropy.io import fits
from stdatamodels.jwst.datamodels.dqflags import pixel as dqflags

from stmatch.algorithms.psf import centroid, gaussian_psf, moffat_psf
from stmatch.datasets import (
    ZogyPair,
    inject_transients,
    make_zogy_pair,
    psf_stamp,
    render_point_sources,
    write_zogy_pair,
)

SMALL = (128, 128)
ARRAYS = ("data", "err", "var_rnoise", "var_poisson", "var_flat")


def _box_sum(image, x, y, half):
    """Sum of the (2 half + 1)^2 box centred on the pixel nearest to (x, y)."""
    cx, cy = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
    return float(np.sum(image[cy - half : cy + half + 1, cx - half : cx + half + 1], dtype=float))


def _wcs_params(wcs):
    return np.array(wcs.forward_transform.parameters, dtype=float)


@pytest.fixture(scope="module")
def pair():
    return make_zogy_pair(SMALL, n_stars=30, n_transients=5, n_vanished=1, seed=4)


@pytest.fixture(scope="module")
def pair_rotated():
    """Template on another, larger, shifted and rotated grid; noise-free."""
    return make_zogy_pair(
        SMALL,
        n_stars=30,
        n_transients=4,
        n_vanished=1,
        template_shift=(3.7, -2.2),
        template_rotation=25.0,
        template_shape=(150, 140),
        noise_science=0.0,
        noise_template=0.0,
        seed=5,
    )


# ---------------------------------------------------------------- render_point_sources


class TestRenderPointSources:
    @pytest.mark.parametrize("x, y", [(40.0, 50.0), (40.3, 50.7), (41.5, 49.5), (40.49, 50.02)])
    def test_gaussian_flux_and_centroid(self, x, y):
        image = render_point_sources((96, 96), x, y, 1234.5, fwhm=3.0)
        assert abs(image.sum() - 1234.5) < 1e-4 * 1234.5
        cy, cx = centroid(image)
        assert abs(cx - x) < 1e-3
        assert abs(cy - y) < 1e-3

    @pytest.mark.parametrize("x, y", [(40.3, 50.7), (41.5, 49.5)])
    def test_moffat_flux_and_centroid(self, x, y):
        image = render_point_sources((96, 96), x, y, 500.0, psf="moffat", fwhm=3.0, beta=2.5)
        assert abs(image.sum() - 500.0) < 1e-4 * 500.0
        cy, cx = centroid(image)
        # the Moffat wings beyond the stamp are dropped: small centroid bias
        assert abs(cx - x) < 1e-2
        assert abs(cy - y) < 1e-2

    @pytest.mark.parametrize("kind", ["gaussian", "moffat"])
    def test_integer_position_is_the_stamp(self, kind):
        stamp = psf_stamp(kind, 2.5)
        assert stamp.shape == (21, 21)
        assert abs(stamp.sum() - 1.0) < 1e-12
        assert centroid(stamp) == pytest.approx((10.0, 10.0), abs=1e-9)
        image = render_point_sources((60, 60), 30.0, 25.0, 7.0, psf=kind, fwhm=2.5)
        np.testing.assert_allclose(image[15:36, 20:41], 7.0 * stamp, rtol=0, atol=1e-12)
        assert image.sum() == pytest.approx(7.0, rel=1e-12)

    def test_psf_stamp_matches_psf_module(self):
        np.testing.assert_array_equal(psf_stamp("gaussian", 3.0), gaussian_psf(25, 3.0))
        np.testing.assert_array_equal(
            psf_stamp("moffat", 2.0, size=17, beta=3.0), moffat_psf(17, 2.0, beta=3.0)
        )

    def test_array_psf_fourier_shift(self):
        stamp = psf_stamp("gaussian", 4.0)
        shifted = render_point_sources((80, 80), 30.3, 40.7, 2.0, psf=stamp)
        analytic = render_point_sources((80, 80), 30.3, 40.7, 2.0, psf="gaussian", fwhm=4.0)
        np.testing.assert_allclose(shifted, analytic, atol=1e-7)
        assert centroid(shifted) == pytest.approx((40.7, 30.3), abs=1e-6)

    def test_several_sources_and_clipping(self):
        image = render_point_sources(
            (50, 60), [10.2, 59.6, -30.0], [20.1, 25.0, 10.0], [100.0, 80.0, 5.0], fwhm=2.0
        )
        # the first is fully inside, about half of the second is beyond x = 59.5,
        # the third is far outside
        left = image[:, :35].sum()
        right = image[:, 35:].sum()
        assert left == pytest.approx(100.0, rel=1e-9)
        assert 0.3 * 80.0 < right < 0.7 * 80.0
        assert image.dtype == np.float64
        f32 = render_point_sources((50, 60), 10.2, 20.1, 100.0, fwhm=2.0, dtype=np.float32)
        assert f32.dtype == np.float32

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="PSF kind"):
            render_point_sources((10, 10), 1.0, 1.0, 1.0, psf="airy")
        with pytest.raises(ValueError, match="odd"):
            render_point_sources((10, 10), 1.0, 1.0, 1.0, psf=np.ones((4, 5)))
        with pytest.raises(ValueError, match="odd"):
            psf_stamp("gaussian", 2.0, size=10)
        with pytest.raises(ValueError, match="finite"):
            render_point_sources((10, 10), np.nan, 1.0, 1.0)
        with pytest.raises(ValueError, match="fwhm"):
            render_point_sources((10, 10), 1.0, 1.0, 1.0, fwhm=0.0)


# ---------------------------------------------------------------------- make_zogy_pair


class TestMakeZogyPair:
    def test_structure_and_metadata(self, pair):
        assert isinstance(pair, ZogyPair)
        sci, tmpl = pair.science, pair.template
        assert sci.meta.filename == "zogy_science_cal.fits"
        assert tmpl.meta.filename == "zogy_template_i2d.fits"
        for model in (sci, tmpl):
            assert model.data.shape == SMALL
            for name in ARRAYS:
                assert getattr(model, name).dtype == np.float32
            assert model.dq.dtype == np.uint32
            assert model.meta.bunit_data == "MJy/sr"
            assert model.meta.photometry.conversion_megajanskys == 1.0
            assert model.meta.instrument.name == "NIRCAM"
            assert model.meta.exposure.type == "NRC_IMAGE"
        assert tmpl.meta.exposure.start_time < sci.meta.exposure.start_time
        assert pair.flux_ratio == 1.0
        assert (pair.sigma_science, pair.sigma_template) == (1.0, 0.5)
        for psf in (pair.psf_science, pair.psf_template):
            assert psf.shape == (25, 25)  # odd >= 8 * max(fwhm)
            assert abs(psf.sum() - 1.0) < 1e-12
            assert centroid(psf) == pytest.approx((12.0, 12.0), abs=1e-9)

    def test_catalogues(self, pair):
        stars, tr = pair.stars, pair.transients
        assert np.count_nonzero(stars["in_science"]) == 30
        assert list(tr["kind"]) == ["new"] * 4 + ["gone"]
        assert np.all((tr["flux"] >= 100.0) & (tr["flux"] <= 1000.0))
        assert np.all((stars["flux_tmpl"] >= 200.0) & (stars["flux_tmpl"] <= 2e4))
        # every source at least 3 * max(fwhm) = 9 px from every other one
        x = np.concatenate([stars["x_sci"], tr["x"]])
        y = np.concatenate([stars["y_sci"], tr["y"]])
        d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
        np.fill_diagonal(d, np.inf)
        assert d.min() >= 9.0
        # transients 9 px from the edges
        assert np.all((tr["x"] >= 8.5) & (tr["x"] <= 127.5 - 9.0))
        assert np.all((tr["y"] >= 8.5) & (tr["y"] <= 127.5 - 9.0))

    def test_deterministic(self, pair):
        again = make_zogy_pair(SMALL, n_stars=30, n_transients=5, n_vanished=1, seed=4)
        for name in ARRAYS + ("dq",):
            np.testing.assert_array_equal(getattr(again.science, name), getattr(pair.science, name))
            np.testing.assert_array_equal(
                getattr(again.template, name), getattr(pair.template, name)
            )
        np.testing.assert_array_equal(again.stars, pair.stars)
        np.testing.assert_array_equal(again.transients, pair.transients)
        other = make_zogy_pair(SMALL, n_stars=30, n_transients=5, n_vanished=1, seed=5)
        assert not np.array_equal(other.science.data, pair.science.data)

    @pytest.mark.parametrize("fixture", ["pair", "pair_rotated"])
    def test_positions_through_wcs(self, fixture, request):
        p = request.getfixturevalue(fixture)
        for cat, xs, ys in ((p.stars, "x_sci", "y_sci"), (p.transients, "x", "y")):
            x, y = p.science.meta.wcs.invert(cat["ra"], cat["dec"], with_bounding_box=False)
            assert np.max(np.hypot(x - cat[xs], y - cat[ys])) < 1e-3
            x, y = p.template.meta.wcs.invert(cat["ra"], cat["dec"], with_bounding_box=False)
            assert np.max(np.hypot(x - cat["x_tmpl"], y - cat["y_tmpl"])) < 1e-3

    def test_same_grid_identical_wcs(self, pair):
        ws, wt = pair.science.meta.wcs, pair.template.meta.wcs
        np.testing.assert_array_equal(_wcs_params(ws), _wcs_params(wt))
        assert ws.bounding_box.bounding_box() == wt.bounding_box.bounding_box()
        np.testing.assert_array_equal(pair.stars["x_sci"], pair.stars["x_tmpl"])
        np.testing.assert_array_equal(pair.stars["y_sci"], pair.stars["y_tmpl"])

    def test_shifted_grid(self):
        p = make_zogy_pair((96, 96), n_stars=10, n_transients=2, template_shift=(2.5, -1.25))
        assert not np.array_equal(_wcs_params(p.science.meta.wcs), _wcs_params(p.template.meta.wcs))
        np.testing.assert_allclose(p.stars["x_tmpl"] - p.stars["x_sci"], 2.5, atol=1e-6)
        np.testing.assert_allclose(p.stars["y_tmpl"] - p.stars["y_sci"], -1.25, atol=1e-6)

    def test_rotated_grid(self, pair_rotated):
        p = pair_rotated
        assert p.template.data.shape == (150, 140)
        assert not np.array_equal(_wcs_params(p.science.meta.wcs), _wcs_params(p.template.meta.wcs))
        st = p.stars
        # rotation: offsets between two stars turn by 25 degrees (sign set by the parity)
        i, j = 0, 1
        a_s = math.atan2(st["y_sci"][j] - st["y_sci"][i], st["x_sci"][j] - st["x_sci"][i])
        a_t = math.atan2(st["y_tmpl"][j] - st["y_tmpl"][i], st["x_tmpl"][j] - st["x_tmpl"][i])
        turn = math.degrees(a_t - a_s)
        assert (
            min(abs((turn - 25.0 + 180) % 360 - 180), abs((turn + 25.0 + 180) % 360 - 180)) < 1e-6
        )
        # stars are rendered at their template positions: centroid of an isolated star
        half = 4  # 4 px box: isolation is 9 px
        tmpl = p.template.data.astype(float)
        ny, nx = tmpl.shape
        inner = (
            (st["x_tmpl"] > half + 1)
            & (st["x_tmpl"] < nx - half - 2)
            & (st["y_tmpl"] > half + 1)
            & (st["y_tmpl"] < ny - half - 2)
        )
        assert np.count_nonzero(inner) >= 10
        for s in st[inner]:
            cx, cy = int(math.floor(s["x_tmpl"] + 0.5)), int(math.floor(s["y_tmpl"] + 0.5))
            cut = tmpl[cy - half : cy + half + 1, cx - half : cx + half + 1]
            my, mx = centroid(cut)
            # a 9x9 box holds > 99.99 % of a FWHM 2.2 px Gaussian
            assert abs(cx - half + mx - s["x_tmpl"]) < 2e-3
            assert abs(cy - half + my - s["y_tmpl"]) < 2e-3

    def test_transients_only_where_expected(self):
        beta = 1.7
        p = make_zogy_pair(
            SMALL,
            n_stars=8,
            n_transients=4,
            n_vanished=1,
            noise_science=0.0,
            noise_template=0.0,
            flux_ratio=beta,
            isolation=26.0,  # stamps (25 px) of different sources do not overlap
            transient_margin=13.0,
            seed=2,
        )
        sci = p.science.data.astype(float)
        tmpl = p.template.data.astype(float)
        diff = sci - beta * tmpl
        for t in p.transients:
            new = t["kind"] == "new"
            s_sum = _box_sum(sci, t["x"], t["y"], 12)
            t_sum = _box_sum(tmpl, t["x_tmpl"], t["y_tmpl"], 12)
            d_sum = _box_sum(diff, t["x"], t["y"], 12)
            assert d_sum == pytest.approx(t["flux"] if new else -t["flux"], rel=1e-4)
            assert abs(s_sum - (t["flux"] if new else 0.0)) < 1e-4 * t["flux"]
            assert abs(t_sum - (0.0 if new else t["flux_tmpl"])) < 1e-4 * t["flux"]
        for s in p.stars[p.stars["in_science"]]:
            if 12 <= s["x_sci"] <= 115 and 12 <= s["y_sci"] <= 115:
                assert _box_sum(sci, s["x_sci"], s["y_sci"], 12) == pytest.approx(
                    s["flux_sci"], rel=1e-5
                )
                assert _box_sum(tmpl, s["x_tmpl"], s["y_tmpl"], 12) == pytest.approx(
                    s["flux_tmpl"], rel=1e-5
                )
                assert abs(_box_sum(diff, s["x_sci"], s["y_sci"], 12)) < 1e-5 * s["flux_sci"]

    def test_transients_at_high_snr(self, pair):
        # noisy images, 7x7 box (neighbours are >= 9 px away): the expected box sum is that of
        # the transient alone, sigma = 7 * sqrt(1 + 0.5**2) ~ 7.8
        diff = pair.science.data.astype(float) - pair.template.data.astype(float)
        for t in pair.transients:
            new = t["kind"] == "new"
            alone = render_point_sources(SMALL, t["x"], t["y"], t["flux"], fwhm=3.0 if new else 2.2)
            expected = _box_sum(alone, t["x"], t["y"], 3) * (1 if new else -1)
            assert abs(expected) > 0.5 * t["flux"]
            assert abs(_box_sum(diff, t["x"], t["y"], 3) - expected) < 5 * 7.8

    def test_noise_and_variance(self):
        p = make_zogy_pair(
            SMALL,
            n_stars=0,
            n_transients=0,
            noise_science=2.0,
            noise_template=0.5,
            sky_science=10.0,
            sky_template=-3.0,
            seed=8,
        )
        for model, sigma, sky in ((p.science, 2.0, 10.0), (p.template, 0.5, -3.0)):
            data = model.data.astype(float)
            assert abs(data.std() / sigma - 1.0) < 0.03
            assert abs(data.mean() - sky) < 5 * sigma / 128
            np.testing.assert_array_equal(model.err, np.float32(sigma))
            np.testing.assert_array_equal(model.var_rnoise, np.float32(sigma**2))
            assert not np.any(model.var_poisson) and not np.any(model.var_flat)
            assert not np.any(model.dq)
        # independent noise in the two images
        r = np.corrcoef(p.science.data.ravel(), p.template.data.ravel())[0, 1]
        assert abs(r) < 0.05

    def test_unit_scale(self):
        kw = {"n_stars": 10, "n_transients": 2, "seed": 9}
        base = make_zogy_pair((64, 64), **kw)
        scaled = make_zogy_pair((64, 64), unit_scale=1e-19, **kw)
        for a, b in ((base.science, scaled.science), (base.template, scaled.template)):
            np.testing.assert_allclose(b.data, a.data.astype(float) * 1e-19, rtol=1e-6, atol=0)
            np.testing.assert_allclose(b.err, a.err.astype(float) * 1e-19, rtol=1e-6)
            np.testing.assert_allclose(b.var_rnoise, a.var_rnoise * 1e-38, rtol=1e-5)
        assert scaled.sigma_science == pytest.approx(1e-19)
        np.testing.assert_allclose(scaled.stars["flux_tmpl"], base.stars["flux_tmpl"] * 1e-19)
        np.testing.assert_allclose(scaled.transients["flux"], base.transients["flux"] * 1e-19)

    def test_nan_patches_and_saturation(self):
        p = make_zogy_pair(
            SMALL, n_stars=20, n_transients=3, nan_patches=3, saturation=300.0, seed=6
        )
        sat = np.uint32(dqflags["SATURATED"] | dqflags["DO_NOT_USE"])
        dnu = np.uint32(dqflags["DO_NOT_USE"])
        for model in (p.science, p.template):
            nan = np.isnan(model.data)
            assert np.count_nonzero(nan) >= 3 * 25
            assert np.all(model.dq[nan] & dnu)
            for name in ARRAYS:
                assert np.array_equal(np.isnan(getattr(model, name)), nan)
            saturated = (model.dq & sat) == sat
            assert np.any(saturated)
            assert np.all(model.data[saturated & ~nan] > 300.0)
            assert not np.any(model.data[~saturated & ~nan] > 300.0)
        # NaN patches stay clear of the transients
        for t in p.transients:
            assert np.isfinite(p.science.data[int(round(t["y"])), int(round(t["x"]))])

    def test_moffat_pair(self):
        p = make_zogy_pair((96, 96), n_stars=10, n_transients=2, psf_kind="moffat", seed=1)
        np.testing.assert_array_equal(p.psf_science, psf_stamp("moffat", 3.0, size=25))
        np.testing.assert_array_equal(p.psf_template, psf_stamp("moffat", 2.2, size=25))

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="n_vanished"):
            make_zogy_pair((64, 64), n_transients=2, n_vanished=3)
        with pytest.raises(ValueError, match="PSF kind"):
            make_zogy_pair((64, 64), psf_kind="airy")
        with pytest.raises(ValueError, match="could not place"):
            make_zogy_pair((32, 32), n_stars=50, isolation=20.0)
        with pytest.raises(ValueError, match="flux_ratio"):
            make_zogy_pair((64, 64), flux_ratio=0.0)
        with pytest.raises(ValueError, match="noise_science"):
            make_zogy_pair((64, 64), noise_science=-1.0)


# ---------------------------------------------------------- inject_transients and writing


def test_inject_transients_leaves_input_alone(pair):
    model = pair.science
    before = {name: getattr(model, name).copy() for name in ARRAYS + ("dq",)}
    x, y, flux = [30.2, 70.6], [40.4, 90.1], [500.0, 250.0]
    out = inject_transients(model, x, y, flux, fwhm=3.0)
    for name, arr in before.items():
        np.testing.assert_array_equal(getattr(model, name), arr)
    assert out is not model
    expected = render_point_sources(model.data.shape, x, y, flux, fwhm=3.0)
    np.testing.assert_allclose(
        out.data.astype(float) - model.data.astype(float), expected, atol=2e-3
    )
    np.testing.assert_array_equal(out.err, model.err)
    np.testing.assert_array_equal(out.dq, model.dq)
    assert out.data.dtype == np.float32
    assert out.meta.filename == model.meta.filename
    with pytest.raises(ValueError, match="2-D"):
        inject_transients(object(), 1.0, 1.0, 1.0, fwhm=2.0)
    with pytest.raises(ValueError, match="fwhm"):
        inject_transients(model, 1.0, 1.0, 1.0, fwhm=None)
    # a given PSF stamp, placed at an integer pixel: exactly flux * stamp
    stamp = psf_stamp("moffat", 2.0, size=15)
    out = inject_transients(model, 50.0, 60.0, 300.0, fwhm=None, psf_kind=stamp)
    np.testing.assert_allclose(
        out.data[53:68, 43:58].astype(float) - model.data[53:68, 43:58], 300.0 * stamp, atol=1e-4
    )


def test_write_zogy_pair(pair, tmp_path):
    from jwst.associations import load_asn
    from jwst.datamodels import ModelLibrary

    from stmatch.models import open as open_model

    science_before = pair.science.data.copy()
    paths = write_zogy_pair(pair, tmp_path / "out")
    assert set(paths) == {"science", "template", "asn", "psf_science", "psf_template", "directory"}
    assert paths["science"].name == "zogy_science_cal.fits"
    assert paths["template"].name == "zogy_template_i2d.fits"
    assert pair.science.meta.filename == "zogy_science_cal.fits"
    np.testing.assert_array_equal(pair.science.data, science_before)

    with open(paths["asn"]) as fh:
        asn = load_asn(fh)
    members = asn["products"][0]["members"]
    assert [(m["expname"], m["exptype"]) for m in members] == [
        ("zogy_science_cal.fits", "science"),
        ("zogy_template_i2d.fits", "template"),
    ]
    assert json.loads(paths["asn"].read_text())["products"][0]["members"] == members

    for key, src in (("science", pair.science), ("template", pair.template)):
        with open_model(paths[key]) as model:
            np.testing.assert_array_equal(model.data, src.data)
            np.testing.assert_array_equal(model.var_rnoise, src.var_rnoise)
            x, y = 10.0, 20.0
            assert model.meta.wcs(x, y) == pytest.approx(src.meta.wcs(x, y), abs=1e-12)
            assert model.meta.photometry.conversion_megajanskys == 1.0

    library = ModelLibrary(paths["asn"], asn_exptypes=["science", "template"])
    with library:
        seen = {}
        for i in range(len(library)):
            model = library.borrow(i)
            seen[model.meta.asn.exptype] = model.meta.filename
            library.shelve(model, i, modify=False)
    assert seen == {"science": "zogy_science_cal.fits", "template": "zogy_template_i2d.fits"}

    for key, psf in (("psf_science", pair.psf_science), ("psf_template", pair.psf_template)):
        data = fits.getdata(paths[key])
        assert data.ndim == 2 and data.dtype.kind == "f" and data.dtype.itemsize == 4
        np.testing.assert_allclose(data, psf, rtol=1e-6, atol=1e-12)

    no_psf = write_zogy_pair(pair, tmp_path / "nopsf", psf_files=False, asn_name="x_asn.json")
    assert no_psf["psf_science"] is None and no_psf["psf_template"] is None
    assert not list((tmp_path / "nopsf").glob("*psf*"))

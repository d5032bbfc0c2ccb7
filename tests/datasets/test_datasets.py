"""Tests of the synthetic data generators in `stmatch.datasets`."""

import math
import warnings

import numpy as np
import pytest
from stdatamodels.jwst import datamodels
from stdatamodels.jwst.datamodels.dqflags import pixel as dqflags

from stmatch.datasets import (
    Mosaic,
    Scene,
    make_image,
    make_mosaic,
    make_scene,
    make_tan_wcs,
    render_image,
    write_mosaic,
)

ARRAYS = ("data", "err", "var_rnoise", "var_poisson", "var_flat")


def _sep_deg(ra1, dec1, ra2, dec2):
    """Great-circle separation in degrees (haversine)."""
    r1, d1, r2, d2 = (np.radians(np.asarray(a, dtype=float)) for a in (ra1, dec1, ra2, dec2))
    hav = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(hav)))


def _boundary_points(shape, n=16):
    """Pixel centres along the outermost rows/columns, corners included."""
    ny, nx = shape
    xs = np.linspace(0, nx - 1, n)
    ys = np.linspace(0, ny - 1, n)
    x = np.concatenate([xs, xs, np.zeros(n), np.full(n, nx - 1.0)])
    y = np.concatenate([np.zeros(n), np.full(n, ny - 1.0), ys, ys])
    return x, y


def _overlaps(model_a, model_b):
    """True if any boundary pixel of one image lies inside the other."""
    for a, b in ((model_a, model_b), (model_b, model_a)):
        x, y = _boundary_points(a.data.shape)
        ra, dec = a.meta.wcs(x, y)
        xb, yb = b.meta.wcs.invert(ra, dec, with_bounding_box=False)
        ny, nx = b.data.shape
        inside = (xb > -0.5) & (xb < nx - 0.5) & (yb > -0.5) & (yb < ny - 0.5)
        if np.any(inside):
            return True
    return False


@pytest.fixture(scope="module")
def mosaic_3x3():
    return make_mosaic(3, 3, shape=(64, 64), overlap=0.2, noise=0.5, seed=3)


# ----------------------------------------------------------------------------- WCS


class TestWCS:
    def test_centre_maps_to_reference(self):
        w = make_tan_wcs((200, 300), ra=150.0, dec=2.0, rotation=17.0)
        ra, dec = w(149.5, 99.5)
        assert abs(ra - 150.0) < 1e-9
        assert abs(dec - 2.0) < 1e-9

    def test_explicit_crpix(self):
        w = make_tan_wcs((100, 100), ra=10.0, dec=-30.0, crpix=(10.0, 20.0))
        ra, dec = w(10.0, 20.0)
        assert abs(ra - 10.0) < 1e-9
        assert abs(dec + 30.0) < 1e-9

    @pytest.mark.parametrize("rotation", [0.0, 30.0, -120.0])
    @pytest.mark.parametrize("scale", [0.06, 0.11])
    def test_pixel_scale(self, rotation, scale):
        w = make_tan_wcs((256, 256), ra=150.0, dec=60.0, pixel_scale=scale, rotation=rotation)
        x0 = y0 = 127.5
        h = 0.5
        for dx, dy in ((h, 0.0), (0.0, h)):
            r1, d1 = w(x0 - dx, y0 - dy)
            r2, d2 = w(x0 + dx, y0 + dy)
            measured = _sep_deg(r1, d1, r2, d2) * 3600.0 / (2 * h)
            assert measured == pytest.approx(scale, rel=1e-6)

    def test_rotation_sign(self):
        ra0, dec0 = 150.0, 2.0
        # rotation 0: +y is north, +x is west (RA decreases)
        w = make_tan_wcs((101, 101), ra=ra0, dec=dec0, rotation=0.0)
        ra, dec = w(50.0, 60.0)
        assert dec > dec0 and abs(ra - ra0) < 1e-9
        ra, dec = w(60.0, 50.0)
        assert ra < ra0 and abs(dec - dec0) < 1e-6
        # rotation 90: +y points east (RA increases)
        w = make_tan_wcs((101, 101), ra=ra0, dec=dec0, rotation=90.0)
        ra, dec = w(50.0, 60.0)
        assert ra > ra0 and abs(dec - dec0) < 1e-6
        # rotation 30: +y at position angle 30 deg east of north
        w = make_tan_wcs((101, 101), ra=ra0, dec=dec0, rotation=30.0)
        ra, dec = w(50.0, 60.0)
        dra = (ra - ra0) * math.cos(math.radians(dec0))
        assert math.degrees(math.atan2(dra, dec - dec0)) == pytest.approx(30.0, abs=1e-3)

    def test_bounding_box(self):
        w = make_tan_wcs((40, 60), ra=150.0, dec=2.0)
        bbox = w.bounding_box
        assert bbox.order == "F"
        assert tuple(bbox.bounding_box(order="F")) == ((-0.5, 59.5), (-0.5, 39.5))
        assert np.all(np.isfinite(w(29.5, 19.5)))
        assert np.all(np.isnan(w(60.0, 10.0)))
        assert np.all(np.isnan(w(10.0, -0.6)))
        assert np.all(np.isfinite(w(60.0, 10.0, with_bounding_box=False)))
        # x along the first axis: (59, 39) is inside, (39, 59) is not
        assert np.all(np.isfinite(w(59.0, 39.0)))
        assert np.all(np.isnan(w(39.0, 59.0)))

    @pytest.mark.parametrize("distortion", [1e-3, -1e-3, 1e-2])
    @pytest.mark.parametrize("shape", [(256, 256), (1024, 600)])
    def test_distortion_round_trip(self, distortion, shape):
        w = make_tan_wcs(shape, ra=30.0, dec=-45.0, rotation=12.0, distortion=distortion)
        ny, nx = shape
        y, x = np.mgrid[-0.49 : ny - 0.51 : 25j, -0.49 : nx - 0.51 : 25j]
        ra, dec = w(x, y)
        for bb in (True, False):
            xi, yi = w.invert(ra, dec, with_bounding_box=bb)
            assert np.max(np.abs(xi - x)) < 1e-3
            assert np.max(np.abs(yi - y)) < 1e-3
        # outside the image too (no bounding box)
        y2, x2 = np.mgrid[-50 : ny + 50 : 9j, -50 : nx + 50 : 9j]
        ra, dec = w(x2, y2, with_bounding_box=False)
        xi, yi = w.invert(ra, dec, with_bounding_box=False)
        assert np.max(np.hypot(xi - x2, yi - y2)) < 1e-3

    def test_distortion_size(self):
        shape = (256, 256)
        w0 = make_tan_wcs(shape, ra=150.0, dec=2.0)
        w1 = make_tan_wcs(shape, ra=150.0, dec=2.0, distortion=1e-3)
        # at the corner, offset (r = half-diagonal - ~0.7 px) stretched by ~1e-3
        ra, dec = w1(0.0, 0.0)
        x, y = w0.invert(ra, dec)
        r0 = math.hypot(127.5, 127.5)
        r1 = math.hypot(x - 127.5, y - 127.5)
        assert (r1 / r0 - 1.0) == pytest.approx(1e-3 * (r0 / (0.5 * math.hypot(256, 256))) ** 2)
        # the centre is not moved
        assert np.allclose(w1(127.5, 127.5), w0(127.5, 127.5), rtol=0, atol=1e-12)

    def test_distortion_too_large(self):
        with pytest.raises(ValueError, match="distortion"):
            make_tan_wcs((100, 100), ra=0.0, dec=0.0, distortion=0.5)

    @pytest.mark.parametrize("ext", ["fits", "asdf"])
    def test_datamodel_round_trip(self, tmp_path, ext):
        model = make_image((80, 70), rotation=33.0, distortion=1e-3, n_stars=3, seed=5)
        path = tmp_path / f"image.{ext}"
        model.save(str(path))
        y, x = np.mgrid[0:80:7, 0:70:9].astype(float)
        ra1, dec1 = model.meta.wcs(x, y)
        with datamodels.open(path) as reread:
            assert isinstance(reread, datamodels.ImageModel)
            ra2, dec2 = reread.meta.wcs(x, y)
            assert np.max(np.abs(ra1 - ra2)) < 1e-10
            assert np.max(np.abs(dec1 - dec2)) < 1e-10
            xi, yi = reread.meta.wcs.invert(ra1, dec1)
            assert np.max(np.hypot(xi - x, yi - y)) < 1e-3
            assert np.all(np.isnan(reread.meta.wcs(-1.0, 5.0)))
            np.testing.assert_array_equal(reread.data, model.data)
            np.testing.assert_array_equal(reread.dq, model.dq)


# --------------------------------------------------------------------------- scene


class TestScene:
    def test_stars_within_radius_and_flux_range(self):
        scene = make_scene(ra=359.99, dec=-10.0, radius=0.05, n_stars=500, seed=1)
        assert isinstance(scene, Scene)
        assert scene.ra.shape == scene.dec.shape == scene.flux.shape == (500,)
        assert np.all((scene.ra >= 0) & (scene.ra < 360))
        sep = _sep_deg(scene.ra, scene.dec, 359.99, -10.0)
        assert sep.max() <= 0.05 + 1e-12
        # uniform per area: about a quarter of the stars within half the radius
        assert 0.18 < np.mean(sep < 0.025) < 0.32
        assert scene.flux.min() >= 50.0 and scene.flux.max() <= 5000.0
        # log-uniform: median near the geometric mean
        assert np.median(scene.flux) == pytest.approx(500.0, rel=0.25)
        assert scene.n_diffuse == 1
        assert scene.diffuse_sigma[0] == pytest.approx(0.05 * 3600 / 3)

    def test_no_diffuse(self):
        scene = make_scene(ra=10.0, dec=0.0, radius=0.01, n_diffuse=0, n_stars=0)
        assert scene.n_diffuse == 0 and scene.n_stars == 0
        model = render_image(scene, make_tan_wcs((32, 32), ra=10.0, dec=0.0), (32, 32), noise=0)
        assert np.all(model.data == 0)

    def test_determinism(self):
        a = make_scene(ra=1.0, dec=2.0, radius=0.1, seed=7, n_diffuse=3)
        b = make_scene(ra=1.0, dec=2.0, radius=0.1, seed=7, n_diffuse=3)
        c = make_scene(ra=1.0, dec=2.0, radius=0.1, seed=8, n_diffuse=3)
        for field in ("ra", "dec", "flux", "diffuse_ra", "diffuse_dec"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            assert not np.array_equal(getattr(a, field), getattr(c, field))


# ------------------------------------------------------------------------ rendering


def _single_star_scene(ra, dec, flux=1234.5, psf_fwhm=0.12):
    return Scene(
        ra=np.array([ra]),
        dec=np.array([dec]),
        flux=np.array([flux]),
        diffuse_ra=np.zeros(0),
        diffuse_dec=np.zeros(0),
        diffuse_amplitude=np.zeros(0),
        diffuse_sigma=np.zeros(0),
        psf_fwhm=psf_fwhm,
    )


class TestRender:
    @pytest.mark.parametrize("scale", [0.03, 0.06, 0.11])
    def test_star_flux_conserved(self, scale):
        shape = (64, 64)
        w = make_tan_wcs(shape, ra=150.0, dec=2.0, pixel_scale=scale, rotation=20.0)
        ra, dec = w(30.3, 33.8)
        scene = _single_star_scene(ra, dec)
        model = render_image(scene, w, shape, sky=7.0, noise=0.0)
        total = np.sum(model.data.astype(float) - 7.0)
        assert total == pytest.approx(1234.5, rel=1e-2)
        # the peak is at the star position
        iy, ix = np.unravel_index(np.argmax(model.data), shape)
        assert (ix, iy) in {(30, 34), (30, 33)}

    def test_star_fwhm(self):
        shape = (64, 64)
        w = make_tan_wcs(shape, ra=150.0, dec=2.0, pixel_scale=0.03)
        ra, dec = w(31.5, 31.5)  # between four pixels: symmetric profile
        model = render_image(_single_star_scene(ra, dec, psf_fwhm=0.3), w, shape, noise=0.0)
        data = model.data.astype(float)
        y, x = np.mgrid[0:64, 0:64]
        var_x = np.sum(data * (x - 31.5) ** 2) / data.sum()
        sigma_expected = 0.3 / 0.03 / (2 * math.sqrt(2 * math.log(2)))
        # pixel integration adds 1/12 pixel^2
        assert math.sqrt(var_x) == pytest.approx(math.hypot(sigma_expected, 12**-0.5), rel=1e-3)

    def test_star_flux_in_mosaic(self):
        mosaic = make_mosaic(
            2, 1, shape=(128, 128), noise=0.0, n_diffuse=0, seed=11, sky_levels=[1.0, 2.0],
            n_stars=40,
        )  # fmt: skip
        model, sky = mosaic.models[0], mosaic.sky[0]
        scene = mosaic.scene
        x, y = model.meta.wcs.invert(scene.ra, scene.dec, with_bounding_box=False)
        # an isolated star well inside the image
        inside = (x > 15) & (x < 112) & (y > 15) & (y < 112)
        dist = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
        np.fill_diagonal(dist, np.inf)
        isolated = inside & (dist.min(axis=1) > 25)
        assert np.any(isolated)
        i = np.flatnonzero(isolated)[0]
        cx, cy = int(round(x[i])), int(round(y[i]))
        cut = model.data[cy - 8 : cy + 9, cx - 8 : cx + 9].astype(float) - sky
        assert cut.sum() == pytest.approx(scene.flux[i], rel=1e-2)

    def test_diffuse_interpolation_accuracy(self):
        shape = (200, 180)  # large enough to use the coarse grid
        w = make_tan_wcs(shape, ra=150.0, dec=2.0, rotation=40.0, distortion=1e-3)
        scene = make_scene(
            ra=150.0, dec=2.0, radius=0.004, n_stars=0, n_diffuse=2, diffuse_sigma=3.0, seed=2
        )
        model = render_image(scene, w, shape, noise=0.0)
        y, x = np.mgrid[0:200:13, 0:180:11]
        ra, dec = w(x.astype(float), y.astype(float))
        exact = np.zeros(ra.shape)
        for r0, d0, a, s in zip(
            scene.diffuse_ra,
            scene.diffuse_dec,
            scene.diffuse_amplitude,
            scene.diffuse_sigma,
            strict=True,
        ):
            exact += a * np.exp(-0.5 * (_sep_deg(ra, dec, r0, d0) * 3600 / s) ** 2)
        assert exact.max() > 1.0  # the diffuse light is on the image
        np.testing.assert_allclose(model.data[y, x], exact, atol=2e-3 * exact.max())

    def test_sky_noise_statistics(self):
        model = make_image((256, 256), n_stars=0, sky=3.0, noise=2.0, seed=4)
        data = model.data.astype(float)
        assert data.std() == pytest.approx(2.0, rel=0.03)
        assert data.mean() == pytest.approx(3.0, abs=5 * 2.0 / 256)
        np.testing.assert_allclose(model.var_rnoise, 4.0)
        np.testing.assert_allclose(model.err, 2.0)
        assert np.all(model.var_poisson == 0) and np.all(model.var_flat == 0)

    def test_gain_noise(self):
        shape = (128, 128)
        w = make_tan_wcs(shape, ra=150.0, dec=2.0)
        scene = make_scene(
            ra=150.0, dec=2.0, radius=0.003, n_stars=0, n_diffuse=1, diffuse_amplitude=400.0,
            diffuse_sigma=1000.0, seed=1,
        )  # fmt: skip
        model = render_image(scene, w, shape, sky=10.0, noise=1.0, gain=4.0, seed=3)
        noiseless = render_image(scene, w, shape, sky=10.0, noise=0.0, seed=3)
        signal = noiseless.data.astype(float) - 10.0
        np.testing.assert_allclose(model.var_poisson, signal / 4.0, rtol=1e-5)
        np.testing.assert_allclose(
            model.err**2, model.var_rnoise + model.var_poisson + model.var_flat, rtol=1e-5
        )
        resid = (model.data - noiseless.data) / model.err
        assert resid.std() == pytest.approx(1.0, rel=0.03)

    def test_arrays_and_metadata(self):
        model = make_image((64, 48), seed=12)
        assert isinstance(model, datamodels.ImageModel)
        for name in ARRAYS:
            arr = getattr(model, name)
            assert arr.dtype == np.float32 and arr.shape == (64, 48), name
        assert model.dq.dtype == np.uint32 and model.dq.shape == (64, 48)
        meta = model.meta
        assert meta.filename == "synthetic_0012_cal.fits"
        assert meta.instrument.name == "NIRCAM"
        assert meta.instrument.detector == "NRCA1"
        assert meta.instrument.filter == "F200W"
        assert meta.exposure.type == "NRC_IMAGE"
        assert meta.observation.date == "2026-01-01"
        assert meta.observation.time == "00:00:00"
        assert meta.bunit_data == meta.bunit_err == "MJy/sr"
        wi = meta.wcsinfo
        assert (wi.ctype1, wi.ctype2) == ("RA---TAN", "DEC--TAN")
        assert (wi.crpix1, wi.crpix2) == (24.5, 32.5)
        assert wi.crval1 == pytest.approx(150.0) and wi.crval2 == pytest.approx(2.0)
        assert wi.ra_ref == pytest.approx(150.0) and wi.dec_ref == pytest.approx(2.0)
        assert wi.cdelt1 == pytest.approx(0.06 / 3600) and wi.cdelt2 == pytest.approx(0.06 / 3600)
        assert wi.v2_ref == 0 and wi.v3_ref == 0 and wi.v3yangle == 0 and wi.vparity == -1
        assert wi.roll_ref == pytest.approx(0.0, abs=1e-6)
        assert wi.s_region.startswith("POLYGON ICRS")
        assert meta.wcs is not None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.validate()

    @pytest.mark.parametrize(
        ("instrument", "detector", "filt", "exptype"),
        [("NIRISS", "NIS", "F150W", "NIS_IMAGE"), ("MIRI", "MIRIMAGE", "F770W", "MIR_IMAGE")],
    )
    def test_instruments(self, instrument, detector, filt, exptype):
        model = make_image((32, 32), instrument=instrument, rotation=45.0)
        assert model.meta.instrument.name == instrument
        assert model.meta.instrument.detector == detector
        assert model.meta.instrument.filter == filt
        assert model.meta.exposure.type == exptype
        assert model.meta.wcsinfo.roll_ref == pytest.approx(45.0)
        model = make_image((32, 32), instrument=instrument, filter="F444W", exptype="ANY")
        assert model.meta.instrument.filter == "F444W"
        assert model.meta.exposure.type == "ANY"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.validate()

    def test_nan_patches(self):
        model = make_image((128, 128), nan_patches=4, seed=9)
        nan = np.isnan(model.data)
        assert nan.any()
        assert np.all(model.dq[nan] & dqflags["DO_NOT_USE"])
        assert np.all(np.isnan(model.err[nan]))
        # patches are 5-30 pixels a side: at least one 5x5 patch, at most 4 * 30 * 30
        assert 25 <= nan.sum() <= 4 * 900
        good = model.dq == 0
        assert np.all(np.isfinite(model.data[good]))

    def test_dq_fraction_and_saturation(self):
        model = make_image((100, 100), n_stars=0, sky=1.0, noise=1.0, dq_fraction=0.02, seed=2)
        bad = (model.dq & dqflags["DO_NOT_USE"]) > 0
        assert bad.sum() == 200
        hot = (model.dq & dqflags["HOT"]) > 0
        jump = (model.dq & dqflags["JUMP_DET"]) > 0
        assert np.all(hot | jump == bad) and hot.any() and jump.any()
        assert model.data[bad].min() > 500.0  # garbage values that must be ignored
        assert np.abs(model.data[~bad] - 1.0).max() < 7.0

        model = make_image((64, 64), n_stars=5, sky=0.0, noise=0.1, saturation=20.0, seed=2)
        sat = (model.dq & dqflags["SATURATED"]) > 0
        assert sat.any()
        np.testing.assert_array_equal(sat, model.data > 20.0)
        assert np.all(model.dq[sat] & dqflags["DO_NOT_USE"])

    def test_determinism(self):
        kw = {"n_diffuse": 1, "nan_patches": 2, "dq_fraction": 0.01, "gain": 2.0}
        a = make_image((64, 64), seed=1, **kw)
        b = make_image((64, 64), seed=1, **kw)
        c = make_image((64, 64), seed=2, **kw)
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_array_equal(a.dq, b.dq)
        assert not np.array_equal(a.data, c.data, equal_nan=True)
        assert not np.array_equal(a.dq, c.dq)

    def test_1024_render_with_all_options(self):
        # Rendering speed is a benchmark matter; here: the full-featured render works.
        model = make_image((1024, 1024), n_stars=300, n_diffuse=2, gain=2.0, distortion=1e-3)
        assert model.data.shape == (1024, 1024) and np.isfinite(model.data).all()
        assert (model.var_poisson > 0).any()


# --------------------------------------------------------------------------- mosaic


class TestMosaic:
    def test_basic(self, mosaic_3x3):
        m = mosaic_3x3
        assert isinstance(m, Mosaic)
        assert len(m) == 9 == len(m.models) == len(m.group_ids) == len(m.sky)
        assert len(set(m.group_ids)) == 9
        assert np.all(m.components == 0)
        names = [model.meta.filename for model in m.models]
        assert len(set(names)) == 9
        assert all(n.startswith("mosaic_3_0_") and n.endswith("_cal.fits") for n in names)
        assert np.all((m.sky >= 0) & (m.sky <= 10))
        for model, sky in zip(m.models, m.sky, strict=True):
            # sky + diffuse light (peak 5) + noise
            assert -0.5 < np.nanmedian(model.data) - sky < 5.5

    def test_neighbours_overlap(self, mosaic_3x3):
        models = mosaic_3x3.models
        centre = models[4]  # interior exposure (row 1, col 1)
        assert sum(_overlaps(centre, other) for i, other in enumerate(models) if i != 4) == 8
        # the corner of the centre image lands inside its diagonal neighbour
        ra, dec = centre.meta.wcs(63.0, 63.0)
        x, y = models[8].meta.wcs.invert(ra, dec)
        assert np.isfinite(x) and np.isfinite(y)
        # corner images do not overlap the opposite corner
        assert not _overlaps(models[0], models[8])
        # images see the same sky: in the overlap, the sky-subtracted images agree
        right = models[5]
        ny, nx = centre.data.shape
        yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
        ra, dec = centre.meta.wcs(xx, yy)
        x5, y5 = right.meta.wcs.invert(ra, dec)
        ok = np.isfinite(x5) & (x5 > 0) & (x5 < nx - 1) & (y5 > 0) & (y5 < ny - 1)
        assert ok.sum() > 200
        ix, iy = np.floor(x5[ok]).astype(int), np.floor(y5[ok]).astype(int)
        tx, ty = x5[ok] - ix, y5[ok] - iy
        d = right.data.astype(float) - mosaic_3x3.sky[5]
        b = (1 - ty) * ((1 - tx) * d[iy, ix] + tx * d[iy, ix + 1]) + ty * (
            (1 - tx) * d[iy + 1, ix] + tx * d[iy + 1, ix + 1]
        )
        a = centre.data[ok].astype(float) - mosaic_3x3.sky[4]
        assert abs(np.median(a - b)) < 0.1

    def test_neighbours_see_same_stars(self):
        m = make_mosaic(
            2, 1, shape=(128, 128), overlap=0.5, noise=0.0, n_diffuse=0, n_stars=60, seed=8
        )
        (left, right), scene = m.models, m.scene
        n = 128
        positions = [
            model.meta.wcs.invert(scene.ra, scene.dec, with_bounding_box=False)
            for model in (left, right)
        ]
        good = np.ones(scene.n_stars, dtype=bool)
        for x, y in positions:
            good &= (x > 5) & (x < n - 6) & (y > 5) & (y < n - 6)
        x, y = positions[0]
        dist = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
        np.fill_diagonal(dist, np.inf)
        good &= dist.min(axis=1) > 12  # isolated
        assert good.sum() >= 2
        for i in np.flatnonzero(good):
            sums = []
            for model, sky, (x, y) in zip((left, right), m.sky, positions, strict=True):
                jx, jy = int(round(x[i])), int(round(y[i]))
                cut = model.data[jy - 4 : jy + 5, jx - 4 : jx + 5].astype(float)
                sums.append(cut.sum() - 81 * sky)
            assert sums[0] == pytest.approx(sums[1], rel=1e-3)
            assert sums[0] == pytest.approx(scene.flux[i], rel=1e-2)

    @pytest.mark.parametrize("overlap", [0.0, -0.1])
    def test_no_overlap(self, overlap):
        m = make_mosaic(3, 3, shape=(48, 48), overlap=overlap, n_stars=0, rotation_jitter=1.0)
        assert sum(_overlaps(m.models[4], other) for i, other in enumerate(m.models) if i != 4) == 0

    def test_rotated_mosaic_overlaps(self):
        m = make_mosaic(
            3, 3, shape=(48, 64), overlap=0.25, rotation=70.0, rotation_jitter=0.5,
            distortion=1e-3, n_stars=10, dec=60.0,
        )  # fmt: skip
        assert sum(_overlaps(m.models[4], other) for i, other in enumerate(m.models) if i != 4) == 8

    def test_detectors_per_group(self):
        m = make_mosaic(3, 2, shape=(48, 48), detectors_per_group=4, seed=5, n_stars=20)
        assert len(m) == 3 * 2 * 4
        assert len(set(m.group_ids)) == 6
        for gid in set(m.group_ids):
            idx = [i for i, g in enumerate(m.group_ids) if g == gid]
            assert len(idx) == 4
            assert len(set(m.sky[idx])) == 1
            dets = [m.models[i].meta.instrument.detector for i in idx]
            assert dets == ["NRCA1", "NRCA2", "NRCA3", "NRCA4"]
            # the detectors of one exposure do not overlap (5-pixel gaps) ...
            for a in idx:
                for b in idx:
                    if a < b:
                        assert not _overlaps(m.models[a], m.models[b])
        # ... but exposures overlap their neighbours: exposure (0,1) has 5 neighbours
        groups = {g: [i for i, h in enumerate(m.group_ids) if h == g] for g in m.group_ids}
        gid = m.group_ids[4]  # row 0, col 1
        assert gid.endswith("_0_1")
        n_overlapping_groups = sum(
            any(_overlaps(m.models[a], m.models[b]) for a in groups[gid] for b in groups[other])
            for other in groups
            if other != gid
        )
        assert n_overlapping_groups == 5

    def test_two_detectors_side_by_side(self):
        m = make_mosaic(1, 1, shape=(40, 40), detectors_per_group=2, n_stars=0)
        assert len(m) == 2
        x, y = m.models[1].meta.wcs.invert(
            *m.models[0].meta.wcs(19.5, 19.5), with_bounding_box=False
        )
        assert x == pytest.approx(19.5 - 45.0, abs=1e-6)
        assert y == pytest.approx(19.5, abs=1e-6)

    def test_components(self):
        m = make_mosaic(4, 2, shape=(48, 48), n_components=2, seed=1, n_stars=40)
        assert len(m) == 8
        assert sorted(set(m.components.tolist())) == [0, 1]
        centres = np.array([model.meta.wcs(23.5, 23.5) for model in m.models])
        for i in range(8):
            for j in range(8):
                sep = _sep_deg(*centres[i], *centres[j])
                if m.components[i] != m.components[j]:
                    assert sep > 0.5
                    assert not _overlaps(m.models[i], m.models[j])
                elif i != j:
                    assert sep < 0.01
        # each component sees stars and its own diffuse light
        assert m.scene.n_diffuse == 2
        for c in (0, 1):
            assert m.scene.n_stars > 0
            meds = [
                np.median(m.models[i].data) - m.sky[i] for i in np.flatnonzero(m.components == c)
            ]
            assert min(meds) > 0.5

    def test_sky_levels(self):
        m = make_mosaic(2, 2, shape=(32, 32), sky_levels=[1, 2, 3, 4], n_stars=0, n_diffuse=0)
        np.testing.assert_array_equal(m.sky, [1, 2, 3, 4])
        for model, sky in zip(m.models, m.sky, strict=True):
            assert np.mean(model.data) == pytest.approx(sky, abs=0.1)
        with pytest.raises(ValueError, match="sky_levels"):
            make_mosaic(2, 2, shape=(32, 32), sky_levels=[1, 2, 3])

    def test_default_star_density(self):
        m = make_mosaic(4, 4, shape=(256, 256), noise=0.0, n_diffuse=0, seed=2)
        counts = []
        for model in m.models:
            x, y = model.meta.wcs.invert(m.scene.ra, m.scene.dec)
            counts.append(np.sum(np.isfinite(x)))
        assert 12 < np.mean(counts) < 28

    def test_determinism(self):
        kw = {"shape": (32, 32), "nan_patches": 1, "dq_fraction": 0.01, "rotation_jitter": 1.0}
        a = make_mosaic(2, 2, seed=4, **kw)
        b = make_mosaic(2, 2, seed=4, **kw)
        c = make_mosaic(2, 2, seed=5, **kw)
        np.testing.assert_array_equal(a.sky, b.sky)
        np.testing.assert_array_equal(a.scene.ra, b.scene.ra)
        for ma, mb, mc in zip(a.models, b.models, c.models, strict=True):
            np.testing.assert_array_equal(ma.data, mb.data)
            np.testing.assert_array_equal(ma.dq, mb.dq)
            assert ma.meta.filename == mb.meta.filename
            assert ma.meta.wcs(3.0, 4.0) == mb.meta.wcs(3.0, 4.0)
            assert not np.array_equal(ma.data, mc.data, equal_nan=True)
        assert not np.array_equal(a.sky, c.sky)

    def test_models_validate(self):
        m = make_mosaic(1, 1, shape=(32, 32), detectors_per_group=2, instrument="MIRI")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for model in m.models:
                model.validate()
                assert model.meta.instrument.detector == "MIRIMAGE"
                assert model.meta.group_id == m.group_ids[0]


# ---------------------------------------------------------------------------- write


class TestWrite:
    @pytest.mark.parametrize("fmt", ["fits", "asdf"])
    def test_model_library(self, tmp_path, fmt):
        from jwst.datamodels import ModelLibrary

        m = make_mosaic(2, 2, shape=(32, 32), detectors_per_group=2, n_stars=5, seed=6)
        names = [model.meta.filename for model in m.models]
        asn_path = write_mosaic(m, tmp_path / "out", fmt=fmt, product_name="prod")
        assert asn_path == tmp_path / "out" / "mosaic_asn.json"
        assert [model.meta.filename for model in m.models] == names  # unchanged
        for name in names:
            assert (tmp_path / "out" / name.replace(".fits", f".{fmt}")).is_file()

        library = ModelLibrary(asn_path)
        assert len(library) == 8
        expected = {}
        for i, gid in enumerate(m.group_ids):
            expected.setdefault(gid, []).append(i)
        assert library.group_indices == expected
        assert library.asn["products"][0]["name"] == "prod"
        with library:
            model = library.borrow(3)
            assert model.meta.group_id == m.group_ids[3]
            np.testing.assert_array_equal(model.data, m.models[3].data)
            library.shelve(model, 3, modify=False)

    def test_bad_format(self, tmp_path):
        m = make_mosaic(1, 1, shape=(16, 16), n_stars=0)
        with pytest.raises(ValueError, match="fmt"):
            write_mosaic(m, tmp_path, fmt="hdf5")

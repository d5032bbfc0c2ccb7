"""Tests of the synthetic PSF-matching exposure in `stmatch.datasets`."""

import math

import numpy as np
import pytest
from scipy.special import ndtr
from stdatamodels.jwst.datamodels import ImageModel
from stdatamodels.jwst.datamodels.dqflags import pixel as dqflags

import stmatch.models as sm
from stmatch.algorithms.psf import centroid, moffat_psf
from stmatch.algorithms.psfgrid import fwhm_of
from stmatch.datasets import (
    FwhmField,
    PsfMatchExposure,
    make_psfmatch_exposure,
    psf_stamp,
    write_psfmatch_exposure,
)
from stmatch.models import PsfModel, read_psf_file

SMALL = (128, 160)
ARRAYS = ("data", "err", "var_rnoise", "var_poisson", "var_flat")
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _make(**kwargs):
    options = {"n_stars": 30, "seed": 3, **kwargs}
    return make_psfmatch_exposure(SMALL, **options)


@pytest.fixture(scope="module")
def exposure():
    return _make(noise=2.0, background=5.0)


@pytest.fixture(scope="module")
def noiseless():
    """Same stars as `exposure`, without noise or background."""
    return _make(noise=0.0)


def _epsf_1d(t, sigma):
    """Gaussian integrated over a unit pixel centred at offset ``t``."""
    return ndtr((t + 0.5) / sigma) - ndtr((t - 0.5) / sigma)


# ----------------------------------------------------------------------------- FWHM field


class TestFwhmField:
    def test_quadratic_min_at_centre_max_at_corners(self):
        field = FwhmField((100, 200), (2.0, 3.0), "quadratic")
        assert field(99.5, 49.5) == pytest.approx(2.0, abs=1e-12)
        for x, y in [(-0.5, -0.5), (199.5, -0.5), (-0.5, 99.5), (199.5, 99.5)]:
            assert field(x, y) == pytest.approx(3.0, abs=1e-12)
        # quadratic in the distance: halfway to a corner is a quarter of the range
        assert field((99.5 + 199.5) / 2, (49.5 + 99.5) / 2) == pytest.approx(2.25, abs=1e-12)
        assert isinstance(field(1.0, 2.0), float)
        assert field(np.zeros((2, 3)), 0.0).shape == (2, 3)
        assert field.widest == 3.0

    def test_linear_and_none(self):
        linear = FwhmField((100, 200), (2.0, 4.0), "linear")
        assert linear(-0.5, -0.5) == pytest.approx(2.0, abs=1e-12)
        assert linear(199.5, 99.5) == pytest.approx(4.0, abs=1e-12)
        assert linear(99.5, 49.5) == pytest.approx(3.0, abs=1e-12)
        # a ramp: equal steps give equal changes
        values = linear(np.array([10.0, 60.0, 110.0]), 20.0)
        assert values[1] - values[0] == pytest.approx(values[2] - values[1], rel=1e-12)
        flat = FwhmField((100, 200), (2.0, 4.0), "none")
        np.testing.assert_array_equal(flat(np.arange(5.0), 3.0), 2.0)
        assert flat.widest == 2.0


# ----------------------------------------------------------------------------- exposure


class TestMakePsfMatchExposure:
    def test_structure_and_image_metadata(self, exposure):
        assert isinstance(exposure, PsfMatchExposure)
        model = exposure.model
        assert isinstance(model, ImageModel)
        assert model.data.shape == SMALL
        for name in ARRAYS:
            assert getattr(model, name).dtype == np.float32, name
        assert model.dq.dtype == np.uint32 and not model.dq.any()
        np.testing.assert_array_equal(model.err, np.float32(2.0))
        np.testing.assert_array_equal(model.var_rnoise, np.float32(4.0))
        np.testing.assert_array_equal(model.var_poisson, 0.0)
        np.testing.assert_array_equal(model.var_flat, 0.0)
        np.testing.assert_allclose(
            model.err**2, model.var_rnoise + model.var_poisson + model.var_flat
        )
        assert model.meta.filename == "psfmatch_cal.fits"
        assert model.meta.bunit_data == "MJy/sr"
        assert model.meta.instrument.name == "NIRCAM"
        ra, dec = model.meta.wcs(79.5, 63.5)
        assert (ra, dec) == pytest.approx((150.0, 2.0), abs=1e-9)
        model.validate()
        assert exposure.psf_size == 25  # odd >= 8 * 3.0
        assert exposure.target_fwhm == pytest.approx(1.25 * 3.0)

    def test_deterministic(self, exposure):
        again = _make(noise=2.0, background=5.0)
        for name in (*ARRAYS, "dq"):
            np.testing.assert_array_equal(getattr(again.model, name), getattr(exposure.model, name))
        np.testing.assert_array_equal(again.stars, exposure.stars)
        np.testing.assert_array_equal(again.psf.data, exposure.psf.data)
        other = _make(noise=2.0, background=5.0, seed=4)
        assert not np.array_equal(other.stars, exposure.stars)
        assert not np.array_equal(other.model.data, exposure.model.data)

    def test_stars_are_isolated_and_cover_the_field(self, exposure):
        stars = exposure.stars
        assert len(stars) == 30
        assert stars.dtype.names == ("x", "y", "flux", "fwhm")
        ny, nx = SMALL
        margin = 2.0 * 3.0
        assert np.all((stars["x"] >= margin - 0.5) & (stars["x"] <= nx - 0.5 - margin))
        assert np.all((stars["y"] >= margin - 0.5) & (stars["y"] <= ny - 0.5 - margin))
        # near the edges too: some star within 15 px of each of the four edges
        assert stars["x"].min() < 15 and stars["x"].max() > nx - 15
        assert stars["y"].min() < 15 and stars["y"].max() > ny - 15
        d = np.hypot(*(stars[c][:, None] - stars[c][None, :] for c in ("x", "y")))
        np.fill_diagonal(d, np.inf)
        assert d.min() >= 4.0 * 3.0
        assert np.all((stars["flux"] >= 1e3) & (stars["flux"] <= 1e5))
        np.testing.assert_allclose(stars["fwhm"], exposure.fwhm_at(stars["x"], stars["y"]))

    def test_noise_and_background(self, exposure, noiseless):
        np.testing.assert_array_equal(noiseless.stars, exposure.stars)
        residual = exposure.model.data.astype(float) - noiseless.model.data
        assert residual.mean() == pytest.approx(5.0, abs=4 * 2.0 / math.sqrt(residual.size))
        assert residual.std() == pytest.approx(2.0, rel=0.02)

    def test_total_flux_is_conserved(self, noiseless):
        # star centres 2 widest FWHMs (4.7 sigma) inside the edges: < 1e-5 of a flux is lost
        total = noiseless.model.data.sum(dtype=np.float64)
        assert total == pytest.approx(noiseless.stars["flux"].sum(), rel=1e-5)

    def test_measured_fluxes_and_widths_match_truth(self, exposure):
        """PSF-weighted fluxes with the true PSF at each star: pulls are N(0, 1)."""
        data = exposure.model.data.astype(float) - exposure.background
        pulls, widths = [], []
        half = 4
        for x, y, flux, fwhm in exposure.stars:
            cx, cy = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
            sigma = fwhm / FWHM_PER_SIGMA
            offsets = np.arange(-half, half + 1)
            psf = np.outer(_epsf_1d(offsets + cy - y, sigma), _epsf_1d(offsets + cx - x, sigma))
            box = data[cy - half : cy + half + 1, cx - half : cx + half + 1]
            estimate = np.sum(psf * box) / np.sum(psf**2)
            error = exposure.noise / math.sqrt(np.sum(psf**2))
            pulls.append((estimate - flux) / error)
            if flux > 2e4:
                cy_m, cx_m = centroid(box)
                assert (cx_m - half + cx, cy_m - half + cy) == pytest.approx((x, y), abs=0.05)
                widths.append((fwhm_of(box, deconvolve_pixel=True), fwhm))
        pulls = np.array(pulls)
        assert np.all(np.abs(pulls) < 5.0)
        assert abs(pulls.mean()) < 4.0 / math.sqrt(len(pulls))
        assert 0.6 < pulls.std() < 1.4
        measured, true = np.array(widths).T
        assert len(true) >= 5 and np.ptp(true) > 0.3
        np.testing.assert_allclose(measured, true, rtol=0.05)

    def test_moffat_star_is_rendered_at_its_own_fwhm(self):
        exposure = _make(psf_kind="moffat", n_stars=4, noise=0.0, variation="linear")
        assert exposure.psf_kind == "moffat"
        size, h = exposure.psf_size, exposure.psf_size // 2
        for x, y, flux, fwhm in exposure.stars:
            cx, cy = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
            expected = flux * moffat_psf(size, fwhm, beta=2.5, center=(h + y - cy, h + x - cx))
            ny, nx = SMALL
            y0, x0 = max(cy - h, 0), max(cx - h, 0)
            y1, x1 = min(cy + h + 1, ny), min(cx + h + 1, nx)
            got = exposure.model.data[y0:y1, x0:x1]
            cut = expected[y0 - (cy - h) : y1 - (cy - h), x0 - (cx - h) : x1 - (cx - h)]
            # stamps may overlap at their far edges: compare the core
            core = cut > 1e-3 * cut.max()
            np.testing.assert_allclose(got[core], cut[core], rtol=2e-3, atol=1e-4 * flux)

    def test_nan_patch(self):
        exposure = _make(nan_patch=True)
        model = exposure.model
        nan = np.isnan(model.data)
        assert 25 <= nan.sum() <= 900
        rows, cols = np.nonzero(nan)
        assert nan[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # a rectangle
        np.testing.assert_array_equal(model.dq != 0, nan)
        assert np.all(model.dq[nan] == dqflags["DO_NOT_USE"])
        for name in ARRAYS[1:]:
            np.testing.assert_array_equal(np.isnan(getattr(model, name)), nan, name)
        assert not np.isnan(_make().model.data).any()

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="variation"):
            _make(variation="cubic")
        with pytest.raises(ValueError, match="fwhm_range"):
            _make(fwhm_range=(3.0, 2.0))
        with pytest.raises(ValueError, match="fwhm_range"):
            _make(fwhm_range=3.0)
        with pytest.raises(ValueError, match="grid"):
            _make(grid=(0, 3))
        with pytest.raises(ValueError, match="oversampling must be odd"):
            _make(oversampling=2)
        with pytest.raises(ValueError, match="oversampling"):
            _make(oversampling=0)
        with pytest.raises(ValueError, match="odd"):
            _make(psf_size=24)
        with pytest.raises(ValueError, match="PSF kind"):
            _make(psf_kind="airy")
        with pytest.raises(ValueError, match="noise"):
            _make(noise=-1.0)
        with pytest.raises(ValueError, match="target_fwhm"):
            _make(target_fwhm=0.0)
        with pytest.raises(ValueError, match="could not place"):
            make_psfmatch_exposure((40, 40), n_stars=20)


# ----------------------------------------------------------------------------- PSF grid


class TestPsfGrid:
    def test_nodes_hold_the_stamps_at_their_positions(self, exposure):
        psf = exposure.psf
        assert isinstance(psf, PsfModel) and psf.n_psf == 9 and psf.oversampling == 1
        x, y = psf.positions()
        np.testing.assert_array_equal(x, np.tile([0.0, 79.5, 159.0], 3))
        np.testing.assert_array_equal(y, np.repeat([0.0, 63.5, 127.0], 3))
        assert psf.meta.psf.source == "analytic"
        assert psf.meta.psf.instrument == "NIRCAM"
        for i in range(9):
            expected = psf_stamp("gaussian", exposure.fwhm_at(x[i], y[i]), size=25)
            np.testing.assert_allclose(psf.data[i], expected, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(exposure.psf_at(x[i], y[i]), expected, rtol=0, atol=0)

    def test_node_fwhm_is_the_field(self, exposure):
        x, y = exposure.psf.positions()
        measured = [fwhm_of(stamp, deconvolve_pixel=True) for stamp in exposure.psf.data]
        true = exposure.fwhm_at(x, y)
        np.testing.assert_allclose(measured, true, rtol=0.015)
        assert np.argmin(measured) == 4  # the centre node is the sharpest (quadratic field)
        assert true[4] == 2.0
        assert true[0] == pytest.approx(2.0 + (79.5**2 + 63.5**2) / (80.0**2 + 64.0**2))

    def test_oversampled_grid_is_the_effective_psf(self):
        exposure = _make(oversampling=3, grid=(2, 2), variation="linear", n_stars=5)
        psf = exposure.psf
        assert psf.oversampling == 3 and psf.data.shape == (4, 75, 75)
        x, y = psf.positions()
        for i in range(4):
            sigma = exposure.fwhm_at(x[i], y[i]) / FWHM_PER_SIGMA
            t = (np.arange(75) - 37) / 3.0  # offsets in detector pixels
            epsf = np.outer(_epsf_1d(t, sigma), _epsf_1d(t, sigma))
            # each sample is the pixel-integrated PSF at its offset; a stamp sums to 9
            np.testing.assert_allclose(psf.data[i], 9.0 * epsf / epsf.sum(), atol=2e-6)
        np.testing.assert_allclose(
            psf.detector_stamps()[0],
            psf_stamp("gaussian", exposure.fwhm_at(x[0], y[0]), size=25),
            atol=1e-7,
        )

    def test_single_node_at_the_centre(self):
        psf = _make(grid=(1, 1), n_stars=2).psf
        assert psf.positions() == ([79.5], [63.5])


# ----------------------------------------------------------------------------- files


class TestWrite:
    def test_files_round_trip(self, exposure, tmp_path):
        paths = write_psfmatch_exposure(tmp_path / "out", exposure, name="field")
        assert paths["image"].name == "field_cal.fits"
        assert paths["psf"].name == "field_psf.asdf"
        assert paths["target_psf"].name == "field_target_psf.asdf"
        assert exposure.model.meta.filename == "psfmatch_cal.fits"  # the input is untouched

        with sm.open(paths["image"]) as image:
            assert isinstance(image, ImageModel)
            np.testing.assert_array_equal(image.data, exposure.model.data)
            np.testing.assert_array_equal(image.var_rnoise, exposure.model.var_rnoise)
            assert image.meta.wcs(10.0, 20.0) == pytest.approx(exposure.model.meta.wcs(10.0, 20.0))

        psf = read_psf_file(paths["psf"])
        np.testing.assert_array_equal(psf.data, exposure.psf.data)
        for got, want in zip(psf.positions(), exposure.psf.positions(), strict=True):
            np.testing.assert_array_equal(got, want)
        assert psf.oversampling == 1 and psf.meta.psf.source == "analytic"
        assert psf.meta.psf.source_file == "field_psf.asdf"

        target = read_psf_file(paths["target_psf"])
        assert target.n_psf == 1 and np.isnan(target.grid_x[0])
        assert target.meta.psf.fwhm == pytest.approx(exposure.target_fwhm)
        widest = max(fwhm_of(stamp) for stamp in psf.data)
        assert fwhm_of(target.data[0]) > 1.2 * widest
        assert fwhm_of(target.data[0], deconvolve_pixel=True) == pytest.approx(3.75, rel=2e-3)

    def test_target_fwhm_option_and_bad_name(self, exposure, tmp_path):
        narrow = _make(target_fwhm=1.5, n_stars=2)
        assert narrow.target_fwhm == 1.5  # narrower than the exposure PSF: a deconvolution case
        assert narrow.target_psf().shape == (25, 25)
        with pytest.raises(ValueError, match="plain file-name stem"):
            write_psfmatch_exposure(tmp_path, exposure, name="sub/dir")

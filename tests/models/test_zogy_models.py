"""PsfModel, read_psf_file and DifferenceImageModel: conventions, I/O and validation."""

import warnings

import asdf
import numpy as np
import pytest
from asdf.exceptions import ValidationError
from astropy.io import fits
from stdatamodels.jwst import datamodels as jwst_dm

import stmatch.models as sm
from stmatch.datasets import make_image
from stmatch.models import (
    MODEL_CLASSES,
    TILES_DTYPE,
    DifferenceImageModel,
    PsfModel,
    StmatchDataModel,
    read_psf_file,
)

FORMATS = ["asdf", "fits"]
IMAGE_SCHEMA = "http://stsci.edu/schemas/jwst_datamodel/image.schema"


def _gaussian(size, sigma, dy=0.0, dx=0.0):
    c = size // 2
    y, x = np.mgrid[:size, :size]
    return np.exp(-((y - c - dy) ** 2 + (x - c - dx) ** 2) / (2.0 * sigma**2))


def _grid_model():
    stamps = np.stack([_gaussian(21, s) for s in (2.0, 2.5, 3.0)])
    return PsfModel.from_arrays(
        stamps,
        [10.0, 1000.0, 2000.0],
        [20.0, 30.0, 1500.0],
        oversampling=3,
        source="stpsf",
        fwhm=1.7,
        instrument="NIRCam",
        detector="NRCA1",
        filter="F200W",
        description="three Gaussians",
    )


def _assert_stamps_proportional(actual, expected, total):
    """Each stamp of ``actual`` equals the stamp of ``expected`` scaled to sum ``total``."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64).reshape(actual.shape)
    scaled = expected * (total / expected.sum(axis=(1, 2), keepdims=True))
    np.testing.assert_allclose(actual, scaled, rtol=2e-6, atol=1e-9 * total)


# --- PsfModel.from_arrays ------------------------------------------------------------


def test_registry():
    assert MODEL_CLASSES["PsfModel"] is PsfModel
    assert MODEL_CLASSES["DifferenceImageModel"] is DifferenceImageModel
    for cls in (PsfModel, DifferenceImageModel):
        assert issubclass(cls, StmatchDataModel)
    assert PsfModel.schema_url == "asdf://stmatch.org/stmatch/schemas/psf_model-1.0.0"
    assert DifferenceImageModel.schema_url == (
        "asdf://stmatch.org/stmatch/schemas/difference_image-1.0.0"
    )


def test_single_psf_from_2d_array():
    stamp = 7.0 * _gaussian(15, 1.5)
    original = stamp.copy()
    model = PsfModel.from_arrays(stamp, fwhm=3.5, n_stars=12, source="empirical")
    np.testing.assert_array_equal(stamp, original)  # input untouched
    assert model.data.shape == (1, 15, 15) and model.data.dtype == np.float32
    assert model.n_psf == 1 and model.oversampling == 1
    assert model.data.sum(dtype=np.float64) == pytest.approx(1.0, rel=1e-6)
    _assert_stamps_proportional(model.data, stamp, 1.0)
    x, y = model.positions()
    assert np.isnan(x).all() and np.isnan(y).all() and x.shape == (1,)
    assert model.meta.psf.instance == {
        "oversampling": 1,
        "normalization": "unit_sum",
        "source": "empirical",
        "fwhm": 3.5,
        "n_stars": 12,
    }
    assert model.meta.model_type == "PsfModel"
    model.check()
    model.validate()


def test_grid_from_3d_array_sums_to_oversampling_squared():
    model = _grid_model()
    assert model.data.shape == (3, 21, 21)
    np.testing.assert_allclose(model.data.sum(axis=(1, 2), dtype=np.float64), 9.0, rtol=1e-6)
    x, y = model.positions()
    np.testing.assert_array_equal(x, [10.0, 1000.0, 2000.0])
    np.testing.assert_array_equal(y, [20.0, 30.0, 1500.0])
    assert model.grid_x.dtype == np.float64
    assert model.meta.psf.oversampling == 3 and model.meta.psf.source == "stpsf"
    assert model.meta.psf.filter == "F200W"


def test_detector_stamps_are_the_stride_through_the_centre():
    """An ePSF holds the detector-sampled PSF on the sub-grid through the centre pixel."""
    rng = np.random.default_rng(5)
    k, m = 3, 7
    detector = _gaussian(m, 1.2) * rng.uniform(0.9, 1.0, (2, m, m))
    size = k * (m - 1) + 1 + 2 * 2  # odd, two extra samples each side
    stamps = rng.uniform(0.0, 0.05, (2, size, size))
    c = size // 2
    offsets = k * (np.arange(m) - m // 2)
    stamps[:, (c + offsets)[:, None], (c + offsets)[None, :]] = detector
    model = PsfModel.from_arrays(stamps, [1.0, 2.0], [3.0, 4.0], oversampling=k)
    sampled = model.detector_stamps()
    assert sampled.shape == (2, m, m)
    _assert_stamps_proportional(sampled, detector, 1.0)


def test_optical_psf_is_integrated_over_the_pixel():
    delta = np.zeros((9, 9))
    delta[4, 4] = 1.0
    model = PsfModel.from_arrays(delta, oversampling=3, pixel_integrated=False)
    expected = np.zeros((9, 9))
    expected[3:6, 3:6] = 1.0  # 3x3 pixel box, total k**2 = 9
    np.testing.assert_allclose(model.data[0], expected, atol=1e-7)
    assert model.detector_stamps()[0].tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="even oversampling"):
        PsfModel.from_arrays(delta, oversampling=2, pixel_integrated=False)


GOOD = _gaussian(11, 1.5)


def _with(value, where=(5, 5)):
    stamp = GOOD.copy()
    stamp[where] = value
    return stamp


@pytest.mark.parametrize(
    ("stamps", "kwargs", "match"),
    [
        (_gaussian(11, 1.5)[:, :10], {}, "odd number of rows and columns"),
        (np.ones((12, 12)), {}, "fov_pixels"),
        (_with(np.nan), {}, "non-finite"),
        (_with(np.inf, (0, 0)), {}, "non-finite"),
        (-GOOD, {}, "non-positive sum"),
        (np.zeros((11, 11)), {}, "non-positive sum"),
        (GOOD[0], {}, "2-D image"),
        (GOOD[None, None], {}, "2-D image"),
        (np.zeros((0, 11, 11)), {}, "empty"),
        (GOOD.astype(str), {}, "numeric"),
        (np.fft.ifftshift(GOOD), {}, "fftshift"),
        (np.stack([GOOD, GOOD]), {}, "needs the detector position"),
        (np.stack([GOOD, GOOD]), {"x": [1.0, 2.0], "y": [1.0]}, "one position per PSF"),
        (np.stack([GOOD, GOOD]), {"x": [1.0, np.nan], "y": [1.0, 2.0]}, "finite"),
        (GOOD, {"x": 5.0}, "both x and y"),
        (GOOD, {"oversampling": 0}, "integer >= 1"),
        (GOOD, {"oversampling": 1.5}, "integer >= 1"),
        (GOOD, {"oversampling": True}, "integer >= 1"),
        (GOOD, {"source": "webbpsf"}, "PSF source must be one of"),
        (GOOD, {"fwhm": -1.0}, "positive finite"),
        (GOOD, {"n_stars": -3}, "integer >= 0"),
    ],
)
def test_from_arrays_rejects_bad_input(stamps, kwargs, match):
    with pytest.raises(ValueError, match=match):
        PsfModel.from_arrays(stamps, **kwargs)


def test_from_arrays_rejects_unknown_meta():
    with pytest.raises(TypeError, match="unknown meta.psf entries"):
        PsfModel.from_arrays(GOOD, wavelength=2e-6)


def test_check_catches_hand_made_models():
    model = PsfModel(data=np.ones((2, 5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="has no grid_x"):
        model.check()
    model.grid_x = np.zeros(3)
    model.grid_y = np.zeros(2)
    with pytest.raises(ValueError, match=r"expected \(2,\)"):
        model.check()
    with pytest.raises(ValueError, match="no data"):
        PsfModel().check()


# --- PsfModel I/O and schema ---------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_psf_model_round_trip(tmp_path, fmt):
    model = _grid_model()
    model.meta.stmatch = {"version": "0.1", "steps": {"stmatch_zogy": {"role": "psf"}}}
    path = tmp_path / f"psf.{fmt}"
    model.save(str(path))
    if fmt == "fits":
        assert fits.getheader(path)["DATAMODL"] == "PsfModel"
        with fits.open(path) as hdul:
            assert hdul["SCI"].data.shape == (3, 21, 21)
            assert "GRID_X" in hdul and "GRID_Y" in hdul

    for back in (sm.open(path), read_psf_file(path)):
        with back:
            assert type(back) is PsfModel
            np.testing.assert_array_equal(back.data, model.data)
            np.testing.assert_array_equal(back.grid_x, model.grid_x)
            np.testing.assert_array_equal(back.grid_y, model.grid_y)
            psf = back.meta.psf.instance
            assert psf.pop("source_file", path.name) == path.name
            assert psf == model.meta.psf.instance
            assert back.meta.stmatch.instance == model.meta.stmatch.instance


def test_psf_schema_rejects_wrong_arrays_and_meta():
    model = PsfModel(strict_validation=True)
    with pytest.raises(ValueError, match="Expected 3, got 2"):
        model.data = np.ones((5, 5), dtype=np.float32)
    with pytest.raises(ValueError, match="Expected 1, got 2"):
        model.grid_x = np.ones((2, 2))
    with pytest.raises(ValueError, match="could not convert"):
        model.data = np.full((1, 3, 3), "a")
    with pytest.raises(ValidationError, match="less than the minimum"):
        model.meta.psf.oversampling = 0
    with pytest.raises(ValidationError, match="is not of type 'integer'"):
        model.meta.psf.oversampling = 2.5


def test_read_psf_file_renormalises_our_own_files(tmp_path):
    model = PsfModel(data=(3.0 * _gaussian(9, 1.2))[None].astype(np.float32))
    model.meta.psf.oversampling = 1
    model.save(str(tmp_path / "raw.asdf"))
    back = read_psf_file(tmp_path / "raw.asdf")
    assert back.data.sum(dtype=np.float64) == pytest.approx(1.0, rel=1e-6)
    assert back.meta.psf.normalization == "unit_sum"
    assert back.meta.psf.source == "file"


# --- read_psf_file: stpsf/webbpsf and STDPSF FITS ------------------------------------


def _write_grid(path, stamps, yx, *, oversamp=2, stpsf=True, **extra):
    header = fits.Header()
    header["INSTRUME"] = "NIRCam"
    header["DETECTOR"] = "NRCA3"
    header["FILTER"] = "F150W"
    header["OVERSAMP"] = (oversamp, "Oversampling factor for FFTs in computation")
    header["DET_SAMP"] = (oversamp, "Oversampling factor for MFT to detector plane")
    for i, (y, x) in enumerate(yx):
        header[f"DET_YX{i}"] = (str((float(y), float(x))), f"The #{i} PSF's (y,x) position")
    header["NUM_PSFS"] = (len(yx), "The total number of fiducial PSFs")
    version = "STPSF software version" if stpsf else "WebbPSF software version"
    header["VERSION"] = ("2.0.0", version)
    for key, value in extra.items():
        header[key] = value
    fits.PrimaryHDU(np.asarray(stamps, dtype=np.float32), header=header).writeto(path)
    return path


def test_read_stpsf_grid(tmp_path):
    stamps = np.stack([_gaussian(21, s) for s in (1.5, 2.0, 2.5)])  # sums ~ like old webbpsf
    yx = [(10.0, 20.0), (10.0, 500.0), (900.0, 30.5)]
    path = _write_grid(tmp_path / "nircam_nrca3_f150w_fovp11_samp2_npsf3.fits", stamps, yx)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = read_psf_file(path)
    assert type(model) is PsfModel
    assert model.meta.psf.oversampling == 2
    assert model.meta.psf.source == "stpsf"
    assert model.meta.psf.instrument == "NIRCam"
    assert model.meta.psf.detector == "NRCA3"
    assert model.meta.psf.filter == "F150W"
    assert model.meta.psf.source_file == path.name
    x, y = model.positions()
    np.testing.assert_array_equal(x, [20.0, 500.0, 30.5])
    np.testing.assert_array_equal(y, [10.0, 10.0, 900.0])
    _assert_stamps_proportional(model.data, stamps, 4.0)
    model.validate()


def _square_grid(tmp_path, name, *, stpsf):
    """A 2x2 grid as stpsf saves it: keywords in (x slowest) order, cube sorted by y, then x."""
    positions = [(0.0, 0.0), (0.0, 2047.0), (2047.0, 0.0), (2047.0, 2047.0)]  # (x, y)
    sigma = {(0.0, 0.0): 1.5, (2047.0, 0.0): 1.8, (0.0, 2047.0): 2.1, (2047.0, 2047.0): 2.4}
    by_y_then_x = sorted(positions, key=lambda p: (p[1], p[0]))
    cube = np.stack([_gaussian(15, sigma[p]) for p in by_y_then_x])
    path = _write_grid(tmp_path / name, cube, [(y, x) for x, y in positions], stpsf=stpsf)
    return path, sigma


def _sigma_of(stamp, k=2):
    detector = stamp[stamp.shape[0] // 2 % k :: k, stamp.shape[1] // 2 % k :: k]
    c = detector.shape[0] // 2
    return float(np.sqrt(np.sum(detector * (np.arange(detector.shape[0]) - c)[:, None] ** 2)))


@pytest.mark.parametrize("grid_order", ["auto", "sorted"])
def test_read_stpsf_grid_saved_sorted(tmp_path, grid_order):
    path, sigma = _square_grid(tmp_path, "g.fits", stpsf=True)
    if grid_order == "auto":
        with pytest.warns(UserWarning, match="sorted order"):
            model = read_psf_file(path)
    else:
        model = read_psf_file(path, grid_order=grid_order)
    x, y = model.positions()
    for i in range(4):
        want = sigma[(x[i], y[i])] / 2.0  # detector pixels
        assert _sigma_of(model.data[i]) == pytest.approx(want, rel=0.02)


def test_read_webbpsf_grid_in_keyword_order(tmp_path):
    path, sigma = _square_grid(tmp_path, "g.fits", stpsf=False)
    with pytest.warns(UserWarning, match="keyword order"):
        auto = read_psf_file(path)
    header = read_psf_file(path, grid_order="header")
    for model in (auto, header):
        x, y = model.positions()
        np.testing.assert_array_equal(x, [0.0, 0.0, 2047.0, 2047.0])
        np.testing.assert_array_equal(y, [0.0, 2047.0, 0.0, 2047.0])


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda h, d: h.remove("DET_YX1"), "needs the position of each PSF"),
        (lambda h, d: h.set("NUM_PSFS", 4), "NUM_PSFS = 4"),
        (lambda h, d: h.set("DET_YX0", "centre"), "expected the string '\\(y, x\\)'"),
        (lambda h, d: h.set("OVERSAMP", 0), "OVERSAMP = 0"),
        (lambda h, d: d.__setitem__((1, 3, 4), np.nan), "PSF stamp 1 has 1 non-finite"),
    ],
)
def test_read_bad_grid(tmp_path, edit, match):
    stamps = np.stack([_gaussian(21, s) for s in (1.5, 2.0, 2.5)])
    path = _write_grid(tmp_path / "g.fits", stamps, [(1, 2), (3, 4), (5, 6)])
    with fits.open(path) as hdul:
        header, data = hdul[0].header.copy(), hdul[0].data.copy()
    edit(header, data)
    fits.PrimaryHDU(data, header=header).writeto(path, overwrite=True)
    with pytest.raises(ValueError, match=match):
        read_psf_file(path)


def test_read_even_grid_says_how_to_fix(tmp_path):
    stamps = np.stack([np.pad(_gaussian(21, 2.0), ((0, 1), (0, 1)))] * 2)  # 22 x 22
    path = _write_grid(tmp_path / "even.fits", stamps, [(0, 0), (0, 100)])
    with pytest.raises(ValueError, match="odd fov_pixels") as info:
        read_psf_file(path)
    assert "22 x 22" in str(info.value)


def _calc_psf_file(path, *, oversample=4, fov=15, det_dist=False):
    """A single PSF as stpsf calc_psf writes it: OVERSAMP primary, DET_SAMP extension."""
    over = _gaussian(fov * oversample + (0 if oversample % 2 else 0), 1.3 * oversample)
    primary = fits.PrimaryHDU(over.astype(np.float32))
    for header in (primary.header,):
        header["EXTNAME"] = "OVERSAMP"
        header["OVERSAMP"] = (oversample, "Oversampling factor for FFTs in computation")
        header["DET_SAMP"] = (oversample, "Oversampling factor for MFT to detector plane")
        header["INSTRUME"] = "NIRCam"
        header["FILTER"] = "F200W"
        header["DETECTOR"] = "NRCB1"
        header["DET_X"] = (1023.0, "Detector X pixel position of array center")
        header["DET_Y"] = (511.0, "Detector Y pixel position of array center")
    hdus = [primary]
    names = ["DET_SAMP", "DET_DIST"] if det_dist else ["DET_SAMP"]
    det = {"DET_SAMP": _gaussian(fov, 1.3), "DET_DIST": _gaussian(fov, 1.4)}
    for name in names:
        hdu = fits.ImageHDU(det[name].astype(np.float32), header=primary.header.copy())
        hdu.header["EXTNAME"] = name
        hdu.header["OVERSAMP"] = (1, "These data are rebinned to detector pixels")
        hdu.header["CALCSAMP"] = (oversample, "This much oversampling used in calculation")
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path)
    return path, over, det


def test_read_single_stpsf_psf_prefers_detector_sampling(tmp_path):
    path, _, det = _calc_psf_file(tmp_path / "psf.fits")
    model = read_psf_file(path)
    assert model.n_psf == 1 and model.oversampling == 1
    assert model.meta.psf.source == "stpsf"
    assert model.meta.psf.filter == "F200W"
    assert "DET_SAMP" in model.meta.psf.description
    x, y = model.positions()
    assert (x[0], y[0]) == (1023.0, 511.0)
    _assert_stamps_proportional(model.data, det["DET_SAMP"], 1.0)
    # The oversampled primary is 60 x 60: even, refused with advice.
    with pytest.raises(ValueError, match="odd number of rows"):
        read_psf_file(path, ext="OVERSAMP")


def test_read_single_stpsf_psf_with_distortion(tmp_path):
    path, _, det = _calc_psf_file(tmp_path / "psf.fits", det_dist=True)
    model = read_psf_file(path)
    _assert_stamps_proportional(model.data, det["DET_DIST"], 1.0)
    _assert_stamps_proportional(read_psf_file(path, ext="DET_SAMP").data, det["DET_SAMP"], 1.0)


def test_read_oversampled_optical_psf_is_pixel_integrated(tmp_path):
    path, over, _ = _calc_psf_file(tmp_path / "psf.fits", oversample=3, fov=7)
    model = read_psf_file(path, ext="OVERSAMP")
    assert model.oversampling == 3 and model.data.shape == (1, 21, 21)
    padded = np.pad(over, 1)
    box = sum(padded[a : a + 21, b : b + 21] for a in range(3) for b in range(3))
    _assert_stamps_proportional(model.data, box, 9.0)


def test_read_plain_fits_image(tmp_path):
    path = tmp_path / "mypsf.fit"
    fits.PrimaryHDU(_gaussian(13, 2.0)).writeto(path)
    model = read_psf_file(path)
    assert model.meta.psf.source == "file" and model.oversampling == 1
    assert np.isnan(model.grid_x[0])
    assert read_psf_file(path, oversampling=1).oversampling == 1


def test_read_stdpsf(tmp_path):
    stamps = np.stack([_gaussian(21, 1.5 + 0.2 * i) for i in range(6)])  # x fastest
    header = fits.Header()
    header["NXPSFS"], header["NYPSFS"] = 3, 2
    for i, x in enumerate((1, 1025, 2048), start=1):
        header[f"IPSFX{i:02d}"] = x
    for j, y in enumerate((1, 2048), start=1):
        header[f"JPSFY{j:02d}"] = y
    path = tmp_path / "STDPSF_NRCA1_F200W.fits"
    fits.PrimaryHDU(stamps.astype(np.float32), header=header).writeto(path)
    model = read_psf_file(path)
    x, y = model.positions()
    np.testing.assert_array_equal(x, [0, 1024, 2047, 0, 1024, 2047])
    np.testing.assert_array_equal(y, [0, 0, 0, 2047, 2047, 2047])
    assert model.oversampling == 4
    _assert_stamps_proportional(model.data, stamps, 16.0)


def test_read_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.fits"):
        read_psf_file(tmp_path / "nope.fits")
    (tmp_path / "text.fits").write_text("not a FITS file at all\n" * 200)
    with pytest.raises(ValueError, match="not a readable FITS or ASDF"):
        read_psf_file(tmp_path / "text.fits")
    fits.BinTableHDU.from_columns([fits.Column("a", "E", array=[1.0])]).writeto(
        tmp_path / "table.fits"
    )
    with pytest.raises(ValueError, match="no 2-D or 3-D image"):
        read_psf_file(tmp_path / "table.fits")
    jwst_dm.ImageModel(np.ones((5, 5), dtype=np.float32)).save(str(tmp_path / "img.asdf"))
    with pytest.raises(ValueError, match="holds a ImageModel, not a PsfModel"):
        read_psf_file(tmp_path / "img.asdf")
    asdf.AsdfFile({"x": 1}).write_to(tmp_path / "bare.asdf")
    with pytest.raises(ValueError, match="without meta.model_type"):
        read_psf_file(tmp_path / "bare.asdf")
    fits.PrimaryHDU(_gaussian(9, 1.0)).writeto(tmp_path / "ok.fits")
    with pytest.raises(ValueError, match="no extension 'SCI'"):
        read_psf_file(tmp_path / "ok.fits", ext="SCI")
    with pytest.raises(ValueError, match="grid_order"):
        read_psf_file(tmp_path / "ok.fits", grid_order="xy")


# --- DifferenceImageModel ------------------------------------------------------------


@pytest.fixture(scope="module")
def science():
    return make_image((48, 40), n_stars=3, seed=4)


def _tiles():
    tiles = sm.empty_tiles(2)
    tiles["y0"], tiles["y1"] = [0, 24], [24, 48]
    tiles["x0"], tiles["x1"] = [0, 0], [40, 40]
    tiles["yc"], tiles["xc"] = [11.5, 35.5], [19.5, 19.5]
    tiles["f_d"], tiles["f_s"] = [0.7071, 0.70712], [1.25e-3, 1.5e-3]
    return tiles


ZOGY_META = {
    "flux_ratio": 1.03,
    "flux_ratio_err": 0.004,
    "flux_ratio_source": "fit",
    "f_d": 0.7071,
    "f_s": 1.3e-3,
    "sigma_new": 0.012,
    "sigma_ref": 0.006,
    "sigma_source_new": "variance",
    "sigma_source_ref": "robust",
    "astrometric_noise_x": 0.05,
    "astrometric_noise_y": 0.04,
    "tile_size": 24,
    "n_tiles": 2,
    "psf_source_new": "stpsf",
    "psf_source_ref": "empirical",
    "template_resampled": True,
    "template": "ref_i2d.fits",
    "detection_threshold": 5.0,
    "n_detections": 7,
    "units": "MJy/sr",
}


def _difference(science):
    rng = np.random.default_rng(9)
    shape = science.data.shape
    model = DifferenceImageModel(science, data=rng.normal(size=shape).astype(np.float32))
    model.dq = np.arange(np.prod(shape), dtype=np.uint32).reshape(shape) % 3
    model.err = np.full(shape, 1.0, dtype=np.float32)
    for name in ("var", "score", "scorr", "alpha", "alpha_err"):
        setattr(model, name, rng.normal(size=shape).astype(np.float32))
    model.psf = np.stack([_gaussian(11, 1.5), _gaussian(11, 1.6)]).astype(np.float32)
    model.tiles = _tiles()
    model.meta.zogy = dict(ZOGY_META)
    model.meta.stmatch = {"version": "0.1", "steps": {"stmatch_zogy": {"n_tiles": 2}}}
    return model


def test_difference_schema_extends_jwst_image():
    raw = asdf.schema.load_schema(DifferenceImageModel.schema_url)
    assert raw["allOf"][0] == {"$ref": IMAGE_SCHEMA}
    schema = DifferenceImageModel()._schema
    for name in ("data", "dq", "err", "var_poisson", "var", "score", "psf", "tiles"):
        assert name in schema["properties"], name
    declared = asdf.tags.core.ndarray.asdf_datatype_to_numpy_dtype(
        schema["properties"]["tiles"]["datatype"]
    )
    assert np.dtype(declared) == TILES_DTYPE


def test_difference_from_science_copies_meta_not_arrays(science):
    before = science.meta.instance.copy()
    model = DifferenceImageModel(science)
    assert model.meta.model_type == "DifferenceImageModel"
    assert science.meta.model_type == "ImageModel"
    assert model.meta.instrument.name == science.meta.instrument.name
    assert model.meta.exposure.start_time == science.meta.exposure.start_time
    assert model.data is None and model.dq is None and model.err is None
    assert model.meta.wcs is not science.meta.wcs
    x, y = np.meshgrid(np.arange(0, 40, 7.0), np.arange(0, 48, 5.0))
    np.testing.assert_array_equal(model.meta.wcs(x, y), science.meta.wcs(x, y))
    # Changing the difference image never reaches the science exposure.
    model.meta.exposure.start_time = 1.0
    model.meta.wcs.bounding_box = ((-0.5, 9.5), (-0.5, 9.5))
    model.data = np.zeros(science.data.shape, dtype=np.float32)
    assert science.meta.exposure.start_time == before["exposure"]["start_time"]
    assert science.meta.wcs.bounding_box != model.meta.wcs.bounding_box
    assert np.any(science.data != 0)
    assert science.meta.instance.keys() == before.keys()


@pytest.mark.parametrize("fmt", FORMATS)
def test_difference_round_trip(tmp_path, science, fmt):
    model = _difference(science)
    path = tmp_path / f"jw_diff.{fmt}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.save(str(path))
    if fmt == "fits":
        with fits.open(path) as hdul:
            assert hdul[0].header["DATAMODL"] == "DifferenceImageModel"
            for name in ("SCI", "DQ", "ERR", "VAR", "SCORE", "SCORR", "ALPHA", "ALPHA_ERR"):
                assert hdul[name].data.shape == (48, 40), name
            assert hdul["PSF"].data.shape == (2, 11, 11)
            assert len(hdul["TILES"].data) == 2

    with sm.open(path) as back:
        assert type(back) is DifferenceImageModel
        for name in ("data", "dq", "err", "var", "score", "scorr", "alpha", "alpha_err", "psf"):
            np.testing.assert_array_equal(getattr(back, name), getattr(model, name), name)
            have = getattr(back, name).dtype.newbyteorder("=")
            assert have == getattr(model, name).dtype, name
        tiles = back.tiles
        assert [n.lower() for n in tiles.dtype.names] == list(TILES_DTYPE.names)
        for name in TILES_DTYPE.names:
            np.testing.assert_array_equal(np.asarray(tiles[name]), _tiles()[name], name)
            assert np.asarray(tiles[name]).dtype.newbyteorder("=") == TILES_DTYPE[name], name
        assert back.meta.zogy.instance == ZOGY_META
        assert back.meta.stmatch.instance == model.meta.stmatch.instance
        assert back.meta.instrument.name == science.meta.instrument.name
        x, y = np.meshgrid(np.linspace(-5, 45, 11), np.linspace(-5, 50, 12))
        np.testing.assert_array_equal(back.meta.wcs(x, y), science.meta.wcs(x, y))
        back.validate()
        # Still a jwst image: ImageModel accepts it.
        image = jwst_dm.ImageModel(back)
        np.testing.assert_array_equal(image.data, model.data)


def test_difference_model_passes_through_open(science):
    model = _difference(science)
    same = sm.open(model)
    assert type(same) is DifferenceImageModel and same.data is model.data
    assert DifferenceImageModel(model).score is model.score


def test_difference_schema_rejects_wrong_arrays_and_meta():
    model = DifferenceImageModel(strict_validation=True)
    with pytest.raises(ValueError, match="Expected 2, got 3"):
        model.score = np.ones((2, 3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="Expected 3, got 2"):
        model.psf = np.ones((11, 11), dtype=np.float32)
    with pytest.raises(ValueError, match="could not convert"):
        model.scorr = np.full((3, 3), "x")
    wrong = np.zeros(
        2, dtype=[(n, "f8" if n == "x1" else TILES_DTYPE[n]) for n in TILES_DTYPE.names]
    )
    with pytest.raises(ValueError, match="column 'x1' has dtype float64"):
        model.tiles = wrong
    with pytest.raises(ValueError, match="Column names don't match schema"):
        model.tiles = np.zeros(2, dtype=[("y0", "<i4")])
    with pytest.raises(ValidationError, match="is not of type 'integer'"):
        model.meta.zogy.n_tiles = "many"
    with pytest.raises(ValidationError, match="is not of type 'boolean'"):
        model.meta.zogy.template_resampled = 1
    model.meta.zogy.flux_ratio_err = None  # allowed: not measured
    model.meta.zogy.tile_size = None
    model.validate()

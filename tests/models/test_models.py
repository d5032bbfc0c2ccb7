"""stmatch.models: SkyMatchSolutionModel, open(), jwst models with meta.stmatch."""

import subprocess
import sys
import warnings

import asdf
import numpy as np
import pytest
from asdf.exceptions import ValidationError
from astropy import coordinates as coord
from astropy import units as u
from astropy.io import fits
from astropy.modeling import models as amodels
from astropy.table import Table
from gwcs import WCS
from gwcs import coordinate_frames as cf
from stdatamodels.exceptions import ValidationWarning
from stdatamodels.jwst import datamodels as jwst_dm

import stmatch.models as sm
from stmatch.models import (
    IMAGES_DTYPE,
    MODEL_CLASSES,
    PAIRS_DTYPE,
    SkyMatchSolutionModel,
    StmatchDataModel,
)

FORMATS = ["asdf", "fits"]

SKYMATCH_META = {
    "method": "global+match",
    "skystat": "mode",
    "match_down": True,
    "subtract": False,
    "n_images": 3,
    "n_groups": 2,
    "n_components": 1,
    "n_pairs": 3,
    "n_pairs_used": 2,
    "solver": "lstsq",
    "stmatch_version": "0.1.0",
}
STMATCH_META = {"version": "0.1.0", "steps": {"stmatch_skymatch": {"component": 0}}}


def _images():
    images = sm.empty_images(3)
    images["filename"] = [b"jw001_a_cal.fits", b"jw001_b_cal.fits", b"jw001_c_cal.fits"]
    images["group_id"] = [b"g1", b"g1", b"g2"]
    images["group_index"] = [0, 0, 1]
    images["component"] = [0, 0, 0]
    images["level"] = [0.125, 0.125, -3.5e-7]
    images["level_err"] = [1e-3, 1e-3, np.nan]
    images["n_pairs"] = [2, 2, 1]
    images["local_sky"] = [0.2, 0.3, 1e30]
    images["status"] = [b"COMPLETE", b"COMPLETE", b"SKIPPED"]
    images["reason"] = [b"", b"", b"no overlap with any other group" + b" x" * 100]
    return images


def _pairs():
    pairs = sm.empty_pairs(3)
    pairs["image_a"] = [0, 1, 0]
    pairs["image_b"] = [2, 2, 1]
    pairs["group_a"] = [0, 0, 0]
    pairs["group_b"] = [1, 1, 0]
    pairs["npix"] = [123456789012, 42, 0]
    pairs["sky_a"] = [1.0, 2.5, np.inf]
    pairs["sky_b"] = [0.75, 2.25, -np.inf]
    pairs["diff"] = pairs["sky_a"] - pairs["sky_b"]
    pairs["diff_err"] = [0.01, 0.02, np.nan]
    pairs["weight"] = [1e4, 2.5e3, 0.0]
    pairs["residual"] = [1e-9, -1e-9, 0.0]
    pairs["used"] = [True, True, False]
    pairs["reason"] = [b"", b"", b"too few pixels"]
    return pairs


def _solution():
    model = SkyMatchSolutionModel(images=_images(), pairs=_pairs(), strict_validation=True)
    model.meta.skymatch = dict(SKYMATCH_META)
    model.meta.stmatch = {"version": "0.1.0", "steps": {"stmatch_skymatch": {"component": 0}}}
    return model


def _text(values):
    return [v.decode("ascii") if isinstance(v, bytes) else str(v) for v in values]


def _assert_table_equal(actual, expected):
    """Compare a model table (FITS_rec/ndarray) with a structured ndarray, column by column."""
    assert [n.lower() for n in actual.dtype.names] == list(expected.dtype.names)
    assert len(actual) == len(expected)
    for name in expected.dtype.names:
        want = expected[name]
        have = np.asarray(actual[name])
        if want.dtype.kind == "S":
            assert _text(have) == _text(want), name
        else:
            assert have.dtype == want.dtype, name
            np.testing.assert_array_equal(have, want, err_msg=name)


@pytest.fixture
def solution():
    return _solution()


# --- SkyMatchSolutionModel ------------------------------------------------------------


def test_registry():
    assert MODEL_CLASSES["SkyMatchSolutionModel"] is SkyMatchSolutionModel
    assert issubclass(SkyMatchSolutionModel, StmatchDataModel)
    assert issubclass(StmatchDataModel, jwst_dm.JwstDataModel)
    assert SkyMatchSolutionModel.schema_url == (
        "asdf://stmatch.org/stmatch/schemas/skymatch_solution-1.0.0"
    )


def test_built_from_structured_arrays(solution):
    _assert_table_equal(solution.images, _images())
    _assert_table_equal(solution.pairs, _pairs())
    assert solution.meta.model_type == "SkyMatchSolutionModel"
    assert solution.crds_observatory == "jwst"
    assert solution.get_crds_parameters()["meta.model_type"] == "SkyMatchSolutionModel"
    solution.validate()


def test_bool_input_for_used_column():
    pairs = np.zeros(
        2, dtype=[(n, "?" if n == "used" else PAIRS_DTYPE[n]) for n in PAIRS_DTYPE.names]
    )
    pairs["used"] = [False, True]
    model = SkyMatchSolutionModel(pairs=pairs)
    np.testing.assert_array_equal(model.pairs["used"], [0, 1])
    assert model.to_tables()[1]["used"].tolist() == [False, True]


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp_path, solution, fmt):
    path = tmp_path / f"solution.{fmt}"
    solution.save(str(path))
    if fmt == "fits":
        header = fits.getheader(path)
        assert header["DATAMODL"] == "SkyMatchSolutionModel"
        with fits.open(path) as hdul:
            assert "IMAGES" in hdul and "PAIRS" in hdul

    with sm.open(path, strict_validation=True) as model:
        assert type(model) is SkyMatchSolutionModel
        assert model.meta.model_type == "SkyMatchSolutionModel"
        assert model.meta.filename == path.name
        assert model.meta.skymatch.instance == SKYMATCH_META
        assert model.meta.stmatch.instance == STMATCH_META
        _assert_table_equal(model.images, _images())
        _assert_table_equal(model.pairs, _pairs())

        images, pairs = model.to_tables()
        ref_images, ref_pairs = solution.to_tables()
        for got, ref in ((images, ref_images), (pairs, ref_pairs)):
            assert got.colnames == ref.colnames
            for name in ref.colnames:
                np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
        assert pairs["used"].dtype == bool
        assert pairs["used"].tolist() == [True, True, False]
        assert images["status"].tolist() == ["COMPLETE", "COMPLETE", "SKIPPED"]
        assert images.meta["skymatch"] == SKYMATCH_META


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_empty_pairs(tmp_path, fmt):
    model = SkyMatchSolutionModel(images=_images()[:1], pairs=sm.empty_pairs(0))
    model.meta.skymatch.n_pairs = 0
    path = tmp_path / f"single.{fmt}"
    model.save(str(path))
    with sm.open(path) as back:
        assert type(back) is SkyMatchSolutionModel
        _assert_table_equal(back.images, _images()[:1])
        assert len(back.pairs) == 0
        images, pairs = back.to_tables()
        assert len(images) == 1 and len(pairs) == 0
        assert pairs.colnames == list(PAIRS_DTYPE.names)


def test_to_tables_without_tables():
    images, pairs = SkyMatchSolutionModel().to_tables()
    assert images.colnames == list(IMAGES_DTYPE.names) and len(images) == 0
    assert pairs.colnames == list(PAIRS_DTYPE.names) and len(pairs) == 0


def test_to_tables_is_a_copy(solution):
    images, _ = solution.to_tables()
    images["level"][0] = 99.0
    assert solution.images["level"][0] == 0.125


def test_write_ecsv(tmp_path, solution):
    out = tmp_path / "sub"
    out.mkdir()
    (out / "run_images.ecsv").write_text("old and broken")
    paths = solution.write_ecsv(out / "run")
    assert paths == (out / "run_images.ecsv", out / "run_pairs.ecsv")
    assert sorted(p.name for p in out.iterdir()) == ["run_images.ecsv", "run_pairs.ecsv"]

    images = Table.read(paths[0], format="ascii.ecsv")
    pairs = Table.read(paths[1], format="ascii.ecsv")
    ref_images, ref_pairs = solution.to_tables()
    for got, ref in ((images, ref_images), (pairs, ref_pairs)):
        assert got.colnames == ref.colnames
        for name in ref.colnames:
            np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    assert pairs["used"].dtype == bool
    assert images.meta["skymatch"] == SKYMATCH_META


def test_write_ecsv_failure_leaves_no_partial_file(tmp_path, solution, monkeypatch):
    def boom(self, *args, **kwargs):
        raise RuntimeError("disk full")

    (tmp_path / "run_images.ecsv").write_text("previous")
    monkeypatch.setattr(Table, "write", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        solution.write_ecsv(tmp_path / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_images.ecsv"]
    assert (tmp_path / "run_images.ecsv").read_text() == "previous"


# --- validation -----------------------------------------------------------------------


def test_bad_meta_type_strict_raises():
    model = SkyMatchSolutionModel(strict_validation=True)
    with pytest.raises(ValidationError, match="is not of type 'integer'"):
        model.meta.skymatch.n_images = "x"


def test_bad_meta_type_lenient_warns_and_drops_value():
    model = SkyMatchSolutionModel(strict_validation=False)
    with pytest.warns(ValidationWarning, match="is not of type 'integer'"):
        model.meta.skymatch.n_images = "x"
    assert model.meta.skymatch.n_images is None


@pytest.mark.parametrize(
    "value",
    [
        {"version": 3},
        {"version": "1", "steps": {"stmatch_skymatch": 5}},
        {"version": "1", "steps": "none"},
    ],
)
def test_bad_stmatch_meta_raises(value):
    model = SkyMatchSolutionModel(strict_validation=True)
    with pytest.raises(ValidationError):
        model.meta.stmatch = value


@pytest.mark.parametrize("fmt", FORMATS)
def test_invalid_model_is_not_saved(tmp_path, fmt):
    model = SkyMatchSolutionModel(strict_validation=True, validate_on_assignment=False)
    model.meta.skymatch.match_down = "yes"
    with pytest.raises(ValidationError, match="is not of type 'boolean'"):
        model.save(str(tmp_path / f"bad.{fmt}"))


def test_table_with_wrong_columns_is_rejected():
    with pytest.raises(ValueError, match="Column names don't match schema"):
        SkyMatchSolutionModel(images=np.zeros(2, dtype=[("filename", "S128")]))
    model = SkyMatchSolutionModel()
    with pytest.raises(ValueError, match="Column names don't match schema"):
        model.pairs = np.zeros(2, dtype=[(n, PAIRS_DTYPE[n]) for n in PAIRS_DTYPE.names[:-1]])


@pytest.mark.parametrize(
    ("table", "column", "dtype"),
    [
        ("images", "group_index", "f8"),  # float into int32: would truncate
        ("images", "level", "S8"),  # text into float64
        ("pairs", "used", "f4"),  # float into the uint8 flag
        ("pairs", "npix", "c16"),  # complex into int64
    ],
)
def test_table_with_wrong_dtype_is_rejected(table, column, dtype):
    base = IMAGES_DTYPE if table == "images" else PAIRS_DTYPE
    wrong = np.zeros(2, dtype=[(n, dtype if n == column else base[n]) for n in base.names])
    with pytest.raises(ValueError, match=f"column '{column}' has dtype"):
        SkyMatchSolutionModel(**{table: wrong})
    model = SkyMatchSolutionModel()
    with pytest.raises(ValueError, match=f"column '{column}' has dtype"):
        setattr(model, table, wrong)


def test_table_with_str_columns_is_accepted():
    images = np.zeros(
        1,
        dtype=[
            (n, "U300" if IMAGES_DTYPE[n].kind == "S" else IMAGES_DTYPE[n])
            for n in IMAGES_DTYPE.names
        ],
    )
    images["filename"] = "a_cal.fits"
    model = SkyMatchSolutionModel(images=images)
    assert model.images.dtype["filename"] == np.dtype("S128")
    assert model.to_tables()[0]["filename"][0] == "a_cal.fits"


# --- open() ---------------------------------------------------------------------------


def _gwcs():
    detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    icrs = cf.CelestialFrame(reference_frame=coord.ICRS(), name="world", unit=(u.deg, u.deg))
    transform = (
        (amodels.Shift(-50.5) & amodels.Shift(-40.25))
        | (amodels.Scale(0.031 / 3600) & amodels.Scale(0.031 / 3600))
        | amodels.Pix2Sky_TAN()
        | amodels.RotateNative2Celestial(150.1163213, 2.2009731, 180.0)
    )
    return WCS([(detector, transform), (icrs, None)])


@pytest.mark.parametrize("fmt", FORMATS)
def test_jwst_image_model_round_trip(tmp_path, fmt):
    wcs = _gwcs()
    model = jwst_dm.ImageModel(np.arange(80 * 100, dtype=np.float32).reshape(80, 100))
    model.meta.wcs = wcs
    model.meta.stmatch = {"version": "x", "steps": {"stmatch_skymatch": {"component": 0}}}
    path = tmp_path / f"image_cal.{fmt}"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ValidationWarning)
        model.save(str(path))

    with sm.open(path) as back:
        assert type(back) is jwst_dm.ImageModel
        assert back.meta.model_type == "ImageModel"
        assert back.meta.stmatch.instance == {
            "version": "x",
            "steps": {"stmatch_skymatch": {"component": 0}},
        }
        np.testing.assert_array_equal(back.data, model.data)
        x, y = np.meshgrid(np.linspace(-10, 110, 13), np.linspace(-5, 85, 10))
        ra, dec = wcs(x, y)
        ra2, dec2 = back.meta.wcs(x, y)
        np.testing.assert_array_equal(ra2, ra)
        np.testing.assert_array_equal(dec2, dec)
        assert back.meta.wcs.output_frame.name == "world"
        assert back.meta.wcs.input_frame.name == "detector"


@pytest.mark.parametrize(
    "make", [_solution, lambda: jwst_dm.ImageModel((5, 5))], ids=["solution", "image"]
)
def test_open_model_passes_through(make):
    model = make()
    opened = sm.open(model)
    assert type(opened) is type(model)
    assert opened is model or opened._instance is model._instance
    if isinstance(model, SkyMatchSolutionModel):
        assert opened.images is model.images
    else:
        assert opened.data is model.data


@pytest.mark.parametrize("fmt", FORMATS)
def test_open_missing_file(tmp_path, fmt):
    path = tmp_path / f"nope.{fmt}"
    with pytest.raises(FileNotFoundError, match=r"nope\." + fmt) as info:
        sm.open(path)
    assert info.value.filename == str(path)
    with pytest.raises(FileNotFoundError):
        sm.open(str(path))


def test_open_hdulist_and_asdffile(tmp_path, solution):
    solution.save(str(tmp_path / "s.fits"))
    solution.save(str(tmp_path / "s.asdf"))
    with fits.open(tmp_path / "s.fits") as hdul:
        model = sm.open(hdul)
        assert type(model) is SkyMatchSolutionModel
        _assert_table_equal(model.pairs, _pairs())
    with asdf.open(tmp_path / "s.asdf") as af:
        model = sm.open(af)
        assert type(model) is SkyMatchSolutionModel
        _assert_table_equal(model.images, _images())


def test_stdatamodels_alone_does_not_know_our_type(tmp_path, solution):
    """The reason open() exists: stdatamodels reads our files as a generic model."""
    solution.save(str(tmp_path / "s.asdf"))
    with pytest.warns(Warning, match="model_type not found"):
        generic = jwst_dm.open(tmp_path / "s.asdf")
    assert type(generic) is jwst_dm.JwstDataModel
    generic.close()


def test_import_does_not_pull_in_pipeline_packages():
    code = (
        "import sys, stmatch.models\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('stpipe', 'jwst', 'crds')\n"
        "             or m.startswith(('stmatch.steps', 'stmatch.algorithms')))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

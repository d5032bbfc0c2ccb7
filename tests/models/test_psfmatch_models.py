"""MatchingKernelModel: construction, evaluation, I/O, validation and its frozen schema."""

import hashlib
import warnings
from importlib import resources
from pathlib import Path

import asdf
import numpy as np
import pytest
from asdf.exceptions import ValidationError
from asdf.tags.core.ndarray import asdf_datatype_to_numpy_dtype
from astropy.io import fits

import stmatch.models as sm
from stmatch.algorithms.chebyshev import chebyshev_basis
from stmatch.algorithms.spatial_kernel import SpatialKernel
from stmatch.models import (
    MODEL_CLASSES,
    QUALITY_DTYPE,
    SUMMARY_KEYS,
    MatchingKernelModel,
    StmatchDataModel,
    empty_quality,
    summarize_quality,
)

FORMATS = ["asdf", "fits"]
SCHEMA_NAME = "matching_kernel-1.0.0.yaml"
SCHEMA_DIR = Path(str(resources.files("stmatch") / "schemas"))
JWST_CORE = "http://stsci.edu/schemas/jwst_datamodel/core.schema"
STMATCH_META = "asdf://stmatch.org/stmatch/schemas/stmatch_meta-1.0.0"
ARRAYS = ("data", "grid_x", "grid_y", "term_kernels", "basis", "coefficients", "cell_x", "cell_y")
DOMAIN = (-0.5, 99.5, -0.5, 79.5)


def _gaussian(size, sigma):
    c = size // 2
    y, x = np.mgrid[:size, :size]
    g = np.exp(-((y - c) ** 2 + (x - c) ** 2) / (2.0 * sigma**2))
    return g / g.sum()


def _quality():
    q = empty_quality(5)
    q["x"] = [10.0, 50.0, 90.0, 30.0, 70.0]
    q["y"] = [10.0, 40.0, 70.0, 25.0, 55.0]
    q["on_cell"] = [1, 1, 1, 0, 0]
    q["aniano_d"] = [0.01, 0.02, 0.015, 0.05, np.nan]
    q["w_minus"] = [0.1, 0.2, 0.15, 0.3, 0.25]
    q["max_ee_difference"] = [1e-3, 2e-3, 3e-3, 4e-3, 5e-3]
    q["kernel_sum"] = [1.0, 1.0 + 1e-12, 1.0, 0.999, 1.001]
    q["centroid_offset"] = [0.001, 0.002, 0.003, 0.01, 0.02]
    q["noise_gain"] = [0.20, 0.21, 0.22, 0.19, 0.23]
    return q


def _al_kernel(order=2, n_basis=4, size=9, seed=3):
    """Basis images, coefficients and the term kernels they make."""
    rng = np.random.default_rng(seed)
    basis = np.stack([_gaussian(size, s) for s in np.linspace(0.8, 2.5, n_basis)])
    n_terms = (order + 1) * (order + 2) // 2
    coefficients = 0.1 * rng.normal(size=(n_basis, n_terms))
    coefficients[0, 0] = 1.0
    terms = np.einsum("bs,bhw->shw", coefficients, basis)
    return basis, coefficients, terms


META = {
    "method": "alard_lupton",
    "kernel_sum": 1.0,
    "normalized": True,
    "cell_size": 40,
    "image_shape": (80, 100),
    "padded_psf_size": 31,
    "basis_sigmas": np.array([0.8, 1.37, 1.93, 2.5]),
    "basis_degrees": (0, 0, 0, 0),
    "regularization_lambda": 0.2,
    "regularization": 1e-4,
    "penalty": "none",
    "window": "tukey",
    "source_psf": "exposure_psf.asdf",
    "target_psf": "target_psf.asdf",
    "target_fwhm": 4.5,
    "deconvolution": False,
    "condition_number": 1234.5,
}


def _model(**overrides):
    basis, coefficients, terms = _al_kernel()
    kwargs = {
        "spatial_order": 2,
        "domain": DOMAIN,
        "target_psf": _gaussian(15, 2.0),
        "cell_x": [10.0, 50.0, 90.0, 10.0, 50.0, 90.0],
        "cell_y": [10.0, 10.0, 10.0, 70.0, 70.0, 70.0],
        "grid_x": [0.0, 99.0, 0.0, 99.0],
        "grid_y": [0.0, 0.0, 79.0, 79.0],
        "basis": basis,
        "coefficients": coefficients,
        "quality": _quality(),
    }
    psfmatch = dict(META)
    for key, value in overrides.items():
        if key in kwargs or key == "data":
            kwargs[key] = value
        else:
            psfmatch[key] = value
    return MatchingKernelModel.from_arrays(terms, psfmatch=psfmatch, **kwargs)


def _sha256(path):
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


# --- registration and schema --------------------------------------------------------------


def test_registry_and_schema_url():
    assert MODEL_CLASSES["MatchingKernelModel"] is MatchingKernelModel
    assert issubclass(MatchingKernelModel, StmatchDataModel)
    assert MatchingKernelModel.schema_url == (
        "asdf://stmatch.org/stmatch/schemas/matching_kernel-1.0.0"
    )
    assert MatchingKernelModel().meta.model_type == "MatchingKernelModel"


def test_schema_refs_jwst_core_and_stmatch_meta():
    raw = asdf.schema.load_schema(MatchingKernelModel.schema_url)
    assert raw["allOf"][0] == {"$ref": JWST_CORE}
    assert raw["allOf"][1]["properties"]["meta"]["properties"]["stmatch"] == {"$ref": STMATCH_META}
    meta = raw["allOf"][1]["properties"]["meta"]["properties"]["psfmatch"]
    assert "additionalProperties" not in meta  # permissive, as jwst's schemas are
    assert set(SUMMARY_KEYS) <= set(meta["properties"])


def test_schema_arrays_and_quality_dtype():
    schema = MatchingKernelModel()._schema["properties"]
    hdus = {name: schema[name]["fits_hdu"] for name in (*ARRAYS, "target_psf", "quality")}
    assert len(set(hdus.values())) == len(hdus)  # one extension per array
    assert hdus["data"] == "SCI" and hdus["quality"] == "QUALITY"
    for name, ndim in [("data", 3), ("term_kernels", 3), ("basis", 3), ("coefficients", 2)]:
        assert schema[name]["ndim"] == ndim and schema[name]["datatype"] == "float64", name
    declared = asdf_datatype_to_numpy_dtype(schema["quality"]["datatype"])
    assert np.dtype(declared) == QUALITY_DTYPE
    assert declared.names == QUALITY_DTYPE.names
    assert QUALITY_DTYPE["on_cell"] == np.uint8


def test_schema_is_released_with_its_checksum():
    """The schema's line in CHECKSUMS.txt: it is frozen from now on (see test_schemas.py)."""
    lines = (SCHEMA_DIR / "CHECKSUMS.txt").read_text().splitlines()
    digests = dict(reversed(line.split()) for line in lines if line.endswith(SCHEMA_NAME))
    assert digests == {SCHEMA_NAME: _sha256(SCHEMA_DIR / SCHEMA_NAME)}


# --- construction and evaluation ----------------------------------------------------------


def test_from_arrays_builds_a_consistent_model():
    basis, coefficients, terms = _al_kernel()
    model = _model()
    model.validate()
    model.check()
    assert model.spatial_order == 2 and model.n_terms == 6
    assert model.domain == DOMAIN
    for name in ARRAYS:
        assert getattr(model, name).dtype == np.float64, name
    np.testing.assert_array_equal(model.term_kernels, terms)
    np.testing.assert_array_equal(model.basis, basis)
    np.testing.assert_array_equal(model.coefficients, coefficients)
    assert model.data.shape == (4, 9, 9)
    np.testing.assert_allclose(model.data, model.kernel_at(model.grid_x, model.grid_y))
    psfmatch = model.meta.psfmatch.instance
    assert psfmatch["kernel_size"] == 9 and psfmatch["n_cells"] == 6
    assert psfmatch["image_shape"] == [80, 100]
    assert psfmatch["basis_sigmas"] == [0.8, 1.37, 1.93, 2.5]
    assert psfmatch["domain"] == list(DOMAIN)
    assert psfmatch["normalized"] is True and psfmatch["window"] == "tukey"


def test_default_grid_is_the_cells_and_fourier_has_no_basis():
    terms = _gaussian(7, 1.0)
    model = MatchingKernelModel.from_arrays(
        terms,
        spatial_order=0,
        domain=DOMAIN,
        target_psf=_gaussian(11, 2.0),
        cell_x=[25.0, 75.0],
        cell_y=[40.0, 40.0],
        psfmatch={"method": "fourier", "window": None, "condition_number": np.nan},
    )
    assert model.basis.shape == (0, 7, 7) and model.coefficients.shape == (0, 1)
    np.testing.assert_array_equal(model.grid_x, [25.0, 75.0])
    np.testing.assert_array_equal(model.data, np.stack([terms, terms]))
    assert model.quality is None
    assert "window" not in model.meta.psfmatch.instance  # None is left out
    assert np.isnan(model.summary()["condition_number"])
    model.check()


def test_kernel_at_matches_the_chebyshev_expansion():
    rng = np.random.default_rng(11)
    terms = rng.normal(size=(10, 5, 7))
    model = MatchingKernelModel.from_arrays(
        terms, spatial_order=3, domain=DOMAIN, target_psf=np.ones((3, 3)), cell_x=[], cell_y=[]
    )
    x = rng.uniform(-10, 110, 13)
    y = rng.uniform(-10, 90, 13)
    np.testing.assert_allclose(
        model.spatial_terms(x, y), chebyshev_basis(x, y, 3, DOMAIN), rtol=1e-13, atol=1e-13
    )
    reference = SpatialKernel(terms, 3, DOMAIN)
    got = model.kernel_at(x, y)
    assert got.shape == (13, 5, 7)
    for i in range(13):
        np.testing.assert_allclose(got[i], reference.kernel_at(x[i], y[i]), rtol=1e-12, atol=1e-13)
    assert model.kernel_at(3.0, 4.0).shape == (5, 7)
    assert model.kernel_at(np.zeros((2, 3)), 1.0).shape == (2, 3, 5, 7)


def test_spatial_terms_order_and_domain_analytically():
    """Terms (0,0), (1,0), (0,1), (2,0), (1,1), (0,2) of T_i(x') T_j(y')."""
    model = MatchingKernelModel.from_arrays(
        np.zeros((6, 3, 3)),
        spatial_order=2,
        domain=(0.0, 10.0, 100.0, 300.0),
        target_psf=np.ones((1, 1)),
        cell_x=[],
        cell_y=[],
    )
    xs, ys = 7.5, 150.0  # x' = 0.5, y' = -0.5
    expected = [1.0, 0.5, -0.5, 2 * 0.25 - 1, -0.25, 2 * 0.25 - 1]
    np.testing.assert_allclose(model.spatial_terms(xs, ys), expected, atol=1e-15)
    corner = model.spatial_terms([0.0, 10.0], [300.0, 100.0])  # (x', y') = (-1, 1), (1, -1)
    np.testing.assert_allclose(corner[:, 0], [1, -1, 1, 1, -1, 1])
    np.testing.assert_allclose(corner[:, 1], [1, 1, -1, 1, -1, 1])


def test_inputs_are_not_modified_or_shared():
    basis, coefficients, terms = _al_kernel()
    originals = [a.copy() for a in (basis, coefficients, terms)]
    model = MatchingKernelModel.from_arrays(
        terms,
        spatial_order=2,
        domain=DOMAIN,
        target_psf=np.ones((3, 3)),
        cell_x=[1.0],
        cell_y=[2.0],
        basis=basis,
        coefficients=coefficients,
    )
    model.term_kernels[0] += 1.0
    for given, original in zip((basis, coefficients, terms), originals, strict=True):
        np.testing.assert_array_equal(given, original)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"spatial_order": 1}, "needs 3 term kernels, got 6"),
        ({"spatial_order": -1}, "integer >= 0"),
        ({"spatial_order": 1.5}, "integer >= 0"),
        ({"domain": (0.0, 0.0, 0.0, 1.0)}, "is empty"),
        ({"domain": (0.0, 1.0, 2.0)}, "four finite numbers"),
        ({"domain": "abcd"}, "four numbers"),
        ({"cell_x": [1.0, 2.0], "cell_y": [1.0]}, "different shapes"),
        ({"grid_x": [1.0], "grid_y": None}, "both grid_x and grid_y"),
        ({"grid_x": [1.0], "grid_y": [1.0], "data": np.zeros((2, 9, 9))}, r"expected \(1, 9, 9\)"),
        ({"coefficients": np.zeros((4, 5))}, r"expected \(4, 6\)"),
        ({"basis": np.zeros((4, 7, 9))}, r"basis images are \(7, 9\)"),
        ({"coefficients": None}, "without their coefficients"),
        ({"basis": None}, "without the basis images"),
        ({"target_psf": np.ones((4, 5))}, "odd-sized"),
        ({"target_psf": np.full((3, 3), np.nan)}, "non-finite"),
        ({"cell_x": [[1.0]], "cell_y": [[1.0]]}, "must be 1-D"),
        ({"kernel_size": 0}, "integer >= 1"),
        ({"kernel_sum": "one"}, "must be a number"),
        ({"normalized": 1}, "True or False"),
        ({"method": 3}, "must be a string"),
        ({"basis_degrees": (4, 2.5)}, "integer >= 0"),
    ],
)
def test_from_arrays_rejects_bad_input(change, match):
    with pytest.raises(ValueError, match=match):
        _model(**change)


def test_from_arrays_rejects_bad_term_kernels_and_unknown_meta():
    common = {"spatial_order": 0, "domain": DOMAIN, "target_psf": np.ones((3, 3))}
    common |= {"cell_x": [], "cell_y": []}
    with pytest.raises(ValueError, match="odd number of rows"):
        MatchingKernelModel.from_arrays(np.ones((1, 4, 5)), **common)
    with pytest.raises(ValueError, match="non-empty"):
        MatchingKernelModel.from_arrays(np.ones((0, 5, 5)), **common)
    with pytest.raises(ValueError, match="non-finite"):
        MatchingKernelModel.from_arrays(np.full((5, 5), np.inf), **common)
    with pytest.raises(ValueError, match="real numeric"):
        MatchingKernelModel.from_arrays(np.full((5, 5), "a"), **common)
    for entries in ({"kernel_flavour": "sweet"}, {"domain": (0.0, 1.0, 0.0, 1.0)}):
        with pytest.raises(TypeError, match="unknown meta.psfmatch entries"):
            MatchingKernelModel.from_arrays(np.ones((5, 5)), psfmatch=entries, **common)


def test_check_catches_inconsistent_basis_and_hand_made_models():
    model = _model()
    model.coefficients = model.coefficients * 1.01
    with pytest.raises(ValueError, match="do not belong to these term kernels"):
        model.check()
    with pytest.raises(ValueError, match="no term_kernels"):
        MatchingKernelModel().check()
    bare = MatchingKernelModel(term_kernels=np.ones((3, 5, 5)))
    assert bare.spatial_order == 1  # inferred from the number of term kernels
    with pytest.raises(ValueError, match="no meta.psfmatch.domain"):
        bare.check()
    with pytest.raises(ValueError, match="not a triangular number"):
        _ = MatchingKernelModel(term_kernels=np.ones((4, 5, 5))).spatial_order


# --- quality table and summary ------------------------------------------------------------


def test_summarize_quality_splits_cells_and_off_grid():
    summary = summarize_quality(_quality())
    assert list(summary) == [key for key in SUMMARY_KEYS if key in summary]
    assert summary["max_aniano_d"] == 0.05  # the NaN is ignored
    assert summary["max_aniano_d_on_cell"] == 0.02
    assert summary["max_aniano_d_off_grid"] == 0.05
    assert summary["max_w_minus_on_cell"] == 0.2 and summary["max_w_minus_off_grid"] == 0.3
    assert summary["kernel_sum_min"] == 0.999 and summary["kernel_sum_max"] == 1.001
    assert summary["kernel_sum_max_on_cell"] == 1.0 + 1e-12
    assert summary["noise_gain_min_off_grid"] == 0.19 and summary["noise_gain_max"] == 0.23
    assert summary["max_centroid_offset_on_cell"] == 0.003
    assert summary["max_ee_difference"] == 5e-3
    assert len(summary) == len(SUMMARY_KEYS) == 24
    on_cell_only = _quality()[:3]
    assert not any(key.endswith("_off_grid") for key in summarize_quality(on_cell_only))
    assert summarize_quality(empty_quality(0)) == {}
    with pytest.raises(ValueError, match="lacks the columns"):
        summarize_quality(np.zeros(2, dtype=[("x", "f8")]))


def test_summary_reports_meta_and_explicit_values_win():
    model = _model(max_w_minus=0.9)
    summary = model.summary()
    expected = summarize_quality(_quality()) | {"max_w_minus": 0.9, "condition_number": 1234.5}
    assert summary == expected
    assert all(type(value) is float for value in summary.values())
    assert MatchingKernelModel().summary() == {}


def test_quality_table_refuses_lossy_columns():
    model = MatchingKernelModel(strict_validation=True)
    wrong = np.zeros(2, dtype=[(n, "f8") for n in QUALITY_DTYPE.names])
    with pytest.raises(ValueError, match="column 'on_cell' has dtype float64"):
        model.quality = wrong
    with pytest.raises(ValueError, match="Column names don't match schema"):
        model.quality = np.zeros(2, dtype=[("x", "<f8")])


# --- I/O ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp_path, fmt):
    model = _model()
    model.meta.stmatch = {"version": "0.1", "steps": {"stmatch_psfmatch": {"cells": 6}}}
    path = tmp_path / f"kernel.{fmt}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.save(str(path))
    if fmt == "fits":
        with fits.open(path) as hdul:
            assert hdul[0].header["DATAMODL"] == "MatchingKernelModel"
            assert hdul["SCI"].data.shape == (4, 9, 9)
            assert hdul["TERMS"].data.shape == (6, 9, 9)
            assert len(hdul["QUALITY"].data) == 5

    with sm.open(path) as back:
        assert type(back) is MatchingKernelModel
        for name in (*ARRAYS, "target_psf"):
            np.testing.assert_array_equal(getattr(back, name), getattr(model, name), name)
            assert getattr(back, name).dtype.newbyteorder("=") == np.float64, name
        quality = back.quality
        assert [n.lower() for n in quality.dtype.names] == list(QUALITY_DTYPE.names)
        for name in QUALITY_DTYPE.names:
            column = np.asarray(quality[name])
            np.testing.assert_array_equal(column, _quality()[name], name)
            assert column.dtype.newbyteorder("=") == QUALITY_DTYPE[name], name
        assert back.meta.psfmatch.instance == model.meta.psfmatch.instance
        assert back.meta.stmatch.instance == model.meta.stmatch.instance
        assert back.summary() == model.summary()
        assert back.domain == DOMAIN and back.n_terms == 6
        np.testing.assert_array_equal(back.kernel_at(12.5, 33.0), model.kernel_at(12.5, 33.0))
        back.check()
        back.validate()


@pytest.mark.parametrize("fmt", FORMATS)
def test_fourier_round_trip_keeps_empty_basis(tmp_path, fmt):
    model = _model(
        basis=None, coefficients=None, method="fourier", condition_number=np.nan, window=None
    )
    path = tmp_path / f"fourier.{fmt}"
    model.save(str(path))
    with sm.open(path) as back:
        assert back.basis.shape == (0, 9, 9) and back.coefficients.shape == (0, 6)
        assert np.isnan(back.meta.psfmatch.condition_number)
        assert back.meta.psfmatch.method == "fourier"
        back.check()


def test_open_passes_models_and_asdf_files_through(tmp_path):
    model = _model()
    same = sm.open(model)
    assert type(same) is MatchingKernelModel and same.term_kernels is model.term_kernels
    model.save(str(tmp_path / "k.asdf"))
    with asdf.open(tmp_path / "k.asdf") as af, sm.open(af) as back:
        assert type(back) is MatchingKernelModel


def test_schema_rejects_wrong_arrays_and_meta():
    model = MatchingKernelModel(strict_validation=True)
    with pytest.raises(ValueError, match="Expected 3, got 2"):
        model.term_kernels = np.ones((5, 5))
    with pytest.raises(ValueError, match="Expected 2, got 3"):
        model.coefficients = np.ones((1, 2, 3))
    with pytest.raises(ValueError, match="Expected 2, got 1"):
        model.target_psf = np.ones(5)
    with pytest.raises(ValueError, match="could not convert"):
        model.data = np.full((1, 3, 3), "a")
    bad = [
        ("kernel_size", "big", "is not of type 'integer'"),
        ("kernel_size", 0, "less than the minimum"),
        ("spatial_order", 1.5, "is not of type 'integer'"),
        ("normalized", 1, "is not of type 'boolean'"),
        ("deconvolution", "no", "is not of type 'boolean'"),
        ("method", 2, "is not of type 'string'"),
        ("kernel_sum", "1", "is not of type 'number'"),
        ("max_w_minus", "small", "is not of type 'number'"),
        ("domain", [0.0, 1.0, 2.0], "is too short"),
        ("domain", [0.0, 1.0, "a", 3.0], "is not of type 'number'"),
        ("image_shape", [10.5, 20], "is not of type 'integer'"),
        ("basis_degrees", [4, -1], "less than the minimum"),
        ("window", 3, "is not valid under any of the given schemas"),
    ]
    for key, value, match in bad:
        with pytest.raises(ValidationError, match=match):
            setattr(model.meta.psfmatch, key, value)
    model.meta.psfmatch.window = None  # allowed: no window
    model.meta.psfmatch.condition_number = None
    model.meta.psfmatch.domain = [0.0, 10.0, 0.0, 20.0]
    model.validate()

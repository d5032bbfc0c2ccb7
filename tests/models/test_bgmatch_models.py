"""BackgroundModel: construction, evaluation against the fit, I/O, checks and its frozen schema."""

import hashlib
from importlib import resources
from pathlib import Path

import asdf
import numpy as np
import pytest
from asdf.exceptions import ValidationError

import stmatch.models as sm
from stmatch.algorithms.bgmatch_fit import match_background
from stmatch.algorithms.bgmatch_grid import bin_edges
from stmatch.models import MODEL_CLASSES, BackgroundModel, StmatchDataModel

SCHEMA_NAME = "background_model-1.0.0.yaml"
SCHEMA_DIR = Path(str(resources.files("stmatch") / "schemas"))
JWST_CORE = "http://stsci.edu/schemas/jwst_datamodel/core.schema"
STMATCH_META = "asdf://stmatch.org/stmatch/schemas/stmatch_meta-1.0.0"
SHAPE = (150, 190)
BIN = 19
ARRAYS = ("coefficients", "covariance", "bin_x", "bin_y", "bin_values", "bin_errors",
          "bin_npix", "bin_model")  # fmt: skip


def _difference(seed=1):
    """A smooth surface plus noise, with masked corners and an empty band of rows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(np.float64)
    truth = 1.0 + 0.01 * x - 0.006 * y + 4e-5 * (x - 90.0) ** 2 + np.sin(x / 35.0)
    diff = truth + rng.normal(0.0, 0.5, SHAPE)
    ey, ex = bin_edges(SHAPE[0], bin_size=BIN), bin_edges(SHAPE[1], bin_size=BIN)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[: ey[1], ex[2] :] = True  # bin row 0 keeps two bins: LINEAR
    mask[ey[4] : ey[5], : ex[-2]] = True  # bin row 4 keeps one bin: CONSTANT
    mask[:, 178:] = True
    diff[ey[6] : ey[7], :] = np.nan  # bin row 6 has no valid bin
    return diff, mask


def _fits():
    diff, mask = _difference()
    out = {}
    for name, kw in {
        "poly3": dict(use_polynomial=True, order=3),
        "poly2_unweighted": dict(use_polynomial=True, order=2, approx_weighting=False),
        "akima": dict(use_polynomial=False, interp_style="AKIMA_SPLINE"),
        "natural": dict(use_polynomial=False, interp_style="NATURAL_SPLINE"),
        "linear": dict(use_polynomial=False, interp_style="LINEAR"),
        "constant": dict(use_polynomial=False, interp_style="CONSTANT"),
        "none": dict(use_polynomial=False, interp_style="NONE"),
    }.items():
        out[name] = match_background(diff, mask=mask, bin_size=BIN, **kw)
    return out


FITS = _fits()


def _sha256(path):
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


# --- registration and schema --------------------------------------------------------------


def test_registry_and_schema_url():
    assert MODEL_CLASSES["BackgroundModel"] is BackgroundModel
    assert issubclass(BackgroundModel, StmatchDataModel)
    assert BackgroundModel.schema_url == "asdf://stmatch.org/stmatch/schemas/background_model-1.0.0"
    assert BackgroundModel().meta.model_type == "BackgroundModel"


def test_schema_refs_and_arrays():
    raw = asdf.schema.load_schema(BackgroundModel.schema_url)
    assert raw["allOf"][0] == {"$ref": JWST_CORE}
    assert raw["allOf"][1]["properties"]["meta"]["properties"]["stmatch"] == {"$ref": STMATCH_META}
    schema = BackgroundModel()._schema["properties"]
    hdus = [schema[name]["fits_hdu"] for name in ARRAYS]
    assert len(set(hdus)) == len(hdus)
    assert schema["bin_npix"]["datatype"] == "int64"
    kinds = schema["meta"]["properties"]["bgmatch"]["properties"]["kind"]["enum"]
    assert kinds == list(sm.BACKGROUND_KINDS)


def test_schema_is_released_with_its_checksum():
    lines = (SCHEMA_DIR / "CHECKSUMS.txt").read_text().splitlines()
    digests = dict(reversed(line.split()) for line in lines if line.endswith(SCHEMA_NAME))
    assert digests == {SCHEMA_NAME: _sha256(SCHEMA_DIR / SCHEMA_NAME)}


# --- evaluation ---------------------------------------------------------------------------


def test_the_test_fits_cover_reduced_styles():
    akima = FITS["akima"]
    assert akima.kind == "spline"
    assert akima.row_styles[6] == ""  # a row without valid bins
    assert (akima.row_styles[0], akima.row_styles[4]) == ("LINEAR", "CONSTANT")  # reduced
    assert FITS["poly2_unweighted"].weighted is False and FITS["poly3"].weighted is True


@pytest.mark.parametrize("name", sorted(FITS))
def test_model_reevaluates_to_the_fit(name):
    fit = FITS[name]
    model = BackgroundModel.from_fit(fit, bgmatch={"exposure": "a_cal.fits"})
    assert model.kind == fit.kind and model.order == fit.order
    rng = np.random.default_rng(2)
    # inside the grid and far outside it (extrapolation)
    x = rng.uniform(-100.0, SHAPE[1] + 100.0, 3000)
    y = rng.uniform(-100.0, SHAPE[0] + 100.0, 3000)
    np.testing.assert_allclose(model.evaluate(x, y), fit.evaluate(x, y), rtol=0, atol=1e-11)
    np.testing.assert_allclose(
        model.evaluate_image(), fit.evaluate_image(SHAPE), rtol=0, atol=1e-11
    )
    np.testing.assert_allclose(
        model.evaluate_image((20, 30), dtype=np.float32),
        fit.evaluate_image((20, 30)),
        rtol=1e-6,
        atol=1e-5,
    )
    assert model.evaluate(3.0, 4.0).shape == ()
    np.testing.assert_array_equal(model.bin_model, fit.model_at_bins)
    assert model.meta.bgmatch.n_valid_bins == fit.grid.n_valid


def test_polynomial_against_an_explicit_chebyshev_sum():
    domain = (-0.5, 99.5, -0.5, 49.5)
    coeffs = [1.0, 0.5, -0.25, 0.1, 0.2, -0.3]  # (0,0) (1,0) (0,1) (2,0) (1,1) (0,2)
    model = BackgroundModel.from_arrays("polynomial", domain=domain, image_shape=(50, 100),
                                        order=2, coefficients=coeffs,
                                        covariance=np.eye(6))  # fmt: skip
    x, y = np.array([0.0, 37.0, 99.0]), np.array([0.0, 12.5, 49.0])
    u, v = (2 * x - 99.0) / 100.0, (2 * y - 49.0) / 50.0
    expected = (1.0 + 0.5 * u - 0.25 * v + 0.1 * (2 * u * u - 1) + 0.2 * u * v
                - 0.3 * (2 * v * v - 1))  # fmt: skip
    np.testing.assert_allclose(model.evaluate(x, y), expected, rtol=1e-14)
    image = model.evaluate_image()
    np.testing.assert_allclose(image[[0, 12], [0, 37]], model.evaluate([0, 37], [0, 12]))


def test_empty_model_is_zero():
    model = BackgroundModel.empty((10, 20), bgmatch={"status": "SKIPPED", "reason": "why"})
    assert model.kind == "none"
    assert not np.any(model.evaluate_image())
    assert model.evaluate_image().shape == (10, 20)
    assert model.bin_values.shape == (0, 0) and model.coefficients.shape == (0,)
    assert model.meta.bgmatch.reason == "why"


# --- I/O ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["asdf", "fits"])
@pytest.mark.parametrize("name", ["poly3", "akima", "none"])
def test_round_trip(tmp_path, fmt, name):
    fit = FITS[name]
    model = BackgroundModel.from_fit(
        fit,
        bgmatch={
            "exposure": "a_cal.fits",
            "reference": "r_cal.fits",
            "status": "COMPLETE",
            "flagged": False,
            "matched_mse": 1.25,
            "diffim_var": np.float64(1.2),
            "mse_ratio": np.nan,  # stored as null
            "mean_model": np.float32(0.5),
        },
    )
    model.meta.stmatch = {"version": "0.1", "steps": {"stmatch_bgmatch": {"x": 1}}}
    path = tmp_path / f"bg.{fmt}"
    model.save(str(path))
    with sm.open(path) as back:
        assert type(back) is BackgroundModel
        for array in ARRAYS:
            np.testing.assert_array_equal(getattr(back, array), getattr(model, array), array)
        assert back.meta.bgmatch.instance == model.meta.bgmatch.instance
        assert back.meta.bgmatch.mse_ratio is None
        assert back.meta.bgmatch.mean_model == 0.5
        assert back.row_styles == fit.row_styles
        back.check()
        back.validate()
        x, y = np.array([-20.0, 10.0, 100.0]), np.array([5.0, 140.0, 70.0])
        np.testing.assert_array_equal(back.evaluate(x, y), model.evaluate(x, y))


def test_open_passes_models_through(tmp_path):
    model = BackgroundModel.from_fit(FITS["linear"])
    same = sm.open(model)
    assert type(same) is BackgroundModel
    model.save(str(tmp_path / "b.asdf"))
    with asdf.open(tmp_path / "b.asdf") as af, sm.open(af) as back:
        assert type(back) is BackgroundModel


# --- checks -------------------------------------------------------------------------------


def _spline_arrays():
    fit = FITS["akima"]
    g = fit.grid
    return dict(
        domain=fit.domain, image_shape=SHAPE, interp_style=fit.interp_style,
        row_styles=fit.row_styles, column_style=fit.column_style, bin_x=g.x, bin_y=g.y,
        bin_values=g.values, bin_errors=g.error, bin_npix=g.npix, bin_model=fit.model_at_bins,
    )  # fmt: skip


def test_from_arrays_rejects_inconsistent_input():
    kw = _spline_arrays()
    BackgroundModel.from_arrays("spline", **kw)  # consistent
    with pytest.raises(ValueError, match="kind must be one of"):
        BackgroundModel.from_arrays("plane", **kw)
    with pytest.raises(ValueError, match="row_styles has"):
        BackgroundModel.from_arrays("spline", **{**kw, "row_styles": kw["row_styles"][:-1]})
    styles = ["AKIMA_SPLINE" if s else s for s in kw["row_styles"]]
    with pytest.raises(ValueError, match="AKIMA_SPLINE needs 5"):
        BackgroundModel.from_arrays("spline", **{**kw, "row_styles": styles})
    with pytest.raises(ValueError, match="bin_values has shape"):
        BackgroundModel.from_arrays("spline", **{**kw, "bin_values": kw["bin_values"][1:]})
    with pytest.raises(ValueError, match="bin_errors is required"):
        BackgroundModel.from_arrays("spline", **{**kw, "bin_errors": None})
    with pytest.raises(ValueError, match="empty"):
        BackgroundModel.from_arrays("spline", **{**kw, "domain": (0, 0, 0, 1)})
    with pytest.raises(TypeError, match="unknown meta.bgmatch entries"):
        BackgroundModel.from_arrays("spline", **kw, bgmatch={"colour": "red"})
    with pytest.raises(ValueError, match="must be True or False"):
        BackgroundModel.from_arrays("spline", **kw, bgmatch={"flagged": "yes"})
    poly = dict(domain=(-0.5, 9.5, -0.5, 9.5), image_shape=(10, 10), order=1)
    with pytest.raises(ValueError, match="coefficients has shape"):
        BackgroundModel.from_arrays("polynomial", **poly, coefficients=[1.0, 2.0],
                                    covariance=np.eye(3))  # fmt: skip
    with pytest.raises(ValueError, match="non-finite"):
        BackgroundModel.from_arrays("polynomial", **poly, coefficients=[1.0, np.nan, 0.0],
                                    covariance=np.eye(3))  # fmt: skip


def test_check_catches_hand_edited_models():
    model = BackgroundModel.from_fit(FITS["poly3"])
    model.coefficients = np.ones(3)
    with pytest.raises(ValueError, match="needs 10 coefficients"):
        model.check()
    model = BackgroundModel.from_fit(FITS["natural"])
    model.meta.bgmatch.column_style = "AKIMA_SPLINE"
    model.bin_values = np.where(np.arange(model.bin_y.size)[:, None] < 4, np.nan,
                                model.bin_values)  # fmt: skip
    with pytest.raises(ValueError):
        model.check()


def test_schema_rejects_wrong_meta():
    model = BackgroundModel.from_fit(FITS["poly3"])
    model._validate_on_assignment = True
    for key, value, match in [
        ("kind", "plane", "is not one of"),
        ("status", "DONE", "is not one of"),
        ("order", -2, "less than the minimum"),
        ("domain", [0.0, 1.0], "is too short"),
        ("flagged", 1, "is not of type 'boolean'"),
    ]:
        with pytest.raises(ValidationError, match=match):
            model._strict_validation = True
            setattr(model.meta.bgmatch, key, value)

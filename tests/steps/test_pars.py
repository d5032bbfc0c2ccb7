"""Per-instrument parameter files: selection and precedence, never CRDS."""

from pathlib import Path

import asdf
import pytest
from stdatamodels.jwst import datamodels

from stmatch.steps import SkyMatchStep
from stmatch.steps._pars import PARS_DIR, find_parameter_files, input_metadata


def _write_pars(path, **parameters):
    asdf.AsdfFile(
        {
            "class": "stmatch.steps.SkyMatchStep",
            "name": "stmatch_skymatch",
            "parameters": parameters,
        }
    ).write_to(path)


def _model(instrument, filt=None):
    from stmatch.datasets import make_image

    kwargs = {"filter": filt} if filt else {}
    return make_image((32, 32), instrument=instrument, n_stars=0, **kwargs)


@pytest.fixture(autouse=True)
def _no_user_dir(monkeypatch):
    monkeypatch.delenv("STMATCH_PARS_DIR", raising=False)
    monkeypatch.delenv("STMATCH_DISABLE_PARS", raising=False)


@pytest.mark.parametrize("path", sorted(PARS_DIR.glob("*.asdf")), ids=lambda p: p.name)
def test_packaged_files_are_valid_for_their_step(path):
    from stpipe import config_parser

    import stmatch.pipelines
    import stmatch.steps

    cfg = config_parser.load_config_file(str(path))
    alias = path.name.split("-")[0]
    step_class = {
        "stmatch_skymatch": stmatch.steps.SkyMatchStep,
        "stmatch_zogy": stmatch.steps.ZogyStep,
        "stmatch_psfmatch": stmatch.steps.PsfModelMatchStep,
        "stmatch_bgmatch": stmatch.steps.BackgroundMatchStep,
        "stmatch_diffim": stmatch.pipelines.DiffImagePipeline,
    }[alias]
    package = step_class.__module__.rsplit(".", 1)[0]  # stmatch.steps or stmatch.pipelines
    assert cfg["class"] == f"{package}.{step_class.__name__}"
    assert cfg["name"] == alias == step_class.class_alias
    params = {k: v for k, v in cfg.items() if k not in ("class", "name")}
    step = step_class(**params)  # unknown keys or bad values raise
    for key, value in params.items():
        if key == "steps":  # a pipeline file: values for its sub-steps
            for name, sub in value.items():
                for k, v in sub.items():
                    if k not in ("class", "name"):
                        assert getattr(getattr(step, name), k) == v, (name, k)
            continue
        assert getattr(step, key) == value


@pytest.mark.parametrize(
    "alias", ["stmatch_skymatch", "stmatch_zogy", "stmatch_psfmatch", "stmatch_bgmatch"]
)
def test_packaged_files_exist_for_three_instruments(alias):
    names = {p.name for p in PARS_DIR.glob(f"{alias}-*.asdf")}
    assert {f"{alias}-nircam.asdf", f"{alias}-niriss.asdf", f"{alias}-miri.asdf"} <= names


@pytest.mark.parametrize(
    "instrument,expected", [("NIRCAM", 1024), ("NIRISS", 1024), ("MIRI", None)]
)
def test_zogy_selection_by_instrument(instrument, expected):
    from stmatch.steps import ZogyStep

    cfg = ZogyStep.get_config_from_reference(_model(instrument))
    assert cfg.get("tile_size") == expected
    assert cfg["psf_size"] == (41 if instrument == "MIRI" else 31)


@pytest.mark.parametrize("instrument,expected", [("NIRCAM", 31), ("NIRISS", 25), ("MIRI", 41)])
def test_psfmatch_selection_by_instrument(instrument, expected):
    from stmatch.steps import PsfModelMatchStep

    cfg = PsfModelMatchStep.get_config_from_reference(_model(instrument))
    assert cfg["kernel_size"] == expected
    assert cfg["cell_size"] == 256


@pytest.mark.parametrize(
    "instrument,polynomial,bin_size",
    [("NIRCAM", True, 256), ("NIRISS", True, 256), ("MIRI", False, 64)],
)
def test_bgmatch_selection_by_instrument(instrument, polynomial, bin_size):
    from stmatch.steps import BackgroundMatchStep

    cfg = BackgroundMatchStep.get_config_from_reference(_model(instrument))
    assert cfg["use_polynomial"] is polynomial
    assert cfg["bin_size"] == bin_size
    if polynomial:
        assert cfg["order"] <= 3  # smooth zodiacal light: a low order
    else:
        assert cfg["interp_style"] == "AKIMA_SPLINE"  # structured thermal background


@pytest.mark.parametrize(
    "instrument,expected", [("NIRCAM", "midpt"), ("NIRISS", "midpt"), ("MIRI", "median")]
)
def test_selection_by_instrument(instrument, expected):
    cfg = SkyMatchStep.get_config_from_reference(_model(instrument))
    assert cfg["skystat"] == expected


def test_unknown_instrument_gets_defaults():
    model = _model("NIRCAM")
    model.meta.instrument.name = "NIRSPEC"
    assert dict(SkyMatchStep.get_config_from_reference(model)) == {}


def test_metadata_from_file_and_association(mosaic_3x3):
    asn, _ = mosaic_3x3
    meta = input_metadata(SkyMatchStep, str(asn))
    assert meta["instrument"] == "nircam"
    cal = sorted(Path(asn).parent.glob("*_cal.fits"))[0]
    assert input_metadata(SkyMatchStep, str(cal))["instrument"] == "nircam"
    assert input_metadata(SkyMatchStep, [])["instrument"] == ""


def test_precedence_chain(tmp_path, monkeypatch):
    model = _model("NIRCAM", "F200W")
    # packaged only
    cfg, _ = SkyMatchStep.build_config(model)
    assert cfg["skystat"] == "midpt" and cfg["usigma"] == 3.0
    # user directory overrides packaged, key by key; a filter file overrides the instrument
    user = tmp_path / "pars"
    user.mkdir()
    _write_pars(user / "stmatch_skymatch-nircam.asdf", skystat="mean", nclip=2)
    _write_pars(user / "stmatch_skymatch-nircam-f200w.asdf", nclip=7)
    monkeypatch.setenv("STMATCH_PARS_DIR", str(user))
    files = find_parameter_files("stmatch_skymatch", input_metadata(SkyMatchStep, model))
    assert [(f.parent == user, f.name) for f in files] == [
        (False, "stmatch_skymatch-nircam.asdf"),
        (True, "stmatch_skymatch-nircam.asdf"),
        (True, "stmatch_skymatch-nircam-f200w.asdf"),
    ]
    cfg, _ = SkyMatchStep.build_config(model)
    assert (cfg["skystat"], cfg["usigma"], cfg["nclip"]) == ("mean", 3.0, 7)
    # user config file overrides the pars directory
    config_file = tmp_path / "mine.asdf"
    _write_pars(config_file, skystat="median")
    cfg, _ = SkyMatchStep.build_config(model, config_file=str(config_file))
    assert cfg["skystat"] == "median" and cfg["nclip"] == 7
    # keyword arguments (the command line) override everything
    cfg, _ = SkyMatchStep.build_config(model, config_file=str(config_file), skystat="mode")
    assert cfg["skystat"] == "mode"
    # and files can be switched off
    monkeypatch.setenv("STMATCH_DISABLE_PARS", "true")
    cfg, _ = SkyMatchStep.build_config(model)
    assert "skystat" not in cfg


def test_bad_user_file_is_a_clear_error(tmp_path, monkeypatch):
    user = tmp_path / "pars"
    user.mkdir()
    (user / "stmatch_skymatch-nircam.asdf").write_text("this is not asdf: [")
    monkeypatch.setenv("STMATCH_PARS_DIR", str(user))
    with pytest.raises(ValueError, match="stmatch_skymatch-nircam.asdf"):
        SkyMatchStep.get_config_from_reference(_model("NIRCAM"))


def test_datamodel_instrument_names_match_files():
    # file names are lower case instrument names as written in meta.instrument.name
    for path in PARS_DIR.glob("*.asdf"):
        instrument = path.stem.split("-")[1]
        assert instrument.upper() in ("NIRCAM", "NIRISS", "MIRI", "NIRSPEC", "FGS")
    assert datamodels.ImageModel  # the models these files are chosen for

"""stmatch_image3: jwst's calwebb_image3 with our SkyMatchStep, run offline."""

import logging

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats
from jwst.pipeline import Image3Pipeline as JwstImage3Pipeline
from stdatamodels.jwst import datamodels
from tests.test_offline import run_strun_offline

from stmatch.datasets._image3 import make_image3_mosaic, write_image3_association
from stmatch.pipelines import Image3Pipeline
from stmatch.pipelines import image3 as image3_module
from stmatch.steps import SkyMatchStep

# tweakreg's defaults are made for 2048-pixel detectors (see make_image3_mosaic)
TWEAKREG = {
    "separation": 0.3,
    "tolerance": 0.2,
    "use2dhist": False,
    "expand_refcat": True,
    "minobj": 10,
}


@pytest.fixture(scope="module")
def image3_data(tmp_path_factory):
    """A 2 x 2 mosaic of 128² images (no diffuse light) and its files."""
    mosaic = make_image3_mosaic(2, 2, sky_range=(1.0, 8.0), n_diffuse=0, seed=31)
    files = write_image3_association(mosaic, tmp_path_factory.mktemp("image3"), product_name="img3")
    return files, mosaic


def _crf(directory):
    paths = sorted(directory.glob("*_crf.fits"))
    assert len(paths) == 4, paths
    return paths


def _levels_of(library):
    out = {}
    with library:
        for i, model in enumerate(library):
            out[model.meta.filename.replace("_cal.fits", "")] = model.meta.background.level
            library.shelve(model, i, modify=False)
    return out


def test_composition():
    """jwst's steps in jwst's order, ours as ``skymatch``; our base's methods win."""
    assert Image3Pipeline.class_alias == "stmatch_image3"
    assert list(Image3Pipeline.step_defs) == list(JwstImage3Pipeline.step_defs)
    for name, cls in Image3Pipeline.step_defs.items():
        expected = SkyMatchStep if name == "skymatch" else JwstImage3Pipeline.step_defs[name]
        assert cls is expected
    # jwst's logic (our process only wraps it), our base's hooks
    assert Image3Pipeline._load_input_as_library is JwstImage3Pipeline._load_input_as_library
    assert Image3Pipeline.finalize_result.__module__ == "stmatch.pipelines._base"
    assert "stmatch" in Image3Pipeline.get_stpipe_loggers()
    pipe = Image3Pipeline()
    assert isinstance(pipe.skymatch, SkyMatchStep)
    assert pipe.skymatch.name == "skymatch"
    pars = pipe.get_pars()
    assert pars["reference_lookup"] == "auto"
    assert pars["in_memory"] is True  # jwst's pipeline parameter survives the merge
    assert {"save_qa", "skymethod", "min_overlap_pixels"} <= set(pars["steps"]["skymatch"])
    assert pipe.missing_references() == [("source_catalog", ["apcorr", "abvegaoffset"])]


@pytest.mark.slow
def test_same_levels_as_skymatch_alone_and_resampled_product(image3_data, tmp_path):
    files, mosaic = image3_data
    out = tmp_path / "out"
    Image3Pipeline.call(
        str(files["asn"]),
        output_dir=str(out),
        save_results=True,
        steps={
            "tweakreg": {"skip": True},
            "source_catalog": {
                "override_apcorr": str(files["apcorr"]),
                "override_abvegaoffset": str(files["abvegaoffset"]),
            },
        },
    )
    alone = _levels_of(SkyMatchStep.call(str(files["asn"])))
    for path in _crf(out):
        with datamodels.open(path) as model:
            key = path.name.split("_a3001")[0]
            # the same numbers: same step, same packaged NIRCam parameters
            assert model.meta.background.level == pytest.approx(alone[key], abs=1e-12)
            assert model.meta.background.subtracted is False
            assert model.meta.cal_step.stmatch_skymatch == "COMPLETE"
            assert model.meta.cal_step.skymatch is None  # jwst's step did not run
            assert model.meta.cal_step.outlier_detection == "COMPLETE"
            info = model.meta.stmatch.instance["steps"]["stmatch_skymatch"]
            assert info["status"] == "COMPLETE" and info["level_err"] is not None
    # the solution table is written with the pipeline's results
    assert (out / "img3_skymatch_solution.asdf").exists()
    # resample subtracted the matched levels: the mosaic sits at the lowest sky
    with datamodels.open(out / "img3_i2d.fits") as i2d:
        assert i2d.meta.cal_step.resample == "COMPLETE"
        assert i2d.meta.cal_step.stmatch_skymatch == "COMPLETE"
        good = i2d.data[(i2d.wht > 0) & np.isfinite(i2d.data)]
        _, sky, _ = sigma_clipped_stats(good, sigma=2.5)
        assert abs(sky - mosaic.sky.min()) < 0.1, (sky, mosaic.sky)
        # without matching the levels would stay spread over several units
        assert np.ptp(mosaic.sky) > 2.0
    # source_catalog ran on the synthetic reference files, with no server
    assert (out / "img3_cat.ecsv").exists()


@pytest.mark.slow
def test_strun_offline_full_pipeline(image3_data, tmp_path):
    """tweakreg, skymatch, outlier_detection and resample; source_catalog skipped."""
    files, _ = image3_data
    out = tmp_path / "out"
    tweak = [f"--steps.tweakreg.{k}={v}" for k, v in TWEAKREG.items()]
    log = run_strun_offline(
        ["stmatch_image3", files["asn"], f"--output_dir={out}", *tweak], tmp_path
    )
    assert (out / "img3_i2d.fits").exists()
    assert not (out / "img3_cat.ecsv").exists()
    assert "Step source_catalog SKIPPED" in log
    assert "--steps.source_catalog.override_apcorr=FILE" in log
    assert "stmatch.steps.skymatch" in log  # our logger shows under strun
    assert "stmatch_skymatch-nircam.asdf" in log  # packaged parameters of the sub-step
    corrected = 0
    for path in _crf(out):
        with datamodels.open(path) as model:
            assert model.meta.cal_step.tweakreg == "COMPLETE"
            assert model.meta.cal_step.stmatch_skymatch == "COMPLETE"
            corrected += "v2v3corr" in model.meta.wcs.available_frames
    assert corrected == 3  # every exposure but tweakreg's reference was aligned


@pytest.mark.slow
def test_moving_target_runs_assign_mtwcs(tmp_path):
    mosaic = make_image3_mosaic(2, 1, shape=(96, 96), moving_target=True, n_diffuse=0, seed=32)
    files = write_image3_association(mosaic, tmp_path / "in", product_name="mt", references=False)
    out = tmp_path / "out"
    Image3Pipeline.call(
        str(files["asn"]),
        output_dir=str(out),
        save_results=True,
        steps={"outlier_detection": {"skip": True}},
    )
    with datamodels.open(out / "mt_i2d.fits") as i2d:
        assert i2d.meta.cal_step.assign_mtwcs == "COMPLETE"
        assert i2d.meta.cal_step.stmatch_skymatch == "COMPLETE"
        assert i2d.meta.cal_step.tweakreg is None


# ------------------------------------------------------------------ synthetic data
def test_dataset_same_pixels_and_sky_positions(tmp_path):
    from stmatch.datasets import make_mosaic

    kw = dict(shape=(64, 80), overlap=0.3, rotation=30.0, distortion=0.005, n_stars=40, seed=33)
    plain = make_mosaic(2, 1, **kw)
    jwst_like = make_image3_mosaic(2, 1, v2_ref=120.0, v3_ref=-500.0, **kw)
    y, x = np.mgrid[0:64:7.9, 0:80:9.7]
    for a, b in zip(plain, jwst_like, strict=True):
        assert np.array_equal(a.data, b.data, equal_nan=True)
        assert b.meta.wcs.available_frames == ["detector", "v2v3", "world"]
        ra_a, dec_a = a.meta.wcs(x, y)
        ra_b, dec_b = b.meta.wcs(x, y)
        # third order in the field angle: far below a micro-arcsecond here
        assert np.max(np.abs(ra_a - ra_b)) * 3600 < 1e-6
        assert np.max(np.abs(dec_a - dec_b)) * 3600 < 1e-6
        xb, yb = b.meta.wcs.invert(ra_b, dec_b)
        assert np.allclose(xb, x, atol=1e-6) and np.allclose(yb, y, atol=1e-6)
        # wcsinfo matches the transform: the reference pixel lands on (ra_ref, dec_ref)
        info = b.meta.wcsinfo
        assert (info.v2_ref, info.v3_ref) == (120.0, -500.0)
        v2, v3 = b.meta.wcs.get_transform("detector", "v2v3")(39.5, 31.5)
        assert (v2, v3) == pytest.approx((120.0, -500.0), abs=1e-9)
        ra0, dec0 = b.meta.wcs(39.5, 31.5)
        assert (ra0, dec0) == pytest.approx((info.ra_ref, info.dec_ref), abs=1e-12)
    files = write_image3_association(jwst_like, tmp_path)
    with datamodels.open(files["apcorr"]) as apcorr:
        table = apcorr.apcorr_table
        # circular Gaussian: half the light within the half width at half maximum
        fwhm_px = jwst_like.scene.psf_fwhm / 0.06
        half = table["radius"][np.isclose(table["eefraction"], 0.5)]
        assert half == pytest.approx(fwhm_px / 2, rel=1e-5)
        assert np.allclose(table["apcorr"] * table["eefraction"], 1.0)


# --------------------------------------------------------- reference_lookup (no runs)
@pytest.fixture
def no_cache(monkeypatch, tmp_path):
    """An environment with no reference cache and no configuration URI."""
    for name in ("CRDS_PATH", "CRDS_CFGPATH", "CRDS_CONFIG_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CRDS_CFGPATH", str(tmp_path / "cfg"))


def test_status_without_server_or_cache(no_cache, monkeypatch):
    monkeypatch.delenv("CRDS_SERVER_URL", raising=False)
    usable, why = image3_module.reference_service_status()
    assert not usable
    assert "no reference-file server or local cache" in why


def test_status_unreachable_server(no_cache, monkeypatch):
    monkeypatch.setenv("CRDS_SERVER_URL", "https://crds.invalid")
    usable, why = image3_module.reference_service_status(timeout=2.0)
    assert not usable
    assert "https://crds.invalid" in why and "cannot be reached" in why


def test_status_with_cache(no_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("CRDS_SERVER_URL", "https://crds.invalid")
    config = tmp_path / "cfg" / "jwst" / "server_config"
    config.parent.mkdir(parents=True)
    config.write_text("{}")
    usable, why = image3_module.reference_service_status()
    assert usable and str(config.parent) in why


def test_status_remote_configuration(no_cache, monkeypatch):
    monkeypatch.delenv("CRDS_SERVER_URL", raising=False)
    monkeypatch.setenv("CRDS_CONFIG_URI", "s3://bucket/config")
    usable, why = image3_module.reference_service_status()
    assert usable and "s3://bucket/config" in why
    monkeypatch.setenv("CRDS_CONFIG_URI", "None")  # how CRDS stores an unset value
    assert not image3_module.reference_service_status()[0]


def test_status_reachable_server(no_cache, monkeypatch):
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        monkeypatch.setenv("CRDS_SERVER_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        usable, why = image3_module.reference_service_status(timeout=2.0)
    assert usable and "127.0.0.1" in why


@pytest.mark.parametrize(
    ("mode", "usable", "overrides", "skipped"),
    [
        ("auto", False, False, True),
        ("auto", True, False, False),
        ("auto", False, True, False),
        ("never", True, False, True),
        ("never", True, True, False),
        ("always", False, False, False),
    ],
)
def test_reference_lookup(mode, usable, overrides, skipped, monkeypatch, caplog):
    calls = []

    def status(**kwargs):
        calls.append(kwargs)
        return usable, "stub reason"

    monkeypatch.setattr(image3_module, "reference_service_status", status)
    steps = {}
    if overrides:
        steps["source_catalog"] = {"override_apcorr": "a.fits", "override_abvegaoffset": "b.asdf"}
    pipe = Image3Pipeline(reference_lookup=mode, steps=steps)
    with caplog.at_level(logging.WARNING, logger="stmatch"):
        result = pipe.check_reference_access()
    assert pipe.source_catalog.skip is skipped
    assert result == (["source_catalog"] if skipped else [])
    assert ("SKIPPED" in caplog.text) is skipped
    if skipped:
        assert "APCORR, ABVEGAOFFSET" in caplog.text
        assert "--steps.source_catalog.override_abvegaoffset=FILE" in caplog.text
        assert ("stub reason" in caplog.text) is (mode == "auto")
    # the service is probed only when it matters
    assert bool(calls) is (mode == "auto" and not overrides)


def test_skipped_step_needs_nothing(monkeypatch):
    monkeypatch.setattr(
        image3_module, "reference_service_status", lambda **kw: pytest.fail("probed")
    )
    pipe = Image3Pipeline(steps={"source_catalog": {"skip": True}})
    assert pipe.missing_references() == []
    assert pipe.check_reference_access() == []

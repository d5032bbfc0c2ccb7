"""BackgroundMatchStep end to end on exposures with known smooth background offsets."""

import logging

import numpy as np
import pytest
from astropy.table import Table
from jwst.datamodels import ModelLibrary
from stdatamodels.jwst import datamodels
from stdatamodels.jwst.datamodels.dqflags import pixel as DQ

from stmatch.algorithms.chebyshev import chebyshev_basis
from stmatch.algorithms.resample import resample_image
from stmatch.datasets import make_bgmatch_exposures, write_bgmatch_exposures
from stmatch.models import BackgroundModel
from stmatch.models import open as open_model
from stmatch.steps import BackgroundMatchStep
from stmatch.steps._wcs import wcs_callables

from ._util import digest

SHAPE = (160, 160)
BIN = 32  # 5 x 5 bins: enough for an Akima spline along both axes


def _rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


def _run(models, **kwargs):
    """Run the step on copies of ``models``; return the step and copies of the outputs."""
    kwargs.setdefault("bin_size", BIN)
    step = BackgroundMatchStep(**kwargs)
    library = step.run(ModelLibrary([m.copy() for m in models]))
    out = []
    with library:
        for i, model in enumerate(library):
            out.append(model.copy())
            library.shelve(model, i, modify=False)
    return step, out


def _info(model):
    return model.meta.stmatch.steps.stmatch_bgmatch.instance


@pytest.fixture(scope="module")
def same_grid():
    """Three exposures on one pixel grid: quadratic offsets, shared diffuse light and stars."""
    return make_bgmatch_exposures(3, shape=SHAPE, order=2, n_stars=10, seed=5)


@pytest.fixture(scope="module")
def shifted():
    """Three exposures on shifted and rotated pixel grids."""
    return make_bgmatch_exposures(
        3,
        shape=SHAPE,
        order=2,
        n_stars=10,
        shifts=[(0, 0), (9.3, -6.2), (-7.7, 4.4)],
        rotations=[0.0, 3.0, -4.0],
        seed=6,
    )


@pytest.mark.parametrize(
    "kwargs,tol",
    [
        ({"use_polynomial": True, "order": 2}, 0.08),
        ({"use_polynomial": False, "interp_style": "AKIMA_SPLINE"}, 0.1),
        ({"use_polynomial": False, "interp_style": "NATURAL_SPLINE"}, 0.1),
    ],
    ids=["polynomial", "akima", "natural"],
)
def test_known_offsets_recovered_and_diffuse_light_kept(same_grid, kwargs, tol):
    step, out = _run(same_grid.models, reference=0, **kwargs)
    for k in (1, 2):
        expected = same_grid.expected_model(k, 0)  # B_0 - B_k: no diffuse light in it
        applied = out[k].data - same_grid.models[k].data
        assert _rms(expected) > 1.0  # a real offset: the test can fail
        assert _rms(applied - expected) < tol  # noise level: bin errors are ~0.044
        assert out[k].meta.cal_step.stmatch_bgmatch == "COMPLETE"
        # the shared diffuse light (peak 5) is still there: matched - reference is noise
        diff = out[k].data - out[0].data
        assert abs(float(np.mean(diff))) < 0.05
        assert np.std(diff) == pytest.approx(np.sqrt(2.0), rel=0.05)
    ptp = float(np.ptp(same_grid.models[0].data - same_grid.background(0, *_xy(SHAPE))))
    assert ptp > 3.0  # there is diffuse light to lose
    assert np.array_equal(out[0].data, same_grid.models[0].data)
    assert out[0].meta.cal_step.stmatch_bgmatch == "COMPLETE"
    assert _info(out[0])["is_reference"] is True
    assert step.summary["mse_ratio"][1:].max() < 1.1


def _xy(shape):
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    return x, y


def test_plane_offsets_recovered_with_a_plane(tmp_path):
    coefficients = [[2.0, 1.5, -1.0, 0, 0, 0], [5.0, -1.0, 2.0, 0, 0, 0], [1.0, 0.5, 0.5, 0, 0, 0]]
    planes = make_bgmatch_exposures(3, shape=SHAPE, coefficients=coefficients, seed=8)
    _, out = _run(planes.models, reference=1, use_polynomial=True, order=1)
    for k in (0, 2):
        expected = planes.expected_model(k, 1)
        assert _rms(expected) > 1.0
        assert _rms(out[k].data - planes.models[k].data - expected) < 0.05


def test_reference_choice_automatic_by_name_and_by_index(caplog):
    ex = make_bgmatch_exposures(3, shape=(96, 96), order=1, levels=[2.0, 2.0, 2.0], seed=9,
                                noise=[2.0, 1.0, 1.0], n_stars=0)  # fmt: skip
    models = [m.copy() for m in ex.models]
    # exposure 2 is as quiet as 1 but covers only half of its pixels
    models[2].data[:, :48] = np.nan
    models[2].dq[:, :48] |= DQ["DO_NOT_USE"]
    # scores: 0: .4 + .2 + .4 * .5 = .8; 1: .1 + .2 + .2 = .5; 2: .1 + .2 + .4 = .7
    with caplog.at_level(logging.INFO, logger="stmatch"):
        step, out = _run(models, use_polynomial=True, order=1)
    assert step.summary["is_reference"].tolist() == [False, True, False]
    assert "lowest score" in caplog.text
    # without the coverage term the quiet exposures tie on variance; the noisy one still loses
    step, _ = _run(models, use_polynomial=True, order=1, best_ref_weight_coverage=0.0,
                   best_ref_weight_variance=1.0)  # fmt: skip
    assert step.summary["is_reference"][0] == False  # noqa: E712 - numpy bool
    names = [m.meta.filename for m in models]
    for given, index in ((names[2], 2), (names[0].replace(".fits", ""), 0), ("2", 2), (0, 0)):
        step, out = _run(models, reference=given, use_polynomial=True, order=1)
        assert step.summary["is_reference"].tolist() == [i == index for i in range(3)]
        assert _info(out[index])["is_reference"] is True
    with pytest.raises(ValueError, match="not one of the exposures"):
        _run(models, reference="nope_cal.fits")
    with pytest.raises(ValueError, match="out of range"):
        _run(models, reference=3)


def test_unreadable_candidate_is_skipped_with_a_warning(caplog):
    ex = make_bgmatch_exposures(3, shape=(96, 96), order=1, n_stars=0, seed=10)
    models = [m.copy() for m in ex.models]
    models[0].data[...] = np.nan
    with caplog.at_level(logging.WARNING, logger="stmatch"):
        step, out = _run(models, use_polynomial=True, order=1)
    assert "cannot be a reference candidate" in caplog.text
    assert not step.summary["is_reference"][0]
    assert out[0].meta.cal_step.stmatch_bgmatch == "SKIPPED"
    assert "no usable pixel" in _info(out[0])["reason"]


def test_other_grids_match_as_well_as_pre_resampled_exposures(shifted):
    ny, nx = SHAPE
    x, y = _xy(SHAPE)
    _, direct = _run(shifted.models, reference=0, use_polynomial=True, order=2)
    # the same exposures resampled onto the reference grid beforehand
    fwd0, _ = wcs_callables(shifted.models[0])
    pre = [shifted.models[0].copy()]
    for k in (1, 2):
        _, inv = wcs_callables(shifted.models[k])
        res = resample_image(shifted.models[k].data, SHAPE, fwd0, inv,
                             var=shifted.models[k].var_rnoise)  # fmt: skip
        model = shifted.models[0].copy()
        model.data = res.data.astype(np.float32)
        model.var_rnoise = res.var.astype(np.float32)
        model.err = np.sqrt(model.var_rnoise)
        model.dq = np.where(res.coverage, 0, DQ["DO_NOT_USE"]).astype(np.uint32)
        model.meta.filename = f"pre_{k}_cal.fits"
        pre.append(model)
    _, matched_pre = _run(pre, reference=0, use_polynomial=True, order=2)
    for k in (1, 2):
        assert _info(direct[k])["resampled"] is True
        assert _info(matched_pre[k])["resampled"] is False
        # residual on the exposure's own pixels that lie on the reference grid
        xr, yr = shifted.to_exposure(k, 0, x, y)
        inside = (xr >= -0.5) & (xr <= nx - 0.5) & (yr >= -0.5) & (yr <= ny - 0.5)
        resid = direct[k].data - shifted.models[k].data - shifted.expected_model(k, 0)
        rms_direct = _rms(resid[inside])
        # residual of the pre-resampled exposure on the reference grid
        xk, yk = shifted.to_exposure(0, k, x, y)
        expected = shifted.background(0, x, y) - shifted.background(k, xk, yk)
        resid_pre = matched_pre[k].data - pre[k].data - expected
        rms_pre = _rms(resid_pre[np.isfinite(resid_pre)])
        assert _rms(shifted.expected_model(k, 0)) > 1.0
        assert rms_direct < 0.12 and rms_pre < 0.12
        assert rms_direct < 1.25 * rms_pre + 0.01


def test_quality_gates_flag_or_skip_while_the_others_go_on(same_grid):
    models = [m.copy() for m in same_grid.models]
    # stripes (+-3) in exposure 2 that no smooth model follows: matched_mse >> diffim_var
    models[2].data[::2] += np.float32(3.0)
    models[2].data[1::2] -= np.float32(3.0)
    _, flagged = _run(models, reference=0, use_polynomial=True, order=2)
    assert [m.meta.cal_step.stmatch_bgmatch for m in flagged] == ["COMPLETE"] * 3
    assert _info(flagged[1])["flagged"] is False and _info(flagged[1])["reason"] == ""
    info = _info(flagged[2])
    assert info["flagged"] is True and "max_mse_ratio" in info["reason"]
    assert info["mse_ratio"] > 2.0
    assert not np.array_equal(flagged[2].data, models[2].data)  # flagged, still applied

    step, skipped = _run(models, reference=0, use_polynomial=True, order=2, on_failure="skip")
    assert [m.meta.cal_step.stmatch_bgmatch for m in skipped] == ["COMPLETE", "COMPLETE", "SKIPPED"]
    assert np.array_equal(skipped[2].data, models[2].data)  # left unchanged
    assert "left unchanged" in _info(skipped[2])["reason"]
    assert step.summary["status"].tolist() == ["COMPLETE", "COMPLETE", "SKIPPED"]
    assert step.background_models[2].kind == "polynomial"  # the fit is kept for inspection

    # the fit-rms gate (off by default); the spline interpolates its bins: fit_rms 0
    _, rms_gate = _run(models[:2], reference=0, use_polynomial=True, order=1, max_fit_rms=1e-3)
    assert "max_fit_rms" in _info(rms_gate[1])["reason"]
    _, off = _run(models, reference=0, use_polynomial=True, order=2, max_mse_ratio=None)
    assert not _info(off[2])["flagged"]


def test_single_exposure_is_skipped(same_grid):
    step = BackgroundMatchStep()
    library = step.run([same_grid.models[0].copy()])
    with library:
        model = library.borrow(0)
        assert model.meta.cal_step.stmatch_bgmatch == "SKIPPED"
        assert "nothing to match" in _info(model)["reason"]
        library.shelve(model, 0, modify=False)


def test_bad_inputs_are_skipped_with_reasons(same_grid, shifted):
    models = [m.copy() for m in same_grid.models]
    models[1].dq[...] |= DQ["SATURATED"]  # every pixel masked
    far = shifted.models[2].copy()
    far.meta.wcs = make_bgmatch_exposures(1, shape=SHAPE, ra=151.0, seed=1).wcs[0]
    far.meta.filename = "far_cal.fits"
    _, out = _run([*models, far], reference=0, use_polynomial=True, order=2)
    status = [m.meta.cal_step.stmatch_bgmatch for m in out]
    assert status == ["COMPLETE", "SKIPPED", "COMPLETE", "SKIPPED"]
    assert "no usable pixel" in _info(out[1])["reason"]
    assert "does not overlap the reference" in _info(out[3])["reason"]
    assert np.array_equal(out[1].data, models[1].data)

    # too few bins for an Akima spline with THROW_EXCEPTION; a bin larger than the image
    two = same_grid.models[:2]
    _, out = _run(two, reference=0, use_polynomial=False, undersample_style="THROW_EXCEPTION",
                  interp_style="AKIMA_SPLINE", bin_size=40)  # fmt: skip
    assert out[1].meta.cal_step.stmatch_bgmatch == "SKIPPED"
    assert "needs at least 5" in _info(out[1])["reason"]
    _, out = _run(two, reference=0, bin_size=400)
    assert "larger than the image" in _info(out[1])["reason"]
    # the default REDUCE_INTERP_ORDER copes with the same bins
    _, out = _run(two, reference=0, use_polynomial=False, bin_size=40)
    assert out[1].meta.cal_step.stmatch_bgmatch == "COMPLETE"
    with pytest.raises(ValueError, match="unknown DQ plane"):
        _run(two, bad_mask_planes=["NOT_A_PLANE"])
    # no WCS and another shape; a cube
    small = make_bgmatch_exposures(1, shape=(100, 120), seed=2).models[0]
    small.meta.wcs = None
    cube = datamodels.CubeModel((2, 20, 20))
    cube.meta.filename = "cube_cal.fits"
    _, out = _run([*two, small, cube], reference=0, use_polynomial=True, order=2)
    assert [m.meta.cal_step.stmatch_bgmatch for m in out[2:]] == ["SKIPPED", "SKIPPED"]
    assert "WCS" in _info(out[2])["reason"] and "2-D" in _info(out[3])["reason"]


def test_nothing_readable_skips_everything(same_grid):
    models = [m.copy() for m in same_grid.models[:2]]
    for m in models:
        m.dq[...] = DQ["DO_NOT_USE"]
    _, out = _run(models)
    assert [m.meta.cal_step.stmatch_bgmatch for m in out] == ["SKIPPED", "SKIPPED"]
    assert "no exposure can serve as the reference" in _info(out[0])["reason"]


@pytest.mark.parametrize("subtracted", [False, True])
def test_meta_background_composes_with_sky_levels(same_grid, subtracted):
    models = [m.copy() for m in same_grid.models]
    levels = [3.0, 5.0, 7.0]
    for m, level in zip(models, levels, strict=True):
        m.meta.background.level = level
        m.meta.background.subtracted = subtracted
        m.meta.background.method = "match"
    models[2].meta.background.level = None  # nothing recorded: nothing changed
    models[2].meta.background.subtracted = None
    step, out = _run(models, reference=0, use_polynomial=True, order=2)
    mean_model = float(np.mean(out[1].data - models[1].data, dtype=np.float64))
    assert _info(out[1])["mean_model"] == pytest.approx(mean_model, abs=1e-4)
    sign = -1.0 if subtracted else 1.0
    assert out[1].meta.background.level == pytest.approx(5.0 + sign * mean_model, abs=1e-4)
    assert out[1].meta.background.subtracted is subtracted
    assert out[1].meta.background.method == "match"
    assert _info(out[1])["level_before"] == 5.0
    assert out[0].meta.background.level == 3.0  # the reference is unchanged
    assert out[2].meta.background.level is None
    assert out[2].meta.cal_step.stmatch_bgmatch == "COMPLETE"


def test_variance_grows_by_the_model_uncertainty(same_grid):
    step, out = _run(same_grid.models, reference=0, use_polynomial=True, order=2)
    product = step.background_models[1]
    added = out[1].var_flat - same_grid.models[1].var_flat
    # exact on the nodes (every BIN / 4 = 8 px and the last pixel), interpolated between
    x = np.array([0.0, 40.0, 80.0, 159.0, 37.0])
    y = np.array([0.0, 104.0, 80.0, 159.0, 101.0])
    b = chebyshev_basis(x, y, product.order, product.domain)
    expected = np.einsum("tp,tu,up->p", b, np.asarray(product.covariance), b)
    assert np.all(expected > 0)
    got = added[y.astype(int), x.astype(int)]
    assert got[:4] == pytest.approx(expected[:4], rel=1e-5)
    assert got[4] == pytest.approx(expected[4], rel=0.03)
    total = out[1].var_rnoise + out[1].var_poisson + out[1].var_flat
    assert np.allclose(out[1].err ** 2, total, rtol=1e-5)
    assert _info(out[1])["model_variance_in"] == "var_flat"
    _, plain = _run(same_grid.models, reference=0, use_polynomial=True, add_model_variance=False)
    assert np.array_equal(plain[1].var_flat, same_grid.models[1].var_flat)


@pytest.mark.parametrize("in_memory", [True, False])
def test_outputs_written_and_inputs_untouched(shifted, tmp_path, in_memory, caplog):
    src = tmp_path / "in"
    asn = write_bgmatch_exposures(shifted, src, product_name="bgm")
    before = digest(src)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="stmatch"):
        result = BackgroundMatchStep.call(
            str(asn),
            bin_size=BIN,
            reference="bgm_6_0",
            save_results=True,
            output_dir=str(out),
            save_qa=in_memory,  # the figures once
            in_memory=in_memory,
        )
    assert digest(src) == before
    names = sorted(p.name for p in out.iterdir())
    assert [n for n in names if n.endswith("_bgmatch.fits")] == [
        f"bgm_6_{k}_bgmatch.fits" for k in range(3)
    ]
    assert [n for n in names if n.endswith("_bgmatch_model.asdf")] == [
        f"bgm_6_{k}_bgmatch_model.asdf" for k in range(3)
    ]
    assert "bgm_bgmatch_summary.ecsv" in names
    qa = ["bgm_6_1_bgmatch_qa.png", "bgm_6_2_bgmatch_qa.png"] if in_memory else []
    assert [n for n in names if n.endswith("_qa.png")] == qa
    assert not [n for n in names if n.startswith(".")]
    table = Table.read(out / "bgm_bgmatch_summary.ecsv")
    assert table["exposure"].tolist() == [f"bgm_6_{k}_cal.fits" for k in range(3)]
    assert table["status"].tolist() == ["COMPLETE"] * 3
    assert table.meta["reference"] == "bgm_6_0_cal.fits"
    # the packaged NIRCam parameter file applied (polynomial order 2), the call's bin_size won
    assert "stmatch_bgmatch-nircam.asdf" in caplog.text
    assert table["kind"].tolist() == ["none", "polynomial", "polynomial"]
    product = open_model(out / "bgm_6_1_bgmatch_model.asdf")
    assert isinstance(product, BackgroundModel)
    assert product.meta.bgmatch.bin_size == BIN
    saved = datamodels.open(out / "bgm_6_1_bgmatch.fits")
    assert saved.meta.cal_step.stmatch_bgmatch == "COMPLETE"
    assert saved.meta.stmatch.steps.stmatch_bgmatch.reference == "bgm_6_0_cal.fits"
    original = datamodels.open(src / "bgm_6_1_cal.fits")
    assert not np.array_equal(saved.data, original.data)
    with result:
        model = result.borrow(1)
        assert np.array_equal(model.data, saved.data)
        result.shelve(model, 1, modify=False)
    lines = [r.getMessage() for r in caplog.records if "mean model offset" in r.getMessage()]
    assert len(lines) == 2 and all("(resampled), COMPLETE" in line for line in lines)


def test_product_reproduces_the_applied_model(same_grid):
    step, out = _run(same_grid.models, reference=0, use_polynomial=False)
    product = step.background_models[2]
    assert product.kind == "spline"
    applied = out[2].data - same_grid.models[2].data
    assert np.allclose(product.evaluate_image(), applied, atol=2e-5)
    assert product.meta.bgmatch.mean_model == pytest.approx(float(np.mean(applied)), abs=1e-5)


def test_detect_sources_masks_what_only_one_exposure_has(same_grid):
    models = [m.copy() for m in same_grid.models]
    y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    blob = 40.0 * np.exp(-((x - 70.0) ** 2 + (y - 90.0) ** 2) / (2 * 2.5**2))
    models[1].data += blob.astype(np.float32)  # e.g. a transient, absent from the reference
    expected = same_grid.expected_model(1, 0)
    results = {}
    for detect in (False, True):
        _, out = _run(models, reference=0, use_polynomial=False, grid_statistic="MEAN",
                      detect_sources=detect)  # fmt: skip
        resid = out[1].data - models[1].data - expected
        results[detect] = (_rms(resid), _info(out[1]))
    assert results[False][0] > 0.1  # the blob biases its bin's mean, the spline follows
    assert results[True][0] < 0.08
    assert results[True][1]["n_source_pixels"] > 50
    assert results[True][1]["mse_ratio"] < results[False][1]["mse_ratio"]


def test_reference_none_string_and_noise_free_candidates():
    """``reference='None'`` (as strun passes it) means automatic; a noise-free
    exposure is still a readable reference candidate."""
    from stmatch.datasets import make_bgmatch_exposures
    from stmatch.steps import BackgroundMatchStep

    ex = make_bgmatch_exposures(3, shape=(96, 96), order=1, noise=0.0, n_diffuse=0, seed=5)
    step = BackgroundMatchStep(reference="None", bin_size=24)
    step.run(list(ex.models))
    statuses = [str(r["status"]) for r in step.summary]
    assert statuses.count("COMPLETE") == 3, step.summary
    assert int(np.sum(step.summary["is_reference"])) == 1

"""SkyMatchStep end to end on synthetic mosaics."""

import logging
from pathlib import Path

import numpy as np
import pytest
from jwst.datamodels import ModelLibrary
from stdatamodels.jwst import datamodels

from stmatch.steps import SkyMatchStep

from ._util import digest, levels, relative


def test_call_on_association_recovers_levels(mosaic_3x3, tmp_path):
    asn, mosaic = mosaic_3x3
    before = digest(asn.parent)
    result = SkyMatchStep.call(
        str(asn), skystat="median", output_dir=str(tmp_path), save_results=True, save_qa=True
    )
    rows = levels(result)
    assert [r[1] for r in rows] == ["COMPLETE"] * 9
    err = relative([r[0] for r in rows], mosaic.sky)
    stated = np.array([r[2]["level_err"] for r in rows])
    assert np.abs(err).max() < 0.05
    assert np.all(stated >= 0) and np.all(np.isfinite(stated))
    info = rows[0][2]
    assert {"level", "level_err", "component", "n_pairs", "group"} <= set(info)
    with result:
        model = result.borrow(0)
        assert model.meta.background.method == "match"
        assert model.meta.background.subtracted is False
        assert model.meta.stmatch.version
        result.shelve(model, 0, modify=False)
    # inputs untouched, outputs and products written, no temporary leftovers
    assert digest(asn.parent) == before
    outputs = sorted(p.name for p in tmp_path.iterdir())
    assert sum(name.endswith("_skymatch.fits") for name in outputs) == 9
    for product in (
        "m3_skymatch_solution.asdf",
        "m3_skymatch_images.ecsv",
        "m3_skymatch_pairs.ecsv",
        "m3_skymatch_qa.png",
    ):
        assert product in outputs
    assert not [n for n in outputs if n.startswith(".stmatch-")]
    saved = datamodels.open(tmp_path / [n for n in outputs if n.endswith("_skymatch.fits")][0])
    assert saved.meta.background.level is not None
    assert saved.meta.stmatch.steps.stmatch_skymatch.n_pairs >= 3


def test_solution_model_contents(mosaic_3x3):
    from stmatch.models import SkyMatchSolutionModel

    asn, mosaic = mosaic_3x3
    step = SkyMatchStep(skystat="mean")
    step.run(str(asn))
    sol = step.solution
    assert isinstance(sol, SkyMatchSolutionModel)
    images, pairs = sol.to_tables()
    assert len(images) == 9 and len(pairs) == 20
    assert sol.meta.skymatch.n_components == 1
    assert pairs["used"].all()
    # residuals are consistent with the stated errors
    pulls = pairs["residual"] / pairs["diff_err"]
    assert np.sqrt(np.mean(pulls**2)) < 3


def test_list_of_models_is_not_modified(mosaic_3x3):
    asn, mosaic = mosaic_3x3
    models = [datamodels.open(p) for p in sorted(asn.parent.glob("*_cal.fits"))]
    data0 = [m.data.copy() for m in models]
    result = SkyMatchStep.call(models, subtract=True, skystat="median")
    for m, d in zip(models, data0, strict=True):
        assert np.array_equal(m.data, d, equal_nan=True)
        assert m.meta.background.level is None
    rows = levels(result)
    assert all(r[1] == "COMPLETE" for r in rows)


def test_list_of_files_and_in_memory_false_agree(mosaic_3x3):
    asn, _ = mosaic_3x3
    files = [str(p) for p in sorted(asn.parent.glob("*_cal.fits"))]
    a = [r[0] for r in levels(SkyMatchStep.call(files, skystat="mean"))]
    b = [
        r[0]
        for r in levels(SkyMatchStep.call(files, skystat="mean", in_memory=False, cache_size=3))
    ]
    assert np.allclose(a, b)


def test_subtract_and_rerun_rules(mosaic_3x3):
    asn, mosaic = mosaic_3x3
    files = sorted(asn.parent.glob("*_cal.fits"))
    models = [datamodels.open(p) for p in files]
    orig = [np.nanmean(m.data) for m in models]
    step = SkyMatchStep(skystat="median", subtract=True)
    out = step.run(ModelLibrary([m.copy() for m in models]))
    rows = levels(out)
    with out:
        subtracted = []
        for i, m in enumerate(out):
            subtracted.append(m.copy())
            assert np.nanmean(m.data) == pytest.approx(orig[i] - rows[i][0], abs=1e-3)
            out.shelve(m, i, modify=False)
    # a re-run with subtract=False disagrees with the recorded state: clear error
    with pytest.raises(ValueError, match="subtract"):
        SkyMatchStep(subtract=False).run(ModelLibrary([m.copy() for m in subtracted]))
    # a re-run with subtract=True accumulates: total level ≈ the first level
    again = levels(
        SkyMatchStep(skystat="median", subtract=True).run(
            ModelLibrary([m.copy() for m in subtracted])
        )
    )
    assert np.allclose([r[0] for r in again], [r[0] for r in rows], atol=0.05)


def test_groups_share_levels(mosaic_groups):
    asn, mosaic = mosaic_groups
    rows = levels(SkyMatchStep.call(str(asn), skystat="mean"))
    lv = np.array([r[0] for r in rows])
    groups = np.array(mosaic.group_ids)
    for g in set(mosaic.group_ids):
        assert np.ptp(lv[groups == g]) == 0.0
    assert np.abs(relative(lv, mosaic.sky)).max() < 0.05


def test_components_reported_and_anchored(mosaic_split, caplog):
    asn, mosaic = mosaic_split
    with caplog.at_level(logging.WARNING, logger="stmatch"):
        step = SkyMatchStep(skystat="mean")
        rows = levels(step.run(str(asn)))
    comps = np.array([r[2]["component"] for r in rows])
    assert set(comps.tolist()) == {0, 1}
    # components found by us agree with how the data were built
    for c in (0, 1):
        assert len(set(mosaic.components[comps == c].tolist())) == 1
    lv = np.array([r[0] for r in rows])
    err = np.array([r[2]["level_err"] for r in rows])
    for c in (0, 1):
        sub = comps == c
        assert lv[sub].min() == 0.0
        # relative to the component's anchor, within 5 stated errors
        anchor = np.flatnonzero(sub)[np.argmin(lv[sub])]
        d = lv[sub] - mosaic.sky[sub] + mosaic.sky[anchor]
        assert np.all(np.abs(d) <= 5 * err[sub] + 1e-9)
    assert step.solution.meta.skymatch.n_components == 2
    assert "disconnected components" in caplog.text


def test_single_image_is_skipped(mosaic_3x3):
    asn, _ = mosaic_3x3
    one = sorted(asn.parent.glob("*_cal.fits"))[:1]
    rows = levels(SkyMatchStep.call([str(one[0])]))
    assert rows[0][1] == "SKIPPED"
    # local works on one image
    rows = levels(SkyMatchStep.call([str(one[0])], skymethod="local", skystat="median"))
    assert rows[0][1] == "COMPLETE" and rows[0][0] > 0


def _models(asn):
    return [datamodels.open(p) for p in sorted(asn.parent.glob("*_cal.fits"))]


def test_missing_wcs_nan_image_and_missing_dq(mosaic_3x3):
    asn, mosaic = mosaic_3x3
    models = _models(asn)
    models[0].meta.wcs = None
    models[4].data[...] = np.nan
    models[8].dq = None
    rows = levels(SkyMatchStep.call(models, skystat="mean"))
    status = [r[1] for r in rows]
    assert status[0] == "SKIPPED" and "WCS" in rows[0][2]["reason"]
    assert status[4] == "SKIPPED"
    assert status[8] == "COMPLETE"
    ok = [i for i in range(9) if status[i] == "COMPLETE"]
    assert len(ok) == 7


def test_no_overlaps_at_all(tmp_path):
    from stmatch.datasets import make_mosaic

    mosaic = make_mosaic(2, 2, shape=(64, 64), overlap=-0.5, seed=3)
    rows = levels(SkyMatchStep.call(mosaic.models))
    assert [r[1] for r in rows] == ["SKIPPED"] * 4
    assert all("no overlap" in r[2]["reason"] for r in rows)


def test_bad_inputs_give_clear_errors(tmp_path, mosaic_3x3):
    with pytest.raises(FileNotFoundError):
        SkyMatchStep.call(str(tmp_path / "missing_asn.json"))
    cube = datamodels.CubeModel((2, 10, 10))
    with pytest.raises(ValueError, match="2-D"):
        SkyMatchStep.call([cube])


def test_user_skylist(mosaic_3x3, tmp_path):
    asn, _ = mosaic_3x3
    files = sorted(asn.parent.glob("*_cal.fits"))
    skylist = tmp_path / "sky.txt"
    skylist.write_text(
        "# name value\n" + "".join(f"{p.name} {k * 0.5}\n" for k, p in enumerate(files))
    )
    rows = levels(
        SkyMatchStep.call([str(p) for p in files], skymethod="user", skylist=str(skylist))
    )
    assert [r[0] for r in rows] == [k * 0.5 for k in range(9)]
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{files[0].name} 1.0\n{files[1].name} not-a-number\n")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        SkyMatchStep.call([str(p) for p in files], skymethod="user", skylist=str(bad))
    short = tmp_path / "short.txt"
    short.write_text(f"{files[0].name} 1.0\n")
    with pytest.raises(ValueError, match="no value for"):
        SkyMatchStep.call([str(p) for p in files], skymethod="user", skylist=str(short))
    with pytest.raises(ValueError, match="skylist"):
        SkyMatchStep.call([str(p) for p in files], skymethod="user")


def test_refuses_to_overwrite_input(mosaic_3x3, tmp_path):
    import shutil

    asn, _ = mosaic_3x3
    src = sorted(asn.parent.glob("*_cal.fits"))[:2]
    for p in src:
        shutil.copy(p, tmp_path / p.name)
    target = tmp_path / src[0].name
    before = target.read_bytes()
    # suffix 'cal' in the input directory would give the inputs' own names
    step = SkyMatchStep(output_dir=str(tmp_path), suffix="cal", save_results=True, skystat="mean")
    with pytest.raises(ValueError, match="overwrite input"):
        step.run([str(tmp_path / p.name) for p in src])
    assert target.read_bytes() == before
    assert Path(target).exists()


def test_progress_is_logged_on_long_runs(caplog):
    from stmatch.datasets import make_mosaic

    mosaic = make_mosaic(8, 8, shape=(32, 32), overlap=0.25, n_stars=0, n_diffuse=0, seed=5)
    with caplog.at_level(logging.INFO, logger="stmatch"):
        SkyMatchStep.call(mosaic.models, skystat="mean")
    progress = [r.message for r in caplog.records if "overlap statistics:" in r.message]
    assert len(progress) >= 5
    assert progress[-1].endswith(progress[-1].split("/")[-1])  # "... N / N candidate pairs"
    assert "Measured" in caplog.text

"""SkyMatchStep with its overlap statistics on Dask: identical to the in-process run."""

import logging
import pickle

import numpy as np
import pytest
from jwst.datamodels import ModelLibrary
from stdatamodels.jwst import datamodels

from stmatch.steps import SkyMatchStep
from stmatch.steps._sky_sources import (
    ArraySource,
    FileSource,
    WcsInverse,
    file_members,
    fits_layout,
    good_pixels,
)

from ._util import digest, levels

pytest.importorskip("distributed")

DQBITS = 6  # flags 2 and 4 count as good; any other flag marks a pixel bad


def _run(init, **kw):
    """Run a fresh step; its solution tables and the levels written into the models."""
    step = SkyMatchStep(skystat="mode", **kw)
    out = step.run(init)
    return step.solution, levels(out)


def _assert_identical(got, ref):
    (sol, rows), (sol_ref, rows_ref) = got, ref
    for column in ("level", "level_err", "local_sky", "n_pairs", "component"):
        np.testing.assert_array_equal(sol.images[column], sol_ref.images[column], err_msg=column)
    assert sol.pairs.tobytes() == sol_ref.pairs.tobytes()  # every field, NaNs included
    assert len(sol.pairs) == 20
    np.testing.assert_array_equal([r[0] for r in rows], [r[0] for r in rows_ref])
    np.testing.assert_array_equal(
        [r[2]["level_err"] for r in rows], [r[2]["level_err"] for r in rows_ref]
    )
    assert [r[1] for r in rows] == [r[1] for r in rows_ref] == ["COMPLETE"] * len(rows)


@pytest.fixture(scope="module")
def reference(mosaic_3x3):
    """The in-process run (scheduler=None) on the 3 x 3 mosaic."""
    asn, _ = mosaic_3x3
    return _run(str(asn))


def _models(asn):
    return [datamodels.open(p) for p in sorted(asn.parent.glob("*_cal.fits"))]


@pytest.mark.parametrize("in_memory", [True, False])
def test_cluster_matches_in_process(mosaic_3x3, reference, dask_cluster, in_memory, caplog):
    asn, _ = mosaic_3x3
    with caplog.at_level(logging.INFO, logger="stmatch"):
        got = _run(str(asn), scheduler=dask_cluster, in_memory=in_memory)
    _assert_identical(got, reference)
    # 20 pairs on 2 task slots: ceil(20 / 8) = 3 pairs per task
    assert "overlap statistics of 20 candidate pairs in 7 task(s) on dask tcp://" in caplog.text


def test_list_of_models_on_cluster(mosaic_3x3, dask_cluster, caplog):
    """Models that exist only in memory travel as arrays; local skies run as tasks too."""
    asn, _ = mosaic_3x3
    models = _models(asn)
    before = [m.data.copy() for m in models]
    ref = _run(_models(asn), skymethod="global+match")
    with caplog.at_level(logging.INFO, logger="stmatch"):
        got = _run(models, skymethod="global+match", scheduler=dask_cluster, pairs_per_task=4)
    np.testing.assert_array_equal(got[0].images["local_sky"], ref[0].images["local_sky"])
    assert np.isfinite(got[0].images["local_sky"]).all()
    _assert_identical(got, ref)
    assert "20 candidate pairs in 5 task(s)" in caplog.text
    assert "Local skies of 9 group(s)" in caplog.text
    for m, d in zip(models, before, strict=True):  # inputs untouched
        assert np.array_equal(m.data, d, equal_nan=True)
        assert m.meta.background.level is None


def test_threads_match_in_process(mosaic_3x3, reference):
    asn, _ = mosaic_3x3
    files = [str(p) for p in sorted(asn.parent.glob("*_cal.fits"))]
    _assert_identical(_run(files, scheduler="threads"), reference)


def test_killed_worker_gives_identical_results_and_outputs(mosaic_3x3, reference, tmp_path):
    from tests._dask import kill_one_worker_during, local_cluster

    asn, _ = mosaic_3x3
    before = digest(asn.parent)
    marker = tmp_path / "killed"
    out = tmp_path / "out"
    out.mkdir()
    with local_cluster(2) as cluster:
        kill_one_worker_during(cluster, marker, "stmatch-skypairs")
        got = _run(
            str(asn),
            scheduler=cluster.scheduler_address,
            save_results=True,
            output_dir=str(out),
            pairs_per_task=2,
        )
    assert marker.read_text().startswith("stmatch-skypairs-")  # a task was interrupted
    _assert_identical(got, reference)
    stems = [p.name.removesuffix("_cal.fits") for p in sorted(asn.parent.glob("*_cal.fits"))]
    expected = {f"{s}_skymatch.fits" for s in stems} | {
        "m3_skymatch_solution.asdf",
        "m3_skymatch_images.ecsv",
        "m3_skymatch_pairs.ecsv",
    }
    written = sorted(p.name for p in out.iterdir())
    assert sorted(expected) == written  # each once, nothing else (no temporaries)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed", "out"]
    assert digest(asn.parent) == before


@pytest.mark.parametrize("bad", ["everywhere", "processes:0", "thread"])
def test_bad_scheduler_is_a_clear_error(mosaic_3x3, bad):
    asn, _ = mosaic_3x3
    with pytest.raises(ValueError, match="scheduler"):
        SkyMatchStep(scheduler=bad).run(str(asn))


# ------------------------------------------------------------------ the sources
def test_file_source_reads_what_the_library_gives(mosaic_3x3):
    asn, _ = mosaic_3x3
    path = sorted(asn.parent.glob("*_cal.fits"))[4]
    model = datamodels.open(path)
    data, good = model.data, good_pixels(model, DQBITS)
    assert 0 < (~good).sum() < good.size  # the mosaic has flagged pixels
    layout = fits_layout(model, path)
    assert layout[:2] == ("SCI", "DQ")
    for source in (
        FileSource(str(path), DQBITS, layout),  # the HDUs directly
        FileSource(str(path), DQBITS),  # the data model
        FileSource(str(path), DQBITS, ("SCI", "DQ", layout[2], layout[3], (5, 5))),  # fallback
        pickle.loads(pickle.dumps(FileSource(str(path), DQBITS, layout))),
    ):
        d, g = source()
        assert d.dtype == data.dtype
        np.testing.assert_array_equal(d, data)
        np.testing.assert_array_equal(g, good)
    a = pickle.loads(pickle.dumps(ArraySource(data, good)))
    np.testing.assert_array_equal(a()[0], data)


def test_file_members(mosaic_3x3, tmp_path):
    asn, _ = mosaic_3x3
    files = sorted(str(p.resolve()) for p in asn.parent.glob("*_cal.fits"))
    library = ModelLibrary(str(asn))
    assert sorted(file_members(library).values()) == files
    with library:  # a member held in memory may differ from its file
        library.shelve(library.borrow(2), 2)
    assert 2 not in file_members(library) and len(file_members(library)) == 8
    disk = ModelLibrary(str(asn), on_disk=True, temp_directory=tmp_path)
    with disk:  # on disk: a shelved model lives in its temporary file
        disk.shelve(disk.borrow(3), 3)
    members = file_members(disk)
    assert len(members) == 9 and members[3].startswith(str(tmp_path.resolve()))
    assert file_members(ModelLibrary(_models(asn))) == {}
    # the step reads members with a file from it, the others from memory
    fresh = ModelLibrary(str(asn))
    files = file_members(fresh)
    with fresh:
        fresh.shelve(fresh.borrow(5), 5)
        files.pop(5)
        inputs, _ = SkyMatchStep()._sky_inputs(fresh, DQBITS, files, picklable=True)
        local, _ = SkyMatchStep()._sky_inputs(fresh, DQBITS, files)
    kinds = [type(inp.load).__name__ for inp in inputs]
    assert kinds == ["FileSource"] * 5 + ["ArraySource"] + ["FileSource"] * 3
    # in-process: the member without a file is borrowed from the library when needed
    kinds = [type(inp.load).__name__ for inp in local]
    assert kinds[4:7] == ["FileSource", "function", "FileSource"]
    assert all(inp.load.layout[:2] == ("SCI", "DQ") for k, inp in enumerate(inputs) if k != 5)


def test_wcs_inverse_pickles_and_agrees(mosaic_3x3):
    from stmatch.steps._wcs import wcs_callables

    asn, _ = mosaic_3x3
    model = datamodels.open(sorted(asn.parent.glob("*_cal.fits"))[0])
    fwd, inv = wcs_callables(model)
    ra, dec = fwd(np.array([0.0, 50.5, 127.0]), np.array([3.0, 60.0, 127.0]))
    ours = pickle.loads(pickle.dumps(WcsInverse(model.meta.wcs)))
    for a, b in zip(ours(ra, dec), inv(ra, dec), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ours(ra, dec)[0], [0.0, 50.5, 127.0], atol=1e-6)

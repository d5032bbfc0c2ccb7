"""ZogyStep with its tiles on Dask: identical to the in-process run, also after a worker dies."""

import logging

import numpy as np
import pytest

from stmatch.datasets import make_zogy_pair, write_zogy_pair
from stmatch.steps import ZogyStep

pytest.importorskip("distributed")

SHAPE = (160, 160)
TILE = 56  # 3 x 3 tiles
PSFS = dict(science_psf_fwhm=3.0, template_psf_fwhm=2.2)
ARRAYS = ("data", "err", "var", "score", "scorr", "alpha", "alpha_err", "dq", "psf")


@pytest.fixture(autouse=True)
def _no_pars(monkeypatch):
    monkeypatch.setenv("STMATCH_DISABLE_PARS", "true")


@pytest.fixture(scope="module")
def pair():
    return make_zogy_pair(SHAPE, n_stars=25, n_transients=4, nan_patches=1, seed=8)


@pytest.fixture(scope="module")
def in_process(pair):
    step = ZogyStep(tile_size=TILE, **PSFS)
    return step.run(pair.science, pair.template), step.catalog


def _assert_identical(a, b):
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.meta.zogy.n_tiles == b.meta.zogy.n_tiles


def test_tiles_on_dask_equal_in_process(pair, in_process, dask_cluster, caplog):
    ref, ref_cat = in_process
    assert ref.meta.zogy.n_tiles == 9
    with caplog.at_level(logging.INFO, logger="stmatch"):
        step = ZogyStep(tile_size=TILE, scheduler=dask_cluster, **PSFS)
        result = step.run(pair.science, pair.template)
    assert "ZOGY tiles: 9 task(s) on dask" in caplog.text
    assert "tile 9 / 9 done" in caplog.text
    _assert_identical(result, ref)
    assert np.isnan(result.scorr).any()  # the NaN patch went through the tasks
    assert list(step.catalog["x"]) == list(ref_cat["x"])


def test_one_tile_runs_in_process(pair, caplog):
    # The message comes before any cluster is contacted: no scheduler is needed.
    with caplog.at_level(logging.INFO, logger="stmatch"):
        result = ZogyStep.call(pair.science, pair.template, scheduler="tcp://127.0.0.1:9", **PSFS)
    assert "ZOGY on one tile runs in-process" in caplog.text
    plain = ZogyStep.call(pair.science, pair.template, **PSFS)
    _assert_identical(result, plain)


def test_bad_scheduler_is_refused_before_any_work(pair, tmp_path):
    with pytest.raises(ValueError, match="scheduler"):
        ZogyStep.call(
            pair.science,
            pair.template,
            scheduler="somewhere",
            output_dir=str(tmp_path),
            save_results=True,
            **PSFS,
        )
    assert list(tmp_path.iterdir()) == []


def test_worker_killed_during_a_tile(pair, in_process, tmp_path, caplog):
    from tests._dask import kill_one_worker_during, local_cluster

    files = write_zogy_pair(pair, tmp_path / "in", psf_files=False)
    out = tmp_path / "out"
    marker = tmp_path / "killed"
    with local_cluster(2) as cluster:
        kill_one_worker_during(cluster, marker, "stmatch-zogy-tiles")
        with caplog.at_level(logging.INFO, logger="stmatch"):
            result = ZogyStep.call(
                str(files["asn"]),
                tile_size=TILE,
                scheduler=cluster.scheduler_address,
                output_dir=str(out),
                save_results=True,
                **PSFS,
            )
    assert marker.read_text().startswith("stmatch-zogy-tiles-")  # a worker did die
    _assert_identical(result, in_process[0])  # files hold the same arrays as the models
    names = sorted(p.name for p in out.iterdir())
    assert names == ["zogy_science_zogy.fits", "zogy_science_zogy_cat.ecsv"]

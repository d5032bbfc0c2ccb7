"""DiffImagePipeline end to end on synthetic sets (stmatch.datasets.make_diffim_set)."""

import json

import numpy as np
import pytest
from astropy.table import Table

from stmatch.algorithms.detect import find_detections
from stmatch.datasets import write_diffim_association
from stmatch.models import DifferenceImageModel
from stmatch.models import open as open_model
from stmatch.pipelines import DiffImagePipeline
from stmatch.pipelines._asn import make_diffim_association, read_diffim_association

SHAPE = (192, 192)
# 48 px background bins: 4 x 4 bins on these small images (the packaged NIRCam value,
# 256 px, is meant for 2048 px detectors)
STEPS = {"bgmatch": {"bin_size": 48}}


@pytest.fixture(autouse=True)
def _no_user_pars(monkeypatch):
    monkeypatch.delenv("STMATCH_PARS_DIR", raising=False)
    monkeypatch.delenv("STMATCH_DISABLE_PARS", raising=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("diffim")
    return write_diffim_association(
        directory / "in", shape=SHAPE, n_science=3, n_stars=40, n_transients=3, seed=5
    )


@pytest.fixture(scope="module")
def run(files):
    """The in-process run: products, catalogs, returned models."""
    out = files["directory"].parent / "out"
    models = DiffImagePipeline.call(
        str(files["asn"]), output_dir=str(out), save_results=True, steps=STEPS
    )
    return out, models


def _stem(k):
    return f"diffim_science{k + 1}"


def _text(path):
    return Table.read(path).pformat(max_lines=-1, max_width=-1)


def _matched(catalog, truth, radius=1.5):
    """Index of the detection within ``radius`` px of each true position (-1 if none)."""
    out = []
    for x, y in zip(truth["x"], truth["y"], strict=True):
        d = np.hypot(catalog["x"] - x, catalog["y"] - y) if len(catalog) else np.array([])
        out.append(int(np.argmin(d)) if d.size and d.min() < radius else -1)
    return np.array(out)


def test_transients_found_in_every_exposure(files, run):
    out, _ = run
    dataset = files["set"]
    for k in range(len(dataset)):
        catalog = Table.read(out / f"{_stem(k)}_diffim_cat.ecsv")
        truth = dataset.transients_of(k)
        idx = _matched(catalog, truth)
        assert np.all(idx >= 0), f"exposure {k}: missed {truth[idx < 0]}"
        found = catalog[idx]
        assert np.all(found["kind"] == "new")
        # PSF fluxes of the transients (empirical PSFs, matched backgrounds)
        np.testing.assert_allclose(found["alpha"], truth["flux"], rtol=0.1)
        # nothing else: the stars and the backgrounds subtract cleanly
        assert len(catalog) <= len(truth) + 1, catalog


def test_products_records_and_alignment(files, run):
    out, models = run
    dataset = files["set"]
    assert [m.meta.filename for m in models] == [f"{_stem(k)}_diffim.fits" for k in range(3)]
    for k in range(len(dataset)):
        path = out / f"{_stem(k)}_diffim.fits"
        with open_model(path) as model:
            assert isinstance(model, DifferenceImageModel)
            cal = model.meta.cal_step
            assert cal.stmatch_diffim == "COMPLETE"
            assert cal.stmatch_zogy == "COMPLETE"
            assert cal.stmatch_bgmatch == "COMPLETE"
            assert cal.stmatch_psfmatch == "SKIPPED"  # the default
            info = model.meta.stmatch.instance["steps"]["stmatch_diffim"]
            assert model.meta.stmatch.version
            assert info["template"] == "diffim_template_i2d.fits"
            assert info["catalog_file"] == f"{_stem(k)}_diffim_cat.ecsv"
            assert info["n_detections"] == len(Table.read(out / info["catalog_file"]))
            # sky at template pixel p is at science pixel p + shift: template = science - shift
            dx, dy = dataset.shifts[k]
            assert info["alignment"]["shift_x"] == pytest.approx(-dx, abs=1e-3)
            assert info["alignment"]["shift_y"] == pytest.approx(-dy, abs=1e-3)
            assert info["alignment"]["scale"] == pytest.approx(1.0, abs=1e-6)
            assert not info["alignment"]["same_grid"]
            assert info["bgmatch"]["status"] == "COMPLETE"
            # the science exposure was the reference of bgmatch: no record of that here
            assert "stmatch_bgmatch" not in model.meta.stmatch.instance["steps"]
            np.testing.assert_array_equal(model.data, models[k].data)


def test_combined_catalog_is_the_union_with_exposure_column(files, run):
    out, _ = run
    combined = Table.read(out / "diffim_diffim_cat.ecsv")
    assert combined.colnames[0] == "exposure"
    parts = [Table.read(out / f"{_stem(k)}_diffim_cat.ecsv") for k in range(3)]
    assert len(combined) == sum(len(p) for p in parts)
    for k, part in enumerate(parts):
        rows = combined[combined["exposure"] == f"{_stem(k)}_cal.fits"]
        assert len(rows) == len(part)
        for col in part.colnames:
            np.testing.assert_array_equal(rows[col], part[col])


def test_scheduler_gives_the_same_products(files, run, dask_cluster):
    out, models = run
    out2 = files["directory"].parent / "out_dask"
    # no save_results: the products come back from the workers; catalogs are written
    dmodels = DiffImagePipeline.call(
        str(files["asn"]), output_dir=str(out2), scheduler=dask_cluster, steps=STEPS
    )
    assert not list(out2.glob("*_diffim.fits"))
    for k, (a, b) in enumerate(zip(models, dmodels, strict=True)):
        for attr in ("data", "err", "scorr", "dq"):
            np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr), err_msg=attr)
        assert b.meta.cal_step.stmatch_diffim == "COMPLETE"
        name = f"{_stem(k)}_diffim_cat.ecsv"
        assert _text(out / name) == _text(out2 / name)
    assert _text(out / "diffim_diffim_cat.ecsv") == _text(out2 / "diffim_diffim_cat.ecsv")


@pytest.mark.parametrize("fwhm_science,status", [(3.4, "COMPLETE"), (2.0, "SKIPPED")])
def test_psfmatch_enabled_and_zogy_parameters(tmp_path, fwhm_science, status):
    # a template of FWHM 2.6 px is convolved to a wider science PSF; a narrower one would
    # need a deconvolution: PSF matching is then left out with a warning
    files = write_diffim_association(
        tmp_path / "in",
        shape=(128, 128),
        n_science=1,
        n_stars=20,
        n_transients=2,
        transient_margin=20,
        fwhm_template=2.6,
        fwhm_science=fwhm_science,
        seed=8,
    )
    steps = {
        "bgmatch": {"bin_size": 32},
        "psfmatch": {"skip": False},
        "zogy": {"tile_size": 64, "science_psf_fwhm": fwhm_science, "template_psf_fwhm": 2.6},
    }
    (model,) = DiffImagePipeline.call(str(files["asn"]), steps=steps)
    assert model.meta.cal_step.stmatch_psfmatch == status
    info = model.meta.stmatch.instance["steps"]["stmatch_diffim"]["psfmatch"]
    if status == "SKIPPED":
        assert "deconvolve" in info["reason"]
    else:
        assert "FWHM 3.4" in info["target_psf"]
    # --steps.zogy.* reached the sub-step: 2 x 2 tiles of 64 px
    assert model.meta.zogy.n_tiles == 4
    assert model.meta.zogy.tile_size == 64
    # the transients are found with or without PSF matching, and nothing else
    det = find_detections(np.nan_to_num(model.scorr), threshold=5.0, min_separation=3)
    truth = files["set"].transients_of(0)
    assert np.all(_matched(det, truth) >= 0)
    assert len(det) <= len(truth) + 1


def test_psfmatch_skipped_by_default_every_way(files, monkeypatch):
    assert DiffImagePipeline().psfmatch.skip is True
    assert DiffImagePipeline(steps={"psfmatch": {"skip": False}}).psfmatch.skip is False
    assert DiffImagePipeline(steps={"psfmatch": {"kernel_size": 15}}).psfmatch.skip is True
    # through the parameter lookup of Step.call and strun, with and without the packaged files
    for disabled in ("false", "true"):
        monkeypatch.setenv("STMATCH_DISABLE_PARS", disabled)
        cfg = DiffImagePipeline.get_config_from_reference(str(files["asn"]))
        assert DiffImagePipeline.from_config_section(cfg).psfmatch.skip is True
        cfg = DiffImagePipeline.get_config_from_reference(str(files["asn"]))
        cfg["steps"]["psfmatch"] = {"skip": False}
        assert DiffImagePipeline.from_config_section(cfg).psfmatch.skip is False
    pars = DiffImagePipeline().get_pars()
    assert pars["steps"]["psfmatch"]["skip"] is True


@pytest.mark.parametrize(
    "instrument,grow,tile,kernel,poly",
    [("NIRCAM", 3, 1024, 31, True), ("MIRI", 4, None, 41, False)],
)
def test_parameter_files_apply_by_instrument(tmp_path, instrument, grow, tile, kernel, poly):
    files = write_diffim_association(
        tmp_path,
        shape=(64, 64),
        n_science=1,
        n_stars=3,
        n_transients=1,
        transient_margin=10,
        instrument=instrument,
        psf_files=False,
    )
    cfg = DiffImagePipeline.get_config_from_reference(str(files["asn"]))
    # a dict association (asn_from_list) selects the same files
    asn = make_diffim_association(files["science"], files["template"])
    assert DiffImagePipeline.get_config_from_reference(asn).dict() == cfg.dict()
    pipe = DiffImagePipeline.from_config_section(cfg)
    # the pipeline's file (stmatch_diffim-<instrument>.asdf) on top of the sub-steps' own
    assert pipe.bgmatch.detect_sources is True
    assert pipe.bgmatch.source_grow == grow
    assert pipe.bgmatch.use_polynomial is poly
    assert pipe.zogy.tile_size == tile
    assert pipe.psfmatch.kernel_size == kernel
    assert pipe.psfmatch.skip is True


def test_dict_association_in_memory_writes_nothing(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    asn = make_diffim_association(files["science"][:1], files["template"], product_name="one")
    pipe = DiffImagePipeline(steps=STEPS)
    models = pipe.run(asn)
    assert len(models) == 1 and models[0].meta.cal_step.stmatch_diffim == "COMPLETE"
    assert list(tmp_path.iterdir()) == []
    assert list(pipe.catalogs) == ["one"]
    combined = pipe.catalogs["one"]
    assert set(combined["exposure"]) <= {"diffim_science1_cal.fits"}
    assert len(combined) == pipe.results[0]["n_detections"] >= 3


def _asn(directory, members, name="p"):
    path = directory / "bad_asn.json"
    path.write_text(json.dumps({"products": [{"name": name, "members": members}]}))
    return path


@pytest.mark.parametrize(
    "members,error,match",
    [
        ([("s1", "science")], ValueError, "no member of exptype 'template'"),
        ([("s1", "science"), ("t", "template"), ("s2", "template")], ValueError, "2 templates"),
        ([("t", "template")], ValueError, "no member of exptype 'science'"),
        ([("s1", "science"), ("missing", "science"), ("t", "template")], FileNotFoundError,
         "missing_cal.fits"),
        ([("s1", "science"), ("s1", "science"), ("t", "template")], ValueError, "share the name"),
    ],
)  # fmt: skip
def test_bad_associations(tmp_path, members, error, match):
    for name in ("s1", "s2", "t"):
        (tmp_path / f"{name}_cal.fits").write_bytes(b"")
    path = _asn(tmp_path, [{"expname": f"{n}_cal.fits", "exptype": k} for n, k in members])
    with pytest.raises(error, match=match):
        read_diffim_association(path)


def test_bad_inputs_through_the_pipeline(files, tmp_path):
    path = _asn(tmp_path, [{"expname": str(files["science"][0]), "exptype": "science"}])
    with pytest.raises(ValueError, match="no member of exptype 'template'"):
        DiffImagePipeline.call(str(path))
    with pytest.raises(ValueError, match="is not an association"):
        DiffImagePipeline.call(str(files["science"][0]))
    with pytest.raises(ValueError, match="no products"):
        read_diffim_association({"products": []})
    member = [{"expname": str(files["science"][0]), "exptype": "science"},
              {"expname": str(files["template"]), "exptype": "template"}]  # fmt: skip
    twice = {"products": [{"name": "a", "members": member}, {"name": "a", "members": member}]}
    with pytest.raises(ValueError, match="two products named 'a'"):
        read_diffim_association(twice)


def test_killed_worker_loses_and_duplicates_nothing(files, run, tmp_path):
    """A worker dies while running an exposure: the exposure runs again elsewhere;
    the products and catalogs equal the in-process run's, each file once."""
    pytest.importorskip("distributed")
    from tests._dask import kill_one_worker_during, local_cluster

    out, models = run
    out3 = tmp_path / "out_killed"
    marker = tmp_path / "killed"
    with local_cluster(2) as cluster:
        kill_one_worker_during(cluster, marker, "stmatch-diffim")
        killed = DiffImagePipeline.call(
            str(files["asn"]),
            output_dir=str(out3),
            save_results=True,
            scheduler=cluster.scheduler_address,
            steps=STEPS,
        )
    assert marker.read_text().startswith("stmatch-diffim")
    assert sorted(p.name for p in out3.iterdir()) == sorted(p.name for p in out.iterdir())
    for k, (a, b) in enumerate(zip(models, killed, strict=True)):
        np.testing.assert_array_equal(a.data, b.data)
        with open_model(out3 / f"{_stem(k)}_diffim.fits") as saved:
            np.testing.assert_array_equal(saved.data, a.data)
        name = f"{_stem(k)}_diffim_cat.ecsv"
        assert _text(out / name) == _text(out3 / name)
    combined = Table.read(out3 / "diffim_diffim_cat.ecsv")
    assert len(combined) == len(Table.read(out / "diffim_diffim_cat.ecsv"))

"""Recipes: stmatch's steps inside an unmodified jwst calwebb_image3.

stpipe runs ``pre_hooks``/``post_hooks`` around any step, also a skipped one, and
a hook's result replaces the step's. The recipes of docs/jwst_pipelines.rst are
run here end to end (strun command line, parameter file, Python), with the steps
that the synthetic data cannot feed skipped: tweakreg (needs tuning on 96-pixel
images, see make_image3_mosaic) and source_catalog (needs reference files).
"""

import asdf
import numpy as np
import pytest
from jwst.datamodels import ModelLibrary
from jwst.pipeline import Image3Pipeline as JwstImage3Pipeline
from stdatamodels.jwst import datamodels
from stpipe import Step

from stmatch.datasets._image3 import make_image3_mosaic, write_image3_association
from stmatch.steps import BackgroundMatchStep, SkyMatchStep

SKIP_UNFED = ["--steps.tweakreg.skip=true", "--steps.source_catalog.skip=true"]


@pytest.fixture(scope="module")
def asn(tmp_path_factory):
    mosaic = make_image3_mosaic(2, 2, shape=(96, 96), sky_range=(1.0, 8.0), n_diffuse=0, seed=41)
    files = write_image3_association(
        mosaic, tmp_path_factory.mktemp("hooks"), product_name="hk", references=False
    )
    return str(files["asn"])


def _crf(directory):
    """Metadata of the per-exposure outputs, by exposure name."""
    out = {}
    paths = sorted(directory.glob("*_crf.fits"))
    assert len(paths) == 4, paths
    for path in paths:
        with datamodels.open(path) as model:
            out[path.name.split("_a3001")[0]] = {
                "level": model.meta.background.level,
                "cal_step": model.meta.cal_step.instance,
                "stmatch": model.meta.instance.get("stmatch", {}).get("steps", {}),
            }
    return out


def _alone(asn, **pars):
    """Levels from our SkyMatchStep run by itself on the association."""
    lib = SkyMatchStep(**pars).run(ModelLibrary(asn))
    out = {}
    with lib:
        for i, model in enumerate(lib):
            out[model.meta.filename.replace("_cal.fits", "")] = model.meta.background.level
            lib.shelve(model, i, modify=False)
    return out


def _check_bgmatch(meta):
    infos = [m["stmatch"]["stmatch_bgmatch"] for m in meta.values()]
    assert sum(i["is_reference"] for i in infos) == 1
    assert all(i["status"] == "COMPLETE" for i in infos), infos
    assert all(m["cal_step"]["stmatch_bgmatch"] == "COMPLETE" for m in meta.values())
    assert all(np.isfinite(i["mean_model"]) for i in infos if not i["is_reference"])


@pytest.mark.slow
def test_strun_our_skymatch_as_post_hook_of_skipped_jwst_skymatch(asn, tmp_path):
    out = tmp_path / "out"
    Step.from_cmdline(
        [
            "calwebb_image3",
            asn,
            "--disable-crds-steppars",
            f"--output_dir={out}",
            "--steps.skymatch.skip=true",
            # configobj list syntax: a trailing comma makes a one-element list
            "--steps.skymatch.post_hooks=stmatch.steps.SkyMatchStep,",
            *SKIP_UNFED,
        ]
    )
    meta = _crf(out)
    alone = _alone(asn)  # a hook starts from the spec defaults
    for name, m in meta.items():
        assert m["cal_step"]["skymatch"] == "SKIPPED"
        assert m["cal_step"]["stmatch_skymatch"] == "COMPLETE"
        assert m["level"] == pytest.approx(alone[name], abs=1e-12)
        assert m["stmatch"]["stmatch_skymatch"]["level_err"] is not None
    assert (out / "hk_i2d.fits").exists()


@pytest.mark.slow
def test_parameter_file_bgmatch_after_jwst_skymatch(asn, tmp_path):
    pars = tmp_path / "image3_bgmatch.asdf"
    asdf.AsdfFile(
        {
            "class": "jwst.pipeline.Image3Pipeline",
            "name": "calwebb_image3",
            "parameters": {},
            "steps": [
                {
                    "class": "jwst.skymatch.SkyMatchStep",
                    "name": "skymatch",
                    "parameters": {
                        "skystat": "median",
                        "post_hooks": ["stmatch.steps.BackgroundMatchStep(bin_size=32)"],
                    },
                }
            ],
        }
    ).write_to(pars)
    out = tmp_path / "out"
    Step.from_cmdline(
        [str(pars), asn, "--disable-crds-steppars", f"--output_dir={out}", *SKIP_UNFED]
    )
    meta = _crf(out)
    assert all(m["cal_step"]["skymatch"] == "COMPLETE" for m in meta.values())  # jwst's ran
    _check_bgmatch(meta)


@pytest.mark.slow
def test_python_call_instance_and_string_hooks(asn, tmp_path, monkeypatch):
    # jwst's pipeline asks CRDS for its parameters in .call unless told not to
    monkeypatch.setenv("STPIPE_DISABLE_CRDS_STEPPARS", "true")
    out = tmp_path / "out"
    JwstImage3Pipeline.call(
        asn,
        output_dir=str(out),
        save_results=True,
        steps={
            "tweakreg": {"skip": True},
            "skymatch": {
                "skip": True,
                "post_hooks": [
                    SkyMatchStep(skystat="mean", nclip=3),
                    "stmatch.steps.BackgroundMatchStep(bin_size=32, use_polynomial=True, order=1)",
                ],
            },
            "source_catalog": {"skip": True},
        },
    )
    meta = _crf(out)
    alone = _alone(asn, skystat="mean", nclip=3)
    for name, m in meta.items():
        assert m["cal_step"]["skymatch"] == "SKIPPED"
        assert m["cal_step"]["stmatch_skymatch"] == "COMPLETE"
        # the level found by our sky matching, before background matching moved it
        assert m["stmatch"]["stmatch_skymatch"]["level"] == pytest.approx(alone[name], abs=1e-12)
    _check_bgmatch(meta)


class ImageWithStmatchSky(JwstImage3Pipeline):
    """The subclassing recipe of docs/jwst_pipelines.rst."""

    class_alias = None  # an alias is global: never reuse jwst's
    step_defs = {**JwstImage3Pipeline.step_defs, "skymatch": SkyMatchStep}

    @staticmethod
    def get_stpipe_loggers():
        return (*JwstImage3Pipeline.get_stpipe_loggers(), "stmatch")


@pytest.mark.slow
def test_subclass_recipe(asn, tmp_path):
    pipe = ImageWithStmatchSky(
        output_dir=str(tmp_path),
        save_results=True,
        steps={
            "tweakreg": {"skip": True},
            "outlier_detection": {"skip": True},
            "source_catalog": {"skip": True},
            "skymatch": {"skystat": "median"},
        },
    )
    assert isinstance(pipe.skymatch, SkyMatchStep)
    assert "save_qa" in pipe.get_pars()["steps"]["skymatch"]
    pipe.run(asn)
    with datamodels.open(tmp_path / "hk_i2d.fits") as i2d:
        assert i2d.meta.cal_step.stmatch_skymatch == "COMPLETE"
        assert i2d.meta.cal_step.resample == "COMPLETE"


# ---------------------------------------------- how stpipe reads hook specifications
def _hook(spec):
    from stpipe import _hooks

    parent = JwstImage3Pipeline().skymatch
    return _hooks.hook_from_string(parent, "post", 0, spec)


def test_hook_forms():
    from stpipe._function_wrapper import FunctionWrapper
    from stpipe._subproc import SystemCall

    by_name = _hook("stmatch.steps.BackgroundMatchStep")
    assert isinstance(by_name, BackgroundMatchStep)
    assert by_name.name == "stmatch_bgmatch" and by_name.parent is not None
    with_pars = _hook("stmatch.steps.BackgroundMatchStep(bin_size=32, order=2)")
    assert with_pars.bin_size == 32 and with_pars.order == 2
    assert with_pars.parent is None  # built like a step of its own
    assert isinstance(_hook(BackgroundMatchStep), BackgroundMatchStep)
    assert isinstance(_hook("os.path.basename"), FunctionWrapper)
    # pitfalls: an alias, a mistyped module or a value with a dot become shell commands
    assert isinstance(_hook("stmatch_bgmatch"), SystemCall)
    assert isinstance(_hook("stmatch.step.BackgroundMatchStep"), SystemCall)
    with pytest.raises(AttributeError, match="NoSuchStep"):
        _hook("stmatch.steps.NoSuchStep")
    assert isinstance(_hook("stmatch.steps.BackgroundMatchStep(nsigma_clip=2.5)"), SystemCall)
    assert _hook("stmatch.steps.BackgroundMatchStep(nsigma_clip=25e-1)").nsigma_clip == 2.5

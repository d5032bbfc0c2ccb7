"""strun and Step.call work with no CRDS server, no cache and no environment set."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _clean_env(home):
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
    }


def _strun():
    exe = Path(sys.executable).parent / "strun"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "stpipe", "run"]


def run_strun_offline(args, cwd):
    """Run ``strun <args>`` in a clean environment; assert it succeeded without
    asking CRDS anything, and return its log."""
    proc = subprocess.run(
        _strun() + [str(a) for a in args],
        cwd=cwd,
        env=_clean_env(cwd),
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "CRDS" not in log.replace("disable-crds", "")
    return log


@pytest.mark.slow
def test_strun_offline_clean_environment(mosaic_3x3, tmp_path):
    asn, _ = mosaic_3x3
    out = tmp_path / "out"
    log = run_strun_offline(
        ["stmatch_skymatch", str(asn), f"--output_dir={out}", "--skystat=mean"], tmp_path
    )
    assert len(list(out.glob("*_skymatch.fits"))) == 9
    assert (out / "m3_skymatch_solution.asdf").exists()
    # our logger shows, the packaged NIRCam file was used, the command line won
    assert "stmatch.steps.skymatch" in log
    assert "stmatch_skymatch-nircam.asdf" in log
    assert "skystat: mean" in log


@pytest.mark.slow
def test_step_call_offline_clean_environment(mosaic_3x3, tmp_path):
    asn, _ = mosaic_3x3
    code = (
        "import sys\n"
        "from stmatch.steps import SkyMatchStep\n"
        f"lib = SkyMatchStep.call({str(asn)!r}, skystat='median')\n"
        "with lib:\n"
        "    m = lib.borrow(0)\n"
        "    assert m.meta.cal_step.stmatch_skymatch == 'COMPLETE'\n"
        "    lib.shelve(m, 0, modify=False)\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "ok" in proc.stdout
    assert not any(k.startswith("CRDS") for k in os.environ if k in _clean_env(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("form", ["association", "template_parameter"])
def test_strun_zogy_offline(form, tmp_path):
    from stmatch.datasets import make_zogy_pair, write_zogy_pair

    pair = make_zogy_pair((128, 128), n_stars=15, n_transients=3, seed=21)
    files = write_zogy_pair(pair, tmp_path / "in")
    out = tmp_path / "out"
    if form == "association":
        args = [str(files["asn"])]
    else:
        args = [str(files["science"]), f"--template={files['template']}"]
    log = run_strun_offline(
        [
            "stmatch_zogy",
            *args,
            f"--output_dir={out}",
            "--science_psf_fwhm=3.0",
            "--template_psf_fwhm=2.2",
            "--save_qa=true",
        ],
        tmp_path,
    )
    assert (out / "zogy_science_zogy.fits").exists()
    assert (out / "zogy_science_zogy_cat.ecsv").exists()
    assert (out / "zogy_science_zogy_qa.png").exists()
    # our logger shows, the packaged NIRCam file was used (tiles of 1024 px)
    assert "stmatch.steps.zogy" in log
    assert "stmatch_zogy-nircam.asdf" in log
    assert "3 detection(s)" in log


@pytest.mark.slow
def test_strun_bgmatch_offline(tmp_path):
    from stmatch.datasets import make_bgmatch_exposures, write_bgmatch_exposures

    exposures = make_bgmatch_exposures(
        3, shape=(96, 96), shifts=[(0, 0), (5, -3), (-4, 6)], rotations=[0, 2, -2], seed=22
    )
    asn = write_bgmatch_exposures(exposures, tmp_path / "in", product_name="bgm")
    out = tmp_path / "out"
    log = run_strun_offline(
        [
            "stmatch_bgmatch",
            str(asn),
            f"--output_dir={out}",
            "--bin_size=24",
            "--reference=bgm_22_1_cal.fits",
            "--bad_mask_planes=DO_NOT_USE,SATURATED",
        ],
        tmp_path,
    )
    assert len(list(out.glob("*_bgmatch.fits"))) == 3
    assert len(list(out.glob("*_bgmatch_model.asdf"))) == 3
    assert (out / "bgm_bgmatch_summary.ecsv").exists()
    # our logger shows, the packaged NIRCam file was used, the command line won
    assert "stmatch.steps.bgmatch" in log
    assert "stmatch_bgmatch-nircam.asdf" in log
    assert "bin_size: 24" in log
    assert "Reference: bgm_22_1_cal.fits" in log
    assert "Matched 2 of 2 exposure(s)" in log

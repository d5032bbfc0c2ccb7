"""strun stmatch_psfmatch works with no CRDS server, no cache and no environment set."""

import subprocess

import pytest

from tests.test_offline import _clean_env, _strun


@pytest.mark.slow
def test_strun_psfmatch_offline(tmp_path):
    from stmatch.datasets import make_psfmatch_exposure, write_psfmatch_exposure

    exposure = make_psfmatch_exposure(
        (160, 160), fwhm_range=(2.0, 2.6), variation="linear", n_stars=20, grid=(3, 3), seed=4
    )
    files = write_psfmatch_exposure(tmp_path / "in", exposure, name="offline")
    out = tmp_path / "out"
    proc = subprocess.run(
        _strun()
        + [
            "stmatch_psfmatch",
            str(files["image"]),
            f"--output_dir={out}",
            f"--psf={files['psf']}",
            "--target_psf_fwhm=3.5",
            "--cell_size=40",
            "--save_qa=true",
        ],
        cwd=tmp_path,
        env=_clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert (out / "offline_psfmatch.fits").exists()
    assert (out / "offline_psfmatchkernel.asdf").exists()
    assert (out / "offline_psfmatch_qa.png").exists()
    # our logger shows and the packaged NIRCam file was used (31 px kernels)
    assert "stmatch.steps.psfmatch" in log
    assert "stmatch_psfmatch-nircam.asdf" in log
    assert "Kernel: 31 x 31" in log
    assert "CRDS" not in log.replace("disable-crds", "")

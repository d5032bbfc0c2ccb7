"""strun stmatch_psfmatch works with no CRDS server, no cache and no environment set."""

import pytest

from tests.test_offline import run_strun_offline


@pytest.mark.slow
def test_strun_psfmatch_offline(tmp_path):
    from stmatch.datasets import make_psfmatch_exposure, write_psfmatch_exposure

    exposure = make_psfmatch_exposure(
        (160, 160), fwhm_range=(2.0, 2.6), variation="linear", n_stars=20, grid=(3, 3), seed=4
    )
    files = write_psfmatch_exposure(tmp_path / "in", exposure, name="offline")
    out = tmp_path / "out"
    log = run_strun_offline(
        [
            "stmatch_psfmatch",
            str(files["image"]),
            f"--output_dir={out}",
            f"--psf={files['psf']}",
            "--target_psf_fwhm=3.5",
            "--cell_size=40",
            "--save_qa=true",
        ],
        tmp_path,
    )
    assert (out / "offline_psfmatch.fits").exists()
    assert (out / "offline_psfmatchkernel.asdf").exists()
    assert (out / "offline_psfmatch_qa.png").exists()
    # our logger shows and the packaged NIRCam file was used (31 px kernels)
    assert "stmatch.steps.psfmatch" in log
    assert "stmatch_psfmatch-nircam.asdf" in log
    assert "Kernel: 31 x 31" in log

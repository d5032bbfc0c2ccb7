"""strun stmatch_diffim works with no CRDS server, no cache and no environment set."""

import pytest
from astropy.table import Table

from tests.test_offline import run_strun_offline


@pytest.mark.slow
def test_strun_diffim_offline(tmp_path):
    from stmatch.datasets import write_diffim_association

    files = write_diffim_association(
        tmp_path / "in",
        shape=(128, 128),
        n_science=2,
        n_stars=20,
        n_transients=2,
        transient_margin=20,
        product_name="night1",
        psf_files=False,
        seed=31,
    )
    out = tmp_path / "out"
    log = run_strun_offline(
        [
            "stmatch_diffim",
            str(files["asn"]),
            f"--output_dir={out}",
            "--steps.bgmatch.bin_size=32",
            "--steps.zogy.save_qa=true",
        ],
        tmp_path,
    )
    for k in (1, 2):
        assert (out / f"diffim_science{k}_diffim.fits").exists()
        assert (out / f"diffim_science{k}_diffim_cat.ecsv").exists()
        assert (out / f"diffim_science{k}_zogy_qa.png").exists()
    combined = Table.read(out / "night1_diffim_cat.ecsv")
    assert set(combined["exposure"]) == {"diffim_science1_cal.fits", "diffim_science2_cal.fits"}
    # our loggers show, the packaged NIRCam files were used, the command line won,
    # PSF matching was skipped by default, and the run was summarised
    assert "stmatch.pipelines.diffim" in log
    assert "stmatch_diffim-nircam.asdf" in log
    assert "stmatch_bgmatch-nircam.asdf" in log
    assert "bin_size: 32" in log
    assert "psfmatch: skipped" in log
    assert "detection(s) in 2 science exposure(s)" in log
    assert not list(tmp_path.glob("*.fits"))  # nothing written outside output_dir

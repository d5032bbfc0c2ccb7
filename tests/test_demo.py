"""The README's first command: ``stmatch demo``."""

import pytest

from stmatch.cli import demo, main


@pytest.mark.slow
def test_demo_runs_through_strun_and_recovers_levels(tmp_path):
    out = demo(tmp_path / "demo", quiet=True)
    assert len(out["rows"]) == 9
    assert all(r["status"] == "COMPLETE" for r in out["rows"])
    assert out["max_error"] < 0.1
    assert out["qa"].exists() and out["qa"].stat().st_size > 10_000
    assert out["solution"].exists()
    diffim = out["diffim"]
    assert len(diffim["rows"]) >= 9
    assert all(r["found"] for r in diffim["rows"]), "every transient is found"
    assert diffim["n_false"] <= 1
    for r in diffim["rows"]:
        assert abs(r["flux"] - r["true_flux"]) < 4 * r["flux_err"] + 0.05 * abs(r["true_flux"])
    assert diffim["catalog"].exists()
    assert all(q.exists() and q.stat().st_size > 10_000 for q in diffim["qa"])
    psfm = out["psfmatch"]
    assert psfm["qa"].exists() and psfm["qa"].stat().st_size > 10_000
    for r in psfm["rows"]:
        assert r["fwhm_before"] == pytest.approx(r["true_fwhm"], rel=0.05)
        assert r["fwhm_after"] == pytest.approx(psfm["target_fwhm"], rel=0.03)
    bgm = out["bgmatch"]
    assert sum(r["reference"] for r in bgm["rows"]) == 1
    assert all(r["status"] == "COMPLETE" for r in bgm["rows"])
    for r in bgm["rows"]:
        # the offset surfaces span up to a few units; recovered to a few hundredths
        assert r["rms_error"] < 0.04
    assert bgm["summary"].exists()


def test_cli_parses_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "stmatch" in capsys.readouterr().out

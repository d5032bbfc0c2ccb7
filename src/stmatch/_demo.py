"""``stmatch demo``: the whole story on built-in synthetic data, through ``strun``.

Sky-match a small mosaic, background-match exposures on different grids,
PSF-match a short-wavelength exposure to a long-wavelength band's PSF, and find
injected transients in new exposures with ``stmatch_diffim`` (background matching
and ZOGY per exposure); every stage prints the true and recovered numbers and
writes QA figures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import __version__

__all__ = ["demo"]


def _strun():
    """Command prefix that runs stpipe's ``strun`` with this interpreter."""
    exe = shutil.which("strun", path=str(Path(sys.executable).parent)) or shutil.which("strun")
    if exe:
        return [exe]
    return [sys.executable, "-m", "stpipe", "run"]


def _run_strun(args, log_path, env):
    cmd = _strun() + [str(a) for a in args]
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = Path(log_path).read_text().splitlines()[-25:]
        raise SystemExit(
            f"strun failed ({' '.join(cmd)}); last lines of {log_path}:\n" + "\n".join(tail)
        )
    return cmd


def demo(output_dir="stmatch_demo", *, seed=1, quiet=False):
    """Build the demo data, run the steps and ``stmatch_diffim`` through ``strun``, summarise.

    Stages: sky matching of a 3×3 mosaic, background matching of exposures on
    different grids, PSF matching of one band to another band's PSF, and
    difference imaging of three new exposures against a template (transients
    found with ZOGY).

    Parameters
    ----------
    output_dir : str or Path
        Where the data, outputs, logs and QA figures go.
    seed : int
        Seed of the synthetic data.
    quiet : bool
        Print nothing (for tests).

    Returns
    -------
    dict
        Paths of the products and the summary rows.
    """
    import numpy as np

    from .datasets import make_mosaic, write_mosaic
    from .models import open as open_model

    out = Path(output_dir).resolve()
    data_dir = out / "data"
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: None) if quiet else print

    say(f"stmatch {__version__} demo → {out}")
    t0 = time.perf_counter()
    mosaic = make_mosaic(
        3,
        3,
        shape=(256, 256),
        overlap=0.25,
        detectors_per_group=1,
        n_components=1,
        sky_range=(1.0, 6.0),
        noise=1.0,
        nan_patches=1,
        dq_fraction=0.001,
        n_diffuse=1,
        diffuse_amplitude=3.0,
        seed=seed,
    )
    asn = write_mosaic(mosaic, data_dir, asn_name="demo_asn.json", product_name="demo")
    say(
        f"  built {len(mosaic)} synthetic NIRCam-like exposures in "
        f"{time.perf_counter() - t0:.1f} s: {asn}"
    )

    env = dict(os.environ)
    t0 = time.perf_counter()
    cmd = _run_strun(
        ["stmatch_skymatch", asn, f"--output_dir={out}", "--save_qa=true", "--skymethod=match"],
        out / "skymatch.log",
        env,
    )
    say(
        f"  ran: {' '.join(Path(c).name if i == 0 else str(c) for i, c in enumerate(cmd))}"
        f" ({time.perf_counter() - t0:.1f} s)"
    )

    with open(asn) as f:
        members = json.load(f)["products"][0]["members"]
    rows = []
    truth = mosaic.sky - mosaic.sky.min()
    for k, member in enumerate(members):
        stem = Path(member["expname"]).stem.removesuffix("_cal")
        path = out / f"{stem}_skymatch.fits"
        with open_model(path) as model:
            info = model.meta.stmatch.instance["steps"]["stmatch_skymatch"]
            rows.append(
                {
                    "image": stem,
                    "true_offset": float(truth[k]),
                    "level": float(model.meta.background.level),
                    "error": info.get("level_err"),
                    "component": info.get("component"),
                    "status": model.meta.cal_step.stmatch_skymatch,
                }
            )
    say("")
    say(f"  {'image':<34} {'true Δsky':>10} {'solved':>10} {'± err':>8} {'comp':>5}  status")
    for r in rows:
        err = f"{r['error']:.4f}" if r["error"] is not None else "-"
        say(
            f"  {r['image']:<34} {r['true_offset']:>10.4f} {r['level']:>10.4f} {err:>8} "
            f"{str(r['component']):>5}  {r['status']}"
        )
    worst = max(abs(r["level"] - r["true_offset"]) for r in rows)
    say(f"\n  largest |solved − true| = {worst:.4f} (noise σ = 1 per pixel)")
    qa = out / "demo_skymatch_qa.png"
    solution = out / "demo_skymatch_solution.asdf"
    say(f"  solution table: {solution.name} (+ _images.ecsv, _pairs.ecsv)")
    say(f"  QA figure:      {qa}")
    say(f"  log:            {out / 'skymatch.log'}")
    result = {
        "asn": asn,
        "rows": rows,
        "qa": qa,
        "solution": solution,
        "max_error": float(worst),
        "truth": np.asarray(truth),
    }
    from ._demo_diffim import demo_diffim

    result["bgmatch"] = _demo_bgmatch(out, seed=seed, say=say, env=env)
    result["psfmatch"] = _demo_psfmatch(out, seed=seed, say=say, env=env)
    result["diffim"] = demo_diffim(out, seed=seed, say=say, env=env)
    say(f"\n  done: everything is in {out}")
    return result


def _demo_psfmatch(out, *, seed, say, env):
    """PSF-matching part of the demo: a PSF that varies across the field, matched
    to one wider Gaussian target; star widths before and after."""
    import numpy as np

    from .algorithms.psfgrid import fwhm_of
    from .datasets import make_psfmatch_exposure, write_psfmatch_exposure
    from .models import open as open_model

    t0 = time.perf_counter()
    exposure = make_psfmatch_exposure(
        (512, 512),
        fwhm_range=(2.0, 3.2),
        variation="quadratic",
        n_stars=150,
        grid=(5, 5),
        seed=seed,
    )
    files = write_psfmatch_exposure(out / "psfmatch_data", exposure, name="psfmatch")
    say(
        f"\n  two bands: a short-wavelength exposure whose PSF FWHM varies from 2.0 to 3.2 px "
        f"across the field, to be matched to the long-wavelength band's PSF (FWHM "
        f"{exposure.target_fwhm:.2f} px) ({time.perf_counter() - t0:.1f} s)"
    )
    t0 = time.perf_counter()
    cmd = _run_strun(
        [
            "stmatch_psfmatch",
            files["image"],
            f"--output_dir={out}",
            f"--psf={files['psf']}",
            f"--target_psf={files['target_psf']}",
            "--cell_size=64",
            "--save_qa=true",
        ],
        out / "psfmatch.log",
        env,
    )
    say(
        f"  ran: {' '.join(Path(c).name if i == 0 else str(c) for i, c in enumerate(cmd))}"
        f" ({time.perf_counter() - t0:.1f} s)"
    )
    stem = Path(files["image"]).stem.removesuffix("_cal")
    matched_path = out / f"{stem}_psfmatch.fits"
    with open_model(files["image"]) as before, open_model(matched_path) as after:
        info = after.meta.stmatch.instance["steps"]["stmatch_psfmatch"]
        stars = exposure.stars
        half = 12
        rows = []
        for frac_x, frac_y in ((0.1, 0.1), (0.5, 0.5), (0.9, 0.9), (0.1, 0.9), (0.9, 0.1)):
            tx, ty = frac_x * 511, frac_y * 511
            d = (
                np.hypot(stars["x"] - tx, stars["y"] - ty)
                - 1e-3 * stars["flux"] / stars["flux"].max()
            )
            inside = (
                (stars["x"] > half + 2)
                & (stars["x"] < 511 - half - 2)
                & (stars["y"] > half + 2)
                & (stars["y"] < 511 - half - 2)
                & (stars["flux"] > np.percentile(stars["flux"], 50))
            )
            k = int(np.argmin(np.where(inside, d, np.inf)))
            iy, ix = int(round(stars["y"][k])), int(round(stars["x"][k]))
            cut = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
            a = np.asarray(before.data[cut], dtype=np.float64)
            b = np.asarray(after.data[cut], dtype=np.float64)
            rows.append(
                {
                    "x": float(stars["x"][k]),
                    "y": float(stars["y"][k]),
                    "true_fwhm": float(exposure.fwhm_at(stars["x"][k], stars["y"][k])),
                    "fwhm_before": fwhm_of(a / a.sum(), deconvolve_pixel=True),
                    "fwhm_after": fwhm_of(b / b.sum(), deconvolve_pixel=True),
                }
            )
    say("")
    say(f"  {'x':>7} {'y':>7} {'PSF FWHM':>9} {'star before':>12} {'star after':>11}")
    for r in rows:
        say(
            f"  {r['x']:>7.1f} {r['y']:>7.1f} {r['true_fwhm']:>9.2f} {r['fwhm_before']:>12.2f} "
            f"{r['fwhm_after']:>11.2f}"
        )
    say(
        f"\n  target FWHM {exposure.target_fwhm:.2f} px; kernel quality: D <= "
        f"{info['max_aniano_d']:.2g}, W- <= {info['max_w_minus']:.2g}, "
        f"max EE difference {info['max_ee_difference']:.2g}"
    )
    qa = out / f"{stem}_psfmatch_qa.png"
    say(f"  matched exposure: {matched_path}")
    say(f"  kernel:           {out / (stem + '_psfmatchkernel.asdf')}")
    say(f"  QA figure:        {qa}")
    say(f"  log:              {out / 'psfmatch.log'}")
    return {"rows": rows, "info": info, "qa": qa, "target_fwhm": exposure.target_fwhm}


def _demo_bgmatch(out, *, seed, say, env):
    """Background-matching part of the demo: exposures on different grids whose
    backgrounds differ by smooth surfaces; recovered vs true offset surfaces."""
    import numpy as np

    from .datasets import make_bgmatch_exposures, write_bgmatch_exposures
    from .models import open as open_model

    t0 = time.perf_counter()
    exposures = make_bgmatch_exposures(
        4,
        shape=(384, 384),
        order=2,
        amplitude=2.0,
        shifts=[(0, 0), (30, -20), (-25, 15), (10, 35)],
        rotations=[0.0, 3.0, -4.0, 2.0],
        noise=1.0,
        n_stars=80,
        n_diffuse=2,
        diffuse_amplitude=6.0,
        seed=seed,
    )
    asn = write_bgmatch_exposures(exposures, out / "bgmatch_data", product_name="bgmdemo")
    say(
        f"\n  built {len(exposures)} exposures on different grids (shifted, rotated) with "
        f"quadratic background offsets and shared diffuse light ({time.perf_counter() - t0:.1f} s)"
    )
    t0 = time.perf_counter()
    cmd = _run_strun(
        ["stmatch_bgmatch", asn, f"--output_dir={out}", "--bin_size=64", "--save_qa=true"],
        out / "bgmatch.log",
        env,
    )
    say(
        f"  ran: {' '.join(Path(c).name if i == 0 else str(c) for i, c in enumerate(cmd))}"
        f" ({time.perf_counter() - t0:.1f} s)"
    )
    names = [Path(m.meta.filename).stem.removesuffix("_cal") for m in exposures.models]
    infos = []
    for name in names:
        with open_model(out / f"{name}_bgmatch.fits") as model:
            infos.append(dict(model.meta.stmatch.instance["steps"]["stmatch_bgmatch"]))
    ref = next(k for k, info in enumerate(infos) if info.get("is_reference"))
    rows = []
    for k, name in enumerate(names):
        with open_model(out / f"{name}_bgmatch.fits") as model:
            applied = np.asarray(model.data, np.float64) - np.asarray(
                exposures.models[k].data, np.float64
            )
        truth = exposures.expected_model(k, ref)
        # compare where the exposure overlaps the reference (outside it the model
        # can only be extended from the overlap)
        ny, nx = truth.shape
        y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
        xr, yr = exposures.to_exposure(k, ref, x, y)
        inside = (xr > -0.5) & (xr < nx - 0.5) & (yr > -0.5) & (yr < ny - 0.5)
        good = np.isfinite(applied) & inside
        rows.append(
            {
                "image": name,
                "reference": k == ref,
                "true_mean": float(np.mean(truth[good])),
                "true_range": float(np.ptp(truth[good])),
                "model_mean": float(np.mean(applied[good])),
                "rms_error": float(np.sqrt(np.mean((applied - truth)[good] ** 2))),
                "status": str(infos[k].get("status", "")),
            }
        )
    say("")
    say(
        f"  {'image':<22} {'ref':>3} {'true mean':>10} {'true range':>11} {'model mean':>11} "
        f"{'rms error':>10}  status"
    )
    for r in rows:
        say(
            f"  {r['image']:<22} {'*' if r['reference'] else '':>3} {r['true_mean']:>10.3f} "
            f"{r['true_range']:>11.3f} {r['model_mean']:>11.3f} {r['rms_error']:>10.4f}  "
            f"{r['status']}"
        )
    say(
        "\n  rms error: added background vs the true offset surface where the exposure "
        "overlaps the reference (noise sigma = 1 per pixel)"
    )
    say(f"  summary table: {out / 'bgmdemo_bgmatch_summary.ecsv'}")
    say(f"  QA figures:    {out}/<exposure>_bgmatch_qa.png")
    say(f"  log:           {out / 'bgmatch.log'}")
    return {"rows": rows, "summary": out / "bgmdemo_bgmatch_summary.ecsv"}

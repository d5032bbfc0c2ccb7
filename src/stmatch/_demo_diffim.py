"""Difference-imaging part of ``stmatch demo``: transients in new exposures,
found with ``strun stmatch_diffim`` (background matching and ZOGY per exposure)."""

from __future__ import annotations

import time
from pathlib import Path

from ._demo import _run_strun

__all__ = ["demo_diffim"]

MATCH_RADIUS = 1.5  # pixels between an injected transient and its detection


def demo_diffim(out, *, seed, say, env):
    """Write a template and three science exposures with transients, run the pipeline.

    Returns
    -------
    dict
        ``rows`` (one per injected transient: exposure, position, true and
        measured flux, found), ``n_false`` (detections matching no transient),
        ``catalog`` (path of the combined catalog), ``qa`` (QA figures), ``asn``.
    """
    import numpy as np
    from astropy.table import Table

    from .datasets import write_diffim_association

    t0 = time.perf_counter()
    files = write_diffim_association(
        out / "data" / "diffim", shape=(256, 256), n_science=3, seed=seed
    )
    dset = files["set"]
    say(
        f"\n  built a template and {len(files['science'])} new exposures (shifted and rotated "
        f"grids, other PSFs and smooth backgrounds; {len(dset.transients)} transients) in "
        f"{time.perf_counter() - t0:.1f} s: {files['asn']}"
    )
    t0 = time.perf_counter()
    cmd = _run_strun(
        [
            "stmatch_diffim",
            files["asn"],
            f"--output_dir={out}",
            # 256-px images: the NIRCam file's 256-px bins would leave one bin
            "--steps.bgmatch.bin_size=64",
            "--steps.zogy.save_qa=true",
        ],
        out / "diffim.log",
        env,
    )
    say(
        f"  ran: {' '.join(Path(c).name if i == 0 else str(c) for i, c in enumerate(cmd))}"
        f" ({time.perf_counter() - t0:.1f} s)"
    )
    rows, n_false, qa = [], 0, []
    for k, science in enumerate(files["science"]):
        stem = Path(science).stem.removesuffix("_cal")
        catalog = Table.read(out / f"{stem}_diffim_cat.ecsv")
        qa.append(out / f"{stem}_zogy_qa.png")
        used = set()
        for t in dset.transients[dset.transients["exposure"] == k]:
            d = np.hypot(catalog["x"] - t["x"], catalog["y"] - t["y"])
            j = int(np.argmin(d)) if len(d) else -1
            found = j >= 0 and d[j] < MATCH_RADIUS
            if found:
                used.add(j)
            rows.append(
                {
                    "exposure": stem,
                    "x": float(t["x"]),
                    "y": float(t["y"]),
                    "true_flux": float(t["flux"]),
                    "found": bool(found),
                    "s_corr": float(catalog["s_corr"][j]) if found else float("nan"),
                    "flux": float(catalog["alpha"][j]) if found else float("nan"),
                    "flux_err": float(catalog["alpha_err"][j]) if found else float("nan"),
                }
            )
        n_false += len(catalog) - len(used)
    say("")
    say(f"  {'exposure':<18} {'x':>7} {'y':>7} {'true flux':>10} {'S_corr':>8} {'flux ± err':>18}")
    for r in rows:
        flux = f"{r['flux']:.1f} ± {r['flux_err']:.1f}" if r["found"] else "not found"
        s_corr = f"{r['s_corr']:.1f}" if r["found"] else "-"
        say(
            f"  {r['exposure']:<18} {r['x']:>7.1f} {r['y']:>7.1f} {r['true_flux']:>10.1f} "
            f"{s_corr:>8} {flux:>18}"
        )
    combined = out / f"{Path(files['asn']).stem.removesuffix('_asn')}_diffim_cat.ecsv"
    say(
        f"\n  {sum(r['found'] for r in rows)} of {len(rows)} transients found; "
        f"{n_false} other detection(s) above |S_corr| = 5"
    )
    say(f"  difference images: {out}/<exposure>_diffim.fits")
    say(f"  combined catalog:  {combined}")
    say(f"  QA figures:        {out}/<exposure>_zogy_qa.png")
    say(f"  log:               {out / 'diffim.log'}")
    return {"rows": rows, "n_false": n_false, "catalog": combined, "qa": qa, "asn": files["asn"]}

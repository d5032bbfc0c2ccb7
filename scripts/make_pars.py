"""Regenerate the packaged per-instrument parameter files in src/stmatch/pars.

Run from the repository root: ``python scripts/make_pars.py``. Each entry lists
only the parameters that differ from the step's spec defaults; the reasons are
in ``docs/skymatch.rst`` ("Parameter files") and in each file's description.
"""

from pathlib import Path

import asdf

PARS = Path(__file__).resolve().parent.parent / "src" / "stmatch" / "pars"

FILES = {
    "stmatch_skymatch-nircam.asdf": {
        "class": "stmatch.steps.SkyMatchStep",
        "description": (
            "NIRCam imaging: faint, smooth zodiacal sky crowded with faint sources. The "
            "interpolated median (midpt) is several times more precise than the histogram "
            "mode at the same pixel count; a 3-sigma upper clip keeps faint sources out."
        ),
        "parameters": {"skystat": "midpt", "usigma": 3.0},
    },
    "stmatch_skymatch-niriss.asdf": {
        "class": "stmatch.steps.SkyMatchStep",
        "description": (
            "NIRISS imaging: low sky with Poisson-skewed noise and faint sources. Same "
            "robust statistic as NIRCam (midpt, 3-sigma upper clip) and a finer WCS "
            "grid (8 px) for its stronger field distortion."
        ),
        "parameters": {"skystat": "midpt", "usigma": 3.0, "grid_step": 8},
    },
    "stmatch_skymatch-miri.asdf": {
        "class": "stmatch.steps.SkyMatchStep",
        "description": (
            "MIRI imaging: bright thermal background with detector structure. The "
            "background dominates the noise, so the median is the most precise robust "
            "statistic; symmetric 3-sigma clipping removes residual detector artefacts "
            "and sources; global+match removes the large absolute thermal level; overlaps "
            "need at least 100 valid pixels because small overlaps sit near the "
            "structured detector edges."
        ),
        "parameters": {
            "skymethod": "global+match",
            "skystat": "median",
            "lsigma": 3.0,
            "usigma": 3.0,
            "min_overlap_pixels": 100,
        },
    },
}


def main():
    PARS.mkdir(parents=True, exist_ok=True)
    for name, spec in FILES.items():
        alias, instrument = name.removesuffix(".asdf").split("-")[:2]
        tree = {
            "class": spec["class"],
            "name": alias,
            "parameters": spec["parameters"],
            "meta": {
                "author": "stmatch",
                "description": spec["description"],
                "instrument": {"name": instrument.upper()},
                "pedigree": "GROUND",
                "reftype": "pars-" + alias,
                "useafter": "2022-01-01T00:00:00",
            },
        }
        af = asdf.AsdfFile(tree)
        af.write_to(PARS / name)
        print("wrote", PARS / name)


if __name__ == "__main__":
    main()

"""Regenerate the packaged per-instrument parameter files in src/stmatch/pars.

Run from the repository root: ``python scripts/make_pars.py``. Each entry lists
only the parameters that differ from the step's spec defaults; the reasons are
in ``docs/skymatch.rst`` ("Parameter files") and in each file's description.
Pipeline entries (``stmatch_diffim-*``) also list parameters of their sub-steps
under ``steps`` (see ``docs/diffim.rst``).
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
    "stmatch_zogy-nircam.asdf": {
        "class": "stmatch.steps.ZogyStep",
        "description": (
            "NIRCam imaging: PSF FWHM ~1-2.5 px (0.031/0.063 arcsec pixels) with extended "
            "diffraction spikes, so 31 px PSF stamps; the PSF varies across the 2048 px "
            "detectors, so 1024 px tiles; tweakreg-level relative registration (~5 mas, "
            "0.1-0.15 px) as astrometric noise."
        ),
        "parameters": {"psf_size": 31, "tile_size": 1024, "astrometric_noise": [0.1, 0.1]},
    },
    "stmatch_zogy-niriss.asdf": {
        "class": "stmatch.steps.ZogyStep",
        "description": (
            "NIRISS imaging: 0.065 arcsec pixels, PSF FWHM ~1.5-2.5 px: 31 px stamps, "
            "1024 px tiles, 0.1 px astrometric noise as for NIRCam long wavelength."
        ),
        "parameters": {"psf_size": 31, "tile_size": 1024, "astrometric_noise": [0.1, 0.1]},
    },
    "stmatch_zogy-miri.asdf": {
        "class": "stmatch.steps.ZogyStep",
        "description": (
            "MIRI imaging: 0.11 arcsec pixels, PSF FWHM 2-7 px from F560W to F2550W: "
            "41 px stamps; the ~1024 px detector is processed as one tile (the PSF varies "
            "little across it); fewer bright stars, so empirical PSFs and flux-ratio fits "
            "use stars down to S/N 10; registration noise 0.05 px (larger pixels)."
        ),
        "parameters": {
            "psf_size": 41,
            "psf_star_threshold": 10.0,
            "astrometric_noise": [0.05, 0.05],
        },
    },
    "stmatch_psfmatch-nircam.asdf": {
        "class": "stmatch.steps.PsfModelMatchStep",
        "description": (
            "NIRCam imaging: matching short-wavelength bands (FWHM ~1.3 px at 0.031 arcsec) to "
            "F444W (~4.7 px) needs a matching Gaussian of sigma ~2 px and room for the "
            "diffraction wings: 31 px kernels; stpsf grids vary smoothly across the 2048 px "
            "detectors, so 256 px cells (64 cells) with a quadratic spatial model."
        ),
        "parameters": {"kernel_size": 31, "cell_size": 256},
    },
    "stmatch_psfmatch-niriss.asdf": {
        "class": "stmatch.steps.PsfModelMatchStep",
        "description": (
            "NIRISS imaging: 0.065 arcsec pixels, FWHM ~1.5-2.5 px, so a matching kernel "
            "sigma of at most ~2 px: 25 px kernels, 256 px cells over the 2048 px detector."
        ),
        "parameters": {"kernel_size": 25, "cell_size": 256},
    },
    "stmatch_psfmatch-miri.asdf": {
        "class": "stmatch.steps.PsfModelMatchStep",
        "description": (
            "MIRI imaging: 0.11 arcsec pixels, FWHM 2-7 px from F560W to F2550W and a strong "
            "cruciform wing: 41 px kernels; the ~1024 px detector varies little, so 256 px "
            "cells (16 cells) with a linear spatial model."
        ),
        "parameters": {"kernel_size": 41, "cell_size": 256, "spatial_kernel_order": 1},
    },
    "stmatch_bgmatch-nircam.asdf": {
        "class": "stmatch.steps.BackgroundMatchStep",
        "description": (
            "NIRCam imaging: the zodiacal background is smooth over a 2048 px detector, so "
            "exposure-to-exposure differences are offsets and gentle gradients: a low-order "
            "(2) Chebyshev polynomial, weighted by the bin errors, on 256 px bins (8 x 8 per "
            "detector, 8 arcsec at 0.031 arcsec/px, 16 arcsec at 0.063 arcsec/px) is well "
            "constrained and cannot follow real diffuse emission that the difference misses."
        ),
        "parameters": {"use_polynomial": True, "order": 2, "bin_size": 256},
    },
    "stmatch_bgmatch-niriss.asdf": {
        "class": "stmatch.steps.BackgroundMatchStep",
        "description": (
            "NIRISS imaging: zodiacal background on a 2048 px detector at 0.065 arcsec/px, "
            "smooth but with faint scattered-light patterns that differ between pointings: a "
            "cubic Chebyshev polynomial on 256 px bins (8 x 8 per detector)."
        ),
        "parameters": {"use_polynomial": True, "order": 3, "bin_size": 256},
    },
    "stmatch_bgmatch-miri.asdf": {
        "class": "stmatch.steps.BackgroundMatchStep",
        "description": (
            "MIRI imaging: a bright thermal background with detector structure (glow, "
            "gradients across the ~1024 px field) that a low-order polynomial cannot follow: "
            "an Akima spline through 64 px bins (16 x 16 over the detector, 7 arcsec at "
            "0.11 arcsec/px); the coronagraph and Lyot areas are NON_SCIENCE and leave empty "
            "bins, which the spline skips."
        ),
        "parameters": {"use_polynomial": False, "interp_style": "AKIMA_SPLINE", "bin_size": 64},
    },
    # Difference-imaging pipeline: values for its sub-steps in that context, merged on
    # top of each sub-step's own per-instrument file.
    "stmatch_diffim-nircam.asdf": {
        "class": "stmatch.pipelines.DiffImagePipeline",
        "description": (
            "NIRCam difference imaging. The science exposure and the template have different "
            "PSFs, so every star leaves a residual in science - template: background matching "
            "masks the pixels that stand out in the difference (detect_sources, 5 bin sigmas) "
            "and grows them by 3 px to cover the residual diffraction spikes, which otherwise "
            "bias the bins around bright stars and fail the quality gate. PSF matching stays "
            "off: ZOGY subtracts exactly with different PSFs, and convolving the template "
            "would only correlate its noise."
        ),
        "parameters": {},
        "steps": {
            "bgmatch": {"detect_sources": True, "source_threshold": 5.0, "source_grow": 3},
            "psfmatch": {"skip": True},
        },
    },
    "stmatch_diffim-niriss.asdf": {
        "class": "stmatch.pipelines.DiffImagePipeline",
        "description": (
            "NIRISS difference imaging: as for NIRCam (different PSFs leave star residuals in "
            "science - template, masked by detect_sources at 5 bin sigmas and grown by 3 px "
            "for the hexagonal-pupil spikes at 0.065 arcsec/px); PSF matching off, since ZOGY "
            "needs none."
        ),
        "parameters": {},
        "steps": {
            "bgmatch": {"detect_sources": True, "source_threshold": 5.0, "source_grow": 3},
            "psfmatch": {"skip": True},
        },
    },
    "stmatch_diffim-miri.asdf": {
        "class": "stmatch.pipelines.DiffImagePipeline",
        "description": (
            "MIRI difference imaging: star residuals in science - template are masked before "
            "background matching (detect_sources); the PSF FWHM reaches 7 px at F2550W and "
            "the residual rings of the cruciform PSF are wide, so masks are grown by 4 px; a "
            "lower threshold (4 bin sigmas) because the bright thermal background makes "
            "residuals faint relative to the bin noise. PSF matching off (ZOGY needs none)."
        ),
        "parameters": {},
        "steps": {
            "bgmatch": {"detect_sources": True, "source_threshold": 4.0, "source_grow": 4},
            "psfmatch": {"skip": True},
        },
    },
}

#: Classes and aliases of the sub-steps named in pipeline files.
SUB_STEPS = {
    "bgmatch": ("stmatch.steps.BackgroundMatchStep", "bgmatch"),
    "psfmatch": ("stmatch.steps.PsfModelMatchStep", "psfmatch"),
    "zogy": ("stmatch.steps.ZogyStep", "zogy"),
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
        if "steps" in spec:  # a pipeline: one entry per sub-step, as stpipe writes them
            tree["steps"] = [
                {"class": SUB_STEPS[name][0], "name": SUB_STEPS[name][1], "parameters": pars}
                for name, pars in spec["steps"].items()
            ]
        af = asdf.AsdfFile(tree)
        af.write_to(PARS / name)
        print("wrote", PARS / name)


if __name__ == "__main__":
    main()

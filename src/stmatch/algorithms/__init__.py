"""Numerical core of stmatch: numpy and scipy only.

Nothing here knows about stpipe, stdatamodels, asdf or jwst. World coordinate
systems enter as callables (pixel → world and world → pixel), data quality as
boolean masks. Inputs are never modified.
"""

from .bgmatch_fit import BackgroundFit, UndersampledError, fit_background, match_background
from .bgmatch_grid import BinnedGrid, bin_difference, match_diagnostics, reference_scores
from .chebyshev import (
    chebyshev_basis,
    chebyshev_terms,
    evaluate_chebyshev,
    fit_chebyshev,
    image_domain,
    n_chebyshev_terms,
)
from .convolve_varying import ConvolveResult, convolve_image, convolve_variance, kernel_footprint
from .detect import DETECTION_DTYPE, find_detections
from .fluxratio import FluxRatioFit, fit_flux_ratio
from .noise import clipped_background, sigma_from_variance
from .psf import (
    PsfPairCheck,
    centroid,
    check_psf_pair,
    fft_origin_to_stamp,
    gaussian_psf,
    moffat_psf,
    normalize_psf,
    psf_to_fft_origin,
    recentre_psf,
)
from .psfgrid import EmpiricalPsf, bin_oversampled, empirical_psf, fwhm_of, psf_at
from .psfmatch_basis import (
    KernelBasis,
    alard_lupton_basis,
    alard_lupton_sigmas,
    delta_function_basis,
)
from .psfmatch_kernel import (
    KernelFit,
    SpatialKernelFit,
    cell_centres,
    psf_padding,
    solve_kernel,
    solve_spatial_kernel,
)
from .psfmatch_metrics import (
    DeconvolutionCheck,
    KernelQuality,
    check_deconvolution,
    encircled_energy,
    kernel_quality,
)
from .resample import ResampleResult, affine_resample_stamp, grids_agree, resample_image
from .skymatch import SkyInput, SkyMatchParams, SkyMatchResult, match_sky
from .skysolve import ComponentSolution, solve_offsets
from .skystats import SkyStatistic, StatResult
from .spatial_kernel import SpatialKernel
from .stars import StarList, find_stars, psf_flux
from .zogy import ZogyResult, zogy
from .zogy_tiled import TiledZogyResult, plan_tiles, zogy_tiled

__all__ = [
    "BackgroundFit",
    "UndersampledError",
    "fit_background",
    "match_background",
    "BinnedGrid",
    "bin_difference",
    "match_diagnostics",
    "reference_scores",
    "ConvolveResult",
    "convolve_image",
    "convolve_variance",
    "kernel_footprint",
    "KernelBasis",
    "alard_lupton_basis",
    "alard_lupton_sigmas",
    "delta_function_basis",
    "KernelFit",
    "SpatialKernelFit",
    "cell_centres",
    "psf_padding",
    "solve_kernel",
    "solve_spatial_kernel",
    "DeconvolutionCheck",
    "KernelQuality",
    "check_deconvolution",
    "encircled_energy",
    "kernel_quality",
    "SpatialKernel",
    "chebyshev_basis",
    "chebyshev_terms",
    "evaluate_chebyshev",
    "fit_chebyshev",
    "image_domain",
    "n_chebyshev_terms",
    "DETECTION_DTYPE",
    "ComponentSolution",
    "EmpiricalPsf",
    "FluxRatioFit",
    "ResampleResult",
    "StarList",
    "TiledZogyResult",
    "affine_resample_stamp",
    "bin_oversampled",
    "clipped_background",
    "empirical_psf",
    "find_detections",
    "find_stars",
    "fit_flux_ratio",
    "fwhm_of",
    "grids_agree",
    "plan_tiles",
    "psf_at",
    "psf_flux",
    "resample_image",
    "sigma_from_variance",
    "zogy_tiled",
    "PsfPairCheck",
    "SkyInput",
    "SkyMatchParams",
    "SkyMatchResult",
    "SkyStatistic",
    "StatResult",
    "ZogyResult",
    "centroid",
    "check_psf_pair",
    "fft_origin_to_stamp",
    "gaussian_psf",
    "match_sky",
    "moffat_psf",
    "normalize_psf",
    "psf_to_fft_origin",
    "recentre_psf",
    "solve_offsets",
    "zogy",
]

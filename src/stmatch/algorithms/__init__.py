"""Numerical core of stmatch: numpy and scipy only.

Nothing here knows about stpipe, stdatamodels, asdf or jwst. World coordinate
systems enter as callables (pixel → world and world → pixel), data quality as
boolean masks. Inputs are never modified.

The names below are loaded on first access (``stmatch.algorithms.X``), so that a
process that needs one module (a Dask worker running one kind of task) does not
import them all.
"""

_EXPORTS = {
    "BackgroundFit": "bgmatch_fit",
    "BinnedGrid": "bgmatch_grid",
    "ComponentSolution": "skysolve",
    "ConvolveResult": "convolve_varying",
    "DETECTION_DTYPE": "detect",
    "DeconvolutionCheck": "psfmatch_metrics",
    "EmpiricalPsf": "psfgrid",
    "FluxRatioFit": "fluxratio",
    "KernelBasis": "psfmatch_basis",
    "KernelFit": "psfmatch_kernel",
    "KernelQuality": "psfmatch_metrics",
    "PsfPairCheck": "psf",
    "ResampleResult": "resample",
    "SkyInput": "skymatch",
    "SkyMatchParams": "skymatch",
    "SkyMatchResult": "skymatch",
    "SkyStatistic": "skystats",
    "SpatialKernel": "spatial_kernel",
    "SpatialKernelFit": "psfmatch_kernel",
    "StarList": "stars",
    "StatResult": "skystats",
    "TiledZogyResult": "zogy_tiled",
    "UndersampledError": "bgmatch_fit",
    "ZogyResult": "zogy",
    "affine_resample_stamp": "resample",
    "alard_lupton_basis": "psfmatch_basis",
    "alard_lupton_sigmas": "psfmatch_basis",
    "bin_difference": "bgmatch_grid",
    "bin_oversampled": "psfgrid",
    "cell_centres": "psfmatch_kernel",
    "centroid": "psf",
    "chebyshev_basis": "chebyshev",
    "chebyshev_terms": "chebyshev",
    "check_deconvolution": "psfmatch_metrics",
    "check_psf_pair": "psf",
    "clipped_background": "noise",
    "convolve_image": "convolve_varying",
    "convolve_variance": "convolve_varying",
    "delta_function_basis": "psfmatch_basis",
    "empirical_psf": "psfgrid",
    "encircled_energy": "psfmatch_metrics",
    "evaluate_chebyshev": "chebyshev",
    "fft_origin_to_stamp": "psf",
    "find_detections": "detect",
    "find_stars": "stars",
    "fit_background": "bgmatch_fit",
    "fit_chebyshev": "chebyshev",
    "fit_flux_ratio": "fluxratio",
    "fwhm_of": "psfgrid",
    "gaussian_psf": "psf",
    "grids_agree": "resample",
    "image_domain": "chebyshev",
    "kernel_footprint": "convolve_varying",
    "kernel_quality": "psfmatch_metrics",
    "match_background": "bgmatch_fit",
    "match_diagnostics": "bgmatch_grid",
    "match_sky": "skymatch",
    "moffat_psf": "psf",
    "n_chebyshev_terms": "chebyshev",
    "normalize_psf": "psf",
    "plan_tiles": "zogy_tiled",
    "psf_at": "psfgrid",
    "psf_flux": "stars",
    "psf_padding": "psfmatch_kernel",
    "psf_to_fft_origin": "psf",
    "recentre_psf": "psf",
    "reference_scores": "bgmatch_grid",
    "resample_image": "resample",
    "sigma_from_variance": "noise",
    "solve_kernel": "psfmatch_kernel",
    "solve_offsets": "skysolve",
    "solve_spatial_kernel": "psfmatch_kernel",
    "zogy": "zogy",
    "zogy_tiled": "zogy_tiled",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stmatch.algorithms' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))

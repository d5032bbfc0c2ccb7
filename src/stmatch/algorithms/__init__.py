"""Numerical core of stmatch: numpy and scipy only.

Nothing here knows about stpipe, stdatamodels, asdf or jwst. World coordinate
systems enter as callables (pixel → world and world → pixel), data quality as
boolean masks. Inputs are never modified.
"""

from .skymatch import SkyInput, SkyMatchParams, SkyMatchResult, match_sky
from .skysolve import ComponentSolution, solve_offsets
from .skystats import SkyStatistic, StatResult
from .zogy import ZogyResult, zogy

__all__ = [
    "ComponentSolution",
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

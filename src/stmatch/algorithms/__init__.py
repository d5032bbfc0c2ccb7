"""Numerical core of stmatch: numpy and scipy only.

Nothing here knows about stpipe, stdatamodels, asdf or jwst. World coordinate
systems enter as callables (pixel → world and world → pixel), data quality as
boolean masks. Inputs are never modified.
"""

from .skymatch import SkyInput, SkyMatchParams, SkyMatchResult, match_sky
from .skysolve import ComponentSolution, solve_offsets
from .skystats import SkyStatistic, StatResult

__all__ = [
    "ComponentSolution",
    "SkyInput",
    "SkyMatchParams",
    "SkyMatchResult",
    "SkyStatistic",
    "StatResult",
    "match_sky",
    "solve_offsets",
]

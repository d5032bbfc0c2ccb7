"""stmatch: make images agree before they are combined or subtracted.

stpipe steps that share one algorithms package; available now:

- :class:`~stmatch.steps.SkyMatchStep` (``stmatch_skymatch``): sky equalisation
  of overlapping exposures.

The step classes are imported lazily so that ``import stmatch`` stays cheap.
"""

try:
    from ._version import version as __version__
except ImportError:  # pragma: no cover - running from a source tree without a build
    try:
        from importlib.metadata import version as _dist_version

        __version__ = _dist_version("stmatch")
    except Exception:
        __version__ = "0.0.0"

__all__ = ["__version__"]

"""stpipe pipelines of stmatch.

The classes are loaded on first access so that ``import stmatch.pipelines`` (and
stpipe's entry point discovery) stays cheap.
"""

__all__ = ["DiffImagePipeline", "Image3Pipeline"]

_LOCATIONS = {
    "DiffImagePipeline": "stmatch.pipelines.diffim",
    "Image3Pipeline": "stmatch.pipelines.image3",
}


def __getattr__(name):
    if name in _LOCATIONS:
        import importlib

        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'stmatch.pipelines' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)

"""stpipe steps of stmatch.

The classes are loaded on first access so that ``import stmatch.steps`` (and
stpipe's entry point discovery) stays cheap.
"""

__all__ = ["BackgroundMatchStep", "PsfModelMatchStep", "SkyMatchStep", "ZogyStep"]

_LOCATIONS = {
    "BackgroundMatchStep": "stmatch.steps.bgmatch_step",
    "PsfModelMatchStep": "stmatch.steps.psfmatch_step",
    "SkyMatchStep": "stmatch.steps.skymatch_step",
    "ZogyStep": "stmatch.steps.zogy_step",
}


def __getattr__(name):
    if name in _LOCATIONS:
        import importlib

        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'stmatch.steps' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)

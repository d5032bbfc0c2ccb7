"""Helpers for step tests."""

import hashlib
from pathlib import Path

import numpy as np


def levels(library):
    """meta.background.level, status and stmatch info of each model in a library."""
    out = []
    with library:
        for i, model in enumerate(library):
            out.append(
                (
                    model.meta.background.level,
                    getattr(model.meta.cal_step, "stmatch_skymatch", None),
                    model.meta.instance.get("stmatch", {})
                    .get("steps", {})
                    .get("stmatch_skymatch", {}),
                )
            )
            library.shelve(model, i, modify=False)
    return out


def relative(values, truth):
    """Errors of solved levels relative to the image with the lowest true sky."""
    values = np.asarray(values, dtype=float)
    truth = np.asarray(truth, dtype=float)
    ref = int(np.argmin(truth))
    return (values - values[ref]) - (truth - truth[ref])


def digest(directory):
    """sha256 of every file in a directory (to prove inputs are untouched)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(directory).iterdir())
        if p.is_file()
    }

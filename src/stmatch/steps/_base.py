"""Shared base of stmatch's steps.

:class:`StmatchStep` subclasses ``jwst.stpipe.Step`` (datamodel opening,
associations, suffixes, cal_logs) and adds what every stmatch step needs:

* the ``stmatch`` logger among those stpipe configures, so our log lines show
  under ``strun``;
* stmatch's version recorded in each output's ``meta.stmatch``;
* models opened with :func:`stmatch.models.open`, which knows our model types;
* parameters from per-instrument files (:mod:`stmatch.steps._pars`), never CRDS;
* outputs written atomically (temporary file, then rename), never over an input.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from jwst.stpipe import Step as _JwstStep
from stpipe.library import AbstractModelLibrary

from .. import __version__
from . import _pars

__all__ = ["StmatchStep", "atomic_write", "unvalidated"]

log = logging.getLogger("stmatch.steps")


def atomic_write(path, writer):
    """Write a file atomically: ``writer(tmp_path)`` then rename onto ``path``.

    The temporary file has the same base name as ``path`` (so that datamodels
    record the right ``meta.filename``) inside a hidden temporary directory next to
    it, on the same file system.

    Parameters
    ----------
    path : str or Path
        Final location.
    writer : callable
        ``writer(tmp_path)`` writes the file.

    Returns
    -------
    str
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix=".stmatch-", dir=path.parent)
    try:
        tmp = Path(tmpdir) / path.name
        writer(str(tmp))
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return str(path)


def products_dir(step) -> Path:
    """Directory of a step's side products (tables, kernels, figures).

    The same directory stpipe writes the step's main outputs to: ``output_dir``
    (of the step or its pipeline), else the current directory.
    """
    from os.path import expanduser, expandvars

    return Path(expandvars(expanduser(step.search_attr("output_dir", default="") or ".")))


class unvalidated:  # noqa: N801 - used like a function
    """Context manager: assign metadata without validating each assignment.

    stdatamodels validates the whole metadata tree on every assignment; for a
    handful of plain values on thousands of models that dominates the run. The
    model is validated as a whole when it is saved.
    """

    def __init__(self, model):
        self._model = model
        self._before = None

    def __enter__(self):
        self._before = getattr(self._model, "_validate_on_assignment", None)
        if self._before is not None:
            self._model._validate_on_assignment = False
        return self._model

    def __exit__(self, *exc):
        if self._before is not None:
            self._model._validate_on_assignment = self._before
        return False


class StmatchStep(_JwstStep):
    """Base class of stmatch steps (not registered, never run by itself)."""

    spec = """
    """  # noqa: E501

    reference_file_types: list = []

    @staticmethod
    def get_stpipe_loggers():
        """Loggers stpipe configures: jwst's and ours."""
        return (*_JwstStep.get_stpipe_loggers(), "stmatch")

    @classmethod
    def _datamodels_open(cls, init, **kwargs):
        from ..models import open as _open

        return _open(init, **kwargs)

    @classmethod
    def get_config_from_reference(cls, dataset, disable=None, crds_observatory=None):
        """Parameters from stmatch's per-instrument files (CRDS is never consulted).

        ``disable`` (``--disable-crds-steppars``) has no effect: there is no CRDS
        lookup to disable. Use ``STMATCH_DISABLE_PARS=true`` to skip the files.
        """
        return _pars.load_parameters(cls, dataset)

    def default_suffix(self):
        """Suffix of output files: the alias without the ``stmatch_`` prefix."""
        alias = self.class_alias or self.name
        return alias.removeprefix("stmatch_")

    def record_stmatch(self, model, **info):
        """Record stmatch's version and step information in ``model.meta.stmatch``."""
        current = model.meta.instance.get("stmatch", {}) if hasattr(model.meta, "instance") else {}
        current = dict(current) if isinstance(current, dict) else {}
        steps = dict(current.get("steps", {}))
        if info:
            steps[self.class_alias] = _plain(info)
        current["version"] = __version__
        if steps:
            current["steps"] = steps
        model.meta.stmatch = current

    def finalize_result(self, result, reference_files_used):
        """Add stmatch's version to each output, then jwst's bookkeeping."""
        super().finalize_result(result, reference_files_used)
        if hasattr(result, "meta") and not isinstance(result, Sequence):
            try:
                recorded = result.meta.instance.get("stmatch", {})
                if not (isinstance(recorded, dict) and recorded.get("version") == __version__):
                    self.record_stmatch(result)
            except Exception as exc:  # a model without free-form meta
                log.debug("Could not record stmatch version: %s", exc)

    def save_model(self, model, suffix=None, idx=None, output_file=None, force=False, **components):
        """Save like stpipe, but atomically and never over an input file."""
        if isinstance(model, AbstractModelLibrary) or isinstance(model, Sequence):
            return super().save_model(
                model, suffix=suffix, idx=idx, output_file=output_file, force=force, **components
            )
        if output_file is None or output_file == "":
            output_file = self.output_file
        if not force and not self.save_results and not output_file:
            return None
        if self.output_use_model or (output_file is None and not self.search_output_file):
            output_file = model.meta.filename
            idx = None
        path = self.make_output_path(basepath=output_file, suffix=suffix, idx=idx, **components)
        self._refuse_overwriting_input(path)
        atomic_write(path, model.save)
        log.info("Saved model in %s", path)
        return path

    def _refuse_overwriting_input(self, path):
        for src in getattr(self, "_input_paths", ()):
            try:
                if Path(src).exists() and Path(path).exists() and os.path.samefile(src, path):
                    raise ValueError(f"refusing to overwrite input file {src}")
            except OSError:
                continue


def _plain(value):
    """Convert numpy scalars and tuples to plain Python for metadata."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value

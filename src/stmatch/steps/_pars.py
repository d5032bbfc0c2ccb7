"""Per-instrument parameter files, looked up without CRDS.

Files are ASDF step-parameter files (``class``, ``name``, ``parameters``) named::

    <alias>-<instrument>.asdf
    <alias>-<instrument>-<exposure type>.asdf
    <alias>-<instrument>-<filter>.asdf

all lower case, e.g. ``stmatch_skymatch-miri.asdf``. They live in the package
(``stmatch/pars``) and, optionally, in a user directory named by the environment
variable ``STMATCH_PARS_DIR``. For an input whose metadata gives instrument,
exposure type and filter, every matching file is merged in this order, later
files overriding earlier ones::

    packaged: instrument → exposure type → filter
    user:     instrument → exposure type → filter

so that the effective precedence is: command line > user config file > user
pars directory > packaged pars > spec defaults (stpipe merges the first two on
top of what this module returns). Set ``STMATCH_DISABLE_PARS=true`` to use spec
defaults only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from stpipe import config_parser

__all__ = ["PARS_DIR", "find_parameter_files", "input_metadata", "load_parameters"]

log = logging.getLogger("stmatch.steps")

PARS_DIR = Path(__file__).resolve().parent.parent / "pars"
_TRUE = ("true", "t", "yes", "y", "1", "on")


def _flat_get(meta, key):
    if key in meta:
        return meta[key]
    node = meta
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def input_metadata(step_class, dataset) -> dict:
    """Instrument, exposure type and filter of a dataset, or empty strings.

    Parameters
    ----------
    step_class : type
        The step class (its ``_get_crds_parameters`` reads metadata lazily).
    dataset : str, Path, DataModel, ModelLibrary, list or dict
        What the step runs on; a dict is taken as flattened metadata.

    Returns
    -------
    dict
        Keys ``instrument``, ``exptype``, ``filter`` (lower case, '' when unknown).
    """
    meta = None
    if isinstance(dataset, Mapping):
        meta = dataset
    elif dataset is not None:
        if isinstance(dataset, Sequence) and not isinstance(dataset, str) and len(dataset) == 0:
            return {"instrument": "", "exptype": "", "filter": ""}
        try:
            meta, _ = step_class._get_crds_parameters(dataset)
        except Exception as exc:  # unreadable input: the step itself will say why
            log.debug("No metadata for parameter lookup (%s)", exc)
    out = {}
    for name, key in (
        ("instrument", "meta.instrument.name"),
        ("exptype", "meta.exposure.type"),
        ("filter", "meta.instrument.filter"),
    ):
        value = _flat_get(meta, key) if meta is not None else None
        out[name] = str(value).strip().lower() if value not in (None, "") else ""
    return out


def find_parameter_files(alias, metadata, *, user_dir=None) -> list[Path]:
    """Parameter files that apply, in the order they are to be merged.

    Parameters
    ----------
    alias : str
        The step's class alias (e.g. ``stmatch_skymatch``).
    metadata : dict
        Output of :func:`input_metadata`.
    user_dir : str or Path, optional
        Overrides ``STMATCH_PARS_DIR``.
    """
    instrument = metadata.get("instrument", "")
    if not instrument:
        return []
    names = [f"{alias}-{instrument}.asdf"]
    for extra in (metadata.get("exptype", ""), metadata.get("filter", "")):
        if extra:
            names.append(f"{alias}-{instrument}-{extra}.asdf")
    dirs = [PARS_DIR]
    user_dir = user_dir if user_dir is not None else os.environ.get("STMATCH_PARS_DIR")
    if user_dir:
        udir = Path(os.path.expandvars(os.path.expanduser(str(user_dir))))
        if not udir.is_dir():
            log.warning("STMATCH_PARS_DIR=%s is not a directory; ignored", udir)
        else:
            dirs.append(udir)
    return [d / n for d in dirs for n in names if (d / n).is_file()]


def load_parameters(step_class, dataset):
    """Merged parameters from the packaged and user parameter files for ``dataset``.

    Returns
    -------
    stpipe.config_parser.ConfigObj
        Possibly empty; never consults CRDS.
    """
    config = config_parser.ConfigObj()
    if os.environ.get("STMATCH_DISABLE_PARS", "").strip().lower() in _TRUE:
        log.info("Packaged and user parameter files disabled (STMATCH_DISABLE_PARS)")
        return config
    alias = step_class.class_alias
    if not alias:
        return config
    metadata = input_metadata(step_class, dataset)
    files = find_parameter_files(alias, metadata)
    if not files:
        log.info(
            "No parameter file for %s (instrument %r); using defaults",
            alias,
            metadata.get("instrument") or "unknown",
        )
        return config
    for path in files:
        try:
            cfg = config_parser.load_config_file(str(path))
        except Exception as exc:
            raise ValueError(f"Cannot read parameter file {path}: {exc}") from exc
        cfg.pop("class", None)
        cfg.pop("name", None)
        config_parser.merge_config(config, cfg)
        log.info("Using parameter file %s", path)
    return config

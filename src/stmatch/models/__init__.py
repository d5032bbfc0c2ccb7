"""Data models that stmatch reads and writes.

stmatch's own products are `~stdatamodels.jwst.datamodels.JwstDataModel`
subclasses validated against stmatch's schemas
(``asdf://stmatch.org/stmatch/schemas/...``). Images that stmatch processes
stay jwst's models (``ImageModel`` and so on); stmatch only adds an extra
``meta.stmatch`` record to them (see the ``stmatch_meta-1.0.0`` schema).

`open` reads either kind: it looks at the file's ``meta.model_type`` and
returns one of stmatch's classes when the type is registered in
`MODEL_CLASSES`, and otherwise leaves the file to
`stdatamodels.jwst.datamodels.open`.

This package must not import stpipe, jwst, crds, `stmatch.steps` or
`stmatch.algorithms`.
"""

import errno
import os
from pathlib import Path

import asdf
import asdf.util
from astropy.io import fits
from stdatamodels import filetype
from stdatamodels.jwst import datamodels as _jwst_datamodels

from ._base import SCHEMA_URI_PREFIX, StmatchDataModel, schema_uri
from .background_model import BACKGROUND_KINDS, SPLINE_STYLES, BackgroundModel
from .difference_image import TILES_DTYPE, DifferenceImageModel, empty_tiles
from .matching_kernel import (
    QUALITY_DTYPE,
    SUMMARY_KEYS,
    MatchingKernelModel,
    empty_quality,
    summarize_quality,
)
from .psf_model import PsfModel, read_psf_file
from .skymatch_solution import (
    IMAGES_DTYPE,
    PAIRS_DTYPE,
    SkyMatchSolutionModel,
    empty_images,
    empty_pairs,
)

__all__ = [
    "BACKGROUND_KINDS",
    "IMAGES_DTYPE",
    "MODEL_CLASSES",
    "PAIRS_DTYPE",
    "QUALITY_DTYPE",
    "SCHEMA_URI_PREFIX",
    "SPLINE_STYLES",
    "SUMMARY_KEYS",
    "TILES_DTYPE",
    "BackgroundModel",
    "DifferenceImageModel",
    "MatchingKernelModel",
    "PsfModel",
    "SkyMatchSolutionModel",
    "StmatchDataModel",
    "empty_images",
    "empty_pairs",
    "empty_quality",
    "empty_tiles",
    "open",
    "read_psf_file",
    "schema_uri",
    "summarize_quality",
]

MODEL_CLASSES = {
    "StmatchDataModel": StmatchDataModel,
    "SkyMatchSolutionModel": SkyMatchSolutionModel,
    "PsfModel": PsfModel,
    "DifferenceImageModel": DifferenceImageModel,
    "MatchingKernelModel": MatchingKernelModel,
    "BackgroundModel": BackgroundModel,
}
"""Model classes `open` returns, keyed by ``meta.model_type``.

New stmatch models add themselves here (the key is the class name, which is
what stdatamodels writes to ``meta.model_type`` / ``DATAMODL`` on save).
"""


def open(init, **kwargs):  # noqa: A001 - mirrors stdatamodels.jwst.datamodels.open
    """Open a data model, returning stmatch's classes for stmatch's products.

    Parameters
    ----------
    init : str, os.PathLike, DataModel, astropy.io.fits.HDUList, asdf.AsdfFile, or other
        - path to a FITS or ASDF file: ``meta.model_type`` is read cheaply
          (the FITS primary header's ``DATAMODL``, or the YAML tree of the
          ASDF file, without its binary blocks) and the file is opened with
          the class registered for it in `MODEL_CLASSES`; files of any other
          model type go to `stdatamodels.jwst.datamodels.open`, which
          returns jwst's classes (``ImageModel`` etc.).
        - `~stdatamodels.DataModel`: a shallow copy of the same class, as
          `stdatamodels.jwst.datamodels.open` does (closing the copy leaves
          the original open).
        - `~astropy.io.fits.HDUList` or `~asdf.AsdfFile` holding one of
          stmatch's model types: that class.
        - anything else (association JSON, a list of files, ...): passed to
          `stdatamodels.jwst.datamodels.open` unchanged.
    **kwargs
        Passed to the model constructor (or to
        `stdatamodels.jwst.datamodels.open`).

    Returns
    -------
    stdatamodels.DataModel
        The opened model.

    Raises
    ------
    FileNotFoundError
        If ``init`` is a path that does not exist.
    """
    if isinstance(init, _jwst_datamodels.JwstDataModel):
        return init.__class__(init, **kwargs)

    if isinstance(init, (str, os.PathLike)):
        path = Path(os.fspath(init))
        if not path.is_file():
            raise FileNotFoundError(
                errno.ENOENT, f"stmatch.models.open: no such file: '{path}'", str(path)
            )
        file_type = filetype.check(path)  # by extension: "fits", "asdf" or "asn"
        if file_type in ("fits", "asdf"):
            cls = MODEL_CLASSES.get(_model_type_of_file(path, file_type))
            if cls is not None:
                kwargs.pop("guess", None)
                # A str so that DataModel.on_init records meta.filename.
                return cls(str(path), **kwargs)
        return _jwst_datamodels.open(path, **kwargs)

    cls = MODEL_CLASSES.get(_model_type_of_object(init))
    if cls is not None:
        kwargs.pop("guess", None)
        return cls(init, **kwargs)
    return _jwst_datamodels.open(init, **kwargs)


def _model_type_of_file(path, file_type):
    """Read ``meta.model_type`` of a file without loading its data.

    Parameters
    ----------
    path : pathlib.Path
        An existing FITS or ASDF file.
    file_type : {"fits", "asdf"}
        Its type.

    Returns
    -------
    str or None
        The model type, or None when it is absent or the file cannot be read
        this way (stdatamodels then reports the problem).
    """
    try:
        if file_type == "fits":
            with fits.open(path, memmap=False, lazy_load_hdus=True) as hdulist:
                return _model_type_of_object(hdulist)
        tree = asdf.util.load_yaml(str(path), tagged=False)
        return _model_type_of_tree(tree)
    except Exception:  # noqa: BLE001 - any failure: let stdatamodels open it
        return None


def _model_type_of_object(init):
    """Return ``meta.model_type`` of an HDUList or AsdfFile, else None.

    Parameters
    ----------
    init : object
        Anything `open` was given.

    Returns
    -------
    str or None
        The model type.
    """
    if isinstance(init, fits.HDUList):
        value = init[0].header.get("DATAMODL") if len(init) else None
        return value if isinstance(value, str) else None
    if isinstance(init, asdf.AsdfFile):
        return _model_type_of_tree(init.tree)
    return None


def _model_type_of_tree(tree):
    """Return ``tree["meta"]["model_type"]`` if it is a string, else None.

    Parameters
    ----------
    tree : object
        An ASDF tree.

    Returns
    -------
    str or None
        The model type.
    """
    try:
        value = tree["meta"]["model_type"]
    except (KeyError, TypeError, IndexError):
        return None
    return str(value) if isinstance(value, str) else None

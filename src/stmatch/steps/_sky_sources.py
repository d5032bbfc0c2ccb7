"""Picklable pixel sources and WCS inverse for SkyMatchStep tasks on Dask.

In-process, SkyMatchStep reads pixels by borrowing models from its
``ModelLibrary``. Tasks that run elsewhere (Dask worker threads or processes)
cannot borrow from the library, so each image gets a source they can call:

:class:`FileSource`
    For a member backed by a file that holds its current content (an
    association member not yet loaded, or an ``on_disk`` library's temporary
    file): the worker opens the file itself, so only a path travels with the
    task and no worker ever holds more than the images of its own pairs.
:class:`ArraySource`
    For a model that exists only in memory (models given as a list, or a
    library already holding loaded, possibly modified models): the arrays
    themselves (shared by worker threads, pickled to worker processes).

Both give ``(data, good)`` exactly as the in-process loader does
(:func:`good_pixels`), so the results do not depend on where tasks run.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from astropy.nddata.bitmask import bitfield_to_boolean_mask

__all__ = [
    "ArraySource",
    "FileSource",
    "WcsInverse",
    "file_members",
    "fits_layout",
    "good_pixels",
]


def good_pixels(model, dqbits):
    """Boolean mask of the pixels selected by ``dqbits`` (all when no usable DQ).

    NaNs are not excluded here: the algorithm removes non-finite values itself.
    """
    return _good(model.data, model.dq, dqbits)


def _good(data, dq, dqbits):
    if dqbits is None or dq is None or np.shape(dq) != np.shape(data):
        return np.ones(np.shape(data), dtype=bool)
    return bitfield_to_boolean_mask(dq, dqbits, good_mask_value=True, dtype=bool)


class FileSource:
    """``() -> (data, good)`` of the exposure in a file, read on each call.

    Parameters
    ----------
    path : str
        Absolute path of a FITS or ASDF exposure (visible to the workers at the
        same path).
    dqbits : int or None
        Good-pixel DQ bits as returned by ``interpret_bit_flags``.
    layout : tuple, optional
        ``(data HDU, DQ HDU or None, data dtype, DQ dtype or None, shape)`` of a
        FITS file, from the model's schema and arrays (:func:`fits_layout`):
        the two HDUs are then read directly, without building the data model
        (whose metadata and WCS cost far more to parse than the pixels). When
        the file does not match, or without a layout, the file is opened as a
        data model.
    """

    def __init__(self, path, dqbits, layout=None):
        self.path = str(path)
        self.dqbits = dqbits
        self.layout = layout

    def __call__(self):
        if self.layout is not None:
            out = self._read_hdus()
            if out is not None:
                return out
        from ..models import open as open_model

        with open_model(self.path) as model:
            data = model.data
            good = good_pixels(model, self.dqbits)
        return data, good

    def _read_hdus(self):
        from astropy.io import fits

        sci, dqname, dtype, dq_dtype, shape = self.layout
        with fits.open(self.path, memmap=False) as hdul:
            names = {hdu.name for hdu in hdul}
            if sci not in names:
                return None
            data = hdul[sci].data
            dq = hdul[dqname].data if dqname is not None and dqname in names else None
        if data is None or data.shape != tuple(shape):
            return None
        data = np.asarray(data, dtype=dtype)
        if dq is not None and dq_dtype is not None:
            dq = np.asarray(dq, dtype=dq_dtype)
        return data, _good(data, dq, self.dqbits)

    def __repr__(self):
        return f"FileSource({self.path!r})"


def fits_layout(model, path):
    """The :class:`FileSource` layout of a model read from a FITS file, or None.

    Taken from the model's schema (``fits_hdu`` of ``data`` and ``dq``) and the
    arrays it holds, so that reading the HDUs gives the same arrays as opening
    the model.
    """
    if not str(path).lower().endswith((".fits", ".fit", ".fts")):
        return None
    try:
        props = model.schema["properties"]
        sci = props["data"].get("fits_hdu")
        dqname = props.get("dq", {}).get("fits_hdu")
    except (AttributeError, KeyError, TypeError):
        return None
    data = model.data
    if not sci or data is None:
        return None
    dq = model.dq if dqname else None
    return (
        str(sci),
        str(dqname) if dqname else None,
        np.asarray(data).dtype,
        None if dq is None else np.asarray(dq).dtype,
        tuple(int(n) for n in np.shape(data)),
    )


class ArraySource:
    """``() -> (data, good)`` of arrays held in memory."""

    def __init__(self, data, good):
        self.data = data
        self.good = good

    def __call__(self):
        return self.data, self.good

    def __repr__(self):
        return f"ArraySource(shape={np.shape(self.data)})"


class WcsInverse:
    """World -> pixel of a GWCS, evaluated as SkyMatchStep does in-process.

    The picklable counterpart of the inverse from ``_wcs.wcs_callables``: used
    only when the fitted inverse of an image fails its check and tasks run in
    other processes.
    """

    def __init__(self, wcs):
        self.wcs = wcs
        self._backward = None
        self._resolved = False

    def __getstate__(self):
        return {"wcs": self.wcs}

    def __setstate__(self, state):
        self.__init__(state["wcs"])

    def __call__(self, ra, dec):
        if not self._resolved:
            try:
                self._backward = self.wcs.backward_transform
            except Exception:
                self._backward = None
            self._resolved = True
        if self._backward is None:
            return self.wcs.invert(ra, dec, with_bounding_box=False)
        return self._backward(ra, dec, with_bounding_box=False)


def file_members(library) -> dict:
    """``{index: absolute path}`` of library members whose file holds their content.

    A member counts when the library has not loaded it into memory (it could
    have been modified there): an association member never borrowed, or, for an
    ``on_disk`` library, the temporary file a shelved model was written to.
    Models given in memory have no file. Call this before borrowing anything.
    """
    out = {}
    temp = getattr(library, "_temp_filenames", None) or {}
    loaded = getattr(library, "_loaded_models", None) or {}
    asn_dir = getattr(library, "_asn_dir", None)
    try:
        members = library.asn["products"][0]["members"]
    except (AttributeError, KeyError, IndexError, TypeError):
        members = ()
    for i, member in enumerate(members):
        if i in temp:
            path = Path(temp[i])
        elif i in loaded or asn_dir is None:
            continue
        else:
            name = str(member.get("expname", ""))
            if not name or urlparse(name).scheme:
                continue
            path = Path(os.path.join(asn_dir, name))
        if path.is_file():
            out[i] = str(path.resolve())
    return out

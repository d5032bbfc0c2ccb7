"""The data model of a ZOGY difference image."""

import copy
import inspect

import numpy as np
from asdf.tags.core import AsdfObject
from stdatamodels import DataModel

from ._base import StmatchDataModel, schema_uri

__all__ = ["TILES_DTYPE", "DifferenceImageModel", "empty_tiles"]

TILES_DTYPE = np.dtype(
    [
        ("y0", "<i4"),
        ("y1", "<i4"),
        ("x0", "<i4"),
        ("x1", "<i4"),
        ("yc", "<f8"),
        ("xc", "<f8"),
        ("f_d", "<f8"),
        ("f_s", "<f8"),
    ]
)
"""Column dtype of `DifferenceImageModel.tiles`, one row per tile.

The tile's result fills the inner region ``data[y0:y1, x0:x1]`` (0-based,
end exclusive); ``(yc, xc)`` is the detector position (0-based pixels) the
PSFs were evaluated at; ``f_d`` and ``f_s`` are the tile's flux zero point
F_D of D and normalisation F_S of S. Row ``i`` belongs to ``psf[i]``.
"""

# Keyword arguments of DataModel.__init__ (everything else given to
# DifferenceImageModel(...) is an array attribute).
_INIT_OPTIONS = frozenset(inspect.signature(DataModel.__init__).parameters) - {"self", "kwargs"}


def empty_tiles(n=0):
    """Return a zeroed ``tiles`` table with ``n`` rows.

    Parameters
    ----------
    n : int, optional
        Number of rows.

    Returns
    -------
    numpy.ndarray
        Structured array of dtype `TILES_DTYPE`.
    """
    return np.zeros(n, dtype=TILES_DTYPE)


class DifferenceImageModel(StmatchDataModel):
    """A ZOGY proper difference image (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27).

    A jwst image model (the ``difference_image-1.0.0`` schema extends jwst's
    ``image.schema``): ``data`` is the difference image D, and ``dq``,
    ``err``, ``var_poisson``, ``var_rnoise``, ``area``, ``meta.wcs`` and the
    rest of the jwst image metadata behave as in
    `~stdatamodels.jwst.datamodels.ImageModel`. stmatch adds:

    - ``var``: variance of ``data`` (float32 2-D, FITS ``VAR``);
    - ``score``: the proper detection statistic S, ``scorr``: the corrected
      score S_corr in units of its standard deviation (``SCORE``, ``SCORR``);
    - ``alpha`` and ``alpha_err``: PSF flux of a transient at each pixel and
      its standard deviation (``ALPHA``, ``ALPHA_ERR``);
    - ``psf``: P_D of each tile, float32 ``(n_tiles, ny, nx)``, odd-sized,
      centred and summing to one (``PSF``);
    - ``tiles``: table of dtype `TILES_DTYPE` (``TILES``);
    - ``meta.zogy``: the parameters and summary of the subtraction
      (``flux_ratio``, ``flux_ratio_err``, ``flux_ratio_source``, ``f_d``,
      ``f_s``, ``sigma_new``, ``sigma_ref``, ``sigma_source_new``,
      ``sigma_source_ref``, ``astrometric_noise_x``, ``astrometric_noise_y``,
      ``tile_size``, ``n_tiles``, ``psf_source_new``, ``psf_source_ref``,
      ``template_resampled``, ``template``, ``detection_threshold``,
      ``n_detections``, ``units``);
    - ``meta.stmatch``: stmatch provenance (``stmatch_meta-1.0.0``).

    Parameters
    ----------
    init : object, optional
        As for `~stdatamodels.DataModel`, with one difference: a model of
        another class (typically the science ``ImageModel``) gives the new
        model a deep copy of its metadata — ``meta.wcs`` included — and none
        of its arrays, so the input is never changed through the new model
        and the difference image owns its arrays. A
        ``DifferenceImageModel`` is shared shallowly, as stdatamodels does.
    **kwargs
        Options of `~stdatamodels.DataModel` and, also with a model as
        ``init``, array attributes (``data=...``, ``dq=...``, ...).
    """

    schema_url = schema_uri("difference_image", "1.0.0")
    _table_dtypes = {"tiles": TILES_DTYPE}

    def __init__(self, init=None, **kwargs):
        if isinstance(init, DataModel) and not isinstance(init, DifferenceImageModel):
            arrays = {name: kwargs.pop(name) for name in list(kwargs) if name not in _INIT_OPTIONS}
            meta = copy.deepcopy(init._instance.get("meta", {}))
            meta.pop("model_type", None)
            # An AsdfObject root, as a new AsdfFile has, so the model saves to ASDF.
            super().__init__(AsdfObject({"meta": meta}), **kwargs)
            for name, value in arrays.items():
                if value is not None:
                    setattr(self, name, value)
            return
        super().__init__(init, **kwargs)

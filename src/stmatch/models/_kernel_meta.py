"""Quality table and ``meta.psfmatch`` validation of `MatchingKernelModel`.

The quality table columns (`QUALITY_DTYPE`), their summary numbers
(`SUMMARY_KEYS`, `summarize_quality`) and the checks and conversions of the
arrays and metadata given to `MatchingKernelModel.from_arrays`.
"""

import math
import numbers

import numpy as np

QUALITY_DTYPE = np.dtype(
    [
        ("x", "<f8"),
        ("y", "<f8"),
        ("on_cell", "<u1"),
        ("aniano_d", "<f8"),
        ("w_minus", "<f8"),
        ("max_ee_difference", "<f8"),
        ("kernel_sum", "<f8"),
        ("centroid_offset", "<f8"),
        ("noise_gain", "<f8"),
    ]
)
r"""Column dtype of `MatchingKernelModel.quality`, one row per position.

``(x, y)``: detector position (0-based pixels); ``on_cell``: 1 at a cell
centre the kernel was fitted at, 0 at a position between them (``uint8``
rather than ``bool``: boolean table columns do not survive stdatamodels 6.0
I/O); ``aniano_d`` :math:`D = \sum |K \otimes S - T|` (Aniano et al. 2011,
PASP 123, 1218); ``w_minus`` :math:`W_- = \tfrac12 \sum (|K| - K) / \sum K`
(same paper; :math:`\le 0.3` very safe, :math:`\le 0.5` safe);
``max_ee_difference``: largest difference of the encircled energies of
:math:`K \otimes S` and :math:`T`; ``kernel_sum`` :math:`\sum K`;
``centroid_offset``: distance (pixels) between the centroids of
:math:`K \otimes S` and :math:`T`; ``noise_gain`` :math:`\sqrt{\sum K^2}`, the
factor by which convolution scales white noise.
"""

# Summary statistic of each quality column: (meta key, column, reduction).
_SUMMARY = (
    ("max_aniano_d", "aniano_d", np.max),
    ("max_w_minus", "w_minus", np.max),
    ("max_ee_difference", "max_ee_difference", np.max),
    ("kernel_sum_min", "kernel_sum", np.min),
    ("kernel_sum_max", "kernel_sum", np.max),
    ("max_centroid_offset", "centroid_offset", np.max),
    ("noise_gain_min", "noise_gain", np.min),
    ("noise_gain_max", "noise_gain", np.max),
)
_SPLITS = ("", "_on_cell", "_off_grid")

SUMMARY_KEYS = tuple(key + split for key, _, _ in _SUMMARY for split in _SPLITS)
"""Names of the ``meta.psfmatch`` summary numbers (see `summarize_quality`).

Each statistic exists over all quality positions (no suffix), at the fitted
cell centres (``_on_cell``) and between them (``_off_grid``).
"""

# meta.psfmatch entries accepted by from_arrays, with their kind.
_META_KINDS = {
    "method": "str",
    "kernel_size": "int",
    "spatial_order": "int",
    "domain": "floats",
    "image_shape": "ints",
    "cell_size": "int",
    "n_cells": "int",
    "kernel_sum": "float",
    "normalized": "bool",
    "padded_psf_size": "int",
    "basis_sigmas": "floats",
    "basis_degrees": "ints",
    "regularization_lambda": "float",
    "regularization": "float",
    "penalty": "str",
    "window": "str",
    "source_psf": "str",
    "target_psf": "str",
    "target_fwhm": "float",
    "deconvolution": "bool",
    "condition_number": "float",
    **{key: "float" for key in SUMMARY_KEYS},
}

_INT_MINIMUM = {"kernel_size": 1, "cell_size": 1, "padded_psf_size": 1}  # others: >= 0


def empty_quality(n=0):
    """Return a zeroed ``quality`` table with ``n`` rows.

    Parameters
    ----------
    n : int, optional
        Number of rows.

    Returns
    -------
    numpy.ndarray
        Structured array of dtype `QUALITY_DTYPE`.
    """
    return np.zeros(n, dtype=QUALITY_DTYPE)


def summarize_quality(quality):
    """Summary numbers of a quality table, as stored in ``meta.psfmatch``.

    For every statistic of `SUMMARY_KEYS` the extreme over all rows, over the
    rows with ``on_cell`` set (suffix ``_on_cell``) and over the others
    (suffix ``_off_grid``). NaN values are ignored; a statistic without any
    finite value (for example ``_off_grid`` when every row is a cell
    centre) is left out.

    Parameters
    ----------
    quality : numpy.ndarray or astropy.io.fits.FITS_rec
        Table with the columns of `QUALITY_DTYPE`.

    Returns
    -------
    dict
        ``{key: float}``, keys in the order of `SUMMARY_KEYS`.
    """
    names = {name.lower(): name for name in quality.dtype.names}
    missing = [name for name in QUALITY_DTYPE.names if name not in names]
    if missing:
        raise ValueError(f"quality table lacks the columns {missing}")
    on_cell = np.asarray(quality[names["on_cell"]]).astype(bool)
    rows = {"": np.ones_like(on_cell), "_on_cell": on_cell, "_off_grid": ~on_cell}
    out = {}
    for key, column, reduce in _SUMMARY:
        values = np.asarray(quality[names[column]], dtype=np.float64)
        for split in _SPLITS:
            chosen = values[rows[split]]
            chosen = chosen[np.isfinite(chosen)]
            if chosen.size:
                out[key + split] = float(reduce(chosen))
    return out


def _domain(value):
    """Return ``(x0, x1, y0, y1)`` as floats, checking it is a non-empty box."""
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"domain must be four numbers (x0, x1, y0, y1), got {value!r}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"domain must be four finite numbers (x0, x1, y0, y1), got {value!r}")
    x0, x1, y0, y1 = values
    if not (x1 > x0 and y1 > y0):
        raise ValueError(
            f"domain (x0, x1, y0, y1) = {tuple(values)} is empty: need x1 > x0 and y1 > y0"
        )
    return x0, x1, y0, y1


def _float_array(value, name, ndim=None):
    """Return ``value`` as a finite float64 array (a copy) of ``ndim`` dimensions."""
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a real numeric array, not {array.dtype}")
    array = np.array(array, dtype=np.float64)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} has non-finite (NaN or infinite) values")
    return array


def _check_stack(array, name):
    """Check that ``array`` is a non-empty ``(n, h, w)`` stack with odd ``h`` and ``w``."""
    if array.ndim != 3 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (n, h, w) stack, got shape {array.shape}")
    if array.shape[1] % 2 == 0 or array.shape[2] % 2 == 0:
        raise ValueError(
            f"{name} must have an odd number of rows and columns (the kernel origin on the "
            f"centre pixel), got {array.shape[1]} x {array.shape[2]}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} has non-finite (NaN or infinite) values")


def _meta_value(key, value):
    """Convert one ``meta.psfmatch`` entry to the plain Python type its schema wants."""
    kind = _META_KINDS[key]
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"meta.psfmatch.{key} must be a string, not {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"meta.psfmatch.{key} must be True or False, not {value!r}")
        return bool(value)
    if kind == "int":
        return _int(key, value)
    if kind == "float":
        return _float(key, value)
    try:
        items = list(np.ravel(np.asarray(value)))
    except (TypeError, ValueError):
        raise ValueError(f"meta.psfmatch.{key} must be a sequence of numbers") from None
    convert = _int if kind == "ints" else _float
    return [convert(key, item) for item in items]


def _int(key, value):
    minimum = _INT_MINIMUM.get(key, 0)
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, numbers.Real)
        or int(value) != value
        or int(value) < minimum
    ):
        raise ValueError(f"meta.psfmatch.{key} must be an integer >= {minimum}, not {value!r}")
    return int(value)


def _float(key, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"meta.psfmatch.{key} must be a number, not {value!r}")
    return float(value)

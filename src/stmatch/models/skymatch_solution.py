"""The data model that records the solution of a sky-matching run."""

import os
import uuid
from pathlib import Path

import numpy as np
from astropy.table import Table

from ._base import StmatchDataModel, schema_uri

__all__ = [
    "IMAGES_DTYPE",
    "PAIRS_DTYPE",
    "SkyMatchSolutionModel",
    "empty_images",
    "empty_pairs",
]

IMAGES_DTYPE = np.dtype(
    [
        ("filename", "S128"),
        ("group_id", "S128"),
        ("group_index", "<i4"),
        ("component", "<i4"),
        ("level", "<f8"),
        ("level_err", "<f8"),
        ("n_pairs", "<i4"),
        ("local_sky", "<f8"),
        ("status", "S16"),
        ("reason", "S256"),
    ]
)
"""Column dtype of `SkyMatchSolutionModel.images`, one row per input image.

Exactly the dtype the schema declares: ``filename`` and ``group_id`` are ASCII
(128 bytes), ``group_index`` the row of the image's sky group, ``component``
the connected component of the overlap graph it belongs to, ``level`` and
``level_err`` the solved sky level and its error, ``n_pairs`` the number of
pairs its group takes part in, ``local_sky`` the sky measured on the image
alone, ``status`` ``COMPLETE`` or ``SKIPPED`` (16 bytes) and ``reason`` why
(256 bytes).
"""

PAIRS_DTYPE = np.dtype(
    [
        ("image_a", "<i4"),
        ("image_b", "<i4"),
        ("group_a", "<i4"),
        ("group_b", "<i4"),
        ("npix", "<i8"),
        ("sky_a", "<f8"),
        ("sky_b", "<f8"),
        ("diff", "<f8"),
        ("diff_err", "<f8"),
        ("weight", "<f8"),
        ("residual", "<f8"),
        ("used", "u1"),
        ("reason", "S256"),
    ]
)
"""Column dtype of `SkyMatchSolutionModel.pairs`, one row per overlapping pair.

``image_a``/``image_b`` and ``group_a``/``group_b`` are row indices into
``images`` and into the sky groups, ``npix`` the number of overlap pixels,
``sky_a``/``sky_b`` the sky measured in the overlap on either side,
``diff = sky_a - sky_b`` with error ``diff_err``, ``weight`` its weight in the
fit, ``residual`` its residual after the fit, ``used`` 1 if the pair was kept
and 0 if it was rejected (``reason`` says why, 256 bytes).

``used`` is ``uint8`` rather than ``bool``: with stdatamodels 6.0 and astropy 8,
boolean table columns are corrupted (every value reads back as True) when a
table is assigned to a model or read back from FITS or ASDF. Use
``pairs["used"].astype(bool)``, or `SkyMatchSolutionModel.to_tables`, which
returns it as a boolean column.
"""

_BOOL_COLUMNS = {"pairs": ("used",)}


def empty_images(n=0):
    """Return a zeroed ``images`` table with ``n`` rows.

    Parameters
    ----------
    n : int, optional
        Number of rows.

    Returns
    -------
    numpy.ndarray
        Structured array of dtype `IMAGES_DTYPE`.
    """
    return np.zeros(n, dtype=IMAGES_DTYPE)


def empty_pairs(n=0):
    """Return a zeroed ``pairs`` table with ``n`` rows.

    Parameters
    ----------
    n : int, optional
        Number of rows.

    Returns
    -------
    numpy.ndarray
        Structured array of dtype `PAIRS_DTYPE`.
    """
    return np.zeros(n, dtype=PAIRS_DTYPE)


def _plain_table(array, dtype, bool_columns=()):
    """Turn a model table (``FITS_rec``, ndarray or None) into an astropy Table.

    Parameters
    ----------
    array : numpy.ndarray or astropy.io.fits.FITS_rec or None
        The table as stored on the model.
    dtype : numpy.dtype
        The schema dtype; gives the columns of an empty table.
    bool_columns : sequence of str, optional
        Integer flag columns to present as booleans.

    Returns
    -------
    astropy.table.Table
        Table with ``str`` columns for the ASCII columns.
    """
    if array is None:
        array = np.zeros(0, dtype=dtype)
    # Read column by column: FITS_rec applies its column conversions on field
    # access, and the copies detach the table from the model's buffers.
    columns = [np.array(array[name], dtype=dtype[name]) for name in dtype.names]
    table = Table(columns, names=dtype.names, copy=False)
    for name in bool_columns:
        table[name] = table[name].astype(bool)
    table.convert_bytestring_to_unicode()
    return table


def _jsonable(value):
    """Convert a model metadata node to plain Python containers and scalars.

    Parameters
    ----------
    value : object
        Node or value from ``model.meta``.

    Returns
    -------
    object
        ``dict``, ``list`` or scalar.
    """
    if hasattr(value, "instance"):
        value = value.instance
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class SkyMatchSolutionModel(StmatchDataModel):
    """The solution of a sky-matching run.

    Attributes follow the ``skymatch_solution-1.0.0`` schema:

    - ``meta.skymatch``: settings and counts of the run (``method``,
      ``skystat``, ``match_down``, ``subtract``, ``n_images``, ``n_groups``,
      ``n_components``, ``n_pairs``, ``n_pairs_used``, ``solver``,
      ``stmatch_version``).
    - ``meta.stmatch``: stmatch provenance (``stmatch_meta-1.0.0``).
    - ``images``: table with dtype `IMAGES_DTYPE`, FITS extension ``IMAGES``.
    - ``pairs``: table with dtype `PAIRS_DTYPE`, FITS extension ``PAIRS``.

    Build one from structured arrays::

        model = SkyMatchSolutionModel(images=images, pairs=pairs)

    where ``images`` and ``pairs`` are arrays made with `empty_images` and
    `empty_pairs` (or any array with those exact column names). Saving writes
    ``meta.model_type = "SkyMatchSolutionModel"``, so `stmatch.models.open`
    reads the file back as this class.
    """

    schema_url = schema_uri("skymatch_solution", "1.0.0")
    _table_dtypes = {"images": IMAGES_DTYPE, "pairs": PAIRS_DTYPE}

    def to_tables(self):
        """Return the two tables as astropy tables.

        Returns
        -------
        images : astropy.table.Table
            One row per image, columns of `IMAGES_DTYPE` with ``str`` text.
        pairs : astropy.table.Table
            One row per pair, columns of `PAIRS_DTYPE` with ``str`` text and
            ``used`` as ``bool``.

        Notes
        -----
        Both tables carry ``meta.skymatch`` (as a plain dict) in
        ``Table.meta["skymatch"]`` when it is set.
        """
        images = _plain_table(getattr(self, "images", None), IMAGES_DTYPE)
        pairs = _plain_table(getattr(self, "pairs", None), PAIRS_DTYPE, _BOOL_COLUMNS["pairs"])
        if self.meta.hasattr("skymatch"):
            skymatch = _jsonable(self.meta.skymatch)
            images.meta["skymatch"] = dict(skymatch)
            pairs.meta["skymatch"] = dict(skymatch)
        return images, pairs

    def write_ecsv(self, prefix):
        """Write the tables to ``<prefix>_images.ecsv`` and ``<prefix>_pairs.ecsv``.

        Each file is written to a temporary file in its destination directory
        and moved into place with `os.replace`, so a reader never sees a
        partly written file and an existing file is replaced whole.

        Parameters
        ----------
        prefix : str or os.PathLike
            Path prefix, e.g. ``"out/run1"``.

        Returns
        -------
        tuple of pathlib.Path
            The paths of the images and pairs files.
        """
        prefix = Path(prefix)
        images, pairs = self.to_tables()
        paths = []
        for kind, table in (("images", images), ("pairs", pairs)):
            path = prefix.parent / f"{prefix.name}_{kind}.ecsv"
            _write_atomic(table, path)
            paths.append(path)
        return tuple(paths)


def _write_atomic(table, path):
    """Write ``table`` as ECSV to ``path`` through a temporary file.

    Parameters
    ----------
    table : astropy.table.Table
        The table to write.
    path : pathlib.Path
        Destination.
    """
    # A unique name next to the destination (same file system, so os.replace
    # is atomic); opened with "x" so it gets the usual umask permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="") as stream:
            table.write(stream, format="ascii.ecsv")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

"""Base class for stmatch's own data models."""

import numpy as np
from stdatamodels.jwst.datamodels import JwstDataModel

from .._integration import SCHEMA_URI_PREFIX

__all__ = ["SCHEMA_URI_PREFIX", "StmatchDataModel", "schema_uri"]


def schema_uri(name, version="1.0.0"):
    """Return the URI of one of stmatch's schemas.

    Parameters
    ----------
    name : str
        Schema name, e.g. ``"skymatch_solution"``.
    version : str, optional
        Schema version.

    Returns
    -------
    str
        ``asdf://stmatch.org/stmatch/schemas/<name>-<version>``, the id the
        schema file ``src/stmatch/schemas/<name>-<version>.yaml`` is served under.
    """
    return f"{SCHEMA_URI_PREFIX}{name}-{version}"


class StmatchDataModel(JwstDataModel):
    """Base class for the data models that stmatch defines.

    A `~stdatamodels.jwst.datamodels.JwstDataModel` whose ``schema_url`` is
    one of stmatch's schemas, so ``meta.filename``, ``meta.model_type``,
    ``meta.date``, CRDS parameters and FITS/ASDF I/O behave as for jwst's
    models. The schema is looked up through asdf's resource manager: stmatch
    registers its schema folder under ``asdf://stmatch.org/stmatch/schemas/``
    via the ``asdf.resource_mappings`` entry point, and the schemas refer to
    jwst's ``core.schema`` by its full id.

    Subclasses set ``schema_url`` and register themselves in
    `stmatch.models.MODEL_CLASSES` so that `stmatch.models.open` returns them. The base
    class itself keeps jwst's ``core.schema``.
    """

    _table_dtypes = {}
    """Schema dtype of each table attribute, checked on assignment (see `__setattr__`)."""

    def __setattr__(self, attr, value):
        """Set an attribute, refusing lossy column casts into the model's tables.

        stdatamodels converts an assigned table to the schema dtype with an
        unsafe cast (a float column assigned to an int32 column is truncated
        without a word). For the tables listed in ``_table_dtypes`` this
        refuses columns whose dtype cannot be cast to the schema's with
        ``casting="same_kind"`` (text may be ``bytes`` or ``str``), before
        stdatamodels applies its own checks (column names, shape).

        Parameters
        ----------
        attr : str
            Attribute name.
        value : object
            Value to set.

        Raises
        ------
        ValueError
            If a column of a table has a dtype that would be cast lossily.
        """
        dtype = self._table_dtypes.get(attr)
        if dtype is not None:
            _check_table_dtype(attr, value, dtype)
        super().__setattr__(attr, value)


def _check_table_dtype(attr, value, dtype):
    """Refuse a structured array whose columns would be cast lossily to ``dtype``.

    Parameters
    ----------
    attr : str
        Table name, for the message.
    value : object
        The value being assigned; only structured arrays are checked.
    dtype : numpy.dtype
        The schema dtype of the table.

    Raises
    ------
    ValueError
        If a column's dtype cannot be cast to the schema's with
        ``casting="same_kind"``.
    """
    given = getattr(value, "dtype", None)
    if given is None or given.names is None:
        return
    by_lower = {name.lower(): name for name in given.names}
    text = ("S", "U")
    for name in dtype.names:
        source = by_lower.get(name.lower())
        if source is None:
            continue  # stdatamodels reports missing columns
        have, want = given[source], dtype[name]
        if have.kind in text and want.kind in text:
            continue
        if not np.can_cast(have, want, casting="same_kind"):
            raise ValueError(
                f"{attr}: column {name!r} has dtype {have}, which cannot be cast to the "
                f"schema's {want} without loss; build the table with the model's dtype"
            )

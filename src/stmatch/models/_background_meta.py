"""Validation of the arrays and ``meta.bgmatch`` entries of `BackgroundModel`."""

import math
import numbers

import numpy as np

# meta.bgmatch entries and their kind (kind, order, domain, image_shape, styles are arguments)
_META_KINDS = {
    "bin_size": "int",
    "statistic": "str",
    "weighted": "bool",
    "actions": "strs",
    "exposure": "str",
    "reference": "str",
    "is_reference": "bool",
    "resampled": "bool",
    "status": "str",
    "flagged": "bool",
    "reason": "str",
    "mean_model": "float?",
    "flux_scale": "float",
    "fit_rms": "float?",
    "matched_mse": "float?",
    "diffim_var": "float?",
    "mse_ratio": "float?",
}


def _n_terms(order):
    if order < 0:
        raise ValueError(f"a polynomial needs an order >= 0, got {order}")
    return (order + 1) * (order + 2) // 2


def _array(value, shape, name, *, finite=True, dtype=np.float64):
    """``value`` as a new array of ``dtype`` and ``shape`` (``None`` in ``shape``: any size).

    A missing ``value`` is allowed only where the expected array is empty.
    """
    want = tuple(0 if s is None else int(s) for s in shape)
    if value is None:
        if any(want):
            raise ValueError(f"{name} is required (expected shape {want})")
        return np.zeros(want, dtype=dtype)
    arr = np.array(value, dtype=np.float64)
    ok = arr.ndim == len(shape) and all(
        s is None or a == s for a, s in zip(arr.shape, shape, strict=True)
    )
    if not ok:
        raise ValueError(f"{name} has shape {arr.shape}, expected {want}")
    if finite and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite values")
    if np.dtype(dtype).kind == "i":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} has non-finite values")
        return arr.astype(dtype)
    return arr.astype(dtype, copy=False)


def _domain(value):
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"domain must be four numbers (x0, x1, y0, y1), got {value!r}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"domain must be four finite numbers (x0, x1, y0, y1), got {value!r}")
    x0, x1, y0, y1 = values
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"domain {tuple(values)} is empty: need x1 > x0 and y1 > y0")
    return x0, x1, y0, y1


def _meta_value(key, value):
    kind = _META_KINDS[key]
    if kind == "str":
        return str(value)
    if kind == "strs":
        return [str(v) for v in value]
    if kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"meta.bgmatch.{key} must be True or False, not {value!r}")
        return bool(value)
    if kind == "int":
        if isinstance(value, (bool, np.bool_)) or int(value) != value:
            raise ValueError(f"meta.bgmatch.{key} must be an integer, not {value!r}")
        return int(value)
    if value is None:
        if kind == "float?":
            return None
        raise ValueError(f"meta.bgmatch.{key} must be a number")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"meta.bgmatch.{key} must be a number, not {value!r}")
    value = float(value)
    if not math.isfinite(value):
        if kind == "float?":
            return None
        raise ValueError(f"meta.bgmatch.{key} must be finite, not {value!r}")
    return value

"""WCS helpers shared by the steps."""

from __future__ import annotations

__all__ = ["wcs_callables"]


def wcs_callables(model):
    """Pixel → world and world → pixel callables of a model (raising if no WCS)."""
    wcs = model.meta.wcs
    name = model.meta.filename

    if wcs is None:

        def missing(*_):
            raise ValueError(f"{name} has no WCS (meta.wcs)")

        return missing, missing

    # Evaluate the transforms directly: building them on every call (as wcs(...) and
    # wcs.invert(...) do) costs more than the arithmetic for the small arrays we use.
    # The inverse is built only if the algorithm needs it (it usually fits its own).
    try:
        forward = wcs.forward_transform
    except Exception:
        forward = None
    backward = []

    def fwd(x, y):
        if forward is None:
            return wcs(x, y, with_bounding_box=False)
        return forward(x, y, with_bounding_box=False)

    def inv(ra, dec):
        if not backward:
            try:
                backward.append(wcs.backward_transform)
            except Exception:
                backward.append(None)
        if backward[0] is None:
            return wcs.invert(ra, dec, with_bounding_box=False)
        return backward[0](ra, dec, with_bounding_box=False)

    return fwd, inv

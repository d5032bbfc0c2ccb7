"""Deterministic synthetic JWST-like imaging data for tests, demos and benchmarks.

Everything is generated from a ``seed`` with `numpy.random.default_rng`, so
the same arguments always give the same arrays.

- `make_tan_wcs`: gnomonic imaging WCS (optionally with radial distortion)
  that survives FITS/ASDF round trips in a datamodel.
- `make_scene` / `Scene`: point sources and large diffuse sources on the sky.
- `render_image`: render a scene through a WCS into an ``ImageModel``.
- `make_image`: one image with its own scene.
- `make_mosaic` / `Mosaic`: a grid of overlapping exposures (optionally
  multi-detector, optionally split into disconnected sub-mosaics) with the
  true sky levels.
- `write_mosaic`: write a mosaic and a level-3 association for
  ``jwst.datamodels.ModelLibrary``.
"""

from ._mosaic import Mosaic, make_mosaic, write_mosaic
from ._render import make_image, render_image
from ._scene import Scene, make_scene
from ._wcs import make_tan_wcs

__all__ = [
    "Mosaic",
    "Scene",
    "make_image",
    "make_mosaic",
    "make_scene",
    "make_tan_wcs",
    "render_image",
    "write_mosaic",
]

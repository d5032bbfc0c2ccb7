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
- `render_point_sources` / `psf_stamp`: noise-free point sources with an
  analytic (Gaussian or Moffat) or given PSF at sub-pixel positions, and the
  matching centred PSF stamp.
- `make_zogy_pair` / `ZogyPair`: a science/template pair of one star field for
  ZOGY image subtraction, with transients, PSFs, noise levels and truth
  catalogues (optionally with the template on another pixel grid).
- `inject_transients`: add point sources to a copy of an image model.
- `write_zogy_pair`: write a pair, its PSF stamps and an association with
  ``science`` and ``template`` members.
- `make_psfmatch_exposure` / `PsfMatchExposure`: an exposure whose PSF FWHM
  varies smoothly over the detector (`FwhmField`), with its PSF grid as a
  ``PsfModel``, the truth catalogue and a wider target FWHM, for PSF matching.
- `write_psfmatch_exposure`: write such an exposure, its PSF grid and a
  Gaussian target PSF.
- `make_bgmatch_exposures` / `BackgroundMatchSet`: exposures of one field that
  differ by known smooth background offsets (planes or quadratic surfaces) and
  share stars and diffuse light, optionally on shifted/rotated pixel grids.
- `write_bgmatch_exposures`: write them and a level-3 association.
- `make_diffim_set` / `DiffimSet`: a template and several science exposures of
  one field, on shifted grids, with different PSFs and smooth backgrounds and
  transients injected at known positions and fluxes, for difference imaging.
- `write_diffim_association`: write such a set, its PSF stamps, the truth table
  and an association with ``science`` and ``template`` members.
- `make_image3_mosaic` / `write_image3_association`: a mosaic whose WCS goes
  through the telescope frame (``v2v3``) with matching ``wcsinfo``, as jwst's
  ``calwebb_image3`` steps expect, and an image3 association (with synthetic
  aperture-correction and AB-Vega reference files for ``source_catalog``);
  `jwst_like_wcs` gives such a WCS for any of our mosaic WCS.
"""

from ._bgmatch import BackgroundMatchSet, make_bgmatch_exposures, write_bgmatch_exposures
from ._diffim import DiffimSet, make_diffim_set, write_diffim_association
from ._image3 import jwst_like_wcs, make_image3_mosaic, write_image3_association
from ._mosaic import Mosaic, make_mosaic, write_mosaic
from ._points import inject_transients, psf_stamp, render_point_sources
from ._psfmatch import (
    FwhmField,
    PsfMatchExposure,
    make_psfmatch_exposure,
    write_psfmatch_exposure,
)
from ._render import make_image, render_image
from ._scene import Scene, make_scene
from ._wcs import make_tan_wcs
from ._zogy import ZogyPair, make_zogy_pair
from ._zogy_io import write_zogy_pair

__all__ = [
    "BackgroundMatchSet",
    "DiffimSet",
    "FwhmField",
    "Mosaic",
    "PsfMatchExposure",
    "Scene",
    "ZogyPair",
    "inject_transients",
    "make_bgmatch_exposures",
    "jwst_like_wcs",
    "make_diffim_set",
    "make_image3_mosaic",
    "make_image",
    "make_mosaic",
    "make_psfmatch_exposure",
    "make_scene",
    "make_tan_wcs",
    "make_zogy_pair",
    "psf_stamp",
    "render_image",
    "render_point_sources",
    "write_bgmatch_exposures",
    "write_diffim_association",
    "write_image3_association",
    "write_mosaic",
    "write_psfmatch_exposure",
    "write_zogy_pair",
]

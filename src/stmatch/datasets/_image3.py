r"""Synthetic level-3 imaging associations that jwst's ``calwebb_image3`` can run.

`make_image3_mosaic` makes a `Mosaic` (see `make_mosaic`) whose images carry a
JWST-like WCS: pixels go through the telescope's ``v2v3`` frame (arcsec) before
the sky, as in JWST products, which ``tweakreg`` requires. The V2/V3 to sky
transform is the attitude rotation of the telescope: the unit vector

.. math::

    \hat u(V_2, V_3) = (\cos V_3 \cos V_2,\ \cos V_3 \sin V_2,\ \sin V_3)

is turned by the rotations :math:`R_z(V_{2,\mathrm{ref}})`,
:math:`R_y(-V_{3,\mathrm{ref}})`, :math:`R_x(\mathrm{ROLL_{REF}})`,
:math:`R_y(\delta_\mathrm{ref})` and :math:`R_z(-\alpha_\mathrm{ref})` (in that
order) into the celestial unit vector, so that :math:`(V_{2,\mathrm{ref}},
V_{3,\mathrm{ref}})` lands on :math:`(\alpha_\mathrm{ref}, \delta_\mathrm{ref})`.
The linear pixel to V2/V3 map :math:`M = J^{-1} C` (with :math:`C` the CD matrix of
the gnomonic WCS the image was rendered through and :math:`J` the Jacobian of the
tangent-plane coordinates with respect to V2/V3 at the reference point) makes the
new WCS agree with the old one to third order in the field angle (to about 1e-9
arcsec for these images), so the pixels need not be rendered again.

`write_image3_association` writes the images, a level-3 association and
(optionally) synthetic ``APCORR`` and ``ABVEGAOFFSET`` reference files, exact for
the images' Gaussian PSF, that let ``source_catalog`` run without a reference-file
server (``override_apcorr``, ``override_abvegaoffset``).
"""

import math
from pathlib import Path

import numpy as np

from ._mosaic import make_mosaic, write_mosaic
from ._scene import _FWHM_TO_SIGMA

__all__ = ["jwst_like_wcs", "make_image3_mosaic", "write_image3_association"]

# encircled-energy fractions of the synthetic APCORR table (jwst accepts 20..80 %)
_EE_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
_SKY_ANNULUS_SIGMA = (6.0, 9.0)  # sky annulus of the APCORR table, in PSF sigmas
_JACOBIAN_STEP = 1.0  # arcsec, finite-difference step of the V2/V3 Jacobian
_STARS_PER_128PX = 100  # default star density: stars per 128 x 128 pixels


def _named(transform, name):
    """First sub-model of ``transform`` called ``name`` (None when absent)."""
    for model in transform.traverse_postorder():
        if model.name == name:
            return model
    return None


def _v23_to_sky(v2_ref, v3_ref, roll_ref, ra_ref, dec_ref):
    """
    Transform from (V2, V3) in arcsec to (RA, Dec) in degrees.

    Parameters
    ----------
    v2_ref, v3_ref : float
        Reference point in the V2/V3 frame (arcsec).
    roll_ref : float
        Roll angle (degrees) at the reference point.
    ra_ref, dec_ref : float
        Sky position (degrees) of the reference point.

    Returns
    -------
    astropy.modeling.Model
        Invertible two-input, two-output model named ``v23tosky``.
    """
    from astropy.modeling.models import RotationSequence3D, Scale
    from gwcs.geometry import CartesianToSpherical, SphericalToCartesian

    rotation = RotationSequence3D(
        [v2_ref / 3600.0, -v3_ref / 3600.0, roll_ref, dec_ref, -ra_ref], axes_order="zyxyz"
    )
    model = (
        (Scale(1.0 / 3600.0) & Scale(1.0 / 3600.0))
        | SphericalToCartesian(wrap_lon_at=180)
        | rotation
        | CartesianToSpherical(wrap_lon_at=360)
    )
    model.name = "v23tosky"
    return model


def _tangent_plane(ra, dec, ra0, dec0):
    """Gnomonic coordinates (degrees; xi east, eta north) about ``(ra0, dec0)``."""
    r, d = np.radians(ra), np.radians(dec)
    r0, d0 = math.radians(ra0), math.radians(dec0)
    cosc = math.sin(d0) * np.sin(d) + math.cos(d0) * np.cos(d) * np.cos(r - r0)
    xi = np.cos(d) * np.sin(r - r0) / cosc
    eta = (math.cos(d0) * np.sin(d) - math.sin(d0) * np.cos(d) * np.cos(r - r0)) / cosc
    return np.degrees(xi), np.degrees(eta)


def jwst_like_wcs(wcs, *, v2_ref=0.0, v3_ref=0.0, roll_ref=None):
    r"""
    Re-express a WCS from `make_tan_wcs` through a JWST-like ``v2v3`` frame.

    The new WCS has the frames ``detector`` → ``v2v3`` (arcsec) → ``world``:
    pixel offsets from the reference pixel (after the radial distortion, when the
    WCS has one) are mapped linearly to V2/V3, which the telescope attitude
    rotation (module docstring) maps to the sky. Positions agree with ``wcs`` to
    third order in the field angle.

    Parameters
    ----------
    wcs : gwcs.wcs.WCS
        A two-frame gnomonic WCS made by `make_tan_wcs`.
    v2_ref, v3_ref : float, optional
        V2/V3 (arcsec) of the reference pixel.
    roll_ref : float, optional
        Roll angle (degrees) of the attitude rotation; default: the position
        angle of the detector +y axis, so that V3 runs about along +y.

    Returns
    -------
    wcs : gwcs.wcs.WCS
        The new WCS (same bounding box and pixel shape).
    wcsinfo : dict
        ``v2_ref``, ``v3_ref``, ``roll_ref``, ``ra_ref`` and ``dec_ref`` for the
        JWST ``meta.wcsinfo`` block.

    Raises
    ------
    ValueError
        If ``wcs`` is not a gnomonic WCS made by `make_tan_wcs`.
    """
    from astropy import units as u
    from astropy.modeling.models import AffineTransformation2D, Shift
    from gwcs import coordinate_frames as cf
    from gwcs import wcs as gwcs_wcs

    transform = wcs.forward_transform
    parts = {
        name: _named(transform, name)
        for name in ("crpix1", "crpix2", "cd_matrix", "radial_distortion")
    }
    celestial = [m for m in transform.traverse_postorder() if type(m).__name__.startswith("Rotate")]
    if parts["crpix1"] is None or parts["cd_matrix"] is None or len(celestial) != 1:
        raise ValueError("jwst_like_wcs needs a gnomonic WCS made by make_tan_wcs")
    ra_ref = float(celestial[0].lon.value)
    dec_ref = float(celestial[0].lat.value)
    cd = np.asarray(parts["cd_matrix"].matrix.value, dtype=float)  # degrees per pixel
    if roll_ref is None:
        roll_ref = math.degrees(math.atan2(cd[0, 1], cd[1, 1])) % 360.0
    v2_ref, v3_ref, roll_ref = float(v2_ref), float(v3_ref), float(roll_ref)
    to_sky = _v23_to_sky(v2_ref, v3_ref, roll_ref, ra_ref, dec_ref)

    # Jacobian of the tangent-plane coordinates (degrees) w.r.t. V2/V3 (arcsec)
    h = _JACOBIAN_STEP
    ra, dec = to_sky(
        np.array([v2_ref + h, v2_ref - h, v2_ref, v2_ref]),
        np.array([v3_ref, v3_ref, v3_ref + h, v3_ref - h]),
    )
    xi, eta = _tangent_plane(ra, dec, ra_ref, dec_ref)
    jac = np.array(
        [
            [(xi[0] - xi[1]) / (2 * h), (xi[2] - xi[3]) / (2 * h)],
            [(eta[0] - eta[1]) / (2 * h), (eta[2] - eta[3]) / (2 * h)],
        ]
    )
    matrix = np.linalg.solve(jac, cd)  # arcsec per pixel

    to_v23 = parts["crpix1"].copy() & parts["crpix2"].copy()
    if parts["radial_distortion"] is not None:
        to_v23 = to_v23 | parts["radial_distortion"].copy()
    to_v23 = (
        to_v23
        | AffineTransformation2D(matrix=matrix, translation=[0.0, 0.0], name="pixel_to_v23")
        | (Shift(v2_ref, name="v2_ref") & Shift(v3_ref, name="v3_ref"))
    )
    detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    v2v3 = cf.Frame2D(
        name="v2v3", axes_order=(0, 1), axes_names=("v2", "v3"), unit=(u.arcsec, u.arcsec)
    )
    world = wcs.output_frame
    new = gwcs_wcs.WCS([(detector, to_v23), (v2v3, to_sky), (world, None)])
    new.bounding_box = wcs.bounding_box
    new.pixel_shape = wcs.pixel_shape
    wcsinfo = {
        "v2_ref": v2_ref,
        "v3_ref": v3_ref,
        "roll_ref": roll_ref,
        "ra_ref": ra_ref,
        "dec_ref": dec_ref,
    }
    return new, wcsinfo


def make_image3_mosaic(
    nx=2,
    ny=2,
    *,
    shape=(128, 128),
    overlap=0.3,
    n_stars=None,
    v2_ref=0.0,
    v3_ref=0.0,
    moving_target=False,
    seed=0,
    **mosaic_kwargs,
):
    """
    Make a mosaic that jwst's ``calwebb_image3`` (and ``stmatch_image3``) can run.

    The images are those of `make_mosaic` (same arguments, same pixels, same
    truth), with a JWST-like WCS (`jwst_like_wcs`: ``detector`` → ``v2v3`` →
    ``world``, needed by ``tweakreg``) and the matching ``meta.wcsinfo``
    (``v2_ref``, ``v3_ref``, ``roll_ref``, ``ra_ref``, ``dec_ref``), full-frame
    ``meta.subarray.name`` and, for NIRISS, the pupil ``CLEARP`` (what
    ``source_catalog`` selects its aperture corrections on).

    The default star density (about 100 stars per 128 x 128 pixels of the
    mosaic, log-uniform fluxes of 50 to 5000, a 2-pixel FWHM) lets ``tweakreg``
    align the default 2 x 2 mosaic with ``separation=0.3``, ``tolerance=0.2``,
    ``use2dhist=False``, ``expand_refcat=True`` and ``minobj=10``. Its defaults
    are made for 2048-pixel detectors: stars closer to each other than
    ``separation`` (1 arcsec, 17 pixels here) are left out of the matching, which
    leaves too few in overlaps of small images.

    Parameters
    ----------
    nx, ny : int, optional
        Exposures along detector x and y.
    shape : tuple of int, optional
        Shape ``(ny, nx)`` of one image.
    overlap : float, optional
        Fractional overlap of neighbouring exposures.
    n_stars : int, optional
        Number of stars in the scene; default as above.
    v2_ref, v3_ref : float, optional
        V2/V3 (arcsec) of every image's reference pixel.
    moving_target : bool, optional
        Mark the exposures as a moving-target observation (``meta.target.type =
        'moving'``, ``meta.wcsinfo.mt_ra``/``mt_dec`` at the mosaic centre for
        every exposure: a target at rest), so that ``calwebb_image3`` runs
        ``assign_mtwcs`` instead of ``tweakreg``; the frame it adds is then the
        identity.
    seed : int, optional
        Seed of everything.
    **mosaic_kwargs
        Further arguments of `make_mosaic` (``sky_levels``, ``sky_range``,
        ``noise``, ``n_diffuse``, ``detectors_per_group``, ``rotation``,
        ``distortion``, ...).

    Returns
    -------
    Mosaic
        The models (with the new WCS) and the truth.
    """
    if n_stars is None:
        ny_img, nx_img = (int(s) for s in shape)
        area = (nx_img * (nx * (1 - overlap) + overlap) + 40) * (
            ny_img * (ny * (1 - overlap) + overlap) + 40
        )
        n_stars = int(round(_STARS_PER_128PX * area / 128**2))
    mosaic = make_mosaic(
        nx, ny, shape=shape, overlap=overlap, n_stars=n_stars, seed=seed, **mosaic_kwargs
    )
    ra0 = float(mosaic_kwargs.get("ra", 150.0))
    dec0 = float(mosaic_kwargs.get("dec", 2.0))
    for model in mosaic.models:
        new, info = jwst_like_wcs(model.meta.wcs, v2_ref=v2_ref, v3_ref=v3_ref)
        model.meta.wcs = new
        wcsinfo = model.meta.wcsinfo
        for key in ("v2_ref", "v3_ref", "roll_ref", "ra_ref", "dec_ref"):
            setattr(wcsinfo, key, info[key])
        # full frame; NIRISS imaging through the clear pupil position (as in its
        # products): the aperture corrections of source_catalog select on them
        model.meta.subarray.name = "FULL"
        if model.meta.instrument.name == "NIRISS" and model.meta.instrument.pupil is None:
            model.meta.instrument.pupil = "CLEARP"
        if moving_target:
            model.meta.target.type = "MOVING"
            wcsinfo.mt_ra = ra0
            wcsinfo.mt_dec = dec0
    return mosaic


def _apcorr_model(instrument, filter_name, pupil, fwhm_pixels, exptype):
    """Synthetic APCORR reference model, exact for a circular Gaussian PSF."""
    from astropy.table import Table
    from stdatamodels.jwst import datamodels

    sigma = float(fwhm_pixels) * _FWHM_TO_SIGMA
    ee = np.array(_EE_FRACTIONS, dtype=np.float32)
    # encircled energy of a circular Gaussian: EE(r) = 1 - exp(-r^2 / (2 sigma^2))
    radius = sigma * np.sqrt(-2.0 * np.log(1.0 - ee.astype(float)))
    n = ee.size
    # the column order of the reference file schemas; MIRI selects by subarray
    second = ("subarray", "FULL") if instrument == "MIRI" else ("pupil", pupil)
    table = Table(
        {
            "filter": [filter_name] * n,
            second[0]: [second[1]] * n,
            "eefraction": ee,
            "radius": radius.astype(np.float32),
            "apcorr": (1.0 / ee.astype(float)).astype(np.float32),
            "skyin": np.full(n, _SKY_ANNULUS_SIGMA[0] * sigma, np.float32),
            "skyout": np.full(n, _SKY_ANNULUS_SIGMA[1] * sigma, np.float32),
        }
    )
    classes = {
        "NIRCAM": datamodels.NrcImgApcorrModel,
        "NIRISS": datamodels.NisImgApcorrModel,
        "MIRI": datamodels.MirImgApcorrModel,
    }
    model = classes[instrument]()
    model.apcorr_table = table.as_array()
    model.meta.reftype = "apcorr"
    model.meta.exposure.type = exptype
    return model


def _abvega_model(instrument, filter_name, pupil, offset):
    """Synthetic ABVEGAOFFSET reference model (one row)."""
    from astropy.table import Table
    from stdatamodels.jwst.datamodels import ABVegaOffsetModel

    columns = {"filter": [filter_name], "abvega_offset": [float(offset)]}
    if instrument != "MIRI":
        columns["pupil"] = [pupil]
    model = ABVegaOffsetModel()
    model.abvega_offset = Table(columns)
    model.meta.reftype = "abvegaoffset"
    return model


def _reference_meta(model, instrument, description):
    meta = model.meta
    meta.telescope = "JWST"
    meta.instrument.name = instrument
    meta.author = "stmatch.datasets"
    meta.pedigree = "DUMMY"
    meta.useafter = "2022-01-01T00:00:00"
    meta.description = description


def write_image3_association(
    mosaic,
    directory,
    *,
    asn_name="image3_asn.json",
    product_name="image3",
    references=True,
    abvega_offset=0.0,
):
    """
    Write a mosaic, its level-3 association and synthetic reference files.

    Parameters
    ----------
    mosaic : Mosaic
        Output of `make_image3_mosaic` (or of `make_mosaic`, for the steps that do
        not need the ``v2v3`` frame).
    directory : str or os.PathLike
        Output directory (created if needed).
    asn_name : str, optional
        File name of the association.
    product_name : str, optional
        Name of the association product (``<product_name>_i2d.fits`` for the
        resampled image of ``calwebb_image3``).
    references : bool, optional
        Also write ``synthetic_apcorr.fits`` and ``synthetic_abvegaoffset.asdf``
        for ``source_catalog``: aperture radii and corrections exact for the
        images' circular Gaussian PSF (encircled energy
        :math:`1 - e^{-r^2 / 2\\sigma^2}`, correction :math:`1/EE`, sky annulus
        from 6 to 9 :math:`\\sigma`) for their instrument, filter and pupil.
        They are test data, not calibration: never use them on real data.
    abvega_offset : float, optional
        The AB − Vega magnitude offset written to the ABVEGAOFFSET file.

    Returns
    -------
    dict
        `pathlib.Path` values for ``"asn"``, ``"directory"``, ``"apcorr"`` and
        ``"abvegaoffset"`` (None without ``references``), and ``"members"``
        (list of the image paths).
    """
    directory = Path(directory)
    asn = write_mosaic(mosaic, directory, asn_name=asn_name, product_name=product_name)
    members = [directory / Path(m.meta.filename).with_suffix(".fits").name for m in mosaic]
    out = {
        "asn": asn,
        "directory": directory,
        "members": members,
        "apcorr": None,
        "abvegaoffset": None,
    }
    if not references:
        return out
    first = mosaic.models[0]
    instrument = str(first.meta.instrument.name).upper()
    filter_name = str(first.meta.instrument.filter)
    pupil = str(first.meta.instrument.pupil or "CLEAR")
    pixel_scale = math.sqrt(float(first.meta.photometry.pixelarea_arcsecsq))
    fwhm_pixels = float(mosaic.scene.psf_fwhm) / pixel_scale
    apcorr = _apcorr_model(
        instrument, filter_name, pupil, fwhm_pixels, str(first.meta.exposure.type)
    )
    _reference_meta(apcorr, instrument, "Synthetic aperture corrections for a Gaussian PSF")
    abvega = _abvega_model(instrument, filter_name, pupil, abvega_offset)
    _reference_meta(abvega, instrument, "Synthetic AB to Vega offset")
    out["apcorr"] = directory / "synthetic_apcorr.fits"
    out["abvegaoffset"] = directory / "synthetic_abvegaoffset.asdf"
    apcorr.save(str(out["apcorr"]))
    abvega.save(str(out["abvegaoffset"]))
    return out

"""Rendering of synthetic scenes into JWST-like calibrated images."""

import math

import numpy as np

from ._scene import (
    _DIFFUSE_FULL_GRID_MAX,
    _DIFFUSE_GRID_STEP,
    _EXPTIME,
    _FWHM_TO_SIGMA,
    _INSTRUMENT_DEFAULTS,
    _MJD_START,
    _STAMP_NSIGMA,
    Scene,
    _unit_vectors,
    make_scene,
)
from ._wcs import _local_linear_wcs, _s_region, _tan_fits_keywords, make_tan_wcs

__all__ = ["make_image", "render_image"]


def _angular_distance_sq(ra, dec, ra0, dec0):
    """
    Squared angular distance (arcsec squared) between positions and one point.

    Parameters
    ----------
    ra, dec : numpy.ndarray
        Positions in degrees.
    ra0, dec0 : float
        Reference point in degrees.

    Returns
    -------
    numpy.ndarray
        Squared great-circle distances in arcsec squared.
    """
    # haversine: robust for small separations
    r, d = np.radians(ra), np.radians(dec)
    r0, d0 = math.radians(ra0), math.radians(dec0)
    hav = np.sin((d - d0) / 2.0) ** 2 + np.cos(d) * math.cos(d0) * np.sin((r - r0) / 2.0) ** 2
    dist = 2.0 * np.arcsin(np.sqrt(np.clip(hav, 0.0, 1.0)))
    return (np.degrees(dist) * 3600.0) ** 2


def _diffuse_at(scene, ra, dec):
    """
    Evaluate the diffuse sources of ``scene`` at world positions.

    Parameters
    ----------
    scene : Scene
        Scene.
    ra, dec : numpy.ndarray
        Positions in degrees.

    Returns
    -------
    numpy.ndarray
        Surface brightness (data units per pixel).
    """
    out = np.zeros(np.shape(ra))
    for r0, d0, amp, sig in zip(
        scene.diffuse_ra,
        scene.diffuse_dec,
        scene.diffuse_amplitude,
        scene.diffuse_sigma,
        strict=True,
    ):
        out += amp * np.exp(-0.5 * _angular_distance_sq(ra, dec, r0, d0) / sig**2)
    return out


def _render_diffuse(scene, wcs, shape, pixel_scale):
    """
    Render the diffuse component on the pixel grid.

    Uses the exact WCS on every pixel for small images and on a coarse grid
    (every ``_DIFFUSE_GRID_STEP`` pixels, or every ``sigma / 10`` for compact
    sources) with bilinear interpolation otherwise.

    Parameters
    ----------
    scene : Scene
        Scene.
    wcs : gwcs.wcs.WCS
        Image WCS.
    shape : tuple of int
        ``(ny, nx)``.
    pixel_scale : float
        Arcsec per pixel at the image centre.

    Returns
    -------
    numpy.ndarray
        Float64 image of the diffuse light.
    """
    ny, nx = shape
    transform = wcs.forward_transform
    if ny * nx <= _DIFFUSE_FULL_GRID_MAX:
        y, x = np.mgrid[0:ny, 0:nx].astype(float)
        ra, dec = transform(x, y)
        return _diffuse_at(scene, ra, dec)

    # bilinear error ~ step**2 / (8 sigma**2) of the peak: refine for compact sources
    sigma_px = float(np.min(scene.diffuse_sigma)) / pixel_scale
    step = min(_DIFFUSE_GRID_STEP, max(1.0, sigma_px / 10.0))
    gx = np.linspace(0.0, nx - 1.0, max(2, math.ceil((nx - 1) / step) + 1))
    gy = np.linspace(0.0, ny - 1.0, max(2, math.ceil((ny - 1) / step) + 1))
    ra, dec = transform(*np.meshgrid(gx, gy))
    grid = _diffuse_at(scene, ra, dec)  # (len(gy), len(gx))

    def weights(n, nodes):
        pos = np.arange(n) * (len(nodes) - 1) / (n - 1.0)
        idx = np.minimum(pos.astype(int), len(nodes) - 2)
        return idx, pos - idx

    ix, tx = weights(nx, gx)
    iy, ty = weights(ny, gy)
    rows = grid[:, ix] * (1.0 - tx) + grid[:, ix + 1] * tx  # (len(gy), nx)
    return rows[iy] * (1.0 - ty)[:, None] + rows[iy + 1] * ty[:, None]


_erf = np.frompyfunc(math.erf, 1, 1)


def _render_stars(scene, wcs, shape, pixel_scale, centre, image):
    """
    Add pixel-integrated circular Gaussian point sources to ``image`` in place.

    Parameters
    ----------
    scene : Scene
        Scene.
    wcs : gwcs.wcs.WCS
        Image WCS (its backward transform is used without bounding box).
    shape : tuple of int
        ``(ny, nx)``.
    pixel_scale : float
        Arcsec per pixel at the image centre.
    centre : tuple of float
        ``(ra, dec)`` of the image centre, degrees.
    image : numpy.ndarray
        Float64 image to which the stars are added.
    """
    if scene.n_stars == 0:
        return
    ny, nx = shape
    sigma = scene.psf_fwhm * _FWHM_TO_SIGMA / pixel_scale
    half = int(math.ceil(_STAMP_NSIGMA * sigma)) + 1
    margin = half + 1.0

    # cheap pre-selection on the sphere: within the image circumcircle plus margin
    limit = (0.5 * math.hypot(nx, ny) + margin) * pixel_scale * 1.2 + 1.0  # arcsec
    cos_limit = math.cos(math.radians(limit / 3600.0))
    sel = (_unit_vectors(scene.ra, scene.dec) @ _unit_vectors(*centre)) > cos_limit
    if not np.any(sel):
        return
    ra, dec, flux = scene.ra[sel], scene.dec[sel], scene.flux[sel]
    x, y = wcs.backward_transform(ra, dec)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = (
        np.isfinite(x)
        & np.isfinite(y)
        & (x > -0.5 - margin)
        & (x < nx - 0.5 + margin)
        & (y > -0.5 - margin)
        & (y < ny - 0.5 + margin)
    )
    if not np.any(keep):
        return
    x, y, flux = x[keep], y[keep], flux[keep]

    # pixel-integrated Gaussian profile along each axis, for all stars at once
    offsets = np.arange(-half, half + 1)
    cx = np.rint(x).astype(int)
    cy = np.rint(y).astype(int)
    edges = np.arange(-half, half + 2) - 0.5
    norm = 1.0 / (math.sqrt(2.0) * sigma)
    ex = _erf(((cx - x)[:, None] + edges[None, :]) * norm).astype(float)
    ey = _erf(((cy - y)[:, None] + edges[None, :]) * norm).astype(float)
    px = 0.5 * np.diff(ex, axis=1)
    py = 0.5 * np.diff(ey, axis=1)

    for i in range(len(flux)):
        xs = cx[i] + offsets
        ys = cy[i] + offsets
        x0 = max(0, -xs[0])
        x1 = len(offsets) - max(0, xs[-1] - (nx - 1))
        y0 = max(0, -ys[0])
        y1 = len(offsets) - max(0, ys[-1] - (ny - 1))
        if x0 >= x1 or y0 >= y1:
            continue
        image[ys[y0] : ys[y1 - 1] + 1, xs[x0] : xs[x1 - 1] + 1] += flux[i] * np.outer(
            py[i, y0:y1], px[i, x0:x1]
        )


def render_image(
    scene,
    wcs,
    shape,
    *,
    sky=0.0,
    noise=1.0,
    gain=None,
    seed=0,
    nan_patches=0,
    dq_fraction=0.0,
    saturation=None,
    instrument="NIRCAM",
    exptype=None,
    filter=None,  # noqa: A002 - name fixed by the public API
    filename=None,
    group_id=None,
):
    """
    Render ``scene`` through ``wcs`` into a calibrated-looking
    `~stdatamodels.jwst.datamodels.ImageModel`.

    The noise-free signal is ``sky + diffuse + stars`` where the diffuse
    sources are evaluated at each pixel's world position (exactly on a grid
    of every 8th pixel -- finer for sources with sigma below 80 pixels -- and
    bilinearly interpolated in between, or exactly everywhere for images of
    at most 64x64 pixels) and the stars are
    pixel-integrated circular Gaussians (FWHM ``scene.psf_fwhm`` converted to
    pixels with the local pixel scale at the image centre) rendered in stamps
    of +-5 sigma, so that the flux of a star fully inside the image is
    conserved to better than 1e-5.

    Parameters
    ----------
    scene : Scene
        What is on the sky.
    wcs : gwcs.wcs.WCS
        Imaging WCS of the detector, e.g. from `make_tan_wcs`.
    shape : tuple of int
        Image shape ``(ny, nx)``.
    sky : float, optional
        Constant sky level added to every pixel.
    noise : float, optional
        Gaussian read-noise sigma (data units).
    gain : float or None, optional
        If given, source shot noise with variance ``max(signal - sky, 0) / gain``
        is added and reported in ``var_poisson``; otherwise ``var_poisson`` is 0.
    seed : int, optional
        Seed for the noise and the bad-pixel draws.
    nan_patches : int, optional
        Number of rectangular patches (5-30 pixels a side) set to NaN in
        ``data``, ``err`` and the variance arrays and flagged ``DO_NOT_USE``.
    dq_fraction : float, optional
        Fraction of pixels flagged ``HOT | DO_NOT_USE`` or
        ``JUMP_DET | DO_NOT_USE`` (chosen at random) whose data values are
        corrupted by ``+1000 * noise`` (``+1000`` when ``noise`` is 0).
    saturation : float or None, optional
        Pixels whose (noisy) value exceeds this get ``SATURATED | DO_NOT_USE``.
    instrument : {"NIRCAM", "NIRISS", "MIRI"}, optional
        Instrument name; sets detector, default filter and exposure type.
    exptype : str, optional
        Exposure type; default ``NRC_IMAGE``, ``NIS_IMAGE`` or ``MIR_IMAGE``.
    filter : str, optional
        Filter name; default ``F200W``, ``F150W`` or ``F770W``.
    filename : str, optional
        ``meta.filename``; default ``f"synthetic_{seed:04d}_cal.fits"``.
    group_id : str, optional
        If given, stored as ``meta.group_id`` (as `jwst.datamodels.ModelLibrary`
        does for association members).

    Returns
    -------
    stdatamodels.jwst.datamodels.ImageModel
        Model with float32 ``data``, ``err``, ``var_rnoise``, ``var_poisson``,
        ``var_flat``, uint32 ``dq`` and ``meta.wcs = wcs``.
    """
    return _render_image(
        scene,
        wcs,
        shape,
        sky=sky,
        noise=noise,
        gain=gain,
        seed=seed,
        nan_patches=nan_patches,
        dq_fraction=dq_fraction,
        saturation=saturation,
        instrument=instrument,
        exptype=exptype,
        filter_name=filter,
        filename=filename,
        group_id=group_id,
    )


def _render_image(
    scene,
    wcs,
    shape,
    *,
    sky,
    noise,
    gain,
    seed,
    nan_patches,
    dq_fraction,
    saturation,
    instrument,
    exptype,
    filter_name,
    filename,
    group_id,
    detector=None,
    observation=None,
):
    """
    Implement `render_image`, with a few extra metadata options.

    Parameters
    ----------
    scene, wcs, shape, sky, noise, gain, seed, nan_patches, dq_fraction, saturation
        See `render_image`.
    instrument, exptype, filter_name, filename, group_id
        See `render_image` (``filter_name`` is its ``filter``).
    detector : str, optional
        Detector name overriding the instrument default.
    observation : dict, optional
        Extra ``meta.observation`` values (e.g. the exposure number).

    Returns
    -------
    stdatamodels.jwst.datamodels.ImageModel
        The rendered model.
    """
    from stdatamodels.jwst.datamodels import ImageModel
    from stdatamodels.jwst.datamodels.dqflags import pixel as dqflags

    instrument = str(instrument).upper()
    if instrument not in _INSTRUMENT_DEFAULTS:
        raise ValueError(f"instrument must be one of {sorted(_INSTRUMENT_DEFAULTS)}")
    if noise < 0:
        raise ValueError("noise must be non-negative")
    if gain is not None and gain <= 0:
        raise ValueError("gain must be positive")
    ny, nx = (int(n) for n in shape)
    shape = (ny, nx)

    noise_rng, patch_rng, dq_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    lin = _local_linear_wcs(wcs, shape)

    # noise-free signal above the sky
    if scene.n_diffuse:
        signal = _render_diffuse(scene, wcs, shape, lin["pixel_scale"])
    else:
        signal = np.zeros(shape)
    _render_stars(scene, wcs, shape, lin["pixel_scale"], (lin["ra"], lin["dec"]), signal)

    var_rnoise = np.full(shape, float(noise) ** 2, dtype=np.float32)
    if gain is not None:
        var_poisson = (np.maximum(signal, 0.0) / gain).astype(np.float32)
    else:
        var_poisson = np.zeros(shape, dtype=np.float32)
    var_flat = np.zeros(shape, dtype=np.float32)
    err = np.sqrt(var_rnoise + var_poisson + var_flat)

    data = (signal + float(sky)).astype(np.float32)
    if noise > 0 or gain is not None:
        data += noise_rng.standard_normal(shape, dtype=np.float32) * err
    dq = np.zeros(shape, dtype=np.uint32)

    if saturation is not None:
        dq[data > saturation] |= np.uint32(dqflags["SATURATED"] | dqflags["DO_NOT_USE"])

    n_bad = int(round(float(dq_fraction) * nx * ny))
    if n_bad > 0:
        flat = dq_rng.choice(nx * ny, size=n_bad, replace=False)
        kind = dq_rng.integers(0, 2, n_bad)
        flags = np.where(kind == 0, dqflags["HOT"], dqflags["JUMP_DET"]) | dqflags["DO_NOT_USE"]
        dq.ravel()[flat] |= flags.astype(np.uint32)
        data.ravel()[flat] += np.float32(1000.0 * (noise if noise > 0 else 1.0))

    for _ in range(int(nan_patches)):
        h, w = patch_rng.integers(5, 31, 2)
        h, w = min(h, ny), min(w, nx)
        y0 = patch_rng.integers(0, ny - h + 1)
        x0 = patch_rng.integers(0, nx - w + 1)
        region = (slice(y0, y0 + h), slice(x0, x0 + w))
        for arr in (data, err, var_rnoise, var_poisson, var_flat):
            arr[region] = np.nan
        dq[region] |= np.uint32(dqflags["DO_NOT_USE"])

    # Assignments are validated once here (in tests) rather than one by one.
    model = ImageModel(
        data=data,
        err=err,
        dq=dq,
        var_rnoise=var_rnoise,
        var_poisson=var_poisson,
        var_flat=var_flat,
        validate_on_assignment=False,
    )
    defaults = _INSTRUMENT_DEFAULTS[instrument]
    meta = model.meta
    meta.filename = filename if filename is not None else f"synthetic_{int(seed):04d}_cal.fits"
    meta.telescope = "JWST"
    meta.instrument.name = instrument
    meta.instrument.detector = detector if detector is not None else defaults["detector"]
    meta.instrument.filter = filter_name if filter_name is not None else defaults["filter"]
    if instrument == "NIRCAM":
        meta.instrument.pupil = "CLEAR"
    meta.exposure.type = exptype if exptype is not None else defaults["exptype"]
    meta.exposure.exposure_time = _EXPTIME
    meta.exposure.effective_exposure_time = _EXPTIME
    meta.exposure.measurement_time = _EXPTIME
    meta.exposure.start_time = _MJD_START
    meta.exposure.mid_time = _MJD_START + 0.5 * _EXPTIME / 86400.0
    meta.exposure.end_time = _MJD_START + _EXPTIME / 86400.0
    meta.observation.date = "2026-01-01"
    meta.observation.time = "00:00:00"
    for key, value in (observation or {}).items():
        setattr(meta.observation, key, value)
    meta.bunit_data = "MJy/sr"
    meta.bunit_err = "MJy/sr"
    meta.photometry.pixelarea_arcsecsq = lin["pixel_scale"] ** 2
    meta.photometry.pixelarea_steradians = (lin["pixel_scale"] * math.pi / 180.0 / 3600.0) ** 2
    keywords = _tan_fits_keywords(
        shape,
        ra=lin["ra"],
        dec=lin["dec"],
        pixel_scale=lin["pixel_scale"],
        rotation=lin["rotation"],
        crpix=lin["crpix"],
    )
    for key, value in keywords.items():
        setattr(meta.wcsinfo, key, value)
    meta.wcsinfo.s_region = _s_region(wcs, shape)
    meta.wcs = wcs
    if group_id is not None:
        meta.group_id = str(group_id)
    model._validate_on_assignment = True  # restore the normal behaviour for users
    return model


def make_image(
    shape=(256, 256),
    *,
    ra=150.0,
    dec=2.0,
    pixel_scale=0.06,
    rotation=0.0,
    distortion=0.0,
    sky=0.0,
    noise=1.0,
    n_stars=20,
    n_diffuse=0,
    seed=0,
    instrument="NIRCAM",
    **render_kwargs,
):
    """
    Make one synthetic image with its own small scene.

    The ``n_stars`` stars are placed uniformly over the image (so that all
    of them are inside it), with log-uniform fluxes in ``(50, 5000)``; the
    diffuse sources (if any) are centred near the image centre with a sigma
    equal to the image half-diagonal.

    Parameters
    ----------
    shape : tuple of int, optional
        ``(ny, nx)``.
    ra, dec : float, optional
        World coordinates of the image centre (degrees).
    pixel_scale : float, optional
        Arcsec per pixel.
    rotation : float, optional
        Position angle of the +y axis, degrees east of north.
    distortion : float, optional
        Radial distortion coefficient, see `make_tan_wcs`.
    sky : float, optional
        Constant sky level.
    noise : float, optional
        Read-noise sigma.
    n_stars : int, optional
        Number of stars in the image.
    n_diffuse : int, optional
        Number of diffuse sources.
    seed : int, optional
        Seed of the scene and of the noise.
    instrument : str, optional
        ``"NIRCAM"``, ``"NIRISS"`` or ``"MIRI"``.
    **render_kwargs
        Further keyword arguments for `render_image` (``gain``,
        ``nan_patches``, ``dq_fraction``, ``saturation``, ``filename``, ...).

    Returns
    -------
    stdatamodels.jwst.datamodels.ImageModel
        The rendered image.
    """
    wcs = make_tan_wcs(
        shape, ra=ra, dec=dec, pixel_scale=pixel_scale, rotation=rotation, distortion=distortion
    )
    ny, nx = shape
    half_diag = 0.5 * math.hypot(nx, ny) * pixel_scale  # arcsec
    base = make_scene(
        ra=ra,
        dec=dec,
        radius=half_diag / 3600.0,
        n_stars=n_stars,
        n_diffuse=n_diffuse,
        diffuse_sigma=half_diag,
        seed=seed,
    )
    rng = np.random.default_rng((int(seed), 1))  # star positions: own stream
    x = rng.uniform(-0.5, nx - 0.5, int(n_stars))
    y = rng.uniform(-0.5, ny - 0.5, int(n_stars))
    star_ra, star_dec = wcs.forward_transform(x, y)
    scene = Scene(
        ra=np.atleast_1d(np.asarray(star_ra, dtype=float)) % 360.0,
        dec=np.atleast_1d(np.asarray(star_dec, dtype=float)),
        flux=base.flux,
        diffuse_ra=base.diffuse_ra,
        diffuse_dec=base.diffuse_dec,
        diffuse_amplitude=base.diffuse_amplitude,
        diffuse_sigma=base.diffuse_sigma,
        psf_fwhm=base.psf_fwhm,
    )
    return render_image(
        scene, wcs, shape, sky=sky, noise=noise, seed=seed, instrument=instrument, **render_kwargs
    )

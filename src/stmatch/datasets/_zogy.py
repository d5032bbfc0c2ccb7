r"""Synthetic science/template image pairs for ZOGY proper image subtraction.

The pairs follow the image model of Zackay, Ofek & Gal-Yam (2016, ApJ 830,
27, "ZOGY", Sect. 2): with :math:`T` the true sky,

.. math::

    N = F_n\,(T + T_{\mathrm{new}}) \otimes P_n + \epsilon_n, \qquad
    R = F_r\,(T + T_{\mathrm{gone}}) \otimes P_r + \epsilon_r,

where :math:`\epsilon_n, \epsilon_r` are white Gaussian noise of standard
deviations :math:`\sigma_n, \sigma_r`.  Fluxes are expressed in the template
units (:math:`F_r = 1`), so that the science image carries
:math:`\beta = F_n / F_r` times the template flux of every static star; once
brought to a common PSF, the noise-free :math:`N` and :math:`\beta R` differ
only by the transients.
"""

import math
from dataclasses import dataclass

import numpy as np

from ._points import (
    _check_kind,
    _check_positive,
    _check_shape,
    _check_size,
    psf_stamp,
    render_point_sources,
)
from ._render import _render_image
from ._scene import Scene
from ._wcs import make_tan_wcs

__all__ = ["ZogyPair", "make_zogy_pair"]

_TEMPLATE_EPOCH_DAYS = 365.0  # the template is observed one year before the science image
_MAX_TRIES_PER_SOURCE = 2000

STARS_DTYPE = np.dtype(
    [
        ("ra", "f8"),
        ("dec", "f8"),
        ("x_sci", "f8"),
        ("y_sci", "f8"),
        ("x_tmpl", "f8"),
        ("y_tmpl", "f8"),
        ("flux_tmpl", "f8"),
        ("flux_sci", "f8"),
        ("in_science", "?"),
        ("in_template", "?"),
    ]
)
TRANSIENTS_DTYPE = np.dtype(
    [
        ("ra", "f8"),
        ("dec", "f8"),
        ("x", "f8"),
        ("y", "f8"),
        ("x_tmpl", "f8"),
        ("y_tmpl", "f8"),
        ("flux", "f8"),
        ("flux_tmpl", "f8"),
        ("kind", "U4"),
    ]
)


@dataclass(frozen=True, eq=False)
class ZogyPair:
    r"""
    A synthetic science/template pair and its truth (`make_zogy_pair`).

    All fluxes and noise levels are in the units of the stored data, i.e.
    already multiplied by ``unit_scale``.

    Attributes
    ----------
    science : stdatamodels.jwst.datamodels.ImageModel
        New image: ``flux_ratio`` times the static stars plus the ``"new"`` transients.
    template : stdatamodels.jwst.datamodels.ImageModel
        Reference image: the static stars plus the ``"gone"`` transients,
        possibly on another pixel grid.
    psf_science, psf_template : numpy.ndarray
        Unit-sum PSF stamps on each image's own pixel grid (centre pixel
        ``(h // 2, w // 2)``); the PSFs are circular, so a rotated template grid
        has the same stamp.
    stars : numpy.ndarray
        Structured array (``STARS_DTYPE``): ``ra``, ``dec``, science pixel
        position ``x_sci``, ``y_sci``, template pixel position ``x_tmpl``,
        ``y_tmpl``, ``flux_tmpl`` (template units), ``flux_sci``
        (``flux_ratio * flux_tmpl``) and whether the centre lies in each image
        (``in_science``, ``in_template``).
    transients : numpy.ndarray
        Structured array (``TRANSIENTS_DTYPE``): ``ra``, ``dec``, science pixel
        position ``x``, ``y``, template position ``x_tmpl``, ``y_tmpl``,
        ``flux`` (science units), ``flux_tmpl`` (``flux / flux_ratio``) and
        ``kind``: ``"new"`` (only in the science image) or ``"gone"`` (only in
        the template, with flux ``flux_tmpl`` there).
    flux_ratio : float
        :math:`\beta = F_n / F_r`.
    sigma_science, sigma_template : float
        Standard deviation of the Gaussian noise of each image.
    """

    science: object
    template: object
    psf_science: np.ndarray
    psf_template: np.ndarray
    stars: np.ndarray
    transients: np.ndarray
    flux_ratio: float
    sigma_science: float
    sigma_template: float


def _log_uniform(rng, bounds, n, name):
    lo, hi = (float(b) for b in bounds)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"{name} must satisfy 0 < min <= max, got {bounds!r}")
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def _place(rng, n, *, box, others, isolation, what, accept=None, counts=None):
    """
    Random sequential placement with a minimum separation.

    Candidates are drawn uniformly in ``box = (x0, x1, y0, y1)`` (in batches)
    and kept when ``accept(x, y)`` (vectorised; default all) is true and no
    kept or ``others`` point lies within ``isolation`` pixels.  Stops when
    ``n`` kept points satisfy ``counts(x, y)`` (vectorised; default all).
    """
    xs, ys = [], []
    m = len(others[0])
    ox = np.empty(m + 2 * n + 16)
    oy = np.empty_like(ox)
    ox[:m], oy[:m] = others
    iso2 = float(isolation) ** 2
    n_counted = 0
    if n == 0:
        return np.zeros(0), np.zeros(0)
    if box[0] > box[1] or box[2] > box[3]:
        raise ValueError(f"no room for the {what}: reduce the margins or enlarge the image")
    tries = 0
    limit = _MAX_TRIES_PER_SOURCE * (n + 1)
    while n_counted < n:
        if tries >= limit:
            raise ValueError(
                f"could not place the {what} with a separation of {isolation:g} px: reduce "
                f"their number or `isolation`, or enlarge the image"
            )
        cx = rng.uniform(box[0], box[1], 256)
        cy = rng.uniform(box[2], box[3], 256)
        ok = np.ones(cx.size, dtype=bool) if accept is None else accept(cx, cy)
        counted = np.ones(cx.size, dtype=bool) if counts is None else counts(cx, cy)
        for k in range(cx.size):
            tries += 1
            if not ok[k]:
                continue
            if m and iso2 > 0 and np.min((ox[:m] - cx[k]) ** 2 + (oy[:m] - cy[k]) ** 2) < iso2:
                continue
            if m == ox.size:
                ox, oy = np.resize(ox, 2 * m), np.resize(oy, 2 * m)
            ox[m], oy[m] = cx[k], cy[k]
            m += 1
            xs.append(cx[k])
            ys.append(cy[k])
            n_counted += bool(counted[k])
            if n_counted >= n:
                break
    return np.array(xs, dtype=float), np.array(ys, dtype=float)


def _inside(x, y, shape, margin=0.0):
    ny, nx = shape
    return (
        (x >= margin - 0.5)
        & (x <= nx - 0.5 - margin)
        & (y >= margin - 0.5)
        & (y <= ny - 0.5 - margin)
    )


def _to_pixels(wcs, ra, dec):
    x, y = wcs.backward_transform(np.asarray(ra, float), np.asarray(dec, float))
    return np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))


def _nan_patches(rng, n, shape, avoid_x, avoid_y, clearance):
    """Rectangles (5-30 px a side) that keep ``clearance`` px from the given points."""
    ny, nx = shape
    patches = []
    for _ in range(int(n)):
        for _attempt in range(100):
            h, w = (int(v) for v in rng.integers(5, 31, 2))
            h, w = min(h, ny), min(w, nx)
            y0 = int(rng.integers(0, ny - h + 1))
            x0 = int(rng.integers(0, nx - w + 1))
            dx = np.maximum(np.maximum(x0 - avoid_x, avoid_x - (x0 + w - 1)), 0.0)
            dy = np.maximum(np.maximum(y0 - avoid_y, avoid_y - (y0 + h - 1)), 0.0)
            if not np.any(np.hypot(dx, dy) < clearance):
                break
        patches.append((slice(y0, y0 + h), slice(x0, x0 + w)))
    return patches


def _build_model(
    signal,
    wcs,
    *,
    sky,
    sigma,
    unit_scale,
    dtype,
    rng,
    patches,
    saturation,
    filename,
    instrument,
    group_id,
    epoch_offset,
):
    """Noisy ImageModel with render_image's metadata and constant variance."""
    from stdatamodels.jwst.datamodels.dqflags import pixel as dqflags

    shape = signal.shape
    none = np.zeros(0)
    empty = Scene(
        ra=none,
        dec=none,
        flux=none,
        diffuse_ra=none,
        diffuse_dec=none,
        diffuse_amplitude=none,
        diffuse_sigma=none,
        psf_fwhm=0.1,
    )
    # an empty, noise-free rendering carries exactly render_image's metadata
    model = _render_image(
        empty,
        wcs,
        shape,
        sky=0.0,
        noise=0.0,
        gain=None,
        seed=0,
        nan_patches=0,
        dq_fraction=0.0,
        saturation=None,
        instrument=instrument,
        exptype=None,
        filter_name=None,
        filename=filename,
        group_id=group_id,
    )
    raw = signal + float(sky)
    if sigma > 0:
        raw = raw + sigma * rng.standard_normal(shape)
    dq = np.zeros(shape, dtype=np.uint32)
    if saturation is not None:
        dq[raw > float(saturation)] |= np.uint32(dqflags["SATURATED"] | dqflags["DO_NOT_USE"])
    data = (raw * unit_scale).astype(dtype)
    err = np.full(shape, sigma * unit_scale, dtype=dtype)
    var_rnoise = np.full(shape, (sigma * unit_scale) ** 2, dtype=dtype)
    var_poisson = np.zeros(shape, dtype=dtype)
    var_flat = np.zeros(shape, dtype=dtype)
    for region in patches:
        for arr in (data, err, var_rnoise, var_poisson, var_flat):
            arr[region] = np.nan
        dq[region] |= np.uint32(dqflags["DO_NOT_USE"])
    model.data = data
    model.err = err
    model.dq = dq
    model.var_rnoise = var_rnoise
    model.var_poisson = var_poisson
    model.var_flat = var_flat
    model.meta.photometry.conversion_megajanskys = 1.0
    model.meta.bunit_data = "MJy/sr"
    model.meta.bunit_err = "MJy/sr"
    if epoch_offset:
        exp = model.meta.exposure
        exp.start_time -= epoch_offset
        exp.mid_time -= epoch_offset
        exp.end_time -= epoch_offset
        model.meta.observation.date = "2025-01-01"
    return model


def make_zogy_pair(
    shape=(256, 256),
    *,
    n_stars=60,
    star_flux_range=(200.0, 2e4),
    n_transients=8,
    transient_flux_range=(100.0, 1000.0),
    n_vanished=0,
    fwhm_science=3.0,
    fwhm_template=2.2,
    psf_kind="gaussian",
    beta=2.5,
    stamp_size=None,
    noise_science=1.0,
    noise_template=0.5,
    flux_ratio=1.0,
    template_shift=(0.0, 0.0),
    template_rotation=0.0,
    template_shape=None,
    sky_science=0.0,
    sky_template=0.0,
    unit_scale=1.0,
    dtype=np.float32,
    nan_patches=0,
    saturation=None,
    isolation=None,
    transient_margin=None,
    ra=150.0,
    dec=2.0,
    pixel_scale=0.06,
    rotation=0.0,
    seed=0,
    instrument="NIRCAM",
):
    r"""
    Make a science/template pair of one star field, with transients, for ZOGY.

    Stars are fixed on the sky.  Their science pixel positions are drawn
    uniformly (random sequential placement) with a separation of at least
    ``isolation`` pixels from each other and from the transients, until
    ``n_stars`` of them have their centre inside the science image; the
    surrounding margin (half a PSF stamp) and the part of the template outside
    the science footprint are filled at the same density.  The science image
    holds :math:`\beta F` for a star of template flux :math:`F` plus the
    ``"new"`` transients; the template holds :math:`F` plus the ``"gone"``
    transients (flux ``flux / flux_ratio``), each star rendered by
    `render_point_sources` at its exact pixel position computed through that
    image's WCS from the star's sky position.  Both images get white Gaussian
    noise; ``err = sigma``, ``var_rnoise = sigma**2``, ``var_poisson = var_flat = 0``.

    Parameters
    ----------
    shape : tuple of int, optional
        Science image shape ``(ny, nx)``.
    n_stars : int, optional
        Number of static stars whose centre lies in the science image.
    star_flux_range : tuple of float, optional
        Log-uniform range of the template star fluxes.
    n_transients : int, optional
        Total number of transients; ``n_transients - n_vanished`` of them are
        ``"new"`` (science only) and ``n_vanished`` are ``"gone"`` (template only).
    transient_flux_range : tuple of float, optional
        Log-uniform range of the transient fluxes in science units.
    n_vanished : int, optional
        Number of ``"gone"`` transients (``<= n_transients``).
    fwhm_science, fwhm_template : float, optional
        PSF FWHM in pixels of each image.
    psf_kind : {"gaussian", "moffat"}, optional
        PSF profile of both images.
    beta : float, optional
        Moffat index.
    stamp_size : int, optional
        Odd side of the PSF stamps of both images (rendering and the returned
        stamps); default the smallest odd integer ``>= 8 * max(fwhm)``.
    noise_science, noise_template : float, optional
        Gaussian noise sigma of each image (before ``unit_scale``).
    flux_ratio : float, optional
        :math:`\beta = F_n / F_r`.
    template_shift : tuple of float, optional
        ``(dx, dy)``: the template's reference pixel is shifted by this many
        pixels, so without rotation a sky position at science pixel ``(x, y)``
        is at template pixel ``(x + dx, y + dy)`` (same shape).
    template_rotation : float, optional
        Extra position angle (degrees) of the template grid, about its reference pixel.
    template_shape : tuple of int, optional
        Template shape; default ``shape``.  The template's reference pixel is its
        centre plus ``template_shift`` and points to the science image centre.
    sky_science, sky_template : float, optional
        Constant sky level of each image.
    unit_scale : float, optional
        Multiplies data, err and the truth fluxes/noise (variances by its
        square), e.g. ``1e-19`` to mimic physical units.
    dtype : numpy.dtype, optional
        dtype of the arrays handed to the models (``ImageModel`` stores float32).
    nan_patches : int, optional
        Rectangles (5-30 px a side) of NaN flagged ``DO_NOT_USE`` in each image,
        kept ``3 * fwhm`` away from the transients.
    saturation : float, optional
        Pixels whose noisy value (before ``unit_scale``) exceeds this are flagged
        ``SATURATED | DO_NOT_USE`` (values are not clipped).
    isolation : float, optional
        Minimum separation (pixels) between any two sources; default
        ``3 * max(fwhm_science, fwhm_template)``; 0 disables it.
    transient_margin : float, optional
        Minimum distance (pixels) of the transients from the edges of both
        images; default ``3 * max(fwhm_science, fwhm_template)``.
    ra, dec : float, optional
        Sky position (degrees) of the science image centre.
    pixel_scale : float, optional
        Arcsec per pixel of both images.
    rotation : float, optional
        Position angle (degrees) of the science +y axis.
    seed : int, optional
        Seed of all random draws (independent streams for positions, fluxes,
        each image's noise and the NaN patches).
    instrument : {"NIRCAM", "NIRISS", "MIRI"}, optional
        Instrument metadata, as in `render_image`.

    Returns
    -------
    ZogyPair
        Science ``zogy_science_cal.fits`` and template ``zogy_template_i2d.fits``
        models (``meta.bunit_data = "MJy/sr"``,
        ``meta.photometry.conversion_megajanskys = 1``), PSF stamps and truth.
        Without shift, rotation and ``template_shape`` both models get the
        same WCS parameters.
    """
    shape = _check_shape(shape)
    tshape = shape if template_shape is None else _check_shape(template_shape, "template_shape")
    kind = _check_kind(psf_kind)
    f_sci = _check_positive(fwhm_science, "fwhm_science")
    f_tmpl = _check_positive(fwhm_template, "fwhm_template")
    beta_ratio = _check_positive(flux_ratio, "flux_ratio")
    unit_scale = _check_positive(unit_scale, "unit_scale")
    for value, name in ((noise_science, "noise_science"), (noise_template, "noise_template")):
        if not (math.isfinite(float(value)) and float(value) >= 0):
            raise ValueError(f"{name} must be finite and non-negative, got {value!r}")
    n_stars, n_transients, n_vanished = int(n_stars), int(n_transients), int(n_vanished)
    if n_stars < 0 or n_transients < 0 or not 0 <= n_vanished <= n_transients:
        raise ValueError("need n_stars >= 0, n_transients >= 0 and 0 <= n_vanished <= n_transients")
    if np.dtype(dtype).kind != "f":
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype!r}")
    f_max = max(f_sci, f_tmpl)
    size = _check_size(stamp_size, f_max)
    isolation = 3.0 * f_max if isolation is None else float(isolation)
    margin = 3.0 * f_max if transient_margin is None else float(transient_margin)
    if not (math.isfinite(isolation) and isolation >= 0 and math.isfinite(margin)):
        raise ValueError("isolation and transient_margin must be finite and non-negative")
    dx_t, dy_t = (float(v) for v in template_shift)

    wcs_sci = make_tan_wcs(shape, ra=ra, dec=dec, pixel_scale=pixel_scale, rotation=rotation)
    # the science reference pixel is its centre: the template's points at the same sky position
    wcs_tmpl = make_tan_wcs(
        tshape,
        ra=ra,
        dec=dec,
        pixel_scale=pixel_scale,
        rotation=rotation + float(template_rotation),
        crpix=((tshape[1] - 1) / 2.0 + dx_t, (tshape[0] - 1) / 2.0 + dy_t),
    )

    def sci_to_tmpl(x, y):
        r, d = wcs_sci.forward_transform(np.asarray(x, float), np.asarray(y, float))
        return _to_pixels(wcs_tmpl, r, d)

    pos_t_rng, pos_s_rng, flux_rng, noise_s_rng, noise_t_rng, patch_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(6)
    )

    # transients: inside both images, away from their edges
    def transient_ok(x, y):
        xt, yt = sci_to_tmpl(x, y)
        return _inside(xt, yt, tshape, margin)

    ny, nx = shape
    tx, ty = _place(
        pos_t_rng,
        n_transients,
        box=(margin - 0.5, nx - 0.5 - margin, margin - 0.5, ny - 0.5 - margin),
        others=([], []),
        isolation=isolation,
        what=f"{n_transients} transients",
        accept=transient_ok,
    )

    # stars: the science image and the template footprint, plus half a stamp around them
    ntx, nty = tshape[1], tshape[0]
    cx = np.array([-0.5, ntx - 0.5, ntx - 0.5, -0.5])
    cy = np.array([-0.5, -0.5, nty - 0.5, nty - 0.5])
    r_c, d_c = wcs_tmpl.forward_transform(cx, cy)
    fx, fy = _to_pixels(wcs_sci, r_c, d_c)
    pad = size // 2 + 1.0
    box = (
        min(-0.5, fx.min()) - pad,
        max(nx - 0.5, fx.max()) + pad,
        min(-0.5, fy.min()) - pad,
        max(ny - 0.5, fy.max()) + pad,
    )

    sx, sy = _place(
        pos_s_rng,
        n_stars,
        box=box,
        others=(tx, ty),
        isolation=isolation,
        what=f"{n_stars} stars",
        counts=lambda x, y: _inside(x, y, shape),
    )

    star_flux = _log_uniform(flux_rng, star_flux_range, len(sx), "star_flux_range")
    tr_flux = _log_uniform(flux_rng, transient_flux_range, n_transients, "transient_flux_range")
    tr_kind = np.array(["new"] * (n_transients - n_vanished) + ["gone"] * n_vanished, dtype="U4")

    # exact positions on both grids from the sky positions
    s_ra, s_dec = wcs_sci.forward_transform(sx, sy)
    t_ra, t_dec = wcs_sci.forward_transform(tx, ty)
    s_ra, s_dec, t_ra, t_dec = (
        np.atleast_1d(np.asarray(a, float)) for a in (s_ra, s_dec, t_ra, t_dec)
    )
    sxs, sys_ = _to_pixels(wcs_sci, s_ra, s_dec)
    sxt, syt = _to_pixels(wcs_tmpl, s_ra, s_dec)
    txs, tys = _to_pixels(wcs_sci, t_ra, t_dec)
    txt, tyt = _to_pixels(wcs_tmpl, t_ra, t_dec)

    new = tr_kind == "new"
    render = {"psf": kind, "beta": beta, "stamp_size": size}
    sig_sci = render_point_sources(
        shape,
        np.concatenate([sxs, txs[new]]),
        np.concatenate([sys_, tys[new]]),
        np.concatenate([beta_ratio * star_flux, tr_flux[new]]),
        fwhm=f_sci,
        **render,
    )
    sig_tmpl = render_point_sources(
        tshape,
        np.concatenate([sxt, txt[~new]]),
        np.concatenate([syt, tyt[~new]]),
        np.concatenate([star_flux, tr_flux[~new] / beta_ratio]),
        fwhm=f_tmpl,
        **render,
    )

    clearance = 3.0 * f_max
    common = {
        "unit_scale": unit_scale,
        "dtype": dtype,
        "saturation": saturation,
        "instrument": instrument,
    }
    science = _build_model(
        sig_sci,
        wcs_sci,
        sky=sky_science,
        sigma=float(noise_science),
        rng=noise_s_rng,
        patches=_nan_patches(patch_rng, nan_patches, shape, txs, tys, clearance),
        filename="zogy_science_cal.fits",
        group_id="zogy_science",
        epoch_offset=0.0,
        **common,
    )
    template = _build_model(
        sig_tmpl,
        wcs_tmpl,
        sky=sky_template,
        sigma=float(noise_template),
        rng=noise_t_rng,
        patches=_nan_patches(patch_rng, nan_patches, tshape, txt, tyt, clearance),
        filename="zogy_template_i2d.fits",
        group_id="zogy_template",
        epoch_offset=_TEMPLATE_EPOCH_DAYS,
        **common,
    )

    stars = np.zeros(len(sx), dtype=STARS_DTYPE)
    stars["ra"], stars["dec"] = s_ra, s_dec
    stars["x_sci"], stars["y_sci"], stars["x_tmpl"], stars["y_tmpl"] = sxs, sys_, sxt, syt
    stars["flux_tmpl"] = star_flux * unit_scale
    stars["flux_sci"] = beta_ratio * star_flux * unit_scale
    stars["in_science"] = _inside(sxs, sys_, shape)
    stars["in_template"] = _inside(sxt, syt, tshape)
    transients = np.zeros(n_transients, dtype=TRANSIENTS_DTYPE)
    transients["ra"], transients["dec"] = t_ra, t_dec
    transients["x"], transients["y"] = txs, tys
    transients["x_tmpl"], transients["y_tmpl"] = txt, tyt
    transients["flux"] = tr_flux * unit_scale
    transients["flux_tmpl"] = tr_flux / beta_ratio * unit_scale
    transients["kind"] = tr_kind

    return ZogyPair(
        science=science,
        template=template,
        psf_science=psf_stamp(kind, f_sci, size=size, beta=beta),
        psf_template=psf_stamp(kind, f_tmpl, size=size, beta=beta),
        stars=stars,
        transients=transients,
        flux_ratio=beta_ratio,
        sigma_science=float(noise_science) * unit_scale,
        sigma_template=float(noise_template) * unit_scale,
    )

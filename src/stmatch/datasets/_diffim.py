r"""Synthetic difference-imaging sets: one template and several science exposures.

The set follows the image model of ZOGY (Zackay, Ofek & Gal-Yam 2016, ApJ 830,
27, Sect. 2) for every science exposure :math:`N_k` and the template :math:`R`:

.. math::

    N_k = (T + T_k) \otimes P_k + B_k + \epsilon_k, \qquad
    R = T \otimes P_r + B_r + \epsilon_r,

with :math:`T` the static stars (fixed on the sky), :math:`T_k` the point-source
transients of exposure :math:`k`, :math:`P` Gaussian (or Moffat) PSFs of
different widths, :math:`\epsilon` white Gaussian noise, and :math:`B` smooth
backgrounds, quadratic surfaces in each image's own normalised pixel
coordinates (the convention of `make_bgmatch_exposures`)

.. math::

    B(x, y) = c_0 + c_1 u + c_2 v + c_3 u^2 + c_4 u v + c_5 v^2, \qquad
    u = \frac{2x - (n_x - 1)}{n_x - 1},\quad v = \frac{2y - (n_y - 1)}{n_y - 1}.

Fluxes are in the same units in every image (flux ratio 1). Each science
exposure has its own pixel grid, shifted (and optionally rotated) from the
template's, so that a pipeline has to align the template, match its background
and subtract it.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._asn import write_association
from ._points import _check_kind, _check_positive, _check_shape, psf_stamp, render_point_sources
from ._wcs import make_tan_wcs
from ._zogy import _build_model, _inside, _log_uniform, _place, _to_pixels

__all__ = ["DiffimSet", "make_diffim_set", "write_diffim_association"]

_TEMPLATE_EPOCH_DAYS = 365.0  # the template is observed a year before the science exposures

DIFFIM_STARS_DTYPE = np.dtype(
    [("ra", "f8"), ("dec", "f8"), ("x_tmpl", "f8"), ("y_tmpl", "f8"), ("flux", "f8")]
)
DIFFIM_TRANSIENTS_DTYPE = np.dtype(
    [
        ("exposure", "i4"),
        ("ra", "f8"),
        ("dec", "f8"),
        ("x", "f8"),
        ("y", "f8"),
        ("x_tmpl", "f8"),
        ("y_tmpl", "f8"),
        ("flux", "f8"),
    ]
)


@dataclass(frozen=True, eq=False, repr=False)
class DiffimSet:
    """A template, science exposures of the same field and their truth (`make_diffim_set`).

    Attributes
    ----------
    template : stdatamodels.jwst.datamodels.ImageModel
        The template (``diffim_template_i2d.fits``): static stars only.
    science : tuple of stdatamodels.jwst.datamodels.ImageModel
        Science exposures (``diffim_science<k>_cal.fits``, ``k`` from 1): the static
        stars plus that exposure's transients.
    fwhm_template : float
        PSF FWHM (template pixels).
    fwhm_science : tuple of float
        PSF FWHM of each science exposure (its own pixels).
    psf_template : numpy.ndarray
        Unit-sum template PSF stamp.
    psf_science : tuple of numpy.ndarray
        Unit-sum PSF stamp of each science exposure.
    stars : numpy.ndarray
        Static stars (``ra``, ``dec``, template position ``x_tmpl``, ``y_tmpl``,
        ``flux``), including those just outside the template that reach into a
        shifted science exposure.
    transients : numpy.ndarray
        Transients of all exposures: ``exposure`` (0-based index into
        ``science``), ``ra``, ``dec``, science pixel position ``x``, ``y``, template
        position ``x_tmpl``, ``y_tmpl`` and ``flux`` (same units as the images).
    shifts : numpy.ndarray
        ``(n, 2)``: ``(dx, dy)`` of each science grid: without rotation the sky
        position at template pixel ``(x, y)`` is at science pixel ``(x + dx, y + dy)``.
    rotations : numpy.ndarray
        Extra position angle (degrees) of each science grid.
    background_template : numpy.ndarray
        The 6 coefficients of the template background (module notes).
    background_science : numpy.ndarray
        ``(n, 6)`` coefficients of each science background.
    sigma_template, sigma_science : float
        Standard deviation of the Gaussian noise of the template and of every
        science exposure.
    """

    template: object
    science: tuple
    fwhm_template: float
    fwhm_science: tuple
    psf_template: np.ndarray
    psf_science: tuple
    stars: np.ndarray
    transients: np.ndarray
    shifts: np.ndarray
    rotations: np.ndarray
    background_template: np.ndarray
    background_science: np.ndarray
    sigma_template: float
    sigma_science: float

    def __len__(self):
        """Return the number of science exposures."""
        return len(self.science)

    def __repr__(self):
        shape = "x".join(str(n) for n in np.shape(self.template.data))
        return (
            f"DiffimSet({len(self.science)} science exposure(s) of {shape} px, "
            f"{len(self.stars)} stars, {len(self.transients)} transients)"
        )

    def transients_of(self, k):
        """Transients of science exposure ``k`` (rows of `transients`)."""
        return self.transients[self.transients["exposure"] == int(k)]

    def background(self, k, x, y):
        """Background at pixels ``(x, y)`` of science exposure ``k`` (``k=None``: template)."""
        model = self.template if k is None else self.science[k]
        coeffs = self.background_template if k is None else self.background_science[k]
        return _surface(np.shape(model.data), coeffs, x, y)


def _surface(shape, c, x, y):
    ny, nx = shape
    u = (2.0 * np.asarray(x, dtype=np.float64) - (nx - 1)) / max(nx - 1, 1)
    v = (2.0 * np.asarray(y, dtype=np.float64) - (ny - 1)) / max(ny - 1, 1)
    return c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * u * v + c[5] * v * v


def _background_image(shape, coeffs):
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    return _surface(shape, coeffs, x, y)


def _per_exposure(value, n, name, default):
    """A sequence of ``n`` values from a scalar, a sequence or None (``default``)."""
    if value is None:
        value = default
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1 or arr.size not in (1, n):
        raise ValueError(f"{name} needs one value or {n} values, got {value!r}")
    return np.broadcast_to(arr, (n,)).copy()


def _coefficients(value, n, name, rng, levels):
    if value is not None:
        c = np.asarray(value, dtype=np.float64)
        if c.shape == (6,):
            c = np.broadcast_to(c, (n, 6)).copy()
        if c.shape != (n, 6):
            raise ValueError(f"{name} needs 6 coefficients or ({n}, 6) of them, got {c.shape}")
        return c
    c = np.zeros((n, 6))
    c[:, 0] = rng.uniform(*levels, n)
    c[:, 1:3] = rng.uniform(-1.5, 1.5, (n, 2))
    c[:, 3:6] = rng.uniform(-0.75, 0.75, (n, 3))
    return c


def make_diffim_set(
    shape=(256, 256),
    *,
    n_science=3,
    n_stars=40,
    star_flux_range=(300.0, 2e4),
    n_transients=4,
    transient_flux_range=(400.0, 1200.0),
    fwhm_template=2.2,
    fwhm_science=None,
    psf_kind="gaussian",
    beta=2.5,
    noise_template=0.5,
    noise_science=1.0,
    shifts=None,
    rotations=None,
    background_template=None,
    background_science=None,
    isolation=None,
    transient_margin=24.0,
    ra=150.0,
    dec=2.0,
    pixel_scale=0.06,
    rotation=0.0,
    instrument="NIRCAM",
    seed=0,
):
    r"""Make a template and ``n_science`` science exposures with injected transients.

    The static stars are placed on the template grid (random sequential placement
    with a minimum separation of ``isolation`` pixels, ``n_stars`` of them with
    their centre inside the template, the margin around it filled at the same
    density so that shifted science grids are covered) and rendered in every
    image at the pixel position computed through that image's WCS. Each science
    exposure gets ``n_transients`` point sources of its own, inside both images,
    at least ``transient_margin`` pixels from their edges and ``isolation`` pixels
    from every star.

    Parameters
    ----------
    shape : tuple of int, optional
        ``(ny, nx)`` of the template and of every science exposure.
    n_science : int, optional
        Number of science exposures.
    n_stars : int, optional
        Number of static stars centred inside the template.
    star_flux_range, transient_flux_range : tuple of float, optional
        Log-uniform ranges of the star and transient fluxes.
    n_transients : int, optional
        Transients per science exposure.
    fwhm_template : float, optional
        Template PSF FWHM (pixels).
    fwhm_science : float or sequence of float, optional
        PSF FWHM of each science exposure; default evenly spaced from 2.8 to 3.6 px.
    psf_kind : {"gaussian", "moffat"}, optional
        PSF profile of every image; ``beta`` is the Moffat index.
    noise_template, noise_science : float, optional
        Gaussian noise sigma of the template and of every science exposure.
    shifts : sequence of (dx, dy), optional
        Offset of each science grid from the template's (see `DiffimSet.shifts`);
        default random, up to 6 px along each axis.
    rotations : float or sequence of float, optional
        Extra position angle (degrees) of each science grid; default 0.
    background_template : sequence of 6 float, optional
        Template background coefficients; default a level of 2 with a gentle
        gradient and curvature.
    background_science : array_like, optional
        Science background coefficients, 6 or ``(n_science, 6)``; default random:
        level uniform in (5, 15), linear terms up to 1.5, quadratic up to 0.75.
    isolation : float, optional
        Minimum separation of any two sources (pixels); default 3 times the largest FWHM.
    transient_margin : float, optional
        Minimum distance of the transients from the edges of both images.
    ra, dec : float, optional
        Sky position (degrees) of the template centre.
    pixel_scale : float, optional
        Arcsec per pixel of every image.
    rotation : float, optional
        Position angle (degrees) of the template +y axis.
    instrument : {"NIRCAM", "NIRISS", "MIRI"}, optional
        Instrument metadata of every image.
    seed : int, optional
        Seed of all random draws.

    Returns
    -------
    DiffimSet
    """
    shape = _check_shape(shape)
    n = int(n_science)
    if n < 1:
        raise ValueError(f"n_science must be at least 1, got {n_science!r}")
    kind = _check_kind(psf_kind)
    f_tmpl = _check_positive(fwhm_template, "fwhm_template")
    f_sci = _per_exposure(fwhm_science, n, "fwhm_science", np.linspace(2.8, 3.6, n))
    for f in f_sci:
        _check_positive(f, "fwhm_science")
    rots = _per_exposure(rotations, n, "rotations", 0.0)
    n_stars, n_tr = int(n_stars), int(n_transients)
    if n_stars < 0 or n_tr < 0:
        raise ValueError("n_stars and n_transients must be non-negative")
    for value, name in ((noise_template, "noise_template"), (noise_science, "noise_science")):
        if not (np.isfinite(float(value)) and float(value) >= 0):
            raise ValueError(f"{name} must be finite and non-negative, got {value!r}")
    streams = np.random.SeedSequence(int(seed)).spawn(5 + 2 * n)
    geo_rng, star_rng, flux_rng, bg_rng, tnoise_rng = (
        np.random.default_rng(s) for s in streams[:5]
    )
    if shifts is None:
        sh = np.round(geo_rng.uniform(-6.0, 6.0, (n, 2)), 2)
    else:
        sh = np.asarray(shifts, dtype=np.float64)
        if sh.shape != (n, 2) or not np.all(np.isfinite(sh)):
            raise ValueError(f"shifts needs {n} finite (dx, dy) pairs, got {shifts!r}")
    c_tmpl = (
        np.array([2.0, 0.6, -0.4, 0.3, 0.0, -0.2])
        if background_template is None
        else np.asarray(background_template, dtype=np.float64)
    )
    if c_tmpl.shape != (6,):
        raise ValueError(f"background_template needs 6 coefficients, got {c_tmpl.shape}")
    c_sci = _coefficients(background_science, n, "background_science", bg_rng, (5.0, 15.0))
    f_max = float(max(f_tmpl, f_sci.max()))
    isolation = 3.0 * f_max if isolation is None else float(isolation)
    margin = float(transient_margin)
    if not (np.isfinite(isolation) and isolation >= 0 and np.isfinite(margin) and margin >= 0):
        raise ValueError("isolation and transient_margin must be finite and non-negative")

    ny, nx = shape
    centre = ((nx - 1) / 2.0, (ny - 1) / 2.0)
    wcs_t = make_tan_wcs(shape, ra=ra, dec=dec, pixel_scale=pixel_scale, rotation=rotation)
    wcs_s = [
        make_tan_wcs(
            shape,
            ra=ra,
            dec=dec,
            pixel_scale=pixel_scale,
            rotation=rotation + float(rots[k]),
            crpix=(centre[0] + sh[k, 0], centre[1] + sh[k, 1]),
        )
        for k in range(n)
    ]

    # static stars on (and around) the template grid
    pad = 4.0 * f_max + float(np.abs(sh).max()) + 0.02 * max(shape) * float(np.abs(rots).max())
    box = (-0.5 - pad, nx - 0.5 + pad, -0.5 - pad, ny - 0.5 + pad)
    sx, sy = _place(
        star_rng,
        n_stars,
        box=box,
        others=([], []),
        isolation=isolation,
        what=f"{n_stars} stars",
        counts=lambda x, y: _inside(x, y, shape),
    )
    s_flux = _log_uniform(flux_rng, star_flux_range, len(sx), "star_flux_range")
    s_ra, s_dec = (np.atleast_1d(np.asarray(a, float)) for a in wcs_t.forward_transform(sx, sy))
    stars = np.zeros(len(sx), dtype=DIFFIM_STARS_DTYPE)
    stars["ra"], stars["dec"], stars["x_tmpl"], stars["y_tmpl"] = s_ra, s_dec, sx, sy
    stars["flux"] = s_flux

    template = _build_model(
        render_point_sources(shape, sx, sy, s_flux, kind, fwhm=f_tmpl, beta=beta)
        + _background_image(shape, c_tmpl),
        wcs_t,
        sky=0.0,
        sigma=float(noise_template),
        unit_scale=1.0,
        dtype=np.float32,
        rng=tnoise_rng,
        patches=[],
        saturation=None,
        filename="diffim_template_i2d.fits",
        instrument=instrument,
        group_id="diffim_template",
        epoch_offset=_TEMPLATE_EPOCH_DAYS,
    )

    science, rows = [], []
    for k in range(n):
        pos_rng = np.random.default_rng(streams[5 + 2 * k])
        noise_rng = np.random.default_rng(streams[6 + 2 * k])
        wk = wcs_s[k]
        xs, ys = _to_pixels(wk, s_ra, s_dec)

        def ok(x, y, wk=wk):
            r, d = wk.forward_transform(np.asarray(x, float), np.asarray(y, float))
            xt, yt = _to_pixels(wcs_t, r, d)
            return _inside(xt, yt, shape, margin)

        tx, ty = _place(
            pos_rng,
            n_tr,
            box=(margin - 0.5, nx - 0.5 - margin, margin - 0.5, ny - 0.5 - margin),
            others=(xs, ys),
            isolation=isolation,
            what=f"{n_tr} transients",
            accept=ok,
        )
        t_flux = _log_uniform(flux_rng, transient_flux_range, n_tr, "transient_flux_range")
        t_ra, t_dec = (np.atleast_1d(np.asarray(a, float)) for a in wk.forward_transform(tx, ty))
        txt, tyt = _to_pixels(wcs_t, t_ra, t_dec)
        signal = render_point_sources(
            shape,
            np.concatenate([xs, tx]),
            np.concatenate([ys, ty]),
            np.concatenate([s_flux, t_flux]),
            kind,
            fwhm=float(f_sci[k]),
            beta=beta,
        )
        science.append(
            _build_model(
                signal + _background_image(shape, c_sci[k]),
                wk,
                sky=0.0,
                sigma=float(noise_science),
                unit_scale=1.0,
                dtype=np.float32,
                rng=noise_rng,
                patches=[],
                saturation=None,
                filename=f"diffim_science{k + 1}_cal.fits",
                instrument=instrument,
                group_id=f"diffim_science{k + 1}",
                epoch_offset=0.0,
            )
        )
        tr = np.zeros(n_tr, dtype=DIFFIM_TRANSIENTS_DTYPE)
        tr["exposure"] = k
        tr["ra"], tr["dec"], tr["x"], tr["y"] = t_ra, t_dec, tx, ty
        tr["x_tmpl"], tr["y_tmpl"], tr["flux"] = txt, tyt, t_flux
        rows.append(tr)

    return DiffimSet(
        template=template,
        science=tuple(science),
        fwhm_template=float(f_tmpl),
        fwhm_science=tuple(float(f) for f in f_sci),
        psf_template=psf_stamp(kind, f_tmpl, beta=beta),
        psf_science=tuple(psf_stamp(kind, float(f), beta=beta) for f in f_sci),
        stars=stars,
        transients=np.concatenate(rows) if rows else np.zeros(0, DIFFIM_TRANSIENTS_DTYPE),
        shifts=sh,
        rotations=rots,
        background_template=c_tmpl,
        background_science=c_sci,
        sigma_template=float(noise_template),
        sigma_science=float(noise_science),
    )


def write_diffim_association(
    directory,
    dataset=None,
    *,
    asn_name="diffim_asn.json",
    product_name="diffim",
    psf_files=True,
    **kwargs,
):
    """Write a difference-imaging set and its association.

    The association has one product whose members are the science exposures
    (``exptype: "science"``) and the template (``exptype: "template"``), the
    input of ``strun stmatch_diffim``.

    Parameters
    ----------
    directory : str or os.PathLike
        Output directory (created if needed).
    dataset : DiffimSet, optional
        What to write (not modified: copies are saved); default
        ``make_diffim_set(**kwargs)``.
    asn_name : str, optional
        File name of the association.
    product_name : str, optional
        Name of the association product (and of the combined catalog).
    psf_files : bool, optional
        Also write the PSF stamps as FITS images (``diffim_psf_template.fits``,
        ``diffim_psf_science<k>.fits``).
    **kwargs
        Passed to `make_diffim_set` when ``dataset`` is None.

    Returns
    -------
    dict
        ``"directory"``, ``"asn"``, ``"template"`` (paths), ``"science"`` (list of
        paths), ``"psf_template"`` and ``"psf_science"`` (paths, or None without
        ``psf_files``), ``"truth"`` (the transients as an ECSV table
        ``diffim_truth.ecsv``) and ``"set"`` (the `DiffimSet`).
    """
    if dataset is None:
        dataset = make_diffim_set(**kwargs)
    elif kwargs:
        raise ValueError("give either a dataset or make_diffim_set arguments, not both")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = {"directory": directory, "set": dataset, "science": []}
    members = []
    for k, model in enumerate(dataset.science):
        path = directory / model.meta.filename
        with model.copy() as copy:
            copy.save(str(path))
        out["science"].append(path)
        members.append({"expname": path.name, "exptype": "science", "group_id": f"science{k + 1}"})
    path = directory / dataset.template.meta.filename
    with dataset.template.copy() as copy:
        copy.save(str(path))
    out["template"] = path
    members.append({"expname": path.name, "exptype": "template", "group_id": "template"})

    out["psf_template"], out["psf_science"] = None, None
    if psf_files:
        from astropy.io import fits

        def write_psf(stamp, name):
            target = directory / name
            fits.PrimaryHDU(np.asarray(stamp, dtype=np.float32)).writeto(target, overwrite=True)
            return target

        out["psf_template"] = write_psf(dataset.psf_template, "diffim_psf_template.fits")
        out["psf_science"] = [
            write_psf(stamp, f"diffim_psf_science{k + 1}.fits")
            for k, stamp in enumerate(dataset.psf_science)
        ]

    from astropy.table import Table

    truth = Table(dataset.transients)
    truth.add_column(
        [dataset.science[k].meta.filename for k in dataset.transients["exposure"]],
        name="exposure_file",
        index=1,
    )
    truth.meta["description"] = (
        "Injected transients: exposure (0-based), its file, sky and pixel positions "
        "(science x, y; template x_tmpl, y_tmpl; 0-based) and flux (image units)."
    )
    out["truth"] = directory / "diffim_truth.ecsv"
    truth.write(out["truth"], format="ascii.ecsv", overwrite=True)

    out["asn"] = write_association(
        directory / asn_name,
        members,
        product_name=product_name,
        asn_type="diffim",
        asn_rule="stmatch_diffim",
    )
    return out

"""Simple TAN (gnomonic) imaging WCS objects for synthetic data.

The WCS objects built here use only standard astropy models (``Shift``,
``Mapping``, ``Polynomial2D``, ``AffineTransformation2D``, ``Pix2Sky_TAN``,
``RotateNative2Celestial``) so that they can be serialised by ``asdf-astropy``
and therefore survive a round trip through a JWST datamodel saved as FITS or
ASDF.
"""

import math

import numpy as np

__all__ = ["make_tan_wcs"]

# Accuracy (pixels) of the truncated series inverse of the radial distortion,
# required out to 1.5 times the half-diagonal of the image (beyond its corners).
_INVERSE_TOLERANCE_PX = 1e-6
_INVERSE_RADIUS_FACTOR = 1.5
_MAX_INVERSE_TERMS = 16
_MAX_DISTORTION = 0.01


def _cd_matrix(pixel_scale, rotation):
    """
    Return the CD matrix (degrees per pixel) of a north-up/east-left image rotated by ``rotation``.

    Parameters
    ----------
    pixel_scale : float
        Pixel scale in arcsec per pixel.
    rotation : float
        Position angle of the detector +y axis, degrees east of north.

    Returns
    -------
    numpy.ndarray
        2x2 matrix mapping pixel offsets ``(dx, dy)`` to intermediate world
        coordinates ``(xi, eta)`` in degrees, ``xi`` increasing to the east.
    """
    scale = pixel_scale / 3600.0
    theta = math.radians(rotation)
    c, s = math.cos(theta), math.sin(theta)
    return scale * np.array([[-c, s], [s, c]])


def _binomial_xy_powers(n):
    """
    Expand ``(x**2 + y**2)**n`` into monomials.

    Parameters
    ----------
    n : int
        Power.

    Returns
    -------
    list of tuple
        ``(coefficient, power_of_x, power_of_y)`` for every monomial.
    """
    return [(math.comb(n, j), 2 * (n - j), 2 * j) for j in range(n + 1)]


def _radial_polynomials(coeffs, degree):
    """
    Build the Polynomial2D pair ``x * f(r**2)``, ``y * f(r**2)``.

    Parameters
    ----------
    coeffs : sequence of float
        ``coeffs[n]`` multiplies ``r**(2n)`` in ``f``.
    degree : int
        Polynomial degree (``2 * (len(coeffs) - 1) + 1``).

    Returns
    -------
    tuple of astropy.modeling.models.Polynomial2D
        Models for the x and y outputs.
    """
    from astropy.modeling.models import Polynomial2D

    px = {}
    py = {}
    for n, cn in enumerate(coeffs):
        if cn == 0.0:
            continue
        for comb, i, j in _binomial_xy_powers(n):
            # x * x**i * y**j  and  y * x**i * y**j
            kx = f"c{i + 1}_{j}"
            ky = f"c{i}_{j + 1}"
            px[kx] = px.get(kx, 0.0) + cn * comb
            py[ky] = py.get(ky, 0.0) + cn * comb
    return Polynomial2D(degree, **px), Polynomial2D(degree, **py)


def _inverse_series_coefficients(a, rmax):
    """
    Coefficients of the series inverse of ``r' = r (1 + a r**2)``.

    Lagrange inversion gives ``r = r' * sum_n (-1)**n C_n a**n r'**(2n)`` with
    ``C_n = binomial(3n, n) / (2n + 1)``; the series converges for
    ``|a| r'**2 < 4/27``.

    Parameters
    ----------
    a : float
        Cubic radial coefficient (per pixel squared).
    rmax : float
        Largest radius (pixels) at which the truncation error must be below
        ``_INVERSE_TOLERANCE_PX``.

    Returns
    -------
    list of float
        ``coeffs[n]`` multiplies ``r'**(2n)``.
    """
    coeffs = [1.0]
    for n in range(1, _MAX_INVERSE_TERMS + 1):
        cn = (-1) ** n * math.comb(3 * n, n) / (2 * n + 1) * a**n
        coeffs.append(cn)
        # size of the next term at rmax
        nxt = math.comb(3 * n + 3, n + 1) / (2 * n + 3) * abs(a) ** (n + 1)
        if nxt * rmax ** (2 * n + 3) < _INVERSE_TOLERANCE_PX:
            return coeffs
    raise ValueError("the series inverse of the distortion does not converge fast enough")


def _distortion_model(distortion, half_diagonal):
    """
    Radial distortion ``x' = x (1 + k rho**2)`` with an explicit polynomial inverse.

    Parameters
    ----------
    distortion : float
        Dimensionless coefficient ``k``.
    half_diagonal : float
        Normalisation radius (pixels) for ``rho = r / half_diagonal``.

    Returns
    -------
    astropy.modeling.Model
        Two-input, two-output model with ``.inverse`` assigned.
    """
    from astropy.modeling.models import Mapping

    a = distortion / half_diagonal**2
    fx, fy = _radial_polynomials([1.0, a], 3)
    forward = Mapping((0, 1, 0, 1)) | fx & fy
    # The inverse series must be accurate over the image and a margin around it.
    rmax = _INVERSE_RADIUS_FACTOR * half_diagonal
    if abs(distortion) > _MAX_DISTORTION:
        raise ValueError(
            f"|distortion| must be <= {_MAX_DISTORTION} for the series inverse, got {distortion}"
        )
    coeffs = _inverse_series_coefficients(a, rmax)
    gx, gy = _radial_polynomials(coeffs, 2 * (len(coeffs) - 1) + 1)
    forward.inverse = Mapping((0, 1, 0, 1)) | gx & gy
    forward.name = "radial_distortion"
    return forward


def make_tan_wcs(shape, *, ra, dec, pixel_scale=0.06, rotation=0.0, distortion=0.0, crpix=None):
    """
    Build a gnomonic (TAN) imaging `gwcs.wcs.WCS`, optionally with radial distortion.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    ra, dec : float
        World coordinates (ICRS, degrees) of the reference pixel ``crpix``.
    pixel_scale : float, optional
        Pixel scale in arcsec per pixel (same along both axes).
    rotation : float, optional
        Position angle, in degrees, of the detector +y axis measured from
        north through east.  With ``rotation=0`` north is +y and east is -x
        (the usual sky orientation, parity -1); with ``rotation=90`` the
        +y axis points east.
    distortion : float, optional
        Dimensionless radial distortion coefficient ``k``: pixel offsets
        ``(x, y)`` from ``crpix`` are mapped to
        ``(x, y) * (1 + k * (r / R)**2)`` before the linear transform, where
        ``R = hypot(nx, ny) / 2`` is the half-diagonal of the image.  The
        inverse is a truncated series (accurate to 1e-6 px out to 1.5 times the
        half-diagonal) expressed as a ``Polynomial2D`` pair.  Must satisfy
        ``|k| <= 0.01``.
    crpix : tuple of float, optional
        Reference pixel ``(x, y)`` in 0-based pixel coordinates.  Defaults to
        the image centre ``((nx - 1) / 2, (ny - 1) / 2)``.

    Returns
    -------
    gwcs.wcs.WCS
        WCS from the ``"detector"`` frame (pixels) to the ``"world"`` frame
        (ICRS, degrees), with ``bounding_box = ((-0.5, nx - 0.5), (-0.5, ny - 0.5))``
        (x first).

    Examples
    --------
    >>> w = make_tan_wcs((100, 200), ra=10.0, dec=-5.0)
    >>> [round(float(v), 9) for v in w(99.5, 49.5)]
    [10.0, -5.0]
    """
    from astropy import coordinates as coord
    from astropy import units as u
    from astropy.modeling import models
    from gwcs import coordinate_frames as cf
    from gwcs import wcs as gwcs_wcs

    ny, nx = (int(n) for n in shape)
    if crpix is None:
        crpix = ((nx - 1) / 2.0, (ny - 1) / 2.0)
    crpix_x, crpix_y = (float(c) for c in crpix)

    transform = models.Shift(-crpix_x, name="crpix1") & models.Shift(-crpix_y, name="crpix2")
    if distortion:
        half_diagonal = 0.5 * math.hypot(nx, ny)
        transform = transform | _distortion_model(float(distortion), half_diagonal)
    cd = _cd_matrix(float(pixel_scale), float(rotation))
    transform = (
        transform
        | models.AffineTransformation2D(matrix=cd, translation=[0.0, 0.0], name="cd_matrix")
        | models.Pix2Sky_TAN()
        | models.RotateNative2Celestial(float(ra), float(dec), 180.0)
    )

    detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    sky = cf.CelestialFrame(
        reference_frame=coord.ICRS(), name="world", unit=(u.deg, u.deg), axes_order=(0, 1)
    )
    wcs = gwcs_wcs.WCS([(detector, transform), (sky, None)])
    wcs.bounding_box = ((-0.5, nx - 0.5), (-0.5, ny - 0.5))
    wcs.pixel_shape = (nx, ny)
    return wcs


def _tan_fits_keywords(shape, *, ra, dec, pixel_scale, rotation, crpix=None):
    """
    FITS-like linear WCS keywords (ignoring distortion) for ``meta.wcsinfo``.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    ra, dec : float
        Reference world coordinates in degrees.
    pixel_scale : float
        Arcsec per pixel.
    rotation : float
        Position angle of +y east of north, degrees.
    crpix : tuple of float, optional
        0-based reference pixel; defaults to the image centre.

    Returns
    -------
    dict
        Keyword values (``crpix`` 1-based).
    """
    ny, nx = shape
    if crpix is None:
        crpix = ((nx - 1) / 2.0, (ny - 1) / 2.0)
    theta = math.radians(rotation)
    c, s = math.cos(theta), math.sin(theta)
    cdelt = pixel_scale / 3600.0
    return {
        "ctype1": "RA---TAN",
        "ctype2": "DEC--TAN",
        "cunit1": "deg",
        "cunit2": "deg",
        "crpix1": float(crpix[0]) + 1.0,
        "crpix2": float(crpix[1]) + 1.0,
        "crval1": float(ra),
        "crval2": float(dec),
        "cdelt1": cdelt,
        "cdelt2": cdelt,
        "pc1_1": -c,
        "pc1_2": s,
        "pc2_1": s,
        "pc2_2": c,
        "ra_ref": float(ra),
        "dec_ref": float(dec),
        "v2_ref": 0.0,
        "v3_ref": 0.0,
        "roll_ref": float(rotation) % 360.0,
        "v3yangle": 0.0,
        "vparity": -1,
        "wcsaxes": 2,
    }


def _local_linear_wcs(wcs, shape):
    """
    Local linear approximation of ``wcs`` at the image centre.

    Parameters
    ----------
    wcs : gwcs.wcs.WCS
        Imaging WCS.
    shape : tuple of int
        Image shape ``(ny, nx)``.

    Returns
    -------
    dict
        ``ra``, ``dec`` of the centre pixel, ``crpix`` (0-based),
        ``pixel_scale`` (arcsec), ``rotation`` (degrees, PA of +y east of north)
        and ``cd`` (degrees/pixel, 2x2).
    """
    ny, nx = shape
    x0, y0 = (nx - 1) / 2.0, (ny - 1) / 2.0
    transform = wcs.forward_transform
    h = 0.5
    ra, dec = transform(
        np.array([x0, x0 + h, x0 - h, x0, x0]), np.array([y0, y0, y0, y0 + h, y0 - h])
    )
    # project on the tangent plane at the centre (xi east, eta north), degrees
    ra0, dec0 = math.radians(ra[0]), math.radians(dec[0])
    r, d = np.radians(ra), np.radians(dec)
    cosc = math.sin(dec0) * np.sin(d) + math.cos(dec0) * np.cos(d) * np.cos(r - ra0)
    xi = np.cos(d) * np.sin(r - ra0) / cosc
    eta = (math.cos(dec0) * np.sin(d) - math.sin(dec0) * np.cos(d) * np.cos(r - ra0)) / cosc
    xi, eta = np.degrees(xi), np.degrees(eta)
    cd = np.array(
        [
            [(xi[1] - xi[2]) / (2 * h), (xi[3] - xi[4]) / (2 * h)],
            [(eta[1] - eta[2]) / (2 * h), (eta[3] - eta[4]) / (2 * h)],
        ]
    )
    scale_deg = math.sqrt(abs(np.linalg.det(cd)))
    rotation = math.degrees(math.atan2(cd[0, 1], cd[1, 1]))
    return {
        "ra": float(ra[0]),
        "dec": float(dec[0]),
        "crpix": (x0, y0),
        "pixel_scale": scale_deg * 3600.0,
        "rotation": rotation,
        "cd": cd,
    }


def _s_region(wcs, shape):
    """
    ``POLYGON ICRS`` string of the image corners.

    Parameters
    ----------
    wcs : gwcs.wcs.WCS
        Image WCS.
    shape : tuple of int
        ``(ny, nx)``.

    Returns
    -------
    str
        The S_REGION value.
    """
    ny, nx = shape
    x = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    ra, dec = wcs.forward_transform(x, y)
    coords = " ".join(f"{r:.9f} {d:.9f}" for r, d in zip(ra, dec, strict=True))
    return f"POLYGON ICRS  {coords}"

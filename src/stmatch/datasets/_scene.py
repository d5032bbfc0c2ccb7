"""Synthetic sky scenes: point sources and diffuse light on the sphere."""

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Scene", "make_scene"]

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
_STAMP_NSIGMA = 5.0
_DIFFUSE_GRID_STEP = 8
_DIFFUSE_FULL_GRID_MAX = 64 * 64

_INSTRUMENT_DEFAULTS = {
    "NIRCAM": {"detector": "NRCA1", "filter": "F200W", "exptype": "NRC_IMAGE"},
    "NIRISS": {"detector": "NIS", "filter": "F150W", "exptype": "NIS_IMAGE"},
    "MIRI": {"detector": "MIRIMAGE", "filter": "F770W", "exptype": "MIR_IMAGE"},
}
_NIRCAM_DETECTORS = ("NRCA1", "NRCA2", "NRCA3", "NRCA4", "NRCB1", "NRCB2", "NRCB3", "NRCB4")

# exposure timing metadata (arbitrary but self-consistent)
_EXPTIME = 500.0
_MJD_START = 61041.0  # 2026-01-01T00:00:00


@dataclass(frozen=True)
class Scene:
    """
    Truth catalogue of a synthetic sky.

    Attributes
    ----------
    ra, dec : numpy.ndarray
        Point-source positions (ICRS, degrees).
    flux : numpy.ndarray
        Total point-source fluxes in data units (sum over pixels).
    diffuse_ra, diffuse_dec : numpy.ndarray
        Centres (degrees) of large circular Gaussian diffuse sources.
    diffuse_amplitude : numpy.ndarray
        Peak surface brightness of each diffuse source (data units per pixel).
    diffuse_sigma : numpy.ndarray
        Gaussian sigma of each diffuse source in arcsec.
    psf_fwhm : float
        FWHM of the circular Gaussian PSF in arcsec.
    """

    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray
    diffuse_ra: np.ndarray
    diffuse_dec: np.ndarray
    diffuse_amplitude: np.ndarray
    diffuse_sigma: np.ndarray
    psf_fwhm: float

    @property
    def n_stars(self):
        """int: Number of point sources."""
        return int(np.size(self.ra))

    @property
    def n_diffuse(self):
        """int: Number of diffuse sources."""
        return int(np.size(self.diffuse_ra))


def _random_points_in_cap(rng, n, ra, dec, radius):
    """
    Draw points uniformly distributed on the sphere within ``radius`` of ``(ra, dec)``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    n : int
        Number of points.
    ra, dec : float
        Cap centre in degrees.
    radius : float
        Cap radius in degrees.

    Returns
    -------
    tuple of numpy.ndarray
        RA and Dec in degrees.
    """
    cos_r = math.cos(math.radians(radius))
    cos_d = rng.uniform(cos_r, 1.0, n)  # uniform in cos(distance) = uniform in area
    dist = np.arccos(np.clip(cos_d, -1.0, 1.0))
    bearing = rng.uniform(0.0, 2.0 * np.pi, n)
    return _offset_by(ra, dec, bearing, dist)


def _offset_by(ra, dec, bearing, dist):
    """
    Move from ``(ra, dec)`` by angular distance ``dist`` along position angle ``bearing``.

    Parameters
    ----------
    ra, dec : float
        Start point in degrees.
    bearing : numpy.ndarray
        Position angle (radians, east of north).
    dist : numpy.ndarray
        Angular distance in radians.

    Returns
    -------
    tuple of numpy.ndarray
        RA in ``[0, 360)`` and Dec, degrees.
    """
    lon0 = math.radians(ra)
    lat0 = math.radians(dec)
    sin_lat = math.sin(lat0) * np.cos(dist) + math.cos(lat0) * np.sin(dist) * np.cos(bearing)
    lat = np.arcsin(np.clip(sin_lat, -1.0, 1.0))
    dlon = np.arctan2(
        np.sin(bearing) * np.sin(dist) * math.cos(lat0),
        np.cos(dist) - math.sin(lat0) * sin_lat,
    )
    return np.degrees(lon0 + dlon) % 360.0, np.degrees(lat)


def _unit_vectors(ra, dec):
    """
    Cartesian unit vectors of sky positions.

    Parameters
    ----------
    ra, dec : array-like
        Positions in degrees.

    Returns
    -------
    numpy.ndarray
        Array of shape ``(..., 3)``.
    """
    ra = np.radians(np.asarray(ra, dtype=float))
    dec = np.radians(np.asarray(dec, dtype=float))
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def make_scene(
    *,
    ra,
    dec,
    radius,
    n_stars=200,
    flux_range=(50.0, 5000.0),
    n_diffuse=1,
    diffuse_amplitude=5.0,
    diffuse_sigma=None,
    psf_fwhm=0.12,
    seed=0,
):
    """
    Make a random scene of point sources and large diffuse sources.

    Parameters
    ----------
    ra, dec : float
        Scene centre (ICRS, degrees).
    radius : float
        Radius (degrees) of the circular region populated with stars.
    n_stars : int, optional
        Number of point sources, distributed uniformly (per unit solid angle)
        within ``radius`` of the centre.
    flux_range : tuple of float, optional
        Minimum and maximum total flux; fluxes are log-uniform in this range.
    n_diffuse : int, optional
        Number of diffuse Gaussian sources (may be 0); their centres are drawn
        uniformly within ``radius / 4`` of the scene centre.
    diffuse_amplitude : float or array-like, optional
        Peak surface brightness (data units per pixel) of the diffuse sources;
        a scalar applies to all of them.
    diffuse_sigma : float or array-like, optional
        Gaussian sigma (arcsec) of the diffuse sources.  Default:
        ``radius / 3`` expressed in arcsec.
    psf_fwhm : float, optional
        FWHM (arcsec) of the circular Gaussian PSF.
    seed : int, optional
        Seed for `numpy.random.default_rng`.

    Returns
    -------
    Scene
        The truth catalogue.
    """
    if radius <= 0:
        raise ValueError("radius must be positive")
    n_stars = int(n_stars)
    n_diffuse = int(n_diffuse)
    if n_stars < 0 or n_diffuse < 0:
        raise ValueError("n_stars and n_diffuse must be non-negative")
    fmin, fmax = (float(f) for f in flux_range)
    if not 0 < fmin <= fmax:
        raise ValueError("flux_range must satisfy 0 < min <= max")

    star_rng, diffuse_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
    )
    star_ra, star_dec = _random_points_in_cap(star_rng, n_stars, ra, dec, radius)
    flux = np.exp(star_rng.uniform(math.log(fmin), math.log(fmax), n_stars))

    d_ra, d_dec = _random_points_in_cap(diffuse_rng, n_diffuse, ra, dec, radius / 4.0)
    if diffuse_sigma is None:
        diffuse_sigma = radius * 3600.0 / 3.0
    amp = np.broadcast_to(np.asarray(diffuse_amplitude, dtype=float), (n_diffuse,)).copy()
    sig = np.broadcast_to(np.asarray(diffuse_sigma, dtype=float), (n_diffuse,)).copy()
    return Scene(
        ra=star_ra,
        dec=star_dec,
        flux=flux,
        diffuse_ra=d_ra,
        diffuse_dec=d_dec,
        diffuse_amplitude=amp,
        diffuse_sigma=sig,
        psf_fwhm=float(psf_fwhm),
    )

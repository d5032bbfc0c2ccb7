r"""Exposures of one field with different smooth background offsets, for background matching.

Every exposure sees the same sky (stars and large diffuse sources, rendered through
its own WCS) plus its own smooth background :math:`B_k`, a polynomial of order
two in the exposure's own normalised pixel coordinates

.. math::

    B_k(x, y) = c_{k0} + c_{k1} u + c_{k2} v + c_{k3} u^2 + c_{k4} u v + c_{k5} v^2,
    \qquad u = \frac{2x - (n_x - 1)}{n_x - 1},\quad v = \frac{2y - (n_y - 1)}{n_y - 1},

so that ``(u, v)`` spans :math:`[-1, 1]^2` from the first to the last pixel centre.
Matching exposure :math:`k` to a reference :math:`r` should add
:math:`M_k(x) = B_r(T(x)) - B_k(x)`, where :math:`T` maps a pixel of exposure
:math:`k` to the reference's pixels through the two WCS
(`BackgroundMatchSet.expected_model`); the diffuse light, common to both, must stay.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._asn import write_association
from ._render import _render_image
from ._scene import Scene, make_scene
from ._wcs import make_tan_wcs

__all__ = ["BackgroundMatchSet", "make_bgmatch_exposures", "write_bgmatch_exposures"]

N_COEFFICIENTS = 6


@dataclass
class BackgroundMatchSet:
    """Exposures of one field with known smooth background offsets.

    Attributes
    ----------
    models : list of stdatamodels.jwst.datamodels.ImageModel
        The exposures (float32 data with noise, variance arrays, DQ, GWCS).
    coefficients : numpy.ndarray
        ``(n, 6)`` coefficients :math:`c_{k0..k5}` of each exposure's background
        (see the module notes); :math:`c_{k0}` is its mean level.
    wcs : list of gwcs.wcs.WCS
        WCS of each exposure.
    scene : Scene
        What is on the sky (shared by all exposures).
    """

    models: list
    coefficients: np.ndarray
    wcs: list
    scene: Scene

    def __len__(self):
        """Return the number of exposures."""
        return len(self.models)

    def background(self, k, x, y):
        """Background :math:`B_k` of exposure ``k`` at its own pixel positions ``(x, y)``."""
        ny, nx = np.shape(self.models[k].data)
        u = (2.0 * np.asarray(x, dtype=np.float64) - (nx - 1)) / max(nx - 1, 1)
        v = (2.0 * np.asarray(y, dtype=np.float64) - (ny - 1)) / max(ny - 1, 1)
        c = self.coefficients[k]
        return c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * u * v + c[5] * v * v

    def to_exposure(self, k, j, x, y):
        """Pixel positions in exposure ``j`` of the pixels ``(x, y)`` of exposure ``k``."""
        ra, dec = self.wcs[k].forward_transform(np.asarray(x, float), np.asarray(y, float))
        return self.wcs[j].backward_transform(ra, dec)

    def expected_model(self, k, reference):
        """The model that matches exposure ``k`` to ``reference``, on ``k``'s pixel grid.

        :math:`M_k(x) = B_r(T(x)) - B_k(x)` (see the module notes).
        """
        ny, nx = np.shape(self.models[k].data)
        y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
        if k == reference:
            return np.zeros((ny, nx))
        xr, yr = self.to_exposure(k, reference, x, y)
        return self.background(reference, xr, yr) - self.background(k, x, y)


def _coefficients(rng, n, order, amplitude, levels):
    coeffs = np.zeros((n, N_COEFFICIENTS))
    coeffs[:, 0] = levels
    if order >= 1:
        coeffs[:, 1:3] = rng.uniform(-amplitude, amplitude, (n, 2))
    if order >= 2:
        coeffs[:, 3:6] = rng.uniform(-amplitude / 2.0, amplitude / 2.0, (n, 3))
    return coeffs


def make_bgmatch_exposures(
    n_exposures=3,
    *,
    shape=(128, 128),
    order=2,
    amplitude=2.0,
    levels=None,
    coefficients=None,
    shifts=None,
    rotations=None,
    noise=1.0,
    n_stars=0,
    n_diffuse=2,
    diffuse_amplitude=5.0,
    pixel_scale=0.06,
    ra=150.0,
    dec=2.0,
    instrument="NIRCAM",
    seed=0,
):
    """Make exposures of one field that differ by smooth background offsets.

    Parameters
    ----------
    n_exposures : int, optional
        Number of exposures.
    shape : tuple of int, optional
        ``(ny, nx)`` of every exposure.
    order : {0, 1, 2}, optional
        Order of the random background polynomials (0: constant levels,
        1: planes, 2: quadratic surfaces).
    amplitude : float, optional
        Largest linear coefficient (quadratic ones up to half of it).
    levels : sequence of float, optional
        Mean level :math:`c_{k0}` of each exposure; default uniform in (1, 8).
    coefficients : array_like, optional
        ``(n_exposures, 6)`` coefficients, instead of random ones.
    shifts : sequence of (float, float), optional
        Pixel offset ``(dx, dy)`` of each exposure's centre from exposure 0's,
        measured in exposure 0's pixels; default all zero (one pixel grid).
    rotations : sequence of float, optional
        Position angle (degrees) of each exposure; default all zero.
    noise : float or sequence of float, optional
        Gaussian noise sigma (one value per exposure, or one for all).
    n_stars : int, optional
        Stars in the field (shared by all exposures).
    n_diffuse : int, optional
        Diffuse Gaussian sources (shared by all exposures), with a sigma of a
        quarter of the field so that they vary across each exposure.
    diffuse_amplitude : float, optional
        Peak surface brightness of the diffuse sources.
    pixel_scale : float, optional
        Arcsec per pixel.
    ra, dec : float, optional
        Centre of exposure 0 (degrees).
    instrument : str, optional
        ``"NIRCAM"``, ``"NIRISS"`` or ``"MIRI"``.
    seed : int, optional
        Seed of everything.

    Returns
    -------
    BackgroundMatchSet
    """
    n = int(n_exposures)
    if n < 1:
        raise ValueError("n_exposures must be >= 1")
    if order not in (0, 1, 2):
        raise ValueError(f"order must be 0, 1 or 2, got {order!r}")
    ny, nx = (int(s) for s in shape)
    geom_rng, bg_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    if coefficients is not None:
        coeffs = np.array(coefficients, dtype=np.float64)
        if coeffs.shape != (n, N_COEFFICIENTS):
            raise ValueError(f"coefficients must have shape ({n}, {N_COEFFICIENTS})")
    else:
        lv = bg_rng.uniform(1.0, 8.0, n) if levels is None else np.asarray(levels, float)
        if lv.shape != (n,):
            raise ValueError(f"levels must have {n} values")
        coeffs = _coefficients(bg_rng, n, order, float(amplitude), lv)
    shifts = np.zeros((n, 2)) if shifts is None else np.asarray(shifts, dtype=np.float64)
    rotations = np.zeros(n) if rotations is None else np.asarray(rotations, dtype=np.float64)
    noise = np.broadcast_to(np.asarray(noise, dtype=np.float64), (n,))
    if shifts.shape != (n, 2) or rotations.shape != (n,):
        raise ValueError(f"shifts must be ({n}, 2) and rotations ({n},)")

    wcs0 = make_tan_wcs(shape, ra=ra, dec=dec, pixel_scale=pixel_scale)
    cx, cy = (nx - 1) / 2.0, (ny - 1) / 2.0
    half_diag = 0.5 * np.hypot(nx, ny) * pixel_scale  # arcsec
    extent = half_diag + float(np.abs(shifts).max(initial=0.0)) * pixel_scale
    scene = make_scene(
        ra=ra,
        dec=dec,
        radius=1.5 * extent / 3600.0,
        n_stars=int(n_stars),
        n_diffuse=int(n_diffuse),
        diffuse_amplitude=diffuse_amplitude,
        diffuse_sigma=0.5 * half_diag,
        seed=int(geom_rng.integers(2**31)),
    )
    models, wcs_list = [], []
    for k in range(n):
        rk, dk = wcs0.forward_transform(cx + shifts[k, 0], cy + shifts[k, 1])
        wcs = make_tan_wcs(
            shape, ra=float(rk), dec=float(dk), pixel_scale=pixel_scale, rotation=rotations[k]
        )
        name = f"bgm_{int(seed)}_{k}"
        model = _render_image(
            scene,
            wcs,
            shape,
            sky=0.0,
            noise=float(noise[k]),
            gain=None,
            seed=int(np.random.SeedSequence([int(seed), 3, k]).generate_state(1)[0]),
            nan_patches=0,
            dq_fraction=0.0,
            saturation=None,
            instrument=instrument,
            exptype=None,
            filter_name=None,
            filename=f"{name}_cal.fits",
            group_id=name,
        )
        models.append(model)
        wcs_list.append(wcs)
    out = BackgroundMatchSet(models=models, coefficients=coeffs, wcs=wcs_list, scene=scene)
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    for k, model in enumerate(models):
        model.data = (model.data + out.background(k, x, y)).astype(np.float32)
    return out


def write_bgmatch_exposures(
    exposures, directory, *, asn_name="bgmatch_asn.json", product_name="bgm"
):
    """Write the exposures as FITS files and a level-3 image association.

    Parameters
    ----------
    exposures : BackgroundMatchSet
        Output of `make_bgmatch_exposures`.
    directory : str or os.PathLike
        Output directory (created if needed).
    asn_name : str, optional
        File name of the association.
    product_name : str, optional
        Name of the association product.

    Returns
    -------
    pathlib.Path
        Path of the association file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    members = []
    for model in exposures.models:
        name = Path(model.meta.filename).name
        model.save(str(directory / name))
        model.meta.filename = name
        members.append(
            {"expname": name, "exptype": "science", "group_id": str(model.meta.group_id)}
        )
    return write_association(
        directory / asn_name, members, product_name=product_name, asn_rule="stmatch_synthetic"
    )

r"""A synthetic exposure with a spatially varying PSF, for PSF matching.

`make_psfmatch_exposure` renders isolated stars, each with the PSF *at its own
position*, whose FWHM varies smoothly over the detector; it returns the image,
the PSF on a grid of nodes (a `~stmatch.models.PsfModel`, as an stpsf grid
would give it), the FWHM field, the truth catalogue and a target FWHM wider
than the widest exposure PSF. `write_psfmatch_exposure` writes the image, the
PSF grid and a Gaussian target PSF.

The exposure is

.. math::

    I(\mathbf x) = b + \sum_k f_k\, P_{\phi(\mathbf x_k)}(\mathbf x - \mathbf x_k)
    + \epsilon(\mathbf x),

with the pixel-integrated, unit-sum Gaussian or Moffat profile
:math:`P_\phi` of FWHM :math:`\phi`, the FWHM field :math:`\phi(x, y)`, a
constant background :math:`b` and white Gaussian noise :math:`\epsilon`. A
kernel :math:`K(x, y)` with :math:`K \otimes P_{\phi(x, y)} = T` turns every
star into the target PSF :math:`T`; between pixel-integrated Gaussians it is
the point-sampled Gaussian of :math:`\sigma_K^2 = \sigma_T^2 - \sigma^2(x, y)`.
"""

import math
from dataclasses import dataclass

import numpy as np

from stmatch.algorithms.psf import gaussian_psf, moffat_psf

from ._points import (
    _check_kind,
    _check_positive,
    _check_shape,
    _check_size,
    _default_stamp_size,
    psf_stamp,
)
from ._wcs import make_tan_wcs
from ._zogy import _build_model, _log_uniform, _nan_patches, _place

__all__ = ["FwhmField", "PsfMatchExposure", "make_psfmatch_exposure", "write_psfmatch_exposure"]

STARS_DTYPE = np.dtype([("x", "f8"), ("y", "f8"), ("flux", "f8"), ("fwhm", "f8")])
"""Truth catalogue: pixel position, total flux and the true PSF FWHM (pixels) there."""

_VARIATIONS = ("quadratic", "linear", "none")
_TARGET_FACTOR = 1.25  # default target FWHM: this times the widest exposure FWHM
_ISOLATION_FWHMS = 4.0  # default minimum separation of the stars, in widest FWHMs
_EDGE_FWHMS = 2.0  # star centres stay this many widest FWHMs inside the image edges
_PIXEL_SCALE = 0.06  # arcsec per pixel of the synthetic WCS


@dataclass(frozen=True)
class FwhmField:
    r"""The FWHM :math:`\phi(x, y)` (pixels) of the exposure PSF over the detector.

    With :math:`(\phi_0, \phi_1)` = ``fwhm_range`` and an image of ``(ny, nx)``
    pixels (pixel centres at integers, x the column):

    - ``"quadratic"``: :math:`\phi = \phi_0 + (\phi_1 - \phi_0)\, \rho^2`, with
      :math:`\rho^2 = ((x - x_c)^2 + (y - y_c)^2) / ((n_x/2)^2 + (n_y/2)^2)`
      about the image centre :math:`(x_c, y_c) = ((n_x - 1)/2, (n_y - 1)/2)`:
      smallest at the centre, :math:`\phi_1` at the four outer corners of the
      image (pixel edges);
    - ``"linear"``: :math:`\phi = \phi_0 + (\phi_1 - \phi_0)\,
      \tfrac12 \left(\frac{x + 1/2}{n_x} + \frac{y + 1/2}{n_y}\right)`:
      :math:`\phi_0` at the outer corner of pixel (0, 0), :math:`\phi_1` at
      the opposite corner;
    - ``"none"``: :math:`\phi = \phi_0` everywhere.

    Positions beyond the image follow the same polynomial.

    Attributes
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    fwhm_range : tuple of float
        :math:`(\phi_0, \phi_1)`, pixels.
    variation : str
        ``"quadratic"``, ``"linear"`` or ``"none"``.
    """

    shape: tuple
    fwhm_range: tuple
    variation: str

    def __call__(self, x, y):
        """FWHM at detector positions.

        Parameters
        ----------
        x, y : float or array_like
            Positions in pixels (broadcast together).

        Returns
        -------
        float or numpy.ndarray
            FWHM in pixels; a float for scalar positions.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        ny, nx = self.shape
        lo, hi = self.fwhm_range
        if self.variation == "quadratic":
            r2 = ((x - (nx - 1) / 2.0) ** 2 + (y - (ny - 1) / 2.0) ** 2) / (
                (nx / 2.0) ** 2 + (ny / 2.0) ** 2
            )
            out = lo + (hi - lo) * r2
        elif self.variation == "linear":
            out = lo + (hi - lo) * 0.5 * ((x + 0.5) / nx + (y + 0.5) / ny)
        else:
            out = np.full(np.broadcast(x, y).shape, float(lo))
        return float(out) if np.ndim(out) == 0 else out

    @property
    def widest(self):
        """float: The largest FWHM over the image (pixels)."""
        return float(self.fwhm_range[0] if self.variation == "none" else self.fwhm_range[1])


@dataclass(frozen=True, eq=False)
class PsfMatchExposure:
    """A synthetic exposure with a spatially varying PSF (`make_psfmatch_exposure`).

    Attributes
    ----------
    model : stdatamodels.jwst.datamodels.ImageModel
        The exposure: float32 ``data``, ``err``, ``var_rnoise``,
        ``var_poisson`` (0), ``var_flat`` (0), uint32 ``dq``, a GWCS
        ``meta.wcs`` and jwst imaging metadata (``MJy/sr``).
    psf : stmatch.models.PsfModel
        The exposure PSF at the nodes of a grid: ``psf.data[i]`` is exactly
        the stamp a star centred on node ``(grid_x[i], grid_y[i])`` is
        rendered with (sampled ``oversampling`` times finer than the
        pixels, pixel-integrated, for ``oversampling > 1``).
    fwhm_at : FwhmField
        Callable ``(x, y) -> FWHM`` (pixels) of the exposure PSF.
    stars : numpy.ndarray
        Structured array (``x``, ``y``, ``flux``, ``fwhm``): position
        (pixels), total flux (data units) and the PSF FWHM at the star.
    target_fwhm : float
        FWHM (pixels) of the Gaussian target PSF.
    psf_kind : str
        ``"gaussian"`` or ``"moffat"``.
    beta : float
        Moffat index.
    psf_size : int
        Odd side (detector pixels) of the stamps the stars are rendered with.
    noise : float
        Standard deviation of the Gaussian noise.
    background : float
        Constant background level.
    """

    model: object
    psf: object
    fwhm_at: FwhmField
    stars: np.ndarray
    target_fwhm: float
    psf_kind: str = "gaussian"
    beta: float = 2.5
    psf_size: int = 25
    noise: float = 1.0
    background: float = 0.0

    def psf_at(self, x, y, *, size=None):
        """The exact exposure PSF at a position, detector sampled.

        Parameters
        ----------
        x, y : float
            Detector position (pixels).
        size : int, optional
            Odd stamp side; default ``psf_size``.

        Returns
        -------
        numpy.ndarray
            Centred, pixel-integrated unit-sum stamp of FWHM ``fwhm_at(x, y)``
            (what a star centred on a pixel at ``(x, y)`` is rendered with).
        """
        size = self.psf_size if size is None else size
        return psf_stamp(self.psf_kind, self.fwhm_at(x, y), size=size, beta=self.beta)

    def target_psf(self, *, size=None):
        """The Gaussian target PSF stamp.

        Parameters
        ----------
        size : int, optional
            Odd stamp side; default the larger of ``psf_size`` and the
            smallest odd integer ``>= 8 * target_fwhm``.

        Returns
        -------
        numpy.ndarray
            Centred, pixel-integrated unit-sum Gaussian of FWHM ``target_fwhm``.
        """
        if size is None:
            size = max(self.psf_size, _default_stamp_size(self.target_fwhm))
        return psf_stamp("gaussian", self.target_fwhm, size=size)

    def target_psf_model(self, *, size=None):
        """The target PSF as a single-stamp `~stmatch.models.PsfModel`.

        Parameters
        ----------
        size : int, optional
            Odd stamp side, see `target_psf`.

        Returns
        -------
        stmatch.models.PsfModel
            ``meta.psf.source = "analytic"``, ``fwhm = target_fwhm``.
        """
        from stmatch.models import PsfModel

        return PsfModel.from_arrays(
            self.target_psf(size=size),
            source="analytic",
            fwhm=self.target_fwhm,
            pixel_scale=_PIXEL_SCALE,
            description=f"Gaussian target PSF, FWHM {self.target_fwhm:.4g} px",
        )


def _check_range(bounds, name):
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max) of numbers, got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"{name} must satisfy 0 < min <= max, got {bounds!r}")
    return lo, hi


def _check_grid(grid):
    try:
        gy, gx = (int(g) for g in grid)
    except (TypeError, ValueError):
        raise ValueError(f"grid must be a pair (n_y, n_x) of integers, got {grid!r}") from None
    if gy < 1 or gx < 1 or (gy, gx) != tuple(grid):
        raise ValueError(f"grid must be a pair (n_y, n_x) of integers >= 1, got {grid!r}")
    return gy, gx


def _nodes(n, length):
    """``n`` node positions spanning the pixel centres ``0 .. length - 1``."""
    if n == 1:
        return np.array([(length - 1) / 2.0])
    return np.linspace(0.0, length - 1.0, n)


def _stamp(kind, fwhm, size, beta, dy=0.0, dx=0.0):
    """Unit-sum pixel-integrated stamp of a source at ``(dy, dx)`` from the centre pixel."""
    centre = (size // 2 + dy, size // 2 + dx)
    if kind == "gaussian":
        return gaussian_psf(size, fwhm, center=centre)
    return moffat_psf(size, fwhm, beta=beta, center=centre)


def _oversampled_stamp(kind, fwhm, size, beta, k):
    r"""Effective PSF sampled ``k`` (odd) times finer than the pixels.

    Sample ``(c + k m + p, c + k n + q)`` (``c = (k size) // 2``) is the
    detector pixel ``(m, n)`` of a source offset by ``(-p/k, -q/k)`` from the
    centre pixel, i.e. the pixel-integrated PSF at offset
    :math:`(m + p/k,\, n + q/k)` (Anderson & King 2000, PASP 112, 1360);
    the sub-grid ``p = q = 0`` is the detector-sampled stamp.
    """
    out = np.empty((k * size, k * size))
    h = k // 2
    for p in range(-h, h + 1):
        for q in range(-h, h + 1):
            out[p + h :: k, q + h :: k] = _stamp(kind, fwhm, size, beta, -p / k, -q / k)
    return out


def _render(shape, stars, kind, size, beta):
    """Noise-free image of the stars, each with the PSF of its own FWHM."""
    ny, nx = shape
    image = np.zeros(shape)
    half = size // 2
    for x, y, flux, fwhm in stars:
        cy, cx = int(math.floor(y + 0.5)), int(math.floor(x + 0.5))
        stamp = _stamp(kind, fwhm, size, beta, y - cy, x - cx)
        y0, x0 = cy - half, cx - half
        ys0, xs0 = max(y0, 0), max(x0, 0)
        ys1, xs1 = min(y0 + size, ny), min(x0 + size, nx)
        if ys0 < ys1 and xs0 < xs1:
            image[ys0:ys1, xs0:xs1] += flux * stamp[ys0 - y0 : ys1 - y0, xs0 - x0 : xs1 - x0]
    return image


def make_psfmatch_exposure(
    shape=(512, 512),
    *,
    fwhm_range=(2.0, 3.0),
    variation="quadratic",
    psf_kind="gaussian",
    beta=2.5,
    n_stars=200,
    flux_range=(1e3, 1e5),
    noise=1.0,
    background=0.0,
    grid=(3, 3),
    psf_size=None,
    oversampling=1,
    target_fwhm=None,
    isolation=None,
    instrument="NIRCAM",
    seed=0,
    nan_patch=False,
):
    r"""
    Make an exposure whose PSF FWHM varies smoothly over the detector.

    ``n_stars`` stars are placed uniformly by random sequential placement,
    at least ``isolation`` pixels apart and with their centres at least two
    widest FWHMs inside the image edges (so the whole field is covered,
    edges included, but no star sits on an edge). Fluxes are log-uniform in
    ``flux_range``. Each star is rendered with the pixel-integrated profile
    of FWHM ``fwhm_at(x, y)`` at its own position, in a stamp of
    ``psf_size`` pixels (unit sum inside the stamp), centred exactly on the
    star (`stmatch.algorithms.psf.gaussian_psf` /
    `~stmatch.algorithms.psf.moffat_psf`, as `render_point_sources` does).
    The background and white Gaussian noise of standard deviation ``noise``
    are added: ``err = noise``, ``var_rnoise = noise**2``, ``var_poisson =
    var_flat = 0``, ``dq = 0``.

    Parameters
    ----------
    shape : tuple of int, optional
        Image shape ``(ny, nx)``.
    fwhm_range : tuple of float, optional
        Smallest and largest FWHM (pixels) of the exposure PSF; see
        `FwhmField` for where they are reached.
    variation : {"quadratic", "linear", "none"}, optional
        How the FWHM varies (`FwhmField`): smallest at the centre and largest
        at the corners, a linear ramp from one corner to the opposite one,
        or constant at ``fwhm_range[0]``.
    psf_kind : {"gaussian", "moffat"}, optional
        PSF profile.
    beta : float, optional
        Moffat index.
    n_stars : int, optional
        Number of stars.
    flux_range : tuple of float, optional
        Log-uniform range of the total star fluxes.
    noise : float, optional
        Standard deviation of the Gaussian noise (>= 0).
    background : float, optional
        Constant background added to the data.
    grid : tuple of int, optional
        ``(n_y, n_x)`` nodes of the PSF grid, spanning the pixel centres
        from 0 to ``n - 1`` along each axis (the centre for one node), listed
        by y, then x.
    psf_size : int, optional
        Odd stamp side (detector pixels); default the smallest odd integer
        ``>= 8 * max(fwhm_range)``.
    oversampling : int, optional
        Odd sampling factor of the PSF grid stamps (1: detector sampling).
        An oversampled stamp has ``oversampling * psf_size`` samples a
        side; its stride sub-grid through the centre is the detector stamp.
    target_fwhm : float, optional
        FWHM (pixels) of the Gaussian target PSF; default 1.25 times the
        widest exposure FWHM. A narrower value makes a deconvolution case.
    isolation : float, optional
        Minimum separation of the stars (pixels); default four widest FWHMs.
    instrument : {"NIRCAM", "NIRISS", "MIRI"}, optional
        Instrument metadata, as in `render_image`.
    seed : int, optional
        Seed of all random draws (independent streams for the positions,
        fluxes, noise and the NaN patch).
    nan_patch : bool, optional
        Add one rectangle (5–30 px a side) of NaN in ``data``, ``err`` and
        the variances, flagged ``DO_NOT_USE``.

    Returns
    -------
    PsfMatchExposure
        The exposure (``meta.filename = "psfmatch_cal.fits"``), its PSF grid,
        FWHM field, truth catalogue and target FWHM.

    Raises
    ------
    ValueError
        For a bad shape, FWHM or flux range, variation, PSF kind, grid, stamp
        size or oversampling, or when the stars do not fit with the
        requested separation.
    """
    from stmatch.models import PsfModel

    shape = _check_shape(shape)
    ny, nx = shape
    fwhm_range = _check_range(fwhm_range, "fwhm_range")
    variation = str(variation).lower()
    if variation not in _VARIATIONS:
        raise ValueError(f"variation must be one of {_VARIATIONS}, got {variation!r}")
    kind = _check_kind(psf_kind)
    beta = _check_positive(beta, "beta")
    noise = float(noise)
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be finite and non-negative, got {noise!r}")
    background = float(background)
    if not math.isfinite(background):
        raise ValueError(f"background must be finite, got {background!r}")
    gy, gx = _check_grid(grid)
    if isinstance(oversampling, bool) or oversampling != int(oversampling) or oversampling < 1:
        raise ValueError(f"oversampling must be an odd integer >= 1, got {oversampling!r}")
    k = int(oversampling)
    if k % 2 == 0:
        raise ValueError(f"oversampling must be odd (the PSF centre on a sample), got {k}")
    n_stars = int(n_stars)
    if n_stars < 0:
        raise ValueError(f"n_stars must be >= 0, got {n_stars}")

    fwhm_at = FwhmField(shape, fwhm_range, variation)
    widest = fwhm_at.widest
    size = _check_size(psf_size, widest)
    target = _TARGET_FACTOR * widest if target_fwhm is None else target_fwhm
    target = _check_positive(target, "target_fwhm")
    isolation = _ISOLATION_FWHMS * widest if isolation is None else float(isolation)
    if not (math.isfinite(isolation) and isolation >= 0):
        raise ValueError(f"isolation must be finite and non-negative, got {isolation!r}")

    pos_rng, flux_rng, noise_rng, patch_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(4)
    )
    margin = _EDGE_FWHMS * widest
    x, y = _place(
        pos_rng,
        n_stars,
        box=(margin - 0.5, nx - 0.5 - margin, margin - 0.5, ny - 0.5 - margin),
        others=([], []),
        isolation=isolation,
        what=f"{n_stars} stars",
    )
    stars = np.zeros(len(x), dtype=STARS_DTYPE)
    stars["x"], stars["y"] = x, y
    stars["flux"] = _log_uniform(flux_rng, flux_range, len(x), "flux_range")
    stars["fwhm"] = fwhm_at(x, y) if len(x) else np.zeros(0)

    wcs = make_tan_wcs(shape, ra=150.0, dec=2.0, pixel_scale=_PIXEL_SCALE)
    patches = _nan_patches(patch_rng, 1, shape, np.zeros(0), np.zeros(0), 0.0) if nan_patch else []
    model = _build_model(
        _render(shape, stars, kind, size, beta),
        wcs,
        sky=background,
        sigma=noise,
        unit_scale=1.0,
        dtype=np.float32,
        rng=noise_rng,
        patches=patches,
        saturation=None,
        filename="psfmatch_cal.fits",
        instrument=instrument,
        group_id=None,
        epoch_offset=0.0,
    )

    node_y, node_x = np.meshgrid(_nodes(gy, ny), _nodes(gx, nx), indexing="ij")
    node_x, node_y = node_x.ravel(), node_y.ravel()
    stamps = [
        _oversampled_stamp(kind, fwhm, size, beta, k)
        if k > 1
        else psf_stamp(kind, fwhm, size=size, beta=beta)
        for fwhm in np.atleast_1d(fwhm_at(node_x, node_y))
    ]
    instrument_meta = model.meta.instrument
    psf = PsfModel.from_arrays(
        np.stack(stamps),
        node_x,
        node_y,
        oversampling=k,
        source="analytic",
        instrument=instrument_meta.name,
        detector=instrument_meta.detector,
        filter=instrument_meta.filter,
        pixel_scale=_PIXEL_SCALE,
        description=(
            f"synthetic {kind} PSF, FWHM {fwhm_range[0]:.4g}-{fwhm_range[1]:.4g} px "
            f"({variation} variation)"
        ),
    )
    return PsfMatchExposure(
        model=model,
        psf=psf,
        fwhm_at=fwhm_at,
        stars=stars,
        target_fwhm=target,
        psf_kind=kind,
        beta=beta,
        psf_size=size,
        noise=noise,
        background=background,
    )


def write_psfmatch_exposure(directory, exposure, *, name="exposure"):
    """
    Write a synthetic PSF-matching exposure, its PSF grid and a target PSF.

    Parameters
    ----------
    directory : str or os.PathLike
        Output directory (created if needed).
    exposure : PsfMatchExposure
        Output of `make_psfmatch_exposure` (not modified: copies are saved).
    name : str, optional
        Stem of the file names.

    Returns
    -------
    dict
        `pathlib.Path` values: ``"image"`` (``<name>_cal.fits``, the
        ``ImageModel``), ``"psf"`` (``<name>_psf.asdf``, the PSF grid as a
        `~stmatch.models.PsfModel`, readable with
        `stmatch.models.read_psf_file`), ``"target_psf"``
        (``<name>_target_psf.asdf``, a single Gaussian stamp of FWHM
        ``target_fwhm``) and ``"directory"``.
    """
    from pathlib import Path

    name = str(name)
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"name must be a plain file-name stem, got {name!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "directory": directory,
        "image": directory / f"{name}_cal.fits",
        "psf": directory / f"{name}_psf.asdf",
        "target_psf": directory / f"{name}_target_psf.asdf",
    }
    with exposure.model.copy() as image:
        image.save(str(paths["image"]))
    with exposure.psf.copy() as psf:
        psf.save(str(paths["psf"]))
    with exposure.target_psf_model() as target:
        target.save(str(paths["target_psf"]))
    return paths

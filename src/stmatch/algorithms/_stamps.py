r"""Checks and measurements on star and PSF stamps.

Shared by `stmatch.algorithms.psfgrid` and `stmatch.algorithms.stars`:
argument checks (including a noise level given as a scalar or a map), an image
with its map of unusable pixels, star positions, the centre-pixel fraction of a
pixel-integrated Gaussian, boxes cut around stars, per-stamp Fourier shifts,
Gaussian-windowed centroids and adaptive second moments (Bernstein & Jarvis
2002, AJ 123, 583).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft
from scipy.special import ndtr

from .psf import stamp_centre

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


# ----------------------------------------------------------------------------- validation
def _int_at_least(value, name: str, low: int) -> int:
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )
    if not (numeric and float(value).is_integer() and value >= low):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _positive_float(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return v


def _real_2d(arr, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2 or a.size == 0 or a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a non-empty 2-D real array, got {a.dtype} {a.shape}")
    return a.astype(np.float64, copy=False)


def _stamp(arr, name: str) -> np.ndarray:
    p = _real_2d(arr, name)
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    if p.shape[0] % 2 == 0 or p.shape[1] % 2 == 0:
        raise ValueError(f"{name} must have odd sizes (a centre pixel), got shape {p.shape}")
    return p


def _sigma_map(sigma, shape, name: str = "sigma"):
    arr = np.asarray(sigma, dtype=np.float64)
    if arr.ndim == 0:
        return _positive_float(sigma, name)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must be a scalar or an array of the image shape {shape}")
    if not np.all(np.isfinite(arr) & (arr > 0)):
        raise ValueError(f"{name} must be finite and positive everywhere")
    return arr


def _gauss_peak_fraction(fwhm: float) -> float:
    """Centre-pixel fraction of a pixel-integrated Gaussian, geometric mean over phases."""
    sg = fwhm / FWHM_PER_SIGMA
    centred = 2.0 * ndtr(0.5 / sg) - 1.0
    corner = ndtr(1.0 / sg) - 0.5
    return float(centred * corner)


def image_and_bad(image, mask, name: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Float64 image and its map of unusable pixels (``mask`` True, or non-finite)."""
    img = _real_2d(image, name)
    bad = ~np.isfinite(img)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != img.shape or m.dtype != bool:
            raise ValueError(
                f"mask must be a boolean array (True = bad pixel) of the {name} shape "
                f"{img.shape}, got {m.dtype} {m.shape}"
            )
        bad = bad | m
    return img, bad


def positions_xy(positions) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` float arrays from an object with ``x``/``y`` or an ``(N, 2)`` array of (x, y)."""
    if hasattr(positions, "x") and hasattr(positions, "y"):
        x = np.atleast_1d(np.asarray(positions.x, dtype=np.float64))
        y = np.atleast_1d(np.asarray(positions.y, dtype=np.float64))
    else:
        arr = np.asarray(positions, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(
                "positions must have x and y attributes (e.g. a StarList) or be an (N, 2) "
                f"array of (x, y) pixel positions, got shape {arr.shape}"
            )
        x, y = arr[:, 0].copy(), arr[:, 1].copy()
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"positions x and y must be 1-D of one length, got {x.shape}, {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("positions contain non-finite values")
    return x, y


def cut_boxes(img_nan: np.ndarray, iy, ix, r: int) -> np.ndarray:
    """``(n, 2r+1, 2r+1)`` boxes centred on pixels ``(iy, ix)``; NaN outside the image."""
    padded = np.pad(img_nan, r, constant_values=np.nan)
    o = np.arange(-r, r + 1)
    return padded[(iy + r)[:, None, None] + o[None, :, None], (ix + r)[:, None, None] + o]


def shift_stack(stack: np.ndarray, dy, dx) -> np.ndarray:
    r"""Fourier-shift each stamp of an ``(n, h, w)`` stack by its own ``(dy, dx)``.

    :math:`\hat P'(k) = \hat P(k)\,e^{-2\pi i (k_y \Delta y + k_x \Delta x)}` (circular);
    content moves towards larger indices for positive shifts.
    """
    h, w = stack.shape[-2:]
    ky = sfft.fftfreq(h)[None, :, None]
    kx = sfft.rfftfreq(w)[None, None, :]
    dy = np.asarray(dy, dtype=np.float64).reshape(-1, 1, 1)
    dx = np.asarray(dx, dtype=np.float64).reshape(-1, 1, 1)
    phase = np.exp(-2j * np.pi * (ky * dy + kx * dx))
    return sfft.irfft2(sfft.rfft2(stack) * phase, s=(h, w))


def windowed_centroids(stack: np.ndarray, start, sigma_w: float, *, max_iter: int = 30):
    r"""Gaussian-windowed centroids of each stamp in an ``(n, h, w)`` stack.

    Starting at ``(start, start)`` (stamp pixel coordinates, one value per stamp),
    iterates :math:`c \leftarrow c + 2\,\sum w I (r - c) / \sum w I` with a circular
    Gaussian window :math:`w = \exp(-|r - c|^2 / 2\sigma_w^2)`. The fixed point is the
    centre of symmetry of a symmetric profile; the factor 2 makes the step exact for
    a Gaussian of width :math:`\sigma_w`. Returns ``(y, x, ok)``; ``ok`` is False
    where the windowed flux is not positive or the iteration diverged.
    """
    n, h, w = stack.shape
    yy = np.arange(h, dtype=np.float64)[None, :, None]
    xx = np.arange(w, dtype=np.float64)[None, None, :]
    cy = np.array(start, dtype=np.float64).reshape(n).copy()
    cx = cy.copy()
    ok = np.ones(n, dtype=bool)
    inv2 = 0.5 / (sigma_w * sigma_w)
    for _ in range(max_iter):
        dy = yy - cy[:, None, None]
        dx = xx - cx[:, None, None]
        wi = np.exp(-(dy * dy + dx * dx) * inv2) * stack
        s = wi.sum(axis=(1, 2))
        ok &= s > 0
        s = np.where(ok, s, 1.0)
        sy = np.where(ok, np.clip(2.0 * (wi * dy).sum(axis=(1, 2)) / s, -1.0, 1.0), 0.0)
        sx = np.where(ok, np.clip(2.0 * (wi * dx).sum(axis=(1, 2)) / s, -1.0, 1.0), 0.0)
        cy, cx = cy + sy, cx + sx
        if np.all(np.abs(sy) < 1e-7) and np.all(np.abs(sx) < 1e-7):
            break
    ok &= (cy >= 0) & (cy <= h - 1) & (cx >= 0) & (cx <= w - 1)
    return cy, cx, ok


def adaptive_moments(img: np.ndarray, centre=None, sigma0: float = 1.5, max_iter: int = 200):
    r"""Adaptive second moments (Bernstein & Jarvis 2002) of a stamp.

    The window is a Gaussian with the covariance :math:`C` of the current estimate;
    the weighted centroid and weighted covariance :math:`M` are measured and the
    window is updated to :math:`C \leftarrow 2M` (and the centre by twice the weighted
    offset). For a Gaussian source of covariance :math:`\Sigma` the fixed point is
    :math:`C = \Sigma` exactly. Returns ``(cy, cx, C)`` or None if it does not converge.
    """
    h, w = img.shape
    yy, xx = np.indices(img.shape, dtype=np.float64)
    cy, cx = stamp_centre(img.shape) if centre is None else centre
    cov = np.array([[sigma0**2, 0.0], [0.0, sigma0**2]])
    limit = (max(h, w) / 2.0) ** 2
    for _ in range(max_iter):
        det = cov[0, 0] * cov[1, 1] - cov[0, 1] ** 2
        if not det > 0:
            return None
        iyy, ixx, ixy = cov[1, 1] / det, cov[0, 0] / det, -cov[0, 1] / det
        dy, dx = yy - cy, xx - cx
        wi = np.exp(-0.5 * (iyy * dy * dy + 2.0 * ixy * dy * dx + ixx * dx * dx)) * img
        s = wi.sum()
        if not s > 0:
            return None
        my, mx = (wi * dy).sum() / s, (wi * dx).sum() / s
        ey, ex = dy - my, dx - mx
        m = [(wi * a * b).sum() / s for a, b in ((ey, ey), (ey, ex), (ex, ex))]
        new = 2.0 * np.array([[m[0], m[1]], [m[1], m[2]]])
        cy, cx = cy + 2.0 * my, cx + 2.0 * mx
        if not (np.all(np.isfinite(new)) and new[0, 0] < limit and new[1, 1] < limit):
            return None
        done = np.max(np.abs(new - cov)) < 1e-10 * np.trace(new) and max(abs(my), abs(mx)) < 1e-10
        cov = new
        if done:
            return cy, cx, cov
    return None

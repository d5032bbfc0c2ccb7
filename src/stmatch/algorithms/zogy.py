r"""Proper image subtraction (ZOGY) of one new image and one reference image.

Implements Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27 ("ZOGY"), for images on one
pixel grid with spatially constant PSFs (tile larger images). Notation: new image
:math:`N` with PSF :math:`P_n`, background noise :math:`\sigma_n` and flux zero
point :math:`F_n`; reference :math:`R`, :math:`P_r`, :math:`\sigma_r`, :math:`F_r`;
hats are discrete Fourier transforms. Here :math:`F_r = 1` and
:math:`F_n = \beta` (``flux_ratio``): a source of flux :math:`f` in the reference
has flux :math:`\beta f` in the new image. Both images must be
background-subtracted, registered and PSF-centred (see :mod:`.psf`).

Equations
---------
With the denominator
:math:`\mathcal{D}(k) = \sigma_n^2 F_r^2 |\hat P_r|^2 + \sigma_r^2 F_n^2 |\hat P_n|^2`:

.. math::

    \hat D = \frac{F_r \hat P_r \hat N - F_n \hat P_n \hat R}{\sqrt{\mathcal{D}}}
    \quad (13), \qquad
    F_D = \frac{F_r F_n}{\sqrt{\sigma_n^2 F_r^2 + \sigma_r^2 F_n^2}} \quad (15), \qquad
    \hat P_D = \frac{F_r F_n \hat P_r \hat P_n}{F_D \sqrt{\mathcal{D}}} \quad (14).

:math:`D` is white with unit variance on empty sky and :math:`\sum P_D = 1`. The
score (the matched filter of :math:`D`) is

.. math::

    \hat S = F_D \hat D\, \overline{\hat P_D} = \hat k_n \hat N - \hat k_r \hat R
    \quad (12, 16, 17), \qquad
    \hat k_n = \frac{F_n F_r^2\, \overline{\hat P_n}\, |\hat P_r|^2}{\mathcal{D}}, \quad
    \hat k_r = \frac{F_r F_n^2\, \overline{\hat P_r}\, |\hat P_n|^2}{\mathcal{D}}.

Its variance, with the full variance maps :math:`V_N, V_R` (default
:math:`\sigma_n^2, \sigma_r^2`) and the astrometric registration noise
:math:`(\sigma_y, \sigma_x)` (eqs. 25-33), is

.. math::

    V(S) = V_N \otimes k_n^2 + V_R \otimes k_r^2
    + \sum_{Q \in \{S_N, S_R\}} \left[\sigma_x^2 (\partial_x Q)^2
    + \sigma_y^2 (\partial_y Q)^2\right],
    \qquad S_N = k_n \otimes N,\; S_R = k_r \otimes R,

where :math:`\otimes` is convolution with the real-space kernels (squared
pixel by pixel) and the derivatives are Fourier derivatives
(:math:`\widehat{\partial_x Q} = 2\pi i k_x \hat Q`, the Nyquist term set to 0).
The corrected score is :math:`S_\mathrm{corr} = S / \sqrt{V(S)}`. For photometry
:math:`F_S = F_D^2 \sum P_D^2 = \sigma_n^2 \sum k_n^2 + \sigma_r^2 \sum k_r^2`
(Parseval; :math:`V(S) = F_S` on empty sky with constant variance), and the flux
of a point source centred on a pixel is :math:`T = S / F_S` in reference units
(:math:`N = F_n T \otimes P_n`), returned in new-image units as
:math:`\alpha = F_n S / F_S \pm F_n \sqrt{V(S)} / F_S`.

Normalisation by the noise
--------------------------
The computation is done in float64 on :math:`n = N/\sigma_n`, :math:`r = R/\sigma_r`
(unit noise), which keeps images in physical units (:math:`\sigma \sim 10^{-19}`)
well conditioned. Substituting :math:`\hat N = \sigma_n \hat n`,
:math:`\hat R = \sigma_r \hat r` in eq. 13 and dividing numerator and denominator
by :math:`\sigma_n \sigma_r` gives the same equations with unit noise and
zero points :math:`F'_n = F_n/\sigma_n`, :math:`F'_r = F_r/\sigma_r`.
:math:`D` and :math:`P_D` are homogeneous of degree 0 in :math:`(F'_n, F'_r)`, so
they are computed with :math:`f_n = F'_n/c`, :math:`f_r = F'_r/c`,
:math:`c = \sqrt{F_n'^2 + F_r'^2}` (so :math:`f_n^2 + f_r^2 = 1`, the maximum of
the denominator is 1 for unit-sum PSFs, and :math:`f_D = f_n f_r`). The
physical quantities follow as :math:`F_D = c f_D`, :math:`S = c\,s`,
:math:`F_S = c^2 f_S`, :math:`V(S) = c^2 v`, :math:`k_n = (c/\sigma_n)\,k'_n`,
:math:`k_r = (c/\sigma_r)\,k'_r` (primes and lower case: internal), and
:math:`S_\mathrm{corr} = s/\sqrt{v}` is unchanged. Variance maps enter as
:math:`V_N/\sigma_n^2`, :math:`V_R/\sigma_r^2`.

Numerical guards and edges
--------------------------
* Where the denominator is below ``1e-20`` of its maximum (both
  :math:`|\hat P| \lesssim 10^{-10}`), the round-off phase of the PSF transforms
  would scramble :math:`D`. There the PSFs are treated as equal:
  :math:`\hat D = f_r \hat n - f_n \hat r` (still white, unit variance, and exactly
  :math:`(N - R)/\sqrt{\sigma_n^2 + \sigma_r^2}` for identical PSFs with
  :math:`F_n = F_r`), and :math:`\hat P_D = \hat k_n = \hat k_r = 0` (their true
  values there are below :math:`10^{-10}`). Setting :math:`\hat D = 0` instead
  would remove up to half of the noise power of D for PSFs of σ ≳ 2 px.
* FFT convolution is circular: each image is padded by ``pad`` pixels on every
  side (then up to a fast FFT length) with Gaussian noise of unit variance in the
  normalised units (not zeros), and the results are cropped back. ``pad=0``
  treats the images as periodic (FFT size = image size).
* Non-finite pixels (or non-finite/negative variances) are replaced by noise before
  the FFTs; every output pixel within the kernel footprint of such a pixel (the
  pixels of the kernel stamp where :math:`|k| \ge 10^{-3} \max |k|`, :math:`k_n`
  for the new image and :math:`k_r` for the reference) is set to NaN and flagged
  in ``bad``.

Cost: 6 full-size real FFTs (forward: two PSFs, two images; inverse: :math:`D`,
:math:`S`), 5 small ones for the real-space :math:`P_D, k_n, k_r` on a grid of
three stamp sizes, 4 full-size inverse FFTs for the astrometric term, 3 per
variance map and 3-5 for bad pixels when those are used. About 0.5-0.9 s for a
2048² pair on 2 cores (1.4-1.8 s with the astrometric term); peak memory ~450 MB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy import fft as sfft

from .psf import fft_origin_to_stamp, normalize_psf, psf_to_fft_origin

__all__ = ["ZogyResult", "zogy"]

#: Fraction of the maximum of the denominator below which frequencies are
#: treated as carrying no PSF power (see module docstring).
DENOMINATOR_FLOOR = 1e-20

#: Relative kernel amplitude that defines the footprint of a bad pixel.
FOOTPRINT_FRACTION = 1e-3

#: Seed of the noise used for padding and bad pixels when no ``rng`` is given.
DEFAULT_SEED = 20160827


@dataclass(frozen=True, eq=False)
class ZogyResult:
    """Products of :func:`zogy` (images have the shape of the inputs).

    Attributes
    ----------
    d : numpy.ndarray
        Difference image :math:`D` (eq. 13), unit variance on empty sky.
    psf_d : numpy.ndarray
        :math:`P_D` (eq. 14) as a centred odd stamp of the PSF stamp size (the
        larger of the two), unit sum.
    f_d : float
        :math:`F_D` (eq. 15), in units of 1/σ (flux zero point over noise).
    s : numpy.ndarray
        Score :math:`S = F_D\\, D \\otimes \\overline{P_D}` (eqs. 12, 17).
    s_corr : numpy.ndarray
        :math:`S / \\sqrt{V(S)}` (eqs. 25-33): significance of a point source.
    f_s : float
        :math:`F_S = F_D^2 \\sum P_D^2`.
    alpha : numpy.ndarray
        :math:`F_n S / F_S`: flux of a point source centred on each pixel, in
        new-image flux units (divide by ``flux_ratio`` for reference units).
    alpha_err : numpy.ndarray
        :math:`F_n \\sqrt{V(S)} / F_S`.
    var_s : numpy.ndarray
        :math:`V(S) = V(S_N) + V(S_R) + V_\\mathrm{ast}`, always float64 (it scales as
        1/σ² and overflows float32 for σ ≲ 1e-20).
    kernel_n, kernel_r : numpy.ndarray
        Centred stamps of :math:`k_n, k_r` in physical units
        (:math:`S = k_n \\otimes N - k_r \\otimes R`), PSF stamp size.
    bad : numpy.ndarray
        Boolean mask of output pixels within the kernel footprint of a
        non-finite input pixel; all image outputs are NaN there.
    """

    d: np.ndarray
    psf_d: np.ndarray
    f_d: float
    s: np.ndarray
    s_corr: np.ndarray
    f_s: float
    alpha: np.ndarray
    alpha_err: np.ndarray
    var_s: np.ndarray
    kernel_n: np.ndarray
    kernel_r: np.ndarray
    bad: np.ndarray


def _image(arr, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got {a.ndim} dimension(s)")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a real numeric array, not {a.dtype}")
    return a


def _psf(arr, name: str, image_shape) -> np.ndarray:
    try:
        p = normalize_psf(arr)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if p.shape[0] % 2 == 0 or p.shape[1] % 2 == 0:
        raise ValueError(
            f"{name} stamp must have odd sizes (a centre pixel), got shape {p.shape}; "
            "re-centre it on an odd stamp with stmatch.algorithms.psf.recentre_psf"
        )
    if p.shape[0] > image_shape[0] or p.shape[1] > image_shape[1]:
        raise ValueError(f"{name} stamp {p.shape} is larger than the images {image_shape}")
    return p


def _positive(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and positive, got {value!r}")
    return v


def _rng(rng) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(DEFAULT_SEED)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be a numpy Generator, an int seed or None, not {rng!r}")


def _embed(img: np.ndarray, fft_shape, pad: int, fill) -> np.ndarray:
    """Place ``img`` at ``(pad, pad)`` of an ``fft_shape`` array; ``fill(shape)`` elsewhere."""
    if img.shape == tuple(fft_shape):
        return img
    ny, nx = img.shape
    ly, lx = fft_shape
    out = np.empty(fft_shape, dtype=img.dtype)
    out[pad : pad + ny, pad : pad + nx] = img
    out[:pad, :] = fill((pad, lx))
    out[pad + ny :, :] = fill((ly - pad - ny, lx))
    out[pad : pad + ny, :pad] = fill((ny, pad))
    out[pad : pad + ny, pad + nx :] = fill((ny, lx - pad - nx))
    return out


def _prepare(img, var, sigma: float, rng, name: str):
    """Normalised float64 image, normalised variance (or None), and bad-pixel mask."""
    x = np.asarray(img, dtype=np.float64) / sigma  # new array: input untouched
    bad = ~np.isfinite(x)
    v = None
    if var is not None:
        v = _image(var, f"var_{name}")
        if v.shape != x.shape:
            raise ValueError(f"var_{name} has shape {v.shape}, {name} has shape {x.shape}")
        v = np.asarray(v, dtype=np.float64) / (sigma * sigma)
        with np.errstate(invalid="ignore"):
            bad |= ~(np.isfinite(v) & (v >= 0))
        v[bad] = 1.0
    nbad = int(np.count_nonzero(bad))
    if nbad:
        x[bad] = rng.standard_normal(nbad)
    return x, v, bad


def zogy(
    new,
    ref,
    psf_new,
    psf_ref,
    *,
    sigma_new,
    sigma_ref,
    var_new=None,
    var_ref=None,
    flux_ratio=1.0,
    astrometric_noise=(0.0, 0.0),
    pad=None,
    rng=None,
    dtype=np.float32,
    fft_workers=-1,
) -> ZogyResult:
    r"""Proper image subtraction of ``ref`` from ``new`` (ZOGY, eqs. 12-17, 25-33).

    See the module docstring for the equations, the normalisation by the noise
    and the numerical guards.

    Parameters
    ----------
    new, ref : array_like
        Background-subtracted, registered images of one shape (any real dtype;
        non-finite pixels are handled as bad pixels).
    psf_new, psf_ref : array_like
        Odd-sized PSF stamps centred on their centre pixel (normalised here; may
        differ in size but not exceed the images).
    sigma_new, sigma_ref : float
        Background noise standard deviations (same units as the images).
    var_new, var_ref : array_like, optional
        Full variance maps for :math:`V(S_N) = V_N \otimes k_n^2` (default the
        constant :math:`\sigma^2`).
    flux_ratio : float
        :math:`\beta = F_n / F_r`: new-image flux of a source of unit reference flux.
    astrometric_noise : float or tuple of float
        ``(sigma_y, sigma_x)`` registration noise in pixels (array axis order), or one
        value for both.
    pad : int, optional
        Noise padding on every side in pixels; default the largest PSF stamp
        dimension; 0 treats the images as periodic.
    rng : numpy.random.Generator or int, optional
        Source of the padding and bad-pixel noise; default a generator seeded with
        :data:`DEFAULT_SEED` (reproducible results).
    dtype : numpy dtype
        Float type of ``d``, ``s``, ``s_corr``, ``alpha`` and ``alpha_err``
        (default float32; the computation is float64).
    fft_workers : int
        Threads of the FFTs (``scipy.fft`` ``workers``; -1, the default: all
        CPUs). Tasks that share a machine with others use 1. The result does not
        depend on it.

    Returns
    -------
    ZogyResult

    Raises
    ------
    ValueError
        For images of different shapes or not 2-D, invalid or even-sized PSF stamps,
        stamps larger than the images, non-positive or non-finite ``sigma_*`` or
        ``flux_ratio``, negative or non-finite ``astrometric_noise``, negative
        ``pad``.
    """
    new_a = _image(new, "new")
    ref_a = _image(ref, "ref")
    if new_a.shape != ref_a.shape:
        raise ValueError(
            f"new and ref must have the same shape, got {new_a.shape} and {ref_a.shape}"
        )
    shape = new_a.shape
    pn = _psf(psf_new, "psf_new", shape)
    pr = _psf(psf_ref, "psf_ref", shape)
    stamp = (max(pn.shape[0], pr.shape[0]), max(pn.shape[1], pr.shape[1]))
    sigma_n = _positive(sigma_new, "sigma_new")
    sigma_r = _positive(sigma_ref, "sigma_ref")
    beta = _positive(flux_ratio, "flux_ratio")
    ast = np.broadcast_to(np.asarray(astrometric_noise, dtype=np.float64), (2,))
    if not (np.all(np.isfinite(ast)) and np.all(ast >= 0)):
        raise ValueError(f"astrometric_noise must be finite and >= 0, got {astrometric_noise!r}")
    sig_ast_y, sig_ast_x = float(ast[0]), float(ast[1])
    if pad is None:
        pad = max(stamp)
    if int(pad) != pad or pad < 0:
        raise ValueError(f"pad must be a non-negative integer, got {pad!r}")
    pad = int(pad)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating type, got {dtype}")
    gen = _rng(rng)

    # Internal zero points for unit-noise images, scaled so that f_n^2 + f_r^2 = 1.
    fn_p, fr_p = beta / sigma_n, 1.0 / sigma_r
    c = math.hypot(fn_p, fr_p)
    f_n, f_r = fn_p / c, fr_p / c
    f_d = f_n * f_r

    n, v_n, bad_n = _prepare(new_a, var_new, sigma_n, gen, "new")
    r, v_r, bad_r = _prepare(ref_a, var_ref, sigma_r, gen, "ref")

    if pad == 0:
        fft_shape = shape
    else:
        fft_shape = tuple(sfft.next_fast_len(m + 2 * pad, real=True) for m in shape)
    crop = (slice(pad, pad + shape[0]), slice(pad, pad + shape[1]))
    irfft2 = _irfft2_factory(fft_shape, fft_workers)
    rfft2 = partial(sfft.rfft2, workers=fft_workers)

    # ZOGY filters on the image FFT grid (eqs. 13, 14, 16, 17; internal units).
    dn, dr, conj_pd = _filters(pn, pr, f_n, f_r, fft_shape, rfft2)
    np.conjugate(conj_pd, out=conj_pd)
    conj_pd *= f_d  # S-hat = f_D conj(P_D-hat) D-hat

    # Real-space P_D, k_n, k_r: on a grid of three stamp sizes (cheap; their wings fall
    # exponentially, and aliasing into the stamp comes from >= 2.5 stamp sizes away),
    # or on the FFT grid when that is smaller.
    kgrid = (3 * stamp[0], 3 * stamp[1])
    if kgrid[0] < fft_shape[0] and kgrid[1] < fft_shape[1]:
        kdn, kdr, kpd = _filters(pn, pr, f_n, f_r, kgrid, rfft2)
    else:
        kgrid, kdn, kdr, kpd = fft_shape, dn, dr, conj_pd.conj() / f_d
    pd_k = sfft.irfft2(kpd, s=kgrid)
    np.conjugate(kpd, out=kpd)
    kpd *= f_d
    kn_k = sfft.irfft2(kdn * kpd, s=kgrid)
    kr_k = sfft.irfft2(kdr * kpd, s=kgrid)
    del kdn, kdr, kpd
    f_s_int = f_d * f_d * float(np.sum(pd_k * pd_k))
    psf_d = normalize_psf(fft_origin_to_stamp(pd_k, stamp))
    del pd_k

    # Images: D and S.
    noise = gen.standard_normal
    n_h = rfft2(_embed(n, fft_shape, pad, noise))
    r_h = rfft2(_embed(r, fft_shape, pad, noise))
    del n, r
    spec = dn * n_h
    spec -= dr * r_h
    d_int = irfft2(spec)[crop]
    spec *= conj_pd
    s_int = irfft2(spec, overwrite=True)[crop]
    del spec

    # Variance of S (eqs. 25-33), internal units.
    var_int = _convolved_variance(v_n, kn_k, fft_shape, pad, crop, rfft2, irfft2)
    var_int = var_int + _convolved_variance(v_r, kr_k, fft_shape, pad, crop, rfft2, irfft2)
    if sig_ast_y > 0 or sig_ast_x > 0:
        ky = _derivative_factor(fft_shape[0], full=True)[:, None]
        kx = _derivative_factor(fft_shape[1], full=False)[None, :]
        v_ast = np.zeros(shape)
        for d_h, im_h in ((dn, n_h), (dr, r_h)):
            q_h = d_h * im_h
            q_h *= conj_pd  # S_N-hat (S_R-hat)
            for sig, k in ((sig_ast_x, kx), (sig_ast_y, ky)):
                if sig > 0:
                    v_ast += sig**2 * irfft2(q_h * k, overwrite=True)[crop] ** 2
            del q_h
        var_int = var_int + v_ast
        del v_ast
    del n_h, r_h, dn, dr, conj_pd
    var_int = np.broadcast_to(var_int, shape).astype(np.float64)  # own array

    kn_stamp = fft_origin_to_stamp(kn_k, stamp)
    kr_stamp = fft_origin_to_stamp(kr_k, stamp)
    del kn_k, kr_k

    # Bad pixels: dilate by the kernel footprints (FFT convolution of the masks).
    bad = np.zeros(shape, dtype=bool)
    if bad_n.any() or bad_r.any():
        spec = None
        for bad_in, k_stamp in ((bad_n, kn_stamp), (bad_r, kr_stamp)):
            if not bad_in.any():
                continue
            foot = np.abs(k_stamp) >= FOOTPRINT_FRACTION * np.abs(k_stamp).max()
            term = rfft2(_embed(bad_in.astype(np.float64), fft_shape, pad, np.zeros))
            term *= rfft2(psf_to_fft_origin(foot.astype(np.float64), fft_shape))
            spec = term if spec is None else spec + term
        bad = irfft2(spec, overwrite=True)[crop] > 0.5
        del spec

    sd = np.sqrt(var_int)
    scale = beta / (c * f_s_int)
    outputs = [d_int, s_int * c, s_int / sd, s_int * scale, sd * scale]
    outputs = [o.astype(dtype) for o in outputs]
    var_s = var_int * (c * c)
    if bad.any():
        for o in [*outputs, var_s]:
            o[bad] = np.nan
    d, s, s_corr, alpha, alpha_err = outputs
    return ZogyResult(
        d=d,
        psf_d=psf_d,
        f_d=c * f_d,
        s=s,
        s_corr=s_corr,
        f_s=c * c * f_s_int,
        alpha=alpha,
        alpha_err=alpha_err,
        var_s=var_s,
        kernel_n=kn_stamp * (c / sigma_n),
        kernel_r=kr_stamp * (c / sigma_r),
        bad=bad,
    )


def _irfft2_factory(fft_shape, workers=-1):
    def irfft2(x: np.ndarray, overwrite: bool = False) -> np.ndarray:
        return sfft.irfft2(x, s=fft_shape, workers=workers, overwrite_x=overwrite)

    return irfft2


def _filters(pn, pr, f_n, f_r, fft_shape, rfft2):
    """Half-spectra ``(dn, dr, pd)`` with ``D-hat = dn n-hat - dr r-hat`` and ``P_D-hat = pd``.

    ``dn = f_r Pr/sqrt(den)``, ``dr = f_n Pn/sqrt(den)``, ``pd = Pr Pn/sqrt(den)`` with
    ``den = f_r^2 |Pr|^2 + f_n^2 |Pn|^2`` (``f_n^2 + f_r^2 = 1``); where ``den`` is below
    ``DENOMINATOR_FLOOR`` of its maximum: ``dn = f_r``, ``dr = f_n``, ``pd = 0``.
    """
    pn_h = rfft2(psf_to_fft_origin(pn, fft_shape))
    pr_h = rfft2(psf_to_fft_origin(pr, fft_shape))
    den = _abs2(pr_h)
    den *= f_r * f_r
    den += f_n * f_n * _abs2(pn_h)
    floor = den < DENOMINATOR_FLOOR * den.max()
    inv = np.sqrt(den, out=den)
    inv[floor] = 1.0
    np.reciprocal(inv, out=inv)
    pn_h *= inv  # Pn / sqrt(den)
    pd = pr_h * pn_h
    inv *= f_r
    pr_h *= inv
    dn = pr_h
    pn_h *= f_n
    dr = pn_h
    del inv
    if floor.any():
        dn[floor] = f_r
        dr[floor] = f_n
        pd[floor] = 0.0
    return dn, dr, pd


def _abs2(z: np.ndarray) -> np.ndarray:
    return z.real * z.real + z.imag * z.imag


def _derivative_factor(length: int, *, full: bool) -> np.ndarray:
    """``2 pi i k`` for a Fourier derivative along an axis (Nyquist term zeroed)."""
    k = sfft.fftfreq(length) if full else sfft.rfftfreq(length)
    out = 2j * np.pi * k
    if length % 2 == 0:
        out[length // 2 if full else -1] = 0.0
    return out


def _convolved_variance(v, k, fft_shape, pad, crop, rfft2, irfft2):
    """``V ⊗ k²`` on the image region; a scalar ``sum(k²)`` for unit variance.

    ``k`` has its origin at (0, 0), on the FFT grid or on a smaller odd grid.
    """
    k2 = k * k
    if v is None:
        return float(k2.sum())
    if k2.shape != tuple(fft_shape):
        k2 = psf_to_fft_origin(fft_origin_to_stamp(k2, k2.shape), fft_shape)
    v_h = rfft2(_embed(v, fft_shape, pad, np.ones))
    v_h *= rfft2(k2)
    return irfft2(v_h, overwrite=True)[crop]

"""Tests of ZOGY proper image subtraction (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27)."""

import math

import numpy as np
import pytest
from scipy import fft as sfft

from stmatch.algorithms.psf import (
    fft_origin_to_stamp,
    gaussian_psf,
    psf_to_fft_origin,
    recentre_psf,
)
from stmatch.algorithms.zogy import ZogyResult, zogy

from ._zogy_reference import reference_zogy

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def circular_convolve(scene, psf):
    """Periodic convolution of a scene with a centred PSF stamp."""
    origin = psf_to_fft_origin(psf, scene.shape)
    return sfft.irfft2(sfft.rfft2(scene) * sfft.rfft2(origin), s=scene.shape)


def add_sources(image, psf, ys, xs, fluxes):
    """Add PSF stamps (Fourier-shifted for sub-pixel positions), clipped at the edges."""
    out = image.copy()
    h, w = psf.shape
    for y, x, f in zip(ys, xs, fluxes, strict=True):
        iy, ix = int(round(y)), int(round(x))
        stamp = psf if (y == iy and x == ix) else recentre_psf(psf, shift=(y - iy, x - ix))
        y0, x0 = iy - h // 2, ix - w // 2
        ys0, xs0 = max(y0, 0), max(x0, 0)
        ys1, xs1 = min(y0 + h, out.shape[0]), min(x0 + w, out.shape[1])
        out[ys0:ys1, xs0:xs1] += f * stamp[ys0 - y0 : ys1 - y0, xs0 - x0 : xs1 - x0]
    return out


def periodic_pair(shape, psf_new, psf_ref, sigma_new, sigma_ref, beta, seed, n_stars=25):
    """New and reference images of one periodic scene, with Gaussian noise."""
    rng = np.random.default_rng(seed)
    scene = np.zeros(shape)
    ys = rng.integers(0, shape[0], n_stars)
    xs = rng.integers(0, shape[1], n_stars)
    scene[ys, xs] = rng.uniform(50, 2000, n_stars)
    new = beta * circular_convolve(scene, psf_new) + rng.normal(0, sigma_new, shape)
    ref = circular_convolve(scene, psf_ref) + rng.normal(0, sigma_ref, shape)
    return new, ref


def rel_rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)))


# ---------------------------------------------------------------- exact identities


def test_identities():
    # an off-centre PSF makes k_n asymmetric, so its orientation is tested below
    psf_n = gaussian_psf(51, 3.0, center=(25.3, 24.6))
    psf_r = gaussian_psf(51, 5.5)
    sn, sr, beta = 2.0, 0.7, 1.3
    new, ref = periodic_pair((128, 128), psf_n, psf_r, sn, sr, beta, seed=1)
    res = zogy(new, ref, psf_n, psf_r, sigma_new=sn, sigma_ref=sr, flux_ratio=beta)
    assert isinstance(res, ZogyResult)
    assert res.d.dtype == np.float32 and res.s_corr.dtype == np.float32
    assert res.var_s.dtype == np.float64 and res.bad.dtype == bool and not res.bad.any()
    assert res.psf_d.shape == (51, 51) and res.kernel_n.shape == (51, 51)
    # eq. 14: P_D has unit sum; eq. 15: F_D = F_r F_n / sqrt(sn^2 F_r^2 + sr^2 F_n^2)
    assert res.psf_d.sum() == pytest.approx(1.0, abs=1e-12)
    assert res.f_d == pytest.approx(beta / math.sqrt(sn**2 + sr**2 * beta**2), rel=1e-13)
    # F_S = F_D^2 sum(P_D^2) = sn^2 sum(k_n^2) + sr^2 sum(k_r^2), in the physical units
    # of the returned kernels (S = k_n * N - k_r * R). Exact by Parseval on the full
    # grid (see test_matches_plain_reference); the stamps are truncated: P_D has
    # exponential wings (~6e-7 of the sum of squares beyond 25 px, after the stamp is
    # renormalised to unit sum), the kernels hold all but ~1e-11.
    assert res.f_s == pytest.approx(res.f_d**2 * np.sum(res.psf_d**2), rel=5e-6)
    kernel_sum = sn**2 * np.sum(res.kernel_n**2) + sr**2 * np.sum(res.kernel_r**2)
    assert res.f_s == pytest.approx(kernel_sum, rel=1e-9)
    # constant variance, no astrometric term: V(S) = F_S everywhere
    np.testing.assert_allclose(res.var_s, res.f_s, rtol=1e-10)
    # photometry: alpha = F_n S / F_S, alpha_err = F_n sqrt(V) / F_S, S_corr = S / sqrt(V)
    np.testing.assert_allclose(res.alpha, beta * res.s / res.f_s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.alpha_err, beta / math.sqrt(res.f_s), rtol=1e-6)
    np.testing.assert_allclose(res.s_corr, res.alpha / res.alpha_err, rtol=1e-5, atol=1e-5)
    # S = k_n * N - k_r * R (convolution with the returned stamps; periodic, pad=0)
    per = zogy(new, ref, psf_n, psf_r, sigma_new=sn, sigma_ref=sr, flux_ratio=beta, pad=0,
               dtype=np.float64)  # fmt: skip
    s_kernels = circular_convolve(new, res.kernel_n) - circular_convolve(ref, res.kernel_r)
    assert rel_rms(s_kernels, per.s) < 1e-4  # stamps truncate the kernels' wings
    mirrored = circular_convolve(new, res.kernel_n[::-1, ::-1])
    assert rel_rms(mirrored - circular_convolve(ref, res.kernel_r), per.s) > 1e-2


def test_identical_psfs_give_psf_d_equal_to_psf():
    psf = gaussian_psf(31, 4.0)
    rng = np.random.default_rng(2)
    new, ref = rng.normal(size=(2, 64, 64))
    res = zogy(new, ref, psf, psf, sigma_new=1.0, sigma_ref=3.0)
    np.testing.assert_allclose(res.psf_d, psf, rtol=0, atol=1e-12)


@pytest.mark.parametrize("beta", [1.0, 1.3])
def test_swapping_new_and_reference_negates_d_and_s(beta):
    psf_n = gaussian_psf(31, 3.0)
    psf_r = gaussian_psf(31, 5.0)
    sn, sr = 1.5, 0.8
    new, ref = periodic_pair((96, 112), psf_n, psf_r, sn, sr, beta, seed=3)
    kw = dict(pad=0, dtype=np.float64)
    a = zogy(new, ref, psf_n, psf_r, sigma_new=sn, sigma_ref=sr, flux_ratio=beta, **kw)
    # swapped roles: F_n' = F_r = 1 and F_r' = F_n = beta, i.e. flux_ratio' = 1 / beta
    # (D is invariant under a common scaling of the zero points, F_D and S scale with it)
    b = zogy(ref, new, psf_r, psf_n, sigma_new=sr, sigma_ref=sn, flux_ratio=1 / beta, **kw)
    np.testing.assert_allclose(b.d, -a.d, rtol=0, atol=1e-10 * np.abs(a.d).max())
    np.testing.assert_allclose(b.s, -a.s / beta, rtol=0, atol=1e-10 * np.abs(a.s).max())
    np.testing.assert_allclose(b.s_corr, -a.s_corr, rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.psf_d, a.psf_d, rtol=0, atol=1e-14)
    assert b.f_d == pytest.approx(a.f_d / beta, rel=1e-13)
    # with noise padding the identity holds away from the padded edges
    c = zogy(new, ref, psf_n, psf_r, sigma_new=sn, sigma_ref=sr, flux_ratio=beta)
    d = zogy(ref, new, psf_r, psf_n, sigma_new=sr, sigma_ref=sn, flux_ratio=1 / beta)
    inner = (slice(40, -40), slice(40, -40))
    np.testing.assert_allclose(d.d[inner], -c.d[inner], rtol=0, atol=1e-5)


# ---------------------------------------------------------------- statistics on empty sky


def test_empty_sky_d_is_white_and_s_corr_is_unit_normal():
    rng = np.random.default_rng(4)
    shape = (512, 512)
    sn, sr = 1.0, 0.5
    new = rng.normal(0, sn, shape)
    ref = rng.normal(0, sr, shape)
    psf_n = gaussian_psf(31, 3.0)
    psf_r = gaussian_psf(41, 6.0)
    res = zogy(new, ref, psf_n, psf_r, sigma_new=sn, sigma_ref=sr)
    d = res.d.astype(np.float64)
    assert abs(d.std() - 1.0) < 0.02
    for axis in (0, 1):
        a = d - d.mean()
        lag1 = np.mean(a * np.roll(a, 1, axis=axis)) / np.mean(a * a)
        assert abs(lag1) < 0.01, (axis, lag1)
    sc = res.s_corr.astype(np.float64)
    # S is correlated over ~4 pi sigma_D^2 ~ 80 px: the mean of 512^2 pixels has an
    # error of ~0.017
    assert abs(sc.mean()) < 0.07
    assert abs(sc.std() - 1.0) < 0.03
    # S itself is smooth (a matched filter): strongly correlated, so the test above bites
    s = res.s.astype(np.float64)
    assert np.mean(s * np.roll(s, 1, axis=1)) / np.mean(s * s) > 0.5


def test_variance_map_enters_s_corr():
    rng = np.random.default_rng(5)
    shape = (256, 256)
    noise = np.ones(shape)
    noise[:, 128:] = 2.5
    new = rng.normal(0, 1, shape) * noise
    ref = rng.normal(0, 1, shape)
    psf_n, psf_r = gaussian_psf(21, 3.0), gaussian_psf(21, 4.0)
    kw = dict(sigma_new=1.0, sigma_ref=1.0)
    with_map = zogy(new, ref, psf_n, psf_r, var_new=noise**2, **kw)
    without = zogy(new, ref, psf_n, psf_r, **kw)
    left, right = (slice(20, -20), slice(20, 100)), (slice(20, -20), slice(156, -20))
    assert abs(with_map.s_corr[left].std() - 1) < 0.05
    assert abs(with_map.s_corr[right].std() - 1) < 0.05
    assert without.s_corr[right].std() > 1.5
    # a constant map equals the default
    const = zogy(new, ref, psf_n, psf_r, var_new=np.ones(shape), var_ref=np.ones(shape), **kw)
    np.testing.assert_allclose(const.var_s, without.var_s, rtol=1e-9)


# ---------------------------------------------------------------- numerical pitfalls


@pytest.mark.parametrize("integrate", [True, False])
def test_identical_wide_gaussian_psfs_give_scaled_difference(integrate):
    # sigma = 3 px: |P-hat|^2 falls to 1e-77 at the corner of the spectrum, far below
    # round-off; the phase noise there must not scramble D.
    psf = gaussian_psf(51, 3.0 * FWHM_PER_SIGMA, integrate=integrate)
    sn, sr = 1.5, 0.8
    new, ref = periodic_pair((128, 128), psf, psf, sn, sr, 1.0, seed=6)
    res = zogy(new, ref, psf, psf, sigma_new=sn, sigma_ref=sr, dtype=np.float64)
    expected = (new - ref) / math.sqrt(sn**2 + sr**2)
    assert rel_rms(res.d, expected) < 1e-6


def _reference_case(pad):
    psf_n = gaussian_psf(31, 3.0)  # sigma 1.27 px: no underflow for the plain reference
    psf_r = gaussian_psf(31, 5.0)
    sn, sr, beta = 2.0, 0.7, 1.3
    shape = (128, 160)
    rng = np.random.default_rng(7)
    scene = np.zeros(shape)
    ys, xs = rng.integers(45, 128 - 45, 20), rng.integers(45, 160 - 45, 20)
    scene[ys, xs] = rng.uniform(100, 5000, 20)
    new = beta * circular_convolve(scene, psf_n) + rng.normal(0, sn, shape)
    ref = circular_convolve(scene, psf_r) + rng.normal(0, sr, shape)
    res = zogy(new, ref, psf_n, psf_r, sigma_new=sn, sigma_ref=sr, flux_ratio=beta, pad=pad,
               dtype=np.float64)  # fmt: skip
    return res, reference_zogy(new, ref, psf_n, psf_r, sn, sr, f_new=beta)


@pytest.mark.parametrize("pad", [0, None])
def test_matches_plain_reference(pad):
    res, ref = _reference_case(pad)
    # periodic (pad=0): every pixel; noise padding: the interior, > 45 px from the edges
    # (the kernels' exponential tails are < 1e-10 of their peak there)
    inner = (slice(None), slice(None)) if pad == 0 else (slice(45, -45), slice(45, -45))
    for key in ("d", "s"):
        err = np.abs(getattr(res, key)[inner] - ref[key][inner]).max()
        assert err < 1e-8 * np.abs(ref[key]).max(), key
    assert res.f_d == pytest.approx(ref["f_d"], rel=1e-12)
    assert res.f_s == pytest.approx(ref["f_s"], rel=1e-8)
    psf_d = fft_origin_to_stamp(ref["psf_d"], res.psf_d.shape)
    np.testing.assert_allclose(res.psf_d, psf_d / psf_d.sum(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(
        res.kernel_n, fft_origin_to_stamp(ref["k_n"], (31, 31)), rtol=0, atol=1e-12
    )
    # the reference also validates the variance: V(S) = sn^2 sum k_n^2 + sr^2 sum k_r^2
    var = 2.0**2 * np.sum(ref["k_n"] ** 2) + 0.7**2 * np.sum(ref["k_r"] ** 2)
    np.testing.assert_allclose(res.var_s, var, rtol=1e-8)


# ---------------------------------------------------------------- injection and recovery


def test_injection_recovery_of_transients():
    shape = (256, 256)
    psf_n, psf_r = gaussian_psf(31, 3.5), gaussian_psf(31, 5.0)
    sn, sr = 1.0, 0.6
    pulls, snr_resid = [], []
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        grid = np.arange(16, 256, 32)
        ys = (grid[:, None] + rng.integers(-4, 5, (8, 8))).ravel()[:50]
        xs = (grid[None, :] + rng.integers(-4, 5, (8, 8))).ravel()[:50]
        flux = rng.uniform(20.0, 600.0, ys.size)
        new = add_sources(rng.normal(0, sn, shape), psf_n, ys, xs, flux)
        ref = rng.normal(0, sr, shape)
        res = zogy(new, ref, psf_n, psf_r, sigma_new=sn, sigma_ref=sr)
        alpha, err = res.alpha[ys, xs], res.alpha_err[ys, xs]
        pulls.append((alpha - flux) / err)
        snr_resid.append(res.s_corr[ys, xs] - flux / err)
    pulls = np.concatenate(pulls)
    snr_resid = np.concatenate(snr_resid)
    assert abs(pulls.mean()) < 0.3 and 0.7 < pulls.std() < 1.3
    # S_corr at a transient is its expected S/N, flux / sigma_alpha, within the noise
    assert abs(snr_resid.mean()) < 0.3 and 0.7 < snr_resid.std() < 1.3


def test_subpixel_transient_peaks_at_nearest_pixel():
    shape = (96, 96)
    psf_n, psf_r = gaussian_psf(31, 3.5), gaussian_psf(31, 5.0)
    rng = np.random.default_rng(8)
    new = add_sources(rng.normal(0, 1, shape), psf_n, [40.3], [51.6], [3000.0])
    res = zogy(new, rng.normal(0, 1, shape), psf_n, psf_r, sigma_new=1.0, sigma_ref=1.0)
    peak = np.unravel_index(np.argmax(res.s_corr), shape)
    assert peak == (40, 52)
    # integer-pixel alpha of an off-centre source underestimates the flux, by little
    assert 0.8 * 3000 < res.alpha[40, 52] < 3000


def _star_field(shape, psf_n_image, psf_r, beta, seed, flux=1e5):
    rng = np.random.default_rng(seed)
    grid = np.arange(24, shape[0] - 16, 32)
    ys, xs = np.repeat(grid, grid.size), np.tile(grid, grid.size)
    fluxes = np.full(ys.size, flux)
    new = add_sources(rng.normal(0, 1, shape), psf_n_image, ys, xs, beta * fluxes)
    ref = add_sources(rng.normal(0, 1, shape), psf_r, ys, xs, fluxes)
    return new, ref, ys, xs


def _max_abs_near(img, ys, xs, r=3):
    return max(
        np.abs(img[y - r : y + r + 1, x - r : x + r + 1]).max() for y, x in zip(ys, xs, strict=True)
    )


def test_flux_ratio_cancels_static_stars_only_when_right():
    psf_n, psf_r = gaussian_psf(31, 3.5), gaussian_psf(31, 5.0)
    beta = 1.3
    new, ref, ys, xs = _star_field((128, 128), psf_n, psf_r, beta, seed=9)
    right = zogy(new, ref, psf_n, psf_r, sigma_new=1.0, sigma_ref=1.0, flux_ratio=beta)
    assert _max_abs_near(right.s_corr, ys, xs) < 5
    wrong = zogy(new, ref, psf_n, psf_r, sigma_new=1.0, sigma_ref=1.0, flux_ratio=beta * 1.02)
    assert _max_abs_near(wrong.s_corr, ys, xs) > 5


def test_astrometric_noise_term():
    psf_n, psf_r = gaussian_psf(31, 3.5), gaussian_psf(31, 5.0)
    shifted = recentre_psf(psf_n, shift=(0.1, 0.1))  # new image mis-registered by 0.1 px
    new, ref, ys, xs = _star_field((128, 128), shifted, psf_r, 1.0, seed=10)
    kw = dict(sigma_new=1.0, sigma_ref=1.0)
    plain = zogy(new, ref, psf_n, psf_r, **kw)
    assert _max_abs_near(plain.s_corr, ys, xs) > 5
    corrected = zogy(new, ref, psf_n, psf_r, astrometric_noise=(0.1, 0.1), **kw)
    assert _max_abs_near(corrected.s_corr, ys, xs) < 3
    # axis order (sigma_y, sigma_x): a shift along x only needs sigma_x
    shifted_x = recentre_psf(psf_n, shift=(0.0, 0.1))
    new, ref, ys, xs = _star_field((128, 128), shifted_x, psf_r, 1.0, seed=10)
    assert _max_abs_near(zogy(new, ref, psf_n, psf_r, **kw).s_corr, ys, xs) > 5
    only_x = zogy(new, ref, psf_n, psf_r, astrometric_noise=(0.0, 0.1), **kw)
    assert _max_abs_near(only_x.s_corr, ys, xs) < 3
    only_y = zogy(new, ref, psf_n, psf_r, astrometric_noise=(0.1, 0.0), **kw)
    assert _max_abs_near(only_y.s_corr, ys, xs) > 5
    # far from stars the astrometric term is negligible: S_corr unchanged there
    far = (slice(0, 8), slice(None))
    np.testing.assert_allclose(corrected.s_corr[far], plain.s_corr[far], atol=0.05)
    assert np.all(corrected.var_s >= plain.var_s * (1 - 1e-9))


# ---------------------------------------------------------------- edges, units, bad pixels


def test_no_wrap_around_from_an_edge_source():
    shape = (128, 128)
    psf_n, psf_r = gaussian_psf(31, 3.5), gaussian_psf(31, 5.0)
    rng = np.random.default_rng(11)
    new = add_sources(rng.normal(0, 1, shape), psf_n, [64], [3], [1e5])
    ref = rng.normal(0, 1, shape)
    res = zogy(new, ref, psf_n, psf_r, sigma_new=1.0, sigma_ref=1.0)
    assert res.s_corr[:, :8].max() > 100  # the source is detected
    assert np.abs(res.s_corr[:, -20:]).max() < 5
    # treating the images as periodic does wrap it around: the check above can fail
    periodic = zogy(new, ref, psf_n, psf_r, sigma_new=1.0, sigma_ref=1.0, pad=0)
    assert np.abs(periodic.s_corr[:, -20:]).max() > 5


def test_unit_invariance_and_float32_inputs():
    psf_n, psf_r = gaussian_psf(31, 3.5), gaussian_psf(31, 5.0)
    sn, sr, beta = 1.3, 0.6, 1.1
    new, ref = periodic_pair((128, 128), psf_n, psf_r, sn, sr, beta, seed=12)
    var_n = np.full(new.shape, sn**2)
    var_n[:, :40] *= 2.0
    kw = dict(flux_ratio=beta, astrometric_noise=0.05)
    a = zogy(new, ref, psf_n, psf_r, sigma_new=sn, sigma_ref=sr, var_new=var_n, **kw)
    scale = 1e-19
    args = [(x * scale).astype(np.float32) for x in (new, ref)]
    var32 = (var_n * scale**2).astype(np.float32)
    before = [x.copy() for x in args]
    b = zogy(*args, psf_n, psf_r, sigma_new=sn * scale, sigma_ref=sr * scale, var_new=var32, **kw)
    for x, y in zip(args, before, strict=True):
        np.testing.assert_array_equal(x, y)  # inputs untouched
    assert rel_rms(b.d, a.d) < 1e-5
    assert rel_rms(b.s_corr, a.s_corr) < 1e-5
    assert rel_rms(b.s * scale, a.s) < 1e-5
    assert rel_rms(b.alpha / scale, a.alpha) < 1e-5
    assert b.f_d * scale == pytest.approx(a.f_d, rel=1e-12)
    assert b.f_s * scale**2 == pytest.approx(a.f_s, rel=1e-12)
    assert np.all(np.isfinite(b.var_s)) and np.all(np.isfinite(b.alpha_err))


def test_nan_pixels_are_replaced_and_flagged():
    shape = (128, 128)
    # an off-centre reference PSF makes the footprint of k_r asymmetric
    psf_n, psf_r = gaussian_psf(21, 3.5), gaussian_psf(21, 5.0, center=(11.5, 13.0))
    new, ref = periodic_pair(shape, psf_n, psf_r, 1.0, 1.0, 1.0, seed=13)
    ref_nan = ref.copy()
    ref_nan[60:64, 70:74] = np.nan
    kw = dict(sigma_new=1.0, sigma_ref=1.0)
    res = zogy(new, ref_nan, psf_n, psf_r, **kw)
    assert np.isnan(ref_nan).sum() == 16  # input untouched
    bad = res.bad
    assert bad[60:64, 70:74].all()
    # flagged only within the kernel stamp around the patch
    box = np.zeros(shape, dtype=bool)
    box[60 - 10 : 64 + 10, 70 - 10 : 74 + 10] = True
    assert not bad[~box].any()
    # bad = every pixel x with |k_r(x - y)| >= 1e-3 max|k_r| for a NaN pixel y
    k = np.abs(res.kernel_r)
    expected = np.zeros(shape, dtype=bool)
    for oy, ox in zip(*np.nonzero(k >= 1e-3 * k.max()), strict=True):
        expected[60 + oy - 10 : 64 + oy - 10, 70 + ox - 10 : 74 + ox - 10] = True
    np.testing.assert_array_equal(bad, expected)
    assert not np.array_equal(expected, expected[::-1, ::-1])
    for name in ("d", "s", "s_corr", "alpha", "alpha_err", "var_s"):
        img = getattr(res, name)
        np.testing.assert_array_equal(np.isnan(img), bad, err_msg=name)
    # elsewhere the result is that of the clean pair up to the kernel wings: outside the
    # footprint |k_r| < 1e-3 max|k_r|, so |dS| < 1e-3 max|k_r| sum|R - replacement|, with
    # |replacement| < 6 sigma (away from the noise-padded edges, whose noise differs
    # between the two runs)
    clean = zogy(new, ref, psf_n, psf_r, **kw)
    inner = np.zeros(shape, dtype=bool)
    inner[40:-40, 40:-40] = True
    sel = inner & ~bad
    ds = np.abs(res.s[sel] - clean.s[sel]).max()
    bound = 1e-3 * k.max() * np.sum(np.abs(ref[60:64, 70:74]) + 6.0)
    assert 0 < ds < bound, (ds, bound)
    assert bound / np.sqrt(res.f_s) < 0.2
    # a NaN in the new image or in a variance map is flagged as well
    new_nan = new.copy()
    new_nan[5, 100] = np.inf
    var_r = np.ones(shape)
    var_r[100, 20] = np.nan
    res2 = zogy(new_nan, ref, psf_n, psf_r, var_ref=var_r, **kw)
    assert res2.bad[5, 100] and res2.bad[100, 20] and np.isnan(res2.d[5, 100])
    assert np.isfinite(res2.d[~res2.bad]).all()


def test_bad_input():
    psf = gaussian_psf(21, 3.0)
    img = np.zeros((64, 64))
    kw = dict(sigma_new=1.0, sigma_ref=1.0)
    with pytest.raises(ValueError, match="same shape"):
        zogy(img, np.zeros((64, 65)), psf, psf, **kw)
    with pytest.raises(ValueError, match="2-D"):
        zogy(np.zeros(64), np.zeros(64), psf, psf, **kw)
    with pytest.raises(ValueError, match="larger than the images"):
        zogy(np.zeros((16, 16)), np.zeros((16, 16)), psf, psf, **kw)
    with pytest.raises(ValueError, match="odd"):
        zogy(img, img, np.ones((4, 4)), psf, **kw)
    with pytest.raises(ValueError, match="psf_ref.*non-finite"):
        zogy(img, img, psf, np.full((3, 3), np.nan), **kw)
    for bad in (0.0, -1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="sigma_new"):
            zogy(img, img, psf, psf, sigma_new=bad, sigma_ref=1.0)
        with pytest.raises(ValueError, match="sigma_ref"):
            zogy(img, img, psf, psf, sigma_new=1.0, sigma_ref=bad)
        with pytest.raises(ValueError, match="flux_ratio"):
            zogy(img, img, psf, psf, flux_ratio=bad, **kw)
    with pytest.raises(ValueError, match="astrometric_noise"):
        zogy(img, img, psf, psf, astrometric_noise=(-0.1, 0.0), **kw)
    with pytest.raises(ValueError, match="pad"):
        zogy(img, img, psf, psf, pad=-1, **kw)
    with pytest.raises(ValueError, match="var_new"):
        zogy(img, img, psf, psf, var_new=np.ones((3, 3)), **kw)
    with pytest.raises(TypeError):
        zogy(img, img, psf, psf, 1.0, 1.0)  # knobs are keyword-only

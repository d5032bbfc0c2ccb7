"""Tests of the PSF-matching kernel quality measures and of the deconvolution check."""

import math

import numpy as np
import pytest
from scipy.special import ndtr

from stmatch.algorithms.psf import gaussian_psf, moffat_psf
from stmatch.algorithms.psfmatch_metrics import (
    DeconvolutionCheck,
    KernelQuality,
    check_deconvolution,
    encircled_energy,
    kernel_quality,
    matched_psf,
)

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def elliptical_gaussian(size, fwhm_y, fwhm_x):
    """Pixel-integrated Gaussian with different FWHMs along y and x, unit sum."""
    i = np.arange(size) - size // 2

    def profile(fwhm):
        s = fwhm / FWHM_PER_SIGMA
        return ndtr((i + 0.5) / s) - ndtr((i - 0.5) / s)

    p = np.outer(profile(fwhm_y), profile(fwhm_x))
    return p / p.sum()


def test_delta_kernel_on_identical_psfs_is_perfect():
    psf = moffat_psf(31, 3.0, 3.0)
    delta = np.zeros((7, 7))
    delta[3, 3] = 1.0
    q = kernel_quality(delta, psf, psf)
    assert isinstance(q, KernelQuality)
    assert q.aniano_d == pytest.approx(0.0, abs=1e-14)
    assert q.w_minus == 0.0
    assert q.max_ee_difference == pytest.approx(0.0, abs=1e-14)
    assert q.kernel_sum == 1.0 and q.noise_gain == 1.0
    assert q.centroid_offset == pytest.approx(0.0, abs=1e-12)


def test_exact_gaussian_kernel_between_pixel_integrated_gaussians():
    # integrated Gaussians of variance s^2 (+ the pixel) are matched exactly by the
    # point-sampled Gaussian of variance s_t^2 - s_s^2
    source, target = gaussian_psf(41, 3.0), gaussian_psf(41, 4.0)
    kernel = gaussian_psf(31, math.sqrt(4.0**2 - 3.0**2), integrate=False)
    q = kernel_quality(kernel, source, target)
    assert q.aniano_d < 1e-5 and q.max_ee_difference < 1e-6 and q.centroid_offset < 1e-9
    assert q.noise_gain == pytest.approx(np.sqrt(np.sum(kernel**2)))
    # a wrong width is seen by every measure
    wrong = kernel_quality(gaussian_psf(31, 2.0, integrate=False), source, target)
    assert wrong.aniano_d > 0.05 and wrong.max_ee_difference > 0.01


def test_w_minus_of_a_kernel_with_known_negative_lobes():
    kernel = np.zeros((3, 3))
    kernel[1, 1] = 1.5
    kernel[0, 1] = kernel[2, 1] = kernel[1, 0] = kernel[1, 2] = -0.125
    psf = gaussian_psf(21, 3.0)
    q = kernel_quality(kernel, psf, psf)
    # 1/2 sum(|K| - K) = sum of the negative magnitudes = 0.5; sum K = 1
    assert q.w_minus == pytest.approx(0.5, rel=1e-14)
    assert q.kernel_sum == pytest.approx(1.0, rel=1e-14)
    assert q.noise_gain == pytest.approx(math.sqrt(1.5**2 + 4 * 0.125**2), rel=1e-14)
    # W- is a ratio: scale-free
    assert kernel_quality(3.0 * kernel, psf, psf).w_minus == pytest.approx(0.5, rel=1e-14)
    # a shifted delta: centroid offset of one pixel, D = sum|shifted - psf|
    shift = np.zeros((5, 5))
    shift[2, 3] = 1.0
    q = kernel_quality(shift, psf, psf)
    assert q.centroid_offset == pytest.approx(1.0, abs=1e-6)
    rolled = np.roll(np.pad(psf, 2), 1, axis=1)
    assert q.aniano_d == pytest.approx(np.abs(rolled - np.pad(psf, 2)).sum(), rel=1e-12)
    zero_sum = kernel_quality(kernel - kernel.mean(), psf, psf)
    assert math.isinf(zero_sum.w_minus)


def test_matched_psf_is_the_centred_linear_convolution():
    source = np.zeros((5, 5))
    source[2, 2] = 1.0
    kernel = np.arange(21, dtype=float).reshape(7, 3)
    m = matched_psf(kernel, source)
    assert m.shape == (11, 7)
    np.testing.assert_array_equal(m[2:9, 2:5], kernel)
    assert m.sum() == pytest.approx(kernel.sum())
    with pytest.raises(ValueError, match="odd"):
        matched_psf(np.ones((4, 3)), source)


def test_encircled_energy_exact_cases():
    # uniform stamp: the covered area is pi r^2 exactly, for r within the stamp
    flat = np.ones((21, 21))
    r, ee = encircled_energy(flat, radii=[0.3, 0.5, 0.8, 2.0, 7.3, 10.5])
    np.testing.assert_allclose(ee * flat.sum(), np.pi * r**2, rtol=1e-12)
    # one central pixel: circle-square intersection
    single = np.zeros((5, 5))
    single[2, 2] = 1.0
    r = np.array([0.25, 0.5, 0.6, 0.7, 0.705])  # formula valid up to r = sqrt(2) / 2
    _, ee = encircled_energy(single, radii=r)
    seg = r**2 * np.arccos(np.minimum(0.5 / r, 1.0)) - 0.5 * np.sqrt(np.maximum(r**2 - 0.25, 0))
    np.testing.assert_allclose(ee, np.pi * r**2 - 4 * seg, rtol=1e-12)
    assert encircled_energy(single, radii=[0.71])[1][0] == pytest.approx(1.0)
    # default radii
    r, ee = encircled_energy(flat)
    np.testing.assert_allclose(r, 0.5 * np.arange(1, 22))
    assert ee[-1] == pytest.approx(np.pi * 10.5**2 / 441) and np.all(np.diff(ee) > 0)


@pytest.mark.parametrize("sigma", [5.0, 8.0])
def test_encircled_energy_of_a_gaussian(sigma):
    psf = gaussian_psf(121, sigma * FWHM_PER_SIGMA, integrate=False)
    r, ee = encircled_energy(psf, radii=np.linspace(0.5, 40.0, 80))
    analytic = 1.0 - np.exp(-(r**2) / (2 * sigma**2))
    # spreading each sample over its pixel adds the pixel variance 1/12 per axis
    assert np.max(np.abs(ee - analytic)) < 0.05 / sigma**2
    with_pixel = 1.0 - np.exp(-(r**2) / (2 * (sigma**2 + 1.0 / 12.0)))
    assert np.max(np.abs(ee - with_pixel)) < 0.01 / sigma**2


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        (gaussian_psf(41, 2.0), gaussian_psf(41, 3.5), False),
        (moffat_psf(51, 2.5, 2.5), gaussian_psf(51, 4.5), False),
        (gaussian_psf(41, 3.0), gaussian_psf(41, 3.0), False),
        (gaussian_psf(41, 3.0), gaussian_psf(41, 2.5), True),
        (gaussian_psf(41, 3.0), gaussian_psf(41, 2.9), True),
        (elliptical_gaussian(41, 4.0, 2.0), gaussian_psf(41, 3.5), True),
        (elliptical_gaussian(41, 4.0, 2.0), gaussian_psf(41, 4.5), False),
    ],
)
def test_check_deconvolution_cases(source, target, expected):
    res = check_deconvolution(source, target)
    assert isinstance(res, DeconvolutionCheck)
    assert res.is_deconvolution is expected
    assert (res.max_gain > 1.2) is expected
    assert res.reason.startswith("deconvolution" if expected else "convolution")


def test_check_deconvolution_numbers_and_reason():
    res = check_deconvolution(gaussian_psf(41, 3.0), gaussian_psf(31, 2.5), position=(12, 340))
    assert res.fwhm_source == pytest.approx(3.077, abs=0.01)  # integrated: sqrt(3^2 + 1/12 ...)
    assert res.fwhm_target < res.fwhm_source
    # Gaussians: |T/S| = exp(2 pi^2 k^2 (s_s^2 - s_t^2)), large at the reliable edge
    assert res.max_gain > 5.0
    assert "2.59 px" in res.reason and "3.08 px" in res.reason and "(12.0, 340.0)" in res.reason
    # an elongated source: the geometric-mean FWHM alone would not see it
    long = check_deconvolution(elliptical_gaussian(41, 4.0, 2.0), gaussian_psf(41, 3.5))
    assert long.fwhm_target > long.fwhm_source and long.is_deconvolution
    # a looser tolerance accepts a mild deconvolution
    mild = (gaussian_psf(41, 3.0), gaussian_psf(41, 2.9))
    assert not check_deconvolution(*mild, max_gain=2.0).is_deconvolution
    # the FWHM criterion alone (gain tolerance out of reach)
    fwhm_only = check_deconvolution(gaussian_psf(41, 3.0), gaussian_psf(41, 2.8), max_gain=100)
    assert fwhm_only.is_deconvolution and "narrower by more than 5 %" in fwhm_only.reason
    assert not check_deconvolution(
        gaussian_psf(41, 3.0), gaussian_psf(41, 2.8), max_gain=100, fwhm_tolerance=0.1
    ).is_deconvolution
    with pytest.raises(ValueError, match="max_gain"):
        check_deconvolution(*mild, max_gain=0.5)
    with pytest.raises(ValueError, match="floor"):
        check_deconvolution(*mild, floor=0.0)

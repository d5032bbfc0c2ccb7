import math

import numpy as np
import pytest
from scipy import fft as sfft

from stmatch.algorithms.psf import (
    centroid,
    check_psf_pair,
    fft_origin_to_stamp,
    gaussian_psf,
    moffat_psf,
    normalize_psf,
    psf_to_fft_origin,
    recentre_psf,
)


@pytest.mark.parametrize("integrate", [True, False])
@pytest.mark.parametrize("offset", [(0.0, 0.0), (0.3, -0.45), (-1.25, 0.7)])
def test_centroid_of_gaussian_at_known_offset(offset, integrate):
    centre = (15 + offset[0], 15 + offset[1])
    psf = gaussian_psf(31, 3.5, center=centre, integrate=integrate)
    assert psf.sum() == pytest.approx(1.0, abs=1e-14)
    y, x = centroid(psf)
    # the stamp holds > 8 sigma on every side: the first moment is the centre
    assert y == pytest.approx(centre[0], abs=1e-9)
    assert x == pytest.approx(centre[1], abs=1e-9)


def test_centroid_of_moffat_and_its_fwhm():
    psf = moffat_psf(61, 4.0, beta=4.0, center=(30.2, 29.9))
    y, x = centroid(psf)
    # beta = 4 wings beyond 30 px are negligible (< 1e-6 of the flux)
    assert y == pytest.approx(30.2, abs=2e-4) and x == pytest.approx(29.9, abs=2e-4)
    # point-sampled profile: value at r = FWHM/2 is half the peak
    sampled = moffat_psf(61, 4.0, beta=4.0, integrate=False)
    assert sampled[30, 32] / sampled[30, 30] == pytest.approx(0.5, rel=1e-12)
    g = gaussian_psf(61, 4.0, integrate=False)
    assert g[30, 32] / g[30, 30] == pytest.approx(0.5, rel=1e-12)


def test_pixel_integrated_gaussian_matches_brute_force_integration():
    fine = gaussian_psf(31 * 21, 3.0 * 21, center=(15 * 21 + 10 + 0.3 * 21, 15 * 21 + 10))
    binned = fine.reshape(31, 21, 31, 21).sum(axis=(1, 3))
    psf = gaussian_psf(31, 3.0, center=(15.3, 15.0))
    np.testing.assert_allclose(psf, binned, rtol=0, atol=1e-12)
    # and the Moffat's sub-pixel integration is close to a much finer one
    m = moffat_psf(31, 3.0, center=(15.3, 15.0))
    m_fine = moffat_psf(31, 3.0, center=(15.3, 15.0), oversample=41)
    assert np.abs(m - m_fine).max() < 1e-3 * m_fine.max()  # midpoint rule, 11 x 11


@pytest.mark.parametrize("offset", [(0.3, -0.4), (-0.5, 0.5), (1.2, 0.1)])
def test_recentre_moves_centroid_and_keeps_profile(offset):
    psf = gaussian_psf(31, 4.0, center=(15 + offset[0], 15 + offset[1]))
    out = recentre_psf(psf)
    assert out.dtype == np.float64 and out.sum() == pytest.approx(1.0, abs=1e-14)
    y, x = centroid(out)
    assert abs(y - 15) < 1e-3 and abs(x - 15) < 1e-3
    # the Fourier shift is exact for a well-sampled PSF (aliasing ~1e-7 at FWHM 4 px)
    expected = gaussian_psf(31, 4.0)
    assert np.abs(out - expected).max() < 1e-5 * expected.max()
    assert np.abs(psf - expected).max() > 1e-2 * expected.max()  # it did move


def test_recentre_moffat_and_explicit_shift():
    psf = moffat_psf(41, 5.0, beta=3.0, center=(20.35, 19.8))
    out = recentre_psf(psf)
    y, x = centroid(out)
    assert abs(y - 20) < 1e-3 and abs(x - 20) < 1e-3
    # explicit shift: moving a centred Gaussian by (0.25, -0.5) equals rendering it there
    g = recentre_psf(gaussian_psf(31, 4.0), shift=(0.25, -0.5))
    np.testing.assert_allclose(
        g, gaussian_psf(31, 4.0, center=(15.25, 14.5)), rtol=0, atol=1e-5 * g.max()
    )


def test_recentre_does_not_mutate_input():
    psf = gaussian_psf(21, 3.0, center=(10.3, 10.0)).astype(np.float32)
    before = psf.copy()
    recentre_psf(psf)
    np.testing.assert_array_equal(psf, before)


@pytest.mark.parametrize("shape", [(64, 64), (63, 65), (50, 33), (31, 31)])
def test_fft_origin_convolution_of_delta_reproduces_centred_psf(shape):
    psf = gaussian_psf((11, 15), 3.0, center=(5.2, 6.9))  # asymmetric, odd stamp
    image = np.zeros(shape)
    y0, x0 = shape[0] // 2 + 3, shape[1] // 2 - 4
    image[y0, x0] = 1.0
    origin = psf_to_fft_origin(psf, shape)
    assert origin[0, 0] == psf[5, 7] and origin.sum() == pytest.approx(1.0)
    conv = sfft.irfft2(sfft.rfft2(image) * sfft.rfft2(origin), s=shape)
    expected = np.zeros(shape)
    expected[y0 - 5 : y0 + 6, x0 - 7 : x0 + 8] = psf
    np.testing.assert_allclose(conv, expected, rtol=0, atol=1e-15)
    # and the inverse placement gives the stamp back
    np.testing.assert_array_equal(fft_origin_to_stamp(origin, psf.shape), psf)


def test_fft_origin_matches_ifftshift_placement():
    psf = gaussian_psf(9, 2.0, center=(4.4, 3.7))
    for shape in [(32, 32), (33, 31)]:
        big = np.zeros(shape)
        cy, cx = shape[0] // 2, shape[1] // 2
        big[cy - 4 : cy + 5, cx - 4 : cx + 5] = psf
        np.testing.assert_array_equal(psf_to_fft_origin(psf, shape), np.fft.ifftshift(big))


def test_check_psf_pair():
    a = gaussian_psf(31, 4.0)
    b = gaussian_psf(21, 3.0, center=(10.1, 9.95))
    (dy, dx), exceeds = check_psf_pair(a, b)
    assert dy == pytest.approx(0.1, abs=1e-9) and dx == pytest.approx(-0.05, abs=1e-9)
    assert not exceeds
    res = check_psf_pair(a, gaussian_psf(21, 3.0, center=(10.2, 10.15)), tolerance=0.2)
    assert res.exceeds and math.hypot(*res.offset) == pytest.approx(0.25, abs=1e-9)
    assert not check_psf_pair(a, a, tolerance=0.0).exceeds


def test_normalize_and_errors():
    p = normalize_psf(np.ones((3, 3), dtype=np.int32))
    assert p.dtype == np.float64 and p.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2-D"):
        normalize_psf(np.ones(5))
    with pytest.raises(ValueError, match="non-finite"):
        normalize_psf(np.array([[1.0, np.nan], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="positive sum"):
        normalize_psf(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="positive sum"):
        centroid(-np.ones((3, 3)))
    with pytest.raises(ValueError, match="odd"):
        recentre_psf(np.ones((4, 5)))
    with pytest.raises(ValueError, match="odd"):
        psf_to_fft_origin(np.ones((5, 4)), (32, 32))
    with pytest.raises(ValueError, match="larger"):
        psf_to_fft_origin(np.ones((35, 5)), (32, 32))
    with pytest.raises(ValueError, match="odd"):
        gaussian_psf(32, 3.0)
    with pytest.raises(ValueError, match="fwhm"):
        gaussian_psf(31, 0.0)
    with pytest.raises(ValueError, match="odd"):
        moffat_psf(31, 3.0, oversample=4)
    with pytest.raises(ValueError, match="tolerance"):
        check_psf_pair(np.ones((3, 3)), np.ones((3, 3)), tolerance=-1)

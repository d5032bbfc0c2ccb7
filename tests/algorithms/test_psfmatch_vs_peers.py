"""Differential tests of the PSF-matching kernels against photutils 3.0 and pypher 0.7.3.

Equivalent settings (the formulas are then identical, so the kernels agree to rounding):

* ``solve_kernel(S, T, method="fourier", kernel_size=N, pad_psf_by=0)`` works on the
  stamp grid itself (no padding, no cropping), like the peers.
* ``fourier_filter="wiener", penalty="none", regularization=r`` ==
  ``photutils.psf_matching.make_wiener_kernel(S, T, regularization=r)``.
* ``fourier_filter="wiener", penalty="laplacian", regularization=r`` ==
  ``make_wiener_kernel(S, T, regularization=r, penalty="laplacian")`` ==
  ``pypher.homogenization_kernel(T, S, reg_fact=r)`` (unit-sum PSFs).
* ``fourier_filter="ratio", regularization=r`` == ``make_kernel(S, T, regularization=r)``.
* windows ``"hann"``, ``("tukey", a)``, ``("cosine_bell", a)``, ``("top_hat", b)`` ==
  ``HanningWindow()``, ``TukeyWindow(a)``, ``CosineBellWindow(a)``, ``TopHatWindow(b)``.
"""

import math

import numpy as np
import pytest
from photutils.psf_matching import (
    CosineBellWindow,
    HanningWindow,
    TopHatWindow,
    TukeyWindow,
    make_kernel,
    make_wiener_kernel,
)
from pypher.pypher import homogenization_kernel
from scipy.signal import fftconvolve

from stmatch.algorithms.psf import gaussian_psf, moffat_psf
from stmatch.algorithms.psfmatch_basis import alard_lupton_basis, alard_lupton_sigmas
from stmatch.algorithms.psfmatch_kernel import make_window, solve_kernel

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

PAIRS = {
    "gauss": (gaussian_psf(41, 2.0), gaussian_psf(41, 3.5)),
    "moffat": (moffat_psf(41, 2.5, beta=2.5), gaussian_psf(41, 4.5)),
    "offcentre": (
        moffat_psf(25, 3.0, beta=3.0, center=(12.2, 11.9)),
        moffat_psf(25, 5.0, beta=2.5),
    ),
}
TOL = 1e-9  # relative to the kernel peak; the agreement is at the 1e-15 level

WINDOWS = [
    ("hann", HanningWindow()),
    (("tukey", 0.3), TukeyWindow(0.3)),
    (("cosine_bell", 0.6), CosineBellWindow(0.6)),
    (("top_hat", 0.7), TopHatWindow(0.7)),
]


def ours(source, target, **kw):
    n = source.shape[0]
    return solve_kernel(source, target, method="fourier", kernel_size=n, pad_psf_by=0, **kw).kernel


def assert_same(a, b):
    assert a.shape == b.shape
    assert np.abs(a - b).max() < TOL * np.abs(b).max()


@pytest.mark.parametrize("pair", list(PAIRS))
@pytest.mark.parametrize("reg", [1e-4, 1e-6])
def test_wiener_vs_photutils_and_pypher(pair, reg):
    s, t = PAIRS[pair]
    assert_same(ours(s, t, regularization=reg), make_wiener_kernel(s, t, regularization=reg))
    lap = ours(s, t, regularization=reg, penalty="laplacian")
    assert_same(lap, make_wiener_kernel(s, t, regularization=reg, penalty="laplacian"))
    ref, _ = homogenization_kernel(t, s, reg_fact=reg)
    assert ref.sum() == pytest.approx(1.0, abs=1e-12)  # pypher does not normalise
    assert_same(lap, ref)


@pytest.mark.parametrize("pair", list(PAIRS))
@pytest.mark.parametrize(("window", "peer_window"), WINDOWS)
def test_windowed_kernels_vs_photutils(pair, window, peer_window):
    s, t = PAIRS[pair]
    assert_same(
        ours(s, t, window=window, fourier_filter="ratio"), make_kernel(s, t, window=peer_window)
    )
    assert_same(ours(s, t, window=window), make_wiener_kernel(s, t, window=peer_window))


@pytest.mark.parametrize("reg", [0.0, 1e-3, 0.05])
def test_ratio_threshold_vs_photutils(reg):
    s, t = PAIRS["gauss"]
    got = ours(s, t, fourier_filter="ratio", regularization=reg, window=("tukey", 0.5))
    assert_same(got, make_kernel(s, t, regularization=reg, window=TukeyWindow(0.5)))


@pytest.mark.parametrize("shape", [(41, 41), (25, 25), (7, 7)])
@pytest.mark.parametrize(("window", "peer_window"), WINDOWS)
def test_window_arrays_vs_photutils(shape, window, peer_window):
    np.testing.assert_allclose(make_window(window, shape), peer_window(shape), atol=1e-15)


def test_alard_lupton_and_photutils_both_near_the_analytic_kernel():
    s, t = gaussian_psf(41, 3.0), gaussian_psf(41, 5.0)
    sk = math.sqrt(5.0**2 - 3.0**2) / FWHM_PER_SIGMA
    exact41 = gaussian_psf(41, sk * FWHM_PER_SIGMA, integrate=False)
    exact = exact41[10:31, 10:31] / exact41[10:31, 10:31].sum()
    sig = alard_lupton_sigmas(fwhm_source=3.0, fwhm_target=5.0)
    al = solve_kernel(s, t, basis=alard_lupton_basis(21, sigmas=sig, degrees=(4, 2, 2))).kernel
    peer = make_wiener_kernel(s, t, regularization=1e-10)
    assert np.abs(al - exact).max() < 1e-5 * exact.max()
    assert np.abs(peer - exact41).max() < 1e-5 * exact41.max()
    # and the two agree with each other where both are defined
    assert np.abs(al - peer[10:31, 10:31]).max() < 2e-5 * exact.max()
    # the matched PSFs agree with the target
    for k in (al, peer):
        assert np.abs(fftconvolve(s, k, mode="same") - t).sum() < 1e-5

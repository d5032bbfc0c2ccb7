import numpy as np
import pytest

from stmatch.algorithms.psf import centroid, gaussian_psf, moffat_psf, stamp_centre
from stmatch.algorithms.psfgrid import (
    EmpiricalPsf,
    bin_oversampled,
    empirical_psf,
    fwhm_of,
    oversample_psf,
    psf_at,
)


def _render(shape, xs, ys, fluxes, make, size=25):
    """Sum of pixel-integrated stamps ``make(size, centre)`` at sub-pixel positions."""
    img = np.zeros(shape)
    h = size // 2
    for x, y, f in zip(xs, ys, fluxes, strict=True):
        ix, iy = int(round(x)), int(round(y))
        stamp = make(size, (h + y - iy, h + x - ix))
        y0, x0 = iy - h, ix - h
        sy = slice(max(y0, 0), min(y0 + size, shape[0]))
        sx = slice(max(x0, 0), min(x0 + size, shape[1]))
        img[sy, sx] += f * stamp[sy.start - y0 : sy.stop - y0, sx.start - x0 : sx.stop - x0]
    return img


# ----------------------------------------------------------------------------- binning
@pytest.mark.parametrize("s", [2, 3, 4])
def test_bin_oversampled_gaussian_equals_detector_gaussian(s):
    n = 21
    big = n * s if s % 2 else n * s + 1  # odd stamp with the source on its centre pixel
    over = gaussian_psf(big, 3.0 * s)  # pixel-integrated on the fine grid
    det = bin_oversampled(over, s)
    assert det.shape == (n, n)
    np.testing.assert_allclose(det, gaussian_psf(n, 3.0), rtol=0, atol=1e-10)
    assert det.sum() == pytest.approx(over.sum(), abs=1e-12)
    cy, cx = centroid(det)
    assert abs(cy - 10) < 1e-9 and abs(cx - 10) < 1e-9


def test_bin_oversampled_even_factor_is_not_a_half_weight_sum():
    # the naive [1/2, 1, 1/2] weighting for s = 2 is wrong at the 1e-3 level of the peak:
    # the exact binning must beat it by orders of magnitude
    s, n = 2, 15
    over = gaussian_psf(n * s + 1, 2.5 * s)
    k = np.array([0.5, 1.0, 0.5])
    naive = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid")[::2], 0, over)
    naive = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid")[::2], 1, naive)
    truth = gaussian_psf(n, 2.5)
    assert np.abs(naive - truth).max() > 1e-3 * truth.max()
    assert np.abs(bin_oversampled(over, s) - truth).max() < 1e-8 * truth.max()


def test_bin_oversampled_off_centre_source_and_odd_block_sums():
    rng = np.random.default_rng(3)
    stamp = rng.random((15, 21))
    out = bin_oversampled(stamp, 3)
    np.testing.assert_allclose(out, stamp.reshape(5, 3, 7, 3).sum(axis=(1, 3)), atol=1e-13)
    # a source offset by (0.4, -0.3) detector pixels stays at that offset
    over = gaussian_psf(63, 9.0, center=(31 + 1.2, 31 - 0.9))
    cy, cx = centroid(bin_oversampled(over, 3))
    assert cy == pytest.approx(10.4, abs=1e-9) and cx == pytest.approx(9.7, abs=1e-9)
    assert np.array_equal(bin_oversampled(stamp, 1), stamp)


def test_bin_oversampled_rejects_bad_input():
    with pytest.raises(ValueError, match="odd"):
        bin_oversampled(np.ones((8, 9)), 2)
    with pytest.raises(ValueError, match="oversampling"):
        bin_oversampled(np.ones((9, 9)), 1.5)
    with pytest.raises(ValueError, match="smaller than one detector pixel"):
        bin_oversampled(np.ones((3, 3)), 4)
    with pytest.raises(ValueError, match="non-finite"):
        bin_oversampled(np.full((9, 9), np.nan), 3)


@pytest.mark.parametrize("s", [2, 3, 4])
def test_oversample_psf_inverts_binning(s):
    det = gaussian_psf(21, 3.0)
    over = oversample_psf(det, s)
    assert over.shape[0] % 2 == 1 and over.sum() == pytest.approx(1.0, abs=1e-12)
    back = bin_oversampled(over, s)
    tol = 1e-12 if s % 2 else 1e-5  # odd s: exact identity
    np.testing.assert_allclose(back, det, rtol=0, atol=tol)
    # band-limited reconstruction of the fine pixel-integrated Gaussian (aliasing ~ 1e-4)
    truth = gaussian_psf(over.shape[0], 3.0 * s)
    assert np.abs(over - truth).max() < 3e-4 * truth.max()


# ----------------------------------------------------------------------------- grids
def _two_column_grid():
    g2, g3 = gaussian_psf(25, 2.0), gaussian_psf(25, 3.0)
    gx = np.array([0.0, 100.0, 0.0, 100.0])
    gy = np.array([0.0, 0.0, 200.0, 200.0])
    return np.stack([g2, g3, g2, g3]), gx, gy, g2, g3


def test_psf_at_node_midpoint_and_clamping():
    stamps, gx, gy, g2, g3 = _two_column_grid()
    np.testing.assert_allclose(psf_at(stamps, gx, gy, 0.0, 0.0), g2, atol=1e-15)
    np.testing.assert_allclose(psf_at(stamps, gx, gy, 100.0, 200.0), g3, atol=1e-15)
    np.testing.assert_allclose(psf_at(stamps, gx, gy, 50.0, 77.0), 0.5 * (g2 + g3), atol=1e-15)
    np.testing.assert_allclose(
        psf_at(stamps, gx, gy, 25.0, 10.0), 0.75 * g2 + 0.25 * g3, atol=1e-15
    )
    # outside the grid the nearest edge is used
    np.testing.assert_allclose(psf_at(stamps, gx, gy, -40.0, 500.0), g2, atol=1e-15)
    np.testing.assert_allclose(psf_at(stamps, gx, gy, 1e4, -3.0), g3, atol=1e-15)


def test_psf_at_bilinear_on_irregular_rectangular_grid():
    xs, ys = [0.0, 30.0, 100.0], [0.0, 50.0]
    fw = {(0, 0): 2.0, (1, 0): 2.5, (2, 0): 3.0, (0, 1): 3.5, (1, 1): 4.0, (2, 1): 4.5}
    stamps, gx, gy = [], [], []
    for (i, j), f in fw.items():
        stamps.append(gaussian_psf(31, f))
        gx.append(xs[i])
        gy.append(ys[j])
    stamps = np.stack(stamps)
    # (x, y) = (15, 10): t_x = 0.5 between x = 0 and 30, t_y = 0.2
    want = (
        0.5 * 0.8 * stamps[0]
        + 0.5 * 0.8 * stamps[1]
        + 0.5 * 0.2 * stamps[3]
        + 0.5 * 0.2 * stamps[4]
    )
    np.testing.assert_allclose(psf_at(stamps, gx, gy, 15.0, 10.0), want, atol=1e-15)
    # (65, 50): halfway between x = 30 and 100 on the upper row
    np.testing.assert_allclose(
        psf_at(stamps, gx, gy, 65.0, 50.0), 0.5 * (stamps[4] + stamps[5]), atol=1e-15
    )


def test_psf_at_scattered_nodes_and_oversampling():
    s = 3
    nodes = [gaussian_psf(75, f * s) for f in (2.0, 2.5, 3.0)]
    gx, gy = [0.0, 100.0, 30.0], [0.0, 10.0, 90.0]  # not a rectangular grid
    for k in range(3):
        got = psf_at(nodes, gx, gy, gx[k], gy[k], oversampling=s)
        np.testing.assert_allclose(got, gaussian_psf(25, (2.0, 2.5, 3.0)[k]), atol=1e-12)
    mid = psf_at(nodes, gx, gy, 50.0, 40.0, oversampling=s)
    assert mid.shape == (25, 25) and mid.sum() == pytest.approx(1.0, abs=1e-13)
    # a convex combination: its peak lies between the extreme nodes' peaks
    assert gaussian_psf(25, 3.0).max() < mid.max() < gaussian_psf(25, 2.0).max()
    with pytest.raises(ValueError, match="one position per stamp"):
        psf_at(nodes, gx[:2], gy, 0.0, 0.0)


# ----------------------------------------------------------------------------- FWHM
@pytest.mark.parametrize("fwhm", [3.0, 4.0, 6.0])  # sampled well enough for 1e-4
def test_fwhm_of_gaussians(fwhm):
    assert fwhm_of(gaussian_psf(41, fwhm, integrate=False)) == pytest.approx(fwhm, rel=1e-4)
    integrated = gaussian_psf(41, fwhm)
    assert fwhm_of(integrated) > fwhm  # the pixel widens the stamp
    assert fwhm_of(integrated, deconvolve_pixel=True) == pytest.approx(fwhm, rel=2e-3)
    # elliptical Gaussian: geometric mean of the axes
    yy, xx = np.indices((41, 41)) - 20.0
    sy, sx = fwhm / 2.3548200450309493, 1.5 * fwhm / 2.3548200450309493
    ell = np.exp(-0.5 * ((yy / sy) ** 2 + (xx / sx) ** 2))
    assert fwhm_of(ell) == pytest.approx(fwhm * np.sqrt(1.5), rel=1e-4)


def test_fwhm_of_moffat_is_core_width():
    f = fwhm_of(moffat_psf(51, 3.0, beta=2.5))
    assert 3.0 < f < 3.0 * 1.3


# ----------------------------------------------------------------------------- empirical PSF
FWHM, BETA, SIZE, NOISE = 3.0, 2.5, 25, 5.0


def _moffat_field(seed, n=30, shape=(300, 330), spacing=50):
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(6) * spacing + 35, np.arange(5) * spacing + 35)
    xs = gx.ravel()[:n] + rng.uniform(-3, 3, n)
    ys = gy.ravel()[:n] + rng.uniform(-3, 3, n)
    fl = rng.uniform(2e4, 1e5, n)

    def make(size, c):
        return moffat_psf(size, FWHM, BETA, center=c)

    img = _render(shape, xs, ys, fl, make) + rng.normal(0.0, NOISE, shape)
    return img, xs, ys, rng


def test_empirical_psf_recovers_moffat():
    img, xs, ys, rng = _moffat_field(11)
    before = img.copy()
    # approximate positions (within 0.3 px) are refined by the windowed centroids
    guess = np.column_stack(
        [xs + rng.uniform(-0.3, 0.3, xs.size), ys + rng.uniform(-0.3, 0.3, xs.size)]
    )
    res = empirical_psf(img, guess, size=SIZE, sigma=NOISE)
    assert isinstance(res, EmpiricalPsf) and res.n_used == 30 and res.oversampling == 1
    assert np.array_equal(img, before)
    true = moffat_psf(SIZE, FWHM, BETA)
    assert res.psf.shape == (SIZE, SIZE) and res.psf.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.abs(res.psf - true).max() < 0.01 * true.max()
    cy, cx = centroid(res.psf)
    c = stamp_centre(res.psf.shape)
    assert abs(cy - c[0]) < 0.02 and abs(cx - c[1]) < 0.02
    assert np.abs(res.positions_used[:, 0] - xs).max() < 0.05
    assert np.abs(res.positions_used[:, 1] - ys).max() < 0.05
    assert res.fwhm == pytest.approx(fwhm_of(true), rel=0.02)


def test_empirical_psf_rejects_masked_edge_and_clips_a_hot_pixel():
    img, xs, ys, _ = _moffat_field(12)
    xs, ys = xs.copy(), ys.copy()
    mask = np.zeros(img.shape, dtype=bool)
    mask[int(round(ys[3])) + 4, int(round(xs[3])) - 2] = True  # inside star 3's stamp
    img = img.copy()
    img[int(round(ys[7])) + 5, int(round(xs[7])) + 3] += 3e4  # cosmic ray in star 7's stamp
    pos = np.column_stack([np.append(xs, 5.0), np.append(ys, 150.0)])  # last: at the edge
    res = empirical_psf(img, pos, size=SIZE, sigma=NOISE, mask=mask)
    assert res.n_used == 29  # 31 positions - masked - edge
    true = moffat_psf(SIZE, FWHM, BETA)
    assert np.abs(res.psf - true).max() < 0.01 * true.max()


def test_empirical_psf_oversampled_bins_back():
    img, xs, ys, _ = _moffat_field(13)
    pos = np.column_stack([xs, ys])
    det = empirical_psf(img, pos, size=SIZE, sigma=NOISE)
    over = empirical_psf(img, pos, size=SIZE, sigma=NOISE, oversampling=3)
    assert over.oversampling == 3 and over.psf.shape == (3 * SIZE, 3 * SIZE)
    np.testing.assert_allclose(bin_oversampled(over.psf, 3), det.psf, atol=1e-12)
    assert over.fwhm == pytest.approx(det.fwhm)


def test_empirical_psf_too_few_stars():
    img, xs, ys, _ = _moffat_field(14)
    with pytest.raises(ValueError, match="only 3 usable stars"):
        empirical_psf(img, np.column_stack([xs[:3], ys[:3]]), size=SIZE, sigma=NOISE)
    with pytest.raises(ValueError, match="only 0 usable stars"):
        empirical_psf(img, np.array([[2.0, 2.0], [400.0, 3.0]]), size=SIZE, sigma=NOISE)
    with pytest.raises(ValueError, match="odd"):
        empirical_psf(img, np.column_stack([xs, ys]), size=24, sigma=NOISE)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        empirical_psf(img, xs, size=SIZE, sigma=NOISE)

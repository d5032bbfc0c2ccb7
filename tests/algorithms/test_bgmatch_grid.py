"""Tests of the binning, reference choice and diagnostics of background matching."""

import math

import numpy as np
import pytest

from stmatch.algorithms.bgmatch_grid import (
    BinnedGrid,
    bin_difference,
    bin_edges,
    match_diagnostics,
    reference_scores,
)


def _bins(grid, image):
    """Yield (j, i, pixel values) of every bin, from the edges (brute force)."""
    for j in range(grid.y.size):
        for i in range(grid.x.size):
            ys = slice(grid.y_edges[j], grid.y_edges[j + 1])
            xs = slice(grid.x_edges[i], grid.x_edges[i + 1])
            yield j, i, image[ys, xs]


# -- edges and centres --------------------------------------------------------------------
def test_bin_edges_counts_and_rounding():
    np.testing.assert_array_equal(bin_edges(600, bin_size=256), [0, 300, 600])
    np.testing.assert_array_equal(bin_edges(4096, bin_size=256), np.arange(0, 4097, 256))
    np.testing.assert_array_equal(bin_edges(1001, bin_size=256), [0, 250, 501, 751, 1001])
    np.testing.assert_array_equal(bin_edges(100, bin_size=100), [0, 100])
    np.testing.assert_array_equal(bin_edges(100, bin_size=60), [0, 50, 100])  # 1.67 -> 2
    np.testing.assert_array_equal(
        bin_edges(600, nbins=9), [0, 67, 133, 200, 267, 333, 400, 467, 533, 600]
    )
    with pytest.raises(ValueError, match="larger than the image"):
        bin_edges(100, bin_size=101)
    with pytest.raises(ValueError, match="bin count"):
        bin_edges(10, nbins=11)
    with pytest.raises(ValueError, match="positive integer"):
        bin_edges(10, bin_size=0)


def test_grid_geometry_and_too_large_bin():
    d = np.zeros((300, 1001))
    g = bin_difference(d, bin_size=256, statistic="MEAN")
    assert isinstance(g, BinnedGrid) and g.shape == (300, 1001) and g.nbins == (1, 4)
    np.testing.assert_array_equal(g.x_edges, [0, 250, 501, 751, 1001])
    # centre = mean pixel index of the bin, (lo + hi - 1) / 2
    np.testing.assert_allclose(g.x, [124.5, 375.0, 625.5, 875.5])
    np.testing.assert_allclose(g.y, [149.5])
    np.testing.assert_array_equal(g.npix, [[75000, 75300, 75000, 75000]])
    with pytest.raises(ValueError, match="larger than the image"):
        bin_difference(d, bin_size=301)
    with pytest.raises(ValueError, match="statistic"):
        bin_difference(d, bin_size=100, statistic="MODE")
    with pytest.raises(ValueError, match="2-D"):
        bin_difference(np.zeros(10), bin_size=2)
    with pytest.raises(ValueError, match="mask"):
        bin_difference(d, mask=np.zeros((3, 3), bool), bin_size=100)


# -- exact statistics against brute force --------------------------------------------------
def _image_with_bad_pixels(shape, seed):
    rng = np.random.default_rng(seed)
    d = rng.normal(3.0, 2.0, shape)
    d[rng.random(shape) < 0.05] = np.nan
    mask = rng.random(shape) < 0.1
    d[5:9, :] = np.inf  # a bad row
    return d, mask


@pytest.mark.parametrize("shape,bin_size", [((130, 171), 40), ((310, 305), 100)])
def test_mean_and_median_equal_brute_force(shape, bin_size):
    # ragged bins, NaN/inf and masked pixels; the second case has bins of ~10^4
    # pixels, which exercises the two-stage selection of the median
    d, mask = _image_with_bad_pixels(shape, 1)
    good_img = np.where(np.isfinite(d) & ~mask, d, np.nan)
    g_mean = bin_difference(d, mask=mask, bin_size=bin_size, statistic="MEAN")
    g_med = bin_difference(d, mask=mask, bin_size=bin_size, statistic="MEDIAN")
    for j, i, px in _bins(g_mean, good_img):
        v = px[np.isfinite(px)]
        assert g_mean.npix[j, i] == v.size == g_med.npix[j, i]
        assert g_mean.values[j, i] == pytest.approx(v.mean(), rel=1e-6, abs=1e-6)
        assert g_mean.stdev[j, i] == pytest.approx(v.std(ddof=1), rel=1e-5)
        assert g_mean.error[j, i] == pytest.approx(v.std(ddof=1) / math.sqrt(v.size), rel=1e-5)
        assert g_med.values[j, i] == np.median(v)
        assert g_med.error[j, i] == pytest.approx(
            math.sqrt(math.pi / 2) * v.std(ddof=1) / math.sqrt(v.size), rel=1e-5
        )
    assert not np.shares_memory(g_mean.values, d)


def test_median_selection_falls_back_when_subsample_misleads():
    # every 8th column (the subsample of a 128x128 bin) is offset by +100, so the
    # subsample's bounds miss the true median: the fallback must still be exact
    rng = np.random.default_rng(2)
    d = rng.normal(0.0, 1.0, (256, 256)).astype(np.float32)
    d[:, ::8] += 100.0
    g = bin_difference(d, bin_size=128, statistic="MEDIAN")
    for j, i, px in _bins(g, d):
        assert g.values[j, i] == np.median(px.astype(np.float64))
    g2 = bin_difference(d.astype(np.float64), bin_size=128, statistic="MEDIAN")
    np.testing.assert_allclose(g2.values, g.values, rtol=1e-6)


def _meanclip_reference(v, kappa, niter, min_pixels):
    """MEANCLIP from its definition, for bins small enough that the robust start uses
    every good pixel."""
    s = np.sort(v)
    m = s.size

    def rank(q):
        return s[int(math.floor(q * (m - 1) + 0.5))]

    c, sig = rank(0.5), (rank(0.75) - rank(0.25)) / 1.3489795003921634
    value, sd, n = c, sig, m
    for _ in range(niter):
        kept = v[np.abs(v - c) <= kappa * sig]
        if kept.size < min_pixels:
            break
        value, sd, n = kept.mean(), kept.std(ddof=1), kept.size
        c, sig = value, sd
    return value, sd, n


def test_meanclip_matches_its_definition_and_rejects_outliers():
    rng = np.random.default_rng(3)
    d = rng.normal(10.0, 1.0, (120, 160))
    hits = rng.random(d.shape) < 0.04
    d[hits] += rng.uniform(20, 200, hits.sum())  # unmasked cosmic rays
    mask = rng.random(d.shape) < 0.05
    g = bin_difference(d, mask=mask, bin_size=40, statistic="MEANCLIP", nsigma_clip=3.0, niter=3)
    for j, i, px in _bins(g, np.where(mask, np.nan, d)):
        v = px[np.isfinite(px)]
        value, sd, n = _meanclip_reference(v, 3.0, 3, 5)
        assert g.values[j, i] == pytest.approx(value, rel=1e-9)
        assert g.stdev[j, i] == pytest.approx(sd, rel=1e-6)
        assert g.npix[j, i] == n
        assert g.error[j, i] == pytest.approx(sd / math.sqrt(n), rel=1e-6)
    # the clipped mean is near the sky, the plain mean is not
    assert np.all(np.abs(g.values - 10.0) < 5 * g.error)
    mean = bin_difference(d, mask=mask, bin_size=40, statistic="MEAN")
    assert np.all(mean.values - 10.0 > 1.0)
    # one pass = clip about the median with the IQR sigma only
    g1 = bin_difference(d, mask=mask, bin_size=40, statistic="MEANCLIP", niter=1)
    v = np.where(mask, np.nan, d)[:40, :40]
    v = v[np.isfinite(v)]
    assert g1.values[0, 0] == pytest.approx(_meanclip_reference(v, 3.0, 1, 5)[0], rel=1e-9)


def test_meanclip_large_bins_with_sources_and_float32():
    # large bins (subsampled robust start): still clipped, float32 and float64 agree
    rng = np.random.default_rng(4)
    d = rng.normal(0.5, 1.0, (512, 512))
    d[rng.random(d.shape) < 0.02] += 50.0
    g64 = bin_difference(d, bin_size=128, statistic="MEANCLIP")
    g32 = bin_difference(d.astype(np.float32), bin_size=128, statistic="MEANCLIP")
    assert np.all(np.abs(g64.values - 0.5) < 5 * g64.error)
    np.testing.assert_allclose(g32.values, g64.values, atol=1e-5)
    np.testing.assert_array_equal(g32.npix, g64.npix)


def test_min_pixels_and_empty_bins():
    d = np.ones((100, 100))
    mask = np.zeros(d.shape, bool)
    mask[:50, :50] = True
    mask[10, 10] = mask[11, 11] = mask[12, 12] = mask[13, 13] = False  # 4 good pixels
    mask[50:, 50:] = True  # empty bin
    for stat in ("MEAN", "MEDIAN", "MEANCLIP"):
        g = bin_difference(d, mask=mask, bin_size=50, statistic=stat, min_pixels=5)
        assert np.isnan(g.values[0, 0]) and np.isnan(g.values[1, 1])
        assert g.npix[0, 0] == 4 and g.npix[1, 1] == 0
        assert g.n_valid == 2 and np.all(g.values[g.valid] == 1.0)
        g4 = bin_difference(d, mask=mask, bin_size=50, statistic=stat, min_pixels=4)
        assert g4.values[0, 0] == 1.0 and g4.n_valid == 3
    with pytest.raises(ValueError, match="min_pixels"):
        bin_difference(d, bin_size=50, min_pixels=1)
    with pytest.raises(ValueError, match="niter"):
        bin_difference(d, bin_size=50, niter=0)


def test_errors_match_the_scatter_of_bin_values():
    # pure noise: the scatter of the bin values across bins equals the stated errors
    rng = np.random.default_rng(5)
    d = rng.normal(0.0, 2.0, (800, 800)).astype(np.float32)
    for stat, eff in (("MEAN", 1.0), ("MEDIAN", math.sqrt(math.pi / 2)), ("MEANCLIP", 1.0)):
        g = bin_difference(d, bin_size=40, statistic=stat)
        assert np.std(g.values) == pytest.approx(np.mean(g.error), rel=0.12)
        assert np.mean(g.error) == pytest.approx(eff * 2.0 / 40.0, rel=0.03)


def test_unmasked_sources_bias_small_for_robust_statistics():
    rng = np.random.default_rng(6)
    ny = nx = 512
    d = 2.0 + rng.normal(0.0, 1.0, (ny, nx))
    yy, xx = np.mgrid[:ny, :nx]
    for x0, y0 in rng.uniform(0, 512, (150, 2)):
        d += 30.0 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 2.0**2))
    bias = {
        s: np.nanmean(bin_difference(d, bin_size=64, statistic=s).values) - 2.0
        for s in ("MEAN", "MEDIAN", "MEANCLIP")
    }
    assert bias["MEAN"] > 0.3
    assert abs(bias["MEDIAN"]) < 0.25 * bias["MEAN"]
    assert abs(bias["MEANCLIP"]) < 0.25 * bias["MEAN"]


def test_input_not_modified():
    rng = np.random.default_rng(7)
    d = rng.normal(0, 1, (200, 210)).astype(np.float32)
    d[3, 3] = np.nan
    mask = rng.random(d.shape) < 0.1
    d0, m0 = d.copy(), mask.copy()
    for stat in ("MEAN", "MEDIAN", "MEANCLIP"):
        bin_difference(d, mask=mask, bin_size=64, statistic=stat.lower())
    np.testing.assert_array_equal(d, d0)
    np.testing.assert_array_equal(mask, m0)


# -- reference choice -----------------------------------------------------------------------
def test_reference_scores_picks_expected_candidates():
    # lowest variance wins when levels and coverage are equal
    s = reference_scores([4.0, 1.0, 2.0], [10.0, 10.0, 10.0], [100, 100, 100])
    assert np.argmin(s) == 1
    np.testing.assert_allclose(s, [0.4 + 0.2 + 0.4, 0.1 + 0.2 + 0.4, 0.2 + 0.2 + 0.4])
    # lowest |level| wins; a negative level is not a reward
    s = reference_scores([1.0, 1.0, 1.0], [5.0, -8.0, 1.0], [100, 100, 100])
    assert np.argmin(s) == 2 and s[1] > s[0]
    # best coverage wins
    s = reference_scores([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [50, 200, 100])
    assert np.argmin(s) == 1
    # trade-off: half the variance does not make up for a third of the coverage
    s = reference_scores([1.0, 0.5], [1.0, 1.0], [300, 100])
    assert np.argmin(s) == 0
    s = reference_scores([1.0, 0.5], [1.0, 1.0], [300, 100], weight_coverage=0.0)
    assert np.argmin(s) == 1


def test_reference_scores_skip_unreadable():
    s = reference_scores([None, 1.0, np.nan, 3.0], [1.0, 2.0, 1.0, None], [10, 10, 10, 10])
    assert np.isinf(s[0]) and np.isinf(s[2]) and np.isinf(s[3]) and np.isfinite(s[1])
    assert np.argmin(s) == 1
    s = reference_scores([0.1, 1.0], [1.0, 1.0], [0, 10])  # no coverage at all
    assert np.isinf(s[0]) and np.argmin(s) == 1
    # zero maxima contribute nothing (no division by zero)
    assert np.all(np.isfinite(reference_scores([0.0, 0.0], [0.0, 0.0], [1, 1])))
    with pytest.raises(ValueError, match="readable"):
        reference_scores([None], [None], [None])
    with pytest.raises(ValueError, match="one entry"):
        reference_scores([1.0], [1.0, 2.0], [1])
    with pytest.raises(ValueError, match="weights"):
        reference_scores([1.0], [1.0], [1], weight_level=-1)


# -- diagnostics ------------------------------------------------------------------------------
def test_match_diagnostics_exact_values():
    ref = np.array([[1.0, 2.0], [3.0, np.nan]])
    matched = np.array([[1.0, 0.0], [6.0, 1.0]])
    var = np.array([[1.0, 2.0], [3.0, 4.0]])
    mse, v = match_diagnostics(ref, matched, variance=var)
    assert mse == pytest.approx((0 + 4 + 9) / 3) and v == pytest.approx(2.0)
    mse, v = match_diagnostics(
        ref, matched, mask=np.array([[0, 0, 1, 0]], bool).reshape(2, 2), variance=var
    )
    assert mse == pytest.approx(2.0) and v == pytest.approx(1.5)
    with pytest.raises(ValueError, match="no good pixel"):
        match_diagnostics(ref, matched, mask=np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="shape"):
        match_diagnostics(ref, matched[:1])


def test_match_diagnostics_robust_variance_is_unbiased():
    rng = np.random.default_rng(8)
    sigma = 1.7
    d = rng.normal(0.0, sigma, (1000, 1000))
    ref = 5.0 + d
    matched = np.full(d.shape, 5.0)
    mse, v = match_diagnostics(ref, matched)
    assert v == pytest.approx(sigma**2, rel=0.005)  # truncation-corrected clipped variance
    assert mse == pytest.approx(np.mean(d**2))
    # unmasked outliers barely move the robust variance but inflate the mse
    ref[rng.random(d.shape) < 0.005] += 100.0
    mse2, v2 = match_diagnostics(ref, matched)
    assert v2 == pytest.approx(sigma**2, rel=0.01) and mse2 > 10 * v2
    # noise-free: zero
    assert match_diagnostics(matched, matched) == (0.0, 0.0)

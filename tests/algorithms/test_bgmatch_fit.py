"""Tests of the background-difference surfaces (polynomial and separable splines)."""

import dataclasses
import math
import warnings

import numpy as np
import pytest

from stmatch.algorithms.bgmatch_fit import (
    BackgroundFit,
    UndersampledError,
    fit_background,
    match_background,
)
from stmatch.algorithms.bgmatch_grid import bin_difference, match_diagnostics
from stmatch.algorithms.chebyshev import evaluate_chebyshev

SPLINES = ("LINEAR", "NATURAL_SPLINE", "AKIMA_SPLINE")


def _surface(kind, shape):
    ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx].astype(np.float64)
    if kind == "constant":
        return np.full(shape, 4.25)
    if kind == "plane":
        return 1.5 + 0.004 * xx - 0.003 * yy
    if kind == "order2":  # a quadratic in x and y
        u, v = xx / nx - 0.5, yy / ny - 0.5
        return 2.0 + 1.2 * u - 0.8 * v + 3.0 * u * u - 2.0 * u * v + 1.5 * v * v
    if kind == "smooth":
        return 1.0 + 0.002 * xx + 1.5 * np.sin(xx / 170.0) * np.cos(yy / 140.0)
    raise AssertionError(kind)


def _noisy(kind, shape=(480, 640), sigma=1.0, seed=0):
    truth = _surface(kind, shape)
    rng = np.random.default_rng(seed)
    return truth, truth + rng.normal(0.0, sigma, shape)


def _rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


# -- recovery of known surfaces ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["plane", "order2"])
@pytest.mark.parametrize("weighting", [True, False])
def test_polynomial_recovers_known_surface_to_noise_level(kind, weighting):
    truth, d = _noisy(kind)
    grid = bin_difference(d, bin_size=40, statistic="MEAN")  # 12 x 16 bins
    fit = fit_background(grid, order=2, approx_weighting=weighting)
    assert fit.kind == "polynomial" and fit.order == 2 and fit.weighted is weighting
    model = fit.evaluate_image(d.shape)
    unc = fit.uncertainty_image(d.shape)
    # expected error of a 6-term fit to m bins of error e: ~ e sqrt(6/m)
    e = np.mean(grid.error)
    expected = e * math.sqrt(6 / grid.n_valid)
    assert _rms(unc) == pytest.approx(expected, rel=0.35)
    assert _rms(model - truth) < 2.5 * _rms(unc)
    # the residuals of the bins are the bin noise
    assert fit.fit_rms == pytest.approx(e, rel=0.2)


def test_polynomial_uncertainty_matches_scatter_over_realisations():
    shape = (200, 240)
    truth = _surface("order2", shape)
    pts = (np.array([5.0, 120.0, 230.0]), np.array([190.0, 100.0, 3.0]))
    for weighting in (True, False):
        vals, uncs = [], []
        for seed in range(60):
            d = truth + np.random.default_rng(100 + seed).normal(0.0, 1.0, shape)
            fit = fit_background(
                bin_difference(d, bin_size=20, statistic="MEAN"),
                order=2,
                approx_weighting=weighting,
            )
            vals.append(fit.evaluate(*pts))
            uncs.append(fit.uncertainty(*pts))
        scatter = np.std(vals, axis=0, ddof=1)
        np.testing.assert_allclose(np.mean(uncs, axis=0), scatter, rtol=0.25)
        np.testing.assert_allclose(
            np.mean(vals, axis=0),
            _surface("order2", shape)[pts[1].astype(int), pts[0].astype(int)],
            atol=4 * scatter.max() / math.sqrt(60) + 1e-9,
        )


@pytest.mark.parametrize("style", SPLINES)
@pytest.mark.parametrize("kind", ["plane", "smooth"])
def test_splines_recover_smooth_surfaces(style, kind):
    truth, d = _noisy(kind, seed=1)
    grid = bin_difference(d, bin_size=40, statistic="MEANCLIP")
    fit = fit_background(grid, use_polynomial=False, interp_style=style)
    assert fit.kind == "spline" and fit.interp_style == style and fit.actions == ()
    # an interpolant passes through the bin values
    np.testing.assert_allclose(fit.model_at_bins, grid.values, atol=1e-9)
    assert fit.fit_rms < 1e-9
    model = fit.evaluate_image(d.shape)
    e = np.mean(grid.error)
    # the model error is the bin noise carried between the bins (<= e), plus a small
    # interpolation error on the curved surface
    assert _rms(model - truth) < 1.1 * e
    assert _rms(fit.uncertainty_image(d.shape)) == pytest.approx(0.8 * e, rel=0.25)


def test_constant_style_on_constant_offset():
    truth, d = _noisy("constant", seed=2)
    grid = bin_difference(d, bin_size=40, statistic="MEDIAN")
    fit = fit_background(grid, use_polynomial=False, interp_style="CONSTANT")
    model = fit.evaluate_image(d.shape)
    assert _rms(model - truth) == pytest.approx(np.mean(grid.error), rel=0.2)
    # nearest bin: the model is the bin value over each bin (centres inside the bins)
    np.testing.assert_array_equal(model[:40, :40], grid.values[0, 0])
    np.testing.assert_array_equal(model[-40:, -40:], grid.values[-1, -1])


def test_constant_offset_matched_mse_close_to_diffim_var():
    rng = np.random.default_rng(3)
    shape, sr, ss = (512, 512), 1.0, 1.5
    sky = 20.0 + rng.normal(0.0, 0.1, shape)  # common structure
    ref = sky + rng.normal(0.0, sr, shape)
    sci = sky - 3.7 + rng.normal(0.0, ss, shape)
    for kw in ({"order": 0}, {"use_polynomial": False, "interp_style": "AKIMA_SPLINE"}):
        fit = match_background(ref - sci, bin_size=128, **kw)
        matched = sci + fit.evaluate_image(shape)
        mse, var = match_diagnostics(ref, matched, variance=np.full(shape, sr**2 + ss**2))
        assert mse <= 1.01 * var
        mse2, var2 = match_diagnostics(ref, matched)  # robust variance of the difference
        assert mse2 <= 1.01 * var2
        # without matching the offset dominates
        assert match_diagnostics(ref, sci, variance=np.full(shape, 3.25))[0] > 4 * var


@pytest.mark.parametrize("statistic", ["MEAN", "MEDIAN", "MEANCLIP"])
def test_zero_noise_turns_weighting_off_and_recovers_exactly(statistic):
    d = np.full((300, 400), 7.25)
    grid = bin_difference(d, bin_size=50, statistic=statistic)
    assert np.all(grid.stdev == 0.0)
    fit = fit_background(grid, order=3, approx_weighting=True)
    assert fit.weighted is False
    assert any("weighting turned off" in a for a in fit.actions)
    np.testing.assert_allclose(fit.evaluate_image(d.shape), 7.25, rtol=0, atol=1e-12)
    assert np.all(np.isfinite(fit.covariance)) and fit.uncertainty(10.0, 10.0) < 1e-12
    for style in SPLINES + ("CONSTANT",):
        sp = fit_background(grid, use_polynomial=False, interp_style=style)
        np.testing.assert_allclose(sp.evaluate_image(d.shape), 7.25, atol=1e-12)


def test_zero_error_bins_do_not_give_infinite_weights():
    _, d = _noisy("plane", seed=4)
    grid = bin_difference(d, bin_size=40, statistic="MEAN")
    err = grid.error.copy()
    err[0, 0] = 0.0
    sd = grid.stdev.copy()
    sd[0, 0] = 0.0
    bad = dataclasses.replace(grid, error=err, stdev=sd)
    fit = fit_background(bad, order=1)
    assert fit.weighted and np.all(np.isfinite(fit.coefficients))
    assert any("raised to" in a for a in fit.actions)
    ref = fit_background(grid, order=1)
    # the zero-error bin gets a large but finite weight: the surface passes near it
    assert (
        abs(fit.model_at_bins[0, 0] - grid.values[0, 0])
        < 0.1 * abs(ref.model_at_bins[0, 0] - grid.values[0, 0]) + 1e-6
    )


# -- undersampling ---------------------------------------------------------------------------
def test_undersampled_polynomial_styles():
    truth, d = _noisy("plane", shape=(600, 600), seed=5)
    grid = bin_difference(d, bin_size=256)
    assert grid.nbins == (2, 2)
    with pytest.raises(UndersampledError, match="order 8 needs at least 9") as exc:
        fit_background(grid, order=8, undersample_style="THROW_EXCEPTION")
    assert exc.value.need == (9, 9) and exc.value.have == (2, 2)
    red = fit_background(grid, order=8, undersample_style="REDUCE_INTERP_ORDER")
    assert red.order == 1 and "reduced from 8 to 1" in red.actions[0]
    # re-binning needs the image: fit_background alone cannot do it
    with pytest.raises(UndersampledError):
        fit_background(grid, order=8, undersample_style="INCREASE_NXNYSAMPLE")
    inc = match_background(d, bin_size=256, order=8, undersample_style="INCREASE_NXNYSAMPLE")
    # a bin COUNT of 9 per axis (not 9-pixel bins)
    assert inc.order == 8 and inc.grid.nbins == (9, 9) and inc.grid.bin_size == 66
    assert "re-binned from 2 x 2 to 9 x 9" in inc.actions[0]
    assert _rms(inc.evaluate_image(d.shape) - truth) < 0.1


def test_undersampled_spline_styles():
    truth, d = _noisy("plane", shape=(600, 600), seed=6)
    grid = bin_difference(d, bin_size=256)
    with pytest.raises(UndersampledError, match="AKIMA_SPLINE needs at least 5"):
        fit_background(grid, use_polynomial=False, undersample_style="THROW_EXCEPTION")
    red = fit_background(grid, use_polynomial=False, interp_style="AKIMA_SPLINE")
    assert red.interp_style == "LINEAR" and red.column_style == "LINEAR"
    assert red.row_styles == ("LINEAR", "LINEAR") and len(red.actions) == 2
    # three bins per axis: Akima -> natural cubic
    g3 = bin_difference(d, bin_size=200)
    assert fit_background(g3, use_polynomial=False).interp_style == "NATURAL_SPLINE"
    # one bin: constant
    g1 = bin_difference(d, bin_size=600)
    one = fit_background(g1, use_polynomial=False, interp_style="LINEAR")
    assert one.interp_style == "CONSTANT"
    np.testing.assert_allclose(one.evaluate_image((3, 3)), g1.values[0, 0])
    inc = match_background(
        d, bin_size=256, use_polynomial=False, undersample_style="INCREASE_NXNYSAMPLE"
    )
    assert inc.grid.nbins == (5, 5) and inc.interp_style == "AKIMA_SPLINE"
    assert "re-binned from 2 x 2 to 5 x 5" in inc.actions[0]
    with pytest.raises(ValueError, match="cannot re-bin"):
        match_background(
            d[:8, :8], bin_size=8, use_polynomial=False, undersample_style="INCREASE_NXNYSAMPLE"
        )


def test_rank_deficient_valid_bins():
    # valid bins only on one row and one column (a cross): order 2 is rank deficient
    _, d = _noisy("plane", shape=(400, 400), seed=7)
    mask = np.ones(d.shape, bool)
    mask[150:200, :] = False
    mask[:, 150:200] = False
    grid = bin_difference(d, mask=mask, bin_size=50)
    assert grid.n_valid == 15
    with pytest.raises(ValueError, match="rank deficient"):
        fit_background(grid, order=3, undersample_style="THROW_EXCEPTION")
    red = fit_background(grid, order=3)
    assert red.order == 1 and "rank-deficient" in red.actions[-1]


# -- gaps, coverage, masks ---------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{"order": 2}, {"use_polynomial": False}])
def test_chip_gap_wider_than_a_bin(kw):
    truth, d = _noisy("order2" if "order" in kw else "smooth", seed=8)
    d[:, 250:370] = np.nan  # 120 px gap, bins of 40 px
    grid = bin_difference(d, bin_size=40)
    assert np.all(np.isnan(grid.values[:, 7:9])) and grid.n_valid == 12 * 14
    fit = fit_background(grid, **kw)
    model = fit.evaluate_image(d.shape)
    ok = np.isfinite(d)
    assert _rms((model - truth)[ok]) < 1.5 * np.nanmean(grid.error)
    assert fit.actions == ()


@pytest.mark.parametrize("style", SPLINES)
def test_half_coverage_and_linear_extrapolation(style):
    truth, d = _noisy("plane", seed=9)
    d[:, 320:] = np.nan
    fit = match_background(d, bin_size=40, use_polynomial=False, interp_style=style)
    model = fit.evaluate_image(d.shape)
    assert _rms((model - truth)[:, :320]) < 1.3 * np.nanmean(fit.grid.error)
    # past the last valid bin centre (x = 299.5) each bin row continues linearly
    # (Akima's y stage is not linear in the data: test on a bin-row centre)
    y = np.full(3, fit.grid.y[5])
    far = fit.evaluate(np.array([400.0, 500.0, 600.0]), y)
    np.testing.assert_allclose(np.diff(far, 2), 0.0, atol=1e-9)
    poly = match_background(d, bin_size=40, order=1)
    assert _rms((poly.evaluate_image(d.shape) - truth)[:, :320]) < 0.05


def test_nan_bins_and_per_row_reduction():
    truth, d = _noisy("smooth", seed=10)
    rng = np.random.default_rng(11)
    grid = bin_difference(d, bin_size=40)
    vals = grid.values.copy()
    vals[rng.random(vals.shape) < 0.15] = np.nan
    vals[3, 2:] = np.nan  # row 3 keeps two bins
    vals[5, :] = np.nan  # row 5 keeps none
    g = dataclasses.replace(grid, values=vals)
    fit = fit_background(g, use_polynomial=False, interp_style="AKIMA_SPLINE")
    assert fit.row_styles[3] == "LINEAR" and fit.row_styles[5] == ""
    assert "to LINEAR in bin row(s) 3" in " ".join(fit.actions)
    ok = np.isfinite(vals)
    np.testing.assert_allclose(fit.model_at_bins[ok], vals[ok], atol=1e-9)
    img = fit.evaluate_image(d.shape)
    assert _rms(img - truth) < 2 * np.mean(grid.error)
    # point evaluation follows the same per-column choice of rows
    yi, xi = rng.integers(0, 480, 400), rng.integers(0, 640, 400)
    np.testing.assert_allclose(fit.evaluate(xi, yi), img[yi, xi], atol=1e-10)
    unc = fit.uncertainty_image(d.shape)
    np.testing.assert_allclose(fit.uncertainty(xi, yi), unc[yi, xi], atol=1e-12)
    assert np.all(np.isfinite(unc)) and np.all(unc > 0)
    with pytest.raises(UndersampledError, match=r"3 \(2\)"):
        fit_background(g, use_polynomial=False, undersample_style="THROW_EXCEPTION")


def test_masked_saturated_pixels_do_not_bias():
    truth, d = _noisy("plane", seed=12)
    sat = np.zeros(d.shape, bool)
    rng = np.random.default_rng(13)
    for y0, x0 in rng.integers(10, 460, (40, 2)):
        sat[y0 : y0 + 8, x0 : x0 + 8] = True
    d_sat = np.where(sat, 6.0e4, d)
    for stat in ("MEAN", "MEDIAN", "MEANCLIP"):
        masked = match_background(d_sat, mask=sat, bin_size=40, statistic=stat, order=1)
        clean = match_background(d, mask=sat, bin_size=40, statistic=stat, order=1)
        np.testing.assert_allclose(masked.coefficients, clean.coefficients)
        assert _rms(masked.evaluate_image(d.shape) - truth) < 0.05
        unmasked = bin_difference(d_sat, bin_size=40, statistic=stat)
        if stat == "MEAN":
            assert np.max(unmasked.values - masked.grid.values) > 100.0


def test_unmasked_sources_bias_of_the_surface():
    truth, d = _noisy("plane", shape=(512, 512), seed=14)
    yy, xx = np.mgrid[:512, :512]
    rng = np.random.default_rng(15)
    for x0, y0 in rng.uniform(0, 512, (120, 2)):
        d = d + 40.0 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 2.5**2))
    bias = {}
    for stat in ("MEAN", "MEDIAN", "MEANCLIP"):
        fit = match_background(d, bin_size=64, statistic=stat, order=1, approx_weighting=False)
        bias[stat] = float(np.mean(fit.evaluate_image(d.shape) - truth))
    assert bias["MEAN"] > 0.5
    assert abs(bias["MEDIAN"]) < 0.2 * bias["MEAN"]
    assert abs(bias["MEANCLIP"]) < 0.2 * bias["MEAN"]


# -- evaluation identities -------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw",
    [{"order": 3}]
    + [{"use_polynomial": False, "interp_style": s} for s in SPLINES + ("CONSTANT",)],
)
def test_evaluate_consistency(kw):
    _, d = _noisy("smooth", shape=(230, 310), seed=16)
    fit = match_background(d, bin_size=30, **kw)
    img = fit.evaluate_image(d.shape)
    rng = np.random.default_rng(17)
    yi, xi = rng.integers(0, 230, 500), rng.integers(0, 310, 500)
    np.testing.assert_allclose(fit.evaluate(xi, yi), img[yi, xi], atol=1e-10)
    np.testing.assert_allclose(
        fit.uncertainty(xi, yi), fit.uncertainty_image(d.shape)[yi, xi], atol=1e-12
    )
    np.testing.assert_allclose(fit.evaluate_image(d.shape, dtype=np.float32), img, atol=1e-5)
    assert fit.evaluate(np.zeros((2, 3)), 5.0).shape == (2, 3)
    if fit.kind == "polynomial":
        yy, xx = np.mgrid[:230:7, :310:11]
        ref = evaluate_chebyshev(fit.coefficients, xx, yy, fit.order, fit.domain)
        np.testing.assert_allclose(img[::7, ::11], ref, atol=1e-12)
        assert fit.domain == (-0.5, 309.5, -0.5, 229.5)
    # model_at_bins is the model at the bin centres
    gx, gy = np.meshgrid(fit.grid.x, fit.grid.y)
    np.testing.assert_allclose(fit.evaluate(gx, gy), fit.model_at_bins, atol=1e-10)


def test_none_style_and_bad_arguments():
    _, d = _noisy("plane", shape=(100, 100))
    grid = bin_difference(d, bin_size=25)
    none = fit_background(grid, use_polynomial=False, interp_style="NONE")
    assert isinstance(none, BackgroundFit) and none.kind == "none"
    assert np.all(none.evaluate_image((4, 5)) == 0) and none.uncertainty(1, 2) == 0
    with pytest.raises(ValueError, match="interp_style"):
        fit_background(grid, use_polynomial=False, interp_style="CUBIC")
    with pytest.raises(ValueError, match="undersample_style"):
        fit_background(grid, undersample_style="IGNORE")
    with pytest.raises(ValueError, match="order"):
        fit_background(grid, order=-1)
    with pytest.raises(ValueError, match="BinnedGrid"):
        fit_background(np.zeros((4, 4)))
    empty = dataclasses.replace(grid, values=np.full(grid.values.shape, np.nan))
    with pytest.raises(ValueError, match="no bin"):
        fit_background(empty)


# -- differential test against photutils --------------------------------------------------------
def test_against_photutils_background2d():
    """photutils ``Background2D`` with ``box_size = bin_size`` on an image whose size
    is a multiple of it, ``filter_size=(1, 1)`` (no median filter of the mesh), no
    sigma clipping and ``MeanBackground``/``MedianBackground`` computes the same bins
    as our ``MEAN``/``MEDIAN`` (its mesh equals our bin values to rounding). Its zoom
    interpolator (``grid_mode=True``) puts the mesh values at the same bin centres
    :math:`(k + 1/2) b - 1/2`, so with ``order=1`` it is our ``LINEAR`` style, exactly,
    between the outer bin centres (outside, it reflects where we extend linearly).
    With ``order=3`` it is an interpolating cubic spline through the same values: it
    must agree with our natural and Akima splines within the bins' noise level.
    """
    from photutils.background import Background2D, MeanBackground, MedianBackground

    truth, d = _noisy("smooth", shape=(400, 600), seed=18)
    b = 50
    inner = (slice(b // 2, 400 - b // 2), slice(b // 2, 600 - b // 2))
    for stat, est in (("MEAN", MeanBackground), ("MEDIAN", MedianBackground)):
        grid = bin_difference(d, bin_size=b, statistic=stat)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pu = Background2D(
                d, b, filter_size=(1, 1), sigma_clip=None, bkg_estimator=est(sigma_clip=None)
            )
        np.testing.assert_allclose(grid.values, pu.background_mesh, rtol=0, atol=1e-12)
        e = float(np.mean(grid.error))
        for style in ("NATURAL_SPLINE", "AKIMA_SPLINE"):
            ours = fit_background(grid, use_polynomial=False, interp_style=style)
            diff = ours.evaluate_image(d.shape)[inner] - pu.background[inner]
            assert _rms(diff) < 0.75 * e and np.abs(diff).max() < 5 * e
            assert _rms(ours.evaluate_image(d.shape)[inner] - truth[inner]) < 1.2 * _rms(
                pu.background[inner] - truth[inner]
            )
    try:
        from photutils.background import BkgZoomInterpolator
    except ImportError:  # pragma: no cover - removed in a later photutils
        return
    grid = bin_difference(d, bin_size=b, statistic="MEAN")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pu = Background2D(
            d,
            b,
            filter_size=(1, 1),
            sigma_clip=None,
            bkg_estimator=MeanBackground(sigma_clip=None),
            interpolator=BkgZoomInterpolator(order=1),
        )
    lin = fit_background(grid, use_polynomial=False, interp_style="LINEAR")
    np.testing.assert_allclose(lin.evaluate_image(d.shape)[inner], pu.background[inner], atol=1e-10)


def test_partly_covered_bins_measure_at_their_centroid():
    """A steep plane seen through a diagonal overlap edge: bins cut by the edge
    measure the plane at their good pixels' centroid. Fitting them at their
    centres would bias the polynomial by gradient x centroid offset."""
    ny = nx = 384
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    plane = 0.02 * x - 0.015 * y + 3.0
    rng = np.random.default_rng(17)
    diff = plane + rng.normal(0.0, 1.0, (ny, nx))
    mask = x + 0.7 * y > 420.0  # diagonal edge of the overlap, cuts many bins
    grid = bin_difference(diff, mask=mask, bin_size=64, statistic="MEAN")
    px, py = grid.positions()
    cut = [
        (iy, ix)
        for iy in range(grid.nbins[0])
        for ix in range(grid.nbins[1])
        if 0.2
        < (
            ~mask[grid.y_edges[iy] : grid.y_edges[iy + 1], grid.x_edges[ix] : grid.x_edges[ix + 1]]
        ).mean()
        < 0.8
    ]
    assert len(cut) >= 3
    iy, ix = cut[0]
    inside = ~mask[grid.y_edges[iy] : grid.y_edges[iy + 1], grid.x_edges[ix] : grid.x_edges[ix + 1]]
    yy, xx = np.nonzero(inside)
    assert px[iy, ix] == pytest.approx(grid.x_edges[ix] + xx.mean())
    assert py[iy, ix] == pytest.approx(grid.y_edges[iy] + yy.mean())
    fit = fit_background(grid, use_polynomial=True, order=1)
    model = fit.evaluate_image((ny, nx))
    err = np.sqrt(np.mean((model - plane)[~mask] ** 2))
    assert err < 0.015  # bins placed at their centres give 0.024 here, centroids 0.0065

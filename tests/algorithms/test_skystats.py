import math

import numpy as np
import pytest

from stmatch.algorithms import SkyStatistic
from stmatch.algorithms.skystats import MODE_ERROR


@pytest.mark.parametrize("stat", ["mean", "median", "midpt", "mode"])
def test_recovers_level_of_gaussian_noise(stat):
    rng = np.random.default_rng(1)
    values = (7.0 + rng.normal(0.0, 2.0, 200_000)).astype(np.float32)
    res = SkyStatistic(stat)(values)
    assert res.valid
    # within 4 stated errors of the truth, and the error itself is sensible
    assert abs(res.value - 7.0) < 4 * res.error
    assert 0 < res.error < (0.2 if stat == "mode" else 0.02)
    assert res.std == pytest.approx(2.0, rel=0.02)


def test_clipping_removes_outliers_and_limits_apply():
    rng = np.random.default_rng(2)
    values = rng.normal(0.0, 1.0, 50_000)
    values[:500] = 1e4  # cosmic rays
    assert abs(SkyStatistic("mean", nclip=5)(values).value) < 0.05
    assert SkyStatistic("mean", nclip=0)(values).value > 50
    # upper limit alone removes them too
    assert abs(SkyStatistic("mean", nclip=0, upper=100.0)(values).value) < 0.05
    res = SkyStatistic("mean", nclip=0, lower=10.0)(values)
    assert res.npix == 500 and res.value == pytest.approx(1e4)


def test_nonfinite_ignored_and_empty_input_invalid():
    stat = SkyStatistic("median", nclip=0)
    res = stat(np.array([1.0, np.nan, 3.0, np.inf, 2.0]))
    assert res.value == 2.0 and res.npix == 3
    assert not stat(np.array([np.nan, np.nan])).valid
    assert not stat(np.array([])).valid
    assert not SkyStatistic("mean", lower=5.0)(np.array([1.0, 2.0])).valid


def test_mode_finds_peak_of_skewed_distribution():
    # Sky plus a one-sided tail of faint sources: the mode stays at the sky,
    # the mean does not.
    rng = np.random.default_rng(3)
    sky = rng.normal(10.0, 1.0, 200_000)
    tail = 10.0 + rng.exponential(3.0, 60_000)
    values = np.concatenate([sky, tail])
    mode = SkyStatistic("mode", nclip=0)(values).value
    mean = SkyStatistic("mean", nclip=0)(values).value
    assert abs(mode - 10.0) < 0.3
    assert mean > 10.5


def test_midpt_is_an_interpolated_median():
    rng = np.random.default_rng(4)
    values = rng.uniform(0, 1, 100_001)
    midpt = SkyStatistic("midpt", nclip=0, binwidth=0.01)(values).value
    assert midpt == pytest.approx(np.median(values), abs=2e-3)


def test_constant_values():
    values = np.full(1000, 3.5, dtype=np.float32)
    for stat in ("mean", "median", "midpt", "mode"):
        res = SkyStatistic(stat)(values)
        assert res.value == pytest.approx(3.5)
        assert res.error == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"skystat": "average"},
        {"nclip": -1},
        {"lsigma": 0},
        {"binwidth": 0},
        {"lower": 2.0, "upper": 1.0},
    ],
)
def test_bad_parameters_rejected(kwargs):
    with pytest.raises(ValueError):
        SkyStatistic(**kwargs)


@pytest.mark.parametrize(
    "stat,n", [("mean", 2000), ("median", 2000), ("midpt", 2000), ("mode", 10000)]
)
def test_error_calibration(stat, n):
    """Stated errors match the scatter of the statistic over noise realisations."""
    rng = np.random.default_rng(5)
    S = SkyStatistic(stat)
    draws = [S(rng.normal(0.0, 1.0, n).astype(np.float32)) for _ in range(300)]
    scatter = np.std([d.value for d in draws])
    stated = np.mean([d.error for d in draws])
    assert 0.75 < stated / scatter < 1.35, (stated, scatter)


def test_mode_error_law_constants():
    coefficient, exponent = MODE_ERROR
    # 0.28 sigma at 1e3 values and ~0.04 sigma at 1e6 values (Monte Carlo).
    assert coefficient * 1000**exponent == pytest.approx(0.31, abs=0.05)
    assert coefficient * 1e6**exponent == pytest.approx(0.048, abs=0.01)
    assert math.isnan(SkyStatistic().standard_error(1.0, 0))

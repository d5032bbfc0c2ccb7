"""Tiled ZOGY, detections and background/noise estimates."""

import pickle

import numpy as np
import pytest

from stmatch.algorithms.detect import find_detections
from stmatch.algorithms.noise import clipped_background, sigma_from_variance
from stmatch.algorithms.psf import gaussian_psf
from stmatch.algorithms.zogy import zogy
from stmatch.algorithms.zogy_tiled import TileTask, plan_tiles, tile_seeds, zogy_tiled


def _stars(shape, psf_fwhm, xs, ys, fluxes, size=25):
    img = np.zeros(shape)
    h = size // 2
    for x, y, f in zip(xs, ys, fluxes, strict=True):
        ix, iy = int(round(x)), int(round(y))
        stamp = gaussian_psf(size, psf_fwhm, center=(h + y - iy, h + x - ix))
        y0, x0 = iy - h, ix - h
        sy = slice(max(0, y0), min(shape[0], y0 + size))
        sx = slice(max(0, x0), min(shape[1], x0 + size))
        img[sy, sx] += f * stamp[sy.start - y0 : sy.stop - y0, sx.start - x0 : sx.stop - x0]
    return img


@pytest.mark.parametrize(
    "shape, tile, border", [((100, 130), 32, 10), ((64, 64), 64, 5), ((50, 70), None, 3)]
)
def test_plan_tiles_partition_the_image(shape, tile, border):
    tiles = plan_tiles(shape, tile, border)
    cover = np.zeros(shape, dtype=int)
    for t in tiles:
        y0, y1, x0, x1 = t.inner
        oy0, oy1, ox0, ox1 = t.outer
        cover[y0:y1, x0:x1] += 1
        assert oy0 == max(0, y0 - border) and ox1 == min(shape[1], x1 + border)
        if tile is not None:
            assert y1 - y0 <= tile and x1 - x0 <= tile
        assert t.centre == (0.5 * (y0 + y1 - 1), 0.5 * (x0 + x1 - 1))
    assert (cover == 1).all()


def test_plan_tiles_rejects_bad_sizes():
    with pytest.raises(ValueError, match="tile_size"):
        plan_tiles((10, 10), 0, 2)
    with pytest.raises(ValueError, match="border"):
        plan_tiles((10, 10), 5, -1)


def test_tiled_equals_untiled_for_a_constant_psf():
    rng = np.random.default_rng(0)
    shape = (300, 260)
    pn, pr = gaussian_psf(25, 3.0), gaussian_psf(25, 2.2)
    xs, ys = rng.uniform(0, 260, 40), rng.uniform(0, 300, 40)
    flux = rng.uniform(100, 3000, 40)
    new = _stars(shape, 3.0, xs, ys, flux) + _stars(shape, 3.0, [130.3], [150.7], [800.0])
    new += rng.standard_normal(shape)
    ref = _stars(shape, 2.2, xs, ys, flux) + 0.5 * rng.standard_normal(shape)
    whole = zogy_tiled(new, ref, pn, pr, sigma_new=1.0, sigma_ref=0.5)
    plain = zogy(new, ref, pn, pr, sigma_new=1.0, sigma_ref=0.5)
    np.testing.assert_array_equal(whole.d, plain.d)  # one tile is exactly zogy()
    tiled = zogy_tiled(new, ref, pn, pr, sigma_new=1.0, sigma_ref=0.5, tile_size=64)
    assert len(tiled.tiles) == 5 * 5
    assert np.allclose(tiled.f_d, plain.f_d) and np.allclose(tiled.f_s, plain.f_s)
    inner = (slice(25, -25), slice(25, -25))
    for name in ("d", "s", "s_corr", "alpha", "alpha_err"):
        a, b = getattr(tiled, name)[inner], getattr(whole, name)[inner]
        assert np.max(np.abs(a - b)) < 1e-4 * np.max(np.abs(b)), name


def test_tiles_follow_a_spatially_varying_psf():
    """PSF width grows across the field: per-tile PSFs remove stars, one PSF does not."""
    rng = np.random.default_rng(1)
    shape = (256, 256)

    def fwhm_new(x):
        return 2.5 + 1.5 * x / 255.0

    xs = np.tile(np.arange(20.0, 256, 32), 8) + 0.3
    ys = np.repeat(np.arange(20.0, 256, 32), 8) + 0.6
    flux = np.full(xs.size, 5000.0)
    new = np.zeros(shape)
    for x, y, f in zip(xs, ys, flux, strict=True):
        new += _stars(shape, fwhm_new(x), [x], [y], [f])
    new += rng.standard_normal(shape)
    ref = _stars(shape, 2.0, xs, ys, flux) + 0.5 * rng.standard_normal(shape)

    def psf_new_at(y, x):
        return gaussian_psf(25, fwhm_new(x))

    pr = gaussian_psf(25, 2.0)
    tiled = zogy_tiled(new, ref, psf_new_at, pr, sigma_new=1.0, sigma_ref=0.5, tile_size=32)
    single = zogy_tiled(new, ref, psf_new_at(127.5, 127.5), pr, sigma_new=1.0, sigma_ref=0.5)
    interior = (slice(16, -16), slice(16, -16))
    worst_tiled = np.nanmax(np.abs(tiled.s_corr[interior]))
    worst_single = np.nanmax(np.abs(single.s_corr[interior]))
    assert worst_single > 30
    assert worst_tiled < worst_single / 4
    assert tiled.psf_d.shape[0] == 64
    assert not np.allclose(tiled.psf_d[0], tiled.psf_d[-1])


def test_tiled_validates_inputs():
    a = np.zeros((40, 40))
    p = gaussian_psf(9, 2.0)
    with pytest.raises(ValueError, match="one shape"):
        zogy_tiled(a, np.zeros((40, 41)), p, p, sigma_new=1, sigma_ref=1)
    with pytest.raises(ValueError, match="unknown outputs"):
        zogy_tiled(a, a, p, p, sigma_new=1, sigma_ref=1, outputs=("d", "x"))
    with pytest.raises(ValueError, match="var_new"):
        zogy_tiled(a, a, p, p, sigma_new=1, sigma_ref=1, var_new=np.ones((3, 3)))
    with pytest.raises(ValueError, match="tile 1/"):
        zogy_tiled(a, a, p, p, sigma_new=-1, sigma_ref=1, tile_size=20)


def test_outputs_subset_saves_memory():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((64, 64)), rng.standard_normal((64, 64))
    p = gaussian_psf(9, 2.0)
    res = zogy_tiled(a, b, p, p, sigma_new=1, sigma_ref=1, outputs=("d", "s_corr"))
    assert res.s is None and res.alpha is None and res.var_s is None
    assert res.d.shape == (64, 64) and res.s_corr.dtype == np.float32


# ------------------------------------------------------------------ tiles as tasks
def _pickling_mapper(calls):
    """A mapper that sends every item through pickle (as to another process) and
    runs the tasks in reverse order."""

    def mapper(fn, items):
        calls.append(len(items))
        sent = [pickle.loads(pickle.dumps(item)) for item in items]
        assert all(isinstance(t, TileTask) for t in sent)
        return [fn(item) for item in sent[::-1]][::-1]

    return mapper


def _varying_pair(shape=(150, 170), seed=7):
    rng = np.random.default_rng(seed)
    new = rng.standard_normal(shape) + _stars(shape, 3.0, [40.2, 120.7], [60.4, 100.1], [900, 700])
    ref = 0.5 * rng.standard_normal(shape) + _stars(shape, 2.0, [40.2], [60.4], [900])
    new[10:13, 40:44] = np.nan  # bad pixels: their noise comes from the tile's generator
    var_new = np.full(shape, 1.0)
    var_ref = np.full(shape, 0.25)
    return new, ref, var_new, var_ref


def test_mapper_gives_the_bits_of_the_local_loop():
    new, ref, var_new, var_ref = _varying_pair()

    def psf_new_at(y, x):
        return gaussian_psf(15, 2.6 + x / 170.0)

    pr = gaussian_psf(15, 2.0)
    kw = dict(sigma_new=1.0, sigma_ref=0.5, var_new=var_new, var_ref=var_ref, tile_size=48)
    calls, seen = [], []
    local = zogy_tiled(new, ref, psf_new_at, pr, **kw, progress=lambda i, n, t: seen.append(i))
    mapped = zogy_tiled(new, ref, psf_new_at, pr, **kw, mapper=_pickling_mapper(calls))
    assert calls == [len(local.tiles)] == [16] and seen == list(range(16))
    for name in ("d", "s", "s_corr", "alpha", "alpha_err", "var_s", "bad"):
        np.testing.assert_array_equal(getattr(mapped, name), getattr(local, name), err_msg=name)
    for name in ("psf_d", "kernel_n", "kernel_r", "f_d", "f_s"):
        np.testing.assert_array_equal(getattr(mapped, name), getattr(local, name), err_msg=name)
    assert np.isnan(local.d[11, 41]) and local.bad[11, 41]
    # one tile never goes to the mapper
    calls.clear()
    for tile_size in (None, 500):
        one = zogy_tiled(
            new,
            ref,
            pr,
            pr,
            sigma_new=1.0,
            sigma_ref=0.5,
            tile_size=tile_size,
            mapper=_pickling_mapper(calls),
        )
        assert calls == [] and len(one.tiles) == 1


def test_tile_noise_comes_from_per_tile_seeds():
    a, b = tile_seeds(11, 4), tile_seeds(11, 4)
    draws = [np.random.default_rng(s).standard_normal(3) for s in a]
    assert all(
        np.array_equal(np.random.default_rng(s).standard_normal(3), d)
        for s, d in zip(b, draws, strict=True)
    )
    assert not np.allclose(draws[0], draws[1])
    seq = tile_seeds(np.random.SeedSequence(11), 4)
    assert [s.spawn_key for s in seq] == [s.spawn_key for s in a]
    gen = np.random.default_rng(3)
    first = tile_seeds(gen, 2)[0].entropy
    assert tile_seeds(gen, 2)[0].entropy != first  # a Generator advances
    with pytest.raises(ValueError, match="rng"):
        tile_seeds("seed", 2)
    # the seed changes the padding noise: results move near the edges only
    new, ref, _, _ = _varying_pair((120, 130))
    new = np.nan_to_num(new)
    pn, pr = gaussian_psf(13, 2.5), gaussian_psf(13, 2.0)
    kw = dict(sigma_new=1.0, sigma_ref=0.5, tile_size=40)
    r1 = zogy_tiled(new, ref, pn, pr, rng=1, **kw)
    r2 = zogy_tiled(new, ref, pn, pr, rng=2, **kw)
    r1b = zogy_tiled(new, ref, pn, pr, rng=np.random.SeedSequence(1), **kw)
    np.testing.assert_array_equal(r1.d, r1b.d)
    diff = np.abs(r1.d - r2.d)
    assert diff.max() > 1e-2
    assert diff[13:-13, 13:-13].max() < 1e-3 * np.abs(r1.d).max()


# ------------------------------------------------------------------ detections
def test_detections_recover_positive_and_negative_sources():
    rng = np.random.default_rng(3)
    shape = (200, 200)
    pos = [(40.2, 50.7, 12.0), (120.6, 80.1, -9.0), (160.0, 160.4, 6.5)]
    s = rng.standard_normal(shape) * 0.3
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for y, x, a in pos:
        s += a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
    alpha = 10 * s
    det = find_detections(s, threshold=5, alpha=alpha, alpha_err=np.full(shape, 10.0))
    assert len(det) == 3
    assert list(det["sign"]) == [1, -1, 1]  # sorted by |S_corr|
    for (y, x, a), row in zip(pos, det, strict=True):
        assert np.sign(a) == row["sign"]
        assert abs(row["y"] - y) < 0.25 and abs(row["x"] - x) < 0.25
        # alpha read at the sub-pixel vertex: slightly above the peak pixel's value
        assert 1.0 <= row["alpha"] / (10 * row["s_corr"]) < 1.1
        assert row["alpha_err"] == 10.0
        assert row["npix"] > 1
    # A mask removes a detection; a higher threshold keeps the strongest.
    mask = np.zeros(shape, dtype=bool)
    mask[115:126, 75:86] = True
    assert len(find_detections(s, threshold=5, mask=mask)) == 2
    assert len(find_detections(s, threshold=10)) == 1
    assert len(find_detections(s, threshold=5, max_detections=2)) == 2


def test_detections_on_pure_noise_follow_the_gaussian_tail():
    rng = np.random.default_rng(4)
    s = rng.standard_normal((400, 400))
    assert len(find_detections(s, threshold=5.0)) == 0  # expect ~5e-5 false peaks
    n3 = len(find_detections(s, threshold=3.0, min_separation=1))
    # P(|z| > 3) = 0.0027 per pixel; isolated local maxima are most of them.
    assert 100 < n3 < 0.0027 * s.size * 1.2


def test_detections_ignore_nan_and_validate():
    s = np.full((20, 20), np.nan)
    assert len(find_detections(s)) == 0
    with pytest.raises(ValueError, match="2-D"):
        find_detections(np.zeros(5))
    with pytest.raises(ValueError, match="threshold"):
        find_detections(np.zeros((5, 5)), threshold=0)
    with pytest.raises(ValueError, match="min_separation"):
        find_detections(np.zeros((5, 5)), min_separation=0)


# ---------------------------------------------------------------- background
def test_clipped_background_ignores_sources():
    rng = np.random.default_rng(5)
    img = 3.0 + 2.0 * rng.standard_normal((300, 300))
    img[::10, ::10] += 500.0  # 1% bright pixels
    mask = np.zeros(img.shape, dtype=bool)
    mask[:50] = True
    img[:50] = 1e6
    est = clipped_background(img, mask=mask)
    assert est.level == pytest.approx(3.0, abs=0.03)
    assert est.sigma == pytest.approx(2.0, rel=0.03)
    with pytest.raises(ValueError, match="zero"):
        clipped_background(np.ones((20, 20)))
    with pytest.raises(ValueError, match="valid pixel"):
        clipped_background(np.full((5, 5), np.nan))


def test_sigma_from_variance():
    var = np.full((50, 50), 4.0)
    var[:5] = 400.0  # sources
    var[0, 0] = np.nan
    assert sigma_from_variance(var) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="zero"):
        sigma_from_variance(np.zeros((5, 5)))
    with pytest.raises(ValueError, match="no valid"):
        sigma_from_variance(np.full((5, 5), -1.0))

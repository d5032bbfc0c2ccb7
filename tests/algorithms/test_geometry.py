import numpy as np
import pytest

from stmatch.algorithms.geometry import (
    GeometryError,
    PixelGrid,
    candidate_pairs,
    clip_polygon_to_box,
    edge_points,
    make_footprint,
    map_region,
    overlap_box,
    polygon_area,
)

from ._tan import Tan, grid_mosaic


def test_edge_points_outline_pixel_edges():
    x, y = edge_points((10, 20))
    assert set(zip(x.tolist(), y.tolist(), strict=True)) == {
        (-0.5, -0.5),
        (19.5, -0.5),
        (19.5, 9.5),
        (-0.5, 9.5),
    }
    x, y = edge_points((100, 100), stepsize=10)
    assert np.max(np.hypot(np.diff(x), np.diff(y))) <= 10.0 + 1e-9
    assert polygon_area(x, y) == pytest.approx(100 * 100)
    with pytest.raises(ValueError):
        edge_points((10, 10), stepsize=0)


def test_clip_polygon():
    x = np.array([-5.0, 5.0, 5.0, -5.0])
    y = np.array([-5.0, -5.0, 5.0, 5.0])
    cx, cy = clip_polygon_to_box(x, y, 0, 10, 0, 10)
    assert polygon_area(cx, cy) == pytest.approx(25.0)
    cx, cy = clip_polygon_to_box(x + 100, y, 0, 10, 0, 10)
    assert cx.size == 0


def test_candidate_pairs_match_brute_force_and_are_sparse():
    wcss = grid_mosaic(6, 6, (100, 100), overlap=0.1)
    fps = [make_footprint((100, 100), w.fwd) for w in wcss]
    pairs = candidate_pairs(fps)
    # 6x6 grid with 8-neighbourhood: 2*6*5 edge + 2*5*5 diagonal adjacencies
    assert len(pairs) == 2 * 6 * 5 + 2 * 5 * 5
    assert np.all(pairs[:, 0] < pairs[:, 1])
    brute = set()
    for i in range(36):
        for j in range(i + 1, 36):
            if overlap_box((100, 100), wcss[i].inv, fps[j]) is not None:
                brute.add((i, j))
    assert brute <= {tuple(p) for p in pairs.tolist()}
    # gaps: bounding circles may still touch, but the exact test finds no overlap
    wcss = grid_mosaic(4, 4, (100, 100), overlap=-0.2)
    fps = [make_footprint((100, 100), w.fwd) for w in wcss]
    for i, j in candidate_pairs(fps):
        assert overlap_box((100, 100), wcss[i].inv, fps[j]) is None
    # far apart: not even candidates
    wcss = grid_mosaic(4, 4, (100, 100), overlap=-2.0)
    assert len(candidate_pairs([make_footprint((100, 100), w.fwd) for w in wcss])) == 0


def test_footprint_rejects_bad_wcs():
    def bad(x, y):
        return np.full_like(np.asarray(x, float), np.nan), np.asarray(y, float)

    with pytest.raises(GeometryError):
        make_footprint((10, 10), bad)

    def raises(x, y):
        raise RuntimeError("boom")

    with pytest.raises(GeometryError, match="boom"):
        make_footprint((10, 10), raises)


@pytest.mark.parametrize("rotation", [0.0, 33.0])
def test_map_region_matches_exact_transform(rotation):
    a = Tan(150.0, 2.0, (200.0, 150.0), 0.06, 0.0)
    b = Tan(150.0, 2.0, (30.0, 20.0), 0.11, rotation)
    fb = make_footprint((300, 300), b.fwd)
    box = overlap_box((300, 400), a.inv, fb)
    assert box is not None
    grid = PixelGrid((300, 400), a.fwd, step=16)
    xo, yo = map_region(grid, box, b.inv)
    yy, xx = np.mgrid[box[0], box[1]]
    ex, ey = b.inv(*a.fwd(xx, yy))
    assert np.abs(xo - ex).max() < 1e-3
    assert np.abs(yo - ey).max() < 1e-3


def test_strong_distortion_is_interpolated_accurately():
    a = Tan(150.0, 2.0, (50.0, 50.0), 0.06)

    def inv_distorted(ra, dec):
        x, y = a.inv(ra, dec)
        return x + 1e-3 * (x - 50) ** 2 + 2 * np.sin(x / 20.0), y

    grid = PixelGrid((100, 100), a.fwd, step=8)
    box = (slice(0, 100), slice(0, 100))
    xo, _ = map_region(grid, box, inv_distorted)
    yy, xx = np.mgrid[0:100, 0:100]
    exact, _ = inv_distorted(*a.fwd(xx, yy))
    assert np.abs(xo - exact).max() < 0.01


@pytest.mark.parametrize("rotation,dec", [(0.0, 2.0), (47.0, -65.0), (120.0, 89.9)])
def test_fast_inverse_matches_exact_inverse(rotation, dec):
    from stmatch.algorithms.geometry import FastInverse

    w = Tan(10.0, dec, (511.5, 511.5), 0.06, rotation)
    grid = PixelGrid((1024, 1024), w.fwd, step=16)
    fast = FastInverse(grid)
    assert fast.ok and fast.max_error < 1e-3
    rng = np.random.default_rng(0)
    # inside the image and well outside it (neighbouring images)
    x = rng.uniform(-1500, 2500, 2000)
    y = rng.uniform(-1500, 2500, 2000)
    fx, fy = fast(*w.fwd(x, y))
    inside = (x > -1) & (x < 1024) & (y > -1) & (y < 1024)
    assert np.abs(fx - x)[inside].max() < 1e-3 and np.abs(fy - y)[inside].max() < 1e-3
    # outside, accuracy only needs to keep points outside
    assert np.all(~((fx > -0.5) & (fx < 1023.5) & (fy > -0.5) & (fy < 1023.5))[~inside])


def test_fast_inverse_refuses_when_it_cannot_fit():
    from stmatch.algorithms.geometry import FastInverse

    w = Tan(10.0, 2.0, (50.0, 50.0), 0.06)

    def wiggly(x, y):  # a distortion no low-order series can follow
        x = np.asarray(x, float)
        return w.fwd(x + 3.0 * np.sin(x / 3.0), y)

    fast = FastInverse(PixelGrid((100, 100), wiggly, step=8))
    assert not fast.ok and fast.max_error > 1e-3
    # behind the tangent plane: nowhere on the image
    fx, fy = fast(np.array([190.0]), np.array([-2.0]))
    assert np.isinf(fx[0])

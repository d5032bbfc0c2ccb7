"""Tests of the flux-conserving resampling module with analytic (affine) mappings."""

import math

import numpy as np
import pytest

from stmatch.algorithms.resample import (
    ResampleResult,
    affine_resample_stamp,
    grids_agree,
    pixel_mapping,
    resample_image,
)


class Affine:
    """A pixel grid on a plane 'world': world = A @ (x, y) + b."""

    def __init__(self, matrix=((1.0, 0.0), (0.0, 1.0)), offset=(0.0, 0.0)):
        self.a = np.asarray(matrix, dtype=float)
        self.b = np.asarray(offset, dtype=float)
        self.ai = np.linalg.inv(self.a)

    def fwd(self, x, y):
        x, y = np.asarray(x, float), np.asarray(y, float)
        return (
            self.a[0, 0] * x + self.a[0, 1] * y + self.b[0],
            self.a[1, 0] * x + self.a[1, 1] * y + self.b[1],
        )

    def inv(self, u, v):
        u = np.asarray(u, float) - self.b[0]
        v = np.asarray(v, float) - self.b[1]
        return self.ai[0, 0] * u + self.ai[0, 1] * v, self.ai[1, 0] * u + self.ai[1, 1] * v


IDENT = Affine()


def rotation(deg, scale=1.0):
    t = math.radians(deg)
    return scale * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


def gauss(x, y, x0, y0, sx, sy=None):
    sy = sx if sy is None else sy
    return np.exp(-0.5 * (((x - x0) / sx) ** 2 + ((y - y0) / sy) ** 2))


def image_of(shape, func):
    y, x = np.mgrid[: shape[0], : shape[1]].astype(float)
    return func(x, y)


def lanczos_weights(frac, a=3):
    t = frac + (a - 1) - np.arange(2 * a)
    w = np.sinc(t) * np.sinc(t / a)
    return w / w.sum()


# --------------------------------------------------------------------- identity and shifts


def test_identity_copies_exactly_and_grids_agree():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(40, 50))
    var = rng.uniform(0.5, 2.0, size=data.shape)
    dq = rng.integers(0, 3, size=data.shape).astype(np.uint32)
    r = resample_image(data, data.shape, IDENT.fwd, IDENT.inv, var=var, dq=dq)
    assert isinstance(r, ResampleResult)
    assert np.array_equal(r.data, data)
    assert np.array_equal(r.var, var)
    assert np.array_equal(r.dq, dq)
    assert r.coverage.all()
    assert r.jacobian_det == pytest.approx(1.0)
    assert r.max_shift < 1e-9
    assert r.method == "lanczos3"
    assert grids_agree(data.shape, IDENT.fwd, data.shape, IDENT.inv)
    shifted = Affine(offset=(0.05, 0.0))
    assert not grids_agree(data.shape, shifted.fwd, data.shape, IDENT.inv)
    assert grids_agree(data.shape, shifted.fwd, data.shape, IDENT.inv, tol=0.06)
    assert not grids_agree((40, 51), IDENT.fwd, data.shape, IDENT.inv)
    # a grid that only agrees in the middle: the corners are checked
    turned = Affine(rotation(0.05), offset=(0.0, 0.0))
    assert not grids_agree((400, 400), turned.fwd, (400, 400), IDENT.inv)


@pytest.mark.parametrize("method", ["lanczos3", "bilinear", "lanczos2"])
def test_integer_shift_is_exact(method):
    data = np.random.default_rng(2).normal(size=(30, 40))
    out = Affine(offset=(3.0, -2.0))  # output (x, y) sits on input (x + 3, y - 2)
    r = resample_image(data, (30, 40), out.fwd, IDENT.inv, method=method)
    expect = np.full((30, 40), np.nan)
    expect[2:, :37] = data[:28, 3:]
    assert np.array_equal(r.coverage, np.isfinite(expect))
    assert np.array_equal(r.data, expect, equal_nan=True)
    assert r.max_shift == pytest.approx(math.hypot(3, 2))


def test_pixel_centres_at_edges_are_copied_next_to_interpolated_pixels():
    # x' = 1.5 x: even columns fall on centres (column 0 on the edge), odd ones between
    data = np.random.default_rng(6).normal(size=(12, 40))
    out = Affine([[1.5, 0.0], [0.0, 1.0]])
    for method, reach in (("lanczos3", 3), ("bilinear", 1)):
        r = resample_image(data, (12, 27), out.fwd, IDENT.inv, method=method)
        assert np.array_equal(r.data[:, 0::2], data[:, 0::3])
        # x' = 1.5 needs taps down to 2 - reach
        assert r.coverage[:, 0].all() and r.coverage[:, 1].all() == (reach == 1)
    tiny = np.arange(9.0).reshape(3, 3)  # smaller than the kernel
    r = resample_image(tiny, (3, 3), IDENT.fwd, IDENT.inv)
    assert np.array_equal(r.data, tiny)
    r = resample_image(tiny, (3, 3), Affine(offset=(0.5, 0.0)).fwd, IDENT.inv)
    assert not r.coverage.any() and np.isnan(r.data).all()


def test_subpixel_shift_of_gaussian_matches_analytic():
    shape, (x0, y0), dx, dy = (64, 64), (30.2, 31.7), 0.37, -0.61
    data = image_of(shape, lambda x, y: gauss(x, y, x0, y0, 2.0))
    out = Affine(offset=(dx, dy))
    expect = image_of(shape, lambda x, y: gauss(x + dx, y + dy, x0, y0, 2.0))
    errors = {}
    for method in ("lanczos3", "bilinear", "lagrange8"):
        r = resample_image(data, shape, out.fwd, IDENT.inv, method=method)
        errors[method] = np.abs(r.data - expect)[r.coverage].max()
    # Lanczos-3 itself errs by 4.3e-3 of the peak here (see the direct sum below);
    # the 8-tap Lagrange kernel gets below 1e-3.
    assert errors["lanczos3"] < 5e-3
    assert errors["lagrange8"] < 1e-3
    assert errors["lanczos3"] < errors["bilinear"] / 5
    # footprint of 6 taps inside the image: x in [2, 60], y in [3, 61]
    cover = np.zeros(shape, bool)
    cover[3:62, 2:61] = True
    r = resample_image(data, shape, out.fwd, IDENT.inv)
    assert np.array_equal(r.coverage, cover)
    assert np.array_equal(np.isnan(r.data), ~cover)
    # the same numbers from the kernel's definition, summed directly
    wx, wy = lanczos_weights(0.37), lanczos_weights(0.39)  # y' = y - 1 + 0.39
    for y, x in [(20, 20), (31, 30), (40, 35)]:
        patch = data[y - 1 - 2 : y - 1 + 4, x - 2 : x + 4]
        assert r.data[y, x] == pytest.approx(wy @ patch @ wx, abs=1e-5)


@pytest.mark.parametrize(("method", "bias"), [("lanczos3", True), ("lagrange6", False)])
def test_position_bias_on_a_ramp(method, bias):
    shape = (30, 30)
    ramp = image_of(shape, lambda x, y: x + 2.0 * y)
    for d in (0.25, 0.5, 0.75):
        r = resample_image(ramp, shape, Affine(offset=(d, d)).fwd, IDENT.inv, method=method)
        expect = ramp + 3.0 * d
        err = (r.data - expect)[r.coverage]
        t = d + 2 - np.arange(6)
        moment = float(lanczos_weights(d) @ t) if bias else 0.0
        # a shift of the ramp by the kernel's first moment, on both axes
        assert np.allclose(err, -3.0 * moment, atol=1e-9)
    if bias:
        assert abs(moment) > 0.015


def test_distorted_mapping_follows_the_transform():
    c = 2e-5  # up to ~0.4 px of quadratic distortion over the image

    def w2p(u, v):
        u, v = np.asarray(u, float), np.asarray(v, float)
        return u + c * (u * u + v * v), v - c * u * v

    shape = (120, 130)
    x_in, y_in = pixel_mapping(shape, IDENT.fwd, w2p, step=16)
    y, x = np.mgrid[: shape[0], : shape[1]].astype(float)
    ex, ey = w2p(x, y)
    assert np.abs(x_in - ex).max() < 2e-3 and np.abs(y_in - ey).max() < 2e-3
    data = image_of(shape, lambda x, y: gauss(x, y, 60.3, 55.8, 2.5))
    expect = gauss(ex, ey, 60.3, 55.8, 2.5)
    r = resample_image(data, shape, IDENT.fwd, w2p, step=16)
    assert np.abs(r.data - expect)[r.coverage].max() < 4e-3  # Lanczos-3's own error
    r = resample_image(data, shape, IDENT.fwd, w2p, step=16, method="lagrange8")
    assert np.abs(r.data - expect)[r.coverage].max() < 1e-3
    x_aff, y_aff = pixel_mapping((20, 30), Affine(rotation(30, 1.5), (4, 5)).fwd, IDENT.inv)
    ex, ey = Affine(rotation(30, 1.5), (4, 5)).fwd(*np.mgrid[:20, :30][::-1].astype(float))
    assert np.abs(x_aff - ex).max() < 1e-9 and np.abs(y_aff - ey).max() < 1e-9


# ------------------------------------------------------------------ flux conservation


def test_constant_image_stays_constant():
    data = np.full((100, 100), 7.0)
    out = Affine(rotation(25, 1.3), offset=(40.0, -10.0))
    r = resample_image(data, (80, 80), out.fwd, IDENT.inv)
    assert r.coverage.mean() > 0.3
    assert np.abs(r.data[r.coverage] - 7.0).max() < 1e-12
    assert np.isnan(r.data[~r.coverage]).all()
    assert r.jacobian_det == pytest.approx(1.69)
    r = resample_image(data, (80, 80), out.fwd, IDENT.inv, conserve="flux")
    assert np.abs(r.data[r.coverage] - 7.0 * 1.69).max() < 1e-10


@pytest.mark.parametrize(
    ("matrix", "shape_out"),
    [(2.0 * np.eye(2), (100, 100)), (rotation(30, 2.0), (150, 150)), (0.5 * np.eye(2), (300, 300))],
)
def test_flux_is_conserved_under_scale_changes(matrix, shape_out):
    x0, y0 = 99.3, 100.6
    data = image_of((200, 200), lambda x, y: 50.0 * gauss(x, y, x0, y0, 6.0))
    # place the output centre on the source
    c_out = np.array([(shape_out[1] - 1) / 2, (shape_out[0] - 1) / 2])
    offset = np.array([100.0, 100.0]) - matrix @ c_out
    out = Affine(matrix, offset)
    r = resample_image(data, shape_out, out.fwd, IDENT.inv, conserve="flux")
    det = abs(np.linalg.det(matrix))
    assert r.jacobian_det == pytest.approx(det)
    assert abs(np.nansum(r.data) / data.sum() - 1.0) < 1e-3
    surface = resample_image(data, shape_out, out.fwd, IDENT.inv)
    assert np.allclose(surface.data * det, r.data, equal_nan=True, rtol=1e-12)


def test_surface_brightness_keeps_the_peak():
    # output pixels twice as large; output pixel (50, 50) is centred on input (100.5, 100.5)
    data = image_of((200, 200), lambda x, y: 50.0 * gauss(x, y, 100.5, 100.5, 4.0))
    out = Affine(2.0 * np.eye(2), (0.5, 0.5))
    r = resample_image(data, (100, 100), out.fwd, IDENT.inv)
    assert np.nanmax(r.data) == pytest.approx(50.0, rel=1e-3)
    assert np.nanargmax(r.data) == np.ravel_multi_index((50, 50), (100, 100))
    f = resample_image(data, (100, 100), out.fwd, IDENT.inv, conserve="flux")
    assert np.nanmax(f.data) == pytest.approx(200.0, rel=1e-3)


# --------------------------------------------------------------------------- variance


def test_variance_of_half_pixel_shift_is_sum_of_squared_weights():
    var = np.full((20, 20), 2.0)
    out = Affine(offset=(0.5, 0.5))
    r = resample_image(np.zeros((20, 20)), (20, 20), out.fwd, IDENT.inv, var=var, method="bilinear")
    assert np.allclose(r.var[r.coverage], 2.0 * 0.25, rtol=1e-12, atol=0)
    r = resample_image(np.zeros((20, 20)), (20, 20), out.fwd, IDENT.inv, var=var)
    s2 = float(np.sum(lanczos_weights(0.5) ** 2))
    assert np.allclose(r.var[r.coverage], 2.0 * s2 * s2, rtol=1e-9, atol=0)
    # flux: times det J squared (bilinear, fractions 0.25 / 0.75 on both axes, det 4)
    out = Affine(2.0 * np.eye(2), (0.25, 0.25))
    r = resample_image(
        np.zeros((20, 20)), (9, 9), out.fwd, IDENT.inv, var=var, method="bilinear", conserve="flux"
    )
    assert np.allclose(r.var[r.coverage], 2.0 * 0.625**2 * 16.0, rtol=1e-12, atol=0)


def test_variance_matches_noise_realisations():
    rng = np.random.default_rng(3)
    shape = (24, 24)
    var = image_of(shape, lambda x, y: 0.5 + x / 12.0 + y / 24.0)
    out = Affine(rotation(20, 1.1), offset=(6.0, -2.0))
    nreal = 400
    results = [
        resample_image(rng.normal(size=shape) * np.sqrt(var), shape, out.fwd, IDENT.inv, var=var)
        for _ in range(nreal)
    ]
    cov = results[0].coverage
    assert cov.sum() > 100
    stack = np.array([r.data[cov] for r in results])
    empirical = (stack**2).mean(axis=0)  # the mean is zero
    predicted = results[0].var[cov]
    assert predicted.max() / predicted.min() > 2.0  # a spread of variances is tested
    ratio = empirical / predicted
    assert abs(ratio.mean() - 1.0) < 0.02
    assert np.abs(ratio - 1.0).max() < 5 * math.sqrt(2.0 / nreal)
    slope = np.polyfit(predicted, empirical, 1)[0]
    assert slope == pytest.approx(1.0, abs=0.06)
    # interpolated noise has less variance than the input: w² sums to less than 1
    assert (predicted < var.max()).all()


# ----------------------------------------------------------------- masks, DQ and edges


def _masked_inputs():
    rng = np.random.default_rng(4)
    data = rng.normal(size=(40, 40))
    var = np.ones_like(data)
    dq = np.zeros(data.shape, np.uint32)
    bad = np.zeros(data.shape, bool)
    bad[20, 20] = True
    dq[20, 20] = 4
    dq[10, 30] = 1
    return data, var, dq, bad


def _expected_footprints(shape, lo, hi):
    """Output pixels whose 6x6 support contains input (20, 20), (10, 30) and the edges."""
    near_bad = np.zeros(shape, bool)
    near_bad[17:23, 17:23] = True
    near_dq1 = np.zeros(shape, bool)
    near_dq1[7:13, 27:33] = True
    inside = np.zeros(shape, bool)
    inside[lo:hi, lo:hi] = True
    return near_bad, near_dq1, inside


def test_bad_pixel_dq_and_edges():
    data, var, dq, bad = _masked_inputs()
    out = Affine(offset=(0.3, 0.2))  # floor(x + 0.3) = x: taps x-2 .. x+3
    r = resample_image(data, data.shape, out.fwd, IDENT.inv, var=var, dq=dq, bad=bad)
    near_bad, near_dq1, inside = _expected_footprints(data.shape, 2, 37)
    assert np.array_equal(r.coverage, inside & ~near_bad)
    assert np.array_equal(np.isnan(r.data), ~(inside & ~near_bad))
    assert np.array_equal(np.isnan(r.var), np.isnan(r.data))
    assert np.array_equal((r.dq & 4) != 0, near_bad)
    assert np.array_equal((r.dq & 1) != 0, near_dq1)
    assert np.isfinite(r.data[near_dq1]).all()
    assert set(np.unique(r.dq)) == {0, 1, 4}
    # the same pixel made bad by NaN data or by a negative variance
    nan_data = data.copy()
    nan_data[20, 20] = np.nan
    neg_var = var.copy()
    neg_var[20, 20] = -1.0
    for kwargs in ({"data": nan_data, "var": var}, {"data": data, "var": neg_var}):
        other = resample_image(
            kwargs["data"], data.shape, out.fwd, IDENT.inv, var=kwargs["var"], dq=dq
        )
        assert np.array_equal(other.coverage, r.coverage)
        assert np.array_equal(other.data, r.data, equal_nan=True)


def test_bad_pixel_reach_depends_on_kernel_support():
    data, var, dq, bad = _masked_inputs()
    r = resample_image(data, data.shape, IDENT.fwd, IDENT.inv, bad=bad, dq=dq)
    assert np.isnan(r.data).sum() == 1 and np.isnan(r.data[20, 20])
    assert np.count_nonzero(r.dq) == 2
    out = Affine(offset=(0.3, 0.2))
    r = resample_image(data, data.shape, out.fwd, IDENT.inv, bad=bad, method="bilinear")
    near = np.zeros(data.shape, bool)
    near[19:21, 19:21] = True
    inside = np.zeros(data.shape, bool)
    inside[:39, :39] = True
    assert np.array_equal(r.coverage, inside & ~near)


def test_no_overlap_raises():
    data = np.ones((30, 30))
    with pytest.raises(ValueError, match="does not overlap"):
        resample_image(data, (30, 30), Affine(offset=(1000.0, 0.0)).fwd, IDENT.inv)
    with pytest.raises(ValueError, match="does not overlap"):
        resample_image(data, (30, 30), Affine(offset=(-40.0, 35.0)).fwd, IDENT.inv)


def test_input_errors():
    data = np.ones((10, 10))
    f, i = IDENT.fwd, IDENT.inv
    with pytest.raises(ValueError, match="2-D"):
        resample_image(np.ones((2, 10, 10)), (10, 10), f, i)
    with pytest.raises(ValueError, match="var has shape"):
        resample_image(data, (10, 10), f, i, var=np.ones((10, 11)))
    with pytest.raises(ValueError, match="dq has shape"):
        resample_image(data, (10, 10), f, i, dq=np.ones((9, 10), np.uint32))
    with pytest.raises(ValueError, match="bad has shape"):
        resample_image(data, (10, 10), f, i, bad=np.ones(10, bool))
    with pytest.raises(ValueError, match="unknown resampling method"):
        resample_image(data, (10, 10), f, i, method="cubic")
    with pytest.raises(ValueError, match="conserve"):
        resample_image(data, (10, 10), f, i, conserve="counts")
    with pytest.raises(ValueError, match="shape_out"):
        resample_image(data, (10,), f, i)

    def nan_inverse(u, v):
        return np.full_like(u, np.nan), v

    with pytest.raises(ValueError, match="non-finite"):
        resample_image(data, (10, 10), f, nan_inverse)
    with pytest.raises(ValueError, match="non-finite"):
        pixel_mapping((10, 10), f, nan_inverse)
    assert not grids_agree((10, 10), f, (10, 10), nan_inverse)


def test_inputs_unchanged_float32_and_chunking():
    rng = np.random.default_rng(5)
    data = rng.normal(size=(50, 60)).astype(np.float32)
    data[5, 5] = np.nan
    var = rng.uniform(1, 2, size=data.shape).astype(np.float32)
    dq = np.zeros(data.shape, np.uint16)
    dq[30, 30] = 8
    copies = [a.copy() for a in (data, var, dq)]
    out = Affine(rotation(10, 0.9), offset=(5.0, 1.0))
    r = resample_image(data, (50, 60), out.fwd, IDENT.inv, var=var, dq=dq, conserve="flux")
    for a, c in zip((data, var, dq), copies, strict=True):
        assert np.array_equal(a, c, equal_nan=True)
    assert r.data.dtype == np.float64 and r.dq.dtype == np.uint32
    r64 = resample_image(
        data.astype(np.float64),
        (50, 60),
        out.fwd,
        IDENT.inv,
        var=var.astype(np.float64),
        dq=dq,
        conserve="flux",
    )
    assert np.array_equal(r.data, r64.data, equal_nan=True)
    small = resample_image(
        data,
        (50, 60),
        out.fwd,
        IDENT.inv,
        var=var,
        dq=dq,
        conserve="flux",
        chunk_rows=3,
        dtype=np.float32,
    )
    assert small.data.dtype == np.float32 and small.var.dtype == np.float32
    assert np.allclose(small.data, r.data, rtol=1e-6, atol=1e-6, equal_nan=True)
    assert np.array_equal(small.coverage, r.coverage)
    assert np.array_equal(small.dq, r.dq)
    assert (r.dq == 8).sum() > 0


# --------------------------------------------------------------------------- PSF stamps


def _stamp(shape, sx, sy=None):
    cy, cx = shape[0] // 2, shape[1] // 2
    s = image_of(shape, lambda x, y: gauss(x, y, cx, cy, sx, sy))
    return s / s.sum()


def _moments(p):
    y, x = np.mgrid[: p.shape[0], : p.shape[1]].astype(float)
    cy, cx = p.shape[0] // 2, p.shape[1] // 2
    my, mx = (p * (y - cy)).sum(), (p * (x - cx)).sum()
    return my, mx, (p * (y - cy) ** 2).sum(), (p * (x - cx) ** 2).sum()


def test_affine_stamp_identity_and_rotation():
    stamp = _stamp((31, 31), 3.0, 1.5) * 7.0
    same = affine_resample_stamp(stamp, np.eye(2))
    assert np.allclose(same, stamp / stamp.sum(), rtol=0, atol=1e-15)
    # output offset (dx, dy) reads input offset (-dy, dx): the long axis turns to y
    turned = affine_resample_stamp(stamp, [[0.0, -1.0], [1.0, 0.0]])
    assert np.allclose(turned, _stamp((31, 31), 1.5, 3.0), rtol=0, atol=1e-14)
    assert turned.sum() == pytest.approx(1.0, abs=1e-14)


def test_affine_stamp_scaling_widens_by_two():
    stamp = _stamp((41, 41), 1.5)
    wide = affine_resample_stamp(stamp, 0.5 * np.eye(2))
    my, mx, vy, vx = _moments(wide)
    assert abs(my) < 1e-9 and abs(mx) < 1e-9
    assert math.sqrt(vx) == pytest.approx(3.0, rel=5e-3)
    assert math.sqrt(vy) == pytest.approx(3.0, rel=5e-3)
    narrow = affine_resample_stamp(_stamp((41, 41), 4.0), 2.0 * np.eye(2))
    assert math.sqrt(_moments(narrow)[3]) == pytest.approx(2.0, rel=5e-3)


def test_affine_stamp_general_map_keeps_centre_and_unit_sum():
    stamp = _stamp((45, 45), 2.0, 3.0)
    m = rotation(33.0, 0.8) @ np.array([[1.0, 0.2], [0.0, 1.1]])
    res = affine_resample_stamp(stamp, m, shape=(51, 51))
    assert res.shape == (51, 51)
    assert res.sum() == pytest.approx(1.0, abs=1e-12)
    my, mx, _, _ = _moments(res)
    assert abs(my) < 1e-3 and abs(mx) < 1e-3
    # second moments transform as M^-1 C M^-T
    y, x = np.mgrid[:51, :51].astype(float) - 25
    cxx, cyy, cxy = (res * x * x).sum(), (res * y * y).sum(), (res * x * y).sum()
    mi = np.linalg.inv(m)
    expect = mi @ np.diag([4.0, 9.0]) @ mi.T
    assert np.allclose([[cxx, cxy], [cxy, cyy]], expect, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="odd"):
        affine_resample_stamp(np.ones((4, 5)), np.eye(2))
    with pytest.raises(ValueError, match="2x2"):
        affine_resample_stamp(stamp, np.eye(3))
    with pytest.raises(ValueError, match="singular"):
        affine_resample_stamp(stamp, np.zeros((2, 2)))

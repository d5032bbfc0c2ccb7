"""Tests of the spatially varying convolution of images and variance maps."""

import pickle

import numpy as np
import pytest
from scipy import fft as sfft
from scipy import ndimage, signal

from stmatch.algorithms import convolve_varying as cv
from stmatch.algorithms.chebyshev import image_domain
from stmatch.algorithms.convolve_varying import (
    ConvolveResult,
    convolve_image,
    convolve_variance,
    dilate,
    kernel_footprint,
    variance_rank,
)
from stmatch.algorithms.psf import gaussian_psf
from stmatch.algorithms.row_bands import band_rows_for, plan_bands, row_chunk
from stmatch.algorithms.spatial_kernel import SpatialKernel


# ----------------------------------------------------------------------------- helpers
def random_kernel(shape, h, w, *, order=2, seed=0):
    """Random smooth term kernels (Gaussian envelope × noise), term 0 with unit sum."""
    rng = np.random.default_rng(seed)
    n = (order + 1) * (order + 2) // 2
    env = gaussian_psf((h, w), 0.5 * min(h, w), integrate=False)
    terms = rng.normal(size=(n, h, w)) * env
    terms[0] += env
    terms[0] /= terms[0].sum()
    terms[1:] *= 0.3
    return SpatialKernel(terms, order, image_domain(shape))


def gaussian_kernel(shape, h, fwhm0, dx, dy, *, order=2):
    """Fit of unit-sum Gaussians whose FWHM varies smoothly over the image."""
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 5), np.linspace(0, ny - 1, 5))
    stamps = [
        gaussian_psf(h, fwhm0 + dx * x / nx + dy * (y / ny) ** 2)
        for x, y in zip(gx.ravel(), gy.ravel(), strict=True)
    ]
    return SpatialKernel.fit(gx.ravel(), gy.ravel(), stamps, order, image_domain(shape))


def brute_force(image, kernel, fill, *, square=False):
    """O(y, x) = sum_{v,u} K(x, y; u, v) I(y - v, x - u), one pixel at a time."""
    h, w = kernel.shape
    mode = "reflect" if fill == "reflect" else "constant"
    padded = np.pad(image, ((h // 2, h // 2), (w // 2, w // 2)), mode=mode)
    out = np.empty(image.shape)
    for y in range(image.shape[0]):
        for x in range(image.shape[1]):
            k = kernel.kernel_at(x, y)
            k = k * k if square else k
            out[y, x] = np.sum(k * padded[y : y + h, x : x + w][::-1, ::-1])
    return out


# ----------------------------------------------------------------------------- image
@pytest.mark.parametrize("chunk", [None, 17, 200])
def test_constant_kernel_equals_fftconvolve(chunk):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(120, 97))
    kernel = rng.normal(size=(11, 9))
    ref = signal.fftconvolve(image, kernel, mode="same")
    reflect = convolve_image(image, kernel, dtype=np.float64, chunk=chunk)
    inner = (slice(5, -5), slice(4, -4))
    np.testing.assert_allclose(reflect.data[inner], ref[inner], rtol=0, atol=1e-10)
    # with zero fill the result is the zero-padded convolution everywhere
    zero = convolve_image(image, kernel, fill="zero", dtype=np.float64, chunk=chunk)
    np.testing.assert_allclose(zero.data, ref, rtol=0, atol=1e-10)
    assert not reflect.bad.any()


@pytest.mark.parametrize("fill", ["reflect", "zero"])
@pytest.mark.parametrize("chunk", [None, 7, 13])
def test_varying_kernel_equals_brute_force(fill, chunk):
    shape = (40, 50)
    kernel = random_kernel(shape, 7, 7, seed=3)
    image = np.random.default_rng(2).normal(size=shape)
    res = convolve_image(image, kernel, fill=fill, dtype=np.float64, chunk=chunk)
    np.testing.assert_allclose(res.data, brute_force(image, kernel, fill), rtol=0, atol=1e-10)


def test_asymmetric_kernel_and_domain_orientation():
    # different sizes in x and y and a domain that is not the image: x is the column
    shape = (31, 45)
    rng = np.random.default_rng(4)
    terms = rng.normal(size=(3, 5, 9))
    kernel = SpatialKernel(terms, 1, (-10.0, 60.0, 5.0, 25.0))
    image = rng.normal(size=shape)
    res = convolve_image(image, kernel, fill="zero", dtype=np.float64)
    np.testing.assert_allclose(res.data, brute_force(image, kernel, "zero"), atol=1e-10)


def test_delta_function_lands_on_its_pixel():
    shape = (40, 50)
    y0, x0 = 17, 23
    image = np.zeros(shape)
    image[y0, x0] = 1.0
    rng = np.random.default_rng(5)
    stamp = rng.uniform(0.1, 1.0, size=(7, 5))  # no symmetry: any flip shows up
    res = convolve_image(image, stamp, dtype=np.float64)
    expected = np.zeros(shape)
    expected[y0 - 3 : y0 + 4, x0 - 2 : x0 + 3] = stamp
    np.testing.assert_allclose(res.data, expected, rtol=0, atol=1e-12)
    # a varying kernel is evaluated at the output pixel: O(y0+v, x0+u) = K(x0+u, y0+v; u, v)
    kernel = random_kernel(shape, 7, 7, seed=6)
    out = convolve_image(image, kernel, dtype=np.float64).data
    for v in range(-3, 4):
        for u in range(-3, 4):
            k = kernel.kernel_at(x0 + u, y0 + v)
            assert out[y0 + v, x0 + u] == pytest.approx(k[v + 3, u + 3], abs=1e-12)
    mask = np.ones(shape, dtype=bool)
    mask[y0 - 3 : y0 + 4, x0 - 3 : x0 + 4] = False
    assert np.max(np.abs(out[mask])) < 1e-12


def test_flux_conservation():
    rng = np.random.default_rng(7)
    shape = (256, 256)
    image = np.zeros(shape)
    ys, xs = rng.integers(20, 236, 60), rng.integers(20, 236, 60)
    image[ys, xs] = rng.uniform(1.0, 10.0, 60)
    # constant unit-sum kernel: exact
    const = convolve_image(image, gaussian_psf(15, 3.0), dtype=np.float64).data
    assert const.sum() == pytest.approx(image.sum(), rel=1e-12)
    # a kernel whose sum is 1 everywhere, FWHM 2.5 -> 3.5 px across the image
    kernel = gaussian_kernel(shape, 15, 2.5, 1.0, 0.5)
    np.testing.assert_allclose(kernel.sum_at(*np.meshgrid(range(256), range(256))), 1.0)
    out = convolve_image(image, kernel, dtype=np.float64).data
    # exact identity: sum O = sum_x' I(x') sum_u K(x' + u; u) (kernel taken at the output)
    gain = np.zeros(len(ys))
    for n, (y, x) in enumerate(zip(ys, xs, strict=True)):
        for v in range(-7, 8):
            for u in range(-7, 8):
                gain[n] += kernel.kernel_at(x + u, y + v)[v + 7, u + 7]
    assert out.sum() == pytest.approx(np.sum(image[ys, xs] * gain), rel=1e-12)
    # and the flux is conserved to second order in the kernel's variation
    assert out.sum() == pytest.approx(image.sum(), rel=1e-4)


def test_nan_is_contained_in_the_dilated_footprint():
    shape = (60, 70)
    kernel = random_kernel(shape, 9, 7, seed=8)
    rng = np.random.default_rng(9)
    image = rng.normal(size=shape)
    y0, x0 = 30, 33
    dirty = image.copy()
    dirty[y0, x0] = np.nan
    res = convolve_image(dirty, kernel, dtype=np.float64)
    foot = kernel_footprint(kernel)
    expected = np.zeros(shape, dtype=bool)
    expected[y0 - 4 : y0 + 5, x0 - 3 : x0 + 4] = foot
    np.testing.assert_array_equal(res.bad, expected)
    np.testing.assert_array_equal(np.isnan(res.data), expected)
    clean = image.copy()
    clean[y0, x0] = 0.0
    ref = convolve_image(clean, kernel, dtype=np.float64).data
    np.testing.assert_allclose(res.data[~expected], ref[~expected], rtol=0, atol=1e-12)
    # a mask acts like a NaN
    mask = np.zeros(shape, dtype=bool)
    mask[y0, x0] = True
    masked = convolve_image(image, kernel, mask=mask, dtype=np.float64)
    np.testing.assert_array_equal(masked.bad, expected)
    np.testing.assert_allclose(masked.data[~expected], ref[~expected], rtol=0, atol=1e-12)


def test_bad_pixel_reflected_into_the_padding_is_flagged():
    shape = (30, 30)
    image = np.ones(shape)
    image[1, 15] = np.nan  # its mirror image across row 0 sits at row -1
    res = convolve_image(image, np.ones((5, 5)) / 25.0)
    # rows 0..3 see the pixel itself; row 0 also sees its mirror at row -1
    assert res.bad[:4, 13:18].all() and not res.bad[4:].any()
    assert np.isfinite(res.data[~res.bad]).all()
    zero = convolve_image(image, np.ones((5, 5)) / 25.0, fill="zero")
    np.testing.assert_array_equal(zero.bad, res.bad)


def test_edge_band():
    shape = (30, 40)
    full = convolve_image(np.ones(shape), np.ones((7, 7)))
    expected = np.ones(shape, dtype=bool)
    expected[3:-3, 3:-3] = False
    np.testing.assert_array_equal(full.edge, expected)
    # support only at row offsets v >= 0 and column offsets u <= 0: O(y, x) reads
    # I(y - v, x - u), i.e. rows above and columns to the right
    stamp = np.zeros((7, 7))
    stamp[3:, :4] = 1.0
    one_sided = convolve_image(np.ones(shape), stamp, fill="zero")
    expected = np.zeros(shape, dtype=bool)
    expected[:3, :] = True
    expected[:, -3:] = True
    np.testing.assert_array_equal(one_sided.edge, expected)
    # with zero fill the flagged band is exactly where the flux of a flat image is lost
    lost = ~np.isclose(one_sided.data, stamp.sum())
    np.testing.assert_array_equal(lost, expected)


def test_inputs_are_not_modified():
    shape = (40, 50)
    rng = np.random.default_rng(10)
    image = rng.normal(size=shape).astype(np.float32)
    image[5, 7] = np.nan
    variance = rng.uniform(1.0, 2.0, size=shape)
    variance[20, 20] = np.inf
    mask = np.zeros(shape, dtype=bool)
    mask[30, 40] = True
    kernel = random_kernel(shape, 7, 7, seed=11)
    copies = [a.copy() for a in (image, variance, mask)]
    terms = kernel.term_kernels.copy()
    for a in (image, variance, mask):
        a.setflags(write=False)
    res = convolve_image(image, kernel, mask=mask)
    var = convolve_variance(variance, kernel, mask=mask)
    for a, c in zip((image, variance, mask), copies, strict=True):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(kernel.term_kernels, terms)
    assert isinstance(res, ConvolveResult)
    assert res.data.dtype == np.float32 and res.data.shape == shape
    assert var.dtype == np.float32 and var.shape == shape


def test_invalid_arguments():
    image = np.zeros((20, 20))
    with pytest.raises(ValueError, match="fill"):
        convolve_image(image, np.ones((3, 3)), fill="wrap")
    with pytest.raises(ValueError, match="dtype"):
        convolve_image(image, np.ones((3, 3)), dtype=np.int32)
    with pytest.raises(ValueError, match="mask"):
        convolve_image(image, np.ones((3, 3)), mask=np.zeros((20, 21), dtype=bool))
    with pytest.raises(ValueError, match="odd"):
        convolve_image(image, np.ones((4, 3)))
    with pytest.raises(ValueError, match="2-D"):
        convolve_image(np.zeros(10), np.ones((3, 3)))
    with pytest.raises(ValueError, match="chunk"):
        convolve_image(image, np.ones((3, 3)), chunk=0)
    with pytest.raises(ValueError, match="SpatialKernel"):
        convolve_image(image, "gauss")


# ----------------------------------------------------------------------------- masks
@pytest.mark.parametrize("fraction", [0.002, 0.3])
def test_dilate_matches_its_definition(fraction):
    rng = np.random.default_rng(12)
    foot = rng.random((5, 7)) < 0.5
    foot[0, 0] = True
    mask = rng.random((60, 80)) < fraction  # sparse and dense paths
    expected = np.zeros_like(mask)
    for i, j in zip(*np.nonzero(foot), strict=True):
        v, u = i - 2, j - 3
        for y, x in zip(*np.nonzero(mask), strict=True):
            if 0 <= y + v < 60 and 0 <= x + u < 80:
                expected[y + v, x + u] = True
    np.testing.assert_array_equal(dilate(mask, foot), expected)
    # scipy's binary dilation (which mirrors its structuring element) agrees
    sym = ndimage.binary_dilation(mask, structure=foot)
    np.testing.assert_array_equal(dilate(mask, foot), sym)


def test_kernel_footprint_thresholds_the_kernel():
    psf = gaussian_psf(21, 3.0)
    kernel = SpatialKernel.constant(psf, image_domain((50, 50)))
    np.testing.assert_array_equal(kernel_footprint(kernel), psf >= 1e-4 * psf.max())
    assert kernel_footprint(kernel, threshold=0.0).all()
    # a varying kernel: the union over the domain
    wide = gaussian_kernel((50, 50), 21, 2.0, 3.0, 0.0)
    k_left, k_right = wide.kernel_at(-0.5, 24.5), wide.kernel_at(49.5, 24.5)
    foot = kernel_footprint(wide, threshold=1e-3)
    assert np.all(foot[np.abs(k_right) >= 1e-3 * np.abs(k_right).max()])
    assert foot.sum() > np.sum(np.abs(k_left) >= 1e-3 * np.abs(k_left).max())


# ----------------------------------------------------------------------------- variance
@pytest.mark.parametrize("fill", ["reflect", "zero"])
def test_variance_equals_brute_force(fill):
    shape = (40, 50)
    kernel = random_kernel(shape, 7, 7, seed=13)
    variance = np.random.default_rng(14).uniform(0.5, 2.0, size=shape)
    exact = brute_force(variance, kernel, fill, square=True)
    res = convolve_variance(variance, kernel, rtol=0.0, fill=fill, dtype=np.float64)
    np.testing.assert_allclose(res, exact, rtol=1e-12)
    res = convolve_variance(variance, kernel, fill=fill, dtype=np.float64, chunk=9)
    np.testing.assert_allclose(res, exact, rtol=1e-3)


def test_compressed_variance_of_smooth_kernel():
    shape = (48, 56)
    kernel = gaussian_kernel(shape, 9, 1.5, 1.0, 0.6)
    variance = np.random.default_rng(15).uniform(0.5, 2.0, size=shape)
    exact = brute_force(variance, kernel, "reflect", square=True)
    n_products = kernel.n_terms * (kernel.n_terms + 1) // 2
    full = variance_rank(kernel, rtol=0.0, shape=shape)
    assert full <= 15 < n_products  # K^2 weights are polynomials of degree <= 4
    # documented bound: |dVar(x)| <= Lambda rtol ||Q||_F ||V_x||_2, Q = K^2 sampled on
    # 5 x 5 Chebyshev-Lobatto points over the domain (here the image's pixel edges)
    nodes = np.cos(np.pi * np.arange(5) / 4)
    gx, gy = np.meshgrid(27.5 + 28.0 * nodes, 23.5 + 24.0 * nodes)
    q_norm = np.linalg.norm(kernel.kernels_at(gx, gy) ** 2)
    lebesgue = (1.0 + 2.0 / np.pi * np.log(4.0)) ** 2
    padded = np.pad(variance, 4, mode="reflect")
    v_norm = np.sqrt(ndimage.uniform_filter(padded**2, size=9, mode="constant") * 81)[4:-4, 4:-4]
    errors = []
    for rtol in (1e-2, 1e-3, 1e-4, 1e-6):
        rank = variance_rank(kernel, rtol=rtol, shape=shape)
        res = convolve_variance(variance, kernel, rtol=rtol, dtype=np.float64)
        assert np.all(np.abs(res - exact) <= lebesgue * rtol * q_norm * v_norm)
        errors.append(np.max(np.abs(res / exact - 1.0)))
        assert errors[-1] < 10.0 * rtol
        assert rank < full
    assert errors == sorted(errors, reverse=True)
    assert variance_rank(kernel, shape=shape) <= kernel.n_terms


def test_rank_compression_reduces_the_number_of_transforms(monkeypatch):
    shape = (64, 64)
    kernel = gaussian_kernel(shape, 11, 2.0, 1.0, 0.5)
    calls = {"ifft": 0, "irfft": 0}

    def counting(name):
        original = getattr(sfft, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        return wrapper

    for name in calls:
        monkeypatch.setattr(cv.sfft, name, counting(name))
    convolve_variance(np.ones(shape), kernel, chunk=64)
    rank = variance_rank(kernel, shape=shape)
    assert calls["ifft"] == calls["irfft"] == rank < kernel.n_terms * (kernel.n_terms + 1) // 2
    # the image: one inverse along y per term, one along x per distinct x factor
    calls.update(ifft=0, irfft=0)
    convolve_image(np.ones(shape), kernel, chunk=64)
    assert calls["ifft"] == kernel.n_terms and calls["irfft"] == kernel.order + 1


def test_variance_of_convolved_noise_monte_carlo():
    # spatially varying kernel and variance: empirical variance over realisations
    shape = (40, 40)
    kernel = gaussian_kernel(shape, 7, 1.5, 1.5, 1.0)
    yy, xx = np.mgrid[0:40, 0:40]
    variance = 1.0 + 0.05 * xx + 0.5 * np.sin(yy / 7.0) ** 2
    rng = np.random.default_rng(16)
    n_real = 400
    outputs = np.empty((n_real,) + shape)
    for i in range(n_real):
        noise = rng.normal(size=shape) * np.sqrt(variance)
        outputs[i] = convolve_image(noise, kernel, dtype=np.float64).data
    predicted = convolve_variance(variance, kernel, dtype=np.float64)
    inner = (slice(3, -3), slice(3, -3))
    ratio = outputs.var(axis=0, ddof=1)[inner] / predicted[inner]
    # per-pixel relative error sqrt(2 / (n - 1)) = 7 %
    z = (ratio - 1.0) / np.sqrt(2.0 / (n_real - 1))
    assert abs(ratio.mean() - 1.0) < 0.02
    assert 0.8 < z.std() < 1.2 and np.abs(z).max() < 5.0
    # the prediction varies across the field by far more than the statistical error
    assert predicted[inner].max() / predicted[inner].min() > 1.5


def test_variance_of_convolved_noise_constant_kernel():
    rng = np.random.default_rng(17)
    sigma = 1.7
    psf = gaussian_psf(15, 3.0)
    out = convolve_image(rng.normal(scale=sigma, size=(512, 512)), psf, dtype=np.float64).data
    var = convolve_variance(np.full((512, 512), sigma**2), psf, dtype=np.float64)
    np.testing.assert_allclose(var, sigma**2 * np.sum(psf**2), rtol=1e-12)
    # about 512^2 / (4 pi sigma_K^2) ~ 3e4 independent pixels: 1 % standard error
    assert out[7:-7, 7:-7].var() == pytest.approx(var[0, 0], rel=0.04)


def test_variance_bad_pixels_and_sign():
    shape = (40, 50)
    kernel = random_kernel(shape, 7, 7, seed=18)
    rng = np.random.default_rng(19)
    variance = rng.uniform(0.0, 1.0, size=shape)
    variance[::3, ::4] = 0.0  # zero variance pixels are valid
    variance[10, 10] = np.nan
    variance[30, 40] = -1.0  # negative: treated as bad
    image = rng.normal(size=shape)
    mask = np.zeros(shape, dtype=bool)
    mask[10, 10] = mask[30, 40] = True
    res = convolve_variance(variance, kernel, dtype=np.float64)
    img = convolve_image(image, kernel, mask=mask)
    np.testing.assert_array_equal(np.isnan(res), img.bad)
    assert np.all(res[~img.bad] >= 0.0)
    # a kernel made only of opposite lobes still gives a non-negative variance
    dipole = np.zeros((3, 3))
    dipole[1, 0], dipole[1, 2] = 1.0, -1.0
    flat = convolve_variance(np.ones(shape), dipole, dtype=np.float64)
    np.testing.assert_allclose(flat, 2.0, rtol=1e-12)


# ----------------------------------------------------------------------------- row bands
def _pickling_mapper(calls):
    """A mapper that sends every item through pickle (as to another process) and
    runs the tasks in reverse order."""

    def mapper(fn, items):
        calls.append(len(items))
        sent = [pickle.loads(pickle.dumps(item)) for item in items]
        return [fn(item) for item in sent[::-1]][::-1]

    return mapper


@pytest.mark.parametrize("fill", ["reflect", "zero"])
@pytest.mark.parametrize(
    ("shape", "h", "chunk", "band_rows"),
    [((300, 64), 11, None, 40), ((140, 50), 7, 13, 30), ((90, 60), 9, 17, 1)],
)
def test_row_bands_give_the_bits_of_the_whole_image(fill, shape, h, chunk, band_rows):
    kernel = random_kernel(shape, h, h + 2, seed=5)
    rng = np.random.default_rng(6)
    image = rng.normal(size=shape).astype(np.float32)
    image[5, 7] = np.nan
    mask = rng.uniform(size=shape) < 0.002
    variance = rng.uniform(0.5, 2.0, size=shape)
    n_bands = len(plan_bands(shape[0], h, band_rows, chunk=chunk))
    assert n_bands > 1
    for dtype in (np.float32, np.float64) if image.size < 6000 else (np.float32,):
        kw = dict(mask=mask, fill=fill, dtype=dtype, chunk=chunk)
        calls = []
        whole = convolve_image(image, kernel, **kw)
        banded = convolve_image(
            image, kernel, **kw, mapper=_pickling_mapper(calls), band_rows=band_rows
        )
        here = convolve_image(image, kernel, **kw, band_rows=band_rows)  # bands, no mapper
        np.testing.assert_array_equal(banded.data, whole.data)
        np.testing.assert_array_equal(here.data, whole.data)
        np.testing.assert_array_equal(banded.bad, whole.bad)
        np.testing.assert_array_equal(banded.edge, whole.edge)
        var_whole = convolve_variance(variance, kernel, **kw)
        var_banded = convolve_variance(
            variance, kernel, **kw, mapper=_pickling_mapper(calls), band_rows=band_rows
        )
        np.testing.assert_array_equal(var_banded, var_whole)
        assert calls == [n_bands, n_bands]
    if image.size > 6000:
        return
    # and the bands are the exact convolution
    ref = brute_force(np.nan_to_num(image, nan=0.0).astype(np.float64) * ~mask, kernel, fill)
    ok = ~banded.bad
    np.testing.assert_allclose(banded.data[ok], ref[ok], rtol=0, atol=1e-9)


def test_default_bands_with_a_mapper():
    shape = (700, 40)
    kernel = random_kernel(shape, 9, 9, seed=8)
    image = np.random.default_rng(9).normal(size=shape)
    calls = []
    res = convolve_image(image, kernel, dtype=np.float64, mapper=_pickling_mapper(calls))
    np.testing.assert_array_equal(res.data, convolve_image(image, kernel, dtype=np.float64).data)
    assert calls == [len(plan_bands(shape[0], 9, band_rows_for(shape[0], 9, 2)))] == [3]


def test_band_plans():
    chunk = row_chunk(1000, 21)
    assert chunk == sfft.next_fast_len(256) - 20 and row_chunk(100, 21) == 100
    bands = plan_bands(1000, 21, 300)
    assert bands[0] == (0, chunk) and bands[-1][1] == 1000
    assert plan_bands(1000, 21, 400)[0] == (0, 2 * chunk)
    assert all(b[0] == a[1] for a, b in zip(bands, bands[1:], strict=False))
    assert all(r0 % chunk == 0 for r0, _ in bands)
    assert plan_bands(50, 5, 7, chunk=10) == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50)]
    # about 4 bands per task slot, each at least 4 kernel heights
    assert band_rows_for(4096, 21, 4) == 256
    assert band_rows_for(4096, 101, 4) == 404
    assert band_rows_for(10, 3, 1) == 12
    for bad in (0, -3, 2.5, None, True):
        with pytest.raises(ValueError, match="band_rows"):
            plan_bands(100, 5, bad)
    with pytest.raises(ValueError, match="band_rows"):
        convolve_image(np.ones((20, 20)), np.ones((3, 3)), band_rows=0)
    with pytest.raises(ValueError, match="mapper"):
        convolve_image(np.ones((20, 20)), np.ones((3, 3)), mapper="dask")

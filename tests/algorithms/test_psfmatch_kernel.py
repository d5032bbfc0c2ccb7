"""Tests of the PSF-matching kernel solution (bases, least squares, Fourier, spatial)."""

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.signal import fftconvolve

from stmatch.algorithms.chebyshev import chebyshev_basis, image_domain
from stmatch.algorithms.psf import gaussian_psf, moffat_psf
from stmatch.algorithms.psfmatch_basis import (
    MIN_MATCH_SIGMA,
    KernelBasis,
    alard_lupton_basis,
    alard_lupton_sigmas,
    delta_function_basis,
)
from stmatch.algorithms.psfmatch_kernel import (
    KernelFit,
    SpatialKernelFit,
    cell_centres,
    hann_window,
    make_window,
    pad_psf,
    psf_padding,
    solve_kernel,
    solve_spatial_kernel,
    top_hat_window,
    tukey_window,
)

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def residual_full(kernel, source, target, kernel_sum=1.0):
    """K * S - kappa T over the whole linear-convolution support."""
    h = kernel.shape[0] // 2
    return fftconvolve(source, kernel, mode="full") - kernel_sum * np.pad(target, h)


def aniano_d(kernel, source, target, kernel_sum=1.0):
    return float(np.abs(residual_full(kernel, source, target, kernel_sum)).sum())


def w_minus(kernel):
    return float(0.5 * (np.abs(kernel) - kernel).sum())


def analytic_kernel(fwhm_s, fwhm_t, size=21):
    """Point-sampled Gaussian of sigma_k = sqrt(sigma_t^2 - sigma_s^2) (unit sum)."""
    sk = math.sqrt((fwhm_t / FWHM_PER_SIGMA) ** 2 - (fwhm_s / FWHM_PER_SIGMA) ** 2)
    return gaussian_psf(size, sk * FWHM_PER_SIGMA, integrate=False)


def scaled_al_basis(fwhm_s, fwhm_t, size=21, n_gauss=3, degrees=(4, 2, 2)):
    sig = alard_lupton_sigmas(n_gauss=n_gauss, fwhm_source=fwhm_s, fwhm_target=fwhm_t)
    return alard_lupton_basis(size, sigmas=sig, degrees=degrees)


# ----------------------------------------------------------------------------- bases
def test_alard_lupton_basis_structure_and_span():
    b = alard_lupton_basis(21)
    assert b.kind == "alard_lupton" and b.n == 27 and b.images.shape == (27, 21, 21)
    assert b.sigmas == (0.7, 1.5, 3.0) and b.degrees == (4, 2, 2) and b.penalty is None
    sums = b.images.reshape(27, -1).sum(axis=1)
    assert sums[0] == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_allclose(sums[1:], 0.0, atol=1e-14)
    assert not b.images.flags.writeable
    # the basis spans exactly the raw Gaussian x polynomial images
    u = np.arange(21) - 10.0
    raw = []
    for s, d in zip(b.sigmas, b.degrees, strict=True):
        g = np.exp(-0.5 * (u / s) ** 2)
        for i in range(d + 1):
            for j in range(d + 1 - i):
                raw.append((np.outer(g * u**j, g * u**i)).ravel())
    raw = np.array(raw).T
    mat = b.images.reshape(27, -1).T
    assert np.linalg.matrix_rank(mat) == 27
    coef = np.linalg.lstsq(mat, raw, rcond=None)[0]
    assert np.abs(mat @ coef - raw).max() < 1e-10 * np.abs(raw).max()
    # the first image is the first Gaussian with unit sum
    g0 = np.exp(-0.5 * (u / 0.7) ** 2)
    np.testing.assert_allclose(b.images[0], np.outer(g0, g0) / np.outer(g0, g0).sum(), atol=1e-14)
    # orthonormalised before the sum constraints: far better conditioned than the raw set
    assert np.linalg.cond(mat) < 1e3 and np.linalg.cond(mat) < 0.1 * np.linalg.cond(raw)
    assert alard_lupton_basis(15, sigmas=(1.0, 2.0), degrees=(3, 0)).n == 10 + 1


def test_alard_lupton_sigmas():
    sig = alard_lupton_sigmas(fwhm_source=2.0, fwhm_target=3.5)
    sm = math.sqrt(3.5**2 - 2.0**2) / FWHM_PER_SIGMA
    assert sig == pytest.approx((sm / 2, sm, 2 * sm), rel=1e-14)
    sig = alard_lupton_sigmas(n_gauss=4, gauss_beta=3.0, fwhm_source=2.0, fwhm_target=5.0)
    sm = math.sqrt(5.0**2 - 2.0**2) / FWHM_PER_SIGMA
    assert sig == pytest.approx(tuple(sm * 3.0 ** (i - 1.5) for i in range(4)), rel=1e-14)
    # target narrower than the source: the matching width is floored
    sig = alard_lupton_sigmas(fwhm_source=4.0, fwhm_target=3.0)
    assert sig[1] == pytest.approx(MIN_MATCH_SIGMA)
    assert alard_lupton_sigmas(scale_by_fwhm=False) == (0.7, 1.5, 3.0)
    assert alard_lupton_sigmas(n_gauss=2, sig_gauss=(1, 2), scale_by_fwhm=False) == (1.0, 2.0)
    with pytest.raises(ValueError, match="n_gauss"):
        alard_lupton_sigmas(n_gauss=2, scale_by_fwhm=False)
    with pytest.raises(ValueError, match="fwhm_source and fwhm_target"):
        alard_lupton_sigmas(fwhm_source=2.0)
    with pytest.raises(ValueError, match="fwhm_target"):
        alard_lupton_sigmas(fwhm_source=2.0, fwhm_target=-1.0)
    with pytest.raises(ValueError, match="n_gauss"):
        alard_lupton_sigmas(n_gauss=0, fwhm_source=2.0, fwhm_target=3.0)


def test_delta_function_basis_and_laplacian_penalty():
    b = delta_function_basis(7)
    assert b.kind == "delta_function" and b.n == 49 and b.penalty.shape == (49, 49)
    assert b.images[0, 3, 3] == 1.0 and np.count_nonzero(b.images[0]) == 1
    rng = np.random.default_rng(3)
    a = rng.normal(size=49)
    k = b.kernel(a)
    assert k.sum() == pytest.approx(a[0], abs=1e-12)
    # coefficient i >= 1 is the kernel value of the i-th non-centre pixel
    others = np.delete(np.arange(49), 24)
    np.testing.assert_allclose(k.ravel()[others], a[1:], atol=1e-14)
    lap = ndimage.convolve(k, [[0, -1, 0], [-1, 4, -1], [0, -1, 0]], mode="constant")
    assert a @ b.penalty @ a == pytest.approx((lap**2).sum(), rel=1e-12)


def test_basis_validation():
    with pytest.raises(ValueError, match="odd"):
        alard_lupton_basis(20)
    with pytest.raises(ValueError, match="odd"):
        delta_function_basis(1)
    with pytest.raises(ValueError, match="same, non-zero length"):
        alard_lupton_basis(21, sigmas=(1.0, 2.0), degrees=(2,))
    with pytest.raises(ValueError, match="positive"):
        alard_lupton_basis(21, sigmas=(1.0, 0.0), degrees=(2, 2))
    with pytest.raises(ValueError, match="sum"):
        KernelBasis(np.ones((2, 5, 5)), "alard_lupton")
    with pytest.raises(ValueError, match="kind"):
        KernelBasis(alard_lupton_basis(5).images, "pixels")


# ------------------------------------------------------------------- single kernels
def test_gaussian_to_wider_gaussian():
    s, t = gaussian_psf(41, 2.0), gaussian_psf(41, 3.5)
    exact = analytic_kernel(2.0, 3.5)
    fit = solve_kernel(s, t, basis=scaled_al_basis(2.0, 3.5))
    assert isinstance(fit, KernelFit) and fit.kernel.shape == (21, 21)
    assert fit.padded_size == 61 and fit.coefficients.shape == (27,)
    assert fit.coefficients[0] == 1.0 and 1 < fit.condition_number < 1e8
    assert aniano_d(fit.kernel, s, t) < 1e-4
    # the analytic kernel lies in the span of this basis (its middle Gaussian): the
    # least-squares fit can only do better in the L2 norm it minimises
    l2 = np.sqrt((residual_full(fit.kernel, s, t) ** 2).sum())
    assert l2 <= np.sqrt((residual_full(exact, s, t) ** 2).sum())
    # at this sampling the point-sampled Gaussian is exact only to ~5e-5 in D (aliasing),
    # so the kernels agree to ~1e-3 of the peak; the pixel-integrated one is far worse
    assert np.abs(fit.kernel - exact).max() < 2e-3 * exact.max()
    assert aniano_d(exact, s, t) < 1e-4 < 0.01 < aniano_d(gaussian_psf(21, 2.872), s, t)
    four = solve_kernel(s, t, method="fourier", regularization=1e-8)
    assert math.isnan(four.condition_number) and four.coefficients is None
    assert aniano_d(four.kernel, s, t) < 1e-4
    assert np.abs(four.kernel - exact).max() < 3e-3 * exact.max()


def test_gaussian_kernel_matches_analytic_when_well_sampled():
    s, t = gaussian_psf(41, 3.0), gaussian_psf(41, 5.0)
    exact = analytic_kernel(3.0, 5.0)
    fit = solve_kernel(s, t, basis=scaled_al_basis(3.0, 5.0))
    assert np.abs(fit.kernel - exact).max() < 1e-5 * exact.max()
    four = solve_kernel(s, t, method="fourier", regularization=1e-10)
    assert np.abs(four.kernel - exact).max() < 1e-5 * exact.max()


@pytest.mark.parametrize("method", ["alard_lupton", "fourier", "delta_function"])
def test_moffat_to_gaussian(method):
    # the Moffat wings reach the stamp edge: only a kernel as large as the stamp can
    # remove them, and the AL basis needs Gaussians as wide as the wings
    s, t = moffat_psf(41, 2.5, beta=2.5), gaussian_psf(41, 4.5)
    kw = {"regularization_lambda": 1e-3}
    if method == "alard_lupton":
        kw["basis"] = scaled_al_basis(2.5, 4.5, 41, 6, (4, 4, 4, 2, 2, 2))
    fit = solve_kernel(s, t, method=method, kernel_size=41, **kw)
    assert fit.padded_size == 81
    assert w_minus(fit.kernel) < 0.3
    assert aniano_d(fit.kernel, s, t) < 1e-3
    # a 21-px kernel cannot: about 1 % of the flux is in the wings beyond 10 px
    if method == "alard_lupton":
        kw["basis"] = scaled_al_basis(2.5, 4.5, 21, 6, (4, 4, 4, 2, 2, 2))
    small = solve_kernel(s, t, method=method, **kw)
    assert aniano_d(small.kernel, s, t) > 3e-3


@pytest.mark.parametrize("method", ["alard_lupton", "fourier", "delta_function"])
def test_kernel_sum_is_exact_and_linear(method):
    s, t = moffat_psf(31, 2.5, beta=3.0, center=(15.2, 14.9)), gaussian_psf(31, 4.0)
    one = solve_kernel(s, t, method=method, kernel_size=15)
    fit = solve_kernel(s, t, method=method, kernel_size=15, kernel_sum=0.7)
    assert fit.kernel.sum() == pytest.approx(0.7, rel=1e-12)
    assert one.kernel.sum() == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(fit.kernel, 0.7 * one.kernel, rtol=0, atol=1e-12)
    if method != "fourier":
        assert fit.coefficients[0] == 0.7


def brute_force(sources, targets, weights, basis, kernel_sum, lam):
    """Explicit design-matrix least squares with the first coefficient fixed."""
    m = sources.shape[0]
    nt = weights.shape[0]
    k = basis.size
    rows, rhs, pen_rows, pen_rhs = [], [], [], []
    lap = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], float)
    for c in range(m):
        conv = np.array([fftconvolve(sources[c], b, mode="full").ravel() for b in basis.images])
        col = (conv[1:, None, :] * weights[None, :, c, None]).reshape(-1, conv.shape[1])
        rows.append(col.T)
        rhs.append(kernel_sum * (np.pad(targets[c], k // 2).ravel() - conv[0]))
        lb = np.array([ndimage.convolve(b, lap, mode="constant").ravel() for b in basis.images])
        pcol = (lb[1:, None, :] * weights[None, :, c, None]).reshape(-1, lb.shape[1])
        pen_rows.append(pcol.T)
        pen_rhs.append(-kernel_sum * lb[0])
    x, y = np.vstack(rows), np.concatenate(rhs)
    if lam > 0:
        p, q = np.vstack(pen_rows), np.concatenate(pen_rhs)
        scale = math.sqrt(lam * np.trace(x.T @ x) / np.trace(p.T @ p))
        x, y = np.vstack([x, scale * p]), np.concatenate([y, scale * q])
    sol = np.linalg.lstsq(x, y, rcond=None)[0].reshape(basis.n - 1, nt)
    return np.vstack([np.r_[kernel_sum, np.zeros(nt - 1)], sol])


@pytest.mark.parametrize("kind", ["alard_lupton", "delta_function"])
def test_fourier_normal_equations_equal_brute_force_least_squares(kind):
    rng = np.random.default_rng(11)
    xs, ys = rng.uniform(0, 200, 7), rng.uniform(0, 100, 7)
    fw = 2.0 + 0.01 * xs + 0.005 * ys
    sources = np.stack([moffat_psf((13, 11), f, beta=3.0, center=(6.1, 4.8)) for f in fw])
    targets = np.stack([gaussian_psf(13, 4.0 + 0.002 * x) for x in xs])
    if kind == "alard_lupton":
        basis = alard_lupton_basis(7, sigmas=(0.8, 1.6), degrees=(2, 1))
    else:
        basis = delta_function_basis(5)
    domain = (0.0, 200.0, 0.0, 100.0)
    fit = solve_spatial_kernel(
        sources, targets, xs, ys, order=1, domain=domain, method=kind, kernel_size=basis.size,
        basis=basis, kernel_sum=0.8, regularization_lambda=0.05,
    )  # fmt: skip
    weights = chebyshev_basis(xs, ys, 1, domain)
    padded = np.stack([pad_psf(p, 13) for p in sources])
    ref = brute_force(padded, targets, weights, basis, 0.8, 0.05 if kind != "alard_lupton" else 0)
    assert fit.coefficients.shape == (basis.n, 3)
    np.testing.assert_allclose(fit.coefficients, ref, rtol=0, atol=1e-8 * np.abs(ref).max())
    # cell kernels are the spatial model at the cells
    for c in range(7):
        np.testing.assert_allclose(
            fit.cell_kernels[c], fit.kernel.kernel_at(xs[c], ys[c]), rtol=0, atol=1e-14
        )
    # single kernel: same as the brute force with one constant term
    single = solve_kernel(sources[0], targets[0], method=kind, kernel_size=basis.size, basis=basis)
    ref1 = brute_force(
        padded[:1], targets[:1], np.ones((1, 1)), basis, 1.0, 0.2 * (kind != "alard_lupton")
    )
    np.testing.assert_allclose(single.coefficients, ref1[:, 0], atol=1e-8 * np.abs(ref1).max())


def test_delta_function_regularisation():
    s, t = gaussian_psf(31, 2.0), gaussian_psf(31, 3.5)
    fit = solve_kernel(s, t, method="delta_function", kernel_size=15, regularization_lambda=1e-4)
    assert aniano_d(fit.kernel, s, t) < 1e-4
    assert np.abs(fit.kernel - analytic_kernel(2.0, 3.5, 15)).max() < 5e-3 * fit.kernel.max()
    norms, ds = [], []
    for lam in (1e-3, 1e-2, 0.1, 1.0):
        k = solve_kernel(
            s, t, method="delta_function", kernel_size=15, regularization_lambda=lam
        ).kernel
        lap = ndimage.convolve(k, [[0, -1, 0], [-1, 4, -1], [0, -1, 0]], mode="constant")
        norms.append((lap**2).sum())
        ds.append(aniano_d(k, s, t))
    assert all(a > b for a, b in zip(norms, norms[1:], strict=False))
    assert all(a < b for a, b in zip(ds, ds[1:], strict=False))


def test_unequal_stamp_sizes_are_padded():
    s, t = gaussian_psf(21, 2.0), gaussian_psf(41, 3.5)
    a = solve_kernel(s, t, kernel_size=15)
    b = solve_kernel(pad_psf(s, 41), t, kernel_size=15)
    np.testing.assert_allclose(a.kernel, b.kernel, atol=1e-13)
    assert a.padded_size == b.padded_size == 55
    c = solve_kernel(s, t, kernel_size=15, method="fourier")
    d = solve_kernel(pad_psf(s, 41), t, kernel_size=15, method="fourier")
    np.testing.assert_allclose(c.kernel, d.kernel, atol=1e-13)


def test_inputs_not_mutated():
    s, t = gaussian_psf(21, 2.0) * 3.0, gaussian_psf(21, 3.0)
    s0, t0 = s.copy(), t.copy()
    solve_kernel(s, t, kernel_size=9)
    solve_spatial_kernel(np.stack([s] * 3), t, [0, 5, 9], [0, 9, 3], order=0, domain=(0, 9, 0, 9))
    assert np.array_equal(s, s0) and np.array_equal(t, t0)


# ------------------------------------------------------------------------- spatial
def fwhm_field(x, y):
    u, v = (2 * np.asarray(x) - 1023) / 1024, (2 * np.asarray(y) - 1023) / 1024
    return 2.2 + 0.35 * u + 0.2 * v + 0.25 * u * v + 0.2 * u * u


@pytest.fixture(scope="module")
def field():
    cx, cy = cell_centres((1024, 1024), 128)
    sources = np.stack([gaussian_psf(31, f) for f in fwhm_field(cx, cy)])
    rng = np.random.default_rng(2024)
    px, py = rng.uniform(0, 1023, 50), rng.uniform(0, 1023, 50)
    return cx, cy, sources, gaussian_psf(31, 4.0), px, py


@pytest.mark.parametrize("method", ["alard_lupton", "fourier"])
def test_spatial_residual_decreases_with_order(field, method):
    cx, cy, sources, target, px, py = field
    dom = image_domain((1024, 1024))
    basis = scaled_al_basis(2.2, 4.0) if method == "alard_lupton" else None
    off_grid = [gaussian_psf(31, f) for f in fwhm_field(px, py)]
    means = []
    for order in range(4):
        fit = solve_spatial_kernel(
            sources, target, cx, cy, order=order, domain=dom, method=method, basis=basis,
            kernel_sum=0.7,
        )  # fmt: skip
        assert isinstance(fit, SpatialKernelFit) and fit.method == method
        assert fit.kernel.order == order and fit.cell_kernels.shape == (64, 21, 21)
        kernels = fit.kernel.kernels_at(px, py)
        d = [aniano_d(k, s, target, 0.7) for k, s in zip(kernels, off_grid, strict=True)]
        means.append(np.mean(d))
        # sums are exactly kernel_sum everywhere, also outside the image
        grid = np.linspace(-300, 1300, 9)
        sums = fit.kernel.sum_at(grid[:, None], grid[None, :])
        np.testing.assert_allclose(sums, 0.7, rtol=1e-12)
    assert all(a > b for a, b in zip(means, means[1:], strict=False)), means
    assert means[2] < 5e-3 and means[3] < 2e-3


def test_spatial_basis_structure(field):
    cx, cy, sources, target, _, _ = field
    dom = image_domain((1024, 1024))
    fit = solve_spatial_kernel(sources, target, cx, cy, order=2, domain=dom, kernel_sum=0.7)
    assert fit.basis.n == 27 and fit.coefficients.shape == (27, 6)
    assert fit.coefficients[0, 0] == 0.7 and np.all(fit.coefficients[0, 1:] == 0)
    tk = fit.kernel.term_kernels
    assert tk[0].sum() == pytest.approx(0.7, rel=1e-13)
    np.testing.assert_allclose(tk[1:].sum(axis=(1, 2)), 0.0, atol=1e-14)
    # a constant field gives the single-cell kernel and no spatial variation
    const = solve_spatial_kernel(
        np.repeat(sources[:1], 64, axis=0), target, cx, cy, order=2, domain=dom
    )
    single = solve_kernel(sources[0], target)
    np.testing.assert_allclose(const.kernel.term_kernels[0], single.kernel, atol=1e-9)
    assert np.abs(const.kernel.term_kernels[1:]).max() < 1e-9
    # a per-cell target array equal to the constant target gives the same answer
    rep = solve_spatial_kernel(
        sources, np.repeat(target[None], 64, axis=0), cx, cy, order=2, domain=dom, kernel_sum=0.7
    )
    np.testing.assert_allclose(rep.kernel.term_kernels, fit.kernel.term_kernels, atol=1e-12)


def test_spatial_delta_function_sum(field):
    cx, cy, sources, target, _, _ = field
    fit = solve_spatial_kernel(
        sources[::4], target, cx[::4], cy[::4], order=1, domain=image_domain((1024, 1024)),
        method="delta_function", kernel_size=9, kernel_sum=0.7,
    )  # fmt: skip
    assert fit.coefficients.shape == (81, 3) and fit.basis.kind == "delta_function"
    np.testing.assert_allclose(fit.kernel.sum_at(cx, cy), 0.7, rtol=1e-12)


def test_too_few_cells():
    s = np.stack([gaussian_psf(21, 2.0)] * 5)
    with pytest.raises(ValueError, match=r"5 cells .* order 2, which has 6 terms"):
        solve_spatial_kernel(s, gaussian_psf(21, 3.0), np.arange(5), np.arange(5), order=2,
                             domain=(0, 10, 0, 10))  # fmt: skip


def test_cell_centres():
    x, y = cell_centres((1024, 1024), 128)
    assert x.size == 64
    np.testing.assert_allclose(np.unique(x), 63.5 + 128 * np.arange(8))
    x, y = cell_centres((1000, 300), 128)
    assert np.unique(y).size == 8 and np.unique(x).size == 3
    np.testing.assert_allclose(np.unique(y), (np.arange(8) + 0.5) * 125 - 0.5)
    np.testing.assert_allclose(np.unique(x), (np.arange(3) + 0.5) * 100 - 0.5)
    assert y[0] == y[1] and x[0] != x[1]  # row-major, x along axis 1
    with pytest.raises(ValueError, match="cell_size"):
        cell_centres((100, 100), 0)


# ------------------------------------------------------------------- LSST edge cases
def test_psf_padding_rules():
    assert psf_padding(21, 21) == 41  # whole PSF inside the fully covered region
    assert psf_padding(11, 21) == 31  # next odd size >= 1.4 * 21 = 29.4
    assert psf_padding(5, 21) == 31
    assert psf_padding(41, 21) == 61
    assert psf_padding(45, 31) == 75
    assert psf_padding(21, 11, 4) == 25
    assert psf_padding(41, 21, 0) == 41  # kernel covers a 21-px region: just enough
    assert psf_padding(21, 21, 0, method="fourier") == 21
    with pytest.raises(ValueError, match="even"):
        psf_padding(21, 21, 3)
    with pytest.raises(ValueError, match="even"):
        psf_padding(21, 21, -2)
    with pytest.raises(ValueError, match="pad"):
        psf_padding(21, 21, 0)
    with pytest.raises(ValueError, match="pad"):
        psf_padding(39, 21, 0)
    with pytest.raises(ValueError, match="pad"):
        psf_padding(15, 21, 4, method="fourier")
    with pytest.raises(ValueError, match="odd"):
        psf_padding(20, 21)


def test_solve_kernel_padding_errors_and_sizes():
    s, t = gaussian_psf(21, 2.0), gaussian_psf(21, 3.0)
    with pytest.raises(ValueError, match="too large"):
        solve_kernel(s, t, kernel_size=21, pad_psf_by=0)
    with pytest.raises(ValueError, match="even"):
        solve_kernel(s, t, kernel_size=11, pad_psf_by=1)
    assert solve_kernel(s, t, kernel_size=21).padded_size == 41
    assert solve_kernel(s, t, kernel_size=11, pad_psf_by=0).padded_size == 21
    assert solve_kernel(s, t, kernel_size=11, pad_psf_by=6).padded_size == 27
    assert solve_kernel(s, t, kernel_size=21, pad_psf_by=0, method="fourier").padded_size == 21


def test_pad_psf():
    p = gaussian_psf((5, 3), 1.5)
    out = pad_psf(p, 9)
    assert out.shape == (9, 9) and out[4, 4] == p[2, 1] and out.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="larger"):
        pad_psf(p, 3)
    with pytest.raises(ValueError, match="odd"):
        pad_psf(p, 8)
    with pytest.raises(ValueError, match="odd"):
        pad_psf(np.ones((4, 5)), 9)


# --------------------------------------------------------------------------- windows
def test_windows():
    h = hann_window(11)
    assert h[5, 5] == 1.0 and h[5, 0] == pytest.approx(0.0, abs=1e-15)
    assert h[5, 3] == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 5)))
    t = tukey_window(21, 0.4)
    assert np.all(t[10, 4:17] == 1.0) and t[10, 0] == pytest.approx(0.0, abs=1e-15)
    th = top_hat_window(21, 0.5)
    assert th[10, 5] == 1.0 and th[10, 4] == 0.0
    np.testing.assert_array_equal(make_window(("tukey", 0.4), (21, 21)), t)
    assert make_window(None, (5, 5)) is None
    np.testing.assert_array_equal(make_window(lambda s: np.ones(s), (5, 5)), 1.0)
    with pytest.raises(ValueError, match="unknown window"):
        make_window("gauss", (5, 5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_window(lambda s: 2 * np.ones(s), (5, 5))
    with pytest.raises(ValueError, match="alpha"):
        make_window(("tukey", 1.5), (5, 5))
    with pytest.raises(ValueError, match="no parameter"):
        make_window(("hann", 0.5), (5, 5))


def test_fourier_window_and_penalty_smooth_the_kernel():
    s, t = moffat_psf(31, 2.5, beta=2.5), gaussian_psf(31, 4.5)
    plain = solve_kernel(s, t, method="fourier", regularization=1e-8).kernel
    lap = solve_kernel(s, t, method="fourier", regularization=1e-2, penalty="laplacian").kernel
    win = solve_kernel(s, t, method="fourier", regularization=1e-8, window="hann").kernel

    def rough(k):
        return (ndimage.convolve(k, [[0, -1, 0], [-1, 4, -1], [0, -1, 0]]) ** 2).sum()

    assert rough(lap) < rough(plain) and rough(win) < rough(plain)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("source", "kwargs", "match"),
    [
        (np.ones((20, 21)), {}, "odd"),
        (np.full((21, 21), np.nan), {}, "non-finite"),
        (np.zeros((21, 21)), {}, "non-positive sum"),
        (np.ones(21), {}, "2-D"),
        (None, {"kernel_size": 20}, "kernel_size"),
        (None, {"kernel_size": 1}, "kernel_size"),
        (None, {"kernel_size": 9.5}, "kernel_size"),
        (None, {"method": "magic"}, "unknown method"),
        (None, {"method": "fourier", "window": "gauss"}, "unknown window"),
        (None, {"window": "gauss"}, "unknown window"),
        (None, {"method": "fourier", "penalty": "tv"}, "unknown penalty"),
        (None, {"method": "fourier", "fourier_filter": "x"}, "fourier_filter"),
        (None, {"method": "fourier", "regularization": 0}, "regularization"),
        (None, {"method": "fourier", "fourier_filter": "ratio", "regularization": 1}, "< 1"),
        (None, {"kernel_sum": 0}, "kernel_sum"),
        (None, {"kernel_sum": np.inf}, "kernel_sum"),
        (None, {"regularization_lambda": -1}, "regularization_lambda"),
        (None, {"basis": delta_function_basis(21)}, "basis was given"),
        (None, {"basis": alard_lupton_basis(15)}, "does not match"),
        (None, {"method": "fourier", "basis": alard_lupton_basis(21)}, "no kernel basis"),
        (None, {"method": "fourier", "kernel_size": 51, "pad_psf_by": 0}, "too large"),
    ],
)
def test_bad_inputs(source, kwargs, match):
    s = gaussian_psf(21, 2.0) if source is None else source
    with pytest.raises(ValueError, match=match):
        solve_kernel(s, gaussian_psf(21, 3.0), **kwargs)


def test_bad_spatial_inputs():
    s = np.stack([gaussian_psf(21, 2.0)] * 4)
    t = gaussian_psf(21, 3.0)
    kw = {"order": 0, "domain": (0, 10, 0, 10)}
    with pytest.raises(ValueError, match="cell_x"):
        solve_spatial_kernel(s, t, np.arange(3), np.arange(4), **kw)
    with pytest.raises(ValueError, match="target PSFs"):
        solve_spatial_kernel(s, np.stack([t] * 3), np.arange(4), np.arange(4), **kw)
    with pytest.raises(ValueError, match="3-D"):
        solve_spatial_kernel(t, t, [1], [1], **kw)
    bad = s.copy()
    bad[2] *= -1
    with pytest.raises(ValueError, match="stamp 2"):
        solve_spatial_kernel(bad, t, np.arange(4), np.arange(4), **kw)

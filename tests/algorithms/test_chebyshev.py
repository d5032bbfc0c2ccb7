"""Chebyshev surfaces and the spatial-kernel representation."""

import numpy as np
import pytest
from numpy.polynomial import chebyshev as npcheb
from scipy.signal import fftconvolve

from stmatch.algorithms.chebyshev import (
    chebyshev_basis,
    chebyshev_terms,
    evaluate_chebyshev,
    fit_chebyshev,
    image_domain,
    n_chebyshev_terms,
)
from stmatch.algorithms.spatial_kernel import SpatialKernel


def test_terms_are_triangular_and_ordered():
    assert chebyshev_terms(0) == [(0, 0)]
    assert chebyshev_terms(2) == [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]
    for order in range(6):
        terms = chebyshev_terms(order)
        assert len(terms) == n_chebyshev_terms(order) == (order + 1) * (order + 2) // 2
        assert all(i + j <= order for i, j in terms)
    with pytest.raises(ValueError, match="non-negative"):
        n_chebyshev_terms(-1)


def test_basis_matches_numpy_chebyshev():
    dom = image_domain((60, 100))
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-0.5, 99.5, 40), rng.uniform(-0.5, 59.5, 40)
    basis = chebyshev_basis(x, y, 3, dom)
    tx, ty = (2 * x - 99) / 100, (2 * y - 59) / 60
    for t, (i, j) in enumerate(chebyshev_terms(3)):
        ci, cj = np.zeros(i + 1), np.zeros(j + 1)
        ci[i] = cj[j] = 1
        np.testing.assert_allclose(basis[t], npcheb.chebval(tx, ci) * npcheb.chebval(ty, cj))
    # the domain's corners map onto +-1
    corner = chebyshev_basis(-0.5, 59.5, 1, dom)
    np.testing.assert_allclose(corner[:, ...].ravel(), [1.0, -1.0, 1.0])


def test_fit_recovers_surface_and_weights_matter():
    dom = image_domain((200, 300))
    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 299, 80), rng.uniform(0, 199, 80)
    coef = rng.normal(size=n_chebyshev_terms(2))
    v = evaluate_chebyshev(coef, x, y, 2, dom)
    np.testing.assert_allclose(fit_chebyshev(x, y, v, 2, dom), coef, atol=1e-12)
    # several surfaces at once
    both = fit_chebyshev(x, y, np.column_stack([v, 2 * v]), 2, dom)
    np.testing.assert_allclose(both[:, 1], 2 * coef, atol=1e-12)
    # an outlier with zero weight is ignored; with unit weight it is not
    bad = v.copy()
    bad[0] += 100.0
    w = np.ones_like(v)
    w[0] = 0.0
    np.testing.assert_allclose(fit_chebyshev(x, y, bad, 2, dom, weights=w), coef, atol=1e-10)
    assert np.abs(fit_chebyshev(x, y, bad, 2, dom) - coef).max() > 0.1


def test_fit_refuses_too_few_points():
    dom = image_domain((10, 10))
    with pytest.raises(ValueError, match="needs >= 6 points"):
        fit_chebyshev([1, 2, 3], [1, 2, 3], [0, 0, 0], 2, dom)
    with pytest.raises(ValueError, match="do not constrain"):
        # six points on one line cannot fix the y terms
        fit_chebyshev(np.arange(6.0), np.zeros(6), np.zeros(6), 2, dom)


def test_spatial_kernel_fit_and_evaluation():
    dom = image_domain((100, 120))
    rng = np.random.default_rng(7)
    terms = rng.normal(size=(3, 5, 5))
    sk = SpatialKernel(terms, 1, dom)
    x, y = rng.uniform(0, 119, 30), rng.uniform(0, 99, 30)
    ks = sk.kernels_at(x, y)
    for k in range(3):
        np.testing.assert_allclose(ks[k], sk.kernel_at(x[k], y[k]))
    refit = SpatialKernel.fit(x, y, ks, 1, dom)
    np.testing.assert_allclose(refit.term_kernels, terms, atol=1e-12)
    np.testing.assert_allclose(sk.sum_at(x, y), ks.sum(axis=(1, 2)))
    assert not sk.is_constant and sk.shape == (5, 5) and sk.n_terms == 3
    np.testing.assert_allclose(sk.scaled(2.0).kernel_at(3, 4), 2 * sk.kernel_at(3, 4))
    with pytest.raises(ValueError, match="odd"):
        SpatialKernel(np.zeros((3, 4, 5)), 1, dom)
    with pytest.raises(ValueError, match="needs 3 term kernels"):
        SpatialKernel(np.zeros((2, 5, 5)), 1, dom)


def test_term_expansion_is_exact_convolution():
    """O = sum_s B_s (Kbar_s * I) equals the per-pixel sum over K evaluated at the output."""
    dom = image_domain((30, 40))
    rng = np.random.default_rng(11)
    sk = SpatialKernel(rng.normal(size=(3, 3, 3)), 1, dom)
    img = rng.normal(size=(30, 40))
    yy, xx = np.mgrid[0:30, 0:40]
    fast = sum(
        b * fftconvolve(img, k, mode="same")
        for b, k in zip(sk.spatial_terms(xx, yy), sk.term_kernels, strict=True)
    )
    pad = np.pad(img, 1)
    y0, x0 = 12, 17
    k = sk.kernel_at(x0, y0)
    direct = sum(
        k[1 + v, 1 + u] * pad[1 + y0 - v, 1 + x0 - u] for v in (-1, 0, 1) for u in (-1, 0, 1)
    )
    assert fast[y0, x0] == pytest.approx(direct, rel=1e-12, abs=1e-12)

r"""PSF-matching kernels: solve :math:`K \ast S \approx \kappa\, T` for a kernel :math:`K`.

Given a source (exposure) PSF :math:`S` and a target PSF :math:`T`, both odd-sized
stamps with unit sum centred on their centre pixel, the kernel :math:`K` (odd
size :math:`k`, origin at its centre pixel) makes an image :math:`I` with PSF
:math:`S` look like one with PSF :math:`T`: :math:`O = K \ast I` (ordinary
convolution, ``scipy.signal.fftconvolve(I, K, mode="same")``). The kernel sum
:math:`\kappa` (``kernel_sum``) scales the result.

Basis methods (``"alard_lupton"``, ``"delta_function"``)
    :math:`K = \sum_i a_i B_i` with the bases of
    :mod:`~stmatch.algorithms.psfmatch_basis`, where :math:`\sum B_0 = 1` and
    :math:`\sum B_{i \ge 1} = 0`. The first coefficient is *fixed*,
    :math:`a_0 = \kappa`, so the kernel sum is exact. For a spatially varying
    kernel over cells :math:`c` at :math:`(x_c, y_c)` (Alard 2000, A&AS 144, 363)
    only the zero-sum terms vary, with the Chebyshev terms :math:`T_s(x, y)` of
    :mod:`~stmatch.algorithms.chebyshev`:

    .. math::

        K_c = \kappa B_0 + \sum_{i \ge 1} \sum_s a_{is}\, T_s(x_c, y_c)\, B_i,

    and the :math:`(n - 1) n_s` unknowns :math:`a_{is}` minimise, in one global
    fit over all cells,

    .. math::

        \chi^2 = \sum_c \lVert K_c \ast S_c - \kappa T_c \rVert^2
                 + \lambda' \sum_c \lVert L K_c \rVert^2 .

    The norm runs over the whole support of the linear convolution of the
    zero-padded stamps, so nothing is cut away. The regularisation term is
    present for the delta-function basis only (Becker et al. 2012, MNRAS 425,
    1341): :math:`L` is the discrete Laplacian of the kernel image
    (:attr:`KernelBasis.penalty`) and :math:`\lambda' = \lambda\, \mathrm{tr}(A) /
    \mathrm{tr}(P)` scales ``regularization_lambda`` :math:`\lambda` by the traces
    of the data normal matrix :math:`A` and of the penalty matrix :math:`P`.

    The normal equations are built in Fourier space. On a grid of
    :math:`N \ge L + k - 1` pixels (:math:`L` the stamp size) circular and linear
    correlations agree, so by Parseval the Gram matrix of shifted sources is the
    autocorrelation :math:`\langle \delta_p \ast S, \delta_q \ast S\rangle =
    \mathcal F^{-1}[|\hat S|^2](p - q)` and the right-hand side the
    cross-correlation :math:`\langle \delta_p \ast S, T \rangle =
    \mathcal F^{-1}[\hat S^* \hat T](p)`. Summed over cells with the spatial
    weights these become small matrix products,
    :math:`W_{st}(f) = \sum_c T_s(c)\, T_t(c)\, |\hat S_c(f)|^2`, followed by one
    inverse transform per pair of spatial terms; one forward transform per cell
    PSF dominates the cost. The system is scaled to unit diagonal (Jacobi) and
    solved by an eigen-decomposition (pseudo-inverse for numerically singular
    directions) or, for very large systems, by Cholesky factorisation.

Fourier method (``"fourier"``)
    Per cell, the Wiener (or thresholded ratio) kernel of
    :func:`~stmatch.algorithms.psfmatch_fourier.fourier_kernels` on the padded
    stamp grid (Aniano et al. 2011, PASP 123, 1218; Boucaud et al. 2016, A&A 596,
    A63), cut to :math:`k \times k` and scaled to sum :math:`\kappa`; the spatial
    model is a least-squares Chebyshev fit of the cell kernels
    (:meth:`SpatialKernel.fit`).

PSF padding follows LSST's model-PSF matching conventions and goes beyond them
(see :func:`psf_padding`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .chebyshev import chebyshev_basis, n_chebyshev_terms
from .psfmatch_basis import (
    KernelBasis,
    alard_lupton_basis,
    check_kernel_size,
    delta_function_basis,
    fit_basis_coefficients,
)
from .psfmatch_fourier import (
    check_fourier_options,
    cosine_bell_window,
    fourier_kernels,
    hann_window,
    make_window,
    split_cosine_bell_window,
    top_hat_window,
    tukey_window,
)
from .spatial_kernel import SpatialKernel

__all__ = [
    "METHODS",
    "KernelFit",
    "SpatialKernelFit",
    "cell_centres",
    "cosine_bell_window",
    "hann_window",
    "make_window",
    "pad_psf",
    "psf_padding",
    "solve_kernel",
    "solve_spatial_kernel",
    "split_cosine_bell_window",
    "top_hat_window",
    "tukey_window",
]

METHODS = ("alard_lupton", "delta_function", "fourier")


@dataclass(frozen=True)
class KernelFit:
    """Result of :func:`solve_kernel`.

    Attributes
    ----------
    kernel : numpy.ndarray
        ``(k, k)`` kernel, origin at the centre pixel; ``kernel.sum()`` equals the
        requested ``kernel_sum``.
    coefficients : numpy.ndarray or None
        ``(n_basis,)`` basis coefficients (the first is ``kernel_sum``); None for
        the Fourier method.
    condition_number : float
        2-norm condition number of the (regularised, unit-diagonal scaled) normal
        matrix; NaN for the Fourier method.
    padded_size : int
        Size of the padded PSF stamps (see :func:`psf_padding`).
    """

    kernel: np.ndarray
    coefficients: np.ndarray | None
    condition_number: float
    padded_size: int


@dataclass(frozen=True)
class SpatialKernelFit:
    """Result of :func:`solve_spatial_kernel`.

    Attributes
    ----------
    kernel : SpatialKernel
        Spatial model; its sum is ``kernel_sum`` everywhere.
    method : str
        Method used.
    basis : KernelBasis or None
        Kernel basis of the basis methods; None for the Fourier method.
    coefficients : numpy.ndarray or None
        ``(n_basis, n_terms)`` spatial coefficients :math:`a_{is}`; row 0 is
        ``[kernel_sum, 0, ...]``. None for the Fourier method.
    cell_x, cell_y : numpy.ndarray
        ``(m,)`` cell centres.
    cell_kernels : numpy.ndarray
        ``(m, k, k)`` kernels of the spatial model at the cell centres.
    condition_number : float
        As in :class:`KernelFit`.
    padded_size : int
        Size of the padded PSF stamps.
    """

    kernel: SpatialKernel
    method: str
    basis: KernelBasis | None
    coefficients: np.ndarray | None
    cell_x: np.ndarray
    cell_y: np.ndarray
    cell_kernels: np.ndarray
    condition_number: float
    padded_size: int


# ----------------------------------------------------------------------------- helpers
def _odd_at_least(x: float) -> int:
    n = math.ceil(x - 1e-9)
    return n if n % 2 else n + 1


def psf_padding(psf_size: int, kernel_size: int, pad_psf_by=None, *, method="alard_lupton") -> int:
    r"""Size of the zero-padded PSF stamps used to solve for a kernel.

    * ``pad_psf_by=None`` (automatic): the smallest odd size that is at least
      :math:`1.4 k` (LSST's rule for PSFs smaller than that) **and** at least
      ``psf_size + 2 (k // 2)``, so that the whole PSF lies inside the region the
      kernel fully covers (this second condition goes beyond LSST, which may fit
      a region that cuts into the PSF).
    * ``pad_psf_by`` a non-negative even integer: ``psf_size + pad_psf_by`` (an odd
      amount would make the stamp even). For the basis methods the result must
      be at least the kernel size and the region the kernel fully covers,
      ``size - 2 (k // 2)``, at least as large as the kernel, i.e.
      ``size >= 2k - 1``; for ``method="fourier"`` only ``size >= k`` is needed.

    Parameters
    ----------
    psf_size : int
        Odd size of the (common) PSF stamps.
    kernel_size : int
        Odd kernel size ``k >= 3``.
    pad_psf_by : int, optional
        Explicit padding (total, both sides together).
    method : str
        Solution method (only ``"fourier"`` relaxes the size check).

    Returns
    -------
    int
        Odd padded size.

    Raises
    ------
    ValueError
        For an even or non-positive PSF size, a bad kernel size, a negative or odd
        ``pad_psf_by``, or a kernel too large for the padded stamp.
    """
    n = int(psf_size)
    if n != psf_size or n < 1 or n % 2 == 0:
        raise ValueError(f"psf_size must be a positive odd integer, got {psf_size!r}")
    k = check_kernel_size(kernel_size)
    _check_method(method)
    if pad_psf_by is None:
        return max(_odd_at_least(1.4 * k), n + 2 * (k // 2))
    pad = int(pad_psf_by) if float(pad_psf_by).is_integer() else -1
    if pad < 0 or pad % 2:
        raise ValueError(
            f"pad_psf_by must be a non-negative even integer (an odd amount would make the "
            f"PSF stamp even), got {pad_psf_by!r}"
        )
    size = n + pad
    need = k if method == "fourier" else 2 * k - 1
    if size < need:
        what = "the kernel" if method == "fourier" else "twice the kernel size minus one"
        raise ValueError(
            f"a {k}x{k} kernel is too large for {size}x{size} PSF stamps (PSF {n} px padded by "
            f"{pad}): the stamp must be at least {what} ({need} px) so that the kernel "
            f"fully covers a region as large as itself; pad the PSF (pad_psf_by >= "
            f"{need - n + (need - n) % 2}, or None for automatic padding) or use a smaller kernel"
        )
    return size


def pad_psf(psf, size: int) -> np.ndarray:
    """Zero-pad a centred, odd-sized stamp to ``size × size`` (centre kept centred).

    Raises
    ------
    ValueError
        For a 2-D stamp with an even side, an even ``size``, or a stamp larger
        than ``size`` (stamps are never cropped).
    """
    p = np.asarray(psf, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"psf must be a 2-D stamp, got {p.ndim} dimension(s)")
    size = int(size)
    if size % 2 == 0 or size < 1:
        raise ValueError(f"padded size must be a positive odd integer, got {size}")
    if any(s % 2 == 0 for s in p.shape):
        raise ValueError(f"PSF stamps must have odd sizes (a centre pixel), got {p.shape}")
    if max(p.shape) > size:
        raise ValueError(f"PSF stamp {p.shape} is larger than the padded size {size}")
    out = np.zeros((size, size))
    y0, x0 = (size - p.shape[0]) // 2, (size - p.shape[1]) // 2
    out[y0 : y0 + p.shape[0], x0 : x0 + p.shape[1]] = p
    return out


def cell_centres(shape, cell_size) -> tuple[np.ndarray, np.ndarray]:
    """Centres of a grid of cells covering an image evenly.

    Each axis of length ``n`` gets ``ceil(n / cell_size)`` cells of equal size
    ``n / n_cells`` spanning the pixel edges ``[-0.5, n - 0.5]``, so cell ``j``
    is centred at ``(j + 1/2) n / n_cells - 1/2``.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    cell_size : int or float
        Nominal cell size in pixels (> 0).

    Returns
    -------
    x, y : numpy.ndarray
        ``(m,)`` cell centres in pixel coordinates (``x`` along axis 1), row-major
        (``y`` varies slowest).
    """
    try:
        ny, nx = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair of positive integers, got {shape!r}") from None
    if ny < 1 or nx < 1:
        raise ValueError(f"shape must be a pair of positive integers, got {shape!r}")
    cs = float(cell_size)
    if not (math.isfinite(cs) and cs > 0):
        raise ValueError(f"cell_size must be finite and positive, got {cell_size!r}")

    def axis(n):
        nc = math.ceil(n / cs)
        return (np.arange(nc) + 0.5) * (n / nc) - 0.5

    yy, xx = np.meshgrid(axis(ny), axis(nx), indexing="ij")
    return xx.ravel(), yy.ravel()


def _check_method(method) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def _as_float(value, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def _check_sum(kernel_sum) -> float:
    ks = _as_float(kernel_sum, "kernel_sum")
    if not (math.isfinite(ks) and ks > 0):
        raise ValueError(f"kernel_sum must be finite and positive, got {kernel_sum!r}")
    return ks


def _stack(arr, name: str, ndim_ok=(3,)) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim not in ndim_ok or a.size == 0:
        want = " or ".join(f"{d}-D" for d in ndim_ok)
        raise ValueError(f"{name} must be a {want} array of PSF stamps, got shape {a.shape}")
    if a.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be real numbers, not {a.dtype}")
    a = a.astype(np.float64)
    if a.shape[-1] % 2 == 0 or a.shape[-2] % 2 == 0:
        raise ValueError(
            f"{name} stamps must have odd sizes so that they have a centre pixel, got "
            f"{a.shape[-2:]}; crop or pad by one pixel (and re-centre)"
        )
    a3 = a.reshape((-1,) + a.shape[-2:])
    if not np.all(np.isfinite(a3)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    sums = a3.sum(axis=(1, 2))
    bad = np.flatnonzero(~(sums > 0))
    if bad.size:
        raise ValueError(f"{name} stamp {int(bad[0])} has a non-positive sum ({sums[bad[0]]!r})")
    return (a3 / sums[:, None, None]).reshape(a.shape)


def _common(sources: np.ndarray, target: np.ndarray, size: int):
    def pad_stack(a):
        if a.shape[-1] == size and a.shape[-2] == size:
            return a
        out = np.zeros(a.shape[:-2] + (size, size))
        y0, x0 = (size - a.shape[-2]) // 2, (size - a.shape[-1]) // 2
        out[..., y0 : y0 + a.shape[-2], x0 : x0 + a.shape[-1]] = a
        return out

    return pad_stack(sources), pad_stack(target)


def _resolve_basis(method, basis, k) -> KernelBasis:
    if basis is None:
        return delta_function_basis(k) if method == "delta_function" else alard_lupton_basis(k)
    if not isinstance(basis, KernelBasis):
        raise ValueError(f"basis must be a KernelBasis, got {type(basis).__name__}")
    if basis.kind != method:
        raise ValueError(f"a {basis.kind!r} basis was given for method {method!r}")
    if basis.size != k:
        raise ValueError(f"kernel_size {k} does not match the basis image size {basis.size}")
    return basis


def _check_common(method, kernel_size, kernel_sum, basis, lam, reg, window, penalty, filt):
    _check_method(method)
    k = check_kernel_size(kernel_size)
    ks = _check_sum(kernel_sum)
    lam_f = _as_float(lam, "regularization_lambda")
    if not (math.isfinite(lam_f) and lam_f >= 0):
        raise ValueError(f"regularization_lambda must be finite and >= 0, got {lam!r}")
    if method == "fourier" and basis is not None:
        raise ValueError("the fourier method takes no kernel basis")
    # the Fourier knobs are validated for every method; their values only for "fourier"
    check_fourier_options(
        regularization=reg,
        window=window,
        penalty=penalty,
        fourier_filter=filt,
        check_values=method == "fourier",
    )
    return k, ks, lam_f


def _exact_sums(term_kernels: np.ndarray, kernel_sum: float) -> np.ndarray:
    """Remove rounding from the term-kernel sums: first ``kernel_sum``, others zero."""
    tk = np.array(term_kernels, dtype=np.float64)
    npix = tk.shape[1] * tk.shape[2]
    target = np.zeros(tk.shape[0])
    target[0] = kernel_sum
    tk += ((target - tk.sum(axis=(1, 2))) / npix)[:, None, None]
    return tk


# ------------------------------------------------------------------------------ solvers
def solve_kernel(
    source,
    target,
    *,
    method="alard_lupton",
    kernel_size=21,
    kernel_sum=1.0,
    basis=None,
    regularization_lambda=0.2,
    regularization=1e-4,
    window=None,
    penalty="none",
    pad_psf_by=None,
    fourier_filter="wiener",
) -> KernelFit:
    r"""Solve one PSF-matching kernel, :math:`K \ast S \approx \kappa T`.

    Parameters
    ----------
    source, target : array_like
        2-D odd-sized PSF stamps with positive sums (normalised to unit sum
        here), centred on their centre pixel; different sizes are zero-padded to a
        common size.
    method : {"alard_lupton", "delta_function", "fourier"}
        Solution method (see the module notes).
    kernel_size : int
        Odd kernel size ``k >= 3``; must equal the basis image size when ``basis``
        is given.
    kernel_sum : float
        :math:`\kappa`, the exact sum of the returned kernel (> 0).
    basis : KernelBasis, optional
        Basis for the basis methods (its kind must match ``method``); default
        :func:`alard_lupton_basis` (default widths and degrees) or
        :func:`delta_function_basis`.
    regularization_lambda : float
        :math:`\lambda` of the delta-function Laplacian regularisation.
    regularization : float
        Fourier method: Wiener regularisation (or ratio threshold) :math:`\rho`.
    window : None, str, tuple or callable
        Fourier method: frequency window (see :func:`make_window`).
    penalty : {"none", "laplacian"}
        Fourier method: Wiener regularisation term.
    pad_psf_by : int, optional
        PSF padding (see :func:`psf_padding`).
    fourier_filter : {"wiener", "ratio"}
        Fourier method: Wiener filter, or the thresholded transform ratio.

    Returns
    -------
    KernelFit

    Raises
    ------
    ValueError
        For even, non-finite or non-positive-sum PSFs, a bad kernel size, a kernel
        too large for the padded PSF, or unknown method, window, penalty or filter.
    """
    k, ks, lam = _check_common(
        method, kernel_size, kernel_sum, basis, regularization_lambda, regularization,
        window, penalty, fourier_filter,
    )  # fmt: skip
    src = _stack(source, "source", (2,))
    tgt = _stack(target, "target", (2,))
    size = max(src.shape + tgt.shape)
    padded = psf_padding(size, k, pad_psf_by, method=method)
    if method == "fourier":
        s_p, t_p = _common(src[None], tgt, padded)
        kern = fourier_kernels(
            s_p, t_p, kernel_size=k, kernel_sum=ks, regularization=regularization,
            window=window, penalty=penalty, fourier_filter=fourier_filter, workers=-1,
        )[0]  # fmt: skip
        return KernelFit(_exact_sums(kern[None], ks)[0], None, math.nan, padded)
    b = _resolve_basis(method, basis, k)
    s_c, t_c = _common(src[None], tgt, size)
    coef, cond = fit_basis_coefficients(s_c, t_c, np.ones((1, 1)), b, ks, lam, -1)
    kern = _exact_sums(b.kernel(coef[:, 0])[None], ks)[0]
    return KernelFit(kern, coef[:, 0].copy(), cond, padded)


def solve_spatial_kernel(
    sources,
    target,
    cell_x,
    cell_y,
    *,
    order,
    domain,
    method="alard_lupton",
    kernel_size=21,
    kernel_sum=1.0,
    basis=None,
    regularization_lambda=0.2,
    regularization=1e-4,
    window=None,
    penalty="none",
    pad_psf_by=None,
    fourier_filter="wiener",
) -> SpatialKernelFit:
    r"""Solve a spatially varying PSF-matching kernel from PSFs realised at cells.

    Parameters
    ----------
    sources : array_like
        ``(m, h, w)`` source PSFs at the cell centres (odd sizes, positive sums).
    target : array_like
        ``(h2, w2)`` constant target PSF or ``(m, h2, w2)`` one per cell.
    cell_x, cell_y : array_like
        ``(m,)`` cell centres in image pixel coordinates (see :func:`cell_centres`).
    order : int
        Spatial Chebyshev order (:math:`(n+1)(n+2)/2` terms; needs at least as many
        cells).
    domain : tuple of float
        ``(x0, x1, y0, y1)`` Chebyshev domain, e.g. :func:`image_domain` of the image.
    method, kernel_size, kernel_sum, basis
        As in :func:`solve_kernel`.
    regularization_lambda, regularization, window, penalty, pad_psf_by, fourier_filter
        As in :func:`solve_kernel`.

    Returns
    -------
    SpatialKernelFit
        The basis methods vary only the zero-sum terms, so the kernel sum is
        ``kernel_sum`` everywhere; for the Fourier method every cell kernel has that
        sum and so has the fitted model.

    Raises
    ------
    ValueError
        As :func:`solve_kernel`, and for fewer cells than spatial terms or mismatched
        numbers of cells.
    """
    k, ks, lam = _check_common(
        method, kernel_size, kernel_sum, basis, regularization_lambda, regularization,
        window, penalty, fourier_filter,
    )  # fmt: skip
    src = _stack(sources, "sources", (3,))
    tgt = _stack(target, "target", (2, 3))
    m = src.shape[0]
    cx = np.asarray(cell_x, dtype=np.float64).ravel()
    cy = np.asarray(cell_y, dtype=np.float64).ravel()
    if cx.size != m or cy.size != m:
        raise ValueError(f"{m} source PSFs but {cx.size} cell_x and {cy.size} cell_y values")
    if not (np.all(np.isfinite(cx)) and np.all(np.isfinite(cy))):
        raise ValueError("cell_x and cell_y must be finite")
    if tgt.ndim == 3 and tgt.shape[0] != m:
        raise ValueError(f"{m} source PSFs but {tgt.shape[0]} target PSFs")
    nt = n_chebyshev_terms(order)
    if m < nt:
        raise ValueError(
            f"{m} cells are too few for a spatial kernel of order {order}, which has {nt} "
            f"terms; use smaller cells or a lower order"
        )
    domain = tuple(float(d) for d in domain)
    weights = chebyshev_basis(cx, cy, order, domain).reshape(nt, m)
    size = max(src.shape[1:] + tgt.shape[-2:])
    padded = psf_padding(size, k, pad_psf_by, method=method)
    if method == "fourier":
        s_p, t_p = _common(src, tgt, padded)
        kern = fourier_kernels(
            s_p, t_p, kernel_size=k, kernel_sum=ks, regularization=regularization,
            window=window, penalty=penalty, fourier_filter=fourier_filter, workers=-1,
        )  # fmt: skip
        fit = SpatialKernel.fit(cx, cy, kern, order, domain)
        sk = SpatialKernel(_exact_sums(fit.term_kernels, ks), order, domain)
        return SpatialKernelFit(
            sk, method, None, None, cx, cy, sk.kernels_at(cx, cy), math.nan, padded
        )
    b = _resolve_basis(method, basis, k)
    s_c, t_c = _common(src, tgt, size)
    coef, cond = fit_basis_coefficients(s_c, t_c, weights, b, ks, lam, -1)
    terms = np.tensordot(coef.T, b.images, axes=1)  # (n_terms, k, k)
    sk = SpatialKernel(_exact_sums(terms, ks), order, domain)
    return SpatialKernelFit(sk, method, b, coef, cx, cy, sk.kernels_at(cx, cy), cond, padded)

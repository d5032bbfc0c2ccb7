r"""Kernel bases for PSF matching: Alard–Lupton Gaussians and delta functions.

A PSF-matching kernel of odd size :math:`k \times k` is written as a linear
combination of basis images,

.. math::

    K(u, v) = \sum_{i=0}^{n-1} a_i\, B_i(u, v),

with the kernel origin at the centre pixel ``(k // 2, k // 2)``. Both bases
returned here are normalised so that

.. math::

    \sum_{u,v} B_0(u, v) = 1, \qquad \sum_{u,v} B_i(u, v) = 0 \quad (i \ge 1),

hence the kernel sum is the first coefficient alone, :math:`\sum K = a_0`.
Fixing :math:`a_0` fixes the photometric scaling of the kernel exactly, and a
spatially varying kernel whose first coefficient is constant has the same sum
everywhere (Alard 2000, A&AS 144, 363).

* **Alard–Lupton** (Alard & Lupton 1998, ApJ 503, 325): Gaussians of widths
  :math:`\sigma_g` multiplied by polynomials,
  :math:`\exp(-(u^2 + v^2) / 2\sigma_g^2)\, u^i v^j` with :math:`i + j \le d_g`.
  The raw images are orthonormalised by Gram–Schmidt (in a fixed order: by
  Gaussian, then by total degree, then by power of :math:`v`) and then made
  to satisfy the sum conditions above.
* **Delta functions** (Becker et al. 2012, MNRAS 425, 1341): one basis image per
  kernel pixel, re-expressed as the centre delta :math:`B_0 = \delta_c` and the
  differences :math:`B_i = \delta_{p_i} - \delta_c`. Such a basis can represent
  any kernel and needs regularisation; :attr:`KernelBasis.penalty` holds the
  quadratic form :math:`H = M^T L^T L M` of the five-point discrete Laplacian
  :math:`L` of the kernel image, expressed in the basis coefficients (:math:`M`
  maps coefficients to kernel pixels; the kernel is taken as zero outside its
  stamp, so :math:`H` also penalises power at the stamp edges).

:func:`fit_basis_coefficients` solves for the coefficients of a (spatially
varying) kernel in such a basis by linear least squares with :math:`a_0` fixed;
the equations are in :mod:`~stmatch.algorithms.psfmatch_kernel`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse
from scipy import fft as sfft

__all__ = [
    "KernelBasis",
    "alard_lupton_basis",
    "alard_lupton_sigmas",
    "delta_function_basis",
    "fit_basis_coefficients",
]

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: floor of the width of the matching Gaussian when it is derived from the FWHMs (pixels)
MIN_MATCH_SIGMA = 0.7
_KINDS = ("alard_lupton", "delta_function")
#: systems up to this many unknowns are solved by eigen-decomposition (exact 2-norm
#: condition number); larger ones by Cholesky with a LAPACK 1-norm condition estimate
_EIGH_MAX = 1500
# a Gram–Schmidt residual below this fraction of the raw image norm means the image is
# (numerically) a combination of the earlier ones and is dropped
_DEPENDENT_TOL = 1e-9


def check_kernel_size(kernel_size) -> int:
    """Validate an odd kernel size of at least 3 and return it as an int."""
    try:
        k = int(kernel_size)
    except (TypeError, ValueError):
        raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size!r}") from None
    if k != kernel_size or k < 3 or k % 2 == 0:
        raise ValueError(
            f"kernel_size must be an odd integer >= 3 (so that the kernel has a centre "
            f"pixel), got {kernel_size!r}"
        )
    return k


@dataclass(frozen=True)
class KernelBasis:
    r"""Basis images of a PSF-matching kernel (see the module notes).

    Attributes
    ----------
    images : numpy.ndarray
        ``(n, k, k)`` float64, read-only; ``images[0]`` sums to one and every
        other image sums to zero.
    kind : str
        ``"alard_lupton"`` or ``"delta_function"``.
    sigmas : tuple of float
        Gaussian widths (pixels) of an Alard–Lupton basis; empty otherwise.
    degrees : tuple of int
        Polynomial degree per Gaussian of an Alard–Lupton basis; empty otherwise.
    penalty : numpy.ndarray or None
        ``(n, n)`` regularisation matrix :math:`H` (delta-function basis:
        :math:`M^T L^T L M` of the discrete Laplacian); None when the basis
        needs no regularisation.
    """

    images: np.ndarray
    kind: str
    sigmas: tuple = ()
    degrees: tuple = ()
    penalty: np.ndarray | None = None

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"unknown kernel basis kind {self.kind!r}; expected one of {_KINDS}")
        img = np.array(self.images, dtype=np.float64)
        if img.ndim != 3 or img.shape[0] < 1 or img.shape[1] != img.shape[2]:
            raise ValueError(f"basis images must be an (n, k, k) stack, got shape {img.shape}")
        check_kernel_size(img.shape[1])
        if not np.all(np.isfinite(img)):
            raise ValueError("basis images must be finite")
        sums = img.reshape(img.shape[0], -1).sum(axis=1)
        scale = np.abs(img).reshape(img.shape[0], -1).sum(axis=1).max()
        if abs(sums[0] - 1.0) > 1e-10 or np.any(np.abs(sums[1:]) > 1e-10 * scale):
            raise ValueError(
                "basis images[0] must sum to 1 and every other image to 0 (so that the "
                "kernel sum is the first coefficient)"
            )
        img.setflags(write=False)
        object.__setattr__(self, "images", img)
        object.__setattr__(self, "sigmas", tuple(float(s) for s in self.sigmas))
        object.__setattr__(self, "degrees", tuple(int(d) for d in self.degrees))
        if self.penalty is not None:
            pen = np.array(self.penalty, dtype=np.float64)
            n = img.shape[0]
            if pen.shape != (n, n) or not np.all(np.isfinite(pen)):
                raise ValueError(f"penalty must be a finite ({n}, {n}) matrix, got {pen.shape}")
            pen.setflags(write=False)
            object.__setattr__(self, "penalty", pen)

    @property
    def n(self) -> int:
        """Number of basis images."""
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        """Kernel size ``k``."""
        return int(self.images.shape[1])

    def kernel(self, coefficients) -> np.ndarray:
        """Kernel image :math:`\\sum_i a_i B_i` for ``coefficients`` of length ``n``."""
        a = np.asarray(coefficients, dtype=np.float64)
        if a.shape != (self.n,):
            raise ValueError(f"expected {self.n} coefficients, got shape {a.shape}")
        return np.tensordot(a, self.images, axes=1)


def _positive_float(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and positive, got {value!r}")
    return v


def alard_lupton_sigmas(
    *,
    n_gauss=3,
    sig_gauss=(0.7, 1.5, 3.0),
    gauss_beta=2.0,
    scale_by_fwhm=True,
    fwhm_source=None,
    fwhm_target=None,
) -> tuple[float, ...]:
    r"""Widths of the Gaussians of an Alard–Lupton basis.

    With ``scale_by_fwhm`` the widths follow the width of the Gaussian that
    matches Gaussian approximations of the two PSFs,

    .. math::

        \sigma_m = \sqrt{\max(\sigma_t^2 - \sigma_s^2,\ \sigma_{\min}^2)}, \qquad
        \sigma = \mathrm{FWHM} / (2\sqrt{2\ln 2}),

    and are spaced geometrically around it,
    :math:`\sigma_i = \sigma_m\, \beta^{\,i - (n-1)/2}`, :math:`i = 0, \dots, n-1`,
    so that the middle one (odd :math:`n`) equals :math:`\sigma_m`. The floor
    :math:`\sigma_{\min}` = ``MIN_MATCH_SIGMA`` (0.7 px) keeps the basis usable when
    the target is barely wider than (or narrower than) the source. Without
    ``scale_by_fwhm`` the widths are ``sig_gauss`` as given (Alard & Lupton 1998,
    ApJ 503, 325, use fixed widths).

    Parameters
    ----------
    n_gauss : int
        Number of Gaussians.
    sig_gauss : sequence of float
        Fixed widths (pixels), used without ``scale_by_fwhm``; needs ``n_gauss``
        entries.
    gauss_beta : float
        Ratio between consecutive widths with ``scale_by_fwhm`` (> 0).
    scale_by_fwhm : bool
        Derive the widths from the PSF FWHMs.
    fwhm_source, fwhm_target : float
        FWHM (pixels) of the source (exposure) and target PSFs; required with
        ``scale_by_fwhm``.

    Returns
    -------
    tuple of float
        ``n_gauss`` widths in pixels.

    Raises
    ------
    ValueError
        For a non-positive ``n_gauss``, a ``sig_gauss`` of the wrong length or with
        non-positive entries, or missing / non-positive FWHMs.
    """
    n = int(n_gauss)
    if n != n_gauss or n < 1:
        raise ValueError(f"n_gauss must be a positive integer, got {n_gauss!r}")
    if not scale_by_fwhm:
        sig = tuple(sig_gauss)
        if len(sig) != n:
            raise ValueError(
                f"sig_gauss has {len(sig)} entries but n_gauss is {n}; give one width per Gaussian"
            )
        return tuple(_positive_float(s, "sig_gauss entries") for s in sig)
    if fwhm_source is None or fwhm_target is None:
        raise ValueError("scale_by_fwhm needs both fwhm_source and fwhm_target")
    beta = _positive_float(gauss_beta, "gauss_beta")
    s_src = _positive_float(fwhm_source, "fwhm_source") / _FWHM_PER_SIGMA
    s_tgt = _positive_float(fwhm_target, "fwhm_target") / _FWHM_PER_SIGMA
    sigma_m = math.sqrt(max(s_tgt * s_tgt - s_src * s_src, MIN_MATCH_SIGMA**2))
    return tuple(sigma_m * beta ** (i - (n - 1) / 2.0) for i in range(n))


def _offsets(k: int) -> np.ndarray:
    return np.arange(k, dtype=np.float64) - k // 2


def _orthonormalise(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Modified Gram–Schmidt, applied twice, in column order; drops dependent columns.

    Returns the orthonormal columns and the indices of the raw columns kept.
    """
    kept, out = [], []
    for j in range(columns.shape[1]):
        v = columns[:, j].copy()
        norm0 = np.linalg.norm(v)
        if norm0 == 0:
            continue
        for _ in range(2):
            for q in out:
                v -= np.dot(q, v) * q
        norm = np.linalg.norm(v)
        if norm <= _DEPENDENT_TOL * norm0:
            continue
        out.append(v / norm)
        kept.append(j)
    return np.stack(out, axis=1), np.asarray(kept)


def _sum_normalised(q: np.ndarray) -> np.ndarray:
    """Columns -> images with images[0] summing to 1 and the others to 0."""
    sums = q.sum(axis=0)
    if abs(sums[0]) < 1e-12 * np.abs(q[:, 0]).sum():
        raise ValueError("the first basis image has zero sum; it cannot carry the kernel sum")
    b0 = q[:, 0] / sums[0]
    rest = q[:, 1:] - b0[:, None] * sums[None, 1:]
    # remove the rounding left in the sums (at the 1e-17 level)
    rest -= rest.mean(axis=0, keepdims=True)
    b0 = b0 + (1.0 - b0.sum()) / b0.size
    return np.concatenate([b0[:, None], rest], axis=1)


def alard_lupton_basis(kernel_size, *, sigmas=(0.7, 1.5, 3.0), degrees=(4, 2, 2)) -> KernelBasis:
    r"""Alard–Lupton kernel basis of Gaussians times polynomials.

    The raw images are, for each Gaussian :math:`g` and each :math:`i + j \le d_g`,

    .. math::

        G_{g,ij}(u, v) = \exp\!\left(-\frac{u^2 + v^2}{2\sigma_g^2}\right) u^i v^j

    on the pixel offsets :math:`u, v \in \{-k//2, \dots, k//2\}` (Alard & Lupton
    1998, ApJ 503, 325), i.e. :math:`\sum_g (d_g + 1)(d_g + 2)/2` images (27 for
    the defaults). They are orthonormalised by modified Gram–Schmidt in that
    order (Gaussian by Gaussian; within one, by total degree and then by power
    of :math:`v`), which makes the least-squares problem well conditioned; an
    image that is numerically a combination of earlier ones (e.g. a high-degree
    term of a Gaussian much narrower than a pixel) is dropped. Finally the first
    image (the first Gaussian) is scaled to unit sum, :math:`B_0 = Q_0 / \sum Q_0`,
    and every other image has :math:`B_0` times its sum removed,
    :math:`B_i = Q_i - (\sum Q_i) B_0`, so that the kernel sum is the first
    coefficient.

    Parameters
    ----------
    kernel_size : int
        Odd kernel size ``k >= 3``.
    sigmas : sequence of float
        Gaussian widths in pixels (see :func:`alard_lupton_sigmas`).
    degrees : sequence of int
        Polynomial degree for each Gaussian (same length as ``sigmas``).

    Returns
    -------
    KernelBasis
        ``kind="alard_lupton"``, ``penalty=None``.

    Raises
    ------
    ValueError
        For an even or too small kernel size, mismatched lengths, non-positive
        widths or negative degrees.
    """
    k = check_kernel_size(kernel_size)
    sig = tuple(_positive_float(s, "sigmas entries") for s in sigmas)
    deg = tuple(degrees)
    if len(sig) == 0 or len(sig) != len(deg):
        raise ValueError(
            f"sigmas ({len(sig)}) and degrees ({len(deg)}) need the same, non-zero length"
        )
    for d in deg:
        if int(d) != d or d < 0:
            raise ValueError(f"degrees must be non-negative integers, got {deg!r}")
    deg = tuple(int(d) for d in deg)
    u = _offsets(k)
    cols = []
    for s, d in zip(sig, deg, strict=True):
        g = np.exp(-0.5 * (u / s) ** 2)
        gauss = np.outer(g, g)  # [v, u]: rows are v (axis 0), columns u (axis 1)
        for total in range(d + 1):
            for j in range(total + 1):
                i = total - j
                cols.append((gauss * np.outer(u**j, u**i)).ravel())
    raw = np.stack(cols, axis=1)
    raw = raw / np.linalg.norm(raw, axis=0)
    q, _ = _orthonormalise(raw)
    images = _sum_normalised(q).T.reshape(-1, k, k)
    return KernelBasis(images, "alard_lupton", sigmas=sig, degrees=deg)


def laplacian_matrix(k: int) -> scipy.sparse.csr_matrix:
    r"""Sparse ``(k², k²)`` five-point Laplacian of a ``k × k`` image (zero outside).

    :math:`(L K)(p) = 4K(p) - K(p + \hat x) - K(p - \hat x) - K(p + \hat y) - K(p - \hat y)`
    on the row-major flattened image.
    """
    d1 = scipy.sparse.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(k, k))
    eye = scipy.sparse.identity(k)
    return (scipy.sparse.kron(eye, d1) + scipy.sparse.kron(d1, eye)).tocsr()


def project_delta(gram: np.ndarray, *, centre_first: bool = False) -> np.ndarray:
    r"""Express pixel-space quadratic forms in delta-function basis coefficients.

    For ``gram`` of shape ``(..., k², k²)`` in row-major pixel order returns
    :math:`M^T G M` with :math:`M` of :func:`delta_function_basis`: with
    :math:`c` the centre and :math:`o_i` the other pixels,
    :math:`Z_{00} = G_{cc}`, :math:`Z_{0j} = G_{c o_j} - G_{cc}`,
    :math:`Z_{i0} = G_{o_i c} - G_{cc}` and
    :math:`Z_{ij} = G_{o_i o_j} - G_{o_i c} - G_{c o_j} + G_{cc}`.
    With ``centre_first`` the pixels of ``gram`` are already in the order
    :math:`(c, o_1, o_2, \dots)` (no reordering copy is made).
    """
    if centre_first:
        g = gram
    else:
        n = gram.shape[-1]
        c = n // 2
        order = np.concatenate([[c], np.delete(np.arange(n), c)])
        g = gram[..., order, :][..., :, order]
    row0 = g[..., 0:1, :]
    col0 = g[..., :, 0:1]
    g00 = g[..., 0:1, 0:1]
    z = g - row0 - col0 + g00
    z[..., 0, :] = g[..., 0, :] - g[..., 0:1, 0]
    z[..., :, 0] = g[..., :, 0] - g[..., 0:1, 0]
    z[..., 0, 0] = g[..., 0, 0]
    return z


def delta_function_basis(kernel_size) -> KernelBasis:
    r"""Delta-function kernel basis with a Laplacian regularisation matrix.

    With :math:`c` the centre pixel and :math:`p_1, \dots, p_{k^2-1}` the other
    pixels in row-major order, :math:`B_0 = \delta_c` and
    :math:`B_i = \delta_{p_i} - \delta_c`, so that :math:`K = \sum_i a_i B_i` has
    :math:`K(p_i) = a_i` and :math:`K(c) = a_0 - \sum_{i \ge 1} a_i` (Becker et al.
    2012, MNRAS 425, 1341). The penalty is

    .. math::

        H = M^T L^T L M,

    where :math:`M` (``k² × n``) maps coefficients to kernel pixels and :math:`L`
    is the five-point Laplacian of the kernel image with zeros outside the stamp,
    so that :math:`a^T H a = \lVert L K \rVert^2`.

    Parameters
    ----------
    kernel_size : int
        Odd kernel size ``k >= 3``.

    Returns
    -------
    KernelBasis
        ``kind="delta_function"`` with ``k²`` images and the ``(k², k²)`` penalty.
    """
    k = check_kernel_size(kernel_size)
    n = k * k
    c = n // 2
    others = np.delete(np.arange(n), c)
    images = np.zeros((n, n))
    images[0, c] = 1.0
    images[np.arange(1, n), others] = 1.0
    images[1:, c] = -1.0
    lap = laplacian_matrix(k)
    penalty = project_delta((lap.T @ lap).toarray())
    return KernelBasis(images.reshape(n, k, k), "delta_function", penalty=penalty)


# ------------------------------------------------------------------- basis least squares
def _lag_index(k: int, n: int, order=None) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices into an ``n × n`` array of the lags ``p - q`` between kernel pixels,
    and of the kernel pixel offsets ``p`` themselves."""
    off = np.arange(k) - k // 2
    py = np.repeat(off, k)
    px = np.tile(off, k)
    if order is not None:
        py, px = py[order], px[order]
    dy = (py[:, None] - py[None, :]) % n
    dx = (px[:, None] - px[None, :]) % n
    return dy * n + dx, (py % n) * n + (px % n)


def _is_standard_delta(basis: KernelBasis) -> bool:
    """True for the layout of :func:`delta_function_basis` (centre delta, then differences)."""
    if basis.kind != "delta_function" or basis.n != basis.size**2:
        return False
    n = basis.n
    c = n // 2
    flat = basis.images.reshape(n, n)
    if flat[0, c] != 1.0 or np.count_nonzero(flat[0]) != 1:
        return False
    others = np.delete(np.arange(n), c)
    sub = flat[1:]
    return bool(
        np.all(sub[np.arange(n - 1), others] == 1.0)
        and np.all(sub[:, c] == -1.0)
        and np.count_nonzero(sub) == 2 * (n - 1)
    )


def _half_plane_weights(n: int) -> np.ndarray:
    """Weights that turn a sum over an ``rfft`` half plane into the full-plane sum."""
    w = np.full(n // 2 + 1, 2.0)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return w


def _normal_blocks(src, tgt, weights, basis, workers):
    """Gram blocks ``Z[s, t, i, j] = sum_c T_s T_t <B_i * S_c, B_j * S_c>`` and
    right-hand sides ``rhs[s, i] = sum_c T_s <B_i * S_c, T_c>``."""
    m, size, _ = src.shape
    k = basis.size
    nt = weights.shape[0]
    n_fft = sfft.next_fast_len(size + k - 1, real=True)
    nh = n_fft // 2 + 1
    s_hat = sfft.rfft2(src, s=(n_fft, n_fft), workers=workers).reshape(m, -1)
    power = s_hat.real**2 + s_hat.imag**2
    pairs = [(s, t) for s in range(nt) for t in range(s, nt)]
    wpair = np.stack([weights[s] * weights[t] for s, t in pairs])
    w_st = wpair @ power  # (n_pairs, F): sum_c T_s T_t |S_c|^2
    if tgt.ndim == 2:
        t_hat = sfft.rfft2(tgt, s=(n_fft, n_fft), workers=workers).reshape(-1)
        cross = (weights @ np.conj(s_hat)) * t_hat[None]
    else:
        t_hat = sfft.rfft2(tgt, s=(n_fft, n_fft), workers=workers).reshape(m, -1)
        cross = weights @ (np.conj(s_hat) * t_hat)
    n = basis.n
    if _is_standard_delta(basis):
        # pixel space: autocorrelation (Gram of shifted sources) and cross-correlation
        acf = sfft.irfft2(w_st.reshape(-1, n_fft, nh), s=(n_fft, n_fft), workers=workers)
        xcorr = sfft.irfft2(cross.reshape(nt, n_fft, nh), s=(n_fft, n_fft), workers=workers)
        kk = k * k
        c = kk // 2
        order = np.concatenate([[c], np.delete(np.arange(kk), c)])
        lag, pix = _lag_index(k, n_fft, order)
        zp = project_delta(acf.reshape(len(pairs), -1)[:, lag], centre_first=True)
        y = xcorr.reshape(nt, -1)[:, pix]
        rhs = y - y[:, 0:1]
        rhs[:, 0] = y[:, 0]
    else:
        # Parseval: <f, g> = N^-2 sum_f w_f Re(f_hat conj(g_hat)) over the rfft half plane
        placed = np.zeros((n, n_fft, n_fft))
        idx = (np.arange(k) - k // 2) % n_fft
        placed[:, idx[:, None], idx[None, :]] = basis.images
        b_hat = sfft.rfft2(placed, workers=workers).reshape(n, -1)
        fw = np.tile(_half_plane_weights(n_fft), n_fft) / float(n_fft) ** 2
        # Re(conj(b_i) b_j) = Re b_i Re b_j + Im b_i Im b_j
        parts = np.concatenate([b_hat.real, b_hat.imag], axis=1)  # (n, 2F)
        w2 = np.concatenate([w_st * fw, w_st * fw], axis=1)  # (n_pairs, 2F)
        zp = np.stack([(parts * w) @ parts.T for w in w2])
        rhs = (cross.real * fw) @ b_hat.real.T + (cross.imag * fw) @ b_hat.imag.T
    z = np.empty((nt, nt, n, n))
    for p, (s, t) in enumerate(pairs):
        z[s, t] = zp[p]
        z[t, s] = zp[p].T
    return z, rhs


def _solve_symmetric(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """Solve ``a x = b`` for a symmetric positive semi-definite ``a`` (Jacobi scaled)."""
    d = np.sqrt(np.abs(np.diag(a)))
    d[~(d > 0) | ~np.isfinite(d)] = 1.0
    a_s = a / d[:, None] / d[None, :]
    b_s = b / d
    n = a.shape[0]
    if n <= _EIGH_MAX:
        w, v = np.linalg.eigh(a_s)
        top = w[-1]
        cond = float(top / w[0]) if w[0] > 0 else math.inf
        keep = w > top * n * np.finfo(float).eps
        x = v[:, keep] @ ((v[:, keep].T @ b_s) / w[keep])
        return x / d, cond
    try:
        cf = scipy.linalg.cho_factor(a_s, check_finite=False)
        x = scipy.linalg.cho_solve(cf, b_s, check_finite=False)
        anorm = np.abs(a_s).sum(axis=0).max()
        rcond, _ = scipy.linalg.lapack.dpocon(cf[0], anorm, uplo="L" if cf[1] else "U")
        cond = float(1.0 / rcond) if rcond > 0 else math.inf
    except np.linalg.LinAlgError:
        x = scipy.linalg.lstsq(a_s, b_s, check_finite=False)[0]
        cond = math.inf
    return x / d, cond


def fit_basis_coefficients(src, tgt, weights, basis, kernel_sum, lam, workers=None):
    r"""Global least-squares fit of the zero-sum basis coefficients.

    Minimises :math:`\sum_c \lVert K_c \ast S_c - \kappa T_c \rVert^2 +
    \lambda' \sum_c a_c^T H a_c` with :math:`K_c = \kappa B_0 + \sum_{i \ge 1}
    \sum_s a_{is} T_s(c) B_i` over the whole linear-convolution support (see
    :mod:`~stmatch.algorithms.psfmatch_kernel`).

    Parameters
    ----------
    src : numpy.ndarray
        ``(m, L, L)`` unit-sum source PSFs, odd ``L``, centred.
    tgt : numpy.ndarray
        ``(L, L)`` or ``(m, L, L)`` unit-sum target PSF(s), centred likewise.
    weights : numpy.ndarray
        ``(n_terms, m)`` spatial terms :math:`T_s(c)` at the cells (term 0 constant 1).
    basis : KernelBasis
        Kernel basis.
    kernel_sum : float
        :math:`\kappa`, the fixed first coefficient.
    lam : float
        :math:`\lambda` (used when the basis has a penalty).
    workers : int, optional
        Threads for the FFTs.

    Returns
    -------
    coefficients : numpy.ndarray
        ``(n, n_terms)``; row 0 is ``[kappa, 0, ...]``.
    condition_number : float
        Of the (regularised) normal matrix after unit-diagonal scaling.
    """
    nt, m = weights.shape
    n = basis.n
    z, rhs = _normal_blocks(src, tgt, weights, basis, workers)
    nu = (n - 1) * nt
    a = z[:, :, 1:, 1:].transpose(2, 0, 3, 1).reshape(nu, nu)
    # b_(i,s) = kappa * ( <B_i * S, T>_s - <B_i * S, B_0 * S>_{s0} )
    b = kernel_sum * (rhs[:, 1:].T - z[:, 0, 1:, 0].T).reshape(nu)
    if basis.penalty is not None and lam > 0:
        h = basis.penalty
        gram = weights @ weights.T
        pen = np.kron(h[1:, 1:], gram)
        scale = lam * np.trace(a) / np.trace(pen)
        a = a + scale * pen
        b = b - scale * kernel_sum * np.outer(h[1:, 0], weights.sum(axis=1)).ravel()
    x, cond = _solve_symmetric(a, b)
    coef = np.zeros((n, nt))
    coef[0, 0] = kernel_sum
    coef[1:] = x.reshape(n - 1, nt)
    return coef, cond

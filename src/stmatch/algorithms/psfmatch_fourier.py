r"""Fourier-space PSF-matching kernels and frequency windows.

For a source PSF :math:`S` and a target PSF :math:`T` (unit sums, same odd
grid of :math:`N \times N` pixels, centres on the centre pixel) the matching
kernel is computed from their discrete Fourier transforms :math:`\hat S,
\hat T` on that grid:

* **Wiener** filter (Aniano et al. 2011, PASP 123, 1218, §2; Boucaud et al.
  2016, A&A 596, A63, eq. 7 for the Laplacian penalty):

  .. math::

      \hat K = W \cdot \frac{\hat T\, \hat S^{*}}{|\hat S|^2 + \rho\, R}, \qquad
      R = \max_f |\hat S|^2 \ \ (\text{penalty "none"}), \quad
      R = |\hat L|^2 \ \ (\text{penalty "laplacian"}),

  with :math:`\hat L(f_y, f_x) = 4 - 2\cos 2\pi f_y - 2\cos 2\pi f_x` the
  transform of the five-point Laplacian ``[[0,-1,0],[-1,4,-1],[0,-1,0]]`` and
  :math:`\rho` the ``regularization``. The Laplacian penalty vanishes at zero
  frequency and grows as :math:`|f|^4`, damping only the high frequencies where
  the source carries little power.
* **ratio** (thresholded inverse filter, Aniano et al. 2011):
  :math:`\hat K = W\, \hat T / \hat S` where :math:`|\hat S| > \rho \max|\hat S|`,
  and :math:`\hat K = 0` elsewhere.

:math:`W` is an optional radial low-pass window on the (centred) frequency
grid. The windows are split cosine bells of the normalised radius
:math:`r = |f| / r_{\max}`, with :math:`|f|` the distance from zero frequency in
frequency-grid cells and :math:`r_{\max} = (N - 1) / 2` (so :math:`r = 1` is the
Nyquist frequency along an axis):

.. math::

    W(r) = \begin{cases} 1 & r < \beta \\
           \tfrac12\left[1 + \cos\left(\pi\,\frac{r - \beta}{\alpha}\right)\right]
           & \beta \le r \le \beta + \alpha \\
           0 & r > \beta + \alpha \end{cases}

``"hann"`` is :math:`(\alpha, \beta) = (1, 0)`, ``"tukey"`` :math:`(\alpha, 1 -
\alpha)` (default :math:`\alpha = 0.4`), ``"cosine_bell"`` :math:`(\alpha, 0)`
(default :math:`\alpha = 0.5`) and ``"top_hat"`` :math:`(0, \beta)` (default
:math:`\beta = 0.5`).

The kernel is :math:`K = \mathcal F^{-1}[\hat K]`, with its origin at array
index ``(0, 0)``, cut to the requested odd size around that origin and scaled
to the requested sum.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import fft as sfft

__all__ = [
    "FOURIER_FILTERS",
    "WINDOWS",
    "cosine_bell_window",
    "fourier_kernels",
    "hann_window",
    "make_window",
    "split_cosine_bell_window",
    "top_hat_window",
    "tukey_window",
]

FOURIER_FILTERS = ("wiener", "ratio")
PENALTIES = ("none", "laplacian")


def _shape2(shape) -> tuple[int, int]:
    if np.ndim(shape) == 0:
        shape = (shape, shape)
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2 or any(n < 1 for n in shape):
        raise ValueError(f"window shape must be a positive int or a pair of them, got {shape}")
    return shape


def _fraction(value, name: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return v


def split_cosine_bell_window(shape, *, alpha: float, beta: float) -> np.ndarray:
    r"""Radial split cosine bell on a centred frequency grid (see the module notes).

    Parameters
    ----------
    shape : int or tuple of int
        Grid shape; the zero frequency is at ``((h - 1) / 2, (w - 1) / 2)``.
    alpha : float
        Width of the cosine taper as a fraction of :math:`r_{\max} = (\min(h, w) - 1) / 2`.
    beta : float
        Radius of the flat inner part as a fraction of :math:`r_{\max}`.

    Returns
    -------
    numpy.ndarray
        Window values in :math:`[0, 1]`.
    """
    h, w = _shape2(shape)
    alpha = _fraction(alpha, "alpha")
    beta = _fraction(beta, "beta")
    y = np.arange(h) - (h - 1) / 2.0
    x = np.arange(w) - (w - 1) / 2.0
    r_max = (min(h, w) - 1) / 2.0
    r = np.hypot(y[:, None], x[None, :]) / max(r_max, 1e-300)
    if alpha > 0:
        t = np.clip((r - beta) / alpha, 0.0, 1.0)
        out = 0.5 * (1.0 + np.cos(np.pi * t))
    else:
        out = np.ones((h, w))
    out[r < beta] = 1.0
    out[r > beta + alpha] = 0.0
    return out


def hann_window(shape) -> np.ndarray:
    """Hann window: a cosine taper from zero frequency to :math:`r = 1` (α = 1, β = 0)."""
    return split_cosine_bell_window(shape, alpha=1.0, beta=0.0)


def tukey_window(shape, alpha: float = 0.4) -> np.ndarray:
    """Tukey window: flat to :math:`r = 1 - α`, cosine taper to :math:`r = 1`."""
    return split_cosine_bell_window(shape, alpha=alpha, beta=1.0 - _fraction(alpha, "alpha"))


def cosine_bell_window(shape, alpha: float = 0.5) -> np.ndarray:
    """Cosine bell: a cosine taper from zero frequency to :math:`r = α` (β = 0)."""
    return split_cosine_bell_window(shape, alpha=alpha, beta=0.0)


def top_hat_window(shape, beta: float = 0.5) -> np.ndarray:
    """Top hat: one inside :math:`r = β`, zero outside (α = 0)."""
    return split_cosine_bell_window(shape, alpha=0.0, beta=beta)


WINDOWS: dict[str, Callable] = {
    "tukey": tukey_window,
    "hann": hann_window,
    "cosine_bell": cosine_bell_window,
    "top_hat": top_hat_window,
}


def make_window(window, shape) -> np.ndarray | None:
    """Resolve a ``window`` specification into a centred window array.

    Parameters
    ----------
    window : None, str, tuple or callable
        None (no window); a name in :data:`WINDOWS` (default parameter); a
        ``(name, parameter)`` pair, e.g. ``("tukey", 0.3)`` (``hann`` takes no
        parameter); or a callable ``f(shape) -> array`` with values in ``[0, 1]``.
    shape : tuple of int
        Grid shape.

    Returns
    -------
    numpy.ndarray or None
        Window with zero frequency at the centre, or None.

    Raises
    ------
    ValueError
        For an unknown name, a bad parameter, or a callable returning an array of
        the wrong shape or with values outside ``[0, 1]``.
    """
    if window is None:
        return None
    shape = _shape2(shape)
    if isinstance(window, str):
        func, args = _window_func(window), ()
    elif isinstance(window, tuple) and len(window) == 2 and isinstance(window[0], str):
        func, args = _window_func(window[0]), (window[1],)
        if func is hann_window:
            raise ValueError("the 'hann' window takes no parameter")
    elif callable(window):
        func, args = window, ()
    else:
        raise ValueError(
            f"window must be None, one of {sorted(WINDOWS)}, a (name, parameter) pair or a "
            f"callable, got {window!r}"
        )
    arr = np.asarray(func(shape, *args), dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"the window returned shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise ValueError("window values must be finite and lie in [0, 1]")
    return arr


def _window_func(name: str) -> Callable:
    try:
        return WINDOWS[name]
    except KeyError:
        raise ValueError(f"unknown window {name!r}; expected one of {sorted(WINDOWS)}") from None


def check_fourier_options(
    *, regularization, window, penalty, fourier_filter, check_values: bool = True
) -> float:
    """Validate the Fourier knobs (raises ValueError) and return the regularisation.

    With ``check_values=False`` only the names (filter, penalty, window) are checked.
    """
    if fourier_filter not in FOURIER_FILTERS:
        raise ValueError(f"unknown fourier_filter {fourier_filter!r}; expected {FOURIER_FILTERS}")
    if penalty not in PENALTIES:
        raise ValueError(f"unknown penalty {penalty!r}; expected one of {PENALTIES}")
    make_window(window, (3, 3))  # validates names and parameters
    if not check_values:
        return math.nan
    try:
        reg = float(regularization)
    except (TypeError, ValueError):
        raise ValueError(f"regularization must be a number, got {regularization!r}") from None
    if fourier_filter == "ratio":
        if penalty != "none":
            raise ValueError("penalty applies to the 'wiener' filter only, not to 'ratio'")
        if not (math.isfinite(reg) and 0.0 <= reg < 1.0):
            raise ValueError(f"the 'ratio' filter needs 0 <= regularization < 1, got {reg!r}")
    elif not (math.isfinite(reg) and reg > 0):
        raise ValueError(f"the 'wiener' filter needs regularization > 0, got {reg!r}")
    return reg


def _laplacian_power(n: int) -> np.ndarray:
    """:math:`|\\hat L|^2` of the five-point Laplacian on an ``n × n`` rfft grid."""
    fy = np.cos(2.0 * np.pi * sfft.fftfreq(n))[:, None]
    fx = np.cos(2.0 * np.pi * sfft.rfftfreq(n))[None, :]
    return (4.0 - 2.0 * fy - 2.0 * fx) ** 2


def fourier_kernels(
    sources,
    target,
    *,
    kernel_size: int,
    kernel_sum: float = 1.0,
    regularization: float = 1e-4,
    window=None,
    penalty: str = "none",
    fourier_filter: str = "wiener",
    workers: int | None = None,
) -> np.ndarray:
    r"""Fourier matching kernels for a stack of source PSFs (see the module notes).

    The stamps are used as they are: the transform grid is the stamp grid, so
    the kernel is the *circular* solution on that grid (zero-pad the stamps
    beforehand for a larger grid).

    Parameters
    ----------
    sources : numpy.ndarray
        ``(m, N, N)`` unit-sum source PSFs, centred on ``(N // 2, N // 2)``, ``N`` odd.
    target : numpy.ndarray
        ``(N, N)`` or ``(m, N, N)`` unit-sum target PSF(s), centred likewise.
    kernel_size : int
        Odd size ``k <= N`` of the returned kernels.
    kernel_sum : float
        Sum of every returned kernel.
    regularization : float
        :math:`\rho` of the module notes.
    window : None, str, tuple or callable
        Frequency window (see :func:`make_window`).
    penalty : {"none", "laplacian"}
        Wiener regularisation term.
    fourier_filter : {"wiener", "ratio"}
        Filter type.
    workers : int, optional
        Threads for the FFTs.

    Returns
    -------
    numpy.ndarray
        ``(m, k, k)`` kernels with origin at ``(k // 2, k // 2)``.

    Raises
    ------
    ValueError
        When a kernel sums to zero or less after cropping (regularisation or
        window too strong).
    """
    reg = check_fourier_options(
        regularization=regularization, window=window, penalty=penalty, fourier_filter=fourier_filter
    )
    s = np.asarray(sources, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    n = s.shape[-1]
    s_hat = sfft.rfft2(s, workers=workers)
    t_hat = sfft.rfft2(t, workers=workers)
    if t_hat.ndim == 2:
        t_hat = t_hat[None]
    if fourier_filter == "ratio":
        amp = np.abs(s_hat)
        keep = amp > reg * amp.max(axis=(1, 2), keepdims=True)
        k_hat = np.zeros_like(s_hat)
        np.divide(t_hat, s_hat, out=k_hat, where=keep)
    else:
        power = (s_hat.real**2) + (s_hat.imag**2)
        if penalty == "laplacian":
            reg_term = reg * _laplacian_power(n)[None]
        else:
            reg_term = reg * power.max(axis=(1, 2), keepdims=True)
        k_hat = t_hat * np.conj(s_hat) / (power + reg_term)
    win = make_window(window, (n, n))
    if win is not None:
        k_hat = k_hat * sfft.ifftshift(win)[:, : n // 2 + 1]
    full = sfft.irfft2(k_hat, s=(n, n), workers=workers)
    k = int(kernel_size)
    idx = (np.arange(k) - k // 2) % n
    kern = full[:, idx][:, :, idx]
    sums = kern.sum(axis=(1, 2))
    if not np.all(np.isfinite(sums)) or np.any(sums <= 1e-12):
        raise ValueError(
            "a Fourier matching kernel sums to zero or less (after cropping to "
            f"{k}x{k}); lower the regularization, use a wider window or a larger kernel"
        )
    return kern * (float(kernel_sum) / sums)[:, None, None]

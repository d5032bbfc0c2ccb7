"""Plain reference implementation of ZOGY eqs. 12-15 for the differential tests.

Written independently of :mod:`stmatch.algorithms.zogy` (which it must not import):
complex ``numpy.fft`` transforms of unpadded, periodic images, physical units,
the equations of Zackay, Ofek & Gal-Yam 2016 (ApJ 830, 27) typed in as printed,
no guards. Use it only with PSFs whose transforms do not underflow (e.g. one PSF
with a Gaussian sigma below ~1.5 px on a grid of ~100 px).
"""

import numpy as np


def centred_to_origin(stamp, shape):
    """Unit-sum stamp centred in an array of ``shape``, then ``ifftshift``-ed to (0, 0)."""
    stamp = np.asarray(stamp, dtype=np.float64)
    big = np.zeros(shape)
    h, w = stamp.shape
    y0 = shape[0] // 2 - h // 2
    x0 = shape[1] // 2 - w // 2
    big[y0 : y0 + h, x0 : x0 + w] = stamp / stamp.sum()
    return np.fft.ifftshift(big)


def reference_zogy(new, ref, psf_new, psf_ref, sigma_new, sigma_ref, f_new=1.0, f_ref=1.0):
    """D, P_D, F_D, S, F_S, k_n, k_r of eqs. 12-17 for periodic images.

    Returns a dict; ``psf_d``, ``k_n`` and ``k_r`` are full arrays with their origin at
    (0, 0).
    """
    shape = new.shape
    n_hat = np.fft.fft2(new)
    r_hat = np.fft.fft2(ref)
    pn_hat = np.fft.fft2(centred_to_origin(psf_new, shape))
    pr_hat = np.fft.fft2(centred_to_origin(psf_ref, shape))
    den = (
        sigma_new**2 * f_ref**2 * np.abs(pr_hat) ** 2
        + sigma_ref**2 * f_new**2 * np.abs(pn_hat) ** 2
    )
    d_hat = (f_ref * pr_hat * n_hat - f_new * pn_hat * r_hat) / np.sqrt(den)  # eq. 13
    f_d = f_ref * f_new / np.sqrt(sigma_new**2 * f_ref**2 + sigma_ref**2 * f_new**2)  # eq. 15
    pd_hat = f_ref * f_new * pr_hat * pn_hat / (f_d * np.sqrt(den))  # eq. 14
    s_hat = f_d * d_hat * np.conj(pd_hat)  # eq. 12 in Fourier space
    kn_hat = f_new * f_ref**2 * np.conj(pn_hat) * np.abs(pr_hat) ** 2 / den
    kr_hat = f_ref * f_new**2 * np.conj(pr_hat) * np.abs(pn_hat) ** 2 / den
    psf_d = np.fft.ifft2(pd_hat).real
    return {
        "d": np.fft.ifft2(d_hat).real,
        "psf_d": psf_d,
        "f_d": float(f_d),
        "s": np.fft.ifft2(s_hat).real,
        "f_s": float(f_d**2 * np.sum(psf_d**2)),
        "k_n": np.fft.ifft2(kn_hat).real,
        "k_r": np.fft.ifft2(kr_hat).real,
    }

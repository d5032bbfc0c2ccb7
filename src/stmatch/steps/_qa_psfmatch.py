"""QA figure of a PSF-matching run: kernel mosaic and encircled-energy curves."""

from __future__ import annotations

import numpy as np

from ..algorithms.psfmatch_metrics import encircled_energy, matched_psf


def _positions(kernel_model):
    """Up to five positions: the centre and the four corners of the kernel grid."""
    x, y = np.asarray(kernel_model.grid_x), np.asarray(kernel_model.grid_y)
    cx, cy = 0.5 * (x.min() + x.max()), 0.5 * (y.min() + y.max())
    picks = [int(np.argmin((x - cx) ** 2 + (y - cy) ** 2))]
    for px, py in ((x.min(), y.min()), (x.max(), y.min()), (x.min(), y.max()), (x.max(), y.max())):
        i = int(np.argmin((x - px) ** 2 + (y - py) ** 2))
        if i not in picks:
            picks.append(i)
    return picks


def psfmatch_figure(kernel_model, source, target, path):
    """Write a PNG: the kernels on their grid of positions (left) and the
    encircled energy of the matched PSF K ⊗ P_exposure vs the target PSF at the
    centre and corners (right, with their difference below).

    Parameters
    ----------
    kernel_model : stmatch.models.MatchingKernelModel
        The solved kernel (``data`` holds kernels at ``grid_x``, ``grid_y``).
    source, target : PsfSource
        The exposure and target PSFs (callables ``at(y, x)``).
    path : str
        Output PNG path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    kernels = np.asarray(kernel_model.data)
    gx, gy = np.asarray(kernel_model.grid_x), np.asarray(kernel_model.grid_y)
    nxg = np.unique(np.round(gx, 3)).size
    nyg = np.unique(np.round(gy, 3)).size
    h, w = kernels.shape[1:]
    mosaic = np.full((nyg * (h + 1) - 1, nxg * (w + 1) - 1), np.nan)
    order = np.lexsort((gx, gy))
    for n, i in enumerate(order):
        r, c = divmod(n, nxg)
        r = nyg - 1 - r  # y up
        mosaic[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = kernels[i]
    vmax = float(np.nanmax(np.abs(mosaic))) or 1.0

    fig = plt.figure(figsize=(12, 5.5))
    ax = fig.add_axes([0.04, 0.1, 0.44, 0.8])
    im = ax.imshow(mosaic, origin="upper", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    ax.set_title(f"Kernels on a {nxg} x {nyg} grid (x right, y up)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.04)

    top = fig.add_axes([0.61, 0.42, 0.37, 0.5])
    bottom = fig.add_axes([0.61, 0.1, 0.37, 0.28], sharex=top)
    r_max = 1.0
    for i in _positions(kernel_model):
        x, y = float(gx[i]), float(gy[i])
        t = target.at(y, x)
        m = matched_psf(kernels[i] / kernels[i].sum(), source.at(y, x))
        r_t, ee_t = encircled_energy(t)
        r_m, ee_m = encircled_energy(m)
        line = top.plot(r_m, ee_m, label=f"matched ({x:.0f}, {y:.0f})")[0]
        top.plot(r_t, ee_t, ls=":", color=line.get_color())
        r_max = max(r_max, 2.0 * float(r_t[np.searchsorted(ee_t, 0.999 * ee_t[-1])]))
        common = r_t[r_t <= r_m.max()]
        bottom.plot(
            common,
            np.interp(common, r_m, ee_m) - np.interp(common, r_t, ee_t),
            color=line.get_color(),
        )
    top.set_xlim(0.0, r_max)
    top.set_ylabel("encircled energy")
    top.set_title("Matched (solid) vs target (dotted)")
    top.legend(fontsize=7)
    bottom.axhline(0.0, color="k", lw=0.5)
    bottom.set_xlabel("radius (px)")
    bottom.set_ylabel("matched - target")
    fig.savefig(path, dpi=90)
    plt.close(fig)

"""QA figure of a ZOGY run: cutouts around the strongest detections."""

from __future__ import annotations

import math

import numpy as np


def _cut(img, y, x, half):
    """Cutout of ``2 half + 1`` pixels centred on (y, x), NaN outside the image."""
    out = np.full((2 * half + 1, 2 * half + 1), np.nan)
    ny, nx = img.shape
    y0, x0 = y - half, x - half
    sy = slice(max(0, y0), min(ny, y + half + 1))
    sx = slice(max(0, x0), min(nx, x + half + 1))
    out[sy.start - y0 : sy.stop - y0, sx.start - x0 : sx.stop - x0] = img[sy, sx]
    return out


def _limits(a):
    v = a[np.isfinite(a)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(v, [1.0, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def zogy_figure(science, template, diff, s_corr, catalog, path, *, n=9, half=15):
    """Write a PNG with, per detection (strongest first), cutouts of the science
    image, the template (on the science grid), D and S_corr.

    Parameters
    ----------
    science, template, diff, s_corr : numpy.ndarray
        Images on the science grid.
    catalog : astropy.table.Table
        Detections (columns x_peak, y_peak, s_corr, alpha, alpha_err, kind).
    path : str
        Output PNG path.
    n : int
        Most detections shown.
    half : int
        Half-size of the cutouts in pixels.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = list(catalog[: int(n)]) if catalog is not None else []
    titles = ("science", "template", "D", "S_corr")
    images = (science, template, diff, s_corr)
    nrow = max(1, len(rows))
    fig, axes = plt.subplots(nrow, 4, figsize=(9.0, 2.3 * nrow + 0.6), squeeze=False)
    if not rows:
        for ax in axes[0]:
            ax.set_axis_off()
        axes[0, 0].text(0.0, 0.5, "no detections", transform=axes[0, 0].transAxes)
    for r, row in enumerate(rows):
        y, x = int(row["y_peak"]), int(row["x_peak"])
        cuts = [_cut(np.asarray(img, dtype=float), y, x, half) for img in images]
        lo, hi = _limits(np.concatenate([cuts[0].ravel(), cuts[1].ravel()]))
        for c, (ax, cut, title) in enumerate(zip(axes[r], cuts, titles, strict=True)):
            if c < 2:
                vmin, vmax, cmap = lo, hi, "gray"
            else:
                lim = _limits(np.abs(cut))[1]
                vmin, vmax, cmap = -lim, lim, "RdBu_r"
            ax.imshow(cut, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=10)
        alpha, err = float(row["alpha"]), float(row["alpha_err"])
        flux = f"{alpha:.3g} ± {err:.2g}" if math.isfinite(alpha) else "n/a"
        axes[r, 0].set_ylabel(
            f"#{int(row['id'])} {row['kind']}\n({x}, {y})\nS_corr {float(row['s_corr']):.1f}\n"
            f"flux {flux}",
            fontsize=8,
        )
    fig.suptitle("ZOGY detections (strongest first)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)

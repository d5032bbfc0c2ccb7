"""QA figure of one background match: bin values, fitted model and residuals."""

from __future__ import annotations

import numpy as np

_MODEL_SAMPLES = 200  # model shown on at most this many points per axis


def bgmatch_figure(product, path):
    """Write a PNG of one exposure's match.

    Left: bin values of reference − exposure; middle: the model over the
    reference grid (same colour scale); right: bin residuals (value − model)
    divided by the bin errors. The title gives the diagnostics and the status.

    Parameters
    ----------
    product : stmatch.models.BackgroundModel
        The exposure's background model.
    path : str
        Output PNG path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    meta = product.meta.bgmatch
    ny, nx = product.image_shape
    values = np.asarray(product.bin_values, dtype=np.float64)
    at_bins = np.asarray(product.bin_model, dtype=np.float64)
    errors = np.asarray(product.bin_errors, dtype=np.float64)
    xs = np.linspace(0.0, nx - 1.0, min(nx, _MODEL_SAMPLES))
    ys = np.linspace(0.0, ny - 1.0, min(ny, _MODEL_SAMPLES))
    gx, gy = np.meshgrid(xs, ys)
    surface = product.evaluate(gx, gy)
    finite = values[np.isfinite(values)]
    both = np.concatenate([finite, surface.ravel()])
    vmin, vmax = np.percentile(both, [1, 99]) if both.size else (0.0, 1.0)
    extent = (-0.5, nx - 0.5, -0.5, ny - 0.5)
    with np.errstate(invalid="ignore", divide="ignore"):
        pulls = (values - at_bins) / errors
    lim = float(np.nanmax(np.abs(pulls))) if np.isfinite(pulls).any() else 1.0

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    panels = (
        (values, "bin values (reference − exposure)", "viridis", vmin, vmax),
        (surface, "model", "viridis", vmin, vmax),
        (pulls, "residual / error", "RdBu_r", -lim, lim),
    )
    for ax, (image, title, cmap, lo, hi) in zip(axes, panels, strict=True):
        if image.size:
            im = ax.imshow(image, origin="lower", extent=extent, cmap=cmap, vmin=lo, vmax=hi,
                           interpolation="nearest", aspect="equal")  # fmt: skip
            fig.colorbar(im, ax=ax, shrink=0.85)
        ax.set_title(title)
        ax.set_xlabel("x [reference pixels]")
    axes[0].set_ylabel("y [reference pixels]")

    def fmt(key):
        value = getattr(meta, key, None)
        return "n/a" if value is None else f"{float(value):.4g}"

    kind = product.kind + (f" order {product.order}" if product.kind == "polynomial" else "")
    fig.suptitle(
        f"{meta.exposure} → {meta.reference}: {kind}, {meta.status}"
        f"{' (flagged)' if meta.flagged else ''}; mean model {fmt('mean_model')}, fit_rms "
        f"{fmt('fit_rms')}, matched_mse/diffim_var {fmt('mse_ratio')}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)

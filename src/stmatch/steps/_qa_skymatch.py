"""QA figure of a sky-matching run: footprints coloured by level, overlap graph."""

from __future__ import annotations

import math

import numpy as np


def skymatch_figure(inputs, result, path):
    """Write a PNG: left, footprints coloured by solved level with the overlap graph;
    right, pair residuals normalised by their errors.

    Parameters
    ----------
    inputs : sequence of stmatch.algorithms.SkyInput
    result : stmatch.algorithms.SkyMatchResult
    path : str
        Output PNG path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection, PolyCollection

    polys, centres, ok = [], [], []
    ra0 = dec0 = None
    for inp in inputs:
        geo = inp.geometry
        if geo is None or not geo.ok:
            polys.append(None)
            centres.append((math.nan, math.nan))
            continue
        ra, dec = geo.footprint.ra, geo.footprint.dec
        if ra0 is None:
            ra0, dec0 = float(np.mean(ra)), float(np.mean(dec))
        # Local flat projection in arcmin (east to the left).
        xi = -((ra - ra0 + 180.0) % 360.0 - 180.0) * math.cos(math.radians(dec0)) * 60.0
        eta = (dec - dec0) * 60.0
        polys.append(np.column_stack([xi, eta]))
        centres.append((float(xi.mean()), float(eta.mean())))
        ok.append(len(polys) - 1)
    centres = np.array(centres)
    levels = result.image_level
    valid = result.valid[result.group_of_image]

    fig, (ax, axr) = plt.subplots(1, 2, figsize=(13, 6), gridspec_kw={"width_ratios": [3, 2]})
    good_polys = [polys[i] for i in ok]
    vals = np.array([levels[i] if valid[i] else np.nan for i in ok])
    coll = PolyCollection(
        good_polys,
        array=np.ma.masked_invalid(vals),
        cmap="viridis",
        edgecolors="k",
        linewidths=0.6,
        alpha=0.35,
    )
    ax.add_collection(coll)
    # Overlapping fills blend; the centre markers carry each image's own level.
    ax.scatter(
        centres[ok, 0],
        centres[ok, 1],
        c=vals,
        cmap="viridis",
        norm=coll.norm,
        s=120 if len(ok) <= 100 else 20,
        edgecolors="k",
        zorder=4,
    )
    if len(ok) <= 50:
        for i, v in zip(ok, vals, strict=True):
            if np.isfinite(v):
                ax.annotate(
                    f"{v:.3g}",
                    centres[i],
                    textcoords="offset points",
                    xytext=(0, 9),
                    ha="center",
                    fontsize=7,
                    zorder=5,
                )
    fig.colorbar(coll, ax=ax, label="sky level")
    segs, used = [], []
    for p in result.pairs:
        ca, cb = centres[p.a], centres[p.b]
        if np.isfinite(ca).all() and np.isfinite(cb).all():
            segs.append([ca, cb])
            used.append(p.used)
    if segs:
        colors = ["0.15" if u else "red" for u in used]
        ax.add_collection(LineCollection(segs, colors=colors, linewidths=0.8, alpha=0.7, zorder=3))
    skipped = [i for i in ok if not valid[i]]
    if skipped:
        ax.scatter(
            centres[skipped, 0],
            centres[skipped, 1],
            marker="x",
            color="red",
            label="skipped",
            zorder=3,
        )
        ax.legend(loc="upper right")
    ax.autoscale_view()
    ax.set_aspect("equal")
    ax.invert_xaxis()
    ax.set_xlabel("Δα cos δ [arcmin] (east left)")
    ax.set_ylabel("Δδ [arcmin]")
    ax.set_title(
        f"{result.method}: {len(inputs)} images, {result.n_components} component(s), "
        f"{sum(p.used for p in result.pairs)} pairs (red: unused)"
    )

    res = np.array([p.residual / p.diff_err for p in result.pairs if p.used and p.diff_err > 0])
    if res.size:
        axr.hist(res, bins=max(10, int(np.sqrt(res.size))), color="0.4")
        axr.set_xlabel("pair residual / error")
        axr.set_ylabel("pairs")
        axr.set_title(f"residuals: rms {np.sqrt(np.mean(res**2)):.2f}")
    else:
        axr.text(0.5, 0.5, "no pairs used", ha="center", va="center", transform=axr.transAxes)
        axr.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)

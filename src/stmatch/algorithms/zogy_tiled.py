r"""ZOGY on tiles: spatially varying PSFs and bounded memory.

:func:`.zogy.zogy` assumes one PSF per image. Real PSFs vary across the field,
and a whole-image float64 ZOGY of a 4096² pair with :math:`S_\mathrm{corr}` peaks
near 4 GB. :func:`zogy_tiled` cuts the images into *inner tiles* of
``tile_size`` pixels, extends each by a ``border`` on every side (clipped to the
image), evaluates both PSFs at the tile centre, runs :func:`.zogy.zogy` on the
extended tile (noise-padded where it touches the image edge) and keeps only
the inner tile. The inner tiles partition the image, so the results stitch
without overlap.

Why there are no seams: every output pixel of ZOGY is a convolution of the
inputs with kernels (:math:`D`: :math:`\hat P_r/\sqrt{\mathcal D}` and
:math:`\hat P_n/\sqrt{\mathcal D}`; :math:`S`: :math:`k_n, k_r`; :math:`V(S)`:
:math:`k_n^2, k_r^2`) whose power is concentrated within about one PSF stamp of
the origin. With a border at least as wide as the PSF stamps, an inner pixel
sees the same data whether it is computed from a tile or from the whole image
(identical to round-off for a constant PSF, up to the kernels' far wings, which
are below ~1e-4 of their peak). The default border is the larger PSF stamp size,
which also covers the ~10 σ of a Gaussian PSF rendered in a stamp of ±5 σ.

The memory of a tiled run is the inputs and the requested outputs, plus one
ZOGY on an extended tile (~12 float64 arrays of the padded tile size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .zogy import DEFAULT_SEED, zogy

__all__ = ["OUTPUTS", "Tile", "TiledZogyResult", "plan_tiles", "zogy_tiled"]

#: Image outputs :func:`zogy_tiled` can return (``var_s`` is float64).
OUTPUTS = ("d", "s", "s_corr", "alpha", "alpha_err", "var_s")


@dataclass(frozen=True)
class Tile:
    """One tile: ``inner`` is kept, ``outer`` (inner + border, clipped) is computed.

    Boxes are ``(y0, y1, x0, x1)`` half-open pixel index ranges; ``centre`` is the
    ``(y, x)`` pixel position of the inner tile's centre, where the PSFs are
    evaluated.
    """

    inner: tuple[int, int, int, int]
    outer: tuple[int, int, int, int]
    centre: tuple[float, float]

    @property
    def inner_in_outer(self) -> tuple[slice, slice]:
        """Slices of the inner tile within the outer one."""
        y0, y1, x0, x1 = self.inner
        oy, _, ox, _ = self.outer
        return slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox)


@dataclass(frozen=True, eq=False)
class TiledZogyResult:
    """Stitched products of :func:`zogy_tiled` (see :class:`.zogy.ZogyResult`).

    Image attributes that were not requested in ``outputs`` are None.

    Attributes
    ----------
    d, s, s_corr, alpha, alpha_err, var_s : numpy.ndarray or None
        Stitched images (``var_s`` float64, the others of ``dtype``).
    bad : numpy.ndarray
        Pixels within a kernel footprint of a non-finite input pixel (NaN outputs).
    psf_d : numpy.ndarray
        :math:`P_D` per tile, shape ``(n_tiles, h, w)`` (h, w the largest PSF stamp).
    f_d, f_s : numpy.ndarray
        :math:`F_D` and :math:`F_S` per tile (equal for all tiles with constant PSFs).
    kernel_n, kernel_r : numpy.ndarray
        :math:`k_n, k_r` per tile, shape ``(n_tiles, h, w)``.
    tiles : list of Tile
        The tiling, in row-major order.
    """

    d: np.ndarray | None
    s: np.ndarray | None
    s_corr: np.ndarray | None
    alpha: np.ndarray | None
    alpha_err: np.ndarray | None
    var_s: np.ndarray | None
    bad: np.ndarray
    psf_d: np.ndarray
    f_d: np.ndarray
    f_s: np.ndarray
    kernel_n: np.ndarray
    kernel_r: np.ndarray
    tiles: list


def _edges(n: int, size: int) -> list[int]:
    """Split ``n`` pixels into ``ceil(n/size)`` nearly equal runs (all <= size)."""
    k = max(1, math.ceil(n / size))
    return [round(i * n / k) for i in range(k + 1)]


def plan_tiles(shape, tile_size, border) -> list[Tile]:
    """Partition an image into inner tiles no larger than ``tile_size``, with borders.

    The image is split into :math:`\\lceil n / \\mathrm{tile\\_size} \\rceil` nearly
    equal runs along each axis (so no sliver tiles); each outer tile extends its
    inner tile by ``border`` pixels, clipped to the image.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    tile_size : int or tuple of int or None
        Largest inner tile size ``(ty, tx)`` (one int for both); None: one tile.
    border : int
        Border width in pixels (>= 0).

    Returns
    -------
    list of Tile
    """
    ny, nx = (int(v) for v in shape)
    if tile_size is None:
        ty, tx = ny, nx
    else:
        ty, tx = np.broadcast_to(np.asarray(tile_size), (2,))
        if int(ty) != ty or int(tx) != tx or ty < 1 or tx < 1:
            raise ValueError(f"tile_size must be a positive integer, got {tile_size!r}")
        ty, tx = int(ty), int(tx)
    if int(border) != border or border < 0:
        raise ValueError(f"border must be a non-negative integer, got {border!r}")
    border = int(border)
    tiles = []
    ey, ex = _edges(ny, ty), _edges(nx, tx)
    for y0, y1 in zip(ey[:-1], ey[1:], strict=True):
        for x0, x1 in zip(ex[:-1], ex[1:], strict=True):
            outer = (
                max(0, y0 - border),
                min(ny, y1 + border),
                max(0, x0 - border),
                min(nx, x1 + border),
            )
            tiles.append(Tile((y0, y1, x0, x1), outer, (0.5 * (y0 + y1 - 1), 0.5 * (x0 + x1 - 1))))
    return tiles


def _psf_for(psf, centre, name):
    if callable(psf):
        stamp = psf(*centre)
        if stamp is None:
            raise ValueError(f"{name}({centre[0]:.1f}, {centre[1]:.1f}) returned no PSF")
        return np.asarray(stamp)
    return np.asarray(psf)


def zogy_tiled(
    new,
    ref,
    psf_new,
    psf_ref,
    *,
    tile_size=None,
    border=None,
    sigma_new,
    sigma_ref,
    var_new=None,
    var_ref=None,
    flux_ratio=1.0,
    astrometric_noise=(0.0, 0.0),
    rng=None,
    dtype=np.float32,
    outputs=OUTPUTS,
    progress=None,
) -> TiledZogyResult:
    """Proper image subtraction (:func:`.zogy.zogy`) tile by tile, stitched.

    Parameters
    ----------
    new, ref : array_like
        Registered, background-subtracted images of one shape.
    psf_new, psf_ref : array_like or callable
        Odd, centred PSF stamps, or callables ``(y, x) -> stamp`` giving the PSF at
        a pixel position (evaluated at each tile centre).
    tile_size : int or tuple of int, optional
        Largest inner tile size; None (default) runs one tile on the whole image.
    border : int, optional
        Border around each inner tile; default the largest PSF stamp dimension
        (see the module docstring). With one tile the border is the noise padding.
    sigma_new, sigma_ref, var_new, var_ref, flux_ratio, astrometric_noise, dtype
        As for :func:`.zogy.zogy` (variance maps are cut per tile).
    rng : numpy.random.Generator or int, optional
        Source of the padding noise (default: a generator with a fixed seed).
    outputs : sequence of str
        Which images of :data:`OUTPUTS` to keep (the others are None); fewer
        outputs mean less memory.
    progress : callable, optional
        Called as ``progress(i, n_tiles, tile)`` after each tile.

    Returns
    -------
    TiledZogyResult

    Raises
    ------
    ValueError
        For the errors of :func:`.zogy.zogy` (with the tile named when tiled), an
        unknown output name, or PSF stamps larger than a tile plus its border.
    """
    new_a = np.asarray(new)
    ref_a = np.asarray(ref)
    if new_a.ndim != 2 or ref_a.shape != new_a.shape:
        raise ValueError(
            f"new and ref must be 2-D arrays of one shape, got {new_a.shape} and {ref_a.shape}"
        )
    unknown = set(outputs) - set(OUTPUTS)
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)}; choose from {OUTPUTS}")
    for name, v in (("var_new", var_new), ("var_ref", var_ref)):
        if v is not None and np.shape(v) != new_a.shape:
            raise ValueError(f"{name} has shape {np.shape(v)}, the images {new_a.shape}")
    shape = new_a.shape
    gen = (
        rng
        if isinstance(rng, np.random.Generator)
        else np.random.default_rng(DEFAULT_SEED if rng is None else rng)
    )
    dtype = np.dtype(dtype)

    single = tile_size is None
    if border is None:
        sizes = [np.shape(p) for p in (psf_new, psf_ref) if not callable(p)]
        if len(sizes) < 2:
            centre = ((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0)
            sizes = [
                _psf_for(p, centre, n).shape
                for p, n in ((psf_new, "psf_new"), (psf_ref, "psf_ref"))
            ]
        border = max(max(s) for s in sizes)
    tiles = plan_tiles(shape, tile_size, 0 if single else border)

    out = {
        name: np.empty(shape, dtype=np.float64 if name == "var_s" else dtype) for name in outputs
    }
    bad = np.zeros(shape, dtype=bool)
    psf_d, kern_n, kern_r, f_d, f_s = [], [], [], [], []
    for i, tile in enumerate(tiles):
        oy0, oy1, ox0, ox1 = tile.outer
        box = (slice(oy0, oy1), slice(ox0, ox1))
        pn = _psf_for(psf_new, tile.centre, "psf_new")
        pr = _psf_for(psf_ref, tile.centre, "psf_ref")
        try:
            res = zogy(
                new_a[box],
                ref_a[box],
                pn,
                pr,
                sigma_new=sigma_new,
                sigma_ref=sigma_ref,
                var_new=None if var_new is None else np.asarray(var_new)[box],
                var_ref=None if var_ref is None else np.asarray(var_ref)[box],
                flux_ratio=flux_ratio,
                astrometric_noise=astrometric_noise,
                pad=border,
                rng=gen,
                dtype=dtype,
            )
        except ValueError as exc:
            if single:
                raise
            raise ValueError(f"tile {i + 1}/{len(tiles)} {tile.outer}: {exc}") from None
        inner = tile.inner_in_outer
        iy0, iy1, ix0, ix1 = tile.inner
        dest = (slice(iy0, iy1), slice(ix0, ix1))
        for name, arr in out.items():
            arr[dest] = getattr(res, name)[inner]
        bad[dest] = res.bad[inner]
        psf_d.append(res.psf_d)
        kern_n.append(res.kernel_n)
        kern_r.append(res.kernel_r)
        f_d.append(res.f_d)
        f_s.append(res.f_s)
        del res
        if progress is not None:
            progress(i, len(tiles), tile)

    return TiledZogyResult(
        **{name: out.get(name) for name in OUTPUTS},
        bad=bad,
        psf_d=_stack(psf_d),
        f_d=np.asarray(f_d),
        f_s=np.asarray(f_s),
        kernel_n=_stack(kern_n),
        kernel_r=_stack(kern_r),
        tiles=tiles,
    )


def _stack(stamps) -> np.ndarray:
    """Stack odd centred stamps of possibly different sizes, zero-padded to the largest."""
    h = max(s.shape[0] for s in stamps)
    w = max(s.shape[1] for s in stamps)
    out = np.zeros((len(stamps), h, w))
    for k, s in enumerate(stamps):
        dy, dx = (h - s.shape[0]) // 2, (w - s.shape[1]) // 2
        out[k, dy : dy + s.shape[0], dx : dx + s.shape[1]] = s
    return out

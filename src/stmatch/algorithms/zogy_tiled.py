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

The tiles are independent: with a ``mapper`` (e.g. ``Engine.mapper`` of
:mod:`stmatch.steps._engine`) each runs as a task that receives only its cut-outs
(the images and variance maps over its outer box), its two PSF stamps (evaluated
at the tile centre here) and its own noise seed, and returns its inner results;
the stitching stays here. In a tiled run (``tile_size`` set), with or without a
mapper, tile :math:`i` draws its padding (and bad-pixel) noise from its own
generator, child :math:`i` of ``numpy.random.SeedSequence(seed).spawn(n_tiles)``
(:func:`tile_seeds`), so the result does not depend on where or in which order
the tiles run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .zogy import DEFAULT_SEED, zogy

__all__ = [
    "OUTPUTS",
    "Tile",
    "TileTask",
    "TiledZogyResult",
    "plan_tiles",
    "run_tile",
    "tile_seeds",
    "zogy_tiled",
]

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


def tile_seeds(rng, n_tiles: int) -> list[np.random.SeedSequence]:
    """One independent noise seed per tile, derived deterministically from ``rng``.

    Parameters
    ----------
    rng : None, int, numpy.random.SeedSequence or numpy.random.Generator
        None uses :data:`.zogy.DEFAULT_SEED`; a Generator supplies (and advances
        by) the entropy of a new seed sequence.
    n_tiles : int

    Returns
    -------
    list of numpy.random.SeedSequence
        ``SeedSequence(seed).spawn(n_tiles)``.
    """
    if rng is None:
        seq = np.random.SeedSequence(DEFAULT_SEED)
    elif isinstance(rng, np.random.SeedSequence):
        seq = np.random.SeedSequence(rng.entropy, spawn_key=rng.spawn_key)
    elif isinstance(rng, np.random.Generator):
        seq = np.random.SeedSequence([int(v) for v in rng.integers(0, 2**32, size=4)])
    elif isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        seq = np.random.SeedSequence(int(rng))
    else:
        raise ValueError(
            f"rng must be a numpy Generator, a SeedSequence, a non-negative int seed or None, "
            f"not {rng!r}"
        )
    return seq.spawn(int(n_tiles))


@dataclass(frozen=True, eq=False)
class TileTask:
    """Everything one tile needs (picklable: it can run in another process).

    Attributes
    ----------
    index, n_tiles : int
        Position of the tile in :func:`plan_tiles` order, and their number.
    tile : Tile
    new, ref, var_new, var_ref : numpy.ndarray or None
        Cut-outs over ``tile.outer``.
    psf_new, psf_ref : numpy.ndarray
        PSF stamps at ``tile.centre``.
    seed : numpy.random.SeedSequence
        Source of the tile's padding and bad-pixel noise.
    options : dict
        Keyword arguments of :func:`.zogy.zogy` (``sigma_new``, ``sigma_ref``,
        ``flux_ratio``, ``astrometric_noise``, ``pad``, ``dtype``).
    outputs : tuple of str
        Images of :data:`OUTPUTS` to return.
    """

    index: int
    n_tiles: int
    tile: Tile
    new: np.ndarray
    ref: np.ndarray
    var_new: np.ndarray | None
    var_ref: np.ndarray | None
    psf_new: np.ndarray
    psf_ref: np.ndarray
    seed: np.random.SeedSequence
    options: dict
    outputs: tuple


def run_tile(task: TileTask) -> dict:
    """ZOGY on one extended tile, cropped to its inner tile (a Dask task).

    Returns
    -------
    dict
        The requested images and ``bad`` over the inner tile (new arrays), and the
        tile's ``psf_d``, ``kernel_n``, ``kernel_r``, ``f_d``, ``f_s``.

    Raises
    ------
    ValueError
        The error of :func:`.zogy.zogy`, prefixed with the tile.
    """
    try:
        res = zogy(
            task.new,
            task.ref,
            task.psf_new,
            task.psf_ref,
            var_new=task.var_new,
            var_ref=task.var_ref,
            rng=np.random.default_rng(task.seed),
            **task.options,
        )
    except ValueError as exc:
        raise ValueError(f"tile {task.index + 1}/{task.n_tiles} {task.tile.outer}: {exc}") from None
    inner = task.tile.inner_in_outer
    out = {name: getattr(res, name)[inner].copy() for name in (*task.outputs, "bad")}
    out.update(
        psf_d=res.psf_d, kernel_n=res.kernel_n, kernel_r=res.kernel_r, f_d=res.f_d, f_s=res.f_s
    )
    return out


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
    mapper=None,
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
    rng : numpy.random.Generator, numpy.random.SeedSequence or int, optional
        Source of the padding noise (default: a fixed seed). Without
        ``tile_size`` it is handed to :func:`.zogy.zogy` as is; with tiles, tile
        ``i`` uses child ``i`` of :func:`tile_seeds`.
    outputs : sequence of str
        Which images of :data:`OUTPUTS` to keep (the others are None); fewer
        outputs mean less memory.
    progress : callable, optional
        Called as ``progress(i, n_tiles, tile)`` after each tile is stitched.
    mapper : callable, optional
        ``mapper(fn, items) -> list`` (results in order, e.g. ``Engine.mapper``):
        the tiles of a tiled run (more than one tile) run as tasks
        :func:`run_tile` of :class:`TileTask` items. None (default): one tile after
        another here, each made and stitched before the next (lowest memory). The
        result is the same, bit for bit.

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
    if mapper is not None and not callable(mapper):
        raise ValueError(f"mapper must be callable or None, got {type(mapper).__name__}")
    for name, v in (("var_new", var_new), ("var_ref", var_ref)):
        if v is not None and np.shape(v) != new_a.shape:
            raise ValueError(f"{name} has shape {np.shape(v)}, the images {new_a.shape}")
    shape = new_a.shape
    dtype = np.dtype(dtype)
    outputs = tuple(name for name in OUTPUTS if name in outputs)

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
    options = dict(
        sigma_new=sigma_new,
        sigma_ref=sigma_ref,
        flux_ratio=flux_ratio,
        astrometric_noise=astrometric_noise,
        pad=border,
        dtype=dtype,
    )
    if single:
        centre = tiles[0].centre
        res = zogy(
            new_a,
            ref_a,
            _psf_for(psf_new, centre, "psf_new"),
            _psf_for(psf_ref, centre, "psf_ref"),
            var_new=var_new,
            var_ref=var_ref,
            rng=np.random.default_rng(rng) if isinstance(rng, np.random.SeedSequence) else rng,
            **options,
        )
        results = iter([{name: getattr(res, name) for name in (*outputs, *_PER_TILE, "bad")}])
        del res
    else:
        seeds = tile_seeds(rng, len(tiles))
        var_n = None if var_new is None else np.asarray(var_new)
        var_r = None if var_ref is None else np.asarray(var_ref)

        def task(i, tile):
            box = (slice(tile.outer[0], tile.outer[1]), slice(tile.outer[2], tile.outer[3]))
            return TileTask(
                index=i,
                n_tiles=len(tiles),
                tile=tile,
                new=new_a[box],
                ref=ref_a[box],
                var_new=None if var_n is None else var_n[box],
                var_ref=None if var_r is None else var_r[box],
                psf_new=_psf_for(psf_new, tile.centre, "psf_new"),
                psf_ref=_psf_for(psf_ref, tile.centre, "psf_ref"),
                seed=seeds[i],
                options=options,
                outputs=outputs,
            )

        if mapper is None or len(tiles) == 1:
            results = (run_tile(task(i, tile)) for i, tile in enumerate(tiles))
        else:
            # Tasks share their machine with other tasks: one FFT thread each.
            options = {**options, "fft_workers": 1}
            results = mapper(run_tile, [task(i, tile) for i, tile in enumerate(tiles)])
            if len(results) != len(tiles):
                raise RuntimeError(
                    f"the mapper returned {len(results)} results for {len(tiles)} tiles"
                )
            results = iter(results)

    out = {
        name: np.empty(shape, dtype=np.float64 if name == "var_s" else dtype) for name in outputs
    }
    bad = np.zeros(shape, dtype=bool)
    per_tile = {name: [] for name in _PER_TILE}
    for i, tile in enumerate(tiles):
        part = next(results)
        iy0, iy1, ix0, ix1 = tile.inner
        dest = (slice(iy0, iy1), slice(ix0, ix1))
        for name, arr in out.items():
            arr[dest] = part[name]
        bad[dest] = part["bad"]
        for name in _PER_TILE:
            per_tile[name].append(part[name])
        del part
        if progress is not None:
            progress(i, len(tiles), tile)

    return TiledZogyResult(
        **{name: out.get(name) for name in OUTPUTS},
        bad=bad,
        psf_d=_stack(per_tile["psf_d"]),
        f_d=np.asarray(per_tile["f_d"]),
        f_s=np.asarray(per_tile["f_s"]),
        kernel_n=_stack(per_tile["kernel_n"]),
        kernel_r=_stack(per_tile["kernel_r"]),
        tiles=tiles,
    )


#: Products of :func:`run_tile` that are kept per tile (not stitched).
_PER_TILE = ("psf_d", "kernel_n", "kernel_r", "f_d", "f_s")


def _stack(stamps) -> np.ndarray:
    """Stack odd centred stamps of possibly different sizes, zero-padded to the largest."""
    h = max(s.shape[0] for s in stamps)
    w = max(s.shape[1] for s in stamps)
    out = np.zeros((len(stamps), h, w))
    for k, s in enumerate(stamps):
        dy, dx = (h - s.shape[0]) // 2, (w - s.shape[1]) // 2
        out[k, dy : dy + s.shape[0], dx : dx + s.shape[1]] = s
    return out

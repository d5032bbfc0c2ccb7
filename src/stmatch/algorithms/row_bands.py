r"""Row blocks and row bands of the spatially varying convolution.

:func:`~stmatch.algorithms.convolve_varying.convolve_image` and
:func:`~stmatch.algorithms.variance_propagation.convolve_variance` compute

.. math::

    O(y, x) = \sum_g P_g(y, x)\, \mathcal{F}_x^{-1}\Big[\sum_{s \in g} Y_s(y)\,
              \mathcal{F}_y^{-1}\big(\hat I\, \hat K_s\big)\Big]

(Alard 2000, A&AS 144, 363, §2; module notes of
:mod:`~stmatch.algorithms.convolve_varying`) one *block* of output rows at a time:
block :math:`[r_0, r_1)` reads the input rows :math:`[r_0 - h_y, r_1 + h_y)`
(:math:`h_y` the kernel half-height; rows beyond the image mirrored or zero), is
padded by :math:`h_x` columns, and is transformed in an array of one fast FFT size
shared by all blocks. Because every block sees exactly the rows its kernel
footprint reaches, the blocks are independent and the result is the linear
(not circular) convolution of the whole image.

A *band* is a run of consecutive blocks. It needs only its rows plus
:math:`h_y` halo rows of the padded input, its global row offset (the spatial
terms :math:`B_s(x, y)` are functions of full-image coordinates) and the kernel,
so bands can run anywhere (:func:`convolve_band`, a module-level task). Band
boundaries fall on block boundaries and every block is computed by the same code
with the same transform sizes, so the bands reproduce the whole-image result
bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft

__all__ = [
    "BandTask",
    "band_rows_for",
    "convolve_band",
    "convolve_in_bands",
    "convolve_rows",
    "input_rows",
    "plan_bands",
    "row_chunk",
]

_WORKERS = -1  # scipy.fft threads: all CPUs (os.cpu_count())


def _reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices mirrored about the first and last pixel (numpy's ``reflect`` padding)."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m >= n, period - m, m)


def _auto_chunk(h: int) -> int:
    """Rows per block: transforms of about 256 rows (or ``4 h``) stay in cache."""
    return sfft.next_fast_len(max(256, 4 * h)) - 2 * (h // 2)


def row_chunk(ny: int, kernel_height: int, chunk=None) -> int:
    """Rows of output per block for an image of ``ny`` rows.

    Parameters
    ----------
    ny : int
        Image rows.
    kernel_height : int
        Kernel stamp height ``h`` (odd).
    chunk : int, optional
        Requested rows per block; None: transforms of about 256 rows (at least
        ``4 h``).

    Returns
    -------
    int
        ``min(chunk, ny)``.
    """
    c = _auto_chunk(int(kernel_height)) if chunk is None else int(chunk)
    return max(1, min(c, int(ny)))


def band_rows_for(
    ny: int, kernel_height: int, n_workers: int, *, per_worker: int = 4, min_heights: int = 4
) -> int:
    """Rows per band for ``n_workers`` task slots.

    About ``per_worker`` bands per slot (so that slow and fast workers even out),
    each at least ``min_heights`` kernel heights tall (so the halo rows, read
    twice, stay a small fraction). :func:`plan_bands` rounds the result to
    whole blocks.

    Parameters
    ----------
    ny : int
        Image rows.
    kernel_height : int
        Kernel stamp height.
    n_workers : int
        Task slots (``Engine.n_workers``).
    per_worker, min_heights : int
        See above.

    Returns
    -------
    int
    """
    n_bands = max(1, int(per_worker) * max(1, int(n_workers)))
    return max(math.ceil(int(ny) / n_bands), int(min_heights) * int(kernel_height), 1)


def plan_bands(ny: int, kernel_height: int, band_rows, *, chunk=None) -> list[tuple[int, int]]:
    """Split ``ny`` output rows into bands of whole blocks.

    Parameters
    ----------
    ny : int
        Image rows.
    kernel_height : int
        Kernel stamp height.
    band_rows : int
        Wanted rows per band; rounded to the nearest whole number of blocks (at
        least one, :func:`row_chunk`), so that each band is computed exactly as the
        same rows of the whole image.
    chunk : int, optional
        Rows per block (see :func:`row_chunk`).

    Returns
    -------
    list of tuple of int
        Half-open row ranges ``(r0, r1)`` covering ``[0, ny)`` in order.
    """
    if isinstance(band_rows, bool) or not isinstance(band_rows, (int, np.integer)) or band_rows < 1:
        raise ValueError(f"band_rows must be a positive number of rows, got {band_rows!r}")
    c = row_chunk(ny, kernel_height, chunk)
    rows = c * max(1, round(int(band_rows) / c))
    return [(r0, min(r0 + rows, int(ny))) for r0 in range(0, int(ny), rows)]


def input_rows(arr, bad, fill: str, r0: int, r1: int, hy: int) -> np.ndarray:
    """Input rows ``[r0 - hy, r1 + hy)`` as the convolution reads them.

    Rows beyond the image are mirrored (``fill="reflect"``) or zero
    (``fill="zero"``); bad pixels (``bad`` True, or None for none) are zero. The
    array keeps the input's data type (a new array).
    """
    ny = arr.shape[0]
    rows = np.arange(r0 - hy, r1 + hy)
    ri = _reflect_index(rows, ny) if fill == "reflect" else rows
    row_out = (ri < 0) | (ri >= ny)
    ri = np.clip(ri, 0, ny - 1)
    out = arr[ri]
    if bad is not None:
        out[bad[ri]] = 0
    if fill == "zero":
        out[row_out] = 0
    return out


def convolve_rows(
    source, r0, r1, nx, kernels, groups, fill, out_dtype, chunk, workers=_WORKERS
) -> np.ndarray:
    r"""Output rows ``[r0, r1)``, block by block (module notes).

    Parameters
    ----------
    source : callable
        ``source(b0, b1)``: input rows ``[b0 - hy, b1 + hy)`` (global rows) as
        :func:`input_rows` gives them.
    r0, r1 : int
        Global output rows; ``r0`` is a multiple of ``chunk`` (blocks start at
        ``r0, r0 + chunk, ...``).
    nx : int
        Image columns.
    kernels : numpy.ndarray
        ``(n, h, w)`` term kernels.
    groups : list
        ``(members, post)`` pairs; ``members``: ``(s, y_factor)`` with ``y_factor``
        over rows ``[r0, r1)`` (or None for 1); ``post(a, b, c)`` multiplies in place
        the real block ``c`` of rows ``[r0 + a, r0 + b)`` (or None).
    fill : {"reflect", "zero"}
    out_dtype : numpy.dtype
    chunk : int
        Rows per block of the whole image (:func:`row_chunk`): fixes the transform
        size, so every block is the same computation wherever it runs.
    workers : int
        Threads of the FFTs (``scipy.fft`` ``workers``; -1: all CPUs). The
        threads share out independent 1-D transforms: the result does not depend
        on their number.

    Returns
    -------
    numpy.ndarray
        ``(r1 - r0, nx)`` of ``out_dtype`` (float64 sums).
    """
    n, h, w = kernels.shape
    hy, hx = h // 2, w // 2
    out = np.empty((r1 - r0, nx), dtype=out_dtype)
    fy = sfft.next_fast_len(chunk + 2 * hy)
    fx = sfft.next_fast_len(nx + 2 * hx, real=True)
    nkx = fx // 2 + 1
    ex = np.exp(-2j * np.pi * np.outer(np.arange(w) - hx, np.arange(nkx)) / fx)
    ey = np.exp(-2j * np.pi * np.outer(np.arange(fy), np.arange(h) - hy) / fy)
    kx_terms = [kernels[s] @ ex for s in range(n)]  # (h, nkx) each
    cached = n * fy * nkx * 16 <= 1 << 28
    khat = [ey @ k for k in kx_terms] if cached else None
    ci = np.arange(-hx, nx + hx)
    ci = _reflect_index(ci, nx) if fill == "reflect" else ci
    col_out = (ci < 0) | (ci >= nx)
    ci = np.clip(ci, 0, nx - 1)
    direct = out_dtype == np.float64

    for b0 in range(r0, r1, chunk):
        b1 = min(b0 + chunk, r1)
        a0, a1 = b0 - r0, b1 - r0  # rows of this band
        buf = np.zeros((fy, fx), dtype=np.float64)
        blk = buf[: b1 - b0 + 2 * hy, : ci.size]
        blk[:, hx : hx + nx] = source(b0, b1)
        blk[:, :hx] = blk[:, ci[:hx] + hx]
        blk[:, hx + nx :] = blk[:, ci[hx + nx :] + hx]
        if fill == "zero":
            blk[:, col_out] = 0.0
        spec = sfft.rfft2(buf, workers=workers, overwrite_x=True)
        del buf, blk
        prod = np.empty_like(spec)
        acc = out[a0:a1] if direct else np.empty((b1 - b0, nx))
        for g, (members, post) in enumerate(groups):
            mixed = None
            for s, y_factor in members:
                if cached:
                    np.multiply(khat[s], spec, out=prod)
                else:
                    np.matmul(ey, kx_terms[s], out=prod)
                    prod *= spec
                part = sfft.ifft(prod, axis=0, workers=workers, overwrite_x=True)
                part = part[hy : hy + b1 - b0]
                if y_factor is not None:
                    part *= y_factor[a0:a1, None]
                if mixed is None:  # copy: the next term reuses the transform's buffer
                    mixed = part if len(members) == 1 else part.copy()
                else:
                    mixed += part
                del part
            full = sfft.irfft(mixed, n=fx, axis=1, workers=workers, overwrite_x=True)
            c = full[:, hx : hx + nx]
            if post is not None:
                post(a0, a1, c)
            if g == 0:
                acc[...] = c
            else:
                acc += c
            del mixed, full, c
        if not direct:
            out[a0:a1] = acc
    return out


@dataclass(frozen=True, eq=False)
class BandTask:
    """Everything one band needs (picklable: send it to any worker).

    Attributes
    ----------
    rows : numpy.ndarray
        Input rows ``[r0 - hy, r1 + hy)`` from :func:`input_rows` (input data type,
        bad pixels and zero-filled rows already zero).
    r0, r1 : int
        Global output rows of the band.
    nx : int
        Image columns.
    kernels : numpy.ndarray
        ``(n, h, w)`` kernels convolved with the input.
    weights : object
        Has ``groups(r0, r1)``: the ``groups`` of :func:`convolve_rows` for rows
        ``[r0, r1)``, the spatial weights evaluated at global rows.
    fill : str
    dtype : numpy.dtype
        Output type.
    chunk : int
        Rows per block of the whole image.
    fft_workers : int
        FFT threads (1 for tasks on Dask: a worker has one core per task slot;
        -1: all CPUs).
    """

    rows: np.ndarray
    r0: int
    r1: int
    nx: int
    kernels: np.ndarray
    weights: object
    fill: str
    dtype: np.dtype
    chunk: int
    fft_workers: int = 1


def convolve_band(task: BandTask) -> np.ndarray:
    """Output rows ``[task.r0, task.r1)`` of the convolution (a Dask task).

    Returns
    -------
    numpy.ndarray
        ``(r1 - r0, nx)`` of ``task.dtype``; equal, bit for bit, to the same rows of
        the whole-image result.
    """
    hy = task.kernels.shape[1] // 2
    start = task.r0 - hy  # global row of task.rows[0]

    def source(b0, b1):
        return task.rows[b0 - hy - start : b1 + hy - start]

    groups = task.weights.groups(task.r0, task.r1)
    return convolve_rows(
        source,
        task.r0,
        task.r1,
        task.nx,
        task.kernels,
        groups,
        task.fill,
        np.dtype(task.dtype),
        task.chunk,
        task.fft_workers,
    )


def convolve_in_bands(arr, bad, kernels, weights, fill, out_dtype, chunk, *, mapper, band_rows):
    """Whole-image convolution computed band by band (``mapper`` or a local loop).

    Parameters
    ----------
    arr, bad : numpy.ndarray
        Input and its bad mask (or None).
    kernels, weights, fill, out_dtype
        As in :class:`BandTask`.
    chunk : int or None
        Rows per block (None: automatic, :func:`row_chunk`).
    mapper : callable or None
        ``mapper(fn, items) -> list`` of results in order (e.g.
        ``Engine.mapper(...)``), the tasks' FFTs single-threaded; None runs the
        bands here, one after another, with threaded FFTs.
    band_rows : int or None
        Rows per band (rounded to whole blocks); None: about 8 bands
        (:func:`band_rows_for` with 2 task slots).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` of ``out_dtype``.
    """
    ny, nx = arr.shape
    h = kernels.shape[1]
    hy = h // 2
    c = row_chunk(ny, h, chunk)
    if band_rows is None:
        band_rows = band_rows_for(ny, h, 2)
    bands = plan_bands(ny, h, band_rows, chunk=c)

    threads = _WORKERS if mapper is None else 1

    def task(r0, r1):
        rows = input_rows(arr, bad, fill, r0, r1, hy)
        return BandTask(
            rows, r0, r1, nx, kernels, weights, fill, np.dtype(out_dtype), c, fft_workers=threads
        )

    out = np.empty((ny, nx), dtype=out_dtype)
    if mapper is None:
        for r0, r1 in bands:
            out[r0:r1] = convolve_band(task(r0, r1))
        return out
    results = mapper(convolve_band, [task(r0, r1) for r0, r1 in bands])
    if len(results) != len(bands):
        raise RuntimeError(f"the mapper returned {len(results)} results for {len(bands)} bands")
    for (r0, r1), rows in zip(bands, results, strict=True):
        out[r0:r1] = rows
    return out

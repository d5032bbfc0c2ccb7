r"""The data model of a PSF, or a grid of PSFs over a detector.

Conventions (the ``psf_model-1.0.0`` schema):

- ``data`` has shape ``(n_psf, ny, nx)`` with ``ny`` and ``nx`` odd; the PSF is
  centred on the centre pixel :math:`(c_y, c_x) = (n_y // 2, n_x // 2)`.
- ``grid_x[i]``, ``grid_y[i]``: the detector position (0-based pixels, pixel
  centres at integers) where stamp ``i`` applies. A single PSF may have NaN
  positions (valid anywhere).
- ``meta.psf.oversampling`` :math:`k`: samples per detector pixel along each
  axis. Every sample is the *pixel-integrated* PSF (an effective PSF, Anderson &
  King 2000, PASP 112, 1360): the value at a sample is the fraction of the
  star's flux that a detector pixel centred there would receive. The
  detector-sampled PSF centred on the centre pixel is therefore the sub-array
  :math:`P_{mn} = \mathrm{data}[i, c_y + k m, c_x + k n]` (stride :math:`k`,
  *not* a sum over :math:`k \times k` blocks, which would integrate over the
  pixel twice); see `PsfModel.detector_stamps`.
- ``meta.psf.normalization = "unit_sum"``: the detector-sampled PSF sums to
  one, so a stamp with oversampling :math:`k` sums to :math:`k^2` (each of the
  :math:`k^2` interleaved detector-sampled sub-grids sums to one; exactly one
  for :math:`k = 1`). `PsfModel.from_arrays` and `read_psf_file` rescale every
  stamp to that sum.

`read_psf_file` reads our own files (ASDF, or FITS written by stdatamodels)
and the FITS files of stpsf/webbpsf (PSF grids from ``psf_grid`` and single
PSFs from ``calc_psf``) and of the STDPSF format, and returns a checked,
normalised `PsfModel`.
"""

import math
from pathlib import Path

import numpy as np
from astropy.io import fits

from ._base import StmatchDataModel, schema_uri

__all__ = ["NORMALIZATION", "PSF_SOURCES", "PsfModel", "read_psf_file"]

PSF_SOURCES = ("file", "analytic", "empirical", "stpsf")
"""Values of ``meta.psf.source``."""

NORMALIZATION = "unit_sum"
"""The normalisation every `PsfModel` made here has (see the module docstring)."""

_META_TYPES = {
    "fwhm": float,
    "instrument": str,
    "detector": str,
    "filter": str,
    "n_stars": int,
    "description": str,
    "source_file": str,
    "pixel_scale": float,
}


class PsfModel(StmatchDataModel):
    """A PSF, or a grid of PSFs that apply at given detector positions.

    Attributes follow the ``psf_model-1.0.0`` schema (see the module docstring
    for the exact sampling and normalisation conventions):

    - ``data``: float32 ``(n_psf, ny, nx)``, odd-sized stamps centred on the
      centre pixel (FITS extension ``SCI``).
    - ``grid_x``, ``grid_y``: float64 ``(n_psf,)`` detector positions (0-based
      x and y) of the stamps (``GRID_X``, ``GRID_Y``).
    - ``meta.psf``: ``oversampling``, ``normalization``, ``source``, and the
      optional ``fwhm`` (detector pixels), ``instrument``, ``detector``,
      ``filter``, ``n_stars``, ``source_file`` and ``description``.
    - ``meta.stmatch``: stmatch provenance (``stmatch_meta-1.0.0``).

    Build one with `from_arrays`, read one with `read_psf_file` (which also
    reads stpsf/webbpsf FITS files), or open a saved one with
    `stmatch.models.open`.
    """

    schema_url = schema_uri("psf_model", "1.0.0")

    @classmethod
    def from_arrays(
        cls,
        stamps,
        x=None,
        y=None,
        *,
        oversampling=1,
        source="analytic",
        pixel_integrated=True,
        **meta,
    ):
        """Build a checked, normalised PSF model from stamps.

        Parameters
        ----------
        stamps : array_like
            One PSF ``(ny, nx)`` or a grid of PSFs ``(n_psf, ny, nx)``; odd
            sizes, finite values, each stamp with a positive sum, centred on
            the centre pixel ``(ny // 2, nx // 2)``.
        x, y : float or array_like, optional
            Detector positions (0-based pixels) of the stamps, one per stamp.
            Required for a grid; for a single PSF they default to NaN (the PSF
            applies everywhere).
        oversampling : int, optional
            Samples per detector pixel along each axis, ``k >= 1``.
        source : str, optional
            One of `PSF_SOURCES`.
        pixel_integrated : bool, optional
            Whether each oversampled sample already is the pixel-integrated
            PSF (an effective PSF, as stpsf grids and photutils ePSFs are).
            If False (an optical PSF sampled ``k`` times finer than the
            pixels, like stpsf's ``OVERSAMP`` extension), the stamps are
            convolved with the ``k x k`` pixel box,
            :math:`E_{ij} = \\sum_{|a|,|b| \\le (k-1)/2} P_{i+a,j+b}`, which
            needs an odd ``k``. Ignored for ``k = 1``.
        **meta
            Optional ``meta.psf`` entries: ``fwhm`` (detector pixels),
            ``instrument``, ``detector``, ``filter``, ``n_stars``,
            ``description``, ``source_file``, ``pixel_scale`` (arcsec per
            detector pixel; lets a step resample a PSF made for another
            pixel scale). None values are left out.

        Returns
        -------
        PsfModel
            Stamps as float32, each rescaled so that it sums to
            ``oversampling**2`` (``meta.psf.normalization = "unit_sum"``).

        Raises
        ------
        ValueError
            If the stamps are not 2-D or 3-D, have an even size, non-finite
            values, a non-positive sum or a peak far from the centre pixel; if
            positions are missing for a grid or their number does not match;
            or if an option has a wrong value.
        TypeError
            If ``meta`` holds an unknown entry.
        """
        unknown = sorted(set(meta) - set(_META_TYPES))
        if unknown:
            raise TypeError(
                f"PsfModel.from_arrays: unknown meta.psf entries {unknown}; "
                f"allowed are {sorted(_META_TYPES)}"
            )
        k = _check_oversampling(oversampling)
        if source not in PSF_SOURCES:
            raise ValueError(f"PSF source must be one of {PSF_SOURCES}, not {source!r}")

        data = _as_stamps(stamps)
        _check_stamps(data, k)
        if k > 1 and not pixel_integrated:
            data = _integrate_over_pixel(data, k)
        data = _normalise(data, k)
        grid_x, grid_y = _positions(x, y, data.shape[0])

        model = cls()
        model.data = data.astype(np.float32)
        model.grid_x = grid_x
        model.grid_y = grid_y
        psf = {"oversampling": k, "normalization": NORMALIZATION, "source": source}
        for key, value in meta.items():
            if value is not None:
                psf[key] = _meta_value(key, value)
        model.meta.psf = psf
        return model

    @property
    def n_psf(self):
        """int: Number of stamps (0 when there is no data)."""
        return 0 if self.data is None else int(self.data.shape[0])

    @property
    def oversampling(self):
        """int: ``meta.psf.oversampling`` (1 when absent)."""
        value = self.meta.psf.oversampling if self.meta.hasattr("psf") else None
        return 1 if value is None else int(value)

    def positions(self):
        """Return the detector positions of the stamps.

        Returns
        -------
        x, y : numpy.ndarray
            float64 arrays of length `n_psf` (copies); NaN where absent.
        """
        n = self.n_psf
        out = []
        for values in (self.grid_x, self.grid_y):
            if values is None:
                out.append(np.full(n, np.nan))
            else:
                out.append(np.array(values, dtype=np.float64))
        return out[0], out[1]

    def detector_stamps(self):
        """Return the stamps at detector sampling, centred and summing to one.

        For oversampling ``k`` the detector-sampled stamp is the stride-``k``
        sub-array through the centre pixel,
        ``data[i, c_y % k :: k, c_x % k :: k]`` with ``(c_y, c_x) =
        (ny // 2, nx // 2)``; it has ``2 (c // k) + 1`` pixels along each
        axis, is centred on its own centre pixel and is rescaled to sum to one.

        Returns
        -------
        numpy.ndarray
            float64 ``(n_psf, my, mx)``.
        """
        self.check()
        data = np.asarray(self.data, dtype=np.float64)
        k = self.oversampling
        cy, cx = data.shape[1] // 2, data.shape[2] // 2
        sub = data[:, cy % k :: k, cx % k :: k].copy()
        sub /= sub.sum(axis=(1, 2), keepdims=True)
        return sub

    def check(self):
        """Check that the model follows the conventions of its schema.

        Raises
        ------
        ValueError
            If ``data`` is missing, not 3-D, even-sized, not finite, has a
            stamp with a non-positive sum or a peak far from the centre; if
            ``meta.psf.oversampling`` is not an integer >= 1; or if the
            positions are missing for a grid, have the wrong length or are
            not finite for a grid.
        """
        if self.data is None:
            raise ValueError("PsfModel has no data (PSF stamps)")
        k = _check_oversampling(self.oversampling)
        data = np.asarray(self.data)
        if data.ndim != 3:
            raise ValueError(f"PsfModel.data must be 3-D (n_psf, ny, nx), got {data.ndim}-D")
        _check_stamps(data, k)
        n = data.shape[0]
        for name in ("grid_x", "grid_y"):
            values = getattr(self, name)
            if values is None:
                if n > 1:
                    raise ValueError(
                        f"PsfModel with a grid of {n} PSFs has no {name}: a grid needs "
                        "the detector position of every PSF"
                    )
                continue
            values = np.asarray(values)
            if values.shape != (n,):
                raise ValueError(
                    f"PsfModel.{name} has shape {values.shape}, expected ({n},): one "
                    "position per PSF stamp"
                )
            if n > 1 and not np.all(np.isfinite(values)):
                raise ValueError(f"PsfModel.{name} of a grid must be finite")


# --- checks and conversions ----------------------------------------------------------


def _check_oversampling(oversampling):
    if isinstance(oversampling, (bool, np.bool_)):
        raise ValueError(f"oversampling must be an integer >= 1, not {oversampling!r}")
    try:
        k = int(oversampling)
    except (TypeError, ValueError):
        raise ValueError(f"oversampling must be an integer >= 1, not {oversampling!r}") from None
    if k != oversampling or k < 1:
        raise ValueError(f"oversampling must be an integer >= 1, not {oversampling!r}")
    return k


def _as_stamps(stamps):
    """Return ``stamps`` as a float64 ``(n_psf, ny, nx)`` array (a copy)."""
    array = np.asarray(stamps)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"PSF stamps must be a real numeric array, not {array.dtype}")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(
            f"PSF stamps must be a 2-D image (ny, nx) or a 3-D stack (n_psf, ny, nx), got "
            f"{array.ndim}-D with shape {array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError("no PSF stamps given (the stack is empty)")
    return np.array(array, dtype=np.float64)


def _check_stamps(data, k):
    """Check size, finiteness, sums and centring of a ``(n, ny, nx)`` stack."""
    n, ny, nx = data.shape
    if ny % 2 == 0 or nx % 2 == 0:
        raise ValueError(
            f"PSF stamps must have an odd number of rows and columns with the PSF centred on "
            f"the centre pixel, got {ny} x {nx}. Regenerate the PSF with an odd size (stpsf: "
            "an odd fov_pixels and, for oversampled PSFs, an odd oversample, e.g. "
            "psf_grid(fov_pixels=101, oversample=3); or use the detector-sampled PSF), or "
            "re-centre it on the centre pixel of an odd-sized stamp"
        )
    values = np.asarray(data)
    bad = ~np.isfinite(values)
    if bad.any():
        index = int(np.flatnonzero(bad.any(axis=(1, 2)))[0])
        raise ValueError(
            f"PSF stamp {index} has {int(bad[index].sum())} non-finite (NaN or infinite) "
            "values; replace them (e.g. by 0 outside the PSF) before use"
        )
    sums = values.sum(axis=(1, 2), dtype=np.float64)
    if not np.all(sums > 0):
        index = int(np.flatnonzero(~(sums > 0))[0])
        raise ValueError(f"PSF stamp {index} has a non-positive sum ({sums[index]:g})")
    # A peak far from the centre pixel, with little signal at the centre, is a PSF
    # that is not centred (often one in FFT order, centre at pixel (0, 0)).
    reach = max(k, min(ny, nx) // 4)
    for index in range(n):
        stamp = values[index]
        py, px = np.unravel_index(int(np.argmax(stamp)), (ny, nx))
        far = abs(py - ny // 2) > reach or abs(px - nx // 2) > reach
        if far and stamp[ny // 2, nx // 2] < 0.5 * stamp[py, px]:
            raise ValueError(
                f"PSF stamp {index} peaks at pixel (y, x) = ({py}, {px}), far from the centre "
                f"pixel ({ny // 2}, {nx // 2}); stamps must be centred on the centre pixel (a "
                "PSF with its centre at pixel (0, 0), as FFTs order it, needs "
                "numpy.fft.fftshift first)"
            )


def _integrate_over_pixel(data, k):
    """Convolve each stamp with the ``k x k`` pixel box (odd ``k``), zero outside."""
    if k % 2 == 0:
        raise ValueError(
            f"cannot integrate an optical PSF over the pixel for an even oversampling ({k}): "
            "use a detector-sampled or pixel-integrated PSF, or an odd oversampling"
        )
    h = k // 2
    n, ny, nx = data.shape
    padded = np.pad(data, ((0, 0), (h, h), (h, h)))
    out = np.zeros_like(data)
    for a in range(k):
        for b in range(k):
            out += padded[:, a : a + ny, b : b + nx]
    return out


def _normalise(data, k):
    """Scale every stamp to sum to ``k**2``."""
    sums = data.sum(axis=(1, 2), keepdims=True)
    return data * (k * k / sums)


def _positions(x, y, n):
    """Return float64 ``grid_x``, ``grid_y`` of length ``n`` from user input."""
    if x is None and y is None:
        if n > 1:
            raise ValueError(f"a grid of {n} PSFs needs the detector position (x, y) of every PSF")
        return np.full(1, np.nan), np.full(1, np.nan)
    if x is None or y is None:
        raise ValueError("give both x and y positions of the PSFs, or neither")
    out = []
    for name, values in (("x", x), ("y", y)):
        try:
            values = np.atleast_1d(np.asarray(values, dtype=np.float64))
        except (TypeError, ValueError):
            raise ValueError(f"PSF positions {name} must be numbers") from None
        if values.shape != (n,):
            raise ValueError(
                f"PSF positions {name} have shape {values.shape}, expected ({n},): one "
                "position per PSF stamp"
            )
        if n > 1 and not np.all(np.isfinite(values)):
            raise ValueError(f"PSF positions {name} of a grid must be finite")
        out.append(values.copy())
    return out[0], out[1]


def _meta_value(key, value):
    kind = _META_TYPES[key]
    if kind is float:
        value = float(value)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"PSF {key} must be a positive finite number, not {value!r}")
        return value
    if kind is int:
        if isinstance(value, (bool, np.bool_)) or int(value) != value or int(value) < 0:
            raise ValueError(f"PSF {key} must be an integer >= 0, not {value!r}")
        return int(value)
    return str(value)


# --- reading files -------------------------------------------------------------------


def read_psf_file(path, *, ext=None, oversampling=None, grid_order="auto"):
    """Read a PSF file into a checked, normalised `PsfModel`.

    Accepted files:

    - a `PsfModel` saved by stmatch (ASDF, or FITS written by stdatamodels);
    - a PSF grid written by stpsf/webbpsf ``psf_grid``: a FITS primary HDU
      with a ``(n_psf, ny, nx)`` cube of pixel-integrated PSFs, the oversampling
      in ``OVERSAMP``, the number of PSFs in ``NUM_PSFS`` (or ``NUM_PSF``), the
      detector position of PSF ``i`` in ``DET_YX{i}`` as the string
      ``"(y, x)"`` (0-based pixels), and ``INSTRUME``, ``DETECTOR``,
      ``FILTER``;
    - a single PSF written by stpsf/webbpsf ``calc_psf``: the extensions
      ``DET_DIST``, ``DET_SAMP``, ``OVERDIST``, ``OVERSAMP`` are used in this
      order of preference (detector-sampled first; the oversampled ones are
      optical PSFs that are integrated over the pixel here, which needs an odd
      oversampling, read from ``DET_SAMP`` or ``OVERSAMP``), the position
      from ``DET_X``/``DET_Y``;
    - an STDPSF file (Anderson's effective-PSF grids of one detector:
      ``NXPSFS``, ``NYPSFS``, 1-based ``IPSFXnn``/``JPSFYnn``, oversampling 4);
    - any other FITS image (2-D: one PSF; 3-D: a grid, which needs
      ``DET_YX{i}``), with oversampling ``OVERSAMP`` (default 1) and taken to
      be pixel-integrated.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    ext : int or str, optional
        FITS extension (index or ``EXTNAME``) to read the PSF from, instead
        of the automatic choice.
    oversampling : int, optional
        Oversampling to use instead of the one in the file's header.
    grid_order : {"auto", "header", "sorted"}, optional
        How the cube of an stpsf/webbpsf grid is ordered when the ``DET_YX``
        keywords are not listed sorted by y, then x (the order photutils
        ``GriddedPSFModel`` keeps its PSFs in). ``"header"``: PSF ``i`` is at
        ``DET_YX{i}``. ``"sorted"``: PSF ``i`` is at the ``i``-th position
        after sorting the positions by y, then x — stpsf writes its grids so
        (it saves the cube of its ``GriddedPSFModel`` but the keywords in the
        order it computed the PSFs). ``"auto"`` takes ``"sorted"`` for files
        written by stpsf and ``"header"`` otherwise, and warns when the two
        differ.

    Returns
    -------
    PsfModel
        With ``meta.psf.source`` ``"stpsf"`` for stpsf/webbpsf files and
        ``"file"`` for other foreign files (kept for our own files) and
        ``meta.psf.source_file`` the file name.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file cannot be read as FITS or ASDF, is not a PSF, or holds
        PSFs that break the conventions (even sizes, non-finite values, a
        grid without positions, ...).
    """
    from ._psf_files import _read_asdf, _read_fits, _sniff  # here: _psf_files imports PsfModel

    if grid_order not in ("auto", "header", "sorted"):
        raise ValueError(f"grid_order must be 'auto', 'header' or 'sorted', not {grid_order!r}")
    if oversampling is not None:
        oversampling = _check_oversampling(oversampling)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PSF file not found: '{path}'")
    kind = _sniff(path)
    if kind == "asdf":
        model = _read_asdf(path)
    else:
        try:
            hdulist = fits.open(path, memmap=False)
        except Exception as exc:  # noqa: BLE001 - any failure is "not readable"
            raise ValueError(f"{path.name}: not a readable FITS or ASDF PSF file ({exc})") from None
        with hdulist:
            try:
                model = _read_fits(hdulist, path, ext, oversampling, grid_order)
            except (KeyError, IndexError, TypeError, OSError) as exc:
                raise ValueError(f"{path.name}: cannot read a PSF from this file ({exc})") from None
    if oversampling is not None and model.oversampling != oversampling:
        model.meta.psf.oversampling = oversampling
    _finish(model, path)
    return model


def _finish(model, path):
    """Check a model read from a file and normalise its stamps (in place)."""
    model.check()
    k = model.oversampling
    data = np.asarray(model.data, dtype=np.float64)
    sums = data.sum(axis=(1, 2))
    if model.meta.psf.normalization != NORMALIZATION or not np.allclose(
        sums, k * k, rtol=1e-5, atol=0
    ):
        model.data = _normalise(data, k).astype(np.float32)
        model.meta.psf.normalization = NORMALIZATION
    if model.meta.psf.oversampling is None:
        model.meta.psf.oversampling = k
    if model.meta.psf.source is None:
        model.meta.psf.source = "file"
    if model.meta.psf.source_file is None:
        model.meta.psf.source_file = path.name

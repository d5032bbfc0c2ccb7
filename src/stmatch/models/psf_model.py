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
import re
import warnings
from pathlib import Path

import asdf
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
}

# Extensions of a single stpsf/webbpsf calc_psf file, most preferred first:
# detector sampled with distortion and detector effects, detector sampled, then
# the oversampled (not pixel-integrated) ones.
_STPSF_EXTENSIONS = ("DET_DIST", "DET_SAMP", "OVERDIST", "OVERSAMP")

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan", re.IGNORECASE)


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
            ``description``, ``source_file``. None values are left out.

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


def _sniff(path):
    """Return ``"asdf"`` or ``"fits"`` from the first bytes (or the name) of a file."""
    with open(path, "rb") as stream:
        head = stream.read(16)
    if head.startswith(b"#ASDF"):
        return "asdf"
    if head.startswith((b"SIMPLE", b"\x1f\x8b")):
        return "fits"
    if path.suffix.lower() == ".asdf":
        return "asdf"
    return "fits"


def _read_asdf(path):
    try:
        with asdf.open(path, memmap=False, lazy_load=False) as af:
            model_type = _tree_model_type(af.tree)
            if model_type != "PsfModel":
                what = model_type or "tree without meta.model_type"
                raise ValueError(f"{path.name}: ASDF file holds a {what}, not a PsfModel")
            model = PsfModel(af).copy()
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure is "not readable"
        raise ValueError(f"{path.name}: not a readable ASDF PSF file ({exc})") from None
    model.meta.filename = path.name
    return model


def _tree_model_type(tree):
    try:
        value = tree["meta"]["model_type"]
    except (KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


def _read_fits(hdulist, path, ext, oversampling, grid_order):
    if not len(hdulist):
        raise ValueError(f"{path.name}: empty FITS file")
    primary = hdulist[0].header
    if primary.get("DATAMODL") == "PsfModel":
        return PsfModel(hdulist)
    if ext is None and "NXPSFS" in primary and "NYPSFS" in primary:
        return _read_stdpsf(hdulist[0], path, oversampling)
    if ext is not None:
        try:
            hdu = hdulist[ext]
        except (KeyError, IndexError):
            raise ValueError(f"{path.name}: no extension {ext!r}") from None
    else:
        hdu = _choose_hdu(hdulist, path)
    if _has_grid_keywords(hdu.header) or _ndim(hdu) == 3:
        return _read_grid(hdu, primary, path, oversampling, grid_order)
    return _read_single(hdu, primary, path, oversampling)


def _ndim(hdu):
    return int(hdu.header.get("NAXIS", 0)) if hdu.is_image else 0


def _has_grid_keywords(header):
    return any(str(key).startswith("DET_YX") for key in header)


def _choose_hdu(hdulist, path):
    """The HDU to read: a grid, a preferred stpsf extension, or the first image."""
    if _has_grid_keywords(hdulist[0].header) and _ndim(hdulist[0]) in (2, 3):
        return hdulist[0]
    names = {str(hdu.header.get("EXTNAME", "")).strip().upper(): hdu for hdu in hdulist}
    for name in _STPSF_EXTENSIONS:
        if name in names and _ndim(names[name]) in (2, 3):
            return names[name]
    for hdu in hdulist:
        if _ndim(hdu) in (2, 3):
            return hdu
    raise ValueError(f"{path.name}: no 2-D or 3-D image (PSF) in this FITS file")


def _image(hdu, path):
    data = hdu.data
    if data is None:
        raise ValueError(f"{path.name}: the PSF extension holds no data")
    data = np.asarray(data)
    if data.dtype.kind not in "fiu":
        raise ValueError(f"{path.name}: PSF data must be numeric, not {data.dtype}")
    return np.asarray(data, dtype=np.float64)


def _by_stpsf(*headers, names=("STPSF", "WEBBPSF")):
    """Whether any header mentions one of ``names`` (stpsf, or its former name webbpsf)."""
    for header in headers:
        text = header.tostring().upper()
        if any(name in text for name in names):
            return True
    return False


def _header_meta(header, primary, path):
    """``meta.psf`` entries from FITS headers (the PSF's own first)."""
    meta = {"source_file": path.name}
    for key, name in (("INSTRUME", "instrument"), ("DETECTOR", "detector"), ("FILTER", "filter")):
        value = header.get(key)
        if value is None:
            value = primary.get(key)
        if isinstance(value, str) and value.strip():
            meta[name] = value.strip()
    return meta


def _header_int(header, key, path):
    value = header.get(key)
    if value is None:
        return None
    try:
        return _check_oversampling(value)
    except ValueError:
        raise ValueError(
            f"{path.name}: header keyword {key} = {value!r} is not an integer >= 1"
        ) from None


def _parse_yx(value, key, path):
    numbers = _NUMBER.findall(str(value))
    if len(numbers) != 2:
        raise ValueError(
            f"{path.name}: cannot read the PSF position {key} = {value!r}; expected the string "
            "'(y, x)'"
        )
    return float(numbers[0]), float(numbers[1])


def _read_grid(hdu, primary, path, oversampling, grid_order):
    header = hdu.header
    data = _image(hdu, path)
    if data.ndim == 2:
        data = data[None]
    n = data.shape[0]
    declared = header.get("NUM_PSFS", header.get("NUM_PSF"))
    if declared is not None and int(declared) != n:
        raise ValueError(
            f"{path.name}: header says NUM_PSFS = {declared} but the data cube holds {n} PSFs"
        )
    keys = [f"DET_YX{i}" for i in range(n)]
    missing = [key for key in keys if key not in header]
    if missing and (n > 1 or len(missing) < n):
        raise ValueError(
            f"{path.name}: a grid of {n} PSFs needs the position of each PSF in the header "
            f"keywords DET_YX0..DET_YX{n - 1} (string '(y, x)'); missing: {missing[:5]}"
        )
    if missing:
        x = y = None
    else:
        yx = np.array([_parse_yx(header[key], key, path) for key in keys])
        y, x = yx[:, 0], yx[:, 1]
        if n > 1:
            stpsf = _by_stpsf(header, primary, names=("STPSF",))
            x, y = _grid_order(x, y, grid_order, stpsf, path)
    k = oversampling or _header_int(header, "OVERSAMP", path) or 1
    by_stpsf = _by_stpsf(header, primary) or not missing
    meta = _header_meta(header, primary, path)
    meta["description"] = (
        f"{'stpsf/webbpsf ' if by_stpsf else ''}PSF grid of {n} PSF(s), oversampling {k}, "
        f"read from {path.name}"
    )
    return PsfModel.from_arrays(
        data, x, y, oversampling=k, source="stpsf" if by_stpsf else "file", **meta
    )


def _grid_order(x, y, grid_order, by_stpsf, path):
    """Pair the cube's PSFs with the DET_YX positions (see `read_psf_file`)."""
    order = np.lexsort((x, y))
    if np.array_equal(order, np.arange(x.size)) or grid_order == "header":
        return x, y
    if grid_order == "auto":
        grid_order = "sorted" if by_stpsf else "header"
        warnings.warn(
            f"{path.name}: the DET_YX keywords are not listed sorted by y, then x; the cube is "
            f"taken to be in {'sorted' if grid_order == 'sorted' else 'keyword'} order "
            f"({'as stpsf writes it' if by_stpsf else 'the file was not written by stpsf'}). "
            "Pass grid_order='header' or 'sorted' to read_psf_file to choose.",
            UserWarning,
            stacklevel=4,
        )
    if grid_order == "sorted":
        return x[order], y[order]
    return x, y


def _read_single(hdu, primary, path, oversampling):
    header = hdu.header
    data = _image(hdu, path)
    extname = str(header.get("EXTNAME", "")).strip().upper()
    by_stpsf = extname in _STPSF_EXTENSIONS or _by_stpsf(header, primary)
    if oversampling is not None:
        k = oversampling
    elif extname.startswith("DET_"):
        k = 1  # stpsf's detector-sampled extensions (their DET_SAMP keyword is the calc's)
    elif extname in ("OVERSAMP", "OVERDIST"):
        k = _header_int(header, "DET_SAMP", path) or _header_int(header, "OVERSAMP", path) or 1
    else:
        k = _header_int(header, "OVERSAMP", path) or 1
    optical = extname in ("OVERSAMP", "OVERDIST") and k > 1
    x = y = None
    if "DET_X" in header and "DET_Y" in header:
        x, y = float(header["DET_X"]), float(header["DET_Y"])
    meta = _header_meta(header, primary, path)
    meta["description"] = (
        f"single {'stpsf/webbpsf ' if by_stpsf else ''}PSF"
        f"{' from extension ' + extname if extname else ''}, oversampling {k}, "
        f"read from {path.name}"
    )
    return PsfModel.from_arrays(
        data,
        x,
        y,
        oversampling=k,
        source="stpsf" if by_stpsf else "file",
        pixel_integrated=not optical,
        **meta,
    )


def _read_stdpsf(hdu, path, oversampling):
    header = hdu.header
    data = _image(hdu, path)
    if data.ndim == 2:
        data = data[None]
    nx, ny = int(header["NXPSFS"]), int(header["NYPSFS"])
    if nx * ny != data.shape[0]:
        raise ValueError(
            f"{path.name}: STDPSF file with {data.shape[0]} PSFs for a {ny} x {nx} grid "
            "(several detectors in one file); extract the PSFs of one detector first"
        )
    try:
        xs = np.array([float(header[f"IPSFX{i:02d}"]) for i in range(1, nx + 1)]) - 1.0
        ys = np.array([float(header[f"JPSFY{j:02d}"]) for j in range(1, ny + 1)]) - 1.0
    except KeyError as exc:
        raise ValueError(
            f"{path.name}: STDPSF file without the grid positions ({exc.args[0]})"
        ) from None
    # The cube runs over x fastest, then y; positions are 1-based in the header.
    y, x = (v.ravel() for v in np.meshgrid(ys, xs, indexing="ij"))
    k = oversampling or 4
    meta = _header_meta(header, header, path)
    meta["description"] = f"STDPSF grid of {nx} x {ny} PSFs, oversampling {k}, from {path.name}"
    return PsfModel.from_arrays(data, x, y, oversampling=k, source="file", **meta)


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

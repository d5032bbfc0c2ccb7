"""Readers of PSF files in foreign formats, behind `~stmatch.models.read_psf_file`.

The FITS files of stpsf/webbpsf (PSF grids from ``psf_grid`` and single PSFs
from ``calc_psf``), STDPSF grids and plain FITS images, and `PsfModel` files
saved as ASDF: each reader returns an unchecked `PsfModel`, which
`~stmatch.models.read_psf_file` checks and normalises.
"""

import re
import warnings

import asdf
import numpy as np

from .psf_model import PsfModel, _check_oversampling

# Extensions of a single stpsf/webbpsf calc_psf file, most preferred first:
# detector sampled with distortion and detector effects, detector sampled, then
# the oversampled (not pixel-integrated) ones.
_STPSF_EXTENSIONS = ("DET_DIST", "DET_SAMP", "OVERDIST", "OVERSAMP")

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan", re.IGNORECASE)


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


def _header_meta(header, primary, path, k=1):
    """``meta.psf`` entries from FITS headers (the PSF's own first).

    ``PIXELSCL`` (arcsec per sample of this extension, stpsf's keyword) times the
    oversampling ``k`` gives the detector pixel scale.
    """
    meta = {"source_file": path.name}
    scale = header.get("PIXELSCL", primary.get("PIXELSCL"))
    if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0:
        meta["pixel_scale"] = float(scale) * int(k)
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
    meta = _header_meta(header, primary, path, k)
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
    meta = _header_meta(header, primary, path, k)
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

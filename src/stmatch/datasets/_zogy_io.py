"""Writing a synthetic ZOGY science/template pair to disk.

`write_zogy_pair` saves the two images of a `ZogyPair`, optionally its PSF
stamps as FITS files, and an association with ``science`` and ``template``
members.
"""

from pathlib import Path

import numpy as np

from ._asn import write_association

__all__ = ["write_zogy_pair"]


def write_zogy_pair(
    pair,
    directory,
    *,
    asn_name="zogy_asn.json",
    psf_files=True,
    product_name="zogy",
    asn_type="image3",
    fmt="fits",
):
    """
    Write a ZOGY pair, its association and (optionally) its PSF stamps.

    The association has one product whose members are the science image
    (``exptype: "science"``) and the template (``exptype: "template"``), each
    with its own ``group_id``.  It loads with `jwst.associations.load_asn` and
    with ``jwst.datamodels.ModelLibrary(path, asn_exptypes=["science", "template"])``.

    Parameters
    ----------
    pair : ZogyPair
        Output of `make_zogy_pair` (not modified: copies are saved).
    directory : str or os.PathLike
        Output directory (created if needed).
    asn_name : str, optional
        File name of the association.
    psf_files : bool, optional
        Also write the PSF stamps as FITS files (2-D float32 primary HDU)
        ``zogy_psf_science.fits`` and ``zogy_psf_template.fits``.
    product_name : str, optional
        Name of the association product.
    asn_type : str, optional
        ``asn_type`` of the association.
    fmt : {"fits", "asdf"}, optional
        Format of the images (the extension of ``meta.filename`` is replaced).

    Returns
    -------
    dict
        `pathlib.Path` values for ``"science"``, ``"template"``, ``"asn"``,
        ``"psf_science"`` and ``"psf_template"`` (None without ``psf_files``)
        and ``"directory"``.
    """
    from astropy.io import fits

    if fmt not in ("fits", "asdf"):
        raise ValueError("fmt must be 'fits' or 'asdf'")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"directory": directory}
    members = []
    for role, model in (("science", pair.science), ("template", pair.template)):
        name = Path(model.meta.filename).with_suffix(f".{fmt}").name
        with model.copy() as copy:
            copy.save(str(directory / name))
        paths[role] = directory / name
        members.append({"expname": name, "exptype": role, "group_id": f"zogy_{role}"})
    if paths["science"] == paths["template"]:
        raise ValueError("the science and template models have the same file name")

    for role, psf in (("science", pair.psf_science), ("template", pair.psf_template)):
        key = f"psf_{role}"
        if not psf_files:
            paths[key] = None
            continue
        hdu = fits.PrimaryHDU(np.asarray(psf, dtype=np.float32))
        hdu.header["PSFROLE"] = (role, "image this PSF belongs to")
        hdu.header["PSFCEN1"] = (psf.shape[1] // 2, "0-based x of the PSF centre pixel")
        hdu.header["PSFCEN2"] = (psf.shape[0] // 2, "0-based y of the PSF centre pixel")
        paths[key] = directory / f"zogy_psf_{role}.fits"
        hdu.writeto(paths[key], overwrite=True)

    paths["asn"] = write_association(
        directory / asn_name,
        members,
        product_name=product_name,
        asn_type=asn_type,
        asn_rule="stmatch_zogy",
    )
    return paths

"""Association files for synthetic data (one product, loadable by jwst)."""

import json
from pathlib import Path


def write_association(path, members, *, product_name, asn_type="image3", asn_rule):
    """Write a one-product association JSON that ``jwst.associations.load_asn`` and
    ``jwst.datamodels.ModelLibrary`` accept.

    Parameters
    ----------
    path : str or Path
        Association file to write.
    members : list of dict
        Members (``expname``, ``exptype``, optionally ``group_id``).
    product_name : str
        Name of the product.
    asn_type, asn_rule : str
        Association type and rule recorded in the file.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    try:
        from stmatch import __version__ as code_version
    except ImportError:  # pragma: no cover
        code_version = "0"
    asn = {
        "asn_type": str(asn_type),
        "asn_rule": str(asn_rule),
        "asn_id": "a3001",
        "asn_pool": "synthetic",
        "version_id": None,
        "code_version": str(code_version or "0"),
        "target": "1",
        "program": "00001",
        "products": [{"name": product_name, "members": members}],
    }
    path = Path(path)
    path.write_text(json.dumps(asn, indent=2) + "\n")
    return path

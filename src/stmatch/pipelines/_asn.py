"""Difference-imaging associations: make them, write them, read them.

A difference-imaging association is an ordinary jwst association (JSON) whose
products each list one or more members of ``exptype`` ``science`` and exactly one
of ``exptype`` ``template``::

    {"asn_type": "diffim", "products": [{"name": "field1", "members": [
        {"expname": "a_cal.fits", "exptype": "science"},
        {"expname": "b_cal.fits", "exptype": "science"},
        {"expname": "deep_i2d.fits", "exptype": "template"}]}]}

Member paths are relative to the association's directory (or absolute).
`make_diffim_association` builds one with jwst's ``asn_from_list``; ``stmatch asn``
is its command line.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DiffimProduct",
    "make_diffim_association",
    "read_diffim_association",
    "save_association",
]

SCIENCE, TEMPLATE = "science", "template"


@dataclass(frozen=True)
class DiffimProduct:
    """One product of a difference-imaging association.

    Attributes
    ----------
    name : str
        Product name (base name of the combined catalog).
    template : str
        Path of the template.
    science : tuple of str
        Paths of the science exposures, in association order.
    """

    name: str
    template: str
    science: tuple


def _paths(values, what):
    if isinstance(values, (str, os.PathLike)):
        values = [values]
    if not isinstance(values, Sequence) or not values:
        raise ValueError(f"give at least one {what} file")
    return [Path(v) for v in values]


def _member_name(path, base):
    """``path`` relative to ``base`` when possible, else absolute."""
    path = Path(path).resolve()
    if base is None:
        return str(path)
    try:
        return os.path.relpath(path, Path(base).resolve())
    except ValueError:  # another drive
        return str(path)


def make_diffim_association(science, template, *, product_name=None, relative_to=None):
    """Build a difference-imaging association with jwst's ``asn_from_list``.

    Parameters
    ----------
    science : str, Path or sequence of them
        Science exposures (members of ``exptype`` ``science``).
    template : str or Path
        The template (the one member of ``exptype`` ``template``).
    product_name : str, optional
        Product name (default ``"diffim"``).
    relative_to : str or Path, optional
        Directory the association will be written to: member paths are made
        relative to it when possible. Default: absolute paths.

    Returns
    -------
    jwst.associations.Association
        A mapping; write it with `save_association`.

    Raises
    ------
    FileNotFoundError
        When a file does not exist (all missing files are listed).
    ValueError
        For no science file, several templates, or a file given twice.
    """
    from jwst.associations.asn_from_list import asn_from_list

    sci = _paths(science, "science")
    if isinstance(template, Sequence) and not isinstance(template, str):
        if len(template) != 1:
            raise ValueError(f"give exactly one template, got {len(template)}")
        template = template[0]
    tpl = Path(template)
    missing = [str(p) for p in [*sci, tpl] if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"file(s) not found: {', '.join(missing)}")
    resolved = [p.resolve() for p in [*sci, tpl]]
    if len(set(resolved)) != len(resolved):
        raise ValueError("a file is given more than once (science exposures and template)")
    items = [(_member_name(p, relative_to), SCIENCE) for p in sci]
    items.append((_member_name(tpl, relative_to), TEMPLATE))
    with warnings.catch_warnings():
        # jwst warns about any directory in a member path; ours are deliberate
        # (relative to the association, or absolute when they cannot be)
        warnings.filterwarnings("ignore", message=".*contains path information")
        asn = asn_from_list(items, product_name=product_name or "diffim", with_exptype=True)
    asn["asn_type"] = "diffim"
    return asn


def save_association(asn, path):
    """Write an association (from `make_diffim_association`, or a dict) as JSON.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from ..steps._base import atomic_write

    if hasattr(asn, "dump"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*contains path information")
            _, text = asn.dump(format="json")
    else:
        text = json.dumps(asn, indent=4)
    path = Path(path)

    def write(tmp):
        Path(tmp).write_text(text if text.endswith("\n") else text + "\n")

    atomic_write(path, write)
    return path


def _load(input_data):
    """(association mapping, base directory, description) of the pipeline input."""
    if isinstance(input_data, Mapping):
        return input_data, Path.cwd(), "the association"
    if isinstance(input_data, (str, os.PathLike)):
        path = Path(input_data)
        if path.suffix.lower() != ".json":
            raise ValueError(
                f"{path.name} is not an association: the difference-imaging pipeline needs an "
                "association (JSON) with 'science' and 'template' members (make one with "
                "'stmatch asn --science ... --template ...')"
            )
        if not path.is_file():
            raise FileNotFoundError(f"association not found: {path}")
        try:
            with open(path) as fh:
                asn = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read association {path}: {exc}") from None
        if not isinstance(asn, Mapping):
            raise ValueError(f"{path} does not hold an association (a JSON object)")
        return asn, path.parent, str(path)
    raise TypeError(
        "the difference-imaging pipeline takes an association (file or dict), "
        f"not {type(input_data).__name__}"
    )


def read_diffim_association(input_data):
    """The products of a difference-imaging association, checked.

    Parameters
    ----------
    input_data : str, Path or mapping
        An association file (members relative to its directory) or an
        association mapping (members relative to the current directory).

    Returns
    -------
    list of DiffimProduct

    Raises
    ------
    ValueError
        No products; a product without a template, with several templates or
        without science exposures; two products of the same name; a science
        exposure given twice, or two of the same file name (their products would
        overwrite each other).
    FileNotFoundError
        Members that do not exist (all of them listed).
    """
    asn, base, name = _load(input_data)
    products = asn.get("products")
    if not isinstance(products, Sequence) or not products:
        raise ValueError(f"{name} has no products")
    out, missing = [], []
    for i, product in enumerate(products):
        members = product.get("members") if isinstance(product, Mapping) else None
        pname = str((product or {}).get("name") or f"product {i + 1}")
        if not members:
            raise ValueError(f"product {pname!r} of {name} has no members")
        found = {SCIENCE: [], TEMPLATE: []}
        for m in members:
            kind = str(m.get("exptype", "")).strip().lower()
            if kind in found:
                if not m.get("expname"):
                    raise ValueError(f"a {kind} member of product {pname!r} has no expname")
                found[kind].append(str(Path(base) / str(m["expname"])))
        if not found[TEMPLATE]:
            raise ValueError(
                f"product {pname!r} of {name} has no member of exptype 'template': give the "
                "template (reference image) as a member with exptype 'template'"
            )
        if len(found[TEMPLATE]) > 1:
            raise ValueError(
                f"product {pname!r} of {name} has {len(found[TEMPLATE])} templates; "
                "a product takes exactly one (make one product per template)"
            )
        if not found[SCIENCE]:
            raise ValueError(
                f"product {pname!r} of {name} has no member of exptype 'science': nothing "
                "to subtract the template from"
            )
        missing += [p for p in [*found[SCIENCE], *found[TEMPLATE]] if not Path(p).is_file()]
        if any(q.name == pname for q in out):
            raise ValueError(
                f"{name} has two products named {pname!r}: their combined catalogs would "
                "overwrite each other"
            )
        out.append(DiffimProduct(pname, found[TEMPLATE][0], tuple(found[SCIENCE])))
    if missing:
        raise FileNotFoundError(f"member file(s) of {name} not found: {', '.join(missing)}")
    _check_unique_names(out, name)
    return out


def _check_unique_names(products, name):
    from jwst.lib.suffix import remove_suffix

    seen = {}
    for product in products:
        for path in product.science:
            stem = remove_suffix(Path(path).stem)[0]
            if stem in seen:
                raise ValueError(
                    f"science exposures {seen[stem]} and {path} of {name} share the name "
                    f"{stem!r}: their products would overwrite each other (give each "
                    "science exposure once)"
                )
            seen[stem] = path

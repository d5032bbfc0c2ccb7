"""Inputs of the steps that work on many exposures: one ModelLibrary for all forms."""

from __future__ import annotations

import logging
from pathlib import Path

from jwst.datamodels import ModelLibrary
from jwst.lib.suffix import remove_suffix

log = logging.getLogger("stmatch.steps")

_ASN_TO_META = (("table_name", "table_name"), ("asn_pool", "pool_name"))


class StmatchModelLibrary(ModelLibrary):
    """A jwst ``ModelLibrary`` whose loads do not copy the whole association.

    Every time a member is loaded (at each ``borrow`` when ``on_disk=True``), the
    library writes the member's association metadata (``meta.asn.exptype``,
    ``group_id``, ``tweakreg_catalog``, ``meta.asn.table_name`` and
    ``.pool_name``) into the model. The base class reads the association
    through its public ``asn`` property, which builds a read-only copy of the
    whole association at every access, so that loading N members costs O(N²):
    for 2,000 exposures, tens of minutes. This class writes the same metadata
    reading the association in place (without modifying it).
    """

    def _assign_member_to_model(self, model, member):
        if not hasattr(model.meta, "asn"):
            model.meta["asn"] = {}
        model.meta.asn.exptype = member["exptype"]
        for key in ("group_id", "tweakreg_catalog"):
            if key in member:
                setattr(model.meta, key, member[key])
        asn = self._asn
        for key, attr in _ASN_TO_META:
            if key in asn:
                setattr(model.meta.asn, attr, asn[key])


def open_library(step, init):
    """A ModelLibrary for any accepted input; records input paths to protect them.

    Accepted: a ``ModelLibrary`` (used as it is), an association file, one image
    file, a list of files (made into an image3 association), or a list of models
    (copied by stpipe's ``prepare_output``: a step does not modify its input
    models). ``step.in_memory`` chooses the library's ``on_disk`` mode for files.
    """
    what = type(step).__name__
    on_disk = not step.in_memory
    step._input_paths = []
    if isinstance(init, ModelLibrary):
        return init
    if isinstance(init, (str, Path)):
        path = Path(init)
        if not path.exists():
            raise FileNotFoundError(f"{what} input not found: {path}")
        if path.suffix.lower() == ".json":
            library = StmatchModelLibrary(str(path), on_disk=on_disk)
            base = Path(library._asn_dir or ".")
            step._input_paths = [
                str(base / m["expname"]) for m in library.asn["products"][0]["members"]
            ]
            return library
        init = [str(path)]
    if isinstance(init, (list, tuple)):
        if all(isinstance(x, (str, Path)) for x in init):
            missing = [str(x) for x in init if not Path(x).exists()]
            if missing:
                raise FileNotFoundError(f"{what} inputs not found: {missing}")
            step._input_paths = [str(Path(x).resolve()) for x in init]
            asn = {
                "asn_type": "image3",
                "asn_id": "stmatch",
                "products": [
                    {
                        "name": remove_suffix(Path(str(init[0])).stem)[0],
                        "members": [
                            {"expname": p, "exptype": "science"} for p in step._input_paths
                        ],
                    }
                ],
            }
            return StmatchModelLibrary(asn, on_disk=on_disk)
        models = step.prepare_output(list(init), open_models=False)
        if on_disk:
            log.info(
                "in_memory=False needs an association or file names; "
                "models given in memory stay in memory"
            )
        return StmatchModelLibrary(models)
    raise TypeError(f"{what} cannot use input of type {type(init).__name__}")

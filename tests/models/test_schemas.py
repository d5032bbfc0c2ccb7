"""stmatch's schemas: served under their ids, resolvable, frozen once released."""

import hashlib
from importlib import metadata, resources
from pathlib import Path

import asdf
import asdf.schema
import numpy as np
import pytest
from asdf.tags.core.ndarray import asdf_datatype_to_numpy_dtype

from stmatch._integration import SCHEMA_URI_PREFIX
from stmatch.models import IMAGES_DTYPE, PAIRS_DTYPE, SkyMatchSolutionModel

SCHEMA_DIR = Path(str(resources.files("stmatch") / "schemas"))
SCHEMA_FILES = sorted(SCHEMA_DIR.rglob("*.yaml"))
CHECKSUMS = SCHEMA_DIR / "CHECKSUMS.txt"
JWST_CORE = "http://stsci.edu/schemas/jwst_datamodel/core.schema"


def _uri(path):
    """URI that asdf's DirectoryResourceMapping gives a file: prefix + path without suffix."""
    relative = path.relative_to(SCHEMA_DIR).with_suffix("")
    return SCHEMA_URI_PREFIX + relative.as_posix()


def _ids(paths):
    return [p.relative_to(SCHEMA_DIR).as_posix() for p in paths]


def _walk(node):
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _read_checksums():
    released = {}
    for line in CHECKSUMS.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, name = line.split(maxsplit=1)
        released[name.lstrip("*")] = digest
    return released


def _sha256(path):
    # Hash with LF line endings, so a CRLF checkout does not look like an edit.
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def test_there_are_schemas():
    names = {p.name for p in SCHEMA_FILES}
    assert {"skymatch_solution-1.0.0.yaml", "stmatch_meta-1.0.0.yaml"} <= names


def test_resource_mapping_is_registered_through_the_entry_point():
    eps = metadata.entry_points(group="asdf.resource_mappings")
    assert any(ep.value == "stmatch._integration:get_resource_mappings" for ep in eps), (
        "stmatch's asdf.resource_mappings entry point is not installed; "
        "run `pip install -e .` in the repository"
    )
    manager = asdf.get_config().resource_manager
    for path in SCHEMA_FILES:
        assert _uri(path) in manager


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=_ids(SCHEMA_FILES))
def test_schema_loads_by_uri_and_id_matches_file_name(path):
    uri = _uri(path)
    schema = asdf.schema.load_schema(uri, resolve_references=True)
    assert schema["id"] == uri
    assert schema["$schema"] == "http://stsci.edu/schemas/asdf/asdf-schema-1.1.0"
    # Every reference was resolved (inlined), none is left dangling.
    assert not any(isinstance(node, dict) and "$ref" in node for node in _walk(schema))
    # The unresolved schema is valid against its metaschema.
    asdf.schema.check_schema(asdf.schema.load_schema(uri))


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=_ids(SCHEMA_FILES))
def test_schema_file_is_versioned(path):
    stem = path.with_suffix("").name
    name, _, version = stem.rpartition("-")
    assert name, f"{path.name}: schema files are named <name>-<major>.<minor>.<patch>.yaml"
    assert len(version.split(".")) == 3 and all(v.isdigit() for v in version.split("."))


def test_jwst_core_schema_resolves():
    core = asdf.schema.load_schema(JWST_CORE, resolve_references=True)
    assert core["id"] == JWST_CORE
    assert "model_type" in core["properties"]["meta"]["properties"]


def test_skymatch_solution_refs_jwst_core_and_stmatch_meta():
    raw = asdf.schema.load_schema(SCHEMA_URI_PREFIX + "skymatch_solution-1.0.0")
    refs = {node["$ref"] for node in _walk(raw) if isinstance(node, dict) and "$ref" in node}
    assert refs == {JWST_CORE, SCHEMA_URI_PREFIX + "stmatch_meta-1.0.0"}


def test_checksums_cover_every_schema_file():
    released = _read_checksums()
    missing = sorted(set(_ids(SCHEMA_FILES)) - set(released))
    assert not missing, (
        f"schema files without a checksum in {CHECKSUMS}: {missing}. When a schema is "
        "released add its line (`sha256sum <file> >> CHECKSUMS.txt` in the schemas folder); "
        "from then on it never changes."
    )


@pytest.mark.parametrize("name", sorted(_read_checksums()))
def test_released_schema_is_unchanged(name):
    path = SCHEMA_DIR / name
    assert path.is_file(), (
        f"released schema {name} was removed; released schemas never change and are never "
        "deleted (files written with them must stay readable)"
    )
    assert _sha256(path) == _read_checksums()[name], (
        f"{name} differs from its released version (sha256 in {CHECKSUMS.name}). Released "
        "schemas never change; write a new version file (e.g. bump 1.0.0 to 1.1.0), point the "
        "model's schema_url at it, and add the new file's checksum."
    )


@pytest.mark.parametrize(("table", "dtype"), [("images", IMAGES_DTYPE), ("pairs", PAIRS_DTYPE)])
def test_dtype_constants_match_schema(table, dtype):
    schema = SkyMatchSolutionModel()._schema
    declared = asdf_datatype_to_numpy_dtype(schema["properties"][table]["datatype"])
    assert np.dtype(declared) == dtype
    assert declared.names == dtype.names


def test_table_extensions():
    schema = SkyMatchSolutionModel()._schema["properties"]
    assert schema["images"]["fits_hdu"] == "IMAGES"
    assert schema["pairs"]["fits_hdu"] == "PAIRS"

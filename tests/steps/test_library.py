"""The step's ModelLibrary: same member metadata as jwst's, without copying the association."""

import json

import pytest
from jwst.datamodels import ModelLibrary

from stmatch.steps._library import StmatchModelLibrary

KEYS = ("meta.asn.exptype", "meta.group_id", "meta.asn.table_name", "meta.asn.pool_name")


def _get(model, dotted):
    node = model
    for part in dotted.split(".")[:-1]:
        node = getattr(node, part)
    return getattr(node, dotted.split(".")[-1], None)


@pytest.fixture
def asn_file(mosaic_groups, tmp_path):
    asn, _ = mosaic_groups
    data = json.loads(asn.read_text())
    data["asn_pool"] = "pool_for_the_test"
    data["table_name"] = "table_for_the_test.json"
    path = asn.parent / "library_test_asn.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("on_disk", [False, True])
def test_member_metadata_equals_jwst(asn_file, on_disk, tmp_path):
    ours = StmatchModelLibrary(str(asn_file), on_disk=on_disk, temp_directory=tmp_path)
    theirs = ModelLibrary(str(asn_file), on_disk=on_disk, temp_directory=tmp_path)
    assert len(ours) == len(theirs) == 8
    with ours, theirs:
        for i in range(len(ours)):
            a, b = ours.borrow(i), theirs.borrow(i)
            for key in KEYS:
                assert _get(a, key) == _get(b, key), key
            assert _get(a, "meta.asn.pool_name") == "pool_for_the_test"
            ours.shelve(a, i, modify=False)
            theirs.shelve(b, i, modify=False)


def test_loading_members_does_not_copy_the_association(asn_file, tmp_path, monkeypatch):
    calls = []
    original = ModelLibrary.asn

    def counting(self):
        calls.append(1)
        return original.fget(self)

    library = StmatchModelLibrary(str(asn_file), on_disk=True, temp_directory=tmp_path)
    monkeypatch.setattr(ModelLibrary, "asn", property(counting))
    with library:
        for _ in range(2):  # on disk: every borrow loads the member again
            for i in range(len(library)):
                library.shelve(library.borrow(i), i, modify=False)
    assert calls == []

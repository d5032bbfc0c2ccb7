"""``stmatch asn``: difference-imaging associations from the command line."""

import json
import re
from pathlib import Path

import pytest

from stmatch.cli import main
from stmatch.pipelines._asn import (
    make_diffim_association,
    read_diffim_association,
    save_association,
)


@pytest.fixture
def images(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    paths = {}
    for name in ("a_cal.fits", "b_cal.fits", "deep_i2d.fits"):
        (data / name).write_bytes(b"")
        paths[name] = data / name
    return paths


def test_writes_relative_members_and_names_the_product(images, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = Path("asns") / "field1_asn.json"
    rc = main(
        [
            "asn",
            "--science",
            "data/a_cal.fits",
            "data/b_cal.fits",
            "--template",
            "data/deep_i2d.fits",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    asn = json.loads(out.read_text())
    (product,) = asn["products"]
    assert product["name"] == "field1"  # from the file name
    assert asn["asn_type"] == "diffim"
    members = [(m["expname"], m["exptype"]) for m in product["members"]]
    assert members == [
        ("../data/a_cal.fits", "science"),
        ("../data/b_cal.fits", "science"),
        ("../data/deep_i2d.fits", "template"),
    ]
    printed = capsys.readouterr().out
    assert "wrote asns/field1_asn.json: product 'field1'" in printed
    assert "template  ../data/deep_i2d.fits" in printed
    # what the pipeline reads: absolute paths of existing files
    (p,) = read_diffim_association(out)
    assert Path(p.template).resolve() == images["deep_i2d.fits"].resolve()
    assert [Path(s).resolve() for s in p.science] == [
        images["a_cal.fits"].resolve(),
        images["b_cal.fits"].resolve(),
    ]


def test_product_option_and_default_output(images, tmp_path, monkeypatch):
    monkeypatch.chdir(images["a_cal.fits"].parent)
    assert main(["asn", "--science", "a_cal.fits", "--template", "deep_i2d.fits",
                 "--product", "night2"]) == 0  # fmt: skip
    asn = json.loads(Path("diffim_asn.json").read_text())
    assert asn["products"][0]["name"] == "night2"
    assert [m["expname"] for m in asn["products"][0]["members"]] == ["a_cal.fits", "deep_i2d.fits"]


@pytest.mark.parametrize(
    "science,template,message",
    [
        (["a_cal.fits", "nope_cal.fits"], "deep_i2d.fits", "not found: .*nope_cal.fits"),
        (["a_cal.fits"], "gone_i2d.fits", "not found: .*gone_i2d.fits"),
        (["a_cal.fits", "deep_i2d.fits"], "deep_i2d.fits", "more than once"),
    ],
)
def test_errors_exit_with_a_message(images, monkeypatch, capsys, science, template, message):
    monkeypatch.chdir(images["a_cal.fits"].parent)
    with pytest.raises(SystemExit) as exc:
        main(["asn", "--science", *science, "--template", template])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "stmatch asn: error:" in err
    assert re.search(message, err)
    assert not Path("diffim_asn.json").exists()


def test_python_function_absolute_without_directory(images, tmp_path):
    asn = make_diffim_association(images["a_cal.fits"], images["deep_i2d.fits"])
    names = [m["expname"] for m in asn["products"][0]["members"]]
    assert all(Path(n).is_absolute() for n in names)
    assert asn["products"][0]["name"] == "diffim"
    path = save_association(asn, tmp_path / "x" / "abs_asn.json")
    assert read_diffim_association(path)[0].science == (str(images["a_cal.fits"].resolve()),)
    with pytest.raises(ValueError, match="exactly one template"):
        make_diffim_association(
            images["a_cal.fits"], [images["deep_i2d.fits"], images["b_cal.fits"]]
        )

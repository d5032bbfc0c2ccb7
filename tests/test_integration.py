"""Entry points, aliases and the layering rules."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import stmatch
from stmatch import _integration

SRC = Path(stmatch.__file__).resolve().parent


def test_get_steps_matches_class_aliases():
    steps = _integration.get_steps()
    assert steps, "no steps registered"
    for class_name, alias, is_pipeline in steps:
        module, _, name = class_name.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        assert cls.class_alias == alias
        assert alias.startswith("stmatch_")
        assert is_pipeline is module.startswith("stmatch.pipelines")
    aliases = [a for _, a, _ in steps]
    assert len(set(aliases)) == len(aliases)


def test_get_steps_is_import_free():
    code = (
        "import sys; from stmatch._integration import get_steps; get_steps(); "
        "bad = [m for m in ('stpipe', 'jwst', 'stdatamodels', 'asdf', 'numpy') "
        "if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_entry_points_registered():
    from importlib.metadata import entry_points

    names = {ep.value for ep in entry_points(group="stpipe.steps")}
    assert "stmatch._integration:get_steps" in names
    names = {ep.value for ep in entry_points(group="asdf.resource_mappings")}
    assert "stmatch._integration:get_resource_mappings" in names


def test_stpipe_list_shows_ours_and_jwst_alias_still_resolves():
    stpipe = Path(sys.executable).parent / "stpipe"
    cmd = [str(stpipe)] if stpipe.exists() else [sys.executable, "-m", "stpipe"]
    out = subprocess.run(cmd + ["list"], capture_output=True, text=True, check=True).stdout
    assert "stmatch.steps.SkyMatchStep (stmatch_skymatch)" in out
    assert "(skymatch)" in out
    from stpipe.utilities import resolve_step_class_alias

    assert resolve_step_class_alias("skymatch").startswith("jwst.")
    assert resolve_step_class_alias("stmatch_skymatch") == "stmatch.steps.SkyMatchStep"


def test_stmatch_logger_is_configured_by_stpipe():
    from stmatch.steps import SkyMatchStep

    assert "stmatch" in SkyMatchStep.get_stpipe_loggers()
    assert "jwst" in SkyMatchStep.get_stpipe_loggers()


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            yield (node.module or ""), node.level


def _files(sub):
    return sorted((SRC / sub).rglob("*.py"))


ALLOWED_ALGORITHMS = {
    "numpy",
    "scipy",
    "math",
    "logging",
    "time",
    "collections",
    "dataclasses",
    "typing",
    "functools",
    "itertools",
    "__future__",
    "warnings",
    "abc",
    "numbers",
    "enum",
    "operator",
    "importlib",
}
FRAMEWORK = {"stpipe", "stdatamodels", "asdf", "jwst", "crds", "gwcs", "astropy"}


@pytest.mark.parametrize("path", _files("algorithms"), ids=lambda p: p.name)
def test_algorithms_know_numpy_and_scipy_only(path):
    for module, level in _imports(path):
        if level:  # relative imports stay inside algorithms/
            assert module.split(".")[0] not in ("steps", "models", "datasets", "pipelines")
            continue
        assert module.split(".")[0] in ALLOWED_ALGORITHMS, f"{path.name} imports {module}"


@pytest.mark.parametrize("path", _files("models"), ids=lambda p: p.name)
def test_models_know_nothing_of_steps_or_numerics(path):
    for module, level in _imports(path):
        top = module.split(".")[0]
        if level:
            assert top not in ("steps", "algorithms", "pipelines"), f"{path.name}: {module}"
        else:
            assert top not in ("stpipe", "jwst", "crds"), f"{path.name} imports {module}"
            assert not module.startswith(("stmatch.steps", "stmatch.algorithms"))


@pytest.mark.parametrize(
    "path", [p for p in _files("steps") if p.name.endswith("_step.py")], ids=lambda p: p.name
)
def test_no_step_imports_another_step(path):
    for module, _ in _imports(path):
        last = module.split(".")[-1]
        assert not (last.endswith("_step") and last != path.stem), f"{path.name}: {module}"

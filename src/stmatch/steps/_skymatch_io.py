"""Input/output glue of SkyMatchStep: libraries, metadata, solution products."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from jwst.lib.suffix import remove_suffix

from ._base import atomic_write, products_dir, unvalidated
from ._library import open_library  # noqa: F401 - the step's input handling
from ._wcs import wcs_callables  # noqa: F401 - used by the step as io.wcs_callables

log = logging.getLogger("stmatch.steps.skymatch")


# --------------------------------------------------------------------------- inputs
def previous_level(model, subtract):
    """Sky already subtracted from the data (jwst's consistency rules)."""
    bg = model.meta.background
    name = model.meta.filename
    if bg.subtracted is None:
        if bg.level is not None:
            raise ValueError(f"{name}: background level is set but 'subtracted' is undefined")
        return 0.0
    if bg.level is None:
        raise ValueError(f"{name}: background was subtracted but its level is undefined")
    if bool(bg.subtracted) != bool(subtract):
        raise ValueError(
            f"{name}: subtract={subtract} disagrees with a previous sky-matching run "
            f"(meta.background.subtracted={bg.subtracted}); run on the original data or "
            "use the same 'subtract'"
        )
    return float(bg.level) if subtract else 0.0


# -------------------------------------------------------------------------- results
def mark_all(step, library, status):
    """Set the step status of every model."""
    with library:
        for i in range(len(library)):
            model = library.borrow(i)
            setattr(model.meta.cal_step, step.class_alias, status)
            library.shelve(model, i)
    return library


def log_solution(result, inputs):
    """Per-group levels at INFO, with components and pairs."""
    log.info(
        "Sky levels (%s), %d group(s), %d component(s):",
        result.method,
        len(result.group_keys),
        result.n_components,
    )
    for g, key in enumerate(result.group_keys):
        if result.valid[g]:
            comp = result.component[g]
            log.info(
                "  %-40s level=%-12.6g ± %-10.3g component=%s pairs=%d",
                key,
                result.level[g],
                result.level_err[g],
                comp if comp >= 0 else "-",
                result.n_pairs[g],
            )
        else:
            log.warning("  %-40s SKIPPED: %s", key, result.reason[g])
    if result.n_components > 1:
        sizes = [c.members.size for c in result.components]
        log.warning(
            "The overlap graph has %d disconnected components (sizes %s); each is "
            "solved and anchored on its own",
            result.n_components,
            sizes,
        )


def apply_result(step, library, inputs, result, previous):
    """Write levels into meta.background (and the data when subtracting)."""
    with library:
        for i in range(len(library)):
            model = library.borrow(i)
            with unvalidated(model):
                _write_levels(step, model, result, int(result.group_of_image[i]), previous[i])
            library.shelve(model, i)


def _write_levels(step, model, result, g, previous):
    """Record one model's level (and subtract it when asked)."""
    if result.valid[g]:
        new = float(result.level[g])
        model.meta.background.method = str(step.skymethod)
        model.meta.background.level = previous + new
        model.meta.background.subtracted = bool(step.subtract)
        if step.subtract:
            model.data = (model.data - np.float32(new)).astype(model.data.dtype, copy=False)
        status = "COMPLETE"
    else:
        status = "SKIPPED"
    setattr(model.meta.cal_step, step.class_alias, status)
    comp = int(result.component[g])
    step.record_stmatch(
        model,
        level=float(result.level[g]),
        level_err=_finite_or_none(result.level_err[g]),
        group=str(result.group_keys[g]),
        component=comp if comp >= 0 else None,
        n_pairs=int(result.n_pairs[g]),
        status=status,
        reason=result.reason[g],
    )


def _ascii(text, size):
    """Text for a fixed-width ASCII table column."""
    return str(text).encode("ascii", "replace").decode("ascii")[:size]


def _finite_or_none(x):
    return float(x) if np.isfinite(x) else None


def solution_model(step, library, inputs, result):
    """The SkyMatchSolutionModel of a run."""
    from .. import __version__
    from ..models import SkyMatchSolutionModel, empty_images, empty_pairs

    images = empty_images(len(inputs))
    for i, inp in enumerate(inputs):
        g = int(result.group_of_image[i])
        images[i] = (
            _ascii(inp.name, 128),
            _ascii(result.group_keys[g], 128),
            g,
            int(result.component[g]),
            result.level[g],
            result.level_err[g],
            int(result.n_pairs[g]),
            result.local_sky[g],
            "COMPLETE" if result.valid[g] else "SKIPPED",
            _ascii(result.reason[g], 255),
        )
    pairs = empty_pairs(len(result.pairs))
    for k, p in enumerate(result.pairs):
        pairs[k] = (
            p.a,
            p.b,
            p.group_a,
            p.group_b,
            p.npix,
            p.sky_a,
            p.sky_b,
            p.diff,
            p.diff_err,
            p.weight,
            p.residual,
            p.used,
            _ascii(p.reason, 255),
        )
    model = SkyMatchSolutionModel()
    model.images = images
    model.pairs = pairs
    model.meta.skymatch.method = str(step.skymethod)
    model.meta.skymatch.skystat = str(step.skystat)
    model.meta.skymatch.match_down = bool(step.match_down)
    model.meta.skymatch.subtract = bool(step.subtract)
    model.meta.skymatch.n_images = len(inputs)
    model.meta.skymatch.n_groups = len(result.group_keys)
    model.meta.skymatch.n_components = int(result.n_components)
    model.meta.skymatch.n_pairs = len(result.pairs)
    model.meta.skymatch.n_pairs_used = int(sum(p.used for p in result.pairs))
    model.meta.skymatch.solver = "sparse weighted least squares per connected component"
    model.meta.skymatch.stmatch_version = __version__
    return model


def product_name(step, library, inputs):
    """Base name for products of the whole run (association product name if any)."""
    try:
        name = library.asn["products"][0].get("name")
    except (AttributeError, KeyError, IndexError, TypeError):
        name = None
    if not name:
        name = remove_suffix(Path(inputs[0].name).stem)[0] if inputs else "stmatch"
    return str(name)


def output_directory(step):
    """Where run products go: output_dir, else the input directory, else cwd."""
    return products_dir(step)


def save_products(step, library, inputs, result):
    """Write the solution table and the QA figure when asked to."""
    want_solution = step.save_solution and (step.save_results or step.output_dir)
    if not (want_solution or step.save_qa):
        return
    base = output_directory(step) / f"{product_name(step, library, inputs)}_skymatch"
    if want_solution and step.solution is not None:
        path = atomic_write(f"{base}_solution.asdf", step.solution.save)
        step.solution.write_ecsv(str(base))
        log.info("Saved sky-matching solution in %s (+ _images.ecsv, _pairs.ecsv)", path)
    if step.save_qa:
        from ._qa_skymatch import skymatch_figure

        path = atomic_write(f"{base}_qa.png", lambda p: skymatch_figure(inputs, result, p))
        log.info("Saved QA figure %s", path)


# ------------------------------------------------------------------------ user sky
def read_skylist(path):
    """Parse a ``skylist`` file of ``name value`` lines (``#`` starts a comment)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"skylist file not found: {path}")
    entries = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{lineno}: expected 'filename sky_value', got {raw!r}")
        try:
            value = float(parts[1])
        except ValueError:
            raise ValueError(f"{path}:{lineno}: sky value {parts[1]!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{path}:{lineno}: sky value must be finite")
        stem = remove_suffix(Path(parts[0]).stem)[0]
        if stem in entries:
            raise ValueError(f"{path}:{lineno}: image {stem!r} listed twice")
        entries[stem] = value
    if not entries:
        raise ValueError(f"{path}: no sky values found")
    return entries


def apply_user_sky(step, library):
    """skymethod='user': levels from the skylist file."""
    if step.skylist is None:
        raise ValueError("skymethod='user' needs a skylist file (skylist=...)")
    entries = read_skylist(step.skylist)
    log.info("Using user sky values from %s", step.skylist)
    with library:
        names = []
        for i in range(len(library)):
            model = library.borrow(i)
            names.append(remove_suffix(Path(model.meta.filename).stem)[0])
            library.shelve(model, i, modify=False)
        missing = [n for n in names if n not in entries]
        if missing:
            raise ValueError(f"skylist {step.skylist} has no value for: {', '.join(missing)}")
        for i, stem in enumerate(names):
            model = library.borrow(i)
            prev = previous_level(model, step.subtract)
            sky = entries[stem]
            model.meta.background.level = prev + sky
            model.meta.background.subtracted = bool(step.subtract)
            model.meta.background.method = "user"
            if step.subtract:
                model.data = (model.data - np.float32(sky)).astype(model.data.dtype, copy=False)
            setattr(model.meta.cal_step, step.class_alias, "COMPLETE")
            step.record_stmatch(model, level=sky, status="COMPLETE")
            log.info("  %-40s sky=%g (user)", model.meta.filename, sky)
            library.shelve(model, i)
    return library

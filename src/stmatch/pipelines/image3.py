"""stmatch_image3: jwst's level-3 imaging pipeline with stmatch's sky matching.

:class:`Image3Pipeline` is jwst's ``calwebb_image3`` (``assign_mtwcs`` or
``tweakreg``, ``skymatch``, ``outlier_detection``, ``resample``,
``source_catalog``) whose ``skymatch`` step is :class:`stmatch.steps.SkyMatchStep`,
on the base of stmatch's pipelines (:class:`~stmatch.pipelines._base.StmatchPipeline`):
our loggers, models and parameter files, and no reference-file query that could
end the process when no server can be reached. See ``docs/jwst_pipelines.rst``.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

from jwst.pipeline import Image3Pipeline as _JwstImage3Pipeline

from ..steps.skymatch_step import SkyMatchStep
from ._base import StmatchPipeline

__all__ = ["Image3Pipeline", "reference_service_status"]

log = logging.getLogger("stmatch.pipelines.image3")

PROBE_TIMEOUT = 5.0  # seconds: longest wait for the reference-file server to answer
_SERVER_VARIABLE = "CRDS_SERVER_URL"


class Image3Pipeline(StmatchPipeline, _JwstImage3Pipeline):
    """jwst's ``calwebb_image3`` with stmatch's SkyMatchStep as its ``skymatch`` step.

    The steps, their names, order and logic are jwst's (``process`` is inherited):
    ``assign_mtwcs`` (moving targets) or ``tweakreg``, then ``skymatch``
    (:class:`stmatch.steps.SkyMatchStep`: jwst's parameters plus ours, such as
    ``save_qa``, and a per-level uncertainty in ``meta.stmatch``),
    ``outlier_detection``, ``resample`` (which subtracts the recorded sky levels)
    and ``source_catalog``. So ``--steps.skymatch.*`` reaches our step, and each
    exposure gets ``meta.cal_step.stmatch_skymatch`` (jwst's
    ``meta.cal_step.skymatch`` stays unset).

    Parameters come from stmatch's packaged and user files for the pipeline
    (``stmatch_image3-<instrument>.asdf``) and for its stmatch sub-step
    (``stmatch_skymatch-<instrument>.asdf``), never from CRDS; jwst's sub-steps
    start from their spec defaults. When the pipeline saves its results, the
    sky-matching solution table (``<product>_skymatch_solution.asdf`` and ECSV) is
    written beside them (``--steps.skymatch.save_solution=false`` turns it off).

    **Reference files.** Of jwst's sub-steps only ``source_catalog`` needs
    reference files (APCORR, ABVEGAOFFSET). ``reference_lookup`` decides, before
    anything runs, what happens to a sub-step that is not skipped and needs a
    reference file it was not given (``override_<type>``):

    * ``'auto'`` (default): it runs when the reference-file service is usable, as
      found by :func:`reference_service_status` (a local cache, or a server named
      by ``CRDS_SERVER_URL`` that answers within 5 s); otherwise it is skipped
      with a WARNING that says why and how to give the files;
    * ``'always'``: it runs and the service is queried (jwst's behaviour: with no
      server and no cache the query ends the process);
    * ``'never'``: it is skipped (with the WARNING) unless given all its files.
    """

    class_alias = "stmatch_image3"

    spec = """
        reference_lookup = option('auto', 'always', 'never', default='auto') # sub-steps needing reference files they were not given: auto = run them only if the reference-file service is usable, else skip them with a warning
    """  # noqa: E501

    step_defs = {**_JwstImage3Pipeline.step_defs, "skymatch": SkyMatchStep}

    def run(self, *args):
        """Check reference-file access (see the class docstring), then run."""
        self.check_reference_access()
        return super().run(*args)

    def process(self, input_data):
        """Run jwst's calwebb_image3 logic; save the sky solution with the results.

        Parameters
        ----------
        input_data : str, dict, list, ModelLibrary or DataModel
            A level-3 association (file or dict), a library, or models/files.
        """
        sky = self.skymatch
        before = sky.output_dir
        if self.save_results and sky.save_solution and not sky.skip and not before:
            # SkyMatchStep writes its solution table when it has a place to write to
            sky.output_dir = self.search_attr("output_dir") or "."
        try:
            return super().process(input_data)
        finally:
            sky.output_dir = before

    def missing_references(self):
        """Sub-steps that will run and need reference files they were not given.

        Returns
        -------
        list of tuple
            ``(step name, [reference types])``, in pipeline order.
        """
        out = []
        for name in self.step_defs:
            step = getattr(self, name)
            if step.skip:
                continue
            types = [t for t in step.reference_file_types if step.get_ref_override(t) is None]
            if types:
                out.append((name, types))
        return out

    def check_reference_access(self):
        """Apply ``reference_lookup``: skip the sub-steps whose references are out of reach.

        Returns
        -------
        list of str
            Names of the sub-steps this call set to skip.
        """
        needs = self.missing_references()
        if not needs or self.reference_lookup == "always":
            return []
        if self.reference_lookup == "auto":
            usable, why = reference_service_status()
            if usable:
                log.info("Reference files will be looked up (%s)", why)
                return []
        else:
            why = "reference_lookup is 'never'"
        skipped = []
        for name, types in needs:
            getattr(self, name).skip = True
            skipped.append(name)
            overrides = " ".join(f"--steps.{name}.override_{t}=FILE" for t in types)
            log.warning(
                "Step %s SKIPPED: it needs the %s reference file(s) and %s. To run it, "
                "give the files (%s, or override_<type> under steps: %s: in a parameter "
                "file), or make the reference-file service usable (a server URL or a "
                "local cache, see stmatch's jwst_pipelines documentation) and run again; "
                "reference_lookup='always' queries it without this check.",
                name,
                ", ".join(t.upper() for t in types),
                why,
                overrides,
                name,
            )
        return skipped


def _cache_configuration():
    """Where the reference-file service keeps its JWST configuration.

    Returns
    -------
    cache : Path or None
        The saved configuration of a previous session (may not exist).
    remote : str or None
        A remote configuration URI (``CRDS_CONFIG_URI``), if one is set.
    """
    from crds.core import config

    try:
        cache = Path(config.locate_config("server_config", "jwst"))
    except Exception as exc:  # an unusual installation: treat as no cache
        log.debug("No reference cache location (%s)", exc)
        cache = None
    # the library stores an unset variable as the string 'None'
    remote = os.environ.get("CRDS_CONFIG_URI", "").strip()
    return cache, (None if remote.lower() in ("", "none") else remote)


def _reachable(url, timeout):
    """Whether a TCP connection to the server of ``url`` opens within ``timeout`` s."""
    import socket

    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return False, f"{url!r} is not a server URL"
    port = parts.port or (80 if parts.scheme == "http" else 443)
    result = {}

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except OSError as exc:
            result["error"] = exc

    # name resolution is not bound by the socket timeout: wait in another thread
    thread = threading.Thread(target=probe, name="stmatch-reference-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if result.get("ok"):
        return True, ""
    if "error" in result:
        return False, str(result["error"])
    return False, f"no answer within {timeout:g} s"


def reference_service_status(*, timeout=PROBE_TIMEOUT):
    """Whether jwst's reference-file service (CRDS) can answer, without asking it.

    Nothing is downloaded and CRDS itself is not called (it ends the process when it
    has neither a server nor a cache). The service is taken as usable when

    1. its local cache holds the configuration of a previous session (CRDS then
       works from the cache, with or without a server), or
    2. ``CRDS_CONFIG_URI`` names a remote configuration, or
    3. ``CRDS_SERVER_URL`` is set and a TCP connection to that server opens within
       ``timeout`` seconds (name resolution included).

    Without any of these (no variable set, no cache) it is not usable.

    Parameters
    ----------
    timeout : float, optional
        Longest wait, in seconds, for the server.

    Returns
    -------
    usable : bool
    reason : str
        What was found, for the log.
    """
    cache, remote = _cache_configuration()
    if cache is not None and cache.is_file():
        return True, f"local reference cache {cache.parent}"
    if remote:
        return True, f"remote configuration {remote}"
    server = os.environ.get(_SERVER_VARIABLE, "").strip()
    if not server:
        return False, (
            "no reference-file server or local cache is configured (no server URL in "
            "the environment and no cache from a previous session)"
        )
    if "serverless" in server:
        return False, f"{_SERVER_VARIABLE}={server} selects cache-only mode and there is no cache"
    ok, error = _reachable(server, float(timeout))
    if ok:
        return True, f"server {server}"
    return False, f"the server {server} ({_SERVER_VARIABLE}) cannot be reached: {error}"

"""Shared base of stmatch's pipelines.

:class:`StmatchPipeline` subclasses ``jwst.stpipe.Pipeline`` and, like our
steps' base, adds what every stmatch pipeline needs:

* the ``stmatch`` logger among those stpipe configures;
* models opened with :func:`stmatch.models.open` (our model types included);
* parameters from stmatch's per-instrument files for the pipeline and for each of
  its stmatch sub-steps (:mod:`stmatch.steps._pars`), never from CRDS;
* no CRDS query at the end of a run: jwst's pipeline base asks CRDS for the
  context in ``finalize_result``, which ends the process (``sys.exit``) when no
  server can be reached. Ours asks only when references were actually used (they
  came from CRDS, so it is reachable).
"""

from __future__ import annotations

import logging

from jwst.stpipe import Pipeline as _JwstPipeline
from stdatamodels.jwst.datamodels import JwstDataModel

from .. import __version__
from ..steps import _pars
from ..steps._base import StmatchStep

__all__ = ["StmatchPipeline"]

log = logging.getLogger("stmatch.pipelines")


class StmatchPipeline(_JwstPipeline):
    """Base class of stmatch pipelines (not registered, never run by itself)."""

    spec = """
    """  # noqa: E501

    @staticmethod
    def get_stpipe_loggers():
        """Loggers stpipe configures: jwst's and ours."""
        return (*_JwstPipeline.get_stpipe_loggers(), "stmatch")

    @classmethod
    def _datamodels_open(cls, init, **kwargs):
        from ..models import open as _open

        return _open(init, **kwargs)

    @classmethod
    def get_config_from_reference(cls, dataset, disable=None, crds_observatory=None):
        """Parameters from stmatch's per-instrument files (CRDS is never consulted).

        The result has a ``steps`` section holding, for every sub-step that is an
        stmatch step, its own packaged/user parameter files; the pipeline's own
        files (``<pipeline alias>-<instrument>.asdf``, which may carry ``steps``
        too) are merged on top. Sub-steps from jwst get their spec defaults
        (give a parameter file or command-line values to change them).
        """
        config = cls._empty_config()
        for name, step_class in cls.step_defs.items():
            if isinstance(step_class, type) and issubclass(step_class, StmatchStep):
                sub = _pars.load_parameters(step_class, dataset)
                if sub:
                    config["steps"][name] = sub
        own = _pars.load_parameters(cls, dataset)
        if own:
            from stpipe import config_parser

            config_parser.merge_config(config, own)
        return config

    def finalize_result(self, result, reference_files_used):
        """Record stmatch's version and the pipeline log; ask CRDS only if it was used."""
        if reference_files_used:
            super().finalize_result(result, reference_files_used)
            return
        if isinstance(result, JwstDataModel):
            if self.class_alias:
                if not hasattr(result, "cal_logs"):
                    result.cal_logs = {}
                setattr(result.cal_logs, self.class_alias, self._log_records)
            try:
                current = result.meta.instance.get("stmatch", {})
                current = dict(current) if isinstance(current, dict) else {}
                current["version"] = __version__
                result.meta.stmatch = current
            except Exception as exc:  # a model without free-form meta
                log.debug("Could not record stmatch version: %s", exc)

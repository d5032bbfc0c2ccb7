"""Entry points for stpipe and asdf.

``get_steps`` runs on every ``strun`` and ``stpipe list`` for every installed
plugin, so it must stay free of imports: it returns class names as strings.
"""

# Keep in sync with each step's ``class_alias`` (a test enforces it).
_STEPS = [
    ("stmatch.steps.SkyMatchStep", "stmatch_skymatch", False),
    ("stmatch.steps.ZogyStep", "stmatch_zogy", False),
    ("stmatch.steps.PsfModelMatchStep", "stmatch_psfmatch", False),
    ("stmatch.steps.BackgroundMatchStep", "stmatch_bgmatch", False),
    ("stmatch.pipelines.DiffImagePipeline", "stmatch_diffim", True),
    ("stmatch.pipelines.Image3Pipeline", "stmatch_image3", True),
]

SCHEMA_URI_PREFIX = "asdf://stmatch.org/stmatch/schemas/"


def get_steps():
    """Return the steps stmatch registers with stpipe.

    Returns
    -------
    list of tuple
        ``(fully qualified class name, alias, is_pipeline)`` per step.
    """
    return list(_STEPS)


def get_resource_mappings():
    """Map stmatch's schema folder onto its ASDF URI prefix.

    Returns
    -------
    list of asdf.resource.DirectoryResourceMapping
    """
    from pathlib import Path

    from asdf.resource import DirectoryResourceMapping

    schemas = Path(__file__).parent / "schemas"
    return [DirectoryResourceMapping(schemas, SCHEMA_URI_PREFIX, recursive=True)]

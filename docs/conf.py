"""Sphinx configuration of the stmatch documentation.

Build with::

    pip install -e ".[docs]"
    sphinx-build -b html -W --keep-going docs docs/_build/html

The build works offline: links to other projects' documentation (intersphinx)
are resolved when their inventories can be downloaded, and otherwise stay plain
text, with one line in the log per unreachable project instead of a warning.
Set ``STMATCH_DOCS_OFFLINE=1`` to skip the downloads altogether.
"""

import logging
import os
import re
from datetime import date

import stmatch

# -- Project -----------------------------------------------------------------
project = "stmatch"
author = "The stmatch developers"
copyright = f"{date.today().year}, {author}"  # noqa: A001 - Sphinx's name
release = stmatch.__version__
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_automodapi.automodapi",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
# Single back-quotes in docstrings (`name`) are cross-references, as in astropy
# and the jwst packages.
default_role = "obj"
# Unresolvable references to other projects must not fail an offline build;
# run with ``-n`` online to list broken links.
nitpicky = False

# -- numpydoc / automodapi ---------------------------------------------------
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
automodapi_toctreedirnm = "api"
automodsumm_inherited_members = False
autodoc_member_order = "bysource"

# -- Intersphinx -------------------------------------------------------------
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "scipy": ("https://docs.scipy.org/doc/scipy/", None),
    "astropy": ("https://docs.astropy.org/en/stable/", None),
    "asdf": ("https://asdf.readthedocs.io/en/stable/", None),
    "gwcs": ("https://gwcs.readthedocs.io/en/latest/", None),
    "stpipe": ("https://stpipe.readthedocs.io/en/latest/", None),
    "stdatamodels": ("https://stdatamodels.readthedocs.io/en/latest/", None),
    "jwst": ("https://jwst-pipeline.readthedocs.io/en/latest/", None),
}
if os.environ.get("STMATCH_DOCS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "y"):
    intersphinx_mapping = {}
# Give up on an unreachable inventory quickly.
intersphinx_timeout = 10
# A plain :doc: link always means a page of this documentation.
intersphinx_disabled_reftypes = ["std:doc"]

# -- HTML --------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"stmatch {release}"
html_theme_options = {
    "description": "Make astronomical images agree before they are combined or subtracted.",
    "fixed_sidebar": True,
    "show_relbars": True,
}
html_sidebars = {
    "**": ["about.html", "navigation.html", "relations.html", "searchbox.html"],
}


# -- Offline intersphinx -----------------------------------------------------
class _UnreachableInventory(logging.Filter):
    """Report an unreachable intersphinx inventory as information, not a warning.

    Sphinx logs a warning (without a warning type, so ``suppress_warnings``
    cannot silence it) when no location of an inventory can be read. Offline,
    that is expected: the references simply stay unlinked.
    """

    marker = "failed to reach any of the inventories"

    def filter(self, record):
        if record.levelno == logging.WARNING and self.marker in str(record.msg):
            found = re.search(r"inventory '([^']+)'", record.getMessage())
            record.levelno = logging.INFO
            record.levelname = "INFO"
            record.nonl = False
            record.msg = "intersphinx: %s unreachable (offline?); its links stay plain text"
            record.args = (found.group(1) if found else "an inventory",)
        return True


def setup(app):
    """Install the offline filter on the logger that intersphinx reports through."""
    for name in ("sphinx.sphinx.ext.intersphinx._load", "sphinx.sphinx.ext.intersphinx"):
        logging.getLogger(name).addFilter(_UnreachableInventory())

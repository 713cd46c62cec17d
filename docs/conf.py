"""Sphinx configuration of the nscg documentation (``nox -s docs``)."""

from __future__ import annotations

import doctest
import os
import sys

import nscg

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_ext"))

project = "nscg"
author = "nscg developers"
copyright = "nscg developers"
release = nscg.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "nscg_exports",  # docs/_ext: the API page's table of top-level names
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "requirements.txt"]

# MyST: ```{doctest} / ```{testcode} fences are Sphinx directives, so samples run
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc + napoleon (Google style: Args / Returns / Raises / Attributes)
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_attr_annotations = True

# Type hints name types (attrs internals, private helpers) that have no page of
# their own; a missing cross-reference target is not an error in the docs.
nitpicky = False

# doctest: the samples run real sandboxes (as root or rootless), kept fast
doctest_global_setup = """
import errno
import os
import shutil
import subprocess
import sys

import nscg
"""
doctest_test_doctest_blocks = "default"
trim_doctest_flags = True
# /proc/self/status separates with tabs
doctest_default_flags = (
    doctest.ELLIPSIS
    | doctest.IGNORE_EXCEPTION_DETAIL
    | doctest.DONT_ACCEPT_TRUE_FOR_1
    | doctest.NORMALIZE_WHITESPACE
)

html_theme = "furo"
html_title = f"nscg {release}"
html_static_path: list[str] = []


def _attrs_defaults(
    app: object,
    what: str,
    name: str,
    obj: object,
    options: object,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None]:
    """Show attrs' factory defaults (``attrs.NOTHING`` in the signature) as ``...``."""
    if signature:
        signature = signature.replace("=NOTHING", "=...")
    return signature, return_annotation


def setup(app: object) -> None:
    app.connect("autodoc-process-signature", _attrs_defaults)  # type: ignore[attr-defined]  # sphinx.application.Sphinx

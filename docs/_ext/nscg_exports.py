"""Sphinx extension: the table of nscg's top-level names, made from ``nscg._EXPORTS``.

docs/api.md holds :data:`MARKER` where the table goes; at ``source-read`` the
marker becomes a table of every public name and the module that defines (and
documents) it. The export list in ``src/nscg/__init__.py`` is the only place
the names are written; tests/unit/test_exports.py checks the page against it.
"""

from __future__ import annotations

import nscg

#: where the table goes in docs/api.md (a comment: invisible without this extension)
MARKER = "<!-- nscg-exports: the table made from nscg._EXPORTS by docs/_ext/nscg_exports.py -->"


def exports_table() -> str:
    """A MyST table: the names of each module, in the order of the export list."""
    by_module: dict[str, list[str]] = {}
    for name, module in nscg._EXPORTS.items():
        by_module.setdefault(module, []).append(name)
    rows = ["| name | defined in |", "| --- | --- |"]
    for module, names in by_module.items():
        # (a private module's names are documented under their public name)
        where = "`nscg`" if module.startswith("nscg._") else f"{{mod}}`{module}`"
        rows.append(f"| {', '.join(f'`{n}`' for n in names)} | {where} |")
    return "\n".join(rows)


def _source_read(app: object, docname: str, source: list[str]) -> None:
    if MARKER in source[0]:
        source[0] = source[0].replace(MARKER, exports_table())


def setup(app: object) -> dict[str, object]:
    """Register the table's maker with Sphinx."""
    app.connect("source-read", _source_read)  # type: ignore[attr-defined]  # sphinx.application.Sphinx
    return {"parallel_read_safe": True, "parallel_write_safe": True}

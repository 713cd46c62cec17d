"""Old names of renamed public methods: they warn and forward (see docs/api.md, "Builders")."""

from __future__ import annotations

import warnings


def renamed(old: str, new: str) -> None:
    """Warn (``DeprecationWarning``, at the caller's caller) that ``old`` is now ``new``."""
    warnings.warn(
        f"{old}() is deprecated: use {new}() (builders: with_x() replaces x, verbs append)",
        DeprecationWarning,
        stacklevel=3,
    )

"""nscg as an OCI runtime: runtime-spec bundles in and out, and the ``nscg-oci`` command.

:func:`load` reads a bundle's ``config.json`` into a :class:`Bundle` (a
:class:`nscg.Container` and what the lifecycle needs); :func:`to_config`
writes one back. The ``nscg-oci`` console script (:mod:`nscg.oci.cli`) runs
bundles with runc's command line. See docs/oci.md for what is covered.

The names load on first use, so ``nscg-oci --version`` imports no spawn code.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False

_EXPORTS: dict[str, str] = {
    "Bundle": "nscg.oci.spec",
    "load": "nscg.oci.spec",
    "loads": "nscg.oci.spec",
    "to_config": "nscg.oci.spec",
    "SPEC_VERSION": "nscg.oci.spec",
    "OciSpecError": "nscg.oci.errors",
    "OciUnsupportedError": "nscg.oci.errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nscg.oci' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from nscg.oci.errors import OciSpecError as OciSpecError
    from nscg.oci.errors import OciUnsupportedError as OciUnsupportedError
    from nscg.oci.spec import SPEC_VERSION as SPEC_VERSION
    from nscg.oci.spec import Bundle as Bundle
    from nscg.oci.spec import load as load
    from nscg.oci.spec import loads as loads
    from nscg.oci.spec import to_config as to_config

"""The compiled half of nscg: ``_nscg`` (cffi, API mode) and a staleness check.

Importing this package fails with a clear message when the extension is
missing or was built from other C sources than the ones beside it.
"""

from __future__ import annotations

import os
import zlib

try:
    from nscg._native._nscg import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "nscg's C extension (nscg._native._nscg) is not built: "
        "reinstall with `pip install .` (or `pip install -e .`)"
    ) from exc

__all__ = ["INIT_PATH", "check_build", "ffi", "lib"]

EXPECTED_ABI = 15
#: pid 1 of a sandbox's pid namespace, built by setup.py beside the extension
INIT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nscg-init")


def _source_hash(here: str | os.PathLike[str]) -> str | None:
    """The hash build.py compiled in: of every ``*.c`` and ``*.h`` beside this file.

    CRC-32 (zlib), not a cryptographic hash: it tells a stale build from a
    current one, and costs no hashlib/pathlib import (a tenth of what
    ``nscg.Container`` used to take to import).
    """
    crc = 0
    try:
        names = sorted(e.name for e in os.scandir(here) if e.name.endswith((".c", ".h")))
        for name in names:
            with open(os.path.join(here, name), "rb") as f:
                data = f.read()
            crc = zlib.crc32(data, zlib.crc32(name.encode(), crc))
    except OSError:
        return None
    if not names:
        return None
    return format(crc, "08x")


def check_build() -> None:
    """Raise ImportError if the compiled extension does not match the sources.

    Raises:
        ImportError: the ABI version or the source hash differ; rebuild.
    """
    abi = int(lib.nscg_abi_version())
    if abi != EXPECTED_ABI:
        raise ImportError(
            f"nscg's C extension has ABI {abi} but the Python code expects {EXPECTED_ABI}: "
            "the build is stale, rebuild it with `pip install .` (or `pip install -e .`)"
        )
    if not os.access(INIT_PATH, os.X_OK):
        raise ImportError(
            f"nscg's init helper {INIT_PATH} is missing: the build is incomplete, "
            "rebuild it with `pip install .` (or `pip install -e .`)"
        )
    built = ffi.string(lib.nscg_build_hash()).decode()
    current = _source_hash(os.path.dirname(os.path.realpath(__file__)))
    if current is not None and built != current:
        raise ImportError(
            f"nscg's C extension was built from other sources (build {built}, "
            f"sources {current}): the build is stale, rebuild it with `pip install .` "
            "(or `pip install -e .`)"
        )


check_build()

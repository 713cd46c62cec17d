"""cffi build script for ``nscg._native._nscg`` (out-of-line API mode).

The cdef is ``abi.h`` read verbatim; the C sources are compiled with the
generated module. A hash of every C source and header is compiled in, and
``nscg._native`` compares it with the files shipped beside it at import time,
so a stale build (sources changed, extension not rebuilt) fails loudly.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
#: every C file and header here: the ones hashed (nscg._native hashes the same
#: glob at import time); init.c is nscg-init, built by setup.py
HASHED = sorted(p.name for p in HERE.iterdir() if p.suffix in (".c", ".h"))
SOURCES = [name for name in HASHED if name.endswith(".c") and name != "init.c"]


def source_hash() -> str:
    """Return the hash of the C sources and headers that a build compiles.

    CRC-32 over (name, content) in name order: nscg._native computes the same at
    import time, and zlib costs it nothing to import (hashlib does).
    """
    crc = 0
    for name in HASHED:
        crc = zlib.crc32((HERE / name).read_bytes(), zlib.crc32(name.encode(), crc))
    return format(crc, "08x")


ffibuilder = FFI()
ffibuilder.cdef((HERE / "abi.h").read_text())
# Python code the C calls (nscg.h): not in abi.h, which the C sources include
ffibuilder.cdef('extern "Python+C" int nscg_signal_raised(void);')
ffibuilder.set_source(
    "nscg._native._nscg",
    '#include "nscg.h"\n',
    sources=[
        str((HERE / s).relative_to(Path.cwd()))
        if (HERE / s).is_relative_to(Path.cwd())
        else str(HERE / s)
        for s in SOURCES
    ],
    include_dirs=[str(HERE)],
    define_macros=[("_GNU_SOURCE", None), ("NSCG_BUILD_HASH", f'"{source_hash()}"')],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fno-strict-aliasing"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)

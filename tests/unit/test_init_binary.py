"""The shipped nscg-init: static, and free of a C library where it can be.

Its behaviour (reaping, signal forwarding, the status page) is tested through
the library in tests/integration/test_spawn.py; this checks the build did not
silently fall back to the glibc version, whose start-up costs a sandbox
~0.4 ms of CPU here (CPUID probes trap in a VM).
"""

from __future__ import annotations

import platform
import struct

import pytest

from nscg._native import INIT_PATH

PT_DYNAMIC, PT_INTERP = 2, 3
ET_EXEC = 2


def _program_headers(data: bytes) -> list[int]:
    assert data[:4] == b"\x7fELF"
    assert data[4] == 2, "64-bit ELF expected"
    (e_type,) = struct.unpack_from("<H", data, 16)
    assert e_type == ET_EXEC, f"e_type {e_type}: not a static, non-PIE executable"
    phoff = struct.unpack_from("<Q", data, 32)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    return [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]


def test_init_is_static_without_interpreter() -> None:
    with open(INIT_PATH, "rb") as f:
        data = f.read()
    kinds = _program_headers(data)
    assert PT_INTERP not in kinds
    assert PT_DYNAMIC not in kinds


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "aarch64"), reason="the libc-free init is for these"
)
def test_init_is_libc_free() -> None:
    with open(INIT_PATH, "rb") as f:
        data = f.read()
    # a static glibc binary is ~800 KB and names its own functions
    assert len(data) < 64 * 1024, f"{len(data)} bytes: the glibc fallback was built"
    assert b"__libc_start_main" not in data

"""Only here for ``cffi_modules`` and the ``nscg-init`` helper: metadata lives in pyproject.toml.

``nscg-init`` (src/nscg/_native/init.c) is the pid 1 of a sandbox's pid
namespace: a small static program, built here next to the cffi extension, that
the sandbox's first process execs (by fd) so that the init holds none of the
caller's memory.

On x86_64 and aarch64 it is built without any C library (init.c's
``NSCG_INIT_NOLIBC`` path: its own ``_start``, raw system calls), so that a
sandbox's pid 1 starts with its first system call instead of a static C
library's start-up. The compiler decides: where that build does not compile
(another architecture: init.c says so with ``#error``) or does not link, the
same program is linked statically against the C library, as before.
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError, LinkError

INIT_SOURCE = os.path.join("src", "nscg", "_native", "init.c")

#: the libc-free build: nothing may call into a C library or libgcc (no stack
#: protector, no builtins turned into calls), no unwind tables nobody reads,
#: no LTO (its _start is top-level asm). After the compiler's flags, so these win.
NOLIBC_CFLAGS = [
    "-O2",
    "-Wall",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fno-lto",
]
#: linked alone, static, not PIE: no interpreter, no dynamic section, no
#: relocations; one load segment on x86_64 (as aarch64 has by default)
NOLIBC_LDFLAGS = [
    "-nostdlib",
    "-static",
    "-no-pie",
    "-Wl,--build-id=none",
    "-Wl,-z,noseparate-code",
]


class BuildExtWithInit(build_ext):  # type: ignore[misc]  # setuptools is untyped here
    """build_ext that also links ``nscg-init`` beside the extension."""

    def run(self) -> None:
        super().run()
        ext_path = self.get_ext_fullpath("nscg._native._nscg")
        out_dir = os.path.dirname(os.path.abspath(ext_path))
        os.makedirs(out_dir, exist_ok=True)
        try:
            self._build_init(out_dir, nolibc=True)
        except (CompileError, LinkError) as e:
            self.warn(
                f"nscg-init: no libc-free build for this target ({e}); "
                "linking it statically against the C library"
            )
            self._build_init(out_dir, nolibc=False)

    def _build_init(self, out_dir: str, *, nolibc: bool) -> None:
        objects = self.compiler.compile(
            [INIT_SOURCE],
            output_dir=os.path.join(self.build_temp, "nolibc" if nolibc else "libc"),
            macros=[("NSCG_INIT_NOLIBC", None)] if nolibc else [],
            extra_postargs=NOLIBC_CFLAGS if nolibc else ["-O2", "-Wall"],
        )
        self.compiler.link_executable(
            objects,
            "nscg-init",
            output_dir=out_dir,
            extra_postargs=NOLIBC_LDFLAGS if nolibc else ["-static"],
        )


setup(
    cffi_modules=["src/nscg/_native/build.py:ffibuilder"],
    cmdclass={"build_ext": BuildExtWithInit},
)

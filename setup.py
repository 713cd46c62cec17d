"""Only here for ``cffi_modules`` and the ``nscg-init`` helper: metadata lives in pyproject.toml.

``nscg-init`` (src/nscg/_native/init.c) is the pid 1 of a sandbox's pid
namespace: a small static program, built here next to the cffi extension, that
the sandbox's first process execs (by fd) so that the init holds none of the
caller's memory.
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_ext import build_ext

INIT_SOURCE = os.path.join("src", "nscg", "_native", "init.c")


class BuildExtWithInit(build_ext):  # type: ignore[misc]  # setuptools is untyped here
    """build_ext that also links ``nscg-init`` beside the extension."""

    def run(self) -> None:
        super().run()
        ext_path = self.get_ext_fullpath("nscg._native._nscg")
        out_dir = os.path.dirname(os.path.abspath(ext_path))
        os.makedirs(out_dir, exist_ok=True)
        objects = self.compiler.compile(
            [INIT_SOURCE], output_dir=self.build_temp, extra_postargs=["-O2", "-Wall"]
        )
        self.compiler.link_executable(
            objects, "nscg-init", output_dir=out_dir, extra_postargs=["-static"]
        )


setup(
    cffi_modules=["src/nscg/_native/build.py:ffibuilder"],
    cmdclass={"build_ext": BuildExtWithInit},
)

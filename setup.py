"""Only here for ``cffi_modules``: all metadata lives in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["src/nscg/_native/build.py:ffibuilder"])

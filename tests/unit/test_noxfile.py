"""noxfile.py: the virtualenvs of two checkouts on one machine never collide."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _noxfile() -> ModuleType:
    pytest.importorskip("nox", reason="nox is not installed (the sessions run in their own venvs)")
    spec = importlib.util.spec_from_file_location("nscg_noxfile", ROOT / "noxfile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shared_envdirs_are_keyed_by_the_checkout() -> None:
    envdir = _noxfile().shared_envdir
    a = envdir(Path("/root/src/nscg"), 0)
    b = envdir(Path("/home/ci/work/nscg"), 0)
    assert a != b  # same name, other checkout
    assert a == envdir(Path("/root/src/nscg"), 0)  # stable: reused by the same checkout
    assert envdir(Path("/root/src/nscg"), 1000) != a  # and per user
    assert a.startswith("/var/tmp/nscg-nox-0-nscg-") and "/" not in a[len("/var/tmp/") :]
    assert "/" not in envdir(Path("/x/we ird/..name"), 0)[len("/var/tmp/") :]

"""On a hybrid host (cgroup v1 holds memory), asking for memory.max fails clearly.

Reads only: discovery happens before any mkdir, and the test forbids every write.
"""

from __future__ import annotations

import os

import pytest

from nscg.cgroups import CgroupMode, CgroupV2, Limits, discover
from nscg.cgroups import _handle as cgroups
from nscg.errors import UnsupportedError


def _forbidden(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"the host's cgroups must not be written: {args}")


def test_memory_limit_on_hybrid_host_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    rep = discover()
    if rep.mode is not CgroupMode.HYBRID or "memory" not in rep.v1_controllers:
        pytest.skip(f"needs a hybrid host where cgroup v1 holds memory (this one: {rep.mode})")
    monkeypatch.setattr(os, "mkdir", _forbidden)
    monkeypatch.setattr(os, "rmdir", _forbidden)
    monkeypatch.setattr(cgroups, "_write", _forbidden)
    with pytest.raises(UnsupportedError) as ei:
        CgroupV2.create(Limits(memory_max="64M"))
    msg = str(ei.value)
    assert ei.value.feature == "cgroup2.memory"
    assert "cgroup v1 holds" in msg and "memory" in msg
    assert "systemd.unified_cgroup_hierarchy=1" in msg
    # a CgroupV2 opened on the v2 mount cannot take it either
    assert rep.mount_point is not None
    with pytest.raises(UnsupportedError, match="cgroup v1 holds"):
        CgroupV2.open(rep.mount_point).apply(Limits(memory_max="64M"))

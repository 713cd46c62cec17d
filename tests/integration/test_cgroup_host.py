"""Cgroup limits on a host that cannot give them: a clear error, and nothing runs."""

from __future__ import annotations

import os

import pytest

import nscg
from nscg import Container
from nscg.cgroups import CgroupMode, discover


def _cgroup_dirs() -> set[str]:
    rep = discover()
    out: set[str] = set()
    if rep.mount_point:
        for dirpath, dirnames, _ in os.walk(rep.mount_point):
            out.update(os.path.join(dirpath, d) for d in dirnames)
    return out


def test_memory_limit_on_a_hybrid_host_is_unsupported_and_nothing_runs(tmp_path: object) -> None:
    rep = discover()
    if rep.mode is not CgroupMode.HYBRID:
        pytest.skip(f"this host is {rep.mode.value}, not hybrid")
    before = _cgroup_dirs()
    marker = f"/tmp/nscg-ran-{os.getpid()}"
    with pytest.raises(nscg.UnsupportedError) as ei:
        Container().with_limits(memory="64M").run(["touch", marker])
    msg = str(ei.value)
    assert "memory" in msg and "v1" in msg
    assert not os.path.exists(marker)
    assert _cgroup_dirs() == before


def test_limit_values_are_checked_before_anything() -> None:
    with pytest.raises(nscg.SpecError):
        Container().with_limits(memory="lots")
    with pytest.raises(nscg.SpecError):
        Container().with_limits(pids=-3)
    with pytest.raises(nscg.SpecError, match="unknown limit"):
        Container().with_limits(bogus=1)

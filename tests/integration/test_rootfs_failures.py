"""Every RootFS failure is a SpawnError naming the stage, the op's index and its path."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import nscg
from nscg import Container, RootFS, Stage
from nscg._spawn import spawn
from tests.conftest import children, open_fds


def _no_leftovers(fds: set[int], kids: set[int]) -> None:
    assert open_fds() == fds
    assert set(children()) == kids
    assert not [n for n in os.listdir("/dev/shm") if n.startswith("nscg-overlay-")]


def test_missing_source_at_spawn(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    c = Container().with_rootfs(RootFS.host().ro_bind(str(src), "/data"))
    src.rmdir()  # gone after the spec was checked
    fds, kids = open_fds(), set(children())
    with pytest.raises(nscg.SpawnError) as ei:
        c.run(["true"])
    e = ei.value
    assert (e.stage, e.errno, e.syscall) == (Stage.MOUNTS, errno.ENOENT, "open_tree")
    assert e.op_index == len(c.rootfs.ops) - 1 if c.rootfs else False
    assert e.filename == f"ro-bind {src} /data"
    assert "MOUNTS" in str(e) and "/data" in str(e)
    _no_leftovers(fds, kids)


def test_bad_fs_type() -> None:
    c = Container().with_rootfs(RootFS.host().mount("nscgnosuchfs", "/mnt"))
    with pytest.raises(nscg.SpawnError) as ei:
        c.run(["true"])
    e = ei.value
    assert (e.stage, e.errno, e.syscall) == (Stage.MOUNTS, errno.ENODEV, "fsopen")
    assert e.filename == "mount /mnt"
    assert "filesystem type" in str(e)


def test_missing_mount_point_on_a_readonly_root() -> None:
    # made in a tmpfs by default (docs/rootfs.md, "Missing destinations"); not when asked
    r = Container().with_rootfs(RootFS.host().tmpfs("/nscg-no-such-dir")).run(["true"])
    assert r.returncode == 0
    root = RootFS.host().tmpfs("/nscg-no-such-dir").with_made_dests(False)
    c = Container().with_rootfs(root)
    with pytest.raises(nscg.SpawnError) as ei:
        c.run(["true"])
    assert (ei.value.stage, ei.value.errno) == (Stage.MOUNTS, errno.EROFS)
    assert ei.value.filename == "tmpfs /nscg-no-such-dir"


def test_pivot_root_failure() -> None:
    fds, kids = open_fds(), set(children())
    with pytest.raises(nscg.SpawnError) as ei:
        spawn(Container().with_rootfs(), ["true"], _fault=(Stage.PIVOT_ROOT, errno.EINVAL, -1))
    e = ei.value
    assert (e.stage, e.errno, e.syscall) == (Stage.PIVOT_ROOT, errno.EINVAL, "pivot_root")
    assert "mount point" in str(e) and "PIVOT_ROOT" in str(e)
    _no_leftovers(fds, kids)


@pytest.mark.parametrize("prim", [0, 1, 3])
def test_injected_failure_names_the_op(prim: int) -> None:
    c = Container().with_rootfs(RootFS.overlay())
    fds, kids = open_fds(), set(children())
    with pytest.raises(nscg.SpawnError) as ei:
        spawn(c, ["true"], _fault=(Stage.MOUNTS, errno.EPERM, prim))
    e = ei.value
    assert e.stage == Stage.MOUNTS and e.errno == errno.EPERM
    assert e.op_index >= 0 and e.filename
    _no_leftovers(fds, kids)  # the overlay's temp dir is gone too


def test_whole_stage_injected() -> None:
    with pytest.raises(nscg.SpawnError) as ei:
        spawn(Container().with_rootfs(), ["true"], _fault=(Stage.MOUNTS, errno.EACCES, -1))
    assert ei.value.syscall == "mount" and ei.value.stage == Stage.MOUNTS

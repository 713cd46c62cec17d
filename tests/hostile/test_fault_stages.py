"""Faults in the stages the other failure tests do not reach, and in the default profile.

For each: the typed error names the stage, and no process, fd, mount or
temporary directory is left (cgroups: in tests/cgroup2, on the VM).
"""

from __future__ import annotations

import errno
import glob
import os
from collections.abc import Iterator

import pytest

import nscg
from nscg import Container, RootFS, Stage
from nscg._spawn import spawn
from tests.conftest import children, mount_count, open_fds


def _scratch() -> set[str]:
    """nscg's temporary directories (overlay upper/work) wherever it makes them."""
    out: set[str] = set()
    for parent in ("/dev/shm", "/tmp", "/var/tmp"):
        out |= set(glob.glob(os.path.join(parent, "nscg-overlay-*")))
        out |= set(glob.glob(os.path.join(parent, "nscg-work-*")))
    return out


@pytest.fixture
def nothing_left() -> Iterator[None]:
    fds, kids, mounts, scratch = open_fds(), set(children()), mount_count(), _scratch()
    yield
    assert open_fds() == fds
    assert set(children()) == kids
    assert mount_count() == mounts
    assert _scratch() == scratch


DEFAULT = Container().with_rootfs(RootFS.host())
OVERLAY = Container().with_rootfs(RootFS.overlay())


@pytest.mark.parametrize(
    ("stage", "index", "syscall"),
    [
        (Stage.CAPS, 0, "prctl"),
        (Stage.CAPS, 1, "capset"),
        (Stage.SECCOMP, -1, "seccomp"),
        (Stage.MOUNTS, -1, "mount"),
        (Stage.PIVOT_ROOT, -1, "pivot_root"),
        (Stage.EXEC, -1, "execve"),
    ],
    ids=str,
)
@pytest.mark.parametrize("spec", [DEFAULT, OVERLAY], ids=["host", "overlay"])
def test_fault_in_the_default_profile(
    nothing_left: None, spec: Container, stage: Stage, index: int, syscall: str
) -> None:
    with pytest.raises(nscg.SpawnError) as ei:
        spawn(spec, ["true"], _fault=(stage, errno.EPERM, index))
    e = ei.value
    assert (e.stage, e.errno, e.syscall) == (stage, errno.EPERM, syscall)
    assert stage.name in str(e)


def test_joining_fault_after_the_private_fork(nothing_left: None) -> None:
    """The process forked into a joined pid namespace (a copy, not dumpable) fails cleanly."""
    with DEFAULT.spawn(["sleep", "30"]) as box:
        c = Container().entering(box)  # holds fds of box's namespaces until closed
        try:
            for stage, index in ((Stage.FORK, -1), (Stage.PDEATHSIG, -1), (Stage.EXEC, -1)):
                with pytest.raises(nscg.SpawnError) as ei:
                    spawn(c, ["true"], _fault=(stage, errno.EPERM, index))
                assert ei.value.stage == stage
            r = c.run(["cat", "/proc/self/status"], capture_output=True)
            assert b"NoNewPrivs:\t1" in (r.stdout or b"")
        finally:
            for ref in c.join:
                ref.close()
            box.kill()

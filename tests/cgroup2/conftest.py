"""Fixtures for tests that need a pure cgroup v2 host (the test VM: tools/vm/run-in-v2vm.sh).

Every test here is skipped, with the reason, unless the host is pure cgroup v2, we are
root and the controllers the tests need are enabled in the root's subtree_control.
When ``NSCG_REQUIRE`` contains ``cgroup2`` the skip becomes a failure, so CI cannot
pass by skipping. After each test, no cgroup it created may remain.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

try:
    import nscg  # noqa: F401  (installed, or on PYTHONPATH)
except ModuleNotFoundError:  # a fresh clone in the VM: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from nscg.cgroups import CgroupMode, CgroupV2, discover

NEEDED = frozenset({"memory", "cpu", "pids", "io"})
SHARED_PARENT = "nscg"


def pure_v2_problem() -> str | None:
    """Say why this host cannot run the cgroup2 tests, or None if it can."""
    rep = discover()
    if rep.mode is not CgroupMode.UNIFIED or rep.mount_point is None:
        held = ", ".join(sorted(rep.v1_controllers)) or "-"
        return (
            f"needs a pure cgroup v2 host, this one is {rep.mode.value} (v1 holds: {held}); "
            "run: tools/vm/run-in-v2vm.sh --share $PWD -- python3 -m pytest -m cgroup2 "
            "tests/cgroup2"
        )
    if os.geteuid() != 0:
        return "needs root (the test VM runs tests as root)"
    if rep.own_dir != rep.mount_point:
        return f"needs to run in the root cgroup (runs in {rep.own_path})"
    missing = NEEDED - rep.subtree_control
    if missing:
        return f"controllers not enabled in the root cgroup.subtree_control: {sorted(missing)}"
    return None


def require_cgroup2() -> None:
    """Skip the test, or fail it when NSCG_REQUIRE contains 'cgroup2'."""
    problem = pure_v2_problem()
    if problem is None:
        return
    if "cgroup2" in os.environ.get("NSCG_REQUIRE", ""):
        pytest.fail(f"NSCG_REQUIRE=cgroup2 but: {problem}", pytrace=False)
    pytest.skip(problem)


def _all_cgroups(root: str) -> set[str]:
    out: set[str] = set()
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            out.add(os.path.join(dirpath, d))
    return out


@pytest.fixture(autouse=True)
def _cgroup2_env() -> Iterator[None]:
    """Require a pure v2 host, and check that the test leaves no cgroup behind."""
    require_cgroup2()
    root = discover().mount_point
    assert root is not None
    before = _all_cgroups(root)
    _set_subreaper(True)
    try:
        yield
    finally:
        _set_subreaper(False)
        _reap_orphans()
    leaked = sorted(
        p for p in _all_cgroups(root) - before if p != os.path.join(root, SHARED_PARENT)
    )
    for p in leaked:  # clean up so that one leak does not fail every later test
        with contextlib.suppress(OSError):
            CgroupV2(p).remove(kill=True, timeout=10)
    assert not leaked, f"cgroups left behind by the test: {leaked}"


def _reap_orphans() -> None:
    """Reap zombie children: payload orphans re-parented to us (PR_SET_CHILD_SUBREAPER).

    Only zombies are reaped, so a live child that some other fixture owns keeps its
    exit status.
    """
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            continue
        for pid in kids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state == "Z":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)


_PR_SET_CHILD_SUBREAPER = 36


def _set_subreaper(on: bool) -> None:
    """Make escaped payload processes re-parent to us (and stay reapable), or stop it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)


@pytest.fixture
def spawn_in() -> Iterator[Callable[[CgroupV2, str], subprocess.Popen[bytes]]]:
    """Start ``sh -c SCRIPT`` held at a ``read`` until it is placed in the cgroup.

    The child is moved with :meth:`CgroupV2.add_pid` before it runs SCRIPT, so no
    process it starts can escape the cgroup. Children are killed at teardown.
    """
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(cg: CgroupV2, script: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            ["/bin/sh", "-c", f"read _go; {script}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        procs.append(p)
        cg.add_pid(p.pid)
        stdin: IO[bytes] | None = p.stdin
        assert stdin is not None
        stdin.write(b"go\n")
        stdin.close()
        return p

    yield spawn
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()
        if p.stdout is not None:
            p.stdout.close()

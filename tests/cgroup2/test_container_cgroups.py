"""A Container with a cgroup, on a pure cgroup v2 kernel (the test VM)."""

from __future__ import annotations

import contextlib
import os
import sys
import time

import pytest

import nscg
from nscg import Container
from nscg.cgroups import discover

pytestmark = pytest.mark.cgroup2

PY = sys.executable


def test_memory_max_oom_kills_and_reports() -> None:
    alloc = "b = []\nfor i in range(64):\n    b.append(bytearray(4 << 20))\nprint('survived')"
    r = (
        Container()
        .with_limits(memory="64M", memory_swap_max=0)
        .run([PY, "-c", alloc], capture_output=True, timeout=120)
    )
    assert r.oom_killed, r
    assert b"survived" not in (r.stdout or b"")
    assert r.usage.oom_kills >= 1
    if r.usage.memory_peak is not None:
        assert r.usage.memory_peak <= 64 << 20


def test_pids_max_contains_a_fork_bomb() -> None:
    bomb = "f() { f | f & }; f; sleep 2; echo done"
    marker_before = len(os.listdir("/proc"))
    r = Container().with_limits(pids=32).run(["sh", "-c", bomb], capture_output=True, timeout=60)
    assert r.returncode is not None
    assert r.usage.cgroup is not None
    # the sandbox is gone, and everything in it
    time.sleep(0.2)
    assert len(os.listdir("/proc")) < marker_before + 16


def test_cpu_max_throttles() -> None:
    loop = "import time\nt=time.monotonic()\nwhile time.monotonic()-t<2: pass"
    r = Container().with_limits(cpus=0.2).run([PY, "-c", loop], timeout=60)
    cu = r.usage.cgroup
    assert cu is not None
    assert r.usage.cpu_total <= 0.2 * r.wall_time + 0.05, r.usage
    assert cu.nr_throttled > 0


def test_freeze_thaw_and_kill_through_the_process() -> None:
    script = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.01; done"
    with Container().with_cgroup().spawn(["sh", "-c", script], stdout=nscg.PIPE) as p:
        assert p.cgroup is not None
        assert p.stdout is not None
        assert p.stdout.readline() == b"1\n"
        p.cgroup.freeze()
        os.set_blocking(p.stdout.fileno(), False)
        time.sleep(0.1)
        with contextlib.suppress(BlockingIOError):
            p.stdout.read()
        time.sleep(0.3)
        assert p.stdout.read() in (None, b"")  # nothing while frozen
        p.cgroup.thaw()
        time.sleep(0.3)
        assert p.stdout.read()  # counting again
        p.kill()
        assert p.wait() == -9


def test_kill_reaches_processes_that_escaped_the_session_without_pid_ns() -> None:
    c = Container().without_namespaces("pid").without_rootfs().with_cgroup()
    marker = f"1000.{os.getpid()}{time.time_ns() % 10**6}"
    with c.spawn(["sh", "-c", f"(setsid sleep {marker} &); sleep {marker}"]) as p:
        assert p.cgroup is not None
        deadline = time.monotonic() + 5
        while len(p.cgroup.pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(p.cgroup.pids()) >= 2
        p.kill()
        p.wait()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    assert marker.encode() not in f.read()
            except OSError:
                pass


def test_born_in_the_cgroup() -> None:
    # without a cgroup namespace the payload sees its full cgroup path at its
    # first instruction: it never ran outside
    c = Container().without_namespaces("cgroup").with_cgroup()
    with c.spawn(["cat", "/proc/self/cgroup"], stdout=nscg.PIPE) as p:
        assert p.cgroup is not None
        path = p.cgroup.path
        out, _ = p.communicate(timeout=30)
    mount = discover().mount_point
    assert mount is not None
    assert out == f"0::{path[len(mount) :]}\n".encode()
    # with one, its cgroup is the root of its view
    r = Container().with_cgroup().run(["cat", "/proc/self/cgroup"], capture_output=True)
    assert r.stdout == b"0::/\n"


def test_timeout_kills_everything_in_the_cgroup() -> None:
    with pytest.raises(nscg.TimeoutExpired):
        Container().with_limits(pids=64).run(["sh", "-c", "sleep 100 & sleep 100"], timeout=0.5)


def test_placed_through_cgroup_procs_without_clone3() -> None:
    from nscg._native import lib
    from nscg._spawn import spawn

    c = Container().without_namespaces("cgroup").with_cgroup()
    p = spawn(
        c,
        ["cat", "/proc/self/cgroup"],
        stdout=nscg.PIPE,
        _extra_flags=lib.NSCG_F_FORCE_CLONE_FALLBACK,
    )
    with p:
        assert p.cgroup is not None
        path = p.cgroup.path
        out, _ = p.communicate(timeout=30)
    mount = discover().mount_point
    assert mount is not None
    assert out == f"0::{path[len(mount) :]}\n".encode()


def test_nscg_check_reports_pure_v2() -> None:
    import json
    import subprocess

    r = subprocess.run(
        [sys.executable, "-m", "nscg", "check", "--json"],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert checks["cgroup v2 mode"]["ok"] is True
    assert checks["cgroup v2 mode"]["detail"].startswith("unified")
    for ctl in ("memory", "cpu", "pids", "io"):
        assert ctl in checks["cgroup v2 controllers"]["detail"]

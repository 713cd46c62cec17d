"""The systemd test VM itself: what the systemd tests rely on is there."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.systemd.conftest import run_as_user, vm_user

pytestmark = pytest.mark.systemd


def _systemctl(*args: str) -> str:
    return subprocess.run(
        ["systemctl", *args], capture_output=True, text=True, check=False, timeout=60
    ).stdout.strip()


def test_pid1_is_systemd_on_pure_cgroup2() -> None:
    with open("/proc/1/comm") as f:
        assert f.read().strip() == "systemd"
    assert os.path.exists("/sys/fs/cgroup/cgroup.controllers")  # cgroup2 at the top
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if " - cgroup " in line], "a cgroup v1 hierarchy"
    with open("/proc/self/cgroup") as f:  # the command runs in a system service
        assert f.read().strip() == "0::/system.slice/v2vm-run.service"


def test_system_bus_and_manager() -> None:
    assert os.path.exists("/run/dbus/system_bus_socket")
    assert _systemctl("is-system-running") in {"running", "degraded"}, _systemctl("--failed")
    assert _systemctl("is-active", "dbus.service") == "active"


def test_lingering_user_has_a_user_manager() -> None:
    pw = vm_user()
    assert pw.pw_uid >= 1000
    assert os.path.exists(f"/var/lib/systemd/linger/{pw.pw_name}")
    assert _systemctl("is-active", f"user@{pw.pw_uid}.service") == "active"
    assert os.path.exists(f"/run/user/{pw.pw_uid}/bus")
    # user@.service delegates a subset of the controllers (Debian 252: cpu memory pids)
    cg = f"/sys/fs/cgroup/user.slice/user-{pw.pw_uid}.slice/user@{pw.pw_uid}.service"
    with open(f"{cg}/cgroup.controllers") as f:
        assert {"cpu", "memory", "pids"} <= set(f.read().split())
    assert os.stat(cg).st_uid == pw.pw_uid


def test_as_user_reaches_the_user_manager() -> None:
    pw = vm_user()
    got = run_as_user(
        """
        import json, os, subprocess
        out = subprocess.run(["systemctl", "--user", "is-system-running"],
                             capture_output=True, text=True).stdout.strip()
        print(json.dumps({"uid": os.getuid(), "state": out,
                          "runtime": os.environ["XDG_RUNTIME_DIR"],
                          "bus": os.environ["DBUS_SESSION_BUS_ADDRESS"]}))
        """
    )
    assert got["uid"] == pw.pw_uid
    assert got["state"] in {"running", "degraded"}
    assert got["runtime"] == f"/run/user/{pw.pw_uid}"
    assert got["bus"] == f"unix:path=/run/user/{pw.pw_uid}/bus"

"""nscg._systemd against systemd 252 in the VM: as root on the system bus, as the user on its bus.

A transient scope with ``Delegate=yes`` for a held process, its ``ControlGroup``,
``DelegateControllers``, the subtree it hands over, StopUnit, and the errors
systemd returns.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from nscg._dbus import DBusError
from nscg._systemd import SCOPE, UNIT, JobFailed, Manager, prop
from tests.systemd.conftest import run_as_user, vm_user

pytestmark = pytest.mark.systemd


@pytest.fixture
def held() -> Iterator[subprocess.Popen[bytes]]:
    """A process that waits until killed (the scope's first member)."""
    p = subprocess.Popen(["sleep", "600"])
    yield p
    p.kill()
    p.wait()


def _cgroup_of(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return f.read().strip().removeprefix("0::")


def test_system_manager_version() -> None:
    out = subprocess.run(["systemctl", "--version"], capture_output=True, text=True, check=True)
    with Manager.system() as m:
        version = m.version()
        assert f"({version})" in out.stdout.splitlines()[0]  # "systemd 252 (252.39-1~deb12u2)"
        assert m.manager_property("Architecture") == "x86-64"


def test_transient_delegated_scope_as_root(held: subprocess.Popen[bytes]) -> None:
    name = f"nscg-test-{os.getpid()}.scope"
    with Manager.system() as m:
        m.start_transient_unit(
            name,
            [
                prop("PIDs", "au", [held.pid]),
                prop("Delegate", "b", True),
                prop("Slice", "s", "nscg-test.slice"),
                prop("Description", "s", "nscg test scope"),
                prop("CollectMode", "s", "inactive-or-failed"),
            ],
        )
        try:
            cg = m.unit_property(name, SCOPE, "ControlGroup")
            assert cg == f"/nscg.slice/nscg-test.slice/{name}"  # "-" in a slice name nests it
            assert _cgroup_of(held.pid) == cg
            assert m.unit_property(name, SCOPE, "Delegate") is True
            delegated = m.unit_property(name, SCOPE, "DelegateControllers")
            assert isinstance(delegated, list) and {"cpu", "memory", "pids"} <= set(delegated)
            assert m.unit_property(name, UNIT, "ActiveState") == "active"
            # the delegated subtree is ours: a child cgroup, the process moved into it
            os.mkdir(f"/sys/fs/cgroup{cg}/leaf")
            with open(f"/sys/fs/cgroup{cg}/leaf/cgroup.procs", "w") as f:
                f.write(str(held.pid))
            with open(f"/sys/fs/cgroup{cg}/cgroup.subtree_control", "w") as f:
                f.write("+memory +pids")
            with open(f"/sys/fs/cgroup{cg}/leaf/memory.max", "w") as f:
                f.write("64M")
        finally:
            m.stop_unit(name)
        assert held.wait(10) in (-15, -9)  # stopping the scope killed its process
        assert not os.path.exists(f"/sys/fs/cgroup{cg}")  # and removed the whole subtree
        with pytest.raises(DBusError) as e:
            m.unit_path(name)
        assert e.value.name == "org.freedesktop.systemd1.NoSuchUnit"


def test_systemd_errors_are_named(held: subprocess.Popen[bytes]) -> None:
    name = f"nscg-test-err-{os.getpid()}.scope"
    with Manager.system() as m:
        with pytest.raises(DBusError) as e:  # a scope without processes does not load
            m.start_transient_unit(name, [prop("Delegate", "b", True)])
        assert e.value.name.startswith("org.freedesktop.") and name in e.value.message
        with pytest.raises(DBusError) as e:
            m.start_transient_unit(name, [prop("NoSuchProperty", "b", True)])
        assert "NoSuchProperty" in e.value.message, e.value
        m.start_transient_unit(name, [prop("PIDs", "au", [held.pid])])
        try:
            with pytest.raises(DBusError) as e:
                m.start_transient_unit(name, [prop("PIDs", "au", [held.pid])])
            assert e.value.name == "org.freedesktop.systemd1.UnitExists"
        finally:
            m.stop_unit(name)
        with pytest.raises(DBusError) as e:
            m.stop_unit(name)
        assert e.value.name == "org.freedesktop.systemd1.NoSuchUnit"
        assert issubclass(JobFailed, DBusError)


def test_transient_delegated_scope_as_the_user() -> None:
    """Over the user bus: the scope lands under user@UID.service, owned by the user."""
    pw = vm_user()
    got = run_as_user(
        """
        import json, os, subprocess
        from nscg._systemd import SCOPE, Manager, prop
        held = subprocess.Popen(["sleep", "600"])
        name = f"nscg-user-{os.getpid()}.scope"
        out = {}
        with Manager.user() as m:
            out["version"] = m.version()
            out["manager_cgroup"] = m.manager_property("ControlGroup")
            m.start_transient_unit(name, [prop("PIDs", "au", [held.pid]),
                                          prop("Delegate", "b", True)])
            cg = m.unit_property(name, SCOPE, "ControlGroup")
            out["cgroup"] = cg
            out["delegated"] = m.unit_property(name, SCOPE, "DelegateControllers")
            with open(f"/sys/fs/cgroup{cg}/cgroup.controllers") as f:
                out["controllers"] = f.read().split()
            out["owner"] = os.stat(f"/sys/fs/cgroup{cg}").st_uid
            with open(f"/proc/{held.pid}/cgroup") as f:
                out["held_in"] = f.read().strip()[3:]
            m.stop_unit(name)
            out["status"] = held.wait(10)
            out["gone"] = not os.path.exists(f"/sys/fs/cgroup{cg}")
        print(json.dumps(out))
        """
    )
    base = f"/user.slice/user-{pw.pw_uid}.slice/user@{pw.pw_uid}.service"
    assert got["manager_cgroup"] == base
    assert got["cgroup"].startswith(base + "/") and got["cgroup"].endswith(".scope")
    assert got["held_in"] == got["cgroup"]
    assert got["owner"] == pw.pw_uid
    # user@.service delegates cpu memory pids; io is not there to hand on
    assert {"cpu", "memory", "pids"} <= set(got["controllers"])
    assert "io" not in got["controllers"]
    assert got["status"] in (-15, -9) and got["gone"]

"""Capabilities, no_new_privs and seccomp, enforced in the kernel and observed from inside."""

from __future__ import annotations

import errno
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import nscg
from nscg import Container
from nscg.capabilities import Capabilities, Capability
from nscg.seccomp import Arg, Seccomp
from tests.conftest import need_root, run_as_nobody

X86_64 = platform.machine() == "x86_64"


@pytest.fixture(scope="module")
def probe() -> Iterator[str]:
    """The try_syscall probe, compiled into a world-readable temp dir."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    # (not under /tmp: the default root has a private /tmp; /var/tmp is the host's)
    d = tempfile.mkdtemp(prefix="nscg-probe-", dir="/var/tmp")
    os.chmod(d, 0o755)
    exe = os.path.join(d, "try_syscall")
    src = Path(__file__).with_name("probes") / "try_syscall.c"
    subprocess.run([cc, "-O1", "-o", exe, str(src)], check=True)
    try:
        yield exe
    finally:
        shutil.rmtree(d)


def out(r: nscg.Result) -> str:
    return (r.stdout or b"").decode().strip()


def status_field(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(f"{name} not in {text!r}")


def test_default_has_no_capabilities_and_the_docker_filter() -> None:
    r = Container().run(["cat", "/proc/self/status"], capture_output=True, check=True)
    text = out(r)
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status_field(text, name) == 0, name
    assert "Seccomp:\t2" in text
    assert "NoNewPrivs:\t1" in text


def test_capability_sets_are_what_was_asked() -> None:
    caps = Capabilities.docker_default()
    r = Container().with_capabilities(caps).run(["cat", "/proc/self/status"], capture_output=True)
    text = out(r)
    m = caps.to_masks()
    assert status_field(text, "CapEff") == m.effective
    assert status_field(text, "CapPrm") == m.permitted
    assert status_field(text, "CapBnd") == m.bounding
    assert status_field(text, "CapAmb") == 0


def test_root_without_sys_admin_cannot_mount() -> None:
    c = Container().with_capabilities(Capabilities.docker_default()).with_seccomp("unconfined")
    r = c.run(["sh", "-c", "mount -t tmpfs none /mnt 2>/dev/null; echo $?"], capture_output=True)
    assert out(r) != "0"
    c = Container().with_capabilities(Capabilities.all()).with_seccomp("unconfined")
    r = c.run(["sh", "-c", "mount -t tmpfs none /mnt && echo mounted"], capture_output=True)
    assert out(r) == "mounted"  # in its own mount namespace: the control case


def test_ambient_net_bind_service_for_a_non_root_payload(probe: str) -> None:
    caps = Capabilities.from_keep([Capability.NET_BIND_SERVICE], ambient=True)
    c = (
        Container().with_uid_map((0, os.geteuid(), 1), (1000, 100000, 1))
        if os.geteuid() == 0
        else None
    )
    if c is None:
        pytest.skip("needs root for a second uid in the map")
    c = c.with_gid_map((0, os.getegid(), 1), (1000, 100000, 1)).with_user(1000, 1000)
    r = c.with_capabilities(caps).run([probe, "bind", "80"], capture_output=True)
    assert out(r) == "ok", r
    r = c.run([probe, "bind", "80"], capture_output=True)  # without the capability
    assert out(r) == f"errno {errno.EACCES}"


def test_setuid_binary_cannot_gain_privileges(probe: str) -> None:
    need_root()
    d = tempfile.mkdtemp(prefix="nscg-suid-")
    try:
        os.chmod(d, 0o755)
        exe = os.path.join(d, "id")
        shutil.copy("/usr/bin/id", exe)
        os.chmod(exe, 0o4755)  # setuid root
        c = (
            Container()
            .without_rootfs()
            .with_namespaces(nscg.Namespace.NONE)
            .with_user(65534, 65534)
        )
        r = c.run([exe, "-u"], capture_output=True, check=True)
        assert out(r) == "65534"  # euid stayed: no_new_privs
        r = (
            c.with_no_new_privs(False)
            .with_seccomp("unconfined")
            .run([exe, "-u"], capture_output=True)
        )
        assert out(r) == "0"  # the control: without no_new_privs the bit works
    finally:
        shutil.rmtree(d)


def test_denied_syscall_returns_the_configured_errno(probe: str) -> None:
    f = Seccomp.allow_all().deny("getpid", errno=errno.EXDEV)
    r = Container().with_seccomp(f).run([probe, "nr", str(os.getpid() and 39)], capture_output=True)
    assert out(r) == f"errno {errno.EXDEV}"


def test_kill_process_ends_the_payload_with_sigsys(probe: str) -> None:
    f = Seccomp.allow_all().kill("getpid")
    r = Container().with_seccomp(f).with_init(False).run([probe, "nr", "39"], capture_output=True)
    assert r.returncode == -signal.SIGSYS


def test_argument_rules_act_on_the_right_argument(probe: str) -> None:
    f = Seccomp.allow_all().deny("socket", errno=errno.EACCES, when=[Arg(0).eq(socket.AF_INET)])
    c = Container().with_seccomp(f)
    assert out(c.run([probe, "socket", str(int(socket.AF_INET))], capture_output=True)) == (
        f"errno {errno.EACCES}"
    )
    assert out(c.run([probe, "socket", str(int(socket.AF_UNIX))], capture_output=True)) == "ok"


@pytest.mark.skipif(not X86_64, reason="x32 and i386 entry points exist on x86_64 only")
def test_x32_and_i386_entry_points_are_refused(probe: str) -> None:
    for mode in ("x32", "i386"):
        r = Container().with_init(False).run([probe, mode, "20"], capture_output=True)
        assert r.returncode == -signal.SIGSYS, (mode, r)
    # the control: unconfined, the i386 getpid (20) works
    r = Container().with_seccomp("unconfined").run([probe, "i386", "20"], capture_output=True)
    assert out(r) == "ok"


def test_docker_default_lets_ordinary_programs_work(tmp_path: Path) -> None:
    c = Container().with_rootfs(nscg.RootFS.host().bind(tmp_path, readonly=False))
    assert out(c.run(["sh", "-c", "echo hi"], capture_output=True)) == "hi"
    assert out(c.run(["python3", "-c", "print(6 * 7)"], capture_output=True)) == "42"
    assert c.run(["ls", "/"], capture_output=True).returncode == 0
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc:
        os.chmod(tmp_path, 0o777)
        src = tmp_path / "a.c"
        src.write_text("int main(void){return 3;}\n")
        c = c.with_cwd(str(tmp_path))
        r = c.run([cc, "-o", str(tmp_path / "a"), str(src)], capture_output=True)
        assert r.returncode == 0, r.stderr
        assert c.run([str(tmp_path / "a")]).returncode == 3


def test_docker_default_refuses_escape_syscalls(probe: str) -> None:
    caps = Capabilities.docker_default()  # even with Docker's capabilities kept
    c = Container().with_capabilities(caps)  # seccomp "default": Docker's + ptrace
    nrs = {"unshare": 272, "mount": 165, "keyctl": 250, "ptrace": 101, "kexec_load": 246}
    if not X86_64:
        pytest.skip("syscall numbers above are x86_64's")
    for name, nr in nrs.items():
        r = c.run([probe, "nr", str(nr)], capture_output=True)
        assert out(r) == f"errno {errno.EPERM}", (name, r)
    # unconfined and with every capability, unshare works (the control)
    r = (
        Container()
        .with_capabilities(Capabilities.all())
        .with_seccomp("unconfined")
        .run([probe, "nr", "272"], capture_output=True)
    )
    assert out(r) == "ok"


def test_seccomp_without_no_new_privs_needs_sys_admin() -> None:
    with pytest.raises(nscg.SpecError, match="no_new_privs"):
        Container().with_no_new_privs(False).validate()
    Container().with_no_new_privs(False).with_seccomp("unconfined").validate()


def test_rootless_capabilities_and_seccomp(probe: str) -> None:
    res = run_as_nobody(
        f"""
        import json, nscg
        from nscg.capabilities import Capabilities
        r = nscg.Container().run(["cat", "/proc/self/status"], capture_output=True)
        r2 = nscg.Container().with_capabilities(Capabilities.docker_default()).run(
            [{probe!r}, "nr", "272"], capture_output=True)
        print(json.dumps([r.stdout.decode(), r2.stdout.decode()]))
        """
    )
    status, unshare = res
    assert status_field(status, "CapEff") == 0 and status_field(status, "CapBnd") == 0
    assert "Seccomp:\t2" in status
    assert unshare.strip() == f"errno {errno.EPERM}"

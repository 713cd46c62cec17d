"""Escape attempts from the attacker's side, against the default profile, as root and as 65534.

Each attempt lives in :mod:`tests.hostile.escapes` (payloads: the C probe
``probes/escape.c``, a shell and a Python script); here they run once per
identity and every attempt is checked: zero lines saying ``ESCAPED``, at
least one saying ``blocked``. The table in docs/escape-tests.md lists them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

import nscg
from nscg.capabilities import Capabilities
from tests.conftest import ROOT, need_root, run_as_nobody, skip_or_fail
from tests.hostile import escapes

ATTEMPTS = (
    "fds",
    "exe",
    "ptrace",
    "kill",
    "ns",
    "tty",
    "abi",
    "privileged-exec",
    "cgroup",
    "secrets",
    "host-root",
    "mknod",
    "rlimit",
    "network",
    "shell",
    "python",
    "sockets",
)


@pytest.fixture(scope="module")
def probe_dir() -> Iterator[str]:
    """The probe, and (as root) its setuid and file-capability copies.

    The directory is on /var/tmp: the default root hides the host's /tmp.
    """
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        skip_or_fail("cc", "no C compiler for the escape probe")
    d = tempfile.mkdtemp(prefix="nscg-hostile-", dir="/var/tmp")
    os.chmod(d, 0o755)
    try:
        escapes.build_probe(d)
        if os.geteuid() == 0:
            missing = escapes.make_privileged_copies(d)
            if missing:
                skip_or_fail("setcap", f"setcap(8) missing (libcap2-bin): no {missing}")
        yield d
    finally:
        shutil.rmtree(d)


@pytest.fixture(scope="module")
def as_root(probe_dir: str) -> dict[str, list[str]]:
    need_root()
    return escapes.run_all(probe_dir)


@pytest.fixture(scope="module")
def as_nobody(probe_dir: str) -> dict[str, list[str]]:
    code = f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.hostile.escapes import main
        main({probe_dir!r})
    """
    result: dict[str, list[str]] = run_as_nobody(code, timeout=900)
    return result


def check(results: dict[str, list[str]], attempt: str) -> None:
    lines = results[attempt]
    escaped = [ln for ln in lines if not ln.startswith(("blocked", "note", "escape-"))]
    escaped += [ln for ln in lines if ln.startswith("escape-") and "blocked" not in ln]
    assert not escaped, f"{attempt}: {escaped}"
    assert any("blocked" in ln for ln in lines), f"{attempt}: no attempt was made: {lines}"


@pytest.mark.root
@pytest.mark.parametrize("attempt", ATTEMPTS)
def test_escape_as_root(as_root: dict[str, list[str]], attempt: str) -> None:
    check(as_root, attempt)


@pytest.mark.rootless
@pytest.mark.parametrize("attempt", ATTEMPTS)
def test_escape_as_nobody(as_nobody: dict[str, list[str]], attempt: str) -> None:
    check(as_nobody, attempt)


def test_entering_lands_in_the_sandbox_root() -> None:
    """A process joining a sandbox's mount namespace sees the sandbox's root.

    pivot_root(".", ".") stacks the old root (the host's "/") on the new one;
    when it stayed, setns(CLONE_NEWNS) landed on top of it: Container.entering
    ran in the host's tree, read-write, reachable by the payload through
    /proc/PID/root.
    """
    secret = tempfile.mkdtemp(prefix="nscg-hostile-enter-")  # host /tmp: hidden inside
    try:
        with escapes.default().spawn(["sleep", "30"]) as p:
            joiner = nscg.Container().entering(p)
            try:
                r = joiner.run(["sh", "-c", f"ls -d {secret}; ls -d /tmp/*"], capture_output=True)
                mounts = joiner.run(
                    ["cat", "/proc/self/mountinfo"], capture_output=True, check=True
                )
            finally:
                for ref in joiner.join:
                    ref.close()
                p.kill()
    finally:
        os.rmdir(secret)
    assert r.returncode != 0 and secret.encode() not in (r.stdout or b""), r
    text = (mounts.stdout or b"").decode()
    root_line = next(ln for ln in text.splitlines() if ln.split()[4] == "/")
    assert " ro," in f" {root_line.split()[5]},", root_line  # the read-only bind of the host's /


@pytest.mark.parametrize("identity", ["root", "nobody"])
def test_symlink_race_on_a_bind_destination(identity: str) -> None:
    """CVE-2021-30465: the mount lands inside the new root or the spawn fails."""
    need_root()
    share = tempfile.mkdtemp(prefix="nscg-hostile-share-", dir="/var/tmp")
    os.chmod(share, 0o777)
    try:
        if identity == "root":
            out = escapes.race(share, 4.0)
        else:
            code = f"""
                import json, sys
                sys.path.insert(0, {str(ROOT)!r})
                from tests.hostile.escapes import race
                print(json.dumps(race({share!r}, 4.0)))
            """
            out = run_as_nobody(code, timeout=300)
    finally:
        shutil.rmtree(share)
    assert not [ln for ln in out if ln.startswith("ESCAPED")], out


def test_cli_default_profile_holds(probe_dir: str) -> None:
    """``python -m nscg run``: a host fd and cwd left open, a host process to find and signal."""
    exe = os.path.join(probe_dir, "escape")
    d = tempfile.mkdtemp(prefix="nscg-hostile-cli-")  # host /tmp: hidden inside
    with open(os.path.join(d, "secret"), "w") as f:
        f.write("host secret\n")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(fd, True)
    token = f"NSCG_HOST_SECRET_{os.getpid()}"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", token])
    attempts = [
        ["fds", "secret"],
        ["kill", str(sleeper.pid)],
        ["ptrace", str(sleeper.pid)],
        ["ns"],
        ["exe"],
        ["mknod"],
        ["root"],
        ["cgroup"],
        ["secrets", token[::-1]],
        ["rlimit"],
        ["x32", str(escapes.X32_UNSHARE)],
    ]
    try:
        outs: list[str] = []
        for args in attempts:
            r = subprocess.run(
                [sys.executable, "-m", "nscg", "run", "--", exe, *args],
                capture_output=True,
                close_fds=False,
                cwd=d,
                timeout=60,
                check=False,
            )
            outs += r.stdout.decode().splitlines()
            if r.returncode == 128 + 31:  # SIGSYS
                outs.append(f"blocked {args[0]}: killed by SIGSYS")
        assert sleeper.poll() is None, "the host process was killed"
    finally:
        sleeper.kill()
        sleeper.wait()
        os.close(fd)
        shutil.rmtree(d)
    escaped = [ln for ln in outs if ln.startswith("ESCAPED")]
    assert not escaped, escaped
    assert sum(ln.startswith("blocked") for ln in outs) > len(attempts), outs


def test_init_binary_is_not_a_host_file() -> None:
    """Even a payload with every capability in its namespace cannot reach nscg-init's file.

    pid 1 was exec'd from the installed nscg-init: /proc/1/exe was that host
    file, owned by the payload's uid, on a writable mount; with
    CAP_SYS_PTRACE in the sandbox the payload chmod'ed it (CVE-2019-5736).
    Now it is a sealed memfd copy.
    """
    from nscg._native import INIT_PATH

    before = os.stat(INIT_PATH)
    c = escapes.default().with_capabilities(Capabilities.all()).with_seccomp("unconfined")
    # the chmod only once pid 1 is nscg-init (exec is one-way): never the
    # host's interpreter, should the race below come back
    script = (
        "e=$(readlink /proc/1/exe); echo $e; case $e in /memfd:*) chmod 4777 /proc/1/exe; "
        "echo x >> /proc/1/exe 2>/dev/null && echo WROTE;; esac; true"
    )
    r = c.run(["sh", "-c", script], capture_output=True)
    out = (r.stdout or b"").decode()
    assert out.startswith("/memfd:nscg-init"), out
    assert "WROTE" not in out
    after = os.stat(INIT_PATH)
    assert (after.st_mode, after.st_size, after.st_mtime_ns) == (
        before.st_mode,
        before.st_size,
        before.st_mtime_ns,
    )


def test_payload_never_sees_pid1_on_the_callers_memory() -> None:
    """pid 1 has exec'd nscg-init before the payload's first instruction.

    pid 1 starts on the caller's memory; it started the payload and exec'd
    nscg-init only once the payload had exec'd. In between, a payload holding
    pid 1's capabilities (``Capabilities.all()``) reached /proc/1/exe, the
    caller's interpreter on the host (a test chmod'ed the host's python to
    4777 that way) and /proc/1/mem, the caller's memory: about one spawn in
    two here. Now the payload waits for pid 1's exec.
    """
    c = escapes.default().with_capabilities(Capabilities.all()).with_seccomp("unconfined")
    seen = set()
    for _ in range(200):
        r = c.run(["readlink", "/proc/1/exe"], capture_output=True, check=True)
        seen.add((r.stdout or b"").strip())
    assert all(s.startswith(b"/memfd:nscg-init") for s in seen), seen

"""The default filter against the real kernel: what Docker allows works as unfiltered.

Every syscall of the running architecture that Docker's profile allows (for the arguments
the probe passes) is made once in a default sandbox and once in the same sandbox with
seccomp unconfined; each must end the same way (success, the same errno, or the same
signal). Calls get invalid arguments (zeros, with a few explicit exceptions below) so that
they fail or do nothing; each runs in a forked child of the probe
(tests/integration/probes/syscall_sweep.c). Also: syscall numbers above the filter's table
answer ENOSYS, x32 numbers are still killed. As root and as uid 65534.
"""

from __future__ import annotations

import errno
import os
import platform
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

import nscg
from nscg import Container
from nscg.seccomp import Action, Arch, Seccomp, max_syscall_number, syscall_name, syscall_names
from tests.conftest import run_as_nobody

pytestmark = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "aarch64"), reason="nscg has no table for this arch"
)

#: Calls that are not made, with the reason (names of any supported architecture).
SKIPPED: dict[str, str] = {
    "fork": "duplicates the probe (two writers of one result); the result is a pid anyway",
    "vfork": "the child would run on the probe's stack; the result is a pid anyway",
    "pause": "blocks until a signal whatever the arguments",
    "sync": "flushes every host filesystem (slow under load); no argument makes it fail",
}
#: Calls Docker allows that nscg's default filter refuses on purpose (see nscg/seccomp/_policy.py).
NSCG_DENIES: dict[str, str] = {
    "ptrace": "nscg's default refuses ptrace (CVE-2019-13272 and older bypasses)",
}
_ZERO = ["0"] * 6


def _args(name: str) -> list[str]:
    """The six arguments for one call: zeros, or an exception that keeps it harmless."""
    special = {
        # flags = CLONE_THREAD without CLONE_SIGHAND: EINVAL, no child
        "clone": ["0x10000", "0", "0", "0", "0", "0"],
        # SECCOMP_GET_ACTION_AVAIL with a NULL action: EFAULT (zeros would ask for strict
        # mode, which the kernel refuses once a filter is loaded: not the filter's doing)
        "seccomp": ["2", "0", "0", "0", "0", "0"],
        # a zero timeout instead of none: these would block forever
        "select": ["0", "0", "0", "0", "Z", "0"],
        "_newselect": ["0", "0", "0", "0", "Z", "0"],
        "pselect6": ["0", "0", "0", "0", "Z", "0"],
        "ppoll": ["0", "0", "Z", "0", "8", "0"],
        # IPC_NOWAIT: msgget may have made queue 0 in the sandbox's IPC namespace
        "msgrcv": ["0", "0", "0", "0", "0x800", "0"],
    }
    return special.get(name, _ZERO)


def _plan(arch: Arch) -> tuple[list[tuple[str, int, list[str]]], dict[str, str]]:
    """(name, nr, args) of every call to make, and the allowed names not made (why)."""
    docker = Seccomp.docker_default(arch=arch)
    calls: list[tuple[str, int, list[str]]] = []
    left_out: dict[str, str] = {}
    for name in sorted(syscall_names(arch)):
        nr = nscg.seccomp.syscall_number(name, arch)
        allowed_somehow = any(r.syscall == name and r.action == Action.ALLOW for r in docker.rules)
        if not allowed_somehow:
            continue
        if name in SKIPPED:
            left_out[name] = SKIPPED[name]
            continue
        if name in NSCG_DENIES:
            left_out[name] = NSCG_DENIES[name]
            continue
        args = _args(name)
        numeric = [0 if a == "Z" else int(a, 0) for a in args]
        if docker.evaluate(nr, numeric, arch) != Action.ALLOW:
            left_out[name] = "Docker allows it only for other arguments"
            continue
        calls.append((name, nr, args))
    return calls, left_out


@pytest.fixture(scope="module")
def sweep() -> Iterator[tuple[str, str, dict[int, str]]]:
    """The probe and its plan, in a directory uid 65534 can read; and nr -> name."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    # under /var/tmp (the default root has a private /tmp), and bound into each sandbox
    d = tempfile.mkdtemp(prefix="nscg-sweep-", dir="/var/tmp")
    os.chmod(d, 0o755)
    exe = os.path.join(d, "syscall_sweep")
    src = Path(__file__).with_name("probes") / "syscall_sweep.c"
    subprocess.run([cc, "-O1", "-o", exe, str(src)], check=True)
    calls, _ = _plan(Arch.native())
    plan = os.path.join(d, "plan")
    with open(plan, "w") as f:
        for _, nr, args in calls:
            f.write(f"{nr} {' '.join(args)}\n")
    os.chmod(plan, 0o644)
    try:
        yield exe, plan, {nr: name for name, nr, _ in calls}
    finally:
        shutil.rmtree(d)


def _box(d: str, seccomp: Seccomp | Literal["default", "unconfined"] = "default") -> Container:
    """A default sandbox (or one with another seccomp) that sees the probe's directory."""
    return Container().with_rootfs(nscg.RootFS.host().ro_bind(d)).with_seccomp(seccomp)


def _parse(text: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for line in text.splitlines():
        nr, _, outcome = line.partition(" ")
        out[int(nr)] = outcome
    return out


def _differences(
    filtered: dict[int, str], plain: dict[int, str], names: dict[int, str]
) -> dict[str, tuple[str | None, str | None]]:
    return {
        names[nr]: (filtered.get(nr), plain.get(nr))
        for nr in names
        if filtered.get(nr) != plain.get(nr) or nr not in plain
    }


def test_plan_covers_every_allowed_syscall() -> None:
    """Docker's allowed names are all made, or listed with a reason; new calls are in."""
    arch = Arch.native()
    calls, left_out = _plan(arch)
    made = {name for name, _, _ in calls}
    for name in (
        "fchmodat2",
        "cachestat",
        "futex_wake",
        "futex_wait",
        "futex_requeue",
        "mseal",
        "listmount",
        "statmount",
        "map_shadow_stack",
        "read",
        "openat",
    ):
        assert name in made, name
    assert set(left_out) <= set(SKIPPED) | set(NSCG_DENIES) | {
        n for n, why in left_out.items() if why.startswith("Docker allows it only")
    }
    assert len(made) > 250


def test_docker_allowed_syscalls_behave_as_unfiltered(
    sweep: tuple[str, str, dict[int, str]],
) -> None:
    """Default sandbox vs seccomp unconfined: every allowed call ends the same way."""
    exe, plan, names = sweep
    d = os.path.dirname(exe)
    r1 = _box(d).run([exe, plan], capture_output=True, timeout=300)
    r2 = _box(d, "unconfined").run([exe, plan], capture_output=True, timeout=300)
    assert r1.returncode == 0 and r2.returncode == 0, (r1, r2)
    filtered = _parse((r1.stdout or b"").decode())
    plain = _parse((r2.stdout or b"").decode())
    assert set(filtered) == set(plain) == set(names)
    assert _differences(filtered, plain, names) == {}
    # the sweep really reached the kernel: the new calls answer as the kernel does, not EPERM
    by_name = {names[nr]: outcome for nr, outcome in filtered.items()}
    assert by_name["fchmodat2"] == f"errno {errno.EFAULT}"  # NULL path
    assert by_name["mseal"] in ("ok", f"errno {errno.EINVAL}")
    assert by_name["exit_group"] == "exit 0"


def test_docker_allowed_syscalls_behave_as_unfiltered_rootless(
    sweep: tuple[str, str, dict[int, str]],
) -> None:
    """The same comparison from a uid-65534 caller (user namespace, no host privilege)."""
    exe, plan, names = sweep
    res = run_as_nobody(
        f"""
        import json, nscg
        def box(seccomp="default"):
            root = nscg.RootFS.host().ro_bind({os.path.dirname(exe)!r})
            return nscg.Container().with_rootfs(root).with_seccomp(seccomp)
        r1 = box().run([{exe!r}, {plan!r}], capture_output=True, timeout=300)
        r2 = box("unconfined").run([{exe!r}, {plan!r}], capture_output=True, timeout=300)
        print(json.dumps([r1.returncode, r1.stdout.decode(), r2.returncode, r2.stdout.decode()]))
        """,
        timeout=400,
    )
    rc1, out1, rc2, out2 = res
    assert rc1 == 0 and rc2 == 0, res
    filtered, plain = _parse(out1), _parse(out2)
    assert set(filtered) == set(plain) == set(names)
    assert _differences(filtered, plain, names) == {}


def _unknown_plan(d: str) -> tuple[str, list[int]]:
    arch = Arch.native()
    top = max_syscall_number(arch)
    numbers = [top + 1, top + 50, 1000, 4095, 0x3FFFFFFF]
    assert all(syscall_name(n, arch) is None for n in numbers)
    plan = os.path.join(d, "unknown")
    with open(plan, "w") as f:
        for nr in numbers:
            f.write(f"{nr}\n")
    os.chmod(plan, 0o644)
    return plan, numbers


def test_unknown_numbers_answer_enosys(sweep: tuple[str, str, dict[int, str]]) -> None:
    """Above the table: ENOSYS in the default sandbox, as unfiltered (not EPERM)."""
    exe, plan, _ = sweep
    d = os.path.dirname(plan)
    unknown, numbers = _unknown_plan(d)
    for c in (_box(d), _box(d, "unconfined")):
        r = c.run([exe, unknown], capture_output=True, timeout=60)
        got = _parse((r.stdout or b"").decode())
        assert got == dict.fromkeys(numbers, f"errno {errno.ENOSYS}"), got
    # a deny-by-default filter of the user's own gets the same stub; switched off: EPERM
    spec = Seccomp.deny_all().allow(
        "read",
        "write",
        "exit_group",
        "exit",
        "brk",
        "mmap",
        "munmap",
        "mprotect",
        "close",
        "fstat",
        "newfstatat",
        "openat",
        "pread64",
        "arch_prctl",
        "set_tid_address",
        "set_robust_list",
        "rseq",
        "prlimit64",
        "getrandom",
        "clone",
        "clone3",
        "wait4",
        "pipe",
        "pipe2",
        "dup2",
        "dup3",
        "alarm",
        "poll",
        "kill",
        "rt_sigaction",
        "rt_sigprocmask",
        "execve",
        "access",
        "faccessat2",
        "readlink",
        "uname",
        "lseek",
        "fcntl",
        "futex",
        "getpid",
        "gettid",
        "tgkill",
        optional=True,
    )
    r = _box(d, spec).run([exe, unknown], capture_output=True, timeout=60)
    assert _parse((r.stdout or b"").decode()) == dict.fromkeys(numbers, f"errno {errno.ENOSYS}")
    r = _box(d, spec.with_unknown_action(None)).run([exe, unknown], capture_output=True, timeout=60)
    assert _parse((r.stdout or b"").decode()) == dict.fromkeys(numbers, f"errno {errno.EPERM}")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x32 exists on x86_64 only")
def test_unknown_x32_numbers_are_still_killed(sweep: tuple[str, str, dict[int, str]]) -> None:
    """x32 calls, known or not, kill the caller (fail closed), as root and rootless."""
    exe, plan, _ = sweep
    d = os.path.dirname(plan)
    x32 = os.path.join(d, "x32")
    numbers = [0x40000000 | 39, 0x40000000 | 1000, 0x7FFFFFFF]
    with open(x32, "w") as f:
        f.write("".join(f"{nr}\n" for nr in numbers))
    os.chmod(x32, 0o644)
    unknown, _ = _unknown_plan(d)
    r = _box(d).run([exe, x32], capture_output=True, timeout=60)
    assert _parse((r.stdout or b"").decode()) == dict.fromkeys(
        numbers, f"signal {int(signal.SIGSYS)}"
    )
    res = run_as_nobody(
        f"""
        import json, nscg
        box = nscg.Container().with_rootfs(nscg.RootFS.host().ro_bind({d!r}))
        r = box.run([{exe!r}, {x32!r}], capture_output=True, timeout=60)
        r2 = box.run([{exe!r}, {unknown!r}], capture_output=True, timeout=60)
        print(json.dumps([r.stdout.decode(), r2.stdout.decode()]))
        """
    )
    assert _parse(res[0]) == dict.fromkeys(numbers, f"signal {int(signal.SIGSYS)}")
    assert set(_parse(res[1]).values()) == {f"errno {errno.ENOSYS}"}

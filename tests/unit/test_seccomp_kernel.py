"""Integration check: the kernel accepts nscg's programs and enforces them as evaluated.

Each case forks a child that sets no_new_privs, loads the filter with seccomp(2) via ctypes
and makes raw syscalls; no privileges are needed. Real kernel, so it is skipped where the
kernel lacks seccomp filters.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct

import pytest

from nscg.seccomp import (
    Arch,
    Arg,
    Seccomp,
    max_syscall_number,
    seccomp_supported,
    syscall_number,
)

PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _in_filtered_child(
    program: bytes, calls: list[tuple[str | int, list[int]]]
) -> tuple[list[int], int]:
    """Load ``program`` in a child, make ``calls``; return their errnos (0 = ok) and status."""
    if not seccomp_supported():
        pytest.skip("kernel without seccomp filter support")
    arch = Arch.native()
    numbers = [
        (name if isinstance(name, int) else syscall_number(name, arch), args)
        for name, args in calls
    ]
    rfd, wfd = os.pipe()
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    seccomp_nr = syscall_number("seccomp", arch)
    pid = os.fork()
    if pid == 0:  # child: only ctypes calls and os._exit
        try:
            os.close(rfd)
            if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                os._exit(120)
            if (
                libc.syscall(
                    ctypes.c_long(seccomp_nr), SECCOMP_SET_MODE_FILTER, 0, ctypes.byref(prog)
                )
                != 0
            ):
                os._exit(121)
            out = []
            for nr, args in numbers:
                cargs = [ctypes.c_ulong(a) for a in args]
                ctypes.set_errno(0)
                rc = libc.syscall(ctypes.c_long(nr), *cargs)
                out.append(ctypes.get_errno() if rc == -1 else 0)
                os.write(wfd, struct.pack("<i", out[-1]))
            os._exit(0)
        finally:
            os._exit(122)
    os.close(wfd)
    data = b""
    while chunk := os.read(rfd, 4096):
        data += chunk
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    return [v for (v,) in struct.iter_unpack("<i", data)], status


def test_errno_rules_and_arguments() -> None:
    """getppid gets the errno configured, and argument checks see real registers."""
    spec = (
        Seccomp.allow_all()
        .deny("getppid", errno=errno.EACCES, when=Arg(0).eq(7))
        .deny("getppid", errno=errno.ENOTTY, when=Arg(0).eq((1 << 32) | 7))
        .deny("getpgid", errno=errno.EDOM, when=Arg(1).gt(1 << 40))
    )
    results, status = _in_filtered_child(
        spec.compile(),
        [
            ("getppid", [0]),
            ("getppid", [7]),
            ("getppid", [(1 << 32) | 7]),
            ("getpgid", [0, 5]),
            ("getpgid", [0, (1 << 40) + 1]),
        ],
    )
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert results == [0, errno.EACCES, errno.ENOTTY, 0, errno.EDOM]


def test_kill_process_action() -> None:
    """KILL_PROCESS ends the child with SIGSYS."""
    spec = Seccomp.allow_all().kill("getppid")
    results, status = _in_filtered_child(spec.compile(), [("getpid", []), ("getppid", [])])
    assert results == [0]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_docker_default_loads_and_denies() -> None:
    """The Docker profile loads; kexec_load fails with EPERM, getpid works."""
    spec = Seccomp.docker_default()
    results, status = _in_filtered_child(spec.compile(), [("getpid", []), ("kexec_load", [])])
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert results == [0, errno.EPERM]


def test_unknown_numbers_get_enosys_from_the_kernel() -> None:
    """Above the table: ENOSYS (not EPERM); a numeric rule moves the bound; off: EPERM."""
    top = max_syscall_number()
    calls: list[tuple[str | int, list[int]]] = [
        ("getpid", []),
        ("kexec_load", []),
        (top + 1, []),
        (1000, []),
        (1001, []),
    ]
    spec = Seccomp.docker_default()
    results, status = _in_filtered_child(spec.compile(), calls)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert results == [0, errno.EPERM, errno.ENOSYS, errno.ENOSYS, errno.ENOSYS]
    numeric = spec.deny(1000, errno=errno.EXDEV)
    results, _ = _in_filtered_child(numeric.compile(), calls)
    assert results == [0, errno.EPERM, errno.EPERM, errno.EXDEV, errno.ENOSYS]
    results, _ = _in_filtered_child(spec.with_unknown_action(None).compile(), calls)
    assert results == [0, errno.EPERM, errno.EPERM, errno.EPERM, errno.EPERM]

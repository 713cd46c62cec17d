"""What this host is: the one place nscg asks (issue 15 item 11).

The running kernel's version, this process's ``/proc/self/status`` fields,
whether ``clone3`` exists, and the parent's plain system calls (``setns``,
``unshare``, ``prctl``, ``seccomp``, ``inotify``) through the cffi extension:
no ``ctypes`` next to it. Nothing here runs in a child.

Two programs nscg starts keep their own ctypes: the rootless network helper
(``network._hosts._FACTORY``, run by ``python -I``, which may not import nscg) and
``nscg check``'s uid-65534 probe; each is a separate process's source text.
"""

from __future__ import annotations

import functools
import os
import re

from nscg._native import ffi, lib


def _parse_release(release: str) -> tuple[int, ...]:
    """The leading numbers of a release string: ``"6.18.44-fc"`` -> ``(6, 18, 44)``."""
    parts: list[int] = []
    for piece in release.split("-", 1)[0].split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
        if m.end() != len(piece):
            break
    return tuple(parts)


def parse_release(release: str) -> tuple[int, ...]:
    """The numbers a kernel release string starts with (``"5.15.0-91-generic"`` -> 5, 15, 0)."""
    return _parse_release(release)


@functools.cache
def kernel_release() -> str:
    """``uname -r`` of the running kernel."""
    return os.uname().release


@functools.cache
def kernel_version() -> tuple[int, int]:
    """(major, minor) of the running kernel; (0, 0) when the release string has no numbers."""
    v = _parse_release(kernel_release())
    return (v[0], v[1]) if len(v) >= 2 else (v[0], 0) if v else (0, 0)


def status_field(name: str) -> str | None:
    """The value of one field of ``/proc/self/status`` (``"Seccomp"``), or None if absent."""
    try:
        with open("/proc/self/status", "rb") as f:
            data = f.read()
    except OSError:
        return None
    key = b"\n" + name.encode() + b":"
    i = data.find(key)
    if i < 0:
        if not data.startswith(key[1:]):
            return None
        i, start = 0, len(key) - 1
    else:
        start = i + len(key)
    end = data.find(b"\n", start)
    return data[start : end if end >= 0 else None].strip().decode()


def has_clone3() -> bool:
    """Whether ``clone3(2)`` exists (Linux >= 5.3); probed once by the extension."""
    return bool(lib.nscg_clone_features() & lib.NSCG_HAS_CLONE3)


def has_clone_into_cgroup() -> bool:
    """Whether ``clone3`` can place the child in a cgroup (``CLONE_INTO_CGROUP``, 5.7)."""
    return has_clone3() and kernel_version() >= (5, 7)


def _check(result: int, call: str, what: str = "") -> int:
    if result < 0:
        from nscg.errors import SyscallError

        raise SyscallError(-result, call, what)
    return result


def setns(fd: int, nstype: int = 0, what: str = "") -> None:
    """``setns(2)`` for this thread (``os.setns`` needs Python 3.12).

    Raises:
        SyscallError: the kernel refused.
    """
    _check(lib.nscg_sys_setns(fd, nstype), "setns", what)


def unshare(flags: int, what: str = "") -> None:
    """``unshare(2)`` for this thread.

    Raises:
        SyscallError: the kernel refused.
    """
    _check(lib.nscg_sys_unshare(flags), "unshare", what)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """``prctl(2)``: its result, or ``-errno`` (the caller decides what an error means)."""
    return int(lib.nscg_sys_prctl(option, arg2, arg3, arg4, arg5))


_SECCOMP_GET_ACTION_AVAIL = 2


def seccomp_action_available(action: int) -> bool:
    """``seccomp(SECCOMP_GET_ACTION_AVAIL)`` for one ``SECCOMP_RET_*`` action word."""
    value = ffi.new("uint32_t *", action)
    return int(lib.nscg_sys_seccomp(_SECCOMP_GET_ACTION_AVAIL, 0, value)) == 0


def inotify_init1(flags: int) -> int:
    """A new inotify fd.

    Raises:
        SyscallError: the kernel refused.
    """
    return _check(lib.nscg_sys_inotify_init1(flags), "inotify_init1")


def inotify_add_watch(fd: int, path: str | bytes, mask: int) -> int:
    """Watch ``path`` on inotify ``fd``; the watch descriptor.

    Raises:
        SyscallError: the kernel refused.
    """
    p = os.fsencode(path)
    return _check(lib.nscg_sys_inotify_add_watch(fd, p, mask), "inotify_add_watch", os.fsdecode(p))

"""What the caller has that a spawn uses: capabilities, its own pidfd, init's sealed copy,
and PATH lookup.
"""

from __future__ import annotations

import errno
import functools
import os
import threading
from typing import Any

from nscg import _host
from nscg._native import ffi, lib
from nscg.capabilities import Capabilities, last_cap
from nscg.container import (
    DEFAULT_PATH,
)

_self_pidfd: tuple[int, int] = (-1, -1)  # (pid, fd): our own pidfd, for the pdeathsig race
_self_pidfd_lock = threading.Lock()
_init_fd_cache: tuple[int, int] = (-1, -1)


def which(name: str, path: str | None = None) -> str | None:
    """Like shutil.which (without importing shutil): the first executable ``name`` on PATH."""
    for d in (path if path is not None else os.environ.get("PATH", DEFAULT_PATH)).split(":"):
        cand = os.path.join(d or ".", name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def _above_stdio(fd: int) -> int:
    """``fd`` moved above 0-2 if it landed there (the caller had closed its stdio).

    An fd nscg keeps (a pidfd, the init's memfd) must not take the number of
    a closed standard stream: a later spawn inheriting "stdin" would pass it
    into the sandbox.
    """
    if not 0 <= fd < 3:
        return fd
    import fcntl

    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def _init_fd() -> int:
    """An fd of nscg-init, made once per process, exec'd by fd as the sandbox's pid 1.

    A sealed memfd copy, as runc does with its own binary (CVE-2019-5736):
    exec'd from the installed file, /proc/1/exe would hand a payload that may
    look at pid 1 (one given CAP_SYS_PTRACE) the host file, owned by the uid
    the payload runs as, on a writable mount: chmod was enough to tamper with
    every later sandbox's init. The copy cannot be written, grown or shrunk.
    Where memfds may not be executed (``vm.memfd_noexec=2``), the file itself.
    """
    global _init_fd_cache
    pid = os.getpid()
    with _self_pidfd_lock:
        if _init_fd_cache[0] != pid:
            from nscg._native import INIT_PATH

            _init_fd_cache = (pid, _above_stdio(_sealed_copy(INIT_PATH)))
        return _init_fd_cache[1]


_MFD_EXEC = 0x0010  # Linux 6.3: executable memfd, asked for explicitly


def _sealed_copy(path: str) -> int:
    import fcntl

    with open(path, "rb") as f:
        data = f.read()
    fd = -1
    for extra in (_MFD_EXEC, 0):
        try:
            fd = os.memfd_create("nscg-init", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING | extra)
            break
        except OSError as e:
            if e.errno != errno.EINVAL:  # EACCES: vm.memfd_noexec forbids it
                return os.open(path, os.O_PATH | os.O_CLOEXEC)
    if fd < 0:
        return os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, 0o555)
        seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _own_pidfd() -> int:
    global _self_pidfd
    pid = os.getpid()
    if _self_pidfd[0] == pid:
        return _self_pidfd[1]
    with _self_pidfd_lock:
        if _self_pidfd[0] != pid:
            fd = _above_stdio(lib.nscg_pidfd_open(pid))
            _self_pidfd = (pid, fd if fd >= 0 else -1)
        return _self_pidfd[1]


# ------------------------------------------------------------------ privileges
def _cap_eff() -> int:
    """This thread's effective capabilities (capget; /proc/self/status if that fails)."""
    out = ffi.new("uint64_t *")
    if lib.nscg_cap_effective(out) == 0:
        return int(out[0])
    value = _host.status_field("CapEff")
    return int(value, 16) if value else 0


def _has_cap(bit: int) -> bool:
    return bool(_cap_eff() >> bit & 1)


_CAP_SETGID = 6
_CAP_SETUID = 7
_CAP_SETPCAP = 8


@functools.lru_cache(maxsize=64)
def _caps_masks(caps: Any) -> tuple[int, int, int, int, int, int]:
    """(bounding, permitted, effective, inheritable, ambient, last_cap) for the child."""
    spec = caps if caps is not None else Capabilities.none()
    spec.check_spawnable()
    m = spec.to_masks()
    return (m.bounding, m.permitted, m.effective, m.inheritable, m.ambient, last_cap())

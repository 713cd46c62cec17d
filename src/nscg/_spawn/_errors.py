"""Error reports: the child's failure record decoded into an exception that names the stage
and the object, and the diagnosis of a failed clone.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Any

from nscg._native import ffi, lib
from nscg._rootfs_run import failure_label
from nscg._spawn._caller import _has_cap
from nscg.container import (
    Container,
    rlimit_name,
)
from nscg.errors import (
    SpawnError,
    UnsupportedError,
)
from nscg.namespaces import Namespace
from nscg.process import Stage

#: the child's failure report, struct nscg_child_error (abi.h): read as bytes
#: from the error pipe, decoded with the cffi declaration (_decode_record)
_REC_SIZE: int = ffi.sizeof("struct nscg_child_error")


# ----------------------------------------------------------------- diagnosis
def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def userns_restriction() -> str | None:
    """Why this caller may not create user namespaces, or None if nothing says so."""
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0" and os.geteuid() != 0:
        return "unprivileged user namespaces are disabled by kernel.unprivileged_userns_clone=0"
    if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1" and os.geteuid() != 0:
        return (
            "unprivileged user namespaces are restricted by "
            "kernel.apparmor_restrict_unprivileged_userns=1 (needs an AppArmor profile "
            "with 'userns,' or the sysctl set to 0)"
        )
    if _read("/proc/sys/user/max_user_namespaces") == "0":
        return "user namespaces are disabled by user.max_user_namespaces=0"
    return None


def _clone_error(err: int, syscall: str, ns: Namespace) -> Exception:
    detail = ""
    if err in (errno.EPERM, errno.ENOSPC, errno.EACCES) and ns & Namespace.USER:
        why = userns_restriction()
        if why:
            return UnsupportedError(
                f"{syscall} failed: {os.strerror(err)} — {why}", feature="userns"
            )
    if err == errno.EPERM and ns and not ns & Namespace.USER and not _has_cap(21):
        detail = (
            "creating namespaces without a user namespace needs CAP_SYS_ADMIN; add Namespace.USER"
        )
    return SpawnError(err, syscall, Stage.CLONE, -1, detail=detail)


def _failure_object(
    stage: Stage, index: int, c: Container, path: str, joins: Sequence[Any]
) -> str | None:
    if stage == Stage.EXEC:
        return path
    if stage == Stage.CHDIR:
        return c.cwd
    if stage == Stage.HOSTNAME:
        return c.hostname or "nscg"
    if stage == Stage.DOMAINNAME:
        return c.domainname
    if stage == Stage.SETNS and 0 <= index < len(joins):
        if joins[index].kind == Namespace.NONE:
            return "root directory"
        return f"{joins[index].kind.proc_name} namespace"
    if stage == Stage.RLIMITS and 0 <= index < len(c.rlimits):
        return rlimit_name(c.rlimits[index].resource)
    if stage == Stage.TIMENS:
        return "/proc/self/timens_offsets"
    if stage in (Stage.MOUNTS, Stage.PIVOT_ROOT) and c.rootfs is not None:
        return failure_label(c, stage, index)[1]
    return None


def _decode_record(rec: Any) -> tuple[int, int, int, int, bytes]:
    """(abi, stage, errno, op index, syscall name) of a ``struct nscg_child_error``."""
    return int(rec.abi), int(rec.stage), int(rec.err), int(rec.index), ffi.string(rec.syscall)


def _record_of(out: Any) -> tuple[int, int, int, int, bytes] | None:
    """The child's record the C wait read (err_r), or None at EOF (it exec'd)."""
    if out.rec_len != _REC_SIZE:
        return None
    return _decode_record(out.child_err)


def _read_record(fd: int, buf: bytes = b"") -> tuple[int, int, int, int, bytes] | None:
    """Read one child record (after ``buf``, read already), or None at EOF (execve succeeded)."""
    while len(buf) < _REC_SIZE:
        try:
            chunk = os.read(fd, _REC_SIZE - len(buf))
        except InterruptedError:
            continue
        if not chunk:
            return None
        buf += chunk
    rec = ffi.new("struct nscg_child_error *")
    ffi.memmove(rec, buf, _REC_SIZE)
    return _decode_record(rec)


def _raise_child_error(
    rec: tuple[int, int, int, int, bytes] | None, c: Container, path: str, joins: Sequence[Any]
) -> None:
    if rec is None:
        raise SpawnError(errno.ECHILD, "clone", Stage.NONE, detail="the child exited during setup")
    abi, stage_no, err, index, sc = rec
    if abi != lib.NSCG_ABI_VERSION:
        # a record of another build (a stale nscg-init or extension): its fields
        # cannot be trusted to mean what this build's do
        raise SpawnError(
            errno.EPROTO,
            "read",
            Stage.NONE,
            detail=f"the child's error record has ABI {abi}, this build {lib.NSCG_ABI_VERSION}: "
            "nscg's C parts are from different builds; reinstall nscg",
        )
    try:
        stage = Stage(stage_no)
    except ValueError:
        stage = Stage.NONE
    syscall = sc.rstrip(b"\0").decode(errors="replace")
    obj = _failure_object(stage, index, c, path, joins)
    if stage == Stage.MOUNTS and c.rootfs is not None:
        index = failure_label(c, stage, index)[0]
    raise SpawnError(err, syscall, stage, index, obj, detail=_hint(stage, err))


def _hint(stage: Stage, err: int) -> str:
    if stage == Stage.SETNS and err == errno.EPERM:
        return (
            "joining a namespace needs CAP_SYS_ADMIN in its owner user namespace; "
            "join the user namespace too"
        )
    if stage == Stage.EXEC and err == errno.ENOENT:
        return "the program or its interpreter (#! line) or a shared library loader is missing"
    if stage == Stage.TIMENS and err == errno.EACCES:
        return "time namespace offsets must be written before any process enters it"
    if stage == Stage.PIVOT_ROOT and err == errno.EINVAL:
        return "the new root must be a mount point and its parent mount not shared"
    if stage == Stage.MOUNTS and err == errno.ENODEV:
        return "the kernel does not know this filesystem type (see /proc/filesystems)"
    if stage == Stage.MOUNTS and err == errno.EROFS:
        return (
            "the mount point is missing on a read-only mount: create it beforehand (below "
            "a read-only bind, RootFS.make_dests does unless turned off)"
        )
    if stage == Stage.MOUNTS and err == errno.ENOENT:
        return "the source or the mount point does not exist"
    return ""

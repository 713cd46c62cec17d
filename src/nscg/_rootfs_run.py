"""One spawn's share of a :class:`~nscg.rootfs.RootFS`: temp dirs, the C plan, the report.

Overlay upper/work directories are created here before the clone and removed
after the sandbox is reaped (``Process._cleanups``) or when the spawn fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from typing import TYPE_CHECKING, Any

import attrs

from nscg._native import ffi, lib
from nscg.errors import UnsupportedError
from nscg.namespaces import Namespace
from nscg.process import Stage
from nscg.rootfs import (
    _MOUNTS,
    Bind,
    Changes,
    Mkdir,
    Op,
    Overlay,
    Prim,
    RootFS,
    Symlink,
    Tmpfs,
    compute_changes,
    flatten,
)

if TYPE_CHECKING:
    from nscg.container import Container
    from nscg.process import Process

_KINDS = {
    "bind": lib.NSCG_MOUNT_BIND,
    "fs": lib.NSCG_MOUNT_FS,
    "mkdir": lib.NSCG_MOUNT_MKDIR,
    "symlink": lib.NSCG_MOUNT_SYMLINK,
    "file": lib.NSCG_MOUNT_FILE,
    "readonly": lib.NSCG_MOUNT_READONLY,
    "mask": lib.NSCG_MOUNT_MASK,
}
_FLAGS = {
    "rdonly": lib.NSCG_MNT_RDONLY,
    "nosuid": lib.NSCG_MNT_NOSUID,
    "nodev": lib.NSCG_MNT_NODEV,
    "noexec": lib.NSCG_MNT_NOEXEC,
    "recursive": lib.NSCG_MNT_RECURSIVE,
    "create_dir": lib.NSCG_MNT_CREATE_DIR,
    "create_file": lib.NSCG_MNT_CREATE_FILE,
    "optional": lib.NSCG_MNT_OPTIONAL,
}


def kernel_version() -> tuple[int, int]:
    """(major, minor) of the running kernel."""
    rel = os.uname().release.split("-")[0].split(".")
    try:
        return int(rel[0]), int(rel[1])
    except (IndexError, ValueError):
        return (0, 0)


def _rmtree(path: str) -> None:
    """Remove a tree the sandbox wrote to (it may have left unreadable directories)."""
    if not os.path.lexists(path):
        return
    # top-down: each directory is made traversable before os.walk enters it
    # (overlayfs leaves work/work as d---------; the payload may do the same)
    for dirpath, dirnames, _files in os.walk(path):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if not os.path.islink(full):
                with contextlib.suppress(OSError):
                    os.chmod(full, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _scratch_parent(lowers: tuple[str, ...]) -> str:
    """A directory for an ephemeral upper that does not overlap any lower layer.

    A tmpfs (/dev/shm) first: overlayfs refuses an upper inside a lower on
    the same filesystem, and the host's / is the usual lower.
    """
    cands = ["/dev/shm", tempfile.gettempdir(), "/var/tmp"]
    for cand in cands:
        try:
            st = os.stat(cand)
        except OSError:
            continue
        if not os.access(cand, os.W_OK | os.X_OK):
            continue
        bad = False
        for lo in lowers:
            lo_st = os.stat(lo)
            if (cand + "/").startswith(lo.rstrip("/") + "/") and lo_st.st_dev == st.st_dev:
                bad = True
        if not bad:
            return cand
    raise UnsupportedError(
        "no place for an ephemeral overlay upper directory outside the lower layers "
        "(tried /dev/shm, $TMPDIR, /var/tmp): pass upper=",
        feature="overlay",
    )


def _mount_points() -> list[str]:
    """Mount points in this process's mount namespace (from /proc/self/mountinfo)."""
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            mp = line.split()[4].decode(errors="surrogateescape")
            out.append(mp.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\"))
    return out


def _has_submounts(path: str, mounts: list[str]) -> bool:
    pre = path.rstrip("/") + "/"
    return any(m.startswith(pre) and m != pre.rstrip("/") for m in mounts)


class RootfsRun:
    """The temp dirs, the flattened plan and the cleanup of one spawn."""

    def __init__(self, c: Container) -> None:
        root = c.rootfs
        assert isinstance(root, RootFS)
        root = root.with_socket_masks()  # hide_sockets: the host's sockets as of now
        self.root = root
        self.userns = bool(c.namespaces & Namespace.USER)
        if kernel_version() < (5, 12):
            raise UnsupportedError(
                f"RootFS needs kernel >= 5.12 (new mount API and mount_setattr); "
                f"this is {os.uname().release}",
                feature="mount_setattr",
            )
        self.temps: list[str] = []
        #: (overlay as mounted, its upper): the change report reads these
        self.overlays: list[Overlay] = []
        ops: list[Op] = []
        origin: list[int] = []
        try:
            for i, op in enumerate(root.ops):
                later = {o.dest for o in root.ops[i + 1 :] if isinstance(o, _MOUNTS)}
                new = self._expand(op, later) if isinstance(op, Overlay) else [op]
                ops += new
                origin += [i] * len(new)
            eff = attrs.evolve(root, ops=ops)
            self.prims: list[Prim] = [
                pr._replace(op_index=origin[pr.op_index]) for pr in flatten(eff, self.userns)
            ]
        except BaseException:
            self.cleanup()
            raise
        _current.run = (c, self.prims)

    def _dirs(self, op: Overlay) -> tuple[str, str]:
        """(upper, work) for an overlay: the caller's upper or a fresh temp dir."""
        if op.upper is None:
            d = tempfile.mkdtemp(prefix="nscg-overlay-", dir=_scratch_parent(op.lowers))
            self.temps.append(d)
            upper, work = os.path.join(d, "upper"), os.path.join(d, "work")
            os.mkdir(upper, 0o755)
            os.mkdir(work, 0o700)
            return upper, work
        if op.work is not None:
            return op.upper, op.work
        work = tempfile.mkdtemp(prefix="nscg-work-", dir=os.path.dirname(op.upper.rstrip("/")))
        self.temps.append(work)
        return op.upper, work

    def _expand(self, op: Overlay, replaced: set[str]) -> list[Op]:
        """The ops that make this overlay; split per top-level entry when needed.

        Inside a user namespace every mount inherited from the host is locked
        to the mounts above it, and overlayfs refuses a lower directory with
        locked mounts below it (EINVAL, "failed to clone lowerpath"). The
        host's / always has some (/proc, /sys, /dev). Then the overlay root is
        a tmpfs holding one overlay per top-level directory of the lower (upper
        and work in per-entry subdirectories), a read-only recursive bind for
        directories that have mounts below them, and the top-level symlinks and
        files as they are. Writes to the top level itself are not reported.
        """
        if self.userns and kernel_version() < (5, 11):
            raise UnsupportedError(
                "an overlay inside a user namespace needs kernel >= 5.11 (userxattr)",
                feature="overlay.userxattr",
            )
        upper, work = self._dirs(op)
        mounts = _mount_points() if self.userns else []
        if not any(_has_submounts(lo, mounts) for lo in op.lowers):
            full = Overlay(op.lowers, upper, op.dest, work)
            self.overlays.append(full)
            return [full]
        if len(op.lowers) != 1:
            raise UnsupportedError(
                f"an overlay of several lowers {op.lowers} with mounts below them cannot be "
                "made inside a user namespace (the kernel refuses locked submounts)",
                feature="overlay.locked",
            )
        (lower,) = op.lowers
        base = op.dest.rstrip("/")
        out: list[Op] = [Tmpfs(op.dest, mode=0o755, nosuid=False, nodev=False)]
        for name in sorted(os.listdir(lower)):
            src = os.path.join(lower, name)
            dest = f"{base}/{name}"
            if dest in replaced:  # a later op mounts there (/proc, /dev)
                out.append(Mkdir(dest))
            elif os.path.islink(src):
                out.append(Symlink(os.readlink(src), dest))
            elif os.path.isdir(src) and not _has_submounts(src, mounts):
                u, w = os.path.join(upper, name), os.path.join(work, name)
                os.mkdir(u, 0o755)
                os.mkdir(w, 0o700)
                part = Overlay((src,), u, dest, w)
                self.overlays.append(part)
                out.append(part)
            else:
                out.append(Bind(src, dest, readonly=True, recursive=True))
        return out

    def fill(self, p: Any, plan: Any) -> None:
        """Write the mount plan into ``plan`` (buffers kept alive by ``p``)."""
        ops = p.array("struct nscg_mount_op[]", max(1, len(self.prims)))
        for i, pr in enumerate(self.prims):
            o = ops[i]
            o.kind = _KINDS[pr.kind]
            fl = 0
            for f in pr.flags:
                fl |= _FLAGS[f]
            o.flags = fl
            o.mode = pr.mode
            o.dest = p.cstr(pr.dest)
            if pr.kind == "file":
                assert pr.source is not None
                buf = ffi.new("char[]", pr.source + b"\0")
                p.keep.append(buf)
                o.source = buf
                o.size = len(pr.source)
            else:
                o.source = p.cstr(pr.source)
            o.fstype = p.cstr(pr.fstype)
            if pr.options:
                ptrs: list[Any] = []
                for k, v in pr.options:
                    ptrs += [p.cstr(k), p.cstr(v)]
                o.options = p.array("char *[]", [*ptrs, ffi.NULL])
        plan.mounts = ops
        plan.n_mounts = len(self.prims)
        flags = lib.NSCG_MOUNTS_ACTIVE
        if self.root.propagation == "slave":
            flags |= lib.NSCG_MOUNTS_SLAVE
        if self.root.readonly_root:
            flags |= lib.NSCG_MOUNTS_ROOT_RDONLY
        plan.mount_flags = flags

    def attach(self, proc: Process) -> None:
        """Compute the change report and remove the temp dirs once ``proc`` is reaped."""
        _current.run = None

        def report() -> None:
            added: set[str] = set()
            modified: set[str] = set()
            deleted: set[str] = set()
            for ov in self.overlays:
                assert ov.upper is not None
                ch = compute_changes(ov.upper, ov.lowers, ov.dest)
                added |= ch.added
                modified |= ch.modified
                deleted |= ch.deleted
            proc._changes = Changes(frozenset(added), frozenset(modified), frozenset(deleted))

        if self.overlays:
            proc._cleanups.append(report)
        if self.temps:
            proc._cleanups.append(self.cleanup)

    def cleanup(self) -> None:
        """Remove the temp dirs. Idempotent."""
        while self.temps:
            _rmtree(self.temps.pop())


_current = threading.local()


def failure_label(c: Container, stage: Stage, index: int) -> tuple[int, str]:
    """(RootFS op index, "type path") for a child's mount-stage failure at primitive ``index``."""
    root = c.rootfs
    assert isinstance(root, RootFS)
    if stage == Stage.PIVOT_ROOT:
        return -1, "pivot_root into the new root /"
    cur = getattr(_current, "run", None)
    if cur is not None and cur[0] is c:
        prims = cur[1]
    else:
        prims = flatten(root, bool(c.namespaces & Namespace.USER))
    if 0 <= index < len(prims):
        pr = prims[index]
        return pr.op_index, pr.label
    if index == len(prims):
        return len(root.ops), "readonly-root /"
    return -1, "new root (tmpfs stacked on /)"


__all__ = ["RootfsRun", "failure_label", "kernel_version"]

"""One spawn's share of a :class:`~nscg.rootfs.RootFS`: temp dirs, the C plan, the report.

Overlay upper/work directories are created here before the clone and removed
after the sandbox is reaped (``Process._cleanups``) or when the spawn fails.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import threading
import warnings
from typing import TYPE_CHECKING, Any

import attrs

from nscg import _tree
from nscg._native import ffi, lib
from nscg.errors import SpecError, SyscallError, UnsupportedError
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
    changes_of,
    flatten,
    visible_in,
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
    """Remove a tree the sandbox wrote to: iterative, fd-based (see ``_tree``).

    Overlayfs leaves work/work as d---------, the payload may leave unreadable
    directories, symlinks and chains deeper than any recursion limit.
    """
    try:
        _tree.rmtree(path)
    except OSError as e:
        warnings.warn(f"nscg: could not remove {path}: {e}", stacklevel=2)


def _host_call(syscall: str, what: str, fn: Any) -> Any:
    """Run a host-side step of a spawn; its OSError becomes a typed error naming ``what``.

    A full tmp area or /dev/shm (ENOSPC, EDQUOT) or memory (ENOMEM) says so.
    """
    try:
        return fn()
    except OSError as e:
        full = {errno.ENOSPC: "full", errno.EDQUOT: "over quota", errno.ENOMEM: "out of memory"}
        why = full.get(e.errno or 0)
        detail = f"{what} is {why}" if why else f"while making {what}"
        raise SyscallError(e.errno or 0, syscall, e.filename or what, detail=detail) from e


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
        #: split roots: (the root directory, the lower's top level, mount points, dest)
        self.tops: list[tuple[str, dict[str, str | None], frozenset[str], str]] = []
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
            d = _host_call(
                "mkdtemp",
                "the scratch area for an overlay upper",
                lambda: tempfile.mkdtemp(prefix="nscg-overlay-", dir=_scratch_parent(op.lowers)),
            )
            self.temps.append(d)
            upper, work = os.path.join(d, "upper"), os.path.join(d, "work")
            _host_call("mkdir", upper, lambda: os.mkdir(upper, 0o755))
            _host_call("mkdir", work, lambda: os.mkdir(work, 0o700))
            return upper, work
        # a missing persistent upper is made, as the CLI's --keep-upper does
        upper = op.upper
        _host_call("mkdir", upper, lambda: os.makedirs(upper, 0o755, exist_ok=True))
        if op.work is not None:
            work = op.work
            _host_call("mkdir", work, lambda: os.makedirs(work, 0o700, exist_ok=True))
            return upper, work
        work = _host_call(
            "mkdtemp",
            f"a work directory beside {upper}",
            lambda: tempfile.mkdtemp(prefix="nscg-work-", dir=os.path.dirname(upper.rstrip("/"))),
        )
        self.temps.append(work)
        return upper, work

    def _expand(self, op: Overlay, replaced: set[str]) -> list[Op]:
        """The ops that make this overlay; split per top-level entry when needed.

        Inside a user namespace every mount inherited from the host is locked
        to the mounts above it, and overlayfs refuses a lower directory with
        locked mounts below it (EINVAL, "failed to clone lowerpath"). The
        host's / always has some (/proc, /sys, /dev). Then the overlay root is
        a directory of nscg's scratch area (bound read-write) holding one
        overlay per top-level directory of the lower (upper and work in
        per-entry subdirectories), a read-only recursive bind for directories
        that have mounts below them, and the top-level symlinks and files as
        they are. What the payload writes at the top level itself lands in
        that directory: the change report compares it with the lower's top
        level as it was when the plan was made.
        """
        if self.userns and kernel_version() < (5, 11):
            raise UnsupportedError(
                "an overlay inside a user namespace needs kernel >= 5.11 (userxattr)",
                feature="overlay.userxattr",
            )
        mounts = _mount_points() if self.userns else []
        split = any(_has_submounts(lo, mounts) for lo in op.lowers)
        if split and len(op.lowers) != 1:
            raise UnsupportedError(
                f"an overlay of several lowers {op.lowers} with mounts below them cannot be "
                "made inside a user namespace (the kernel refuses locked submounts)",
                feature="overlay.locked",
            )
        if split:
            (lower,) = op.lowers
            names = _host_call("listdir", lower, lambda: sorted(os.listdir(lower)))
            parts = {
                n
                for n in names
                if os.path.isdir(os.path.join(lower, n))
                and not os.path.islink(os.path.join(lower, n))
            }
            for d in (op.upper, op.work):
                for n in parts:
                    if d is not None and visible_in(d, os.path.join(lower, n)):
                        raise SpecError(
                            f"overlay upper/work directory {d!r} is inside the lower layer "
                            f"{os.path.join(lower, n)!r} (one overlay per top-level entry "
                            "inside a user namespace): put it on another filesystem"
                        )
        upper, work = self._dirs(op)
        if not split:
            full = Overlay(op.lowers, upper, op.dest, work)
            self.overlays.append(full)
            return [full]
        base = op.dest.rstrip("/")
        top = os.path.join(work, "root")
        _host_call("mkdir", top, lambda: os.mkdir(top, 0o755))
        out: list[Op] = [Bind(top, op.dest, readonly=False, recursive=False)]
        before: dict[str, str | None] = {}
        mounted: set[str] = set()
        for k, name in enumerate(names):
            src = os.path.join(lower, name)
            dest = f"{base}/{name}"
            link = os.path.islink(src)
            before[name] = os.readlink(src) if link else None
            if dest in replaced:  # a later op mounts there (/proc, /dev)
                out.append(Mkdir(dest))
                mounted.add(name)
            elif link:
                out.append(Symlink(before[name] or "", dest))
            elif name in parts and not _has_submounts(src, mounts):
                u, w = os.path.join(upper, name), os.path.join(work, f"w{k}")
                if not os.path.isdir(u):
                    # the overlay's root shows the upper root's mode: the lower's (/tmp: 1777)
                    mode = stat.S_IMODE(os.stat(src).st_mode)
                    _host_call("mkdir", u, lambda u=u: os.mkdir(u, 0o700))
                    _host_call("chmod", u, lambda u=u, m=mode: os.chmod(u, m))
                _host_call("mkdir", w, lambda w=w: os.mkdir(w, 0o700))
                part = Overlay((src,), u, dest, w)
                self.overlays.append(part)
                out.append(part)
                mounted.add(name)
            else:
                out.append(Bind(src, dest, readonly=True, recursive=True))
                mounted.add(name)
        self.tops.append((top, before, frozenset(mounted), base))
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
            proc._changes = self.report()

        if self.overlays:
            proc._cleanups.append(report)
        if self.temps:
            proc._cleanups.append(self.cleanup)

    def report(self) -> Changes:
        """The change report of every overlay of the plan (read once the sandbox is gone)."""
        rep = _tree.Report()
        opaque = (_tree.OPAQUE_USER,) if self.userns else (_tree.OPAQUE_TRUSTED,)
        for top, before, mounted, base in self.tops:
            fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                _tree.top_changes(fd, before, mounted, base, rep, fix_perms=True)
            finally:
                os.close(fd)
        for ov in self.overlays:
            assert ov.upper is not None
            fds: list[int | None] = []
            try:
                fds.append(os.open(ov.upper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
                for lo in ov.lowers:
                    try:
                        fds.append(os.open(lo, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
                    except OSError:
                        fds.append(None)
                ufd = fds[0]
                assert ufd is not None
                _tree.walk_changes(
                    ufd,
                    fds[1:],
                    ov.dest.rstrip("/"),
                    rep,
                    opaque=opaque,
                    fix_perms=bool(self.temps) and ov.upper.startswith(tuple(self.temps)),
                )
            finally:
                for lfd in fds:
                    if lfd is not None:
                        os.close(lfd)
            if rep.truncated:
                break
        return changes_of(rep)

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

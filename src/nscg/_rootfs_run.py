"""One spawn's share of a :class:`~nscg.rootfs.RootFS`: temp dirs, the C plan, the report.

Overlay upper/work directories are created here before the clone and removed
after the sandbox is reaped (``Process._add_cleanup``) or when the spawn fails.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import tempfile
import threading
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from nscg import _host, _tree
from nscg._idmap import chown_tree, root_owner, userns_fd
from nscg._native import ffi, lib
from nscg.errors import SpecError, SyscallError, UnsupportedError
from nscg.namespaces import IdMap, Namespace
from nscg.process import Stage
from nscg.rootfs import (
    _DEV_SIZE,
    _MOUNTS,
    DEFAULT_UPPER_SIZE,
    FSCONFIG_MAX_STRING,
    Bind,
    Changes,
    Data,
    Dev,
    Mkdir,
    Op,
    Overlay,
    Prim,
    RootFS,
    Symlink,
    Tmpfs,
    _flags,
    changes_of,
    describe,
    expand_dests,
    flatten,
    inodes_for,
    lowerdir_options,
    visible_in,
)

if TYPE_CHECKING:
    from nscg.container import Container
    from nscg.process import Process

_KINDS = {
    "scratch": lib.NSCG_MOUNT_SCRATCH,
    "sdir": lib.NSCG_MOUNT_SDIR,
    "sfile": lib.NSCG_MOUNT_SFILE,
    "sfs": lib.NSCG_MOUNT_SFS,
    "sbind": lib.NSCG_MOUNT_SBIND,
    "sdone": lib.NSCG_MOUNT_SDONE,
    "slot": lib.NSCG_MOUNT_SLOT,
    "bind": lib.NSCG_MOUNT_BIND,
    "fs": lib.NSCG_MOUNT_FS,
    "mkdir": lib.NSCG_MOUNT_MKDIR,
    "symlink": lib.NSCG_MOUNT_SYMLINK,
    "file": lib.NSCG_MOUNT_FILE,
    "readonly": lib.NSCG_MOUNT_READONLY,
    "mask": lib.NSCG_MOUNT_MASK,
    "chmod": lib.NSCG_MOUNT_CHMOD,
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
    "from_fd": lib.NSCG_MNT_FROM_FD,
    "from_slot": lib.NSCG_MNT_FROM_SLOT,
}
_ATTR_RDONLY = 0x1  # MOUNT_ATTR_RDONLY


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


class _Part(NamedTuple):
    """One overlay the change report walks."""

    upper: str  # a host path, or a name in the scratch tmpfs
    in_scratch: bool
    lowers: tuple[str, ...]
    dest: str
    mapped: bool = False  # the lowers are idmapped (copy-ups shift their owners)


class _Top(NamedTuple):
    """A split root's top level: its directory in the scratch and what it was made from."""

    name: str
    before: dict[str, str | None]
    mounted: frozenset[str]
    dest: str


def _unseen_after(ops: Sequence[Op], where: str) -> bool:
    """Whether none of ``ops`` reads the host directory ``where`` or below it, or
    copies it with a recursive bind (the scratch tmpfs may then be attached there).
    """

    def near(src: str, recursive: bool) -> bool:
        s = src.rstrip("/") or "/"
        return (
            where in (s, "/")
            or s.startswith(where + "/")
            or (recursive and (s == "/" or where.startswith(s + "/")))
        )

    if where == "/dev" or where.startswith("/dev/"):
        return False  # (/dev's nodes and the masks bind /dev/null)
    for op in ops:
        if isinstance(op, Bind) and near(op.source, op.recursive):
            return False
        if isinstance(op, Overlay) and any(near(lo, True) for lo in op.lowers):
            return False
        if isinstance(op, Overlay) and op.upper and near(op.upper, True):
            return False
    return True


class RootfsRun:
    """The scratch memory, the flattened plan, the report and the cleanup of one spawn.

    Args:
        c: the Container (its ``rootfs`` is a RootFS).
        etc: files nscg writes for the sandbox (``/etc/hosts``...): (path inside,
            content, a host directory that exists, where the scratch may be attached).
        maps: the sandbox's (uid map, gid map) when its writable binds and
            overlay lowers get idmapped mounts (``_idmap.wants_idmap``), else None.
    """

    def __init__(
        self,
        c: Container,
        etc: Sequence[tuple[str, bytes, str]] = (),
        maps: tuple[Sequence[IdMap], Sequence[IdMap]] | None = None,
        masks: Sequence[str] | None = None,
    ) -> None:
        root = c.rootfs
        assert isinstance(root, RootFS)
        # hide_sockets: the host's sockets as of now (``masks``, if the caller read them)
        root = root.add_socket_masks(masks)
        # missing destinations below a read-only bind: made in a tmpfs (the
        # ops it adds are reported as the bind they stand for)
        root, origin = expand_dests(root)
        self.root = root
        self.userns = bool(c.namespaces & Namespace.USER)
        #: no working directory given: keep the caller's if the new root has it
        self.keep_cwd = c.cwd is None
        if _host.kernel_version() < (5, 12):
            raise UnsupportedError(
                f"RootFS needs kernel >= 5.12 (new mount API and mount_setattr); "
                f"this is {_host.kernel_release()}",
                feature="mount_setattr",
            )
        #: host temp dirs (work directories beside a persistent upper)
        self.temps: list[str] = []
        self.parts: list[_Part] = []
        self.tops: list[_Top] = []
        #: the scratch group's ops (between SCRATCH and SDONE), its size
        self.sops: list[Prim] = []
        self.size = 0
        self.ndata = 0
        self.npooled = 0
        self.nslots = 0
        #: the socket the child sends the scratch tmpfs's fd to (parent's, child's end)
        self.sock: tuple[socket.socket, socket.socket] | None = None
        self.scratch_fd = -1
        self.maps = maps
        #: the idmapped lower trees made for this spawn, in plan order (see
        #: take_lower_trees); closed by cleanup() unless taken
        self.lower_trees: list[int] = []
        main: list[Prim] = []
        #: how many prims the root op (the first, at "/") made, if it is a bind
        head_n: int | None = None
        try:
            for k, op in enumerate(root.ops):
                i = origin[k]
                if k == 1 and isinstance(root.ops[0], Bind) and root.ops[0].dest == "/":
                    head_n = len(main)
                if isinstance(op, Overlay):
                    later = {o.dest for o in root.ops[k + 1 :] if isinstance(o, _MOUNTS)}
                    main += self._overlay(i, op, later)
                elif isinstance(op, Data):
                    main += self._data(i, op)
                elif isinstance(op, Tmpfs) and op.pooled:
                    main += self._pooled(i, op, op.size or 0, op.mode, op.readonly, op.noexec)
                elif isinstance(op, Dev):
                    # /dev's own small tmpfs is pooled too (nodev: its nodes are binds)
                    devfs, *rest = self._flat(i, op)
                    assert devfs.kind == "fs" and devfs.fstype == "tmpfs", devfs
                    main += [*self._pooled(i, op, _DEV_SIZE, 0o755, False, True), *rest]
                else:
                    main += self._flat(i, op)
            tail: list[Prim] = []
            for k, (dest, content, _d) in enumerate(etc):
                name = f"e{k}"
                self.sops.append(Prim("sfile", name, source=content, mode=0o644, label=dest))
                slot = self._slot()
                self.sops.append(
                    Prim("sbind", "", source=name.encode(), flags=_flags(rdonly=True),
                         mode=slot, label=dest)
                )  # fmt: skip
                tail.append(
                    Prim("slot", dest.lstrip("/"), mode=slot, label=f"ro-bind {dest}",
                         flags=_flags(create_file=True))
                )  # fmt: skip
            self.prims: list[Prim] = main + tail
            if self.sops:
                # where the scratch group goes: first (stacked on "/", one more
                # unmount, each waiting for an expedited RCU grace period), or
                # attached at the host directory of the root's /etc files in the
                # old tree (detached with it by pivot_root) once no later op can
                # see it there: last, or right after the root's bind for pooled mounts
                first = bool(self.parts or self.tops or self.ndata or not etc)
                pos = 0 if first else len(main)
                if self.npooled and not first:
                    if head_n is None or not _unseen_after(root.ops[1:], etc[0][2]):
                        first, pos = True, 0
                    else:
                        pos = head_n
                if pos <= min((k for k, pr in enumerate(main) if pr.kind == "mask"), default=-1):
                    main = self._pooled_masks(main)
                size = self.size + (64 << 10) * len(etc)
                opts = (
                    ("size", str(size)),
                    ("nr_inodes", str(inodes_for(size))),
                    ("mode", "755"),
                )
                # (a failure names the first op that needs the scratch)
                owner = min((pr.op_index for pr in self.sops if pr.op_index >= 0), default=-1)
                head = Prim(
                    "scratch",
                    "" if first else etc[0][2],
                    options=opts,
                    op_index=owner,
                    label=f"scratch tmpfs (size={size})",
                )
                done = Prim("sdone", "", op_index=owner, label="scratch tmpfs")
                group = [head, *self.sops, done]
                self.prims = main[:pos] + group + main[pos:] + tail
            if len(self.prims) and self.nslots > lib.NSCG_MAX_SLOTS:
                raise UnsupportedError(
                    f"this root needs {self.nslots} mounts made from scratch memory; "
                    f"at most {lib.NSCG_MAX_SLOTS} are possible",
                    feature="rootfs.slots",
                )
            root_ids = root_owner(c)
            if root_ids is not None:
                # the sandbox's root (not host root) mounts the overlays: a
                # persistent upper and the work directory beside it are its own
                for part in self.parts:
                    if not part.in_scratch and os.stat(part.upper).st_uid == 0:
                        os.chown(part.upper, *root_ids)
                for d in self.temps:
                    chown_tree(d, root_ids)
        except BaseException:
            self.cleanup()
            raise
        _current.run = (c, self.prims)

    def _data(self, i: int, op: Data) -> list[Prim]:
        """A file of the scratch memory holding ``op.content``, bound at ``op.dest``."""
        label = describe(op)
        name = f"d{self.ndata}"
        self.ndata += 1
        self.size += len(op.content) + 4096
        self.sops.append(Prim("sfile", name, source=op.content, mode=op.mode, op_index=i,
                              label=label))  # fmt: skip
        slot = self._slot()
        flags = _flags(rdonly=op.readonly, nosuid=True, nodev=True)
        self.sops.append(Prim("sbind", "", source=name.encode(), flags=flags, mode=slot,
                              op_index=i, label=label))  # fmt: skip
        return [Prim("slot", op.dest.lstrip("/"), mode=slot, op_index=i, label=label,
                     flags=_flags(create_file=True))]  # fmt: skip

    def _pooled(
        self, i: int, op: Tmpfs | Dev, size: int, mode: int, readonly: bool, noexec: bool
    ) -> list[Prim]:
        """A directory of the scratch memory bound at ``op.dest``: a tmpfs without a
        superblock of its own (``Tmpfs.pooled``); ``size`` joins the scratch's."""
        label = describe(op)
        name = f"p{self.npooled}"
        self.npooled += 1
        self.size += size
        self._sdir(name, mode, i, label)
        slot = self._slot()
        flags = _flags(rdonly=readonly, nosuid=True, nodev=True, noexec=noexec)
        self.sops.append(Prim("sbind", "", source=name.encode(), flags=flags, mode=slot,
                              op_index=i, label=label))  # fmt: skip
        return [Prim("slot", op.dest.lstrip("/"), mode=slot, op_index=i, label=label,
                     flags=_flags(create_dir=True))]  # fmt: skip

    def _pooled_masks(self, main: list[Prim]) -> list[Prim]:
        """The masks' empty read-only directory from the scratch memory (a directory
        of it, in a slot the first directory mask takes) instead of a tmpfs of its own."""
        name = "m"
        self._sdir(name, 0o755, -1, "masks")
        slot = self._slot()
        flags = _flags(rdonly=True, nosuid=True, nodev=True, noexec=True)
        self.sops.append(Prim("sbind", "", source=name.encode(), flags=flags, mode=slot,
                              label="masks"))  # fmt: skip
        return [
            pr._replace(flags=pr.flags | {"from_slot"}, mode=slot) if pr.kind == "mask" else pr
            for pr in main
        ]

    def _slot(self) -> int:
        self.nslots += 1
        return self.nslots - 1

    def _flat(self, i: int, op: Op) -> list[Prim]:
        return [pr._replace(op_index=i) for pr in flatten(RootFS((op,)), self.userns)]

    def _sfs(self, i: int, label: str, lowers: Sequence[str], upper: str, work: str) -> int:
        """An overlay made in the scratch group (upper/work may be scratch-relative)."""
        opts: list[tuple[str, str | None]] = [
            *lowerdir_options(lowers),
            ("upperdir", upper),
            ("workdir", work),
        ]
        if self.userns:
            opts.append(("userxattr", None))
        slot = self._slot()
        self.sops.append(
            Prim("sfs", "", fstype="overlay", source=b"overlay", options=tuple(opts),
                 mode=slot, op_index=i, label=label)
        )  # fmt: skip
        return slot

    def _sdir(self, name: str, mode: int, i: int, label: str) -> None:
        self.sops.append(Prim("sdir", name, mode=mode, op_index=i, label=label))

    def _work_beside(self, upper: str) -> str:
        work: str = _host_call(
            "mkdtemp",
            f"a work directory beside {upper}",
            lambda: tempfile.mkdtemp(prefix="nscg-work-", dir=os.path.dirname(upper.rstrip("/"))),
        )
        self.temps.append(work)
        return work

    def _overlay(self, i: int, op: Overlay, replaced: set[str]) -> list[Prim]:
        """The primitives that make this overlay; split per top-level entry when needed.

        An ephemeral upper and work directory are directories of the scratch
        tmpfs. Inside a user namespace every mount inherited from the host is
        locked to the mounts above it, and overlayfs refuses a lower directory
        with locked mounts below it (EINVAL, "failed to clone lowerpath"). The
        host's / always has some (/proc, /sys, /dev). Then the overlay root is
        a directory of the scratch (bound read-write) holding one overlay per
        top-level directory of the lower, a read-only recursive bind for
        directories that have mounts below them, and the top-level symlinks
        and files as they are. What the payload writes at the top level
        itself lands in that directory: the change report compares it with the
        lower's top level as it was when the plan was made.
        """
        if self.userns and _host.kernel_version() < (5, 11):
            raise UnsupportedError(
                "an overlay inside a user namespace needs kernel >= 5.11 (userxattr)",
                feature="overlay.userxattr",
            )
        if len(lowerdir_options(op.lowers)) > 1 and _host.kernel_version() < (6, 8):
            raise UnsupportedError(
                f"the overlay's lower directories {op.lowers} make a lowerdir option longer "
                f"than {FSCONFIG_MAX_STRING} bytes: that needs Linux >= 6.8 (lowerdir+)",
                feature="overlay.lowerdir+",
            )
        label = describe(op)
        j = len(self.parts) + len(self.tops)
        if self.maps is not None and op.lowers_idmapped():
            mapped = self._idmapped_lowers(i, op, j)
            if mapped is not None:
                return self._mapped_overlay(i, op, j, mapped)
        mounts = _mount_points() if self.userns else []
        split = any(_has_submounts(lo, mounts) for lo in op.lowers)
        if split and len(op.lowers) != 1:
            raise UnsupportedError(
                f"an overlay of several lowers {op.lowers} with mounts below them cannot be "
                "made inside a user namespace (the kernel refuses locked submounts)",
                feature="overlay.locked",
            )
        names: list[str] = []
        parts: set[str] = set()
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
        persistent = op.upper
        work = op.work
        if persistent is not None:
            # a missing persistent upper is made, as the CLI's --keep-upper does
            up = persistent
            _host_call("mkdir", up, lambda: os.makedirs(up, 0o755, exist_ok=True))
            if work is None:
                work = self._work_beside(persistent)
            else:
                w = work
                _host_call("mkdir", w, lambda: os.makedirs(w, 0o700, exist_ok=True))
        if persistent is None or split:
            self.size += op.size if op.size is not None else DEFAULT_UPPER_SIZE
        if not split:
            if persistent is not None and work is not None:
                self.parts.append(_Part(persistent, False, op.lowers, op.dest))
                return self._flat(i, Overlay(op.lowers, persistent, op.dest, work))
            u, w = f"u{j}", f"w{j}"
            self._sdir(u, 0o755, i, label)
            self._sdir(w, 0o700, i, label)
            self.parts.append(_Part(u, True, op.lowers, op.dest))
            slot = self._sfs(i, label, op.lowers, u, w)
            return [Prim("slot", op.dest.lstrip("/"), mode=slot, op_index=i, label=label,
                         flags=_flags(create_dir=True))]  # fmt: skip
        (lower,) = op.lowers
        base = op.dest.rstrip("/")
        top = f"r{j}"
        self._sdir(top, 0o755, i, label)
        slot = self._slot()
        self.sops.append(Prim("sbind", "", source=top.encode(), mode=slot, op_index=i, label=label))
        out = [Prim("slot", op.dest.lstrip("/"), mode=slot, op_index=i, label=label,
                    flags=_flags(create_dir=True))]  # fmt: skip
        before: dict[str, str | None] = {}
        mounted: set[str] = set()
        for k, name in enumerate(names):
            src = os.path.join(lower, name)
            dest = f"{base}/{name}"
            link = os.path.islink(src)
            before[name] = os.readlink(src) if link else None
            if dest in replaced:  # a later op mounts there (/proc, /dev)
                out += self._flat(i, Mkdir(dest))
                mounted.add(name)
            elif link:
                out += self._flat(i, Symlink(before[name] or "", dest))
            elif name in parts and not _has_submounts(src, mounts):
                # the overlay's root shows the upper root's mode: the lower's (/tmp: 1777)
                mode = stat.S_IMODE(_host_call("stat", src, lambda src=src: os.stat(src)).st_mode)
                if persistent is not None and work is not None:
                    u, w = os.path.join(persistent, name), os.path.join(work, f"w{k}")
                    if not os.path.isdir(u):
                        _host_call("mkdir", u, lambda u=u: os.mkdir(u, 0o700))
                        _host_call("chmod", u, lambda u=u, m=mode: os.chmod(u, m))
                    _host_call("mkdir", w, lambda w=w: os.mkdir(w, 0o700))
                    self.parts.append(_Part(u, False, (src,), dest))
                else:
                    u, w = f"u{j}.{k}", f"w{j}.{k}"
                    self._sdir(u, mode, i, label)
                    self._sdir(w, 0o700, i, label)
                    self.parts.append(_Part(u, True, (src,), dest))
                slot = self._sfs(i, f"overlay {dest}", (src,), u, w)
                out.append(
                    Prim("slot", dest.lstrip("/"), mode=slot, op_index=i,
                         label=f"overlay {dest}", flags=_flags(create_dir=True))
                )  # fmt: skip
                mounted.add(name)
            else:
                out += self._flat(i, Bind(src, dest, readonly=True, recursive=True))
                mounted.add(name)
        # mount points a later op makes at the top level (a tmpfs on /scratch):
        # their content is their own, and the empty directory is the plan's
        for d in replaced:
            name = d[len(base) + 1 :]
            if d.startswith(base + "/") and name and "/" not in name:
                mounted.add(name)
        self.tops.append(_Top(top, before, frozenset(mounted), base))
        return out

    def _idmapped_lowers(self, i: int, op: Overlay, j: int) -> list[int] | None:
        """The lowers of ``op`` as idmapped trees (read-only, not recursive), made now.

        None when the kernel or a lower's filesystem cannot idmap and the
        overlay did not ask for it explicitly (``idmap=None``): its lowers then
        keep their host owners, which hides more, not less. With
        ``idmap=True`` that is an UnsupportedError.
        """
        assert self.maps is not None
        if _host.kernel_version() < (5, 19):  # overlayfs refuses idmapped layers before
            if op.idmap is None:
                return None
            raise UnsupportedError(
                f"idmapped overlay lowers need Linux >= 5.19; this is {_host.kernel_release()}: "
                "pass idmap_lowers=False (the lowers' files keep their host owners)",
                feature="idmap.overlay",
            )
        ns = userns_fd(self.maps[0], self.maps[1])
        step = ffi.new("int *")
        out = ffi.new("int32_t *")
        trees: list[int] = []
        for lo in op.lowers:
            r = lib.nscg_detached_tree(lo.encode(), 0, _ATTR_RDONLY, ns, step, out)
            if r == 0:
                trees.append(int(out[0]))
                continue
            for fd in trees:
                os.close(fd)
            err = -r
            if err == errno.ENOENT and step[0] == 0:
                raise SpecError(f"the overlay lower {lo!r} does not exist")
            if op.idmap is None:
                return None
            call = ("open_tree", "mount_setattr")[step[0]]
            raise UnsupportedError(
                f"the overlay lower {lo!r} cannot be idmapped ({call}: [Errno {err}] "
                f"{os.strerror(err)}): idmapped overlay layers need Linux >= 5.19 and a "
                f"filesystem that supports idmapped mounts; pass idmap_lowers=False (the "
                f"lower's files keep their host owners) or make root host root with "
                f"with_uid_map(IdMap(0, 0, 1)).with_gid_map(IdMap(0, 0, 1))",
                feature="idmap.overlay",
            )
        return trees

    def _mapped_overlay(self, i: int, op: Overlay, j: int, trees: list[int]) -> list[Prim]:
        """An overlay whose lowers are the parent's idmapped ``trees``.

        Each tree is attached in the scratch (``l<j>.<q>``, an SBIND from the
        plan's fds) and the overlay, made there too, takes them by relative
        paths; the upper is scratch memory or the persistent upper. Not split
        per top-level entry: a tree has no submounts, so none is locked.
        """
        label = describe(op)
        self.lower_trees += trees
        names = []
        for q, lo in enumerate(op.lowers):
            name = f"l{j}.{q}"
            self._sdir(name, 0o700, i, label)
            self.sops.append(
                Prim("sbind", name, source=lo.encode(), flags=_flags(from_fd=True),
                     op_index=i, label=f"overlay lower {lo}")
            )  # fmt: skip
            names.append(name)
        if op.upper is not None:
            up = op.upper
            _host_call("mkdir", up, lambda: os.makedirs(up, 0o755, exist_ok=True))
            if op.work is None:
                w = self._work_beside(up)
            else:
                w = op.work
                _host_call("mkdir", w, lambda: os.makedirs(w, 0o700, exist_ok=True))
            self.parts.append(_Part(up, False, op.lowers, op.dest, True))
            slot = self._sfs(i, label, names, up, w)
        else:
            self.size += op.size if op.size is not None else DEFAULT_UPPER_SIZE
            u, w = f"u{j}", f"w{j}"
            self._sdir(u, 0o755, i, label)
            self._sdir(w, 0o700, i, label)
            self.parts.append(_Part(u, True, op.lowers, op.dest, True))
            slot = self._sfs(i, label, names, u, w)
        return [Prim("slot", op.dest.lstrip("/"), mode=slot, op_index=i, label=label,
                     flags=_flags(create_dir=True))]  # fmt: skip

    def _owners(self) -> _tree.Owners:
        """A lower owner as the upper shows it: through the sandbox's maps."""
        assert self.maps is not None
        umap, gmap = self.maps

        def shift(maps: Sequence[IdMap], n: int) -> int:
            m = next((m for m in maps if m.contains_inside(n)), None)
            return n if m is None else m.outside + n - m.inside

        return lambda uid, gid: (shift(umap, uid), shift(gmap, gid))

    def take_lower_trees(self) -> list[int]:
        """The idmapped lower trees, in the order of their SBIND ops; the caller owns them now."""
        out, self.lower_trees = self.lower_trees, []
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
            if pr.kind in ("sfs", "sbind", "slot") or "from_slot" in pr.flags:
                o.slot = pr.mode
            else:
                o.mode = pr.mode
            o.dest = p.cstr(pr.dest)
            if pr.kind in ("file", "sfile"):
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
        if self.keep_cwd:
            flags |= lib.NSCG_MOUNTS_KEEP_CWD
        plan.mount_flags = flags
        if any(pt.in_scratch for pt in self.parts) or self.tops:
            # the child sends the scratch tmpfs's fd here: the report reads it
            if self.sock is None:
                self.sock = _host_call(
                    "socketpair",
                    "a socket for the scratch memory",
                    lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM),
                )
            assert self.sock is not None
            plan.scratch_sock = self.sock[1].fileno()

    def attach(self, proc: Process) -> None:
        """Compute the change report and release the scratch once ``proc`` is reaped."""
        _current.run = None
        if self.sock is not None:
            parent, child = self.sock
            self.sock = None
            child.close()  # the child has its own copy
            parent.setblocking(False)
            try:
                _msg, fds, _f, _a = socket.recv_fds(parent, 1, 1)
                self.scratch_fd = fds[0] if fds else -1
            except OSError:
                # (sent before execve: it is there by now; else the report says so)
                self.scratch_fd = -1
            finally:
                parent.close()  # one fd per live sandbox: the scratch's own

        def report() -> None:
            proc._set_changes(self.report())

        if self.parts or self.tops:
            proc._add_cleanup(report)
        if self.temps or self.scratch_fd >= 0:
            proc._add_cleanup(self.cleanup)

    def _open_upper(self, pt: _Part | _Top) -> int:
        name = pt.upper if isinstance(pt, _Part) else pt.name
        if isinstance(pt, _Top) or pt.in_scratch:
            if self.scratch_fd < 0:
                raise OSError(errno.EBADF, "the scratch memory was not received")
            return os.open(name, _O_DIR | os.O_NOFOLLOW, dir_fd=self.scratch_fd)
        return os.open(name, _O_DIR)

    def report(self) -> Changes:
        """The change report of every overlay of the plan (read once the sandbox is gone)."""
        rep = _tree.Report()
        opaque = (_tree.OPAQUE_USER,) if self.userns else (_tree.OPAQUE_TRUSTED,)
        for top in self.tops:
            try:
                fd = self._open_upper(top)
            except OSError as e:
                rep.stop(f"cannot read the top level of {top.dest or '/'}: {e.strerror}")
                break
            try:
                _tree.top_changes(fd, top.before, top.mounted, top.dest, rep, fix_perms=True)
            except OSError as e:
                rep.stop(f"cannot read the top level of {top.dest or '/'}: {e}")
            finally:
                os.close(fd)
        for pt in self.parts:
            if rep.truncated:
                break
            fds: list[int | None] = []
            try:
                try:
                    fds.append(self._open_upper(pt))
                except OSError as e:
                    rep.stop(f"cannot read the upper of {pt.dest}: {e.strerror}")
                    break
                for lo in pt.lowers:
                    try:
                        fds.append(os.open(lo, _O_DIR))
                    except OSError:
                        fds.append(None)
                ufd = fds[0]
                assert ufd is not None
                _tree.walk_changes(
                    ufd, fds[1:], pt.dest.rstrip("/"), rep, opaque=opaque,
                    fix_perms=pt.in_scratch, owners=self._owners() if pt.mapped else None,
                )  # fmt: skip
            except OSError as e:  # (a lower that changed meanwhile, say)
                rep.stop(f"cannot read the changes under {pt.dest}: {e}")
            finally:
                for lfd in fds:
                    if lfd is not None:
                        os.close(lfd)
        return changes_of(rep)

    def cleanup(self) -> None:
        """Release the scratch memory and remove the temp dirs. Idempotent."""
        while self.lower_trees:
            os.close(self.lower_trees.pop())
        if self.scratch_fd >= 0:
            os.close(self.scratch_fd)
            self.scratch_fd = -1
        if self.sock is not None:
            for sk in self.sock:
                sk.close()  # (a fd still in flight dies with the socket)
            self.sock = None
        while self.temps:
            _rmtree(self.temps.pop())


_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


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


__all__ = ["RootfsRun", "failure_label"]

"""Idmapped writable binds: how a root caller's sandbox writes to a host directory.

A root caller's sandbox maps its ids 0..65535 to an unprivileged host range
(:func:`nscg.namespaces.root_range`), so the host's files of root (and of
every other host user) are not its own. A writable bind then gets an idmapped
mount (``mount_setattr(MOUNT_ATTR_IDMAP)``) through a user namespace whose maps
equal the sandbox's: on that mount a file of host uid N shows as uid N inside,
and what the sandbox's uid N creates is stored as host uid N. So the caller's
(root's) files are root's inside, and the payload's new files are the caller's
on the host. Read-only binds and the host's ``/`` are not idmapped: host files
keep their host owners there (unmapped owners show as the overflow id 65534)
and root-only host files stay unreadable.

The kernel wants ``CAP_SYS_ADMIN`` in the user namespace owning the bound
filesystem (the initial one for ext4, xfs, tmpfs...), which the child, already
in its own user namespace, does not have. So the parent makes each idmapped
tree before the clone (``open_tree(OPEN_TREE_CLONE)`` + ``mount_setattr``, in
C: ``nscg_detached_tree``) and hands the mount fd to the child, which only
moves it into place (``NSCG_MNT_FROM_FD`` in ``_native/mount.c``). The user
namespace that carries the map is made once per map and process: a short-lived
sandbox with only a user namespace, whose namespace fd is kept.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from nscg._native import ffi, lib
from nscg.errors import SpecError, UnsupportedError
from nscg.namespaces import IdMap, Namespace, NamespaceRef, in_initial_userns, root_range
from nscg.rootfs import Bind, Op, Prim

if TYPE_CHECKING:
    from nscg.container import Container

__all__ = ["IdBind", "bind_slots", "binds_to_idmap", "mark", "open_trees", "wants_idmap"]

_CAP_SYS_ADMIN = 21

_FLAG_ATTRS = {
    "rdonly": 0x1,  # MOUNT_ATTR_RDONLY
    "nosuid": 0x2,
    "nodev": 0x4,
    "noexec": 0x8,
}


class IdBind(NamedTuple):
    """A writable bind of the plan that gets an idmapped tree (one per spawn)."""

    slot: int  # its slot in nscg_spawn_state.mount_fds
    source: bytes
    recursive: bool
    attrs: int  # MOUNT_ATTR_* to set besides the idmap
    optional: bool
    label: str
    #: an overlay lower (an SBIND of the scratch) whose tree RootfsRun made
    lower: bool = False


def _identity(maps: Sequence[IdMap]) -> bool:
    return all(m.inside == m.outside for m in maps)


def wants_idmap(uid_map: Sequence[IdMap], gid_map: Sequence[IdMap], cap_eff: int) -> bool:
    """Whether a sandbox with these maps gets idmapped writable binds.

    When its maps shift ids (a root caller's default range, or maps of the
    caller's own) and the caller can idmap (``CAP_SYS_ADMIN`` in the initial
    user namespace). Identity maps (``IdMap(0, 0, 1)``: root is host root)
    need none; a rootless caller cannot make any and keeps plain binds.
    """
    if _identity(uid_map) and _identity(gid_map):
        return False
    return bool(cap_eff >> _CAP_SYS_ADMIN & 1) and in_initial_userns()


def _lower(pr: Prim) -> bool:
    return pr.kind == "sbind" and "from_fd" in pr.flags


def bind_slots(prims: Sequence[Prim]) -> list[int]:
    """The primitives that are binds or idmapped overlay lowers: each gets a slot
    of ``nscg_spawn_state.mount_fds``."""
    return [i for i, pr in enumerate(prims) if pr.kind == "bind" or _lower(pr)]


def binds_to_idmap(ops: Sequence[Op], prims: Sequence[Prim]) -> list[IdBind]:
    """The binds of ``prims`` that come from a writable :class:`Bind` of ``ops``."""
    out = []
    for slot, i in enumerate(bind_slots(prims)):
        pr = prims[i]
        if _lower(pr):
            out.append(IdBind(slot, pr.source or b"", False, 0, False, pr.label, lower=True))
            continue
        if "rdonly" in pr.flags or not 0 <= pr.op_index < len(ops):
            continue
        if not isinstance(ops[pr.op_index], Bind) or pr.source is None:
            continue
        attrs = 0
        for f in pr.flags:
            attrs |= _FLAG_ATTRS.get(f, 0)
        out.append(
            IdBind(
                slot, pr.source, "recursive" in pr.flags, attrs, "optional" in pr.flags, pr.label
            )
        )
    return out


def root_owner(c: Container) -> tuple[int, int] | None:
    """The host uid and gid of ``c``'s root inside, when a root caller's map moves it.

    None when the sandbox's root is the caller (rootless, ``IdMap(0, 0, 1)``,
    no new user namespace) or is not mapped.
    """
    if not c.namespaces & Namespace.USER or os.geteuid() != 0 or not in_initial_userns():
        return None
    rr = root_range() if c.uid_map is None or c.gid_map is None else None
    umap = c.uid_map if c.uid_map is not None else rr.uid_map() if rr else ()
    gmap = c.gid_map if c.gid_map is not None else rr.gid_map() if rr else ()
    u = next((m.outside + 0 - m.inside for m in umap if m.contains_inside(0)), None)
    g = next((m.outside + 0 - m.inside for m in gmap if m.contains_inside(0)), None)
    if u is None or g is None or (u, g) == (0, 0):
        return None
    return u, g


def chown_tree(path: str, owner: tuple[int, int]) -> None:
    """Give a directory tree nscg just made (no payload has seen it) to ``owner``."""
    os.chown(path, *owner, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), *owner, follow_symlinks=False)


def mark(plan: Any, prims: Sequence[Prim], binds: Sequence[IdBind]) -> int:
    """Give each bind of ``plan``'s mount array its slot; flag the idmapped ones.

    Returns the number of slots.
    """
    slots = bind_slots(prims)
    for i in range(len(prims)):
        plan.mounts[i].fd_index = -1
    for k, i in enumerate(slots):
        plan.mounts[i].fd_index = k
    for b in binds:
        plan.mounts[slots[b.slot]].flags |= lib.NSCG_MNT_FROM_FD
    return len(slots)


_lock = threading.Lock()
_userns: dict[tuple[int, str, str], NamespaceRef] = {}


def _map_text(maps: Sequence[IdMap]) -> str:
    return "".join(m.line() for m in maps)


def userns_fd(uid_map: Sequence[IdMap], gid_map: Sequence[IdMap]) -> int:
    """A user namespace with these maps, made once per map and process; its fd.

    It is the namespace of a sandbox that only has a user namespace and runs
    ``sleep`` until its namespace is opened; the namespace outlives it.
    """
    key = (os.getpid(), _map_text(uid_map), _map_text(gid_map))
    with _lock:
        ref = _userns.get(key)
        if ref is not None and not ref.closed:
            return ref.fileno()
        from nscg.container import Container

        spec = (
            Container()
            .without_rootfs()
            .with_namespaces(Namespace.USER)
            .with_uid_map(*uid_map)
            .with_gid_map(*gid_map)
            .with_init(False)
            .with_seccomp("unconfined")
            .with_env({"PATH": "/usr/bin:/bin"})
        )
        with spec.spawn(["sleep", "1000"]) as proc:
            try:
                ref = NamespaceRef.of_pid(proc.pid, Namespace.USER)
            finally:
                proc.kill()
                proc.wait()
        _userns[key] = ref
        return ref.fileno()


def open_trees(
    p: Any,
    plan: Any,
    n_slots: int,
    binds: Sequence[IdBind],
    maps: tuple[Sequence[IdMap], Sequence[IdMap], Any, Any, Any] | None,
    trees: Any,
    lowers: Sequence[int] = (),
) -> None:
    """Give this spawn its ``plan.state.mount_fds``: the idmapped trees, made now, and
    ``NSCG_FD_NOT_OPENED`` for the other binds (the child opens those).

    ``lowers`` are the idmapped overlay lowers the RootfsRun made, in the
    order of their ops (taken: from here on ``trees`` owns them).

    Each tree's fd is also stored in ``trees`` (an ``int32_t[]`` of one slot per
    bind, all -1, that the child never writes): the parent closes those after
    the clone, or when the spawn is aborted.

    Raises:
        UnsupportedError: the kernel or the filesystem cannot idmap a bind
            (named in the message).
        SpecError: a bind's source vanished.
    """
    if not n_slots:
        return
    arr = p.array("int32_t[]", [lib.NSCG_FD_NOT_OPENED] * n_slots)
    plan.state.mount_fds = arr
    plan.state.n_mount_fds = n_slots
    slots = [b.slot for b in binds if b.lower]
    assert len(slots) == len(lowers), (slots, lowers)
    for k, fd in zip(slots, lowers, strict=True):
        trees[k] = arr[k] = fd
    if len(slots) == len(binds) or maps is None:
        return
    ns = userns_fd(maps[0], maps[1])
    step = ffi.new("int *")
    for b in binds:
        if b.lower:
            continue
        k = b.slot
        r = lib.nscg_detached_tree(b.source, int(b.recursive), b.attrs, ns, step, trees + k)
        if r < 0:
            err = -r
            if err == errno.ENOENT and step[0] == 0:
                if b.optional:
                    arr[k] = -1
                    continue
                raise SpecError(f"the source of {b.label!r} does not exist")
            call = ("open_tree", "mount_setattr")[step[0]]
            raise UnsupportedError(
                f"the writable bind {b.label!r} cannot be idmapped ({call}: "
                f"[Errno {err}] {os.strerror(err)}): a root caller's sandbox maps its ids to "
                f"an unprivileged host range, and its writes to a host directory go through "
                f"an idmapped mount, which this kernel or this filesystem refuses; bind it "
                f"read-only, or make root host root with "
                f"with_uid_map(IdMap(0, 0, 1)).with_gid_map(IdMap(0, 0, 1))",
                feature="idmap.bind",
            )
        arr[k] = trees[k]

"""The sandbox's own root filesystem: :class:`RootFS`, an ordered mount plan.

A :class:`RootFS` is a frozen list of operations (bind, tmpfs, proc, dev,
overlay, mkdir, symlink, file, read-only, mask) that the child executes in
order inside a fresh root, before ``pivot_root`` into it (see
``_native/mount.c``). Start from a named constructor and add operations::

    root = RootFS.host().bind("/srv/data", "/data", readonly=False)

Needs a new mount namespace (``Namespace.MOUNT``); ``proc`` also needs a new
pid namespace. Works unprivileged inside a user namespace; the overlay root
needs kernel >= 5.11 there (``userxattr``). The mount code uses the kernel's
new mount API and ``mount_setattr`` (kernel >= 5.12).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, TypeAlias

import attrs

from nscg import _tree
from nscg._deprecate import renamed as _renamed
from nscg._native import lib
from nscg.errors import SpecError, UnsupportedError

if TYPE_CHECKING:
    from nscg.images import Image, Store

__all__ = [
    "DEFAULT_SHM_SIZE",
    "DEFAULT_TMP_SIZE",
    "DEFAULT_UPPER_SIZE",
    "DOCKER_MASKED_PATHS",
    "DOCKER_READONLY_PATHS",
    "FSCONFIG_MAX_STRING",
    "HOME_SIZE",
    "RUN_SIZE",
    "Bind",
    "Changes",
    "Chmod",
    "Data",
    "Dev",
    "File",
    "Mask",
    "Mkdir",
    "Mount",
    "Mqueue",
    "Overlay",
    "Proc",
    "ReadOnly",
    "RootFS",
    "Symlink",
    "Tmpfs",
    "host_socket_paths",
]

#: The OCI/Docker default masked paths (hidden: /dev/null or an empty tmpfs over them).
DOCKER_MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

#: The OCI/Docker default read-only paths.
DOCKER_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

#: Default size limit (bytes) of RootFS.host()'s private /tmp.
DEFAULT_TMP_SIZE = 256 << 20
#: Default size limit (bytes) of the minimal /dev's /dev/shm (Docker's default too).
DEFAULT_SHM_SIZE = 64 << 20
#: Default size limit (bytes) of an ephemeral overlay upper (nscg's scratch tmpfs).
DEFAULT_UPPER_SIZE = 1 << 30


def inodes_for(size: int) -> int:
    """The inode limit nscg gives a tmpfs of ``size`` bytes: one per 4 KiB, at least 1024.

    A tmpfs's ``size`` counts file data only; every inode and dentry is kernel
    memory on top, so an empty-file flood would otherwise use host memory
    without bound.
    """
    return max(1024, size // 4096)


def _size(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise SpecError(f"a size must be a positive number of bytes, got {value!r}")
    return value


#: Device nodes of the minimal /dev (bound from the host's, which works rootless too).
DEV_NODES: tuple[str, ...] = ("null", "zero", "full", "random", "urandom", "tty")
#: the size of /dev's own tmpfs (its nodes are binds, its links take no room)
_DEV_SIZE: Final = 64 << 10

#: Size of the private, empty ``/run`` of :meth:`RootFS.host` and :meth:`RootFS.overlay`.
RUN_SIZE: Final = 1 << 20
#: Size of each empty tmpfs that hides a home directory (``hide_home=True``).
HOME_SIZE: Final = 4 << 20
#: Directories never hidden as a whole even when ``$HOME`` points there.
_SYSTEM_DIRS: Final = frozenset(
    {
        "/usr/bin",
        "/usr/lib",
        "/usr/lib64",
        "/usr/local",
        "/usr/sbin",
        "/usr/share",
        "/usr/src",
        "/var/cache",
        "/var/lib",
        "/var/log",
        "/var/spool",
        "/var/tmp",
    }
)
#: Where the kernel lists the unix sockets of the caller's network namespace.
PROC_NET_UNIX: Final = "/proc/net/unix"

#: the longest destination the child takes (abi.h's NSCG_MAX_DEST: PATH_MAX less
#: the NUL), counted without the leading "/" the plan drops
_MAX_PATH: Final = lib.NSCG_MAX_DEST + 1


def _dest(value: str) -> str:
    """Validate and normalize a destination path inside the sandbox."""
    if not isinstance(value, str):
        raise SpecError(f"a mount destination must be a str, got {value!r}")
    if "\0" in value:
        raise SpecError(f"NUL byte in mount destination {value!r}")
    if not value.startswith("/"):
        raise SpecError(f"mount destination {value!r} must be an absolute path")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise SpecError(f"mount destination {value!r} must not contain '..'")
    out = "/" + "/".join(parts)
    try:
        raw = os.fsencode(out)  # non-UTF-8 names arrive as surrogate escapes
    except UnicodeEncodeError:
        raise SpecError(f"mount destination {value[:40]!r} cannot be encoded") from None
    if len(raw) > _MAX_PATH:
        raise SpecError(f"mount destination {value[:40]!r}... is too long")
    return out


def _source(value: str | os.PathLike[str]) -> str:
    """Validate a host path that must exist now."""
    s = os.fspath(value)
    if not isinstance(s, str) or "\0" in s:
        raise SpecError(f"invalid source path {value!r}")
    if not s.startswith("/"):
        raise SpecError(f"source {s!r} must be an absolute path")
    if not os.path.lexists(s):
        raise SpecError(f"source {s!r} does not exist")
    return os.path.normpath(s)


def _options(
    value: Mapping[str, str | None] | Iterable[tuple[str, str | None]],
) -> tuple[tuple[str, str | None], ...]:
    return tuple(_opts(value))


def _lowers(value: Iterable[str | os.PathLike[str]]) -> tuple[str, ...]:
    return tuple(_source(x) for x in value)


def _upper(value: str | os.PathLike[str] | None) -> str | None:
    """An upper (or work) directory: absolute; created at spawn when missing."""
    if value is None:
        return None
    s = os.fspath(value)
    if not isinstance(s, str) or "\0" in s:
        raise SpecError(f"invalid overlay directory {value!r}")
    if not s.startswith("/"):
        raise SpecError(f"overlay directory {s!r} must be an absolute path")
    return os.path.normpath(s)


def _inside(path: str, top: str) -> bool:
    """Whether ``path`` is ``top`` or below it (both real paths)."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def visible_in(path: str, lower: str) -> bool:
    """Whether the host directory ``path`` shows up in the overlay layer ``lower``.

    It does when it is at or below ``lower`` with no mount in between:
    overlayfs does not cross mounts of a lower directory. (Inside a user
    namespace nscg splits a lower with mounts below it per top-level entry:
    there each entry is a layer of its own, checked likewise.)
    """
    rp, rl = os.path.realpath(path), os.path.realpath(lower)
    if not _inside(rp, rl):
        return False
    cur = rp
    while True:
        if os.path.ismount(cur) and cur != rl:
            return False
        if cur in (rl, "/"):
            return True
        cur = os.path.dirname(cur)


def _content(value: bytes | str) -> bytes:
    if not isinstance(value, str):
        return bytes(value)
    try:
        return value.encode("utf-8", "surrogateescape")  # undecodable bytes kept as they came
    except UnicodeEncodeError:
        raise SpecError(f"file content {value[:40]!r} cannot be encoded as UTF-8") from None


def _ops(value: Iterable[Op]) -> tuple[Op, ...]:
    return _check_plan(tuple(value))


def _mode(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o7777:
        raise SpecError(f"mode must be an int in [0, 0o7777], got {value!r}")
    return value


# ------------------------------------------------------------------ operations
@attrs.frozen
class Bind:
    """Bind ``source`` (a host path) at ``dest``; read-only and recursive by default."""

    source: str = attrs.field(converter=_source)
    dest: str = attrs.field(converter=_dest)
    readonly: bool = True
    recursive: bool = True
    nosuid: bool = False
    nodev: bool = False
    noexec: bool = False
    optional: bool = False


@attrs.frozen
class Tmpfs:
    """A fresh tmpfs at ``dest`` (``size`` in bytes, None: the kernel's default).

    With ``pooled``, the mount is a directory of the sandbox's scratch memory
    (the one tmpfs that also holds the /etc files nscg writes) instead of a
    tmpfs of its own: no superblock to make and tear down per spawn (about
    25 us each), but the sizes of all pooled mounts add up to one limit that
    they share, and ``statfs`` shows the pool's. :meth:`RootFS.host` pools its
    small private mounts (/run, the hidden home directories); a pooled tmpfs
    needs a ``size`` and is always nosuid and nodev.
    """

    dest: str = attrs.field(converter=_dest)
    size: int | None = None
    mode: int = attrs.field(default=0o755, converter=_mode)
    readonly: bool = False
    nosuid: bool = True
    nodev: bool = True
    noexec: bool = False
    pooled: bool = False

    def __attrs_post_init__(self) -> None:
        if self.size is not None and (
            isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0
        ):
            raise SpecError(f"tmpfs size must be a positive number of bytes, got {self.size!r}")
        if self.pooled and (self.size is None or not self.nosuid or not self.nodev):
            raise SpecError(
                f"a pooled tmpfs ({self.dest}) needs a size and is nosuid and nodev "
                "(it is a directory of the sandbox's scratch memory)"
            )
        # (with a size, the inodes are limited too: see inodes_for)


@attrs.frozen
class Proc:
    """A new procfs at ``dest``: shows the sandbox's pid namespace only."""

    dest: str = attrs.field(default="/proc", converter=_dest)


@attrs.frozen
class Dev:
    """A minimal /dev: null zero full random urandom tty, devpts + ptmx, shm, fd links.

    ``shm_size`` limits /dev/shm (bytes; inodes: :func:`inodes_for`).
    """

    dest: str = attrs.field(default="/dev", converter=_dest)
    shm_size: int = attrs.field(default=DEFAULT_SHM_SIZE, converter=_size)


@attrs.frozen
class Mqueue:
    """A POSIX message queue filesystem (needs ``Namespace.IPC``)."""

    dest: str = attrs.field(default="/dev/mqueue", converter=_dest)


@attrs.frozen
class Mount:
    """A filesystem of type ``fstype`` with fsconfig(2) options (None value: a flag)."""

    fstype: str
    dest: str = attrs.field(converter=_dest)
    source: str | None = None
    options: tuple[tuple[str, str | None], ...] = attrs.field(default=(), converter=_options)
    readonly: bool = False
    nosuid: bool = True
    nodev: bool = True
    noexec: bool = False


def _is_bool(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise SpecError(f"{attr.name} must be a bool or None, got {value!r}")


def is_host_root(path: str) -> bool:
    """Whether ``path`` is the host's ``/`` (the same directory, by any name)."""
    try:
        a, b = os.stat(path), os.stat("/")
    except OSError:
        return os.path.realpath(path) == "/"
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@attrs.frozen
class Overlay:
    """An overlay filesystem at ``dest``: ``lowers`` (top first), ``upper`` (None: ephemeral)."""

    lowers: tuple[str, ...] = attrs.field(converter=_lowers)
    #: where the writes persist (created at spawn if missing); None: nscg's scratch memory
    upper: str | None = attrs.field(default=None, converter=_upper)
    dest: str = attrs.field(default="/", converter=_dest)
    #: the overlay work directory (same filesystem as ``upper``); None: a temp dir
    work: str | None = attrs.field(default=None, converter=_upper)
    #: the size limit (bytes) of the scratch memory holding an ephemeral upper
    #: (None: DEFAULT_UPPER_SIZE); a persistent upper is limited by its filesystem
    size: int | None = attrs.field(default=None, converter=_size)
    #: whether the lowers' files belong to the sandbox's ids when a root
    #: caller's sandbox maps its ids to an unprivileged host range (see
    #: :meth:`RootFS.overlay`'s ``idmap_lowers``); None: unless a lower is
    #: the host's ``/``
    idmap: bool | None = attrs.field(default=None, validator=attrs.validators.optional(_is_bool))

    def lowers_idmapped(self) -> bool:
        """Whether the lowers are seen through idmapped mounts (when ids are shifted).

        ``idmap`` if given; by default True unless a lower is the host's
        ``/`` (the host's view keeps its host owners: its root-only files,
        such as ``/etc/shadow``, stay unreadable).
        """
        if self.idmap is not None:
            return self.idmap
        return not any(is_host_root(lo) for lo in self.lowers)

    def __attrs_post_init__(self) -> None:
        if not self.lowers:
            raise SpecError("an overlay needs at least one lower directory")
        for d in (*self.lowers, *(x for x in (self.upper, self.work) if x)):
            if os.path.lexists(d) and not os.path.isdir(d):
                raise SpecError(f"overlay layer {d!r} is not a directory")
            if ":" in d or "," in d:
                raise SpecError(f"overlay layer {d!r} must not contain ':' or ','")
        for d in (x for x in (self.upper, self.work) if x is not None):
            for lo in self.lowers:
                if visible_in(d, lo):
                    raise SpecError(
                        f"overlay upper/work directory {d!r} is inside the lower layer {lo!r}: "
                        "the sandbox would see (and write to) its own upper; put it on "
                        "another filesystem or outside the lower"
                    )


@attrs.frozen
class Mkdir:
    """Create a directory (and its parents) inside the sandbox."""

    dest: str = attrs.field(converter=_dest)
    mode: int = attrs.field(default=0o755, converter=_mode)


@attrs.frozen
class Symlink:
    """Create a symlink ``dest`` -> ``target`` inside the sandbox."""

    target: str
    dest: str = attrs.field(converter=_dest)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.target, str) or not self.target or "\0" in self.target:
            raise SpecError(f"invalid symlink target {self.target!r}")


@attrs.frozen
class File:
    """Create (or replace) a file with ``content`` inside the sandbox."""

    dest: str = attrs.field(converter=_dest)
    content: bytes = attrs.field(converter=_content)
    mode: int = attrs.field(default=0o644, converter=_mode)


@attrs.frozen
class ReadOnly:
    """Make ``dest`` read-only; a missing path is skipped if ``optional``.

    ``recursive`` (the default): ``dest`` and every mount below it, whether or
    not ``dest`` is a mount point. Otherwise only the mount at ``dest``, which
    must be a mount point (bwrap's ``--remount-ro``): the mounts below keep
    their flags.
    """

    dest: str = attrs.field(converter=_dest)
    optional: bool = True
    recursive: bool = True


@attrs.frozen
class Chmod:
    """Set the mode of ``dest``, which must exist by then (bwrap's ``--chmod``).

    A symlink at ``dest`` is followed, inside the new root.
    """

    dest: str = attrs.field(converter=_dest)
    mode: int = attrs.field(converter=_mode)


@attrs.frozen
class Data:
    """A file holding ``content``, made in the sandbox's scratch memory and bound at ``dest``.

    bwrap's ``--bind-data`` (``readonly=True``: ``--ro-bind-data``). Unlike
    :class:`File`, which writes into the directory at ``dest``'s parent (it
    must be writable: a tmpfs), this works over a read-only root, and the
    file is a mount point: it cannot be renamed or removed inside.
    """

    dest: str = attrs.field(converter=_dest)
    content: bytes = attrs.field(converter=_content)
    mode: int = attrs.field(default=0o600, converter=_mode)
    readonly: bool = False


@attrs.frozen
class Mask:
    """Hide ``dest``: /dev/null over a file, an empty read-only tmpfs over a directory."""

    dest: str = attrs.field(converter=_dest)


Op: TypeAlias = (
    Bind
    | Tmpfs
    | Proc
    | Dev
    | Mqueue
    | Mount
    | Overlay
    | Data
    | Mkdir
    | Symlink
    | File
    | ReadOnly
    | Mask
    | Chmod
)
_MOUNTS = (Bind, Tmpfs, Proc, Dev, Mqueue, Mount, Overlay, Data)


def describe(op: Op) -> str:
    """A short name of an op for messages: its type and destination."""
    kind = type(op).__name__.lower()
    if isinstance(op, Bind):
        return f"{'ro-' if op.readonly else ''}bind {op.source} {op.dest}"
    if isinstance(op, Data):
        return f"{'ro-' if op.readonly else ''}bind-data {op.dest}"
    if isinstance(op, ReadOnly) and not op.recursive:
        return f"remount-ro {op.dest}"
    return f"{kind} {op.dest}"


def _check_plan(ops: tuple[Op, ...]) -> tuple[Op, ...]:
    """Reject plans where a later mount hides an earlier op (same path or an ancestor)."""
    mounts = [(j, op) for j, op in enumerate(ops) if isinstance(op, _MOUNTS)]
    for i, op in enumerate(ops):
        if not isinstance(op, (*_MOUNTS, Mkdir, Symlink, File, ReadOnly, Mask, Chmod)):
            raise SpecError(f"not a RootFS operation: {op!r}")
        for j, later in mounts:
            if j <= i:
                continue
            d, ld = op.dest, later.dest
            if isinstance(op, Mkdir) and d == ld:
                continue  # making the mount point
            if ld in (d, "/") or d.startswith(ld + "/"):
                what = "mounted twice" if d == ld and isinstance(op, _MOUNTS) else "hidden"
                raise SpecError(
                    f"overlapping mount plan: op #{i} ({describe(op)}) is {what} by "
                    f"op #{j} ({describe(later)}); put the mount of {ld!r} first"
                )
    return ops


Propagation: TypeAlias = Literal["private", "slave"]


def host_socket_paths() -> list[str]:
    """The paths of the bound path sockets the kernel lists in ``/proc/net/unix``.

    That file lists every unix socket of the caller's network namespace; a
    socket bound to a path shows the path given to ``bind()`` (abstract ones
    start with ``@`` and are left out, as are relative paths: where they lie
    cannot be known). Sockets of other network namespaces are not listed.

    Raises:
        UnsupportedError: the file exists but cannot be read.
    """
    return host_socket_listing()[1]


def host_socket_listing() -> tuple[bytes, list[str]]:
    """:func:`host_socket_paths`, and the same paths as bytes, each followed by ``\\n``.

    The bytes are what the C spawn compares with the listing of the moment,
    right before its clone (``_native/spawn.c``, ``sockets_changed``: the same
    extraction, byte for byte).
    """
    try:
        with open(PROC_NET_UNIX, "rb") as f:
            lines = f.read().split(b"\n")[1:]
    except FileNotFoundError:  # no AF_UNIX in this kernel: no socket to hide
        return b"", []
    except OSError as e:
        raise UnsupportedError(
            f"cannot read {PROC_NET_UNIX} to hide the host's unix sockets ({e.strerror}); "
            "mount procfs, or pass hide_sockets=False to RootFS.host()/overlay()",
            feature="hide_sockets",
        ) from None
    raw: list[bytes] = []
    for line in lines:  # Num RefCount Protocol Flags Type St Inode [Path]: only Path has "/"
        i = line.find(b" /")
        if i >= 0:
            raw.append(line[i + 1 :])
    return b"".join(r + b"\n" for r in raw), [os.fsdecode(r) for r in raw]


def _real(path: str) -> str:
    """``path`` with the directories leading to it resolved on the host (not its last part)."""
    head, tail = os.path.split(path)
    return os.path.join(os.path.realpath(head), tail) if tail else os.path.realpath(path)


def _under(path: str, top: str) -> bool:
    return top in ("/", path) or path.startswith(top.rstrip("/") + "/")


def _home_dirs() -> list[str]:
    """The host directories ``hide_home`` covers: /home, /root, ``$HOME`` and the caller's
    home from the password database, resolved, without the ones inside another.

    A directory the caller may neither read nor search is left alone (one
    tmpfs less per spawn): the payload's ids map to the caller's or to ids
    with no more rights than "others" on host-owned directories.
    """
    cands = ["/home", "/root"]
    for home in (os.environ.get("HOME"), _pw_home()):
        if home and home.startswith("/"):
            cands.append(home)
    found: list[str] = []
    for c in cands:
        real = os.path.realpath(c)
        if not os.path.isdir(real):
            continue
        if not os.access(real, os.R_OK) and not os.access(real, os.X_OK):
            continue  # closed to the caller (/root of a rootless one): closed to its payload
        odd = c not in ("/home", "/root")  # an odd $HOME must not hide a system directory
        if odd and (real.count("/") < 2 or real in _SYSTEM_DIRS):
            continue
        found.append(real)
    found.sort()
    out: list[str] = []
    for d in found:
        if not any(_under(d, o) for o in out):
            out.append(d)
    return out


def _pw_home() -> str | None:
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return None


def _private_run(size: int) -> list[Op]:
    """An empty tmpfs on /run (and on /var/run when that is not the same directory).

    The host /run's top-level symlinks are kept (NixOS's /run/current-system),
    and so is the file /etc/resolv.conf points to when it lies in /run (systemd-resolved):
    neither is a socket, and the sandbox still finds its programs and name servers.
    """
    run = os.path.realpath("/run")
    var_run = os.path.realpath("/var/run")
    ops: list[Op] = []
    if os.path.isdir(run):  # a host without /run (a minimal container) has nothing there
        ops.append(Tmpfs("/run", size=size, mode=0o755, pooled=True))
    if os.path.isdir(var_run) and not _under(var_run, run):
        ops.append(Tmpfs(var_run, size=size, mode=0o755, pooled=True))
    try:
        with os.scandir(run) as it:
            links = sorted(e.name for e in it if e.is_symlink())
    except OSError:
        links = []
    for name in links:
        with contextlib.suppress(OSError):  # gone meanwhile: nothing to keep
            ops.append(Symlink(os.readlink(os.path.join(run, name)), f"/run/{name}"))
    resolv = os.path.realpath("/etc/resolv.conf")
    if _under(resolv, run) and os.path.isfile(resolv):
        ops.append(Bind(resolv, resolv, readonly=True, nosuid=True, nodev=True, noexec=True))
    return ops


def _hidden_homes() -> list[Op]:
    return [Tmpfs(d, size=HOME_SIZE, mode=0o755, pooled=True) for d in _home_dirs()]


@attrs.frozen
class Changes:
    """Paths (as seen inside the sandbox) an overlay root's payload changed.

    Attributes:
        added: created paths (new directories and everything in them are listed).
        modified: paths that existed in a lower layer and were written, replaced
            by another type, or chmod'ed/chown'ed.
        deleted: paths of a lower layer that were removed (a removed directory is
            listed once, not its contents).
        truncated: the report stopped early: the payload wrote more than the
            walk's bounds (entries, path bytes, path length; see
            docs/rootfs.md), or part of the tree could not be read. Every
            listed path is a real change; some changes are missing.
        reason: why it is truncated ("" when it is not).
    """

    added: frozenset[str] = frozenset()
    modified: frozenset[str] = frozenset()
    deleted: frozenset[str] = frozenset()
    truncated: bool = False
    reason: str = ""

    def __bool__(self) -> bool:
        return bool(self.added or self.modified or self.deleted or self.truncated)

    def all(self) -> frozenset[str]:
        """Every changed path."""
        return self.added | self.modified | self.deleted


@attrs.frozen
class RootFS:
    """The sandbox's root: an ordered mount plan executed before ``pivot_root``.

    The plan starts from an empty tmpfs as the new root; ops then mount or
    create things inside it, in order. Every destination is resolved inside
    the new root: symlinks in it cannot lead outside. Use the named
    constructors :meth:`host`, :meth:`from_directory`, :meth:`overlay`, or
    ``RootFS()`` for an empty root.

    Attributes:
        ops: the operations, in order.
        propagation: ``"private"`` (default: nothing propagates in or out) or
            ``"slave"`` (host mounts propagate into the sandbox, never back).
        readonly_root: remount the root mount read-only after the ops.
        hide_sockets: at every spawn, mask every path socket of the host
            that the root op (the bind or overlay of ``/``) would show and no
            later op covers (see :meth:`socket_masks`). :meth:`host` and
            :meth:`overlay` set it.
        make_dests: (the default) an op whose destination is missing below a
            read-only bind (the read-only host root of :meth:`host`) gets it
            made, as bwrap does on its tmpfs root: at spawn, the nearest
            existing directory above it becomes a small tmpfs holding a
            read-only bind (or a symlink) of each of the directory's entries
            and the new mount point, made read-only again once the plan has
            run (see :func:`expand_dests`). The host is never written. Off:
            such an op fails at spawn (``EROFS``).
    """

    ops: tuple[Op, ...] = attrs.field(default=(), converter=_ops)
    propagation: Propagation = attrs.field(default="private")
    readonly_root: bool = False
    hide_sockets: bool = False
    make_dests: bool = True

    @propagation.validator
    def _check_prop(self, _a: object, value: str) -> None:
        if value not in ("private", "slave"):
            raise SpecError(f"propagation must be 'private' or 'slave', got {value!r}")

    # ------------------------------------------------------ starting points
    @classmethod
    def host(
        cls,
        *,
        proc: bool = True,
        dev: bool = True,
        tmp: bool = True,
        tmp_size: int | None = DEFAULT_TMP_SIZE,
        shm_size: int = DEFAULT_SHM_SIZE,
        mask: bool = True,
        run: bool = True,
        run_size: int = RUN_SIZE,
        hide_home: bool = True,
        hide_sockets: bool = True,
    ) -> RootFS:
        """The host's ``/``, read-only and recursive, with a fresh /proc, a minimal
        /dev, a private writable /tmp and /run, and no home directories:
        "this machine, but read-only, without its daemons and secrets".

        A read-only bind does not stop ``connect()`` on a unix socket, so the
        host's daemons (``/run/docker.sock``, the D-Bus buses, agents) are
        hidden: ``/run`` is an empty tmpfs, and at spawn every other path
        socket the host lists in ``/proc/net/unix`` that the root shows is
        masked (``hide_sockets``). Expose one with :meth:`bind_socket`.
        See the "Unix sockets and home directories" section of docs/security.md.

        Args:
            proc: mount a new /proc (needs a new pid namespace).
            dev: mount a minimal /dev instead of the host's.
            tmp: mount a private tmpfs on /tmp.
            tmp_size: its size limit in bytes (default 256 MiB; None: the kernel's
                default, half of RAM, with no inode limit).
            shm_size: the size limit of /dev/shm in bytes (default 64 MiB).
            mask: apply the OCI/Docker masked and read-only paths.
            run: mount an empty tmpfs of ``run_size`` bytes on /run (and on
                /var/run when it is a directory of its own); the host /run's
                top-level symlinks and a /etc/resolv.conf that points into it
                are kept.
            run_size: the size of that tmpfs (default :data:`RUN_SIZE`, 1 MiB).
            hide_home: an empty writable tmpfs (:data:`HOME_SIZE`, 4 MiB) over
                /home, /root and the caller's home directory (``$HOME`` and its
                password-database entry, unless that is ``/``, a top-level or a
                system directory): ssh keys, tokens and credentials stay out of
                reach. Bind what the payload needs (a project directory)
                afterwards: the binds go on top.
            hide_sockets: mask the host's path sockets the root shows (see
                :meth:`socket_masks`).
        """
        ops: list[Op] = [Bind("/", "/", readonly=True, recursive=True)]
        if proc:
            ops.append(Proc())
        if dev:
            ops.append(Dev(shm_size=shm_size))
        if tmp:
            ops.append(Tmpfs("/tmp", size=tmp_size, mode=0o1777))
        if run:
            ops += _private_run(run_size)
        if hide_home:
            ops += _hidden_homes()
        root = cls(ops, hide_sockets=hide_sockets)
        return root.add_docker_masks(proc=proc) if mask else root

    @classmethod
    def from_directory(
        cls,
        path: str | os.PathLike[str],
        *,
        readonly: bool = True,
        proc: bool = True,
        dev: bool = True,
        tmp: bool = False,
    ) -> RootFS:
        """An unpacked root in ``path`` (busybox, debootstrap, an image), bound as ``/``.

        With ``readonly`` the bind is read-only at once: mount points for
        /proc, /dev (and /tmp) must already exist in ``path``; nscg never
        creates files in the caller's directory then.
        """
        src = _source(path)
        if not os.path.isdir(src):
            raise SpecError(f"root directory {src!r} is not a directory")
        ops: list[Op] = [Bind(src, "/", readonly=readonly, recursive=True)]
        if proc:
            ops.append(Proc())
        if dev:
            ops.append(Dev())
        if tmp:
            ops.append(Tmpfs("/tmp", mode=0o1777))
        return cls(ops)

    @classmethod
    def overlay(
        cls,
        lowers: Sequence[str | os.PathLike[str]] = ("/",),
        upper: str | os.PathLike[str] | None = None,
        *,
        proc: bool = True,
        dev: bool = True,
        run: bool | None = None,
        run_size: int = RUN_SIZE,
        hide_home: bool | None = None,
        hide_sockets: bool = True,
        upper_size: int | None = None,
        shm_size: int = DEFAULT_SHM_SIZE,
        idmap_lowers: bool | None = None,
    ) -> RootFS:
        """A copy-on-write root over ``lowers`` (top first; the host's ``/`` by default).

        With ``upper=None`` the writes go to scratch memory: a tmpfs of the
        sandbox's own, limited to ``upper_size`` bytes (default 1 GiB), that
        has no path on the host and is gone when the sandbox and its caller
        are. Otherwise they persist in ``upper`` (made if missing; it must not
        be visible in a lower). Either way ``Result.changes`` reports them
        (writes to the private /run and hidden homes are not: they are tmpfs).

        Note: an overlay layer does not cross mounts: submounts of a lower
        directory (say a separate /home) are not part of the root.

        Args:
            run, hide_home: as for :meth:`host`; None (the default): when the
                host's ``/`` is a lower layer (an image directory has no host
                daemons or homes, and a mount point made in it would show in
                ``Result.changes``).
            run_size, hide_sockets, shm_size: as for :meth:`host`.
            upper_size: the size limit of the scratch memory holding an
                ephemeral upper (default :data:`DEFAULT_UPPER_SIZE`, 1 GiB); the
                pooled mounts (/dev's 64 KiB, /run, hidden homes: see
                :class:`Tmpfs`) live there too and add their sizes to it.
            idmap_lowers: for a root caller whose sandbox maps its ids to an
                unprivileged host range (the default): True: the lowers are
                the sandbox's own, seen through idmapped mounts, so a lower
                file of uid N belongs to the sandbox's uid N (its root owns,
                reads and may modify the lower's root-owned files; the
                changes go to the upper, the lower is never written); False:
                the lowers' files keep their host owners (root-only host
                files stay unreadable, files of other users read-only). None
                (the default): True unless the host's ``/`` is a lower (an
                image directory is the sandbox's; the host's view is not).
                See "Overlay roots and host owners" in docs/security.md.
                Without effect for a rootless caller and with
                ``IdMap(0, 0, 1)`` (no ids to shift).

        Raises:
            UnsupportedError (at spawn): inside a user namespace the kernel must be >= 5.11;
                a lower that must be idmapped is on a filesystem or kernel that cannot
                (idmapped layers need Linux >= 5.19).
        """
        layers = tuple(os.fspath(x) for x in lowers)
        ops: list[Op] = [Overlay(layers, upper, size=upper_size, idmap=idmap_lowers)]
        if proc:
            ops.append(Proc())
        if dev:
            ops.append(Dev(shm_size=shm_size))
        host_root = any(os.path.realpath(x) == "/" for x in layers)
        if run if run is not None else host_root:
            ops += _private_run(run_size)
        if hide_home if hide_home is not None else host_root:
            ops += _hidden_homes()
        return cls(ops, hide_sockets=hide_sockets)

    @classmethod
    def image(
        cls,
        image: Image | str | os.PathLike[str],
        *,
        writable: bool = True,
        upper: str | os.PathLike[str] | None = None,
        store: Store | None = None,
        upper_size: int | None = None,
    ) -> RootFS:
        """The root of an OCI or Docker image: its layers as overlay lowers.

        The layers are unpacked once into ``store`` (default
        :class:`nscg.images.Store`, see docs/images.md) and stacked read-only,
        with no copy; the writes go to an ephemeral upper in scratch memory
        (``upper_size``, default 1 GiB) or to a persistent ``upper``
        directory; ``Result.changes`` reports them. A new /proc, a minimal
        /dev and a private /tmp are mounted on top.

        Args:
            image: an :class:`nscg.images.Image` or the path of one
                (:meth:`nscg.images.Image.open`).
            writable: False makes the root read-only.
            upper, upper_size: as for :meth:`overlay`.
            store: where layers are unpacked.

        Raises:
            nscg.images.ImageError: the image cannot be read, a blob does not match
                its digest, a layer is hostile.
        """
        from nscg.images._run import image_rootfs  # tarfile and gzip only when used

        return image_rootfs(image, writable=writable, upper=upper, store=store,
                            upper_size=upper_size)  # fmt: skip

    # ------------------------------------------------------------- builders
    def then(self, *ops: Op) -> RootFS:
        """Append operations."""
        return attrs.evolve(self, ops=(*self.ops, *ops))

    def bind(
        self,
        source: str | os.PathLike[str],
        dest: str | None = None,
        *,
        readonly: bool = False,
        recursive: bool = True,
        nosuid: bool = False,
        nodev: bool = False,
        noexec: bool = False,
        optional: bool = False,
    ) -> RootFS:
        """Bind a host path at ``dest`` (default: the same path), writable: bwrap's ``--bind``.

        Writable unless ``readonly=True`` (or use :meth:`ro_bind`). As root, a
        writable bind is an idmapped mount: the sandbox's ids map to the host
        owners (see docs/security.md). ``optional=True`` skips a missing
        ``source`` (bubblewrap's ``--bind-try``).
        """
        src = os.fspath(source)
        if optional and not os.path.lexists(src):
            return self
        return self.then(
            Bind(src, dest if dest is not None else src, readonly, recursive, nosuid, nodev, noexec)
        )

    def ro_bind(
        self,
        source: str | os.PathLike[str],
        dest: str | None = None,
        *,
        recursive: bool = True,
        nosuid: bool = False,
        nodev: bool = False,
        noexec: bool = False,
        optional: bool = False,
    ) -> RootFS:
        """Bind a host path read-only at ``dest`` (default: the same path): ``--ro-bind``."""
        return self.bind(
            source,
            dest,
            readonly=True,
            recursive=recursive,
            nosuid=nosuid,
            nodev=nodev,
            noexec=noexec,
            optional=optional,
        )

    def bind_socket(self, path: str | os.PathLike[str], dest: str | None = None) -> RootFS:
        """Expose one host unix socket, or a directory of them, to the sandbox.

        The opt-in to what :meth:`host` hides: binds ``path`` (its directories
        resolved on the host) at ``dest`` (default: ``path`` as given, so
        ``/var/run/docker.sock`` lands in the private /run). A socket is bound
        by its inode: if its daemon restarts and makes a new one, the sandbox
        keeps the dead one; bind the socket's directory for long-lived
        sandboxes, which exposes every socket in it. A read-only bind does not
        stop ``connect()``. The bind is nosuid, nodev, noexec.

        Raises:
            SpecError: ``path`` is not absolute, does not exist, or is neither
                a socket nor a directory.
        """
        src = os.fspath(path)
        if not isinstance(src, str) or not src.startswith("/") or "\0" in src:
            raise SpecError(f"bind_socket needs an absolute path, got {path!r}")
        real = os.path.realpath(src)
        try:
            st = os.stat(real)
        except OSError as e:
            raise SpecError(f"bind_socket: {src!r}: {e.strerror}") from None
        if not (stat.S_ISSOCK(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise SpecError(f"bind_socket: {src!r} is neither a unix socket nor a directory")
        return self.then(
            Bind(real, dest if dest is not None else src, nosuid=True, nodev=True, noexec=True)
        )

    def tmpfs(
        self,
        dest: str,
        *,
        size: int | None = None,
        mode: int = 0o755,
        readonly: bool = False,
        noexec: bool = False,
    ) -> RootFS:
        """Mount a fresh tmpfs (nosuid, nodev) at ``dest``."""
        return self.then(Tmpfs(dest, size=size, mode=mode, readonly=readonly, noexec=noexec))

    def proc(self, dest: str = "/proc") -> RootFS:
        """Mount a new procfs at ``dest`` (needs a new pid namespace)."""
        return self.then(Proc(dest))

    def dev(self, dest: str = "/dev", *, shm_size: int = DEFAULT_SHM_SIZE) -> RootFS:
        """Mount a minimal /dev at ``dest`` (its /dev/shm limited to ``shm_size`` bytes)."""
        return self.then(Dev(dest, shm_size))

    def mqueue(self, dest: str = "/dev/mqueue") -> RootFS:
        """Mount an mqueue filesystem at ``dest`` (needs a new ipc namespace)."""
        return self.then(Mqueue(dest))

    def with_proc(self, dest: str = "/proc") -> RootFS:
        """Deprecated name of :meth:`proc` (it appends: verbs append, ``with_x`` replaces)."""
        _renamed("RootFS.with_proc", "RootFS.proc")
        return self.proc(dest)

    def with_dev(self, dest: str = "/dev", *, shm_size: int = DEFAULT_SHM_SIZE) -> RootFS:
        """Deprecated name of :meth:`dev`."""
        _renamed("RootFS.with_dev", "RootFS.dev")
        return self.dev(dest, shm_size=shm_size)

    def with_mqueue(self, dest: str = "/dev/mqueue") -> RootFS:
        """Deprecated name of :meth:`mqueue`."""
        _renamed("RootFS.with_mqueue", "RootFS.mqueue")
        return self.mqueue(dest)

    def mount(
        self,
        fstype: str,
        dest: str,
        *,
        source: str | None = None,
        options: Mapping[str, str | None] | Iterable[tuple[str, str | None]] = (),
        readonly: bool = False,
    ) -> RootFS:
        """Mount any filesystem type with fsconfig(2) options (``{"size": "1m"}``)."""
        return self.then(Mount(fstype, dest, source, _options(options), readonly))

    def mkdir(self, dest: str, mode: int = 0o755) -> RootFS:
        """Create a directory (and its parents)."""
        return self.then(Mkdir(dest, mode))

    def symlink(self, target: str, dest: str) -> RootFS:
        """Create a symlink ``dest`` pointing to ``target``."""
        return self.then(Symlink(target, dest))

    def file(self, dest: str, content: bytes | str, mode: int = 0o644) -> RootFS:
        """Create a file with ``content`` (its directory must be writable: a tmpfs)."""
        return self.then(File(dest, content, mode))

    def readonly(self, *dests: str, recursive: bool = True) -> RootFS:
        """Make these paths read-only (missing ones are skipped); see :class:`ReadOnly`."""
        return self.then(*(ReadOnly(d, recursive=recursive) for d in dests))

    def chmod(self, dest: str, mode: int) -> RootFS:
        """Set the mode of ``dest`` (it must exist by then): bwrap's ``--chmod``."""
        return self.then(Chmod(dest, mode))

    def bind_data(
        self, dest: str, content: bytes | str, *, mode: int = 0o600, readonly: bool = False
    ) -> RootFS:
        """Bind a file holding ``content`` at ``dest`` (bwrap's ``--bind-data``): :class:`Data`."""
        return self.then(Data(dest, content, mode, readonly))

    def mask(self, *dests: str) -> RootFS:
        """Hide these paths (missing ones are skipped)."""
        return self.then(*(Mask(d) for d in dests))

    def add_docker_masks(self, *, proc: bool = True) -> RootFS:
        """Append the OCI/Docker masked and read-only path lists (``proc=False``: not /proc's)."""
        paths = [p for p in DOCKER_MASKED_PATHS if proc or not p.startswith("/proc/")]
        ro = [p for p in DOCKER_READONLY_PATHS if proc or not p.startswith("/proc/")]
        return self.mask(*paths).readonly(*ro)

    def with_docker_masks(self, *, proc: bool = True) -> RootFS:
        """Deprecated name of :meth:`add_docker_masks`."""
        _renamed("RootFS.with_docker_masks", "RootFS.add_docker_masks")
        return self.add_docker_masks(proc=proc)

    def with_made_dests(self, on: bool = True) -> RootFS:
        """Whether missing destinations below a read-only bind are made (see ``make_dests``)."""
        return attrs.evolve(self, make_dests=on)

    def with_readonly_root(self, on: bool = True) -> RootFS:
        """Make the root mount itself read-only once the plan has run."""
        return attrs.evolve(self, readonly_root=on)

    def with_hidden_sockets(self, on: bool = True) -> RootFS:
        """Mask, at spawn, the host's path sockets the root shows (see :meth:`socket_masks`)."""
        return attrs.evolve(self, hide_sockets=on)

    def with_propagation(self, propagation: Propagation) -> RootFS:
        """``"private"`` (default) or ``"slave"`` mount propagation from the host."""
        return attrs.evolve(self, propagation=propagation)

    # -------------------------------------------------------------- queries
    def needs_proc(self) -> bool:
        """Whether the plan mounts a procfs."""
        return any(isinstance(op, Proc) for op in self.ops)

    def needs_ipc(self) -> bool:
        """Whether the plan mounts an mqueue filesystem."""
        return any(isinstance(op, Mqueue) for op in self.ops)

    def overlays(self) -> tuple[Overlay, ...]:
        """The overlay ops of the plan."""
        return tuple(op for op in self.ops if isinstance(op, Overlay))

    def host_paths(self, path: str) -> list[str] | None:
        """Where the sandbox path ``path`` comes from on the host, top layer first.

        None when the plan does not say (a tmpfs or another filesystem is
        mounted there, or a link/file op makes it): the caller cannot check.
        """
        for op in reversed(self.ops):
            d = op.dest.rstrip("/")
            if not isinstance(op, _MOUNTS) or not (path == op.dest or path.startswith(d + "/")):
                continue
            rest = path[len(d) :].lstrip("/")
            if isinstance(op, Bind):
                return [os.path.join(op.source, rest) if rest else op.source]
            if isinstance(op, Overlay):
                layers = [*([op.upper] if op.upper else []), *op.lowers]
                return [os.path.join(x, rest) if rest else x for x in layers]
            return None
        return None

    def socket_masks(self, listed: Sequence[str] | None = None) -> tuple[str, ...]:
        """The sandbox paths of the host's path sockets that ``hide_sockets`` masks now.

        Reads ``/proc/net/unix`` (each call: sockets come and go), unless
        ``listed`` gives what it listed (:func:`host_socket_paths`). A socket
        is masked when the plan's root op (the last bind or overlay of ``/``)
        shows it and no later mount covers its path: a tmpfs hides it anyway,
        and a later bind (:meth:`bind_socket`, or any bind of a directory
        holding sockets) is the caller's choice to show it. Only paths that
        are sockets on the host now are masked; empty when ``hide_sockets``
        is off or the root is not a bind or overlay.

        Raises:
            UnsupportedError: ``/proc/net/unix`` cannot be read.
        """
        if not self.hide_sockets:
            return ()
        at = next(
            (i for i in range(len(self.ops) - 1, -1, -1)
             if self.ops[i].dest == "/" and isinstance(self.ops[i], _MOUNTS)),
            None,
        )  # fmt: skip
        if at is None:
            return ()
        top = self.ops[at]
        if isinstance(top, Bind):
            sources = [os.path.realpath(top.source)]
        elif isinstance(top, Overlay):
            sources = [os.path.realpath(x) for x in top.lowers]
        else:
            return ()
        if listed is None:
            listed = host_socket_paths()
        if not listed:
            return ()
        exact: set[str] = set()
        for op in self.ops[at + 1 :]:
            if isinstance(op, _MOUNTS):
                exact |= {op.dest, _real(op.dest)}
        # a later mount covers a path equal to or under its destination
        prefixes = tuple(d.rstrip("/") + "/" for d in exact)
        real_dirs: dict[str, str] = {}
        out: set[str] = set()
        for raw in listed:
            if raw in exact or raw.startswith(prefixes):
                continue  # a tmpfs or bind over it: no need to resolve anything
            head, tail = os.path.split(raw)
            if head not in real_dirs:
                real_dirs[head] = os.path.realpath(head)
            real = os.path.join(real_dirs[head], tail)
            if real in exact or real.startswith(prefixes):
                continue
            try:
                if not stat.S_ISSOCK(os.lstat(real).st_mode):
                    continue  # gone, or not a socket in our view: nothing to hide
            except OSError:
                continue
            for src in sources:
                if src == "/":
                    out.add(real)
                    break
                if real.startswith(src + "/"):
                    out.add(real[len(src) :])
                    break
        return tuple(sorted(out))

    def add_socket_masks(self, masks: Sequence[str] | None = None) -> RootFS:
        """This plan with a :class:`Mask` appended for each of :meth:`socket_masks`.

        nscg calls it at spawn; the masks come after every op, so they apply
        to what the whole plan shows. ``masks``: the result of
        :meth:`socket_masks` if already known.
        """
        if masks is None:
            masks = self.socket_masks()
        return self.then(*(Mask(p) for p in masks)) if masks else self

    def with_socket_masks(self, masks: Sequence[str] | None = None) -> RootFS:
        """Deprecated name of :meth:`add_socket_masks`."""
        _renamed("RootFS.with_socket_masks", "RootFS.add_socket_masks")
        return self.add_socket_masks(masks)

    def exec_roots(self) -> list[str]:
        """Host directories holding the root's own content (binds or layers of ``/``)."""
        for op in reversed(self.ops):
            if op.dest != "/":
                continue
            if isinstance(op, Bind):
                return [op.source]
            if isinstance(op, Overlay):
                return [*([op.upper] if op.upper else []), *op.lowers]
            if isinstance(op, _MOUNTS):
                return []
        return []


def _opts(
    options: Mapping[str, str | None] | Iterable[tuple[str, str | None]],
) -> list[tuple[str, str | None]]:
    items = list(options.items() if isinstance(options, Mapping) else options)
    for k, v in items:
        if not isinstance(k, str) or not k or "\0" in k or (v is not None and "\0" in v):
            raise SpecError(f"invalid mount option {k!r}={v!r}")
    return items


# ------------------------------------------------------- missing destinations
#: Size of the tmpfs that holds the mount points :func:`expand_dests` makes.
DESTS_SIZE: Final = 1 << 20
#: At most this many entries in a directory :func:`expand_dests` rebuilds.
DESTS_MAX_ENTRIES: Final = 4096
#: ops whose destination must exist or be made (the rest skip a missing one or fail)
_MADE = (*_MOUNTS, Mkdir, Symlink, File)


def _contains(top: str, path: str) -> bool:
    return top in ("/", path) or path.startswith(top + "/")


def expand_dests(root: RootFS) -> tuple[RootFS, list[int]]:
    """``root`` with the missing destinations below its read-only binds made; what each op is.

    An op that mounts or creates something at a path that does not exist
    below a read-only :class:`Bind` (``RootFS.host()``'s ``/``) would fail
    with ``EROFS``: the child cannot make the mount point. bwrap builds its
    root on a tmpfs, where any path can be made. Here the nearest existing
    directory ``A`` above the missing path becomes such a tmpfs, in the
    plan, right where the bind that shows ``A`` comes (replacing it when it
    binds ``A`` itself): a :class:`Tmpfs` at ``A`` with ``A``'s mode, then a
    read-only bind (with the bind's flags) of each entry of ``A`` on the host,
    or the same symlink, then the rest of the plan, which makes the missing
    path in the tmpfs; a non-recursive :class:`ReadOnly` of ``A`` ends the
    plan. The sandbox sees what it saw, plus the new path; the host is not
    written. The entries are listed now (at spawn): entries made on the host
    later are not seen at ``A`` (their directories' contents are: they are
    bound). One bind per entry: a directory with more than
    :data:`DESTS_MAX_ENTRIES` entries is refused (make the path on the host).

    Nothing changes when ``root.make_dests`` is off, and for paths that exist,
    that lie on a writable mount (a tmpfs, an overlay, a writable bind: made
    there, as before), or that cannot be made (a file or a symlink on the way:
    the child reports it).

    Returns:
        the plan, and for each of its ops the index of the op of ``root`` it
        stands for (the bind a tmpfs and its binds replace or extend).

    Raises:
        UnsupportedError: a directory to rebuild has too many entries.
    """
    ops = list(root.ops)
    origin = list(range(len(ops)))
    if not root.make_dests:
        return root, origin
    tail: list[tuple[Op, int]] = []
    i = 0
    while i < len(ops):
        op = ops[i]
        found = _missing_below_readonly(ops, i) if isinstance(op, _MADE) else None
        if found is None:
            i += 1
            continue
        if len(tail) >= DESTS_MAX_ENTRIES:  # (each round makes one; a loop is a bug)
            raise UnsupportedError(f"too many mount points to make ({describe(op)})")
        j, a, host_a = found
        m = ops[j]
        assert isinstance(m, Bind)
        # entries a later op mounts or creates at exactly: theirs to make
        later = {o.dest for o in ops[j + 1 :] if isinstance(o, (*_MOUNTS, Symlink, File))}
        made = _rebuild(a, host_a, m, later)
        if m.dest == a:
            ops[j : j + 1] = made
            origin[j : j + 1] = [origin[j]] * len(made)
        else:
            ops[j + 1 : j + 1] = made
            origin[j + 1 : j + 1] = [origin[j]] * len(made)
        tail.append((ReadOnly(a, optional=False, recursive=False), origin[j]))
        i = j  # look again from there: the op now finds the tmpfs
    if not tail:
        return root, origin
    ops += [t for t, _ in tail]
    origin += [k for _, k in tail]
    return attrs.evolve(root, ops=tuple(ops)), origin


def _missing_below_readonly(ops: list[Op], i: int) -> tuple[int, str, str] | None:
    """(index of the read-only bind, the directory A to rebuild, its host path) when op
    ``i``'s destination must be made below a read-only bind, else None."""
    op = ops[i]
    p = op.dest
    if p == "/":
        return None
    if isinstance(op, Bind) and op.optional and not os.path.lexists(op.source):
        return None  # (skipped by the child)
    j = next(
        (k for k in range(i - 1, -1, -1)
         if isinstance(ops[k], _MOUNTS) and _contains(ops[k].dest, p)),
        None,
    )  # fmt: skip
    if j is None:
        return None
    m = ops[j]
    if not isinstance(m, Bind) or not m.readonly or m.dest == p:
        return None
    rest = p[len(m.dest) :].strip("/") if m.dest != "/" else p.strip("/")
    names = rest.split("/")
    a_names: list[str] = []
    cur = m.source
    replace = isinstance(op, (Symlink, File))  # they replace an existing entry
    for k, name in enumerate(names):
        nxt = os.path.join(cur, name)
        try:
            st = os.lstat(nxt)
        except FileNotFoundError:
            break
        except OSError:
            return None  # cannot tell: the child says what it finds
        if k == len(names) - 1:
            if not replace:
                return None  # it exists: a mount point, or a directory to make
            break
        if not stat.S_ISDIR(st.st_mode):
            return None  # a symlink or a file on the way: not ours to rebuild
        cur = nxt
        a_names.append(name)
    a = "/" + "/".join(filter(None, [m.dest.strip("/"), *a_names]))
    return j, a, cur


def _rebuild(a: str, host_a: str, m: Bind, later: set[str]) -> list[Op]:
    """A tmpfs at ``a`` showing what the read-only bind ``m`` showed there (see expand_dests)."""
    try:
        mode = stat.S_IMODE(os.stat(host_a).st_mode)
        with os.scandir(host_a) as it:
            entries = sorted((e.name, e.is_symlink()) for e in it)
    except OSError as e:
        raise UnsupportedError(
            f"cannot make a mount point below {a}: cannot list {host_a} ({e.strerror})",
            feature="rootfs.make_dests",
        ) from None
    if len(entries) > DESTS_MAX_ENTRIES:
        raise UnsupportedError(
            f"cannot make a mount point below {a}: {host_a} has {len(entries)} entries "
            f"(at most {DESTS_MAX_ENTRIES} are rebuilt, one bind each); make the missing "
            "path on the host, or mount a tmpfs at its parent first",
            feature="rootfs.make_dests",
        )
    base = a.rstrip("/")
    out: list[Op] = [Tmpfs(a, size=DESTS_SIZE, mode=mode)]
    for name, link in entries:
        dest = f"{base}/{name}"
        if dest in later:
            continue
        src = os.path.join(host_a, name)
        # (an entry gone meanwhile has nothing to show)
        with contextlib.suppress(OSError, SpecError):
            if link:
                out.append(Symlink(os.readlink(src), dest))
            else:
                out.append(
                    Bind(src, dest, readonly=True, recursive=m.recursive,
                         nosuid=m.nosuid, nodev=m.nodev, noexec=m.noexec, optional=True)
                )  # fmt: skip
    return out


# ---------------------------------------------------------------- flattening
class Prim(NamedTuple):
    """One primitive op for the child (``struct nscg_mount_op``)."""

    kind: str  # bind fs mkdir symlink file readonly mask
    dest: str  # relative to the new root, "" = the root
    flags: frozenset[str] = frozenset()
    source: bytes | None = None
    fstype: str | None = None
    options: tuple[tuple[str, str | None], ...] = ()
    mode: int = 0
    op_index: int = -1
    label: str = ""


def _rel(dest: str) -> str:
    return dest.lstrip("/")


def _flags(**kw: bool) -> frozenset[str]:
    return frozenset(k for k, v in kw.items() if v)


#: the longest string value fsconfig(2) takes (``strndup_user(value, 256)``)
FSCONFIG_MAX_STRING = 255


def lowerdir_options(lowers: Sequence[str]) -> tuple[tuple[str, str | None], ...]:
    """An overlay's lower directories as fsconfig options, top first.

    One ``lowerdir`` while the joined list fits in an fsconfig string
    (:data:`FSCONFIG_MAX_STRING` bytes); beyond, one ``lowerdir+`` per lower
    (Linux >= 6.8), as the many layers of an image need.
    """
    joined = ":".join(lowers)
    if len(os.fsencode(joined)) <= FSCONFIG_MAX_STRING:
        return (("lowerdir", joined),)
    for lo in lowers:
        if len(os.fsencode(lo)) > FSCONFIG_MAX_STRING:
            raise SpecError(
                f"overlay lower {lo!r} is longer than {FSCONFIG_MAX_STRING} bytes, "
                "more than fsconfig(2) takes"
            )
    return tuple(("lowerdir+", lo) for lo in lowers)


def flatten(root: RootFS, userns: bool) -> list[Prim]:
    """Expand the plan into the child's primitives.

    Every overlay must have its upper and work directories set by now.

    Args:
        userns: whether the mounts happen inside a new user namespace.
    """
    out: list[Prim] = []
    for i, op in enumerate(root.ops):
        label = describe(op)

        def add(kind: str, dest: str, _i: int = i, _l: str = label, **kw: Any) -> None:
            out.append(Prim(kind, _rel(dest), op_index=_i, label=_l, **kw))

        if isinstance(op, Bind):
            # both create flags: a missing mount point is made like the
            # source, a directory or a file, as the child finds it (mount.c)
            add(
                "bind",
                op.dest,
                source=os.fsencode(op.source),
                flags=_flags(
                    rdonly=op.readonly,
                    recursive=op.recursive,
                    nosuid=op.nosuid,
                    nodev=op.nodev,
                    noexec=op.noexec,
                    optional=op.optional,
                    create_dir=True,
                    create_file=True,
                ),
            )
        elif isinstance(op, Tmpfs):
            opts: list[tuple[str, str | None]] = [("mode", f"{op.mode:o}")]
            if op.size is not None:
                opts.append(("size", str(op.size)))
                opts.append(("nr_inodes", str(inodes_for(op.size))))
            add(
                "fs",
                op.dest,
                fstype="tmpfs",
                source=b"tmpfs",
                options=tuple(opts),
                flags=_flags(
                    rdonly=op.readonly,
                    nosuid=op.nosuid,
                    nodev=op.nodev,
                    noexec=op.noexec,
                    create_dir=True,
                ),
            )
        elif isinstance(op, (Proc, Mqueue)):
            fstype = "proc" if isinstance(op, Proc) else "mqueue"
            add(
                "fs",
                op.dest,
                fstype=fstype,
                source=fstype.encode(),
                flags=_flags(nosuid=True, nodev=True, noexec=True, create_dir=True),
            )
        elif isinstance(op, Mount):
            add(
                "fs",
                op.dest,
                fstype=op.fstype,
                source=None if op.source is None else os.fsencode(op.source),
                options=op.options,
                flags=_flags(
                    rdonly=op.readonly,
                    nosuid=op.nosuid,
                    nodev=op.nodev,
                    noexec=op.noexec,
                    create_dir=True,
                ),
            )
        elif isinstance(op, Dev):
            d = op.dest
            add(
                "fs",
                d,
                fstype="tmpfs",
                source=b"tmpfs",
                options=(("mode", "755"), ("size", str(_DEV_SIZE))),
                flags=_flags(nosuid=True, noexec=True, create_dir=True),
            )
            for n in DEV_NODES:
                add(
                    "bind",
                    f"{d}/{n}",
                    source=f"/dev/{n}".encode(),
                    flags=_flags(nosuid=True, noexec=True, create_file=True, optional=True),
                )
            add(
                "fs",
                f"{d}/pts",
                fstype="devpts",
                source=b"devpts",
                options=(("newinstance", None), ("ptmxmode", "0666"), ("mode", "620")),
                flags=_flags(nosuid=True, noexec=True, create_dir=True),
            )
            add("symlink", f"{d}/ptmx", source=b"pts/ptmx")
            add(
                "fs",
                f"{d}/shm",
                fstype="tmpfs",
                source=b"shm",
                options=(
                    ("mode", "1777"),
                    ("size", str(op.shm_size)),
                    ("nr_inodes", str(inodes_for(op.shm_size))),
                ),
                flags=_flags(nosuid=True, nodev=True, create_dir=True),
            )
            add("symlink", f"{d}/fd", source=b"/proc/self/fd")
            for k, name in enumerate(("stdin", "stdout", "stderr")):
                add("symlink", f"{d}/{name}", source=f"/proc/self/fd/{k}".encode())
        elif isinstance(op, Overlay):
            upper, work = op.upper or "", op.work or ""
            ov: list[tuple[str, str | None]] = [
                *lowerdir_options(op.lowers),
                ("upperdir", upper),
                ("workdir", work),
            ]
            if userns:
                ov.append(("userxattr", None))
            add(
                "fs",
                op.dest,
                fstype="overlay",
                source=b"overlay",
                options=tuple(ov),
                flags=_flags(create_dir=True),
            )
        elif isinstance(op, Mkdir):
            add("mkdir", op.dest, mode=op.mode)
        elif isinstance(op, Symlink):
            add("symlink", op.dest, source=os.fsencode(op.target))
        elif isinstance(op, File):
            add("file", op.dest, source=op.content, mode=op.mode)
        elif isinstance(op, ReadOnly):
            add("readonly", op.dest, flags=_flags(recursive=op.recursive, optional=op.optional))
        elif isinstance(op, Chmod):
            add("chmod", op.dest, mode=op.mode)
        elif isinstance(op, Data):
            # (RootfsRun makes it in the scratch memory and attaches it; this
            # stand-in only names the op)
            add("file", op.dest, source=op.content, mode=op.mode)
        elif isinstance(op, Mask):
            add("mask", op.dest)
    return out


# ------------------------------------------------------------ change report
def compute_changes(
    upper: str,
    lowers: Sequence[str],
    dest: str = "/",
    *,
    opaque: Sequence[str] = (_tree.OPAQUE_TRUSTED, _tree.OPAQUE_USER),
) -> Changes:
    """The change report of an overlay from its upper directory.

    A whiteout (a 0/0 character device) is a deletion of what the lowers had;
    an opaque directory deletes what the lowers had in it and the upper
    lacks; anything else is added (not in the merged lowers) or modified (in
    them, as a non-directory, as another type, or as a directory with another
    mode or owner). Directories that were only copied up because something in
    them changed are not listed. The lowers are looked up as overlayfs does
    (never through a symlink of the lower, whiteouts and opaque directories
    of the lowers honoured); the walk never follows a symlink and is bounded
    (see ``Changes.truncated``).

    Args:
        upper: the upper directory (the caller's path is trusted; nothing below it is).
        lowers: the lower directories, top first.
        dest: where the overlay was mounted in the sandbox (the reported paths' prefix).
        opaque: the xattr names that mark an opaque directory.
    """
    rep = _tree.Report()
    fds: list[int | None] = []
    try:
        ufd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fds.append(ufd)
        for lo in lowers:
            try:
                fds.append(os.open(lo, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            except OSError:
                fds.append(None)
        _tree.walk_changes(ufd, fds[1:], dest.rstrip("/"), rep, opaque=opaque)
    finally:
        for fd in fds:
            if fd is not None:
                os.close(fd)
    return changes_of(rep)


def changes_of(rep: _tree.Report) -> Changes:
    """A :class:`Changes` from a walk's report."""
    return Changes(
        frozenset(rep.added),
        frozenset(rep.modified),
        frozenset(rep.deleted),
        truncated=rep.truncated,
        reason=rep.reason,
    )

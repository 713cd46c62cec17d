"""Namespaces: which to create, which existing ones to join, and id maps."""

from __future__ import annotations

import contextlib
import enum
import itertools
import math
import os
import stat
from collections.abc import Iterable

import attrs

from nscg._native import lib
from nscg.errors import SpecError, SyscallError, UnsupportedError

__all__ = [
    "DEFAULT_ROOT_RANGE_START",
    "ROOT_RANGE_SIZE",
    "IdMap",
    "Namespace",
    "NamespaceRef",
    "RootRange",
    "TimeOffsets",
    "parse_subid",
    "root_range",
]


class Namespace(enum.IntFlag):
    """The kinds of Linux namespaces, with the kernel's ``CLONE_NEW*`` values.

    Combine them with ``|``; ``Namespace.ALL`` is every kind but ``TIME``
    (a time namespace only makes sense with offsets).
    """

    NONE = 0
    USER = lib.NSCG_CLONE_NEWUSER
    PID = lib.NSCG_CLONE_NEWPID
    MOUNT = lib.NSCG_CLONE_NEWNS
    NET = lib.NSCG_CLONE_NEWNET
    UTS = lib.NSCG_CLONE_NEWUTS
    IPC = lib.NSCG_CLONE_NEWIPC
    CGROUP = lib.NSCG_CLONE_NEWCGROUP
    TIME = lib.NSCG_CLONE_NEWTIME
    ALL = USER | PID | MOUNT | NET | UTS | IPC | CGROUP

    @property
    def proc_name(self) -> str:
        """The name of this (single) kind under ``/proc/PID/ns/``."""
        return _PROC_NAMES[Namespace(self)]

    @classmethod
    def parse(cls, value: str | int | Namespace | Iterable[str | Namespace]) -> Namespace:
        """Parse ``"user,pid"``, ``["net", Namespace.UTS]``, an int or a Namespace.

        Raises:
            SpecError: an unknown namespace name or bit.
        """
        if isinstance(value, Namespace):
            return value
        if isinstance(value, int):
            known = sum(int(m) for m in _PROC_NAMES)
            if value & ~known:
                raise SpecError(f"unknown namespace bits {value & ~known:#x}")
            return cls(value)
        items = value.split(",") if isinstance(value, str) else list(value)
        out = cls.NONE
        for item in items:
            if isinstance(item, Namespace):
                out |= item
                continue
            name = item.strip().lower()
            if not name:
                continue
            try:
                out |= _BY_NAME[name]
            except KeyError:
                raise SpecError(
                    f"unknown namespace {item!r}; known: {', '.join(sorted(_BY_NAME))}"
                ) from None
        return out

    def kinds(self) -> list[Namespace]:
        """The single kinds in this set, in the order they are joined."""
        return [k for k in JOIN_ORDER if self & k]


_PROC_NAMES: dict[Namespace, str] = {
    Namespace.USER: "user",
    Namespace.PID: "pid",
    Namespace.MOUNT: "mnt",
    Namespace.NET: "net",
    Namespace.UTS: "uts",
    Namespace.IPC: "ipc",
    Namespace.CGROUP: "cgroup",
    Namespace.TIME: "time",
}
_BY_NAME: dict[str, Namespace] = {
    "user": Namespace.USER,
    "pid": Namespace.PID,
    "mount": Namespace.MOUNT,
    "mnt": Namespace.MOUNT,
    "net": Namespace.NET,
    "network": Namespace.NET,
    "uts": Namespace.UTS,
    "ipc": Namespace.IPC,
    "cgroup": Namespace.CGROUP,
    "time": Namespace.TIME,
    "all": Namespace.ALL,
}
#: The order in which existing namespaces are joined (as nsenter(1) does):
#: the user namespace first, so that the others can be entered with its
#: capabilities; the mount namespace late, since it changes the root.
JOIN_ORDER: tuple[Namespace, ...] = (
    Namespace.USER,
    Namespace.CGROUP,
    Namespace.IPC,
    Namespace.UTS,
    Namespace.NET,
    Namespace.PID,
    Namespace.MOUNT,
    Namespace.TIME,
    Namespace.NONE,  # a root directory (NamespaceRef.root_of), entered last
)

_MAX_ID = 2**32 - 1


def _nonneg_id(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _MAX_ID:
        raise SpecError(f"{attribute.name} must be an integer in [0, 2**32-1), got {value!r}")


@attrs.frozen
class IdMap:
    """One line of a uid_map or gid_map: ``count`` ids from ``outside`` appear as ``inside``.

    Args:
        inside: the first id as seen inside the user namespace.
        outside: the first id as seen by the parent (the caller's namespace).
        count: how many consecutive ids are mapped.
    """

    inside: int = attrs.field(validator=_nonneg_id)
    outside: int = attrs.field(validator=_nonneg_id)
    count: int = attrs.field(default=1, validator=_nonneg_id)

    def __attrs_post_init__(self) -> None:
        if self.count < 1:
            raise SpecError("an id map range needs count >= 1")
        if self.inside + self.count > _MAX_ID or self.outside + self.count > _MAX_ID:
            raise SpecError(f"id map range {self} runs past 2**32-1")

    def line(self) -> str:
        """This range as a line of ``/proc/PID/uid_map``."""
        return f"{self.inside} {self.outside} {self.count}\n"

    def contains_inside(self, ident: int) -> bool:
        """Whether ``ident`` (as seen inside) is mapped by this range."""
        return self.inside <= ident < self.inside + self.count


def check_id_maps(maps: tuple[IdMap, ...], what: str) -> None:
    """Reject overlapping ranges (on either side) and too many lines.

    Raises:
        SpecError: the maps overlap or have more than 340 lines.
    """
    if len(maps) > 340:
        raise SpecError(f"{what}: at most 340 ranges are allowed, got {len(maps)}")
    for side in ("inside", "outside"):
        spans = sorted((getattr(m, side), getattr(m, side) + m.count) for m in maps)
        for (_a0, a1), (b0, _b1) in itertools.pairwise(spans):
            if b0 < a1:
                raise SpecError(f"{what}: ranges overlap on the {side} side ({spans})")


def _offset(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"time offset {attribute.name} must be a number of seconds")
    if not math.isfinite(value) or abs(value) > 2**40:
        raise SpecError(f"time offset {attribute.name}={value} is out of range")


@attrs.frozen
class TimeOffsets:
    """Offsets of a new time namespace, in seconds (may be negative).

    ``CLOCK_MONOTONIC`` and ``CLOCK_BOOTTIME`` inside the sandbox read the host's
    value plus these offsets. Needs Linux >= 5.6 (time namespaces).
    """

    monotonic: float = attrs.field(default=0.0, validator=_offset)
    boottime: float = attrs.field(default=0.0, validator=_offset)

    def text(self) -> str:
        """The offsets as written to ``/proc/PID/timens_offsets``."""
        out = []
        for name, value in (("monotonic", self.monotonic), ("boottime", self.boottime)):
            ns = round(value * 1e9)
            secs, nsec = divmod(ns, 1_000_000_000)
            out.append(f"{name} {secs} {nsec}\n")
        return "".join(out)


class NamespaceRef:
    """An open namespace (an fd on an ``nsfs`` file), to be joined at spawn.

    Open one with :meth:`of_pid`, :meth:`from_path` or :meth:`from_fd`. The
    reference owns its fd: close it (or use it as a context manager) when done.
    """

    __slots__ = ("_fd", "kind")

    def __init__(self, fd: int, kind: Namespace) -> None:
        self._fd = fd
        #: The kind of namespace.
        self.kind = kind

    @classmethod
    def of_pid(cls, pid: int, kind: Namespace | str) -> NamespaceRef:
        """Open namespace ``kind`` of process ``pid`` (``/proc/PID/ns/KIND``).

        For ``TIME`` and ``PID`` the namespace the process's *children* get is
        opened, which is the sandbox's own for a sandbox's init.

        Raises:
            SpecError: ``kind`` is not a single namespace kind.
            SyscallError: the file cannot be opened.
        """
        k = Namespace.parse(kind)
        if k not in _PROC_NAMES:
            raise SpecError(f"of_pid() takes a single namespace kind, got {k!r}")
        name = k.proc_name
        if k in (Namespace.TIME, Namespace.PID):
            name += "_for_children"
        return cls.from_path(f"/proc/{int(pid)}/ns/{name}", k)

    @classmethod
    def root_of(cls, pid: int) -> NamespaceRef:
        """Open the root directory of process ``pid`` (``/proc/PID/root``).

        Not a namespace (its kind is ``Namespace.NONE``): joined after the mount
        namespace, it puts the new process in the root the target pivoted into,
        as ``nsenter --root`` does.

        Raises:
            SyscallError: the directory cannot be opened.
        """
        path = f"/proc/{int(pid)}/root"
        try:
            fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise SyscallError(e.errno or 0, "open", path) from None
        return cls(fd, Namespace.NONE)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], kind: Namespace | str) -> NamespaceRef:
        """Open a namespace file (``/proc/PID/ns/net``, a bind-mounted ``/run/netns/x``).

        Raises:
            SyscallError: the file cannot be opened.
        """
        k = Namespace.parse(kind)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SyscallError(e.errno or 0, "open", os.fspath(path)) from None
        return cls(fd, k)

    @classmethod
    def from_fd(cls, fd: int, kind: Namespace | str) -> NamespaceRef:
        """Take a duplicate of an existing namespace fd (the caller keeps ``fd``).

        Raises:
            SyscallError: ``fd`` is not open.
        """
        k = Namespace.parse(kind)
        try:
            new = os.dup(fd)
        except OSError as e:
            raise SyscallError(e.errno or 0, "dup") from None
        return cls(new, k)

    def fileno(self) -> int:
        """The fd (-1 once closed)."""
        return self._fd

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._fd < 0

    def inode(self) -> tuple[int, int]:
        """The namespace's identity: (st_dev, st_ino) of its nsfs file."""
        st = os.fstat(self._fd)
        return (st.st_dev, st.st_ino)

    def is_current(self) -> bool:
        """Whether the calling process is already in this namespace."""
        if not self.kind:
            st = os.stat("/")
            return (st.st_dev, st.st_ino) == self.inode()
        name = self.kind.proc_name
        if self.kind in (Namespace.TIME, Namespace.PID):
            name += "_for_children"
        st = os.stat(f"/proc/self/ns/{name}")
        return (st.st_dev, st.st_ino) == self.inode()

    def close(self) -> None:
        """Close the fd. Idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> NamespaceRef:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<NamespaceRef {self.kind.name} fd={self._fd}>"

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)


def is_nsfs(fd: int) -> bool:
    """Whether ``fd`` looks like a namespace file (a regular, empty nsfs inode)."""
    st = os.fstat(fd)
    return stat.S_ISREG(st.st_mode) and st.st_size == 0


# ------------------------------------------- where a root caller's ids go
#: How many ids a root caller's sandbox gets by default: inside 0..65535.
ROOT_RANGE_SIZE = 65536
#: Where nscg looks for a free block of ids for a root caller's sandboxes when
#: /etc/subuid (/etc/subgid) gives root none: 2**31 - 2**24 (0x7f000000), far
#: above the ids distributions hand out to users (1000...60000), to
#: newuidmap ranges (100000...) and to systemd's dynamic users (61184...65519),
#: below systemd-nspawn's and systemd-homed's high ranges (0x80000000 up), and
#: a multiple of 65536 (as nspawn's and podman's blocks are).
DEFAULT_ROOT_RANGE_START = 2**31 - 2**24
#: The host files :func:`root_range` reads (tests point them elsewhere).
ID_FILES: dict[str, str] = {
    "subuid": "/etc/subuid",
    "subgid": "/etc/subgid",
    "passwd": "/etc/passwd",
    "group": "/etc/group",
}


def parse_subid(text: str) -> list[tuple[str, int, int]]:
    """The ``(owner, start, count)`` entries of an /etc/subuid or /etc/subgid text.

    Blank lines and ``#`` comments are skipped, and so are malformed lines
    (shadow-utils' newuidmap ignores them too).
    """
    out: list[tuple[str, int, int]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or not parts[0]:
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start < 0 or count <= 0 or start + count > 2**32 - 1:
            continue
        out.append((parts[0], start, count))
    return out


def _ids_in(path: str, field: int) -> set[int]:
    """The numeric ids in column ``field`` of a passwd/group style file."""
    out: set[int] = set()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(":")
                if len(parts) > field and parts[field].strip().isdigit():
                    out.add(int(parts[field]))
    except OSError:
        pass
    return out


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


@attrs.frozen
class RootRange:
    """The host ids a root caller's sandbox maps inside 0..count-1 to.

    Attributes:
        uid, gid: the first host uid and gid of the range.
        count: its size (:data:`ROOT_RANGE_SIZE`).
        uid_source, gid_source: where each came from: the file it was read from
            (``/etc/subuid``) or ``"default"`` (the fixed range, checked free).
    """

    uid: int
    gid: int
    count: int = ROOT_RANGE_SIZE
    uid_source: str = "default"
    gid_source: str = "default"

    def uid_map(self) -> tuple[IdMap, ...]:
        """The sandbox's uid map: inside 0.. to the host range."""
        return (IdMap(0, self.uid, self.count),)

    def gid_map(self) -> tuple[IdMap, ...]:
        """The sandbox's gid map: inside 0.. to the host range."""
        return (IdMap(0, self.gid, self.count),)


def _pick(kind: str, used_ids: set[int], names: tuple[str, ...]) -> tuple[int, str]:
    """The start of a root caller's range of ``kind`` ("subuid" or "subgid")."""
    path = ID_FILES[kind]
    text = _read_text(path)
    entries = parse_subid(text) if text is not None else []
    for owner, start, count in entries:
        if owner in names and count >= ROOT_RANGE_SIZE:
            return start, path
    # the fixed range: the first block of ROOT_RANGE_SIZE ids from
    # DEFAULT_ROOT_RANGE_START up that no account, group or other subid
    # range of the host uses
    taken = [(s, s + n) for _o, s, n in entries]
    for k in range(256):
        lo = DEFAULT_ROOT_RANGE_START + k * ROOT_RANGE_SIZE
        hi = lo + ROOT_RANGE_SIZE
        if any(i for i in used_ids if lo <= i < hi):
            continue
        if any(s < hi and lo < e for s, e in taken):
            continue
        return lo, "default"
    raise UnsupportedError(
        f"no free block of {ROOT_RANGE_SIZE} ids from {DEFAULT_ROOT_RANGE_START} up for a root "
        f"caller's sandboxes; give root one in {path} (root:START:65536)",
        feature="idmap.range",
    )


_root_range_cache: dict[tuple[str, ...], RootRange] = {}


def root_range() -> RootRange:
    """The host ids a root caller's sandboxes map their ids 0..65535 to.

    root's entry of /etc/subuid (/etc/subgid) if it has one of at least 65536
    ids (owner ``root`` or ``0``), as podman and LXC read it; otherwise the
    first block of 65536 ids from :data:`DEFAULT_ROOT_RANGE_START` up that no
    user of /etc/passwd (group of /etc/group) and no subuid (subgid) range of
    another user touches. Only these local files are checked, not NSS
    sources such as LDAP or systemd's dynamic users (which stay below 65536).
    Read once per process (per :data:`ID_FILES`).

    Raises:
        UnsupportedError: no free block.
    """
    key = tuple(ID_FILES[k] for k in ("subuid", "subgid", "passwd", "group"))
    hit = _root_range_cache.get(key)
    if hit is not None:
        return hit
    names = ("root", "0")
    uid, usrc = _pick("subuid", _ids_in(ID_FILES["passwd"], 2), names)
    gids = _ids_in(ID_FILES["group"], 2) | _ids_in(ID_FILES["passwd"], 3)
    gid, gsrc = _pick("subgid", gids, names)
    rr = RootRange(uid, gid, ROOT_RANGE_SIZE, usrc, gsrc)
    _root_range_cache[key] = rr
    return rr


def in_initial_userns() -> bool:
    """Whether this process lives in the initial user namespace (its uid map is the identity)."""
    text = _read_text("/proc/self/uid_map")
    return text is not None and text.split() == ["0", "0", "4294967295"]

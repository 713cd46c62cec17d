"""Private helpers for cgroup file systems: parsers, size parsing and file watching.

Everything here is pure logic over text, or thin wrappers around system calls;
the policy lives in the rest of :mod:`nscg.cgroups`.
"""

from __future__ import annotations

import errno
import os
import re
import select
import time
from collections.abc import Callable
from typing import Final, Literal

import attrs

from nscg.errors import SpecError

__all__ = [
    "V1_TO_V2",
    "CgroupLine",
    "MountEntry",
    "PressureLine",
    "format_limit",
    "parse_cgroup_file",
    "parse_flat_keyed",
    "parse_mountinfo",
    "parse_nested_keyed",
    "parse_pressure",
    "parse_proc_cgroups",
    "parse_size",
    "read_text",
    "wait_file",
]

#: cgroup v1 subsystem names mapped to the cgroup v2 controller that replaces them.
V1_TO_V2: Final[dict[str, str]] = {
    "cpu": "cpu",
    "cpuacct": "cpu",
    "cpuset": "cpuset",
    "memory": "memory",
    "blkio": "io",
    "pids": "pids",
    "hugetlb": "hugetlb",
    "rdma": "rdma",
    "misc": "misc",
    "perf_event": "perf_event",
    "freezer": "freezer",
    "devices": "devices",
    "net_cls": "net_cls",
    "net_prio": "net_prio",
}

_SIZE_RE: Final = re.compile(
    r"^\s*(-?)([0-9]+(?:\.[0-9]+)?)\s*([kmgtpe]?)(i?b?)\s*$", re.IGNORECASE
)
_SUFFIX: Final[dict[str, int]] = {
    "": 1,
    "k": 1 << 10,
    "m": 1 << 20,
    "g": 1 << 30,
    "t": 1 << 40,
    "p": 1 << 50,
    "e": 1 << 60,
}
_MAX_BYTES: Final = (1 << 63) - 1


def parse_size(value: int | str, *, what: str = "size") -> int | Literal["max"]:
    """Parse a byte count: an int, ``"max"``, or a string such as ``"256M"`` or ``"1.5G"``.

    Suffixes are binary (K = 1024); ``"KiB"``, ``"kb"`` and ``"k"`` mean the same.

    Args:
        value: the value to parse.
        what: the name used in error messages.

    Returns:
        The number of bytes, or the string ``"max"``.

    Raises:
        SpecError: the value is negative, too large or not understood.
    """
    if isinstance(value, bool):
        raise SpecError(f"{what}: expected a byte count or 'max', got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        if value.strip().lower() == "max":
            return "max"
        m = _SIZE_RE.match(value)
        if m is None:
            raise SpecError(
                f"{what}: cannot parse {value!r}; use an int, 'max', or a number "
                "with a K/M/G/T suffix such as '256M'"
            )
        sign, number, suffix, _ = m.groups()
        mult = _SUFFIX[suffix.lower()]
        n = int(float(number) * mult) if "." in number else int(number) * mult
        n = -n if sign else n
    else:
        raise SpecError(f"{what}: expected an int or a str, got {type(value).__name__}")
    if n < 0:  # the same words for -5 and "-5" (the CLI passes strings)
        raise SpecError(f"{what}: must not be negative, got {str(value).strip()}")
    if n > _MAX_BYTES:
        raise SpecError(f"{what}: {value!r} is larger than the kernel accepts")
    return n


def format_limit(value: int | str) -> str:
    """Render a limit value the way cgroup files take it (``"max"`` or decimal)."""
    return str(value)


# --------------------------------------------------------------------- /proc


@attrs.frozen
class MountEntry:
    """One line of ``/proc/PID/mountinfo`` (see proc(5))."""

    mount_id: int
    parent_id: int
    device: str
    root: str
    mount_point: str
    mount_options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse the text of ``/proc/PID/mountinfo``.

    Args:
        text: the file's content.

    Returns:
        The mounts in file order. Malformed lines are skipped.
    """
    out: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if sep < 6 or len(fields) < sep + 3:
            continue
        try:
            mount_id, parent_id = int(fields[0]), int(fields[1])
        except ValueError:
            continue
        out.append(
            MountEntry(
                mount_id=mount_id,
                parent_id=parent_id,
                device=fields[2],
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                mount_options=tuple(fields[5].split(",")),
                fstype=fields[sep + 1],
                source=_unescape(fields[sep + 2]),
                super_options=tuple(fields[sep + 3].split(",")) if len(fields) > sep + 3 else (),
            )
        )
    return out


@attrs.frozen
class CgroupLine:
    """One line of ``/proc/PID/cgroup``: ``hierarchy-id:controllers:path``."""

    hierarchy: int
    controllers: tuple[str, ...]
    path: str


def parse_cgroup_file(text: str) -> list[CgroupLine]:
    """Parse the text of ``/proc/PID/cgroup``.

    The cgroup v2 entry is the one with hierarchy 0 and no controllers (``0::/path``).

    Args:
        text: the file's content.

    Returns:
        One entry per line.
    """
    out: list[CgroupLine] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        try:
            hid = int(parts[0])
        except ValueError:
            continue
        ctrls = tuple(c for c in parts[1].split(",") if c)
        out.append(CgroupLine(hierarchy=hid, controllers=ctrls, path=parts[2]))
    return out


def parse_proc_cgroups(text: str) -> dict[str, tuple[int, bool]]:
    """Parse ``/proc/cgroups``: controller -> (v1 hierarchy id, enabled).

    A hierarchy id of 0 means the controller is not bound to a v1 hierarchy (it is
    free for cgroup v2, or unused).

    Args:
        text: the file's content.

    Returns:
        A dict keyed by controller name.
    """
    out: dict[str, tuple[int, bool]] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split()
        if len(fields) < 4:
            continue
        try:
            out[fields[0]] = (int(fields[1]), fields[3] == "1")
        except ValueError:
            continue
    return out


# ---------------------------------------------------------- cgroup v2 files


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Parse a flat-keyed cgroup file (``key value`` lines: memory.stat, cpu.stat, ...).

    Args:
        text: the file's content.

    Returns:
        key -> integer value; lines whose value is not an integer are skipped.
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            out[parts[0]] = int(parts[1])
        except ValueError:
            continue
    return out


def parse_nested_keyed(text: str) -> dict[str, dict[str, str]]:
    """Parse a nested-keyed cgroup file (``key sub=value sub=value`` lines: io.stat, io.max).

    Args:
        text: the file's content.

    Returns:
        key -> {sub-key -> value text}.
    """
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        sub: dict[str, str] = {}
        for item in parts[1:]:
            k, sep, v = item.partition("=")
            if sep:
                sub[k] = v
        out[parts[0]] = sub
    return out


@attrs.frozen
class PressureLine:
    """One line of a PSI file (``some`` or ``full``): averages in percent, total in µs."""

    avg10: float
    avg60: float
    avg300: float
    total_usec: int


def parse_pressure(text: str) -> dict[str, PressureLine]:
    """Parse a PSI pressure file (cpu.pressure, memory.pressure, io.pressure).

    Args:
        text: the file's content.

    Returns:
        ``"some"``/``"full"`` -> :class:`PressureLine`.
    """
    out: dict[str, PressureLine] = {}
    for kind, sub in parse_nested_keyed(text).items():
        try:
            out[kind] = PressureLine(
                avg10=float(sub["avg10"]),
                avg60=float(sub["avg60"]),
                avg300=float(sub["avg300"]),
                total_usec=int(sub["total"]),
            )
        except (KeyError, ValueError):
            continue
    return out


def read_text(path: str) -> str:
    """Read a (small) cgroup or proc file as text."""
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


# ---------------------------------------------------------------- waiting

_IN_MODIFY: Final = 0x00000002
_IN_CLOEXEC: Final = 0o2000000
_IN_NONBLOCK: Final = 0o4000


class _Inotify:
    """A minimal inotify instance (nscg's extension); none of it runs in a child."""

    def __init__(self) -> None:
        from nscg import _host

        self.fd: int = _host.inotify_init1(_IN_CLOEXEC | _IN_NONBLOCK)

    def watch(self, path: str, mask: int = _IN_MODIFY) -> None:
        from nscg import _host

        _host.inotify_add_watch(self.fd, path, mask)

    def drain(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def wait_file(
    path: str,
    predicate: Callable[[str], bool],
    timeout: float | None,
    *,
    recheck: float = 1.0,
) -> bool:
    """Wait until ``predicate(content of path)`` holds, woken by inotify IN_MODIFY.

    cgroup files such as ``cgroup.events`` and ``memory.events`` generate a
    modify event whenever a value changes. If inotify cannot be used, the file is
    polled for ``POLLPRI`` (kernfs notifies both). The file is also re-read every
    ``recheck`` seconds as a safety net; there is no busy loop.

    Args:
        path: the file to watch.
        predicate: called with the file's text; True ends the wait.
        timeout: seconds to wait at most; None waits forever, 0 checks once.

    Returns:
        True if the predicate held, False on timeout.

    Raises:
        FileNotFoundError: the file (or its cgroup) disappeared.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    ino: _Inotify | None = None
    pfd = -1
    poller = select.poll()
    try:
        try:
            ino = _Inotify()
            ino.watch(path)
            poller.register(ino.fd, select.POLLIN)
        except (OSError, AttributeError):
            if ino is not None:
                ino.close()
                ino = None
            pfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            poller.register(pfd, select.POLLPRI | select.POLLERR)
        while True:
            if predicate(read_text(path)):
                return True
            if deadline is None:
                wait = recheck
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                wait = min(left, recheck)
            poller.poll(max(1, int(wait * 1000)))
            if ino is not None:
                ino.drain()
            elif pfd >= 0:
                os.lseek(pfd, 0, os.SEEK_SET)
                try:
                    os.read(pfd, 4096)
                except OSError as e:
                    if e.errno != errno.ENODEV:
                        raise
    finally:
        if ino is not None:
            ino.close()
        if pfd >= 0:
            os.close(pfd)

"""cgroup v2: discover the host's layout, create a cgroup, set limits, watch and kill it.

:class:`CgroupV2` manages one cgroup for any process; it is usable on its own, and a
``Container`` uses it to place the sandbox (``CLONE_INTO_CGROUP`` with
:meth:`CgroupV2.open_fd`) and to report :class:`CgroupUsage`.

Only cgroup v2 is supported. On a hybrid host (cgroup v1 hierarchies hold cpu,
memory, pids, io) asking for a limit raises :class:`~nscg.errors.UnsupportedError`
that names the controllers v1 holds; nscg never runs a process without a limit
that was asked for.

Privileges: root, or a user owning a delegated subtree (systemd ``Delegate=yes``, or a
directory chowned to the user together with its ``cgroup.procs``,
``cgroup.subtree_control`` and ``cgroup.threads``). Kernel: 4.15+ for the basics,
5.2 for freeze, 5.7 for ``CLONE_INTO_CGROUP``, 5.14 for ``cgroup.kill`` (emulated
before), 5.19 for ``memory.peak``.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import itertools
import os
import re
import secrets
import signal
import stat
import time
import warnings
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Final, Literal, NoReturn, TypeVar

import attrs

from nscg._cgroupfs import (
    V1_TO_V2,
    PressureLine,
    parse_cgroup_file,
    parse_flat_keyed,
    parse_mountinfo,
    parse_nested_keyed,
    parse_pressure,
    parse_proc_cgroups,
    parse_size,
    read_text,
    wait_file,
)
from nscg.errors import SpecError, SyscallError, UnsupportedError

__all__ = [
    "CgroupEvents",
    "CgroupMode",
    "CgroupReport",
    "CgroupSpec",
    "CgroupV2",
    "CpuMax",
    "Delegation",
    "HugetlbLimit",
    "IoLimit",
    "Limits",
    "MemoryEvents",
    "Pressure",
    "PressureLine",
    "CgroupUsage",
    "check_delegation",
    "discover",
    "find_stale",
    "move_self_to_leaf",
    "parse_size",
    "remove_stale",
]

Bytes = int | Literal["max"]
"""A byte count, or ``"max"`` for no limit."""

DEFAULT_SUBTREE: Final = "nscg"
"""Name of the directory under the caller's own cgroup that holds nscg's cgroups."""

SELF_LEAF: Final = "nscg-self"
"""Leaf that :func:`move_self_to_leaf` moves the caller into; its parent stays the base."""

_NAME_RE: Final = re.compile(r"^nscg-([0-9]+)-([0-9]+)-([0-9a-f]+)$")
_counter = itertools.count(1)
_T = TypeVar("_T")

_DELEGATION_HINT: Final = (
    "delegate a cgroup subtree to this user: run under systemd with `Delegate=yes` "
    "(e.g. `systemd-run --user --scope -p Delegate=yes ...`), or as root chown the "
    "directory and its cgroup.procs, cgroup.subtree_control and cgroup.threads to the "
    "user, then pass it as parent="
)


# ====================================================================== discovery


class CgroupMode(enum.Enum):
    """How cgroups are laid out on this host."""

    #: Pure cgroup v2: every controller is available to the cgroup2 hierarchy.
    UNIFIED = "unified"
    #: cgroup2 is mounted, but cgroup v1 hierarchies hold some controllers.
    HYBRID = "hybrid"
    #: Only cgroup v1 is mounted.
    LEGACY = "legacy"
    #: No cgroup file system is mounted.
    NONE = "none"


@attrs.frozen
class Delegation:
    """Whether the current effective uid may manage cgroups under a directory.

    Attributes:
        path: the cgroup directory checked.
        owner_uid: the directory's owner.
        euid: the effective uid checked for.
        dir_writable: may create and remove child cgroups (write+search on the dir).
        procs_writable: may move processes in (``cgroup.procs``).
        subtree_control_writable: may enable controllers for children.
    """

    path: str
    owner_uid: int
    euid: int
    dir_writable: bool
    procs_writable: bool
    subtree_control_writable: bool

    @property
    def ok(self) -> bool:
        """True if all three permissions are present."""
        return self.dir_writable and self.procs_writable and self.subtree_control_writable


@attrs.frozen
class CgroupReport:
    """What :func:`discover` found; ``nscg.features()`` includes it.

    Attributes:
        mode: unified (pure v2), hybrid, legacy (v1 only) or none.
        mount_point: where the cgroup2 file system is mounted, or None.
        mount_options: the cgroup2 super-block options (``nsdelegate``, ...).
        own_path: the process's cgroup v2 path (the ``0::`` line), or None.
        own_dir: ``own_path`` as a directory under ``mount_point``, or None.
        root_controllers: controllers of the cgroup2 hierarchy (root
            ``cgroup.controllers``).
        controllers: controllers available in the process's own cgroup.
        subtree_control: controllers enabled for the own cgroup's children.
        own_process_count: number of processes in the own cgroup (-1 if unknown).
        v1_controllers: cgroup v2 controller names that a v1 hierarchy holds
            (``blkio`` is reported as ``io``, ``cpuacct`` as ``cpu``).
        v1_mounts: (mount point, v1 subsystems) of each cgroup v1 mount.
        delegation: the permissions on the own cgroup, or None.
        has_kill: ``cgroup.kill`` exists (kernel 5.14+).
        has_freeze: ``cgroup.freeze`` exists (kernel 5.2+).
    """

    mode: CgroupMode
    mount_point: str | None = None
    mount_options: tuple[str, ...] = ()
    own_path: str | None = None
    own_dir: str | None = None
    root_controllers: frozenset[str] = frozenset()
    controllers: frozenset[str] = frozenset()
    subtree_control: frozenset[str] = frozenset()
    own_process_count: int = -1
    v1_controllers: frozenset[str] = frozenset()
    v1_mounts: tuple[tuple[str, tuple[str, ...]], ...] = ()
    delegation: Delegation | None = None
    has_kill: bool = False
    has_freeze: bool = False

    @property
    def usable(self) -> bool:
        """True if a cgroup2 hierarchy is mounted and the own cgroup was found in it."""
        return self.mount_point is not None and self.own_dir is not None

    def unavailable_reason(self, controller: str) -> str | None:
        """Say why ``controller`` cannot be used on this host, or None if it can.

        Only host-wide reasons are considered (no cgroup2, v1 holds it, the kernel
        lacks it); delegation is checked when a cgroup is created.

        Args:
            controller: a cgroup v2 controller name (``memory``, ``cpu``, ``io``...).

        Returns:
            A sentence naming the problem and the fix, or None.
        """
        if self.mount_point is None:
            return (
                f"cannot use the cgroup v2 {controller} controller: no cgroup2 file system "
                "is mounted (mount -t cgroup2 none /sys/fs/cgroup)"
            )
        if controller in self.v1_controllers:
            held = ", ".join(sorted(self.v1_controllers))
            have = ", ".join(sorted(self.root_controllers)) or "no controllers"
            return (
                f"cannot use the cgroup v2 {controller} controller: on this host cgroup v1 "
                f"holds {held}; the cgroup2 hierarchy at {self.mount_point} has {have}. "
                "nscg needs a pure cgroup v2 host for this limit: boot with "
                "systemd.unified_cgroup_hierarchy=1 (or cgroup_no_v1=all), or run in a VM "
                "such as tools/vm/run-in-v2vm.sh"
            )
        if controller not in self.root_controllers:
            have = ", ".join(sorted(self.root_controllers)) or "none"
            return (
                f"cannot use the cgroup v2 {controller} controller: the kernel does not "
                f"offer it ({self.mount_point}/cgroup.controllers lists: {have})"
            )
        return None


def _pid_dir(proc: str, pid: int | None) -> str:
    return os.path.join(proc, "self" if pid is None else str(pid))


def _read_set(path: str) -> frozenset[str]:
    try:
        return frozenset(read_text(path).split())
    except OSError:
        return frozenset()


def _count_procs(path: str) -> int:
    try:
        return len(read_text(os.path.join(path, "cgroup.procs")).split())
    except OSError:
        return -1


def check_delegation(path: str | os.PathLike[str]) -> Delegation:
    """Check whether the effective uid may manage cgroups under ``path``.

    Args:
        path: a cgroup v2 directory.

    Returns:
        A :class:`Delegation`; nothing is written.

    Raises:
        SyscallError: ``path`` cannot be stat()ed.
    """
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except OSError as e:
        raise SyscallError(e.errno or errno.EIO, "stat", p) from e

    def can_write(f: str, mode: int = os.W_OK) -> bool:
        return os.access(f, mode, effective_ids=os.access in os.supports_effective_ids)

    return Delegation(
        path=p,
        owner_uid=st.st_uid,
        euid=os.geteuid(),
        dir_writable=can_write(p, os.W_OK | os.X_OK),
        procs_writable=can_write(os.path.join(p, "cgroup.procs")),
        subtree_control_writable=can_write(os.path.join(p, "cgroup.subtree_control")),
    )


def discover(pid: int | None = None, *, proc: str = "/proc") -> CgroupReport:
    """Find the cgroup2 mount, a process's cgroup, and whether v1 holds controllers.

    Only reads files: ``/proc/self/mountinfo``, ``/proc/PID/cgroup``,
    ``/proc/cgroups`` and the cgroup directories.

    Args:
        pid: the process to look at; None for the calling process.
        proc: where procfs is mounted (tests pass a fake tree).

    Returns:
        A :class:`CgroupReport`.
    """
    try:
        mounts = parse_mountinfo(read_text(os.path.join(proc, "self", "mountinfo")))
    except OSError:
        mounts = []
    try:
        lines = parse_cgroup_file(read_text(os.path.join(_pid_dir(proc, pid), "cgroup")))
    except OSError:
        lines = []
    try:
        table = parse_proc_cgroups(read_text(os.path.join(proc, "cgroups")))
    except OSError:
        table = {}

    v1_mounts: list[tuple[str, tuple[str, ...]]] = []
    v1_subsys: set[str] = set()
    for m in mounts:
        if m.fstype == "cgroup":
            subs = tuple(o for o in m.super_options if o in V1_TO_V2)
            v1_mounts.append((m.mount_point, subs))
            v1_subsys.update(subs)
    for name, (hierarchy, enabled) in table.items():
        if hierarchy != 0 and enabled and name in V1_TO_V2:
            v1_subsys.add(name)
    v1_controllers = frozenset(V1_TO_V2[s] for s in v1_subsys)

    own_path = next((ln.path for ln in lines if ln.hierarchy == 0 and not ln.controllers), None)
    v2 = [m for m in mounts if m.fstype == "cgroup2"]
    mount = None
    if own_path is not None:
        candidates = [
            m
            for m in v2
            if m.root in ("/", own_path) or own_path.startswith(m.root.rstrip("/") + "/")
        ]
        candidates.sort(key=lambda m: (m.mount_point != "/sys/fs/cgroup", len(m.root)))
        mount = candidates[0] if candidates else None
    elif v2:
        mount = v2[0]

    if mount is None:
        mode = CgroupMode.LEGACY if v1_mounts or v1_subsys else CgroupMode.NONE
        return CgroupReport(
            mode=mode,
            own_path=own_path,
            v1_controllers=v1_controllers,
            v1_mounts=tuple(v1_mounts),
        )

    mode = CgroupMode.HYBRID if v1_controllers else CgroupMode.UNIFIED
    root = mount.mount_point
    own_dir: str | None = None
    if own_path is not None and not own_path.endswith(" (deleted)"):
        rel = own_path[len(mount.root.rstrip("/")) :] if mount.root != "/" else own_path
        candidate = os.path.normpath(root + "/" + rel.lstrip("/"))
        if os.path.isdir(candidate):
            own_dir = candidate
    delegation = None
    if own_dir is not None:
        try:
            delegation = check_delegation(own_dir)
        except SyscallError:
            delegation = None
    return CgroupReport(
        mode=mode,
        mount_point=root,
        mount_options=mount.super_options,
        own_path=own_path,
        own_dir=own_dir,
        root_controllers=_read_set(os.path.join(root, "cgroup.controllers")),
        controllers=_read_set(os.path.join(own_dir or root, "cgroup.controllers")),
        subtree_control=_read_set(os.path.join(own_dir or root, "cgroup.subtree_control")),
        own_process_count=_count_procs(own_dir) if own_dir else -1,
        v1_controllers=v1_controllers,
        v1_mounts=tuple(v1_mounts),
        delegation=delegation,
        has_kill=os.path.exists(os.path.join(own_dir or root, "cgroup.kill"))
        or os.path.exists(os.path.join(root, "cgroup.kill")),
        has_freeze=os.path.exists(os.path.join(own_dir or root, "cgroup.freeze"))
        or _any_child_has(root, "cgroup.freeze"),
    )


def _any_child_has(root: str, name: str) -> bool:
    # the root cgroup has no cgroup.freeze / cgroup.kill; look at one child
    try:
        with os.scandir(root) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    return os.path.exists(os.path.join(e.path, name))
    except OSError:
        pass
    return False


# ======================================================================= limits


def _opt_bytes(value: int | str | None, what: str) -> Bytes | None:
    return None if value is None else parse_size(value, what=what)


def _conv_memory_max(v: int | str | None) -> Bytes | None:
    return _opt_bytes(v, "memory.max")


def _conv_memory_high(v: int | str | None) -> Bytes | None:
    return _opt_bytes(v, "memory.high")


def _conv_memory_low(v: int | str | None) -> Bytes | None:
    return _opt_bytes(v, "memory.low")


def _conv_memory_min(v: int | str | None) -> Bytes | None:
    return _opt_bytes(v, "memory.min")


def _conv_swap_max(v: int | str | None) -> Bytes | None:
    return _opt_bytes(v, "memory.swap.max")


def _conv_bps(v: int | str | None) -> Bytes | None:
    return _opt_bytes(v, "io.max bytes per second")


def _conv_hugetlb(v: int | str) -> Bytes:
    return parse_size(v, what="hugetlb max")


def _conv_count(v: int | str | None) -> int | Literal["max"] | None:
    if v is None or isinstance(v, bool):
        return None if v is None else _bad_count(v)
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip() == "max":
        return "max"
    if isinstance(v, str) and re.fullmatch(r"-?[0-9]+", v.strip()):
        return int(v.strip())  # a negative one: the validator says so, as for an int
    return _bad_count(v)


def _bad_count(v: object) -> int:
    raise SpecError(f"expected a non-negative integer or 'max', got {v!r}")


def _check_count(_inst: object, attr: attrs.Attribute[_T], value: _T) -> None:
    if isinstance(value, int) and value < 0:
        raise SpecError(f"{attr.name}: must not be negative, got {value}")


def _check_weight(_inst: object, attr: attrs.Attribute[_T], value: _T) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10000:
        raise SpecError(f"{attr.name}: must be an integer in 1..10000, got {value!r}")


_CPULIST_RE: Final = re.compile(r"^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$")


def _check_cpulist(_inst: object, attr: attrs.Attribute[_T], value: _T) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _CPULIST_RE.match(value.replace(" ", "")):
        raise SpecError(f"{attr.name}: expected a list such as '0-3,6', got {value!r}")
    for part in value.replace(" ", "").split(","):
        lo, _, hi = part.partition("-")
        if hi and int(hi) < int(lo):
            raise SpecError(f"{attr.name}: range {part!r} is backwards")


@attrs.frozen
class CpuMax:
    """A ``cpu.max`` bandwidth limit: ``quota_usec`` of CPU time per ``period_usec``.

    Use :meth:`from_cpus` for the ``cpus=0.5`` shorthand.

    Attributes:
        quota_usec: CPU time per period in microseconds, or None for no limit (``max``).
        period_usec: the period in microseconds (1000..1000000, default 100000).
    """

    quota_usec: int | None = attrs.field()
    period_usec: int = attrs.field(default=100_000)

    @quota_usec.validator
    def _check_quota(self, _a: attrs.Attribute[int | None], v: int | None) -> None:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1000):
            raise SpecError(f"cpu.max quota must be an integer >= 1000 µs or None, got {v!r}")

    @period_usec.validator
    def _check_period(self, _a: attrs.Attribute[int], v: int) -> None:
        if isinstance(v, bool) or not isinstance(v, int) or not 1000 <= v <= 1_000_000:
            raise SpecError(f"cpu.max period must be 1000..1000000 µs, got {v!r}")

    @classmethod
    def from_cpus(cls, cpus: float, *, period_usec: int = 100_000) -> CpuMax:
        """Build a limit of ``cpus`` CPUs' worth of time (0.5 = half of one CPU).

        Args:
            cpus: a positive number of CPUs.
            period_usec: the accounting period.

        Returns:
            The :class:`CpuMax`.

        Raises:
            SpecError: ``cpus`` is not positive or the quota would be under 1 ms.
        """
        if isinstance(cpus, bool) or not isinstance(cpus, (int, float)):
            raise SpecError(f"cpus must be a positive number, got {cpus!r}")
        if not cpus > 0:  # -5 and -5.0 (the CLI's) read the same
            raise SpecError(f"cpus must be a positive number, got {cpus:g}")
        return cls(quota_usec=max(1000, round(cpus * period_usec)), period_usec=period_usec)

    @classmethod
    def parse(cls, text: str) -> CpuMax:
        """Parse the content of a ``cpu.max`` file (``"max 100000"``, ``"50000 100000"``).

        Args:
            text: the file's content.

        Returns:
            The :class:`CpuMax`.

        Raises:
            SpecError: the text is not in that format.
        """
        parts = text.split()
        try:
            quota = None if parts[0] == "max" else int(parts[0])
            period = int(parts[1]) if len(parts) > 1 else 100_000
        except (IndexError, ValueError):
            raise SpecError(f"cannot parse cpu.max {text!r}") from None
        return cls(quota_usec=quota, period_usec=period)

    @property
    def cpus(self) -> float | None:
        """The limit as a number of CPUs, or None for no limit."""
        return None if self.quota_usec is None else self.quota_usec / self.period_usec

    def render(self) -> str:
        """The text to write to ``cpu.max``."""
        quota = "max" if self.quota_usec is None else str(self.quota_usec)
        return f"{quota} {self.period_usec}"


def _conv_cpu_max(v: CpuMax | float | str | None) -> CpuMax | None:
    if v is None or isinstance(v, CpuMax):
        return v
    if isinstance(v, str):
        return CpuMax.parse(v)
    return CpuMax.from_cpus(v)


def _check_rate(_inst: object, attr: attrs.Attribute[_T], value: _T) -> None:
    if value is None or value == "max":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"io.max {attr.name}: must be a positive integer or 'max', got {value!r}")


@attrs.frozen
class IoLimit:
    """``io.max`` / ``io.weight`` for one block device, named by its path.

    The path is resolved to ``MAJ:MIN`` (``st_rdev``) when the limit is applied.

    Attributes:
        device: path of a block device, e.g. ``/dev/vda`` (a whole disk, not a partition).
        rbps: read bytes per second (accepts ``"10M"``), ``"max"`` or None.
        wbps: write bytes per second.
        riops: read operations per second.
        wiops: write operations per second.
        weight: proportional weight 1..10000 for this device (``io.weight``).
    """

    device: str = attrs.field()
    rbps: Bytes | None = attrs.field(default=None, converter=_conv_bps)
    wbps: Bytes | None = attrs.field(default=None, converter=_conv_bps)
    riops: int | Literal["max"] | None = attrs.field(
        default=None, converter=_conv_count, validator=_check_rate
    )
    wiops: int | Literal["max"] | None = attrs.field(
        default=None, converter=_conv_count, validator=_check_rate
    )
    weight: int | None = attrs.field(default=None, validator=_check_weight)

    @device.validator
    def _check_device(self, _a: attrs.Attribute[str], v: str) -> None:
        if not isinstance(v, str) or not v.startswith("/"):
            raise SpecError(f"io limit: device must be an absolute path, got {v!r}")

    def __attrs_post_init__(self) -> None:
        if all(x is None for x in (self.rbps, self.wbps, self.riops, self.wiops, self.weight)):
            raise SpecError(
                f"io limit for {self.device}: give at least one of rbps, wbps, riops, wiops, weight"
            )

    def device_number(self) -> str:
        """Resolve :attr:`device` to ``"MAJ:MIN"``.

        Returns:
            The device number as cgroup files spell it.

        Raises:
            SpecError: the path does not exist or is not a block device.
        """
        try:
            st = os.stat(self.device)
        except OSError as e:
            raise SpecError(f"io limit: cannot stat {self.device}: {e.strerror}") from None
        if not stat.S_ISBLK(st.st_mode):
            raise SpecError(f"io limit: {self.device} is not a block device")
        return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"

    def max_line(self, devno: str) -> str | None:
        """The ``io.max`` line for ``devno``, or None when no rate is limited."""
        items = [
            f"{k}={v}"
            for k, v in (
                ("rbps", self.rbps),
                ("wbps", self.wbps),
                ("riops", self.riops),
                ("wiops", self.wiops),
            )
            if v is not None
        ]
        return f"{devno} {' '.join(items)}" if items else None


_PAGE_RE: Final = re.compile(r"^[0-9]+[KMG]B$")


@attrs.frozen
class HugetlbLimit:
    """A ``hugetlb.<size>.max`` limit.

    Attributes:
        page_size: the huge page size as the kernel names it (``"2MB"``, ``"1GB"``).
        max: bytes of huge pages, or ``"max"``.
    """

    page_size: str = attrs.field()
    max: Bytes = attrs.field(converter=_conv_hugetlb)

    @page_size.validator
    def _check_page(self, _a: attrs.Attribute[str], v: str) -> None:
        if not isinstance(v, str) or not _PAGE_RE.match(v):
            raise SpecError(f"hugetlb page size must look like '2MB' or '1GB', got {v!r}")


def _conv_io(v: Iterable[IoLimit]) -> tuple[IoLimit, ...]:
    out = tuple(v)
    for x in out:
        if not isinstance(x, IoLimit):
            raise SpecError(f"io: expected IoLimit values, got {x!r}")
    return out


def _conv_hugetlb_list(v: Iterable[HugetlbLimit]) -> tuple[HugetlbLimit, ...]:
    out = tuple(v)
    for x in out:
        if not isinstance(x, HugetlbLimit):
            raise SpecError(f"hugetlb: expected HugetlbLimit values, got {x!r}")
    return out


def _check_bool(_inst: object, attr: attrs.Attribute[_T], value: _T) -> None:
    if value is not None and not isinstance(value, bool):
        raise SpecError(f"{attr.name}: expected a bool, got {value!r}")


@attrs.frozen(kw_only=True)
class Limits:
    """The limits to write into a cgroup; every field is optional (None = leave as is).

    Byte values accept ``int``, ``"max"`` or strings such as ``"256M"``, ``"1G"``,
    ``"512K"``. ``cpu_max`` accepts a :class:`CpuMax`, a number of CPUs (``0.5``)
    or ``cpu.max`` text. Invalid values raise :class:`~nscg.errors.SpecError` at
    construction, before anything is written.

    Example::

        Limits(memory_max="256M", cpu_max=0.5, pids_max=64)
    """

    memory_max: Bytes | None = attrs.field(default=None, converter=_conv_memory_max)
    memory_high: Bytes | None = attrs.field(default=None, converter=_conv_memory_high)
    memory_low: Bytes | None = attrs.field(default=None, converter=_conv_memory_low)
    memory_min: Bytes | None = attrs.field(default=None, converter=_conv_memory_min)
    memory_swap_max: Bytes | None = attrs.field(default=None, converter=_conv_swap_max)
    memory_oom_group: bool | None = attrs.field(default=None, validator=_check_bool)
    cpu_max: CpuMax | None = attrs.field(default=None, converter=_conv_cpu_max)
    cpu_weight: int | None = attrs.field(default=None, validator=_check_weight)
    cpuset_cpus: str | None = attrs.field(default=None, validator=_check_cpulist)
    cpuset_mems: str | None = attrs.field(default=None, validator=_check_cpulist)
    pids_max: int | Literal["max"] | None = attrs.field(
        default=None, converter=_conv_count, validator=_check_count
    )
    io: tuple[IoLimit, ...] = attrs.field(default=(), converter=_conv_io)
    io_weight: int | None = attrs.field(default=None, validator=_check_weight)
    hugetlb: tuple[HugetlbLimit, ...] = attrs.field(default=(), converter=_conv_hugetlb_list)

    def controllers(self) -> frozenset[str]:
        """The cgroup v2 controllers these limits need."""
        out: set[str] = set()
        if any(
            v is not None
            for v in (
                self.memory_max,
                self.memory_high,
                self.memory_low,
                self.memory_min,
                self.memory_swap_max,
                self.memory_oom_group,
            )
        ):
            out.add("memory")
        if self.cpu_max is not None or self.cpu_weight is not None:
            out.add("cpu")
        if self.cpuset_cpus is not None or self.cpuset_mems is not None:
            out.add("cpuset")
        if self.pids_max is not None:
            out.add("pids")
        if self.io or self.io_weight is not None:
            out.add("io")
        if self.hugetlb:
            out.add("hugetlb")
        return frozenset(out)

    @property
    def empty(self) -> bool:
        """True if no limit is set."""
        return not self.controllers()

    def plan(self) -> tuple[tuple[str, str], ...]:
        """The (file name, value) writes that apply these limits, in order.

        Device paths of :attr:`io` are resolved here.

        Returns:
            A tuple of writes, each one ``write(2)`` call.

        Raises:
            SpecError: an io device path is not a block device.
        """
        w: list[tuple[str, str]] = []
        if self.cpuset_cpus is not None:
            w.append(("cpuset.cpus", self.cpuset_cpus.replace(" ", "")))
        if self.cpuset_mems is not None:
            w.append(("cpuset.mems", self.cpuset_mems.replace(" ", "")))
        for fname, val in (
            ("memory.min", self.memory_min),
            ("memory.low", self.memory_low),
            ("memory.high", self.memory_high),
            ("memory.max", self.memory_max),
            ("memory.swap.max", self.memory_swap_max),
        ):
            if val is not None:
                w.append((fname, str(val)))
        if self.memory_oom_group is not None:
            w.append(("memory.oom.group", "1" if self.memory_oom_group else "0"))
        if self.cpu_max is not None:
            w.append(("cpu.max", self.cpu_max.render()))
        if self.cpu_weight is not None:
            w.append(("cpu.weight", str(self.cpu_weight)))
        if self.pids_max is not None:
            w.append(("pids.max", str(self.pids_max)))
        if self.io_weight is not None:
            w.append(("io.weight", f"default {self.io_weight}"))
        for lim in self.io:
            devno = lim.device_number()
            line = lim.max_line(devno)
            if line is not None:
                w.append(("io.max", line))
            if lim.weight is not None:
                w.append(("io.weight", f"{devno} {lim.weight}"))
        for h in self.hugetlb:
            w.append((f"hugetlb.{h.page_size}.max", str(h.max)))
        return tuple(w)


@attrs.frozen
class CgroupSpec:
    """A cgroup for each sandbox of a :class:`nscg.Container`: its limits and where.

    Attributes:
        limits: the limits written before the payload starts (it is born in the
            cgroup, with ``clone3(CLONE_INTO_CGROUP)``).
        parent: the cgroup directory to create it under (default: ``nscg/``
            under the caller's own cgroup).
    """

    limits: Limits = attrs.field(factory=Limits)
    parent: str | None = None


# ========================================================================= usage


@attrs.frozen
class CgroupEvents:
    """``cgroup.events``: whether processes live in the subtree, and whether it is frozen."""

    populated: bool
    frozen: bool


@attrs.frozen
class MemoryEvents:
    """``memory.events`` counters (hierarchical)."""

    low: int = 0
    high: int = 0
    max: int = 0
    oom: int = 0
    oom_kill: int = 0
    oom_group_kill: int = 0


@attrs.frozen
class Pressure:
    """A PSI file: ``some`` (at least one task stalled) and ``full`` (all stalled)."""

    some: PressureLine
    full: PressureLine | None


@attrs.frozen
class CgroupUsage:
    """A snapshot of a cgroup's resource use; values that the kernel lacks are None.

    Attributes:
        cpu_usage_usec / cpu_user_usec / cpu_system_usec: CPU time (``cpu.stat``).
        nr_periods / nr_throttled / throttled_usec: ``cpu.max`` enforcement.
        memory_current / memory_peak: bytes (``memory.peak``: kernel 5.19+).
        pids_current / pids_peak: process counts (``pids.peak``: kernel 6.13+).
        oom / oom_kill: ``memory.events`` counters.
        io_rbytes / io_wbytes: bytes read/written, summed over devices.
    """

    cpu_usage_usec: int = 0
    cpu_user_usec: int = 0
    cpu_system_usec: int = 0
    nr_periods: int = 0
    nr_throttled: int = 0
    throttled_usec: int = 0
    memory_current: int | None = None
    memory_peak: int | None = None
    pids_current: int | None = None
    pids_peak: int | None = None
    oom: int = 0
    oom_kill: int = 0
    io_rbytes: int = 0
    io_wbytes: int = 0

    @property
    def cpu_time(self) -> float:
        """Total CPU time in seconds."""
        return self.cpu_usage_usec / 1e6

    @property
    def oom_killed(self) -> bool:
        """True if the OOM killer killed a process in the cgroup."""
        return self.oom_kill > 0


# ===================================================================== CgroupV2


def _write(path: str, value: str) -> None:
    """Write ``value`` to a cgroup file in one write(2); map errors to nscg errors."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        _raise_write_error(e, path, value)
    try:
        os.write(fd, value.encode())
    except OSError as e:
        _raise_write_error(e, path, value)
    finally:
        os.close(fd)


def _raise_write_error(e: OSError, path: str, value: str) -> NoReturn:
    err = e.errno or errno.EIO
    name = os.path.basename(path)
    if err in (errno.EACCES, errno.EPERM):
        raise UnsupportedError(
            f"cannot write {value!r} to {path}: {e.strerror}; the cgroup is not delegated "
            f"to uid {os.geteuid()}: {_DELEGATION_HINT}",
            feature="cgroup2.delegation",
        ) from None
    if err == errno.ENOENT and name.startswith("cgroup."):
        raise SyscallError(err, "open", path, detail="the cgroup does not exist") from None
    if err == errno.ENOENT:
        ctrl = name.split(".", 1)[0]
        raise UnsupportedError(
            f"cannot write {name}: {path} does not exist (is the {ctrl} controller enabled "
            "for this cgroup?)",
            feature=f"cgroup2.{ctrl}",
        ) from None
    if err in (errno.EINVAL, errno.ERANGE, errno.EOVERFLOW):
        raise SpecError(f"the kernel rejected {value!r} for {path}: {e.strerror}") from None
    raise SyscallError(err, "write", path, detail=f"writing {value!r}") from None


def _rmdir_retry(path: str, deadline: float) -> None:
    delay = 0.001
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise SyscallError(
                    e.errno or errno.EIO,
                    "rmdir",
                    path,
                    detail="processes are still in the cgroup" if e.errno == errno.EBUSY else "",
                ) from None
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _subdirs_bottom_up(path: str) -> Iterator[str]:
    try:
        with os.scandir(path) as it:
            children = [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return
    for c in children:
        yield from _subdirs_bottom_up(c)
    yield path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unique_name() -> str:
    return f"nscg-{os.getpid()}-{next(_counter)}-{secrets.token_hex(3)}"


def _check_name(name: str) -> None:
    if (
        not name
        or "/" in name
        or name in (".", "..")
        or "\n" in name
        or name.startswith("cgroup.")
        or len(name) > 255
    ):
        raise SpecError(f"invalid cgroup name {name!r}")


@attrs.frozen
class _CreatePlan:
    mkdirs: tuple[str, ...]
    enable: tuple[tuple[str, frozenset[str]], ...]
    parent: str
    writes: tuple[tuple[str, str], ...]


def _not_delegated(what: str, path: str) -> UnsupportedError:
    try:
        owner = os.stat(path).st_uid
    except OSError:
        owner = -1
    return UnsupportedError(
        f"cannot {what}: {path} (owner uid {owner}) is not writable by uid {os.geteuid()}; "
        f"{_DELEGATION_HINT}",
        feature="cgroup2.delegation",
    )


def _default_base(own_dir: str) -> str:
    # after move_self_to_leaf() the caller lives in <base>/nscg-self
    return os.path.dirname(own_dir) if os.path.basename(own_dir) == SELF_LEAF else own_dir


def _plan_create(report: CgroupReport, limits: Limits, parent: str | None) -> _CreatePlan:
    """Check everything a create needs, reading only; raise before anything is written."""
    needed = limits.controllers()
    if report.mount_point is None:
        raise UnsupportedError(
            "cannot create a cgroup: no cgroup2 file system is mounted"
            + (
                f" (cgroup v1 holds {', '.join(sorted(report.v1_controllers))})"
                if report.v1_controllers
                else ""
            ),
            feature="cgroup2",
        )
    for c in sorted(needed):
        reason = report.unavailable_reason(c)
        if reason is not None:
            raise UnsupportedError(reason, feature=f"cgroup2.{c}")
    root = report.mount_point
    if parent is None:
        if report.own_dir is None:
            raise UnsupportedError(
                f"cannot create a cgroup: this process's cgroup ({report.own_path}) is not "
                f"visible under {root}; pass parent=",
                feature="cgroup2",
            )
        base = _default_base(report.own_dir)
        chain = [base, os.path.join(base, DEFAULT_SUBTREE)]
    else:
        base = os.path.normpath(os.path.abspath(parent))
        if os.path.commonpath([base, root]) != root:
            raise SpecError(f"parent {parent!r} is not inside the cgroup2 mount {root}")
        if not os.path.isfile(os.path.join(base, "cgroup.procs")):
            raise SpecError(f"parent {parent!r} is not an existing cgroup v2 directory")
        chain = [base]

    # where the new cgroup's mkdir happens: the last existing directory of the chain
    first_existing = next((d for d in reversed(chain) if os.path.isdir(d)), base)
    if not os.access(
        first_existing, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids
    ):
        raise _not_delegated("create a cgroup", first_existing)

    base_ctrls = _read_set(os.path.join(base, "cgroup.controllers"))
    for c in sorted(needed - base_ctrls):
        above = os.path.dirname(base) if base != root else root
        raise UnsupportedError(
            f"cannot use the {c} controller under {base}: it is not enabled in "
            f"{above}/cgroup.subtree_control (add it with `echo +{c} > "
            f"{above}/cgroup.subtree_control`, or with systemd `Delegate=yes` "
            f"or `Delegate={' '.join(sorted(needed))}`)",
            feature=f"cgroup2.{c}",
        )

    mkdirs: list[str] = []
    enable: list[tuple[str, frozenset[str]]] = []
    for d in chain:
        if not os.path.isdir(d):
            mkdirs.append(d)
            if needed:
                enable.append((d, needed))
            continue
        missing = needed - _read_set(os.path.join(d, "cgroup.subtree_control"))
        if not missing:
            continue
        sc = os.path.join(d, "cgroup.subtree_control")
        if not os.access(sc, os.W_OK, effective_ids=os.access in os.supports_effective_ids):
            raise _not_delegated(f"enable {', '.join(sorted(missing))} in {sc}", d)
        if d != root and _count_procs(d) > 0:
            raise UnsupportedError(
                f"cannot enable {', '.join(sorted(missing))} for the children of {d}: it "
                "contains processes, and cgroup v2's 'no internal processes' rule forbids "
                "controllers in the subtree_control of such a cgroup. nscg does not move the "
                "caller by itself: call nscg.cgroups.move_self_to_leaf() first, or pass "
                "parent= a cgroup without processes whose subtree you own",
                feature=f"cgroup2.{sorted(missing)[0]}",
            )
        enable.append((d, missing))

    return _CreatePlan(
        mkdirs=tuple(mkdirs),
        enable=tuple(enable),
        parent=chain[-1],
        writes=limits.plan(),
    )


class CgroupV2:
    """One cgroup v2 directory: limits, placement, usage, freeze, kill and removal.

    Make one with :meth:`create` (a new, owned cgroup that :meth:`close` removes),
    :meth:`open` (an existing one, never removed by close) or :meth:`of_pid`.
    Methods are safe to call from several threads for different cgroups; creating
    cgroups concurrently is safe (names are unique per process, thread and call).

    Example::

        with CgroupV2.create(Limits(memory_max="64M", pids_max=32)) as cg:
            p = subprocess.Popen(["sleep", "10"])
            cg.add_pid(p.pid)
            ...
            print(cg.usage().memory_peak)
        # the processes are killed and the cgroup removed here
    """

    def __init__(self, path: str | os.PathLike[str], *, owned: bool = False) -> None:
        """Wrap a cgroup directory; prefer :meth:`create` and :meth:`open`.

        Args:
            path: the absolute path of the cgroup directory.
            owned: if True, :meth:`close` kills its processes and removes it.
        """
        self._path = os.path.abspath(os.fspath(path))
        self._owned = owned
        self._removed = False

    # ------------------------------------------------------------- construction

    @classmethod
    def create(
        cls,
        limits: Limits | None = None,
        *,
        parent: str | os.PathLike[str] | None = None,
        name: str | None = None,
        report: CgroupReport | None = None,
    ) -> CgroupV2:
        """Create a new cgroup and write ``limits`` into it.

        Without ``parent`` the cgroup goes to ``<own cgroup>/nscg/``. Controllers the
        limits need are enabled in ``cgroup.subtree_control`` of the parent chain
        (from the own cgroup, or from ``parent``, downwards; never above). Everything
        is checked before the first write; on failure nothing new is left behind
        (the shared ``nscg`` directory may remain, as a systemd slice does).

        Args:
            limits: the limits to apply; None for a cgroup used only for tracking,
                freezing and killing.
            parent: an existing cgroup directory to create the cgroup in.
            name: the directory name; default ``nscg-<pid>-<counter>-<random>``.
            report: a :func:`discover` result to reuse (saves reading /proc).

        Returns:
            The new, owned :class:`CgroupV2`.

        Raises:
            SpecError: an invalid name, parent or io device, or a value the kernel
                rejected.
            UnsupportedError: no cgroup2, a needed controller is held by cgroup v1 or
                not enabled, a limit file is missing, or the subtree is not delegated.
            SyscallError: a system call failed unexpectedly.
        """
        limits = Limits() if limits is None else limits
        if name is not None:
            _check_name(name)
        rep = discover() if report is None else report
        plan = _plan_create(rep, limits, None if parent is None else os.fspath(parent))
        for d in plan.mkdirs:
            try:
                os.mkdir(d)
            except FileExistsError:
                pass
            except OSError as e:
                if e.errno in (errno.EACCES, errno.EPERM):
                    raise _not_delegated("create a cgroup", os.path.dirname(d)) from None
                raise SyscallError(e.errno or errno.EIO, "mkdir", d) from None
        for d, ctrls in plan.enable:
            sc = os.path.join(d, "cgroup.subtree_control")
            if ctrls - _read_set(sc):
                _write(sc, " ".join(f"+{c}" for c in sorted(ctrls)))
        path = cls._mkdir_unique(plan.parent, name)
        cg = cls(path, owned=True)
        try:
            cg._apply_writes(plan.writes)
        except BaseException:
            cg._owned = False
            _rmdir_retry(path, time.monotonic() + 1.0)
            raise
        return cg

    @staticmethod
    def _mkdir_unique(parent: str, name: str | None) -> str:
        for _ in range(100):
            path = os.path.join(parent, name or _unique_name())
            try:
                os.mkdir(path)
                return path
            except FileExistsError:
                if name is not None:
                    raise SpecError(f"cgroup {path} already exists") from None
            except OSError as e:
                if e.errno in (errno.EACCES, errno.EPERM):
                    raise _not_delegated("create a cgroup", parent) from None
                raise SyscallError(e.errno or errno.EIO, "mkdir", path) from None
        raise SyscallError(errno.EEXIST, "mkdir", parent, detail="no unique name found")

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> CgroupV2:
        """Wrap an existing cgroup; :meth:`close` will not remove it.

        Args:
            path: the cgroup directory.

        Returns:
            A :class:`CgroupV2` that is not owned.

        Raises:
            SpecError: ``path`` is not a cgroup v2 directory.
        """
        p = os.fspath(path)
        if not os.path.isfile(os.path.join(p, "cgroup.procs")) or not os.path.exists(
            os.path.join(p, "cgroup.controllers")
        ):
            raise SpecError(f"{p} is not a cgroup v2 directory")
        return cls(p)

    @classmethod
    def of_pid(cls, pid: int) -> CgroupV2:
        """Open the cgroup v2 that process ``pid`` is in.

        Args:
            pid: a process id.

        Returns:
            A :class:`CgroupV2` that is not owned.

        Raises:
            UnsupportedError: the process has no visible cgroup v2.
        """
        rep = discover(pid)
        if rep.own_dir is None:
            raise UnsupportedError(
                f"process {pid} has no cgroup v2 visible here", feature="cgroup2"
            )
        return cls(rep.own_dir)

    # -------------------------------------------------------------- properties

    @property
    def path(self) -> str:
        """The absolute path of the cgroup directory."""
        return self._path

    @property
    def name(self) -> str:
        """The directory's name."""
        return os.path.basename(self._path)

    @property
    def owned(self) -> bool:
        """True if :meth:`close` removes the cgroup."""
        return self._owned and not self._removed

    def __repr__(self) -> str:
        return f"CgroupV2({self._path!r}, owned={self._owned})"

    def __fspath__(self) -> str:
        return self._path

    # ------------------------------------------------------------------- files

    def _file(self, name: str) -> str:
        return os.path.join(self._path, name)

    def _refuse_root(self, what: str) -> None:
        # the root of a cgroup2 mount (or of a cgroup namespace's mount) holds everyone
        if os.path.ismount(self._path):
            raise SpecError(f"refusing to {what} {self._path}: it is the root cgroup")

    def read(self, name: str) -> str:
        """Read an interface file of this cgroup, e.g. ``"memory.max"``.

        Args:
            name: the file name.

        Returns:
            Its text.

        Raises:
            SyscallError: it cannot be read.
        """
        try:
            return read_text(self._file(name))
        except OSError as e:
            raise SyscallError(e.errno or errno.EIO, "read", self._file(name)) from None

    def write(self, name: str, value: str) -> None:
        """Write ``value`` to an interface file in one ``write(2)``.

        Args:
            name: the file name, e.g. ``"memory.high"``.
            value: the text.

        Raises:
            SpecError: the kernel rejected the value (EINVAL).
            UnsupportedError: the file does not exist or is not writable by us.
            SyscallError: another error.
        """
        _write(self._file(name), value)

    def _apply_writes(self, writes: Iterable[tuple[str, str]]) -> None:
        writes = tuple(writes)
        missing = sorted({f for f, _ in writes if not os.path.exists(self._file(f))})
        if missing:
            ctrl = missing[0].split(".", 1)[0]
            hint = ""
            if "memory.swap.max" in missing:
                hint = " (swap accounting is off: boot with swapaccount=1)"
            elif any(m.startswith("hugetlb.") for m in missing):
                hint = " (that huge page size is not supported by this machine)"
            elif "io.weight" in missing:
                hint = " (the kernel has no io.weight: CONFIG_BLK_CGROUP_IOCOST or BFQ)"
            raise UnsupportedError(
                f"cannot apply {', '.join(missing)} to {self._path}: the file does not exist{hint}",
                feature=f"cgroup2.{ctrl}",
            )
        for fname, value in writes:
            _write(self._file(fname), value)

    def apply(self, limits: Limits, *, report: CgroupReport | None = None) -> None:
        """Write ``limits`` into this (existing) cgroup.

        Args:
            limits: the limits.
            report: a :func:`discover` result, used to explain a missing controller.

        Raises:
            UnsupportedError: a needed controller is not enabled for this cgroup or v1
                holds it, or a file is missing.
            SpecError: the kernel rejected a value or an io device is invalid.
        """
        have = _read_set(self._file("cgroup.controllers"))
        missing = sorted(limits.controllers() - have)
        if missing:
            rep = discover() if report is None else report
            for c in missing:
                reason = rep.unavailable_reason(c)
                if reason is not None:
                    raise UnsupportedError(reason, feature=f"cgroup2.{c}")
            above = os.path.dirname(self._path)
            raise UnsupportedError(
                f"cannot apply limits to {self._path}: {', '.join(missing)} not enabled in "
                f"{above}/cgroup.subtree_control",
                feature=f"cgroup2.{missing[0]}",
            )
        self._apply_writes(limits.plan())

    # --------------------------------------------------------------- placement

    def open_fd(self) -> int:
        """Open the directory for ``clone3(CLONE_INTO_CGROUP)`` (kernel 5.7+).

        Returns:
            A new fd opened ``O_RDONLY | O_DIRECTORY | O_CLOEXEC``; the caller closes it.

        Raises:
            SyscallError: open failed.
        """
        try:
            return os.open(self._path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise SyscallError(e.errno or errno.EIO, "open", self._path) from None

    def add_pid(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into this cgroup via ``cgroup.procs``.

        Args:
            pid: the process id; 0 means the calling process.

        Raises:
            UnsupportedError: no write access to ``cgroup.procs`` (and, as the kernel
                requires, to that of the common ancestor of the source and this cgroup).
            SyscallError: the process does not exist (ESRCH) or another error.
        """
        try:
            _write(self._file("cgroup.procs"), str(pid))
        except SyscallError as e:
            if e.errno != errno.EBUSY:
                raise
            raise SyscallError(
                errno.EBUSY,
                "write",
                self._file("cgroup.procs"),
                detail="controllers are enabled in this cgroup's cgroup.subtree_control; "
                "cgroup v2 lets processes live only in leaves (no internal processes)",
            ) from None
        except SpecError as e:  # EINVAL here is not a spec problem
            raise SyscallError(
                errno.EINVAL, "write", self._file("cgroup.procs"), detail=str(e)
            ) from None

    def pids(self, *, recursive: bool = False) -> list[int]:
        """List the processes in this cgroup.

        Args:
            recursive: include the processes of child cgroups.

        Returns:
            Process ids (possibly of processes exiting right now).
        """
        dirs = list(_subdirs_bottom_up(self._path)) if recursive else [self._path]
        out: list[int] = []
        for d in dirs:
            try:
                out.extend(int(x) for x in read_text(os.path.join(d, "cgroup.procs")).split())
            except OSError:
                continue
        return out

    # -------------------------------------------------------------- statistics

    def events(self) -> CgroupEvents:
        """Read ``cgroup.events``.

        Returns:
            populated and frozen flags.
        """
        d = parse_flat_keyed(self.read("cgroup.events"))
        return CgroupEvents(populated=d.get("populated", 0) == 1, frozen=d.get("frozen", 0) == 1)

    @property
    def populated(self) -> bool:
        """True if any process lives in this cgroup or below."""
        return self.events().populated

    def memory_events(self) -> MemoryEvents:
        """Read ``memory.events`` (zeros when the memory controller is off).

        Returns:
            The counters.
        """
        try:
            d = parse_flat_keyed(read_text(self._file("memory.events")))
        except OSError:
            return MemoryEvents()
        return MemoryEvents(
            low=d.get("low", 0),
            high=d.get("high", 0),
            max=d.get("max", 0),
            oom=d.get("oom", 0),
            oom_kill=d.get("oom_kill", 0),
            oom_group_kill=d.get("oom_group_kill", 0),
        )

    def memory_stat(self) -> dict[str, int]:
        """Read ``memory.stat`` (empty when the memory controller is off)."""
        return self._flat("memory.stat")

    def cpu_stat(self) -> dict[str, int]:
        """Read ``cpu.stat``: usage_usec, user_usec, system_usec, nr_throttled, ..."""
        return self._flat("cpu.stat")

    def io_stat(self) -> dict[str, dict[str, int]]:
        """Read ``io.stat``: ``"MAJ:MIN"`` -> {rbytes, wbytes, rios, wios, ...}."""
        try:
            text = read_text(self._file("io.stat"))
        except OSError:
            return {}
        out: dict[str, dict[str, int]] = {}
        for dev, sub in parse_nested_keyed(text).items():
            out[dev] = {k: int(v) for k, v in sub.items() if v.isdigit()}
        return out

    def pressure(self, resource: Literal["cpu", "memory", "io"]) -> Pressure | None:
        """Read a PSI file (``cpu.pressure`` ...); None without PSI (``psi=1``).

        Args:
            resource: cpu, memory or io.

        Returns:
            The :class:`Pressure`, or None.
        """
        try:
            d = parse_pressure(read_text(self._file(f"{resource}.pressure")))
        except OSError:
            return None
        if "some" not in d:
            return None
        return Pressure(some=d["some"], full=d.get("full"))

    def _flat(self, name: str) -> dict[str, int]:
        try:
            return parse_flat_keyed(read_text(self._file(name)))
        except OSError:
            return {}

    def _int_file(self, name: str) -> int | None:
        try:
            text = read_text(self._file(name)).strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def usage(self) -> CgroupUsage:
        """Take a :class:`CgroupUsage` snapshot.

        Returns:
            CPU time, memory current/peak, pids current/peak, OOM counters, io bytes.
        """
        cpu = self.cpu_stat()
        ev = self.memory_events()
        rb = wb = 0
        for sub in self.io_stat().values():
            rb += sub.get("rbytes", 0)
            wb += sub.get("wbytes", 0)
        return CgroupUsage(
            cpu_usage_usec=cpu.get("usage_usec", 0),
            cpu_user_usec=cpu.get("user_usec", 0),
            cpu_system_usec=cpu.get("system_usec", 0),
            nr_periods=cpu.get("nr_periods", 0),
            nr_throttled=cpu.get("nr_throttled", 0),
            throttled_usec=cpu.get("throttled_usec", 0),
            memory_current=self._int_file("memory.current"),
            memory_peak=self._int_file("memory.peak"),
            pids_current=self._int_file("pids.current"),
            pids_peak=self._int_file("pids.peak"),
            oom=ev.oom,
            oom_kill=ev.oom_kill,
            io_rbytes=rb,
            io_wbytes=wb,
        )

    # ----------------------------------------------------------------- waiting

    def wait_empty(self, timeout: float | None = None) -> bool:
        """Wait until no process is left (``populated 0`` in ``cgroup.events``).

        Uses inotify, no busy loop.

        Args:
            timeout: seconds; None waits forever.

        Returns:
            True if the cgroup is empty, False on timeout.
        """
        try:
            return wait_file(
                self._file("cgroup.events"),
                lambda t: parse_flat_keyed(t).get("populated", 0) == 0,
                timeout,
            )
        except FileNotFoundError:
            return True

    def wait_oom(self, timeout: float | None = None, *, baseline: int | None = None) -> bool:
        """Wait until the OOM killer kills in this cgroup (``oom_kill`` in ``memory.events``).

        Args:
            timeout: seconds; None waits forever.
            baseline: the ``oom_kill`` count to exceed; default: the current count,
                so only new kills count. Pass 0 to return at once for any past kill.

        Returns:
            True on an OOM kill, False on timeout.

        Raises:
            UnsupportedError: the memory controller is not enabled here.
        """
        path = self._file("memory.events")
        if not os.path.exists(path):
            raise UnsupportedError(
                f"no memory.events in {self._path}: the memory controller is not enabled",
                feature="cgroup2.memory",
            )
        base = self.memory_events().oom_kill if baseline is None else baseline
        return wait_file(path, lambda t: parse_flat_keyed(t).get("oom_kill", 0) > base, timeout)

    # ----------------------------------------------------------------- control

    def freeze(self, timeout: float | None = 5.0) -> None:
        """Freeze every process in the subtree and wait for ``frozen 1`` (kernel 5.2+).

        Args:
            timeout: seconds to wait for the freeze to complete; None waits forever.

        Raises:
            UnsupportedError: no ``cgroup.freeze`` (kernel older than 5.2, or the root).
            TimeoutError: the cgroup did not report frozen in time.
        """
        self._set_frozen(True, timeout)

    def thaw(self, timeout: float | None = 5.0) -> None:
        """Thaw the subtree and wait for ``frozen 0``.

        Args:
            timeout: seconds to wait; None waits forever.

        Raises:
            UnsupportedError: no ``cgroup.freeze``.
            TimeoutError: the cgroup did not report thawed in time.
        """
        self._set_frozen(False, timeout)

    def _set_frozen(self, frozen: bool, timeout: float | None) -> None:
        if not os.path.exists(self._file("cgroup.freeze")):
            raise UnsupportedError(
                f"cannot freeze {self._path}: no cgroup.freeze (needs kernel 5.2+, "
                "and the root cgroup cannot be frozen)",
                feature="cgroup2.freeze",
            )
        _write(self._file("cgroup.freeze"), "1" if frozen else "0")
        want = 1 if frozen else 0
        ok = wait_file(
            self._file("cgroup.events"),
            lambda t: parse_flat_keyed(t).get("frozen", 0) == want,
            timeout,
        )
        if not ok:
            raise TimeoutError(
                f"{self._path} did not become {'frozen' if frozen else 'thawed'} within {timeout} s"
            )

    def kill(self, *, timeout: float | None = 10.0) -> None:
        """SIGKILL every process in the subtree and wait until it is empty.

        Uses ``cgroup.kill`` (kernel 5.14+); before that: freeze, SIGKILL every pid
        in every ``cgroup.procs`` below, thaw, repeat until empty. Processes that
        left the session or process group (``setsid``) are killed too: membership is
        by cgroup.

        Args:
            timeout: seconds to wait for the subtree to empty; None waits forever.

        Raises:
            TimeoutError: processes remained after ``timeout``.
            UnsupportedError: no permission to kill.
            SpecError: this is the root cgroup.
        """
        self._refuse_root("kill every process in")
        if os.path.exists(self._file("cgroup.kill")):
            _write(self._file("cgroup.kill"), "1")
        else:
            self._kill_fallback(timeout)
        if not self.wait_empty(timeout):
            raise TimeoutError(
                f"processes remain in {self._path} after {timeout} s: {self.pids(recursive=True)}"
            )

    def _kill_fallback(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        can_freeze = os.path.exists(self._file("cgroup.freeze"))
        while True:
            if can_freeze:
                with contextlib.suppress(TimeoutError):
                    self._set_frozen(True, 1.0)
            for pid in self.pids(recursive=True):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if can_freeze:
                with contextlib.suppress(TimeoutError):
                    self._set_frozen(False, 1.0)
            if self.wait_empty(0.2) or (deadline is not None and time.monotonic() > deadline):
                return

    def remove(self, *, kill: bool = True, timeout: float = 10.0) -> None:
        """Remove the cgroup and every cgroup below it.

        Args:
            kill: first kill every process in the subtree; if False, wait for them.
            timeout: seconds in all for the processes to go and ``rmdir`` to succeed
                (EBUSY is retried with a bounded backoff).

        Raises:
            TimeoutError: processes remained.
            SyscallError: rmdir failed.
            SpecError: this is the root cgroup.
        """
        deadline = time.monotonic() + timeout
        if not os.path.isdir(self._path):
            self._removed = True
            return
        self._refuse_root("remove")
        if kill:
            self.kill(timeout=timeout)
        elif not self.wait_empty(timeout):
            raise TimeoutError(f"processes remain in {self._path} after {timeout} s")
        for d in _subdirs_bottom_up(self._path):
            _rmdir_retry(d, deadline)
        self._removed = True

    def close(self) -> None:
        """Kill the processes and remove the cgroup if owned; idempotent."""
        if self._owned and not self._removed:
            self.remove()
        self._removed = self._removed or self._owned

    def __enter__(self) -> CgroupV2:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_owned", False) and not getattr(self, "_removed", True):
            warnings.warn(
                f"CgroupV2 {self._path} was not closed; it is left in place",
                ResourceWarning,
                stacklevel=2,
            )


# ================================================================ helpers


def move_self_to_leaf(*, report: CgroupReport | None = None) -> str:
    """Move the calling process into a new leaf ``nscg-self`` below its own cgroup.

    This makes the own cgroup free of processes, so that controllers can be enabled
    in its ``cgroup.subtree_control`` (cgroup v2's "no internal processes" rule), as
    a service with systemd ``Delegate=yes`` is expected to do. nscg never does this
    implicitly. Other processes in the own cgroup are not moved (if there are any,
    creating a cgroup with limits still fails with the explanation). Afterwards the
    default parent of :meth:`CgroupV2.create` stays ``<former own cgroup>/nscg``.
    Calling it again is a no-op.

    Args:
        report: a :func:`discover` result to reuse.

    Returns:
        The path of the leaf the process now lives in.

    Raises:
        UnsupportedError: no cgroup2, or the own cgroup is not delegated.
    """
    rep = discover() if report is None else report
    if rep.own_dir is None:
        raise UnsupportedError("no cgroup v2 found for this process", feature="cgroup2")
    if rep.own_dir == rep.mount_point or os.path.basename(rep.own_dir) == SELF_LEAF:
        return rep.own_dir  # the root cgroup is exempt from the rule; or done already
    leaf = os.path.join(rep.own_dir, SELF_LEAF)
    try:
        os.mkdir(leaf)
    except FileExistsError:
        pass
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise _not_delegated("create a leaf cgroup", rep.own_dir) from None
        raise SyscallError(e.errno or errno.EIO, "mkdir", leaf) from None
    _write(os.path.join(leaf, "cgroup.procs"), "0")
    return leaf


def _default_parent(report: CgroupReport) -> str | None:
    if report.own_dir is None:
        return None
    return os.path.join(_default_base(report.own_dir), DEFAULT_SUBTREE)


def find_stale(
    parent: str | os.PathLike[str] | None = None, *, report: CgroupReport | None = None
) -> list[str]:
    """Find cgroups ``nscg-<pid>-...`` left by processes that no longer exist.

    The creator pid in the name is compared with the live processes of this pid
    namespace; a reused pid makes a stale cgroup look alive (it is kept).

    Args:
        parent: where to look; default ``<own cgroup>/nscg``.
        report: a :func:`discover` result to reuse.

    Returns:
        The paths of the stale cgroups.
    """
    if parent is None:
        rep = discover() if report is None else report
        p = _default_parent(rep)
        if p is None:
            return []
    else:
        p = os.fspath(parent)
    out: list[str] = []
    try:
        with os.scandir(p) as it:
            entries = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
    except OSError:
        return []
    for n in entries:
        m = _NAME_RE.match(n)
        if m is not None and not _pid_alive(int(m.group(1))):
            out.append(os.path.join(p, n))
    return out


def remove_stale(
    parent: str | os.PathLike[str] | None = None,
    *,
    report: CgroupReport | None = None,
    timeout: float = 10.0,
) -> list[str]:
    """Kill the processes in, and remove, the cgroups :func:`find_stale` finds.

    Args:
        parent: where to look; default ``<own cgroup>/nscg``.
        report: a :func:`discover` result to reuse.
        timeout: seconds per cgroup.

    Returns:
        The paths removed.

    Raises:
        SyscallError / TimeoutError: a cgroup could not be removed.
    """
    removed: list[str] = []
    for path in find_stale(parent, report=report):
        CgroupV2(path).remove(kill=True, timeout=timeout)
        removed.append(path)
    return removed

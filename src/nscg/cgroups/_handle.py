"""The runtime handle: :class:`CgroupV2`, one live cgroup v2 directory, and its usage.

Creates a cgroup from a :class:`~nscg.cgroups.Limits` plan (every check reads first,
then writes), places processes, reports :class:`CgroupUsage`, freezes, kills and
removes it; :func:`move_self_to_leaf` frees the caller's own cgroup for controllers.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import signal
import time
import warnings
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Final, Literal, NoReturn

import attrs

from nscg.cgroups._discovery import CgroupReport, _count_procs, _read_set, discover
from nscg.cgroups._fs import (
    PressureLine,
    parse_flat_keyed,
    parse_nested_keyed,
    parse_pressure,
    read_text,
    wait_file,
)
from nscg.cgroups._limits import Limits
from nscg.errors import SpecError, SyscallError, UnsupportedError

DEFAULT_SUBTREE: Final = "nscg"
"""Name of the directory under the caller's own cgroup that holds nscg's cgroups."""

SELF_LEAF: Final = "nscg-self"
"""Leaf that :func:`move_self_to_leaf` moves the caller into; its parent stays the base."""

_counter = itertools.count(1)


_DELEGATION_HINT: Final = (
    "delegate a cgroup subtree to this user: run under systemd with `Delegate=yes` "
    "(e.g. `systemd-run --user --scope -p Delegate=yes ...`), or as root chown the "
    "directory and its cgroup.procs, cgroup.subtree_control and cgroup.threads to the "
    "user, then pass it as parent="
)


# ========================================================================= usage


@attrs.frozen
class CgroupEvents:
    """``cgroup.events``: whether processes live in the subtree, and whether it is frozen."""

    __module__ = "nscg.cgroups"  # documented and pickled under its public path

    populated: bool
    frozen: bool


@attrs.frozen
class MemoryEvents:
    """``memory.events`` counters (hierarchical)."""

    __module__ = "nscg.cgroups"  # documented and pickled under its public path

    low: int = 0
    high: int = 0
    max: int = 0
    oom: int = 0
    oom_kill: int = 0
    oom_group_kill: int = 0


@attrs.frozen
class Pressure:
    """A PSI file: ``some`` (at least one task stalled) and ``full`` (all stalled)."""

    __module__ = "nscg.cgroups"  # documented and pickled under its public path

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

    __module__ = "nscg.cgroups"  # documented and pickled under its public path

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

    __module__ = "nscg.cgroups"  # documented and pickled under its public path

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

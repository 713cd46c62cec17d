"""Discovery: the host's cgroup layout, a process's cgroup, and delegation.

Only reads files (``/proc/self/mountinfo``, ``/proc/PID/cgroup``, ``/proc/cgroups``
and the cgroup directories); nothing here writes.
"""

from __future__ import annotations

import enum
import errno
import os

import attrs

from nscg.cgroups._fs import (
    V1_TO_V2,
    parse_cgroup_file,
    parse_mountinfo,
    parse_proc_cgroups,
    read_text,
)
from nscg.errors import SyscallError


class CgroupMode(enum.Enum):
    """How cgroups are laid out on this host."""

    # (no __module__ = "nscg.cgroups" here: autodoc would then look for the members'
    # #: comments in nscg/cgroups/__init__.py and lose them)

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

    __module__ = "nscg.cgroups"  # documented and pickled under its public path

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

    __module__ = "nscg.cgroups"  # documented and pickled under its public path

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

"""The ways a spawn can run (vfork, in C, with Python steps) and how one is chosen."""

from __future__ import annotations

import enum
from typing import NamedTuple

from nscg._native import lib
from nscg._spawn._hooks import _parent_hooks
from nscg.container import (
    Container,
)
from nscg.namespaces import Namespace


# ------------------------------------------------------------------ the modes
class Mode(enum.Enum):
    """How a spawn runs after its clone: one straight path each (docs/design.md)."""

    #: no pid namespace, nothing for the parent to do: the payload is the first
    #: child, cloned vfork-style; the clone returns once it has exec'd or failed
    VFORK = "vfork"
    #: everything after the clone in the one C call: the id maps (written by
    #: C), the go-ahead, the wait for the payload's exec
    IN_C = "in C"
    #: Python acts between the clone and the exec: while the first child
    #: waits for the go-ahead it writes the maps through newuidmap, places the
    #: child in its cgroup (no clone3), attaches network links, or reads the
    #: child's "ready" of a late unshare; then ``nscg_spawn_wait``
    PYTHON_STEPS = "Python steps"


class Caller(NamedTuple):
    """What a spawn's mode depends on besides the Container."""

    #: both id maps can be written to /proc/PID/*_map by this process (no newuidmap)
    maps_by_write: bool


class ModeChoice(NamedTuple):
    """A spawn's mode and the parts of it that vary within a mode."""

    mode: Mode
    #: the first child starts pid 1 of a new (or joined) pid namespace
    pid_ns: bool
    #: who writes the id maps: "none" (no new user namespace), "c", "python"
    maps: str
    #: namespaces joined and then created (the child unshares after its setns)
    late: bool
    #: Python has steps while the first child waits (a cgroup, network links)
    steps: bool


def choose_mode(c: Container, caller: Caller) -> ModeChoice:
    """The mode of a spawn of ``c`` by ``caller``: a pure function (tests/unit/test_modes.py)."""
    ns = c.namespaces
    late = bool(c.join) and bool(ns & ~Namespace.TIME)
    pid_ns = bool(ns & Namespace.PID) or any(r.kind == Namespace.PID for r in c.join)
    steps = c.cgroup is not None or bool(
        _parent_hooks(c)
    )  # (a cgroup: the fallback without clone3)
    if not ns & Namespace.USER:
        maps = "none"
    elif caller.maps_by_write and not (steps or late):
        maps = "c"
    else:
        maps = "python"
    if not (pid_ns or steps or maps != "none"):
        mode = Mode.VFORK
    elif steps or late or maps == "python":
        mode = Mode.PYTHON_STEPS
    else:
        mode = Mode.IN_C
    return ModeChoice(mode, pid_ns, maps, late, steps)


def mode_flags(m: ModeChoice) -> int:
    """The NSCG_F_* flags of a mode (what spawn.c's path for it reads)."""
    flags = lib.NSCG_F_UNSHARE_LATE if m.late else 0
    if m.pid_ns:
        flags |= lib.NSCG_F_FORK_PIDNS | lib.NSCG_F_MAKE_STATUS
    if m.mode is Mode.VFORK:
        return flags | lib.NSCG_F_VFORK
    if m.maps != "none" or m.steps:
        flags |= lib.NSCG_F_WAIT_PARENT  # (the first child waits for the go-ahead)
    if m.mode is Mode.IN_C:
        flags |= lib.NSCG_F_WAIT_EXEC
        if m.maps == "c":
            flags |= lib.NSCG_F_PARENT_MAPS
    return flags


def _mode_of(flags: int) -> Mode:
    """The mode a spawn's flags select (the prepared mode, or a test hook's)."""
    if flags & lib.NSCG_F_VFORK:
        return Mode.VFORK
    return Mode.IN_C if flags & lib.NSCG_F_WAIT_EXEC else Mode.PYTHON_STEPS

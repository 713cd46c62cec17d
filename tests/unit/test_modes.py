"""The spawn modes: one pure function of (Container, caller), tested as a table.

No kernel needed: choose_mode reads the spec only, and nscg_check_flags is a
pure function of the flags (it refuses the combinations no path of spawn.c
serves, when a plan is prepared and again at each spawn).
"""

from __future__ import annotations

import itertools

import attrs
import pytest

from nscg import Container, Namespace, Network
from nscg._native import lib
from nscg._spawn import Caller, Mode, ModeChoice, choose_mode, mode_flags
from nscg.namespaces import NamespaceRef

PLAIN = Container().without_rootfs().with_namespaces(Namespace.NONE)
NO_USER = Container().with_namespaces("pid,mount,net,uts,ipc")
W, H = Caller(maps_by_write=True), Caller(maps_by_write=False)


def _joining(c: Container, kind: Namespace) -> Container:
    # (a reference to nothing: choose_mode reads its kind only, never its fd)
    return attrs.evolve(c, join=(NamespaceRef(-1, kind),))


F = lib
VF = F.NSCG_F_VFORK
PID = F.NSCG_F_FORK_PIDNS | F.NSCG_F_MAKE_STATUS
WAIT = F.NSCG_F_WAIT_PARENT
IN_C = F.NSCG_F_WAIT_EXEC
MAPS_C = F.NSCG_F_WAIT_PARENT | F.NSCG_F_WAIT_EXEC | F.NSCG_F_PARENT_MAPS
LATE = F.NSCG_F_UNSHARE_LATE

TABLE = [
    # (spec, caller) -> mode, pid namespace, who writes the maps, late, steps; flags
    ("nothing new", PLAIN, W, Mode.VFORK, False, "none", False, False, VF),
    ("a mount namespace", PLAIN.with_namespaces("mount"), W, Mode.VFORK, False, "none",
     False, False, VF),
    ("pid namespace, no user namespace", NO_USER, W, Mode.IN_C, True, "none", False, False,
     PID | IN_C),
    ("the default, maps written by C", Container(), W, Mode.IN_C, True, "c", False, False,
     PID | MAPS_C),
    ("the default, maps through newuidmap", Container(), H, Mode.PYTHON_STEPS, True, "python",
     False, False, PID | WAIT),
    ("user namespace, no pid namespace", PLAIN.with_namespaces("user,mount"), W, Mode.IN_C,
     False, "c", False, False, MAPS_C),
    ("a cgroup", Container().with_cgroup(), W, Mode.PYTHON_STEPS, True, "python", False, True,
     PID | WAIT),
    ("a cgroup, no user namespace", NO_USER.with_cgroup(), W, Mode.PYTHON_STEPS, True, "none",
     False, True, PID | WAIT),
    ("a veth network", Container().with_network(Network.veth("10.9.0.2/24", "10.9.0.1/24")), W,
     Mode.PYTHON_STEPS, True, "python", False, True, PID | WAIT),
    ("joined, then created", _joining(Container(), Namespace.NET), W, Mode.PYTHON_STEPS, True,
     "python", True, False, PID | WAIT | LATE),
    ("joined, then created without a user namespace", _joining(NO_USER, Namespace.UTS), W,
     Mode.PYTHON_STEPS, True, "none", True, False, PID | LATE),
    ("joined only", _joining(PLAIN, Namespace.NET), W, Mode.VFORK, False, "none", False, False,
     VF),
    ("joined pid namespace", _joining(PLAIN, Namespace.PID), W, Mode.IN_C, True, "none", False,
     False, PID | IN_C),
]  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "caller", "mode", "pid_ns", "maps", "late", "steps", "flags"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_mode_table(
    spec: Container,
    caller: Caller,
    mode: Mode,
    pid_ns: bool,
    maps: str,
    late: bool,
    steps: bool,
    flags: int,
) -> None:
    got = choose_mode(spec, caller)
    assert got == ModeChoice(mode, pid_ns, maps, late, steps)
    assert mode_flags(got) == flags
    assert lib.nscg_check_flags(flags) == 0


def test_every_mode_choice_has_a_path_in_c() -> None:
    for mode, pid_ns, maps, late, steps in itertools.product(
        Mode, (False, True), ("none", "c", "python"), (False, True), (False, True)
    ):
        m = ModeChoice(mode, pid_ns, maps, late, steps)
        possible = (
            (mode is not Mode.VFORK or not (pid_ns or steps or maps != "none"))
            and (mode is not Mode.IN_C or not (steps or late or maps == "python"))
            and (maps != "c" or mode is Mode.IN_C)
        )
        if possible:
            assert lib.nscg_check_flags(mode_flags(m)) == 0, m


@pytest.mark.parametrize(
    "flags",
    [
        VF | WAIT,
        VF | PID,
        VF | IN_C,
        VF | F.NSCG_F_INIT,
        F.NSCG_F_PARENT_MAPS | WAIT,  # maps in C, but nobody waits for the exec in C
        WAIT | IN_C,  # a go-ahead nobody writes
        IN_C | LATE,  # the late unshare's "ready" is Python's to read
        F.NSCG_F_FORK_PIDNS | IN_C,  # pid 1's pid has no status page to go to
        F.NSCG_F_MAKE_STATUS | IN_C,
        F.NSCG_F_INIT | IN_C,
    ],
)
def test_impossible_flags_are_refused(flags: int) -> None:
    assert lib.nscg_check_flags(flags) != 0

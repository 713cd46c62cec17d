"""The parts that hook into a spawn: small Protocols, no concrete part named here.

A network is a :class:`ParentHook`; a root filesystem made per spawn (overlays) is a
:class:`RootRun` (``nscg._rootfs_run.RootfsRun``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from nscg.container import Container
from nscg.process import Process


class ParentHook(Protocol):
    """Something the parent sets up for a sandbox while its first child waits.

    ``attach(pid)`` runs after the id maps are written and before the child is
    let go (the child is in its new namespaces, e.g. its network namespace is
    ``/proc/PID/ns/net``); it returns a callable that undoes the setup, called
    once the sandbox has been reaped, or at once if the spawn fails.
    """

    def attach(self, pid: int) -> Callable[[], None]:
        """Set up for the child ``pid``; return the undo callable."""
        ...


def _parent_hooks(c: Container) -> list[ParentHook]:
    hooks: list[ParentHook] = []
    if c.network is not None:
        hooks.append(c.network)
    return hooks


class RootRun(Protocol):
    """A root filesystem made for one spawn: its mounts go into that spawn's plan.

    The engine fills its mounts into the plan (``fill``, ``prims``), hands its lower
    trees to the child (``take_lower_trees``), and gives it the :class:`Process` once
    there is one (``attach``: it reports the changes and cleans up after the reap);
    ``cleanup`` if the spawn fails before that.
    """

    @property
    def prims(self) -> Sequence[Any]:
        """The flattened mount operations, in plan order."""
        ...

    def fill(self, p: Any, plan: Any) -> None:
        """Write the mount operations into the plan ``plan`` (kept alive by ``p``)."""
        ...

    def take_lower_trees(self) -> list[int]:
        """The fds of the lower trees the child mounts (the caller owns them now)."""
        ...

    def attach(self, proc: Process[Any]) -> None:
        """The sandbox is ``proc``'s now: report and clean up after its reap."""
        ...

    def cleanup(self) -> None:
        """Remove what was made: the spawn failed."""
        ...

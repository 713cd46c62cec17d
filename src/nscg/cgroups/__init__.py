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

The package, one concept per module: ``_limits`` (the :class:`Limits` spec, pure
values), ``_discovery`` (:func:`discover`: what the host has, read only),
``_handle`` (:class:`CgroupV2`: one live cgroup), ``_stale`` (:func:`find_stale`,
:func:`remove_stale`) and ``_fs`` (cgroupfs parsers and file watching). The public
names are the ones below, importable from ``nscg.cgroups`` only.
"""

from __future__ import annotations

from nscg.cgroups._discovery import (
    CgroupMode,
    CgroupReport,
    Delegation,
    check_delegation,
    discover,
)
from nscg.cgroups._fs import PressureLine, parse_size
from nscg.cgroups._handle import DEFAULT_SUBTREE as DEFAULT_SUBTREE
from nscg.cgroups._handle import SELF_LEAF as SELF_LEAF
from nscg.cgroups._handle import (
    CgroupEvents,
    CgroupUsage,
    CgroupV2,
    MemoryEvents,
    Pressure,
    move_self_to_leaf,
)
from nscg.cgroups._limits import Bytes as Bytes
from nscg.cgroups._limits import CgroupSpec, CpuMax, HugetlbLimit, IoLimit, Limits
from nscg.cgroups._stale import find_stale, remove_stale

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

"""Stale cleanup: cgroups ``nscg-<pid>-...`` whose creator no longer exists."""

from __future__ import annotations

import os
import re
from typing import Final

from nscg.cgroups._discovery import CgroupReport, discover
from nscg.cgroups._handle import CgroupV2, _default_parent

_NAME_RE: Final = re.compile(r"^nscg-([0-9]+)-([0-9]+)-([0-9a-f]+)$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

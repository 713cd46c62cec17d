"""What this host supports, and why not: :func:`nscg.features`.

A private module: its two names are public as ``nscg.Features`` and
``nscg.features`` (a public ``nscg.features`` module would replace the
function on the package once imported: Python sets a package's attribute to
each submodule it imports).
"""

from __future__ import annotations

import os

import attrs

from nscg import _host
from nscg._native import lib

__all__ = ["Features", "features"]


@attrs.frozen
class Features:
    """A report of the kernel features nscg uses on this host (see :func:`nscg.features`).

    Attributes:
        kernel: the running kernel's release.
        clone3: ``clone3(2)`` exists (else nscg falls back to ``clone`` + pidfd).
        clone_into_cgroup: a child can be born in its cgroup (``CLONE_INTO_CGROUP``).
        pidfd: pidfds work (``pidfd_open``).
        namespaces: each namespace kind and whether the kernel has it.
        user_namespaces: whether this caller may create a user namespace.
        userns_restriction: why not, if something restricts it.
        newuidmap, newgidmap: paths of the setuid helpers, if installed.
        seccomp: the kernel has seccomp filters.
        notes: other findings, one sentence each.
    """

    kernel: str
    clone3: bool
    clone_into_cgroup: bool
    pidfd: bool
    namespaces: dict[str, bool]
    user_namespaces: bool
    userns_restriction: str | None
    newuidmap: str | None
    newgidmap: str | None
    seccomp: bool
    notes: tuple[str, ...] = ()


def _seccomp() -> bool:
    return _host.status_field("Seccomp") is not None


def features() -> Features:
    """Probe the host (read-only: nothing is created or changed) and report.

    Returns:
        A :class:`Features` snapshot.
    """
    from nscg._spawn import userns_restriction, which

    notes: list[str] = []
    clone3 = _host.has_clone3()
    if not clone3:
        notes.append("clone3 is missing (Linux < 5.3): nscg uses clone + pidfd_open")
    fd = lib.nscg_pidfd_open(os.getpid())
    pidfd = fd >= 0
    if pidfd:
        os.close(fd)
    ns = {}
    for name in ("user", "pid", "mnt", "net", "uts", "ipc", "cgroup", "time"):
        ns[name] = os.path.exists(f"/proc/self/ns/{name}")
    why = userns_restriction() if ns["user"] else "the kernel has no user namespaces"
    return Features(
        kernel=_host.kernel_release(),
        clone3=clone3,
        clone_into_cgroup=_host.has_clone_into_cgroup(),
        pidfd=pidfd,
        namespaces=ns,
        user_namespaces=ns["user"] and why is None,
        userns_restriction=why,
        newuidmap=which("newuidmap"),
        newgidmap=which("newgidmap"),
        seccomp=_seccomp(),
        notes=tuple(notes),
    )

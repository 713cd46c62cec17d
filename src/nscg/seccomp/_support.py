"""What the running kernel supports: seccomp filters, and each filter action."""

from __future__ import annotations

from typing import Final

from nscg.errors import UnsupportedError
from nscg.seccomp._rules import ActionKind
from nscg.seccomp._tables import Arch

# --------------------------------------------------------------------------- kernel support

_SECCOMP_GET_ACTION_AVAIL: Final = 2


def seccomp_action_available(kind: ActionKind) -> bool:
    """Whether the running kernel supports a filter action (``SECCOMP_GET_ACTION_AVAIL``).

    Args:
        kind: the action.

    Returns:
        True if available; False if not, or if the kernel lacks the seccomp syscall
        (before Linux 3.17; the query itself needs 4.14).
    """
    from nscg import _host

    return _host.seccomp_action_available(int(kind))


def check_seccomp_supported() -> None:
    """Raise unless the kernel can load seccomp filters.

    Raises:
        UnsupportedError: ``/proc/self/status`` has no ``Seccomp:`` field (the kernel was
            built without CONFIG_SECCOMP), or filters are unavailable
            (CONFIG_SECCOMP_FILTER), or nscg has no table for this architecture.
    """
    from nscg import _host

    if _host.status_field("Seccomp") is None:
        raise UnsupportedError(
            "the kernel has no seccomp support (no 'Seccomp:' in /proc/self/status; "
            "it needs CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y)",
            feature="seccomp",
        )
    Arch.native()
    if not seccomp_action_available(ActionKind.ALLOW):
        raise UnsupportedError(
            "the kernel does not accept seccomp filters (seccomp(SECCOMP_GET_ACTION_AVAIL) "
            "failed; it needs Linux >= 4.14 with CONFIG_SECCOMP_FILTER=y)",
            feature="seccomp.filter",
        )


def seccomp_supported() -> bool:
    """Whether the kernel can load seccomp filters built by nscg.

    Returns:
        True or False; :func:`check_seccomp_supported` says why not.
    """
    try:
        check_seccomp_supported()
    except UnsupportedError:
        return False
    return True

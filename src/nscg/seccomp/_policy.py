"""The sandbox's default seccomp policy, and the compiled program of a Container's filter.

``Container(seccomp="default")`` loads Docker's default profile for the capabilities the
sandbox keeps, with ``ptrace`` and the terminal-injection ioctls refused too
(:func:`sandbox_default`). The spawn engine asks :func:`program` for the bytes it hands
to the child.
"""

from __future__ import annotations

import functools
from typing import Final, Literal

from nscg.capabilities import Capabilities
from nscg.seccomp._rules import Arg
from nscg.seccomp._spec import Seccomp

TIOCSTI: Final = 0x5412  # <asm-generic/ioctls.h>: the numbers on every architecture the
TIOCLINUX: Final = 0x541C  # seccomp compiler supports (x86_64, i386, aarch64)


def sandbox_default(caps: Capabilities | Literal["inherit"] | None) -> Seccomp:
    """The filter ``seccomp="default"`` stands for, for a sandbox keeping ``caps``.

    Args:
        caps: the Container's capabilities (None: none kept; ``"inherit"``: all).

    Returns:
        Docker's default profile for the capabilities kept, with ``ptrace``,
        ``ioctl(TIOCSTI)`` and ``ioctl(TIOCLINUX)`` refused.
    """
    if caps == "inherit":
        caps = Capabilities.all()
    kept = sorted(c.name for c in caps.permitted) if caps is not None else []
    # Docker's profile, and ptrace refused too: moby allows it on kernels
    # >= 4.8, but a sandbox for untrusted code has no use for it and it
    # has been the way out more than once (CVE-2019-13272, old bypasses)
    spec = Seccomp.docker_default(capabilities=kept).deny("ptrace")
    # Terminal injection: TIOCSTI pushes input into a tty, TIOCLINUX
    # pastes a VT's selection (bubblewrap CVE-2017-5226, flatpak
    # CVE-2023-28100). new_session stops the payload from injecting into
    # the caller's controlling terminal, but it can still make any tty it
    # was given (one that is nobody's controlling terminal) its own and
    # queue input for the host's next reader. The kernel reads the
    # command as an int: the mask stops the high-bits bypass (CVE-2019-10063).
    for cmd in (TIOCSTI, TIOCLINUX):
        spec = spec.deny("ioctl", when=[Arg(1).masked_eq(0xFFFFFFFF, cmd)])
    return spec


@functools.lru_cache(maxsize=64)
def program(
    seccomp: Seccomp | Literal["default"], caps: Capabilities | Literal["inherit"] | None
) -> bytes:
    """The compiled filter of a Container (cached: specs are frozen and hashable).

    Args:
        seccomp: the Container's filter, or ``"default"`` (:func:`sandbox_default`).
        caps: the Container's capabilities (used by ``"default"`` only).

    Returns:
        The ``struct sock_filter`` array, 8 bytes per instruction.
    """
    spec = sandbox_default(caps) if seccomp == "default" else seccomp
    prog: bytes = spec.compile()
    return prog

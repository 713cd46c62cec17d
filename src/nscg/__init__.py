"""nscg: Linux sandboxes from namespaces, cgroup v2, capabilities and seccomp.

Compose a :class:`Container`, run a process in it, get a typed :class:`Result`::

    import nscg
    r = nscg.Container().run(["hostname"], capture_output=True)

The public names are loaded on first use (PEP 562), so ``import nscg`` itself
is cheap; ``nscg.Container`` pulls in the spawn machinery.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~10 ms

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "DEVNULL": "nscg._spawn",
    "PIPE": "nscg._spawn",
    "STDOUT": "nscg._spawn",
    "Container": "nscg.container",
    "Rlimit": "nscg.container",
    "CalledProcessError": "nscg.errors",
    "ExecutableNotFoundError": "nscg.errors",
    "ExecutablePermissionError": "nscg.errors",
    "NscgError": "nscg.errors",
    "SpawnError": "nscg.errors",
    "SpecError": "nscg.errors",
    "SyscallError": "nscg.errors",
    "TimeoutExpired": "nscg.errors",
    "UnsupportedError": "nscg.errors",
    "Features": "nscg.features",
    "features": "nscg.features",
    "IdMap": "nscg.namespaces",
    "Namespace": "nscg.namespaces",
    "NamespaceRef": "nscg.namespaces",
    "TimeOffsets": "nscg.namespaces",
    "Bridge": "nscg.network",
    "Network": "nscg.network",
    "NetworkHost": "nscg.network",
    "PortForward": "nscg.network",
    "Process": "nscg.process",
    "Result": "nscg.process",
    "Changes": "nscg.rootfs",
    "RootFS": "nscg.rootfs",
    "Stage": "nscg.process",
    "Usage": "nscg.process",
}

__all__ = [
    "Bridge",
    "CalledProcessError",
    "Changes",
    "Container",
    "DEVNULL",
    "ExecutableNotFoundError",
    "ExecutablePermissionError",
    "Features",
    "IdMap",
    "Namespace",
    "NamespaceRef",
    "Network",
    "NetworkHost",
    "NscgError",
    "PIPE",
    "PortForward",
    "Process",
    "Result",
    "Rlimit",
    "RootFS",
    "STDOUT",
    "SpawnError",
    "SpecError",
    "Stage",
    "SyscallError",
    "TimeOffsets",
    "TimeoutExpired",
    "UnsupportedError",
    "Usage",
    "features",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nscg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from typing import Any

    from nscg._spawn import DEVNULL, PIPE, STDOUT
    from nscg.container import Container, Rlimit
    from nscg.errors import (
        CalledProcessError,
        ExecutableNotFoundError,
        ExecutablePermissionError,
        NscgError,
        SpawnError,
        SpecError,
        SyscallError,
        TimeoutExpired,
        UnsupportedError,
    )
    from nscg.features import Features, features
    from nscg.namespaces import IdMap, Namespace, NamespaceRef, TimeOffsets
    from nscg.network import Bridge, Network, NetworkHost, PortForward
    from nscg.process import Process, Result, Stage, Usage
    from nscg.rootfs import Changes, RootFS

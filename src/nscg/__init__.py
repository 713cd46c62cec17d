"""nscg: Linux sandboxes from namespaces, cgroup v2, capabilities and seccomp.

Compose a :class:`Container`, run a process in it, get a typed :class:`Result`::

    import nscg
    r = nscg.Container().run(["hostname"], capture_output=True)
"""

from __future__ import annotations

from nscg._spawn import DEVNULL, PIPE, STDOUT
from nscg.container import Container, Rlimit
from nscg.errors import (
    CalledProcessError,
    ExecutableNotFoundError,
    NscgError,
    SpawnError,
    SpecError,
    SyscallError,
    TimeoutExpired,
    UnsupportedError,
)
from nscg.features import Features, features
from nscg.namespaces import IdMap, Namespace, NamespaceRef, TimeOffsets
from nscg.process import Process, Result, Stage, Usage

__version__ = "0.1.0"

__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "CalledProcessError",
    "Container",
    "ExecutableNotFoundError",
    "Features",
    "IdMap",
    "Namespace",
    "NamespaceRef",
    "NscgError",
    "Process",
    "Result",
    "Rlimit",
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

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

#: The one export list: public name -> the module that defines it. ``__all__``,
#: the lazy ``__getattr__`` and the API page (docs/api.md, through
#: docs/_ext/nscg_exports.py) are derived from it; the TYPE_CHECKING block at
#: the end says the same to type checkers, which cannot read a dict
#: (tests/unit/test_exports.py checks that the two agree).
_EXPORTS: dict[str, str] = {
    # the sandbox spec and running it
    "Container": "nscg.container",
    "Rlimit": "nscg.container",
    "SpawnOptions": "nscg.container",
    "RunOptions": "nscg.container",
    "PIPE": "nscg.container",
    "DEVNULL": "nscg.container",
    "STDOUT": "nscg.container",
    "Process": "nscg.process",
    "Result": "nscg.process",
    "Usage": "nscg.process",
    "Stage": "nscg.process",
    # the parts a Container is made of, each usable on its own
    "Namespace": "nscg.namespaces",
    "IdMap": "nscg.namespaces",
    "NamespaceRef": "nscg.namespaces",
    "TimeOffsets": "nscg.namespaces",
    "RootFS": "nscg.rootfs",
    "Changes": "nscg.rootfs",
    "CgroupV2": "nscg.cgroups",
    "Limits": "nscg.cgroups",
    "Capabilities": "nscg.capabilities",
    "Capability": "nscg.capabilities",
    "Seccomp": "nscg.seccomp",
    "Network": "nscg.network",
    "NetworkHost": "nscg.network",
    "Bridge": "nscg.network",
    "PortForward": "nscg.network",
    # images: OCI layouts and archives, Docker archives (the layer store: nscg.images)
    "Image": "nscg.images",
    "ImageConfig": "nscg.images",
    # what the host supports
    "Features": "nscg._features",
    "features": "nscg._features",
    # errors
    "NscgError": "nscg.errors",
    "SpecError": "nscg.errors",
    "SyscallError": "nscg.errors",
    "SpawnError": "nscg.errors",
    "UnsupportedError": "nscg.errors",
    "ExecutableNotFoundError": "nscg.errors",
    "ExecutablePermissionError": "nscg.errors",
    "TimeoutExpired": "nscg.errors",
    "CalledProcessError": "nscg.errors",
    "ImageError": "nscg.images",
    "ImageFormatError": "nscg.images",
    "TagNotFoundError": "nscg.images",
    "BlobError": "nscg.images",
    "DigestMismatchError": "nscg.images",
    "LayerError": "nscg.images",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nscg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # the same names, for type checkers ("X as X": re-exported)
    from nscg._features import Features as Features
    from nscg._features import features as features
    from nscg.capabilities import Capabilities as Capabilities
    from nscg.capabilities import Capability as Capability
    from nscg.cgroups import CgroupV2 as CgroupV2
    from nscg.cgroups import Limits as Limits
    from nscg.container import DEVNULL as DEVNULL
    from nscg.container import PIPE as PIPE
    from nscg.container import STDOUT as STDOUT
    from nscg.container import Container as Container
    from nscg.container import Rlimit as Rlimit
    from nscg.container import RunOptions as RunOptions
    from nscg.container import SpawnOptions as SpawnOptions
    from nscg.errors import CalledProcessError as CalledProcessError
    from nscg.errors import ExecutableNotFoundError as ExecutableNotFoundError
    from nscg.errors import ExecutablePermissionError as ExecutablePermissionError
    from nscg.errors import NscgError as NscgError
    from nscg.errors import SpawnError as SpawnError
    from nscg.errors import SpecError as SpecError
    from nscg.errors import SyscallError as SyscallError
    from nscg.errors import TimeoutExpired as TimeoutExpired
    from nscg.errors import UnsupportedError as UnsupportedError
    from nscg.images import BlobError as BlobError
    from nscg.images import DigestMismatchError as DigestMismatchError
    from nscg.images import Image as Image
    from nscg.images import ImageConfig as ImageConfig
    from nscg.images import ImageError as ImageError
    from nscg.images import ImageFormatError as ImageFormatError
    from nscg.images import LayerError as LayerError
    from nscg.images import TagNotFoundError as TagNotFoundError
    from nscg.namespaces import IdMap as IdMap
    from nscg.namespaces import Namespace as Namespace
    from nscg.namespaces import NamespaceRef as NamespaceRef
    from nscg.namespaces import TimeOffsets as TimeOffsets
    from nscg.network import Bridge as Bridge
    from nscg.network import Network as Network
    from nscg.network import NetworkHost as NetworkHost
    from nscg.network import PortForward as PortForward
    from nscg.process import Process as Process
    from nscg.process import Result as Result
    from nscg.process import Stage as Stage
    from nscg.process import Usage as Usage
    from nscg.rootfs import Changes as Changes
    from nscg.rootfs import RootFS as RootFS
    from nscg.seccomp import Seccomp as Seccomp

"""The sandbox's /etc files (hosts, resolv.conf) where its root has none of its own."""

from __future__ import annotations

import os

from nscg.container import (
    Container,
)
from nscg.namespaces import Namespace
from nscg.network import Network


def _with_etc_files(c: Container) -> tuple[tuple[str, bytes, str], ...]:
    """The /etc/hosts (and resolv.conf) nscg gives a sandbox with its own root and hostname.

    Like Docker: the sandbox's hostname resolves (to its own address on a veth
    or bridge network, else 127.0.1.1), and /etc/resolv.conf lists no name
    server the sandbox cannot reach. Each file is bound read-only over the
    root's own, only where the root has one and the plan does not already put
    something there. The files are written by the child into the sandbox's
    scratch memory (see ``_native/mount.c``): they never have a host path.
    Returns (path inside, content, the host directory holding the root's own
    file) for each.
    """
    root = c.rootfs
    assert root is not None
    if not c.namespaces & Namespace.UTS and c.network is None:
        return ()
    paths = ["/etc/hosts"]
    if c.namespaces & Namespace.NET:  # the host's resolver is out of reach
        paths.append("/etc/resolv.conf")
    targets: list[tuple[str, str]] = []
    for path in paths:
        if any(op.dest == path for op in root.ops):
            continue
        hosts = root.host_paths(path)
        found = [h for h in hosts or () if os.path.isfile(h)]
        if found:
            targets.append((path, os.path.dirname(found[0])))
    if not targets:
        return ()
    name = c.hostname or "nscg"
    net = c.network if c.network is not None else Network.none()
    texts = {
        "/etc/hosts": net.hosts_entries(name),
        "/etc/resolv.conf": net.resolv_conf(),
    }
    return tuple((path, os.fsencode(texts[path]), where) for path, where in targets)

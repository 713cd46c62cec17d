"""Networks for sandboxes: loopback only, the host's, veth links, bridges, port forwards.

A sandbox gets only ``lo`` by default (:meth:`Network.none`). The pieces here
give it more, composed into a :class:`nscg.Container` with
:meth:`nscg.Container.with_network`:

* :meth:`Network.host` shares the caller's network namespace (explicit opt-in:
  the sandbox then sees and uses the host's interfaces);
* :meth:`Network.veth` is a veth pair: one end in the sandbox (``eth0``), the
  other in a :class:`NetworkHost` (the caller's namespace, or a private one),
  IPv4 and optionally IPv6 addresses on both ends, an MTU and a default route
  inside;
* :class:`Bridge` is a Linux bridge in a :class:`NetworkHost` (a private
  network namespace by default); :meth:`Bridge.link` gives a sandbox a port on
  it with an address leased from the bridge's subnet;
* :class:`PortForward` relays TCP from ``127.0.0.1:PORT`` (of the caller, or of
  a :class:`NetworkHost`) to a port inside a sandbox.

All link, address and route work is rtnetlink from the parent
(:mod:`nscg._netlink`), done while the sandbox's first process waits in its new
namespaces (a :class:`nscg._spawn.ParentHook`); the undo runs once the sandbox
has been reaped, or at once if the spawn fails.

Privileges: as root, the parent works inside the sandbox's and the private
namespaces from short-lived helper threads (``setns(CLONE_NEWNET)``). A rootless
caller may not ``setns`` into any network namespace (the kernel wants
``CAP_SYS_ADMIN`` in the caller's own user namespace), so a rootless
:class:`NetworkHost` is served by a small helper process, root in its own user
namespace, that creates sockets there (or in an attached sandbox's namespace) and
passes them back; sandboxes attached to it join that user namespace. A veth into
the caller's own namespace needs root. :meth:`Network.none`,
:meth:`Network.host` and joining another sandbox's network (a sidecar) need
nothing.

Why a netlink module of our own and not pyroute2: see :mod:`nscg._netlink`
(no dependency on the spawn path, typed results, our errors; pyroute2 forks
helper processes for netns work).

The package, one concept per module: ``_spec`` (:class:`Network`: pure values),
``_hosts`` (:class:`NetworkHost`), ``_bridges`` (:class:`Bridge` and its address pool),
``_forward`` (:class:`PortForward`) and ``_wiring`` (the veth work of
:meth:`Network.attach` and its undo, :func:`settle`). The public names are the ones
below, importable from ``nscg.network``.
"""

from __future__ import annotations

from nscg.network._bridges import Bridge
from nscg.network._forward import PortForward
from nscg.network._hosts import NetworkHost
from nscg.network._spec import Network, WiredNetwork
from nscg.network._spec import NetworkKind as NetworkKind
from nscg.network._wiring import settle

__all__ = ["Bridge", "Network", "NetworkHost", "PortForward", "WiredNetwork", "settle"]

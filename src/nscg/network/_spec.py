"""The spec: :class:`Network` and :class:`WiredNetwork`, values that say how a sandbox is
networked.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import attrs

from nscg.errors import SpecError

if TYPE_CHECKING:
    from nscg._netlink import IPInterface, NetlinkSocket
    from nscg.network._bridges import Bridge
    from nscg.network._hosts import NetworkHost


NetworkKind = Literal["none", "host", "veth", "bridge"]


# -- the spec ------------------------------------------------------------------------------


def _iface4(value: str | ipaddress.IPv4Interface | None) -> ipaddress.IPv4Interface | None:
    if value is None or isinstance(value, ipaddress.IPv4Interface):
        return value
    try:
        return ipaddress.IPv4Interface(value)
    except ValueError as exc:
        raise SpecError(f"not an IPv4 address with prefix: {value!r} ({exc})") from None


def _iface6(value: str | ipaddress.IPv6Interface | None) -> ipaddress.IPv6Interface | None:
    if value is None or isinstance(value, ipaddress.IPv6Interface):
        return value
    try:
        return ipaddress.IPv6Interface(value)
    except ValueError as exc:
        raise SpecError(f"not an IPv6 address with prefix: {value!r} ({exc})") from None


def _check_mtu(_inst: object, _attr: object, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 68 <= value <= 65535:
        raise SpecError(f"an MTU is an integer in [68, 65535], got {value!r}")


def _check_ifname(_inst: object, _attr: object, value: str) -> None:
    from nscg._netlink import _check_name

    _check_name(value)


@attrs.frozen(eq=False)
class Network:
    """How a sandbox is networked; compose it with :meth:`nscg.Container.with_network`.

    Build one with :meth:`none`, :meth:`host`, :meth:`veth` or
    :meth:`Bridge.link`. A veth or bridge network is a parent hook: while the
    sandbox's first process waits in its new network namespace, the parent creates
    the veth pair (the host end named ``nscg`` + 10 hex digits, unique), moves
    one end into the sandbox as :attr:`name`, sets the MTU, the addresses, and the
    default route. Once the sandbox is reaped, the pair goes away with its
    namespace (or is deleted, see :func:`settle`) and a bridge address returns to
    its pool; if the spawn fails, all of it is undone before the error propagates.

    Attributes:
        kind: ``"none"``, ``"host"``, ``"veth"`` or ``"bridge"``.
        name: the interface name inside the sandbox.
        address, address6: the sandbox's IPv4/IPv6 address with prefix.
        peer_address, peer_address6: the host end's (veth) or the bridge's
            (bridge) address: the sandbox's default gateway.
        mtu: the MTU of both ends.
        peer_ns: the namespace of the host end (veth; None: the caller's own).
        bridge: the bridge to attach to (bridge).
    """

    __module__ = "nscg.network"  # documented and pickled under its public path

    kind: NetworkKind = attrs.field(
        default="none", validator=attrs.validators.in_(("none", "host", "veth", "bridge"))
    )
    name: str = attrs.field(default="eth0", validator=_check_ifname)
    address: ipaddress.IPv4Interface | None = attrs.field(default=None, converter=_iface4)
    address6: ipaddress.IPv6Interface | None = attrs.field(default=None, converter=_iface6)
    peer_address: ipaddress.IPv4Interface | None = attrs.field(default=None, converter=_iface4)
    peer_address6: ipaddress.IPv6Interface | None = attrs.field(default=None, converter=_iface6)
    mtu: int = attrs.field(default=1500, validator=_check_mtu)
    peer_ns: NetworkHost | None = None
    bridge: Bridge | None = None

    def __attrs_post_init__(self) -> None:
        """Check the fields that go together."""
        if self.kind in ("veth", "bridge"):
            if self.address is None or self.peer_address is None:
                raise SpecError(f"a {self.kind} network needs address and peer_address")
            pairs: list[tuple[IPInterface, IPInterface]] = [(self.address, self.peer_address)]
            if (self.address6 is None) != (self.peer_address6 is None):
                raise SpecError("give both address6 and peer_address6, or neither")
            if self.address6 is not None and self.peer_address6 is not None:
                pairs.append((self.address6, self.peer_address6))
            for mine, peer in pairs:
                if mine.network != peer.network:
                    raise SpecError(f"{mine} and {peer} are not in the same subnet")
                if mine.ip == peer.ip:
                    raise SpecError(f"the sandbox and its peer both have {mine.ip}")
        if self.kind == "bridge" and self.bridge is None:
            raise SpecError("a bridge network needs its Bridge")

    @classmethod
    def none(cls) -> Network:
        """Loopback only, in a new network namespace (the default).

        Returns:
            The spec; ``with_network(Network.none())`` is ``network=None``.
        """
        return cls("none")

    @classmethod
    def host(cls) -> Network:
        """Share the caller's network namespace: the sandbox sees the host's network.

        Returns:
            The spec; ``with_network`` removes ``Namespace.NET`` from the container.
        """
        return cls("host")

    @classmethod
    def veth(
        cls,
        address: str | ipaddress.IPv4Interface,
        peer_address: str | ipaddress.IPv4Interface,
        *,
        address6: str | ipaddress.IPv6Interface | None = None,
        peer_address6: str | ipaddress.IPv6Interface | None = None,
        mtu: int = 1500,
        name: str = "eth0",
        host: NetworkHost | None = None,
    ) -> WiredNetwork:
        """A veth pair between the sandbox and ``host`` (the caller's namespace by default).

        Args:
            address: the sandbox's IPv4 address with prefix (``"10.0.0.2/24"``).
            peer_address: the host end's address, the sandbox's default gateway.
            address6, peer_address6: the same for IPv6 (optional, both or neither).
            mtu: the MTU of both ends.
            name: the interface name inside.
            host: where the host end lives; None: the caller's own namespace
                (changes the host's network: root only).

        Returns:
            The spec.

        Raises:
            SpecError: addresses not in one subnet, bad name or MTU.
        """
        return WiredNetwork(
            "veth",
            name=name,
            address=address,
            address6=address6,
            peer_address=peer_address,
            peer_address6=peer_address6,
            mtu=mtu,
            peer_ns=host,
        )

    def userns_fd(self) -> int | None:
        """The user namespace a sandbox on this network must join (rootless hosts).

        Returns:
            The fd of the host's user namespace (owned by the host), or None.
        """
        host = self.bridge.host if self.bridge is not None else self.peer_ns
        return None if host is None else host.userns_fd()

    # -- what the sandbox's /etc gets ---

    def hosts_entries(self, hostname: str = "nscg") -> str:
        """The ``/etc/hosts`` text for a sandbox with this network.

        Args:
            hostname: the sandbox's hostname.

        Returns:
            The file's text (written into the sandbox's root by a RootFS with a
            writable ``/etc``).
        """
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        if self.address is not None:
            lines.append(f"{self.address.ip}\t{hostname}")
        else:
            lines.append(f"127.0.1.1\t{hostname}")
        if self.address6 is not None:
            lines.append(f"{self.address6.ip}\t{hostname}")
        return "\n".join(lines) + "\n"

    def resolv_conf(self, nameservers: tuple[str, ...] = ()) -> str:
        """The ``/etc/resolv.conf`` text for a sandbox with this network.

        Args:
            nameservers: name servers the sandbox can reach (none by default: a
                veth or bridge network has no route to a resolver unless the
                caller provides one).

        Returns:
            The file's text.
        """
        return "".join(f"nameserver {ns}\n" for ns in nameservers) + "options ndots:0\n"

    # -- the parent hook ---

    def attach(self, pid: int) -> Callable[[], None]:
        """Wire the network of the waiting sandbox ``pid`` (the parent hook).

        The work is done by the runtime side of the package (``_wiring``): a spec
        holds no wiring code.

        Args:
            pid: a process in the sandbox's new network namespace.

        Returns:
            The undo callable.

        Raises:
            UnsupportedError: not root.
            SyscallError: a netlink request failed (nothing is left behind).
        """
        from nscg.network._wiring import attach  # the runtime side, loaded when wiring

        return attach(self, pid)

    def _configure_inside(self, nl: NetlinkSocket) -> None:
        """Set MTU, addresses, link up and default routes on the sandbox's end."""
        assert self.address is not None and self.peer_address is not None
        nl.set_mtu(self.name, self.mtu)
        nl.add_address(self.name, self.address)
        if self.address6 is not None:
            nl.add_address(self.name, self.address6, nodad=True)
        nl.set_up(self.name)
        nl.add_route(gateway=self.peer_address.ip, link=self.name)
        if self.peer_address6 is not None:
            nl.add_route(gateway=self.peer_address6.ip, link=self.name)


def _iface4_set(value: str | ipaddress.IPv4Interface | None) -> ipaddress.IPv4Interface:
    out = _iface4(value)
    if out is None:
        raise SpecError("a veth or bridge network needs address and peer_address")
    return out


@attrs.frozen
class WiredNetwork(Network):
    """A veth or bridge network: what :meth:`Network.veth` and :meth:`Bridge.link` return.

    A :class:`Network` whose IPv4 addresses are always set (typed so:
    ``Bridge.link().address.ip`` needs no check for None).
    """

    __module__ = "nscg.network"  # documented and pickled under its public path

    address: ipaddress.IPv4Interface = attrs.field(kw_only=True, converter=_iface4_set)
    peer_address: ipaddress.IPv4Interface = attrs.field(kw_only=True, converter=_iface4_set)

"""Bridges: a Linux bridge in a :class:`NetworkHost`, and the address pool its links lease
from.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import threading

from nscg.errors import SpecError, SyscallError
from nscg.network._hosts import NetworkHost
from nscg.network._spec import Network, WiredNetwork, _check_mtu
from nscg.network._wiring import _Janitor, settle

# -- address pool ------------------------------------------------------------------------


class _Pool:
    """Host addresses of a subnet, leased without collisions (thread-safe).

    Free addresses are handed out round-robin, so a just-released address is not
    reused at once (peers' ARP caches may still map it to the old sandbox).
    """

    def __init__(self, subnet: ipaddress.IPv4Network, reserved: set[int]) -> None:
        self.subnet = subnet
        base = int(subnet.network_address)
        self._first = base + 1
        self._last = int(subnet.broadcast_address) - 1 if subnet.prefixlen < 31 else base + 1
        self._used = set(reserved)
        self._cursor = self._first
        self._lock = threading.Lock()

    def lease(self, wanted: ipaddress.IPv4Address | None = None) -> ipaddress.IPv4Address:
        with self._lock:
            if wanted is not None:
                n = int(wanted)
                if wanted not in self.subnet or not self._first <= n <= self._last:
                    raise SpecError(f"{wanted} is not a host address of {self.subnet}")
                if n in self._used:
                    raise SpecError(f"{wanted} is already in use on {self.subnet}")
                self._used.add(n)
                return wanted
            size = self._last - self._first + 1
            for step in range(size):
                n = self._first + (self._cursor - self._first + step) % size
                if n not in self._used:
                    self._used.add(n)
                    self._cursor = n + 1 if n < self._last else self._first
                    return ipaddress.IPv4Address(n)
        raise SpecError(f"no free address left in {self.subnet}")

    def release(self, address: ipaddress.IPv4Address) -> None:
        with self._lock:
            self._used.discard(int(address))

    def in_use(self) -> int:
        with self._lock:
            return len(self._used)


# -- bridges ---------------------------------------------------------------------------------


class Bridge:
    """A Linux bridge that sandboxes attach to; addresses come from its subnet.

    By default the bridge lives in a private :class:`NetworkHost` created for it
    (and destroyed with it), so sandboxes on it reach each other and the bridge's
    own address (the gateway), and nothing else: no route leads out, and IP
    forwarding is off in a new namespace, so two bridges never route to each other.
    Pass ``host=NetworkHost.current()`` to put it in the caller's namespace (root,
    explicit).

    Example::

        with nscg.Bridge("10.88.0.0/24") as br:
            net = br.link()                       # leases 10.88.0.2
            server = nscg.Container().with_network(net).spawn([...])

    Args:
        subnet: the IPv4 subnet; the first host address goes to the bridge.
        subnet6: an optional IPv6 subnet (at least as large as ``subnet``); a
            sandbox gets the host number of its IPv4 address in it too.
        host: where the bridge lives (None: a new private namespace).
        name: the bridge's name (default ``nsbr`` + 8 hex digits).
        mtu: the MTU of the bridge and its links.

    Raises:
        UnsupportedError: not root.
        SyscallError: the bridge could not be created.
    """

    __module__ = "nscg.network"  # documented and pickled under its public path

    def __init__(
        self,
        subnet: str | ipaddress.IPv4Network = "10.88.0.0/24",
        subnet6: str | ipaddress.IPv6Network | None = None,
        *,
        host: NetworkHost | None = None,
        name: str | None = None,
        mtu: int = 1500,
    ) -> None:
        """Create the bridge (see the class docstring)."""
        try:
            self.subnet = ipaddress.IPv4Network(subnet)
            self.subnet6 = None if subnet6 is None else ipaddress.IPv6Network(subnet6)
        except ValueError as exc:
            raise SpecError(f"not a subnet: {exc}") from None
        if self.subnet.prefixlen > 30:
            raise SpecError(f"{self.subnet} is too small for a bridge (at most /30)")
        if self.subnet6 is not None and (
            self.subnet6.num_addresses < self.subnet.num_addresses or self.subnet6.prefixlen > 126
        ):
            raise SpecError(f"{self.subnet6} is smaller than {self.subnet}")
        _check_mtu(None, None, mtu)
        self.name = name or "nsbr" + secrets.token_hex(4)
        self.mtu = mtu
        gw = self.subnet.network_address + 1
        self.gateway = ipaddress.IPv4Interface(f"{gw}/{self.subnet.prefixlen}")
        self.gateway6 = (
            None
            if self.subnet6 is None
            else ipaddress.IPv6Interface(
                f"{self.subnet6.network_address + 1}/{self.subnet6.prefixlen}"
            )
        )
        self._pool = _Pool(self.subnet, {int(gw)})
        self._active: set[ipaddress.IPv4Address] = set()
        self._lock = threading.Lock()
        self._owns_host = host is None
        self.host = NetworkHost.create() if host is None else host
        try:
            nl = self.host.netlink()
            nl.add_bridge(self.name)
            try:
                nl.set_mtu(self.name, mtu)
                nl.add_address(self.name, self.gateway)
                if self.gateway6 is not None:
                    nl.add_address(self.name, self.gateway6, nodad=True)
                nl.set_up(self.name)
            except BaseException:
                nl.delete_link(self.name)
                raise
        except BaseException:
            if self._owns_host:
                self.host.close()
            raise
        self._closed = False

    def link(
        self, address: str | ipaddress.IPv4Address | None = None, *, name: str = "eth0"
    ) -> WiredNetwork:
        """Lease an address and return a network spec for a sandbox on this bridge.

        The lease ends when the sandbox spawned with the spec ends (or at
        :meth:`release`); spawning the same spec again re-leases the address if it
        is free, and fails with :class:`nscg.SpecError` if another live sandbox
        has it.

        Args:
            address: a specific host address of the subnet (default: the next free one).
            name: the interface name inside the sandbox.

        Returns:
            The spec, with ``.address`` (and ``.address6``) filled in.

        Raises:
            SpecError: the address is taken or not in the subnet, or none is left.
        """
        want = None if address is None else ipaddress.IPv4Address(address)
        ip = self._pool.lease(want)
        return WiredNetwork(
            "bridge",
            name=name,
            address=ipaddress.IPv4Interface(f"{ip}/{self.subnet.prefixlen}"),
            address6=self._v6(ip),
            peer_address=self.gateway,
            peer_address6=self.gateway6,
            mtu=self.mtu,
            bridge=self,
        )

    def _v6(self, ip: ipaddress.IPv4Address) -> ipaddress.IPv6Interface | None:
        if self.subnet6 is None:
            return None
        offset = int(ip) - int(self.subnet.network_address)
        return ipaddress.IPv6Interface(
            f"{self.subnet6.network_address + offset}/{self.subnet6.prefixlen}"
        )

    def release(self, network: Network) -> None:
        """Give back the address of a spec from :meth:`link` that will not be spawned.

        Args:
            network: the spec.
        """
        if network.bridge is self and network.address is not None:
            with self._lock:
                if network.address.ip in self._active:
                    return
            self._pool.release(network.address.ip)

    def _claim(self, network: Network) -> tuple[ipaddress.IPv4Address, ...]:
        """Mark ``network``'s address as used by a live sandbox (called by attach)."""
        if self._closed:
            raise SpecError(f"bridge {self.name} is closed")
        assert network.address is not None
        ip = network.address.ip
        with self._lock:
            if ip in self._active:
                raise SpecError(f"{ip} on bridge {self.name} is in use by a running sandbox")
            self._active.add(ip)
        with contextlib.suppress(SpecError):  # re-lease after an earlier sandbox ended
            self._pool.lease(ip)
        return (ip,)

    def _deactivate(self, leased: tuple[ipaddress.IPv4Address, ...]) -> None:
        with self._lock:
            self._active.difference_update(leased)

    def _release(self, ip: ipaddress.IPv4Address) -> None:
        with self._lock:
            if ip in self._active:  # the spec was spawned again meanwhile: keep the lease
                return
            self._pool.release(ip)

    @property
    def leased(self) -> int:
        """How many addresses are leased (by specs from :meth:`link` and running sandboxes).

        The lease of a sandbox that just ended is returned by :func:`settle`.

        Returns:
            The count (the bridge's own address not included).
        """
        return self._pool.in_use() - 1

    @property
    def attached(self) -> int:
        """How many running sandboxes are attached.

        Returns:
            The count.
        """
        with self._lock:
            return len(self._active)

    def ports(self) -> list[str]:
        """Names of the links attached to the bridge (host ends of sandboxes' veths).

        The pair of a sandbox that just ended may still be listed: see :func:`settle`.

        Returns:
            The names.
        """
        nl = self.host.netlink()
        index = nl.index(self.name)
        return [link.name for link in nl.links() if link.master == index]

    def close(self) -> None:
        """Delete the bridge (and its private namespace); idempotent."""
        if self._closed:
            return
        self._closed = True
        settle(2 * _Janitor.GRACE)
        try:
            # a private namespace takes the bridge with it (and RTM_DELLINK costs ~35 ms)
            if not self._owns_host and not self.host.closed:
                with contextlib.suppress(SyscallError):
                    self.host.netlink().delete_link(self.name)
        finally:
            if self._owns_host:
                self.host.close()

    def __enter__(self) -> Bridge:
        """Return self.

        Returns:
            This bridge.
        """
        return self

    def __exit__(self, *exc: object) -> None:
        """Close."""
        self.close()

    def __repr__(self) -> str:
        """Show name, subnet and namespace."""
        return f"<Bridge {self.name} {self.subnet} in {self.host!r}>"

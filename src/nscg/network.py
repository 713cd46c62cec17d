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
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import secrets
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypeVar

import attrs

from nscg._netlink import IPInterface, NetlinkSocket, _setns
from nscg.errors import SpecError, SyscallError, UnsupportedError

if TYPE_CHECKING:
    from nscg.process import Process

__all__ = ["Bridge", "Network", "NetworkHost", "PortForward", "WiredNetwork", "settle"]

_CLONE_NEWNET = 0x40000000
_T = TypeVar("_T")

NetworkKind = Literal["none", "host", "veth", "bridge"]


# -- running code inside another network namespace -------------------------------------


def _run_in_netns(netns_fd: int, fn: Callable[[], _T]) -> _T:
    """Run ``fn`` on a short-lived helper thread that has joined the network namespace.

    Sockets created by ``fn`` belong to that namespace for their whole life. The
    calling thread never changes namespace.
    """
    results: list[_T] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            _setns(netns_fd, _CLONE_NEWNET)
            results.append(fn())
        except BaseException as exc:
            errors.append(exc)

    # The thread ends right after fn, so it never runs anything else in that namespace.
    thread = threading.Thread(target=work, name="nscg-netns", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def _unshare_net() -> None:
    """``unshare(CLONE_NEWNET)`` for the calling thread."""
    from nscg import _host

    _host.unshare(_CLONE_NEWNET, "CLONE_NEWNET")


def _new_netns_fd() -> int:
    """Create a network namespace from a helper thread; return an fd that keeps it alive."""

    def make() -> int:
        _unshare_net()
        return os.open(
            f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC
        )

    results: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(make())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work, name="nscg-netns-new", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def _rootless_reason(exc: SyscallError) -> UnsupportedError:
    return UnsupportedError(
        f"joining or creating a network namespace from the parent failed ({exc}): "
        "it needs CAP_SYS_ADMIN and CAP_NET_ADMIN in the caller's own user namespace "
        "(run as root); rootless callers can use Network.none(), Network.host() and "
        "Container.joining(proc, kinds='user,net')",
        feature="network.veth",
    )


# -- the namespace that plays the host -------------------------------------------------


#: The rootless socket factory: a Python process in its own user and network
#: namespaces (root with every capability there, and over every namespace that user
#: namespace owns). It reads requests ``(family, type, proto)`` on a SEQPACKET
#: socket, with an optional network-namespace fd attached, creates the socket in
#: that namespace (``setns`` and back) or in its own, and sends it back.
_FACTORY = r"""
import array, ctypes, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
chan = socket.socket(fileno=int(sys.argv[1]))
home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
def setns(fd):
    if libc.setns(fd, 0x40000000) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
while True:
    msg, anc, _, _ = chan.recvmsg(64, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC)
    if not msg:
        break
    fds = array.array("i")
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % 4])
    try:
        family, type_, proto = struct.unpack("=iii", msg[:12])
        try:
            if fds:
                setns(fds[0])
            s = socket.socket(family, type_ | socket.SOCK_CLOEXEC, proto)
        finally:
            if fds:
                setns(home)
    except OSError as e:
        chan.sendmsg([struct.pack("=i", e.errno or 5)])
    else:
        rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [s.fileno()]))
        chan.sendmsg([struct.pack("=i", 0)], [rights])
        s.close()
    for fd in fds:
        os.close(fd)
"""


def _interpreter() -> str:
    """The interpreter that runs the rootless helper: this process's own.

    Raises:
        UnsupportedError: Python does not know its own executable (embedded).
    """
    if not sys.executable:
        raise UnsupportedError(
            "the rootless network helper needs sys.executable (this Python does not know "
            "its own executable: embedded?)",
            feature="network.rootless",
        )
    return sys.executable


class _Factory:
    """The parent's end of a rootless socket factory process (see ``_FACTORY``)."""

    def __init__(self) -> None:
        from nscg.container import Container

        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._lock = threading.Lock()
        try:
            spec = (
                Container()
                .without_rootfs()
                .with_namespaces("user,net")
                .with_capabilities("inherit")
                .with_seccomp("unconfined")
            )
            # the caller's own interpreter (its view is kept: no root of its own), isolated
            # from the environment (-I): not whatever "python3" the PATH finds first
            self.proc = spec.spawn(
                [_interpreter(), "-I", "-c", _FACTORY, str(child.fileno())],
                pass_fds=[child.fileno()],
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self._chan = parent
        try:
            self.netns = os.open(f"/proc/{self.proc.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            self.userns = os.open(f"/proc/{self.proc.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self.close()
            raise SyscallError(exc.errno or 0, "open", f"/proc/{self.proc.pid}/ns") from exc

    def socket(self, netns_fd: int | None, family: int, type: int, proto: int) -> socket.socket:
        """Have the factory create a socket in ``netns_fd`` (None: its own namespace)."""
        anc = [] if netns_fd is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _fds(netns_fd))]
        with self._lock:
            try:
                self._chan.sendmsg([struct.pack("=iii", family, type, proto)], anc)
                msg, ancdata, _, _ = self._chan.recvmsg(
                    16, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC
                )
            except OSError as exc:
                raise SyscallError(exc.errno or 0, "sendmsg", "network namespace helper") from exc
        got = [
            fd
            for level, kind, data in ancdata
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
            for fd in struct.unpack(f"={len(data) // 4}i", data[: len(data) // 4 * 4])
        ]
        err = struct.unpack("=i", msg[:4])[0] if len(msg) >= 4 else errno.EPIPE
        if err or not got:
            for fd in got:
                os.close(fd)
            raise SyscallError(err or errno.EPIPE, "socket", "in a network namespace (helper)")
        return socket.socket(fileno=got[0])

    def close(self) -> None:
        """Stop the helper (it exits at EOF) and close the namespace fds."""
        self._chan.close()
        for name in ("netns", "userns"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
        try:
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        self.proc.close()


def _fds(*fds: int) -> bytes:
    return struct.pack(f"={len(fds)}i", *fds)


class NetworkHost:
    """A network namespace that plays "the host" for sandboxes' links and bridges.

    :meth:`create` makes a private one (only ``lo``, up), owned by this object and
    destroyed by the kernel, with every link in it, once :meth:`close` drops the
    last reference; :meth:`current` stands for the caller's own namespace (using it
    for links changes the host's network: an explicit choice).

    As root, the parent works in these namespaces from helper threads (``setns``).
    A rootless caller may not ``setns`` into any network namespace, not even one it
    owns (the kernel wants ``CAP_SYS_ADMIN`` in the caller's own user namespace),
    so a rootless :meth:`create` starts a small helper process in a new user and
    network namespace: root there, it creates sockets on request in its namespace,
    or in the network namespace of a sandbox that joined its user namespace, and
    passes them back (``SCM_RIGHTS``). The rtnetlink requests are still sent by
    the parent; the kernel allows them because the parent owns that user namespace.
    Sandboxes attached to a rootless host therefore join its user namespace
    (:meth:`nscg.Container.with_network` arranges it): their uid 0 is the caller.
    """

    def __init__(self, fd: int, *, owned: bool, factory: _Factory | None = None) -> None:
        """Wrap an open network-namespace fd (taken over).

        Args:
            fd: an fd of ``/proc/PID/ns/net`` or similar; closed by :meth:`close`.
            owned: whether the namespace was created for this object.
            factory: the rootless helper process, if any.
        """
        self._fd = fd
        self.owned = owned
        self._factory = factory
        self._lock = threading.Lock()
        self._nl: NetlinkSocket | None = None

    @classmethod
    def create(cls, *, rootless: bool | None = None) -> NetworkHost:
        """Create a private network namespace with ``lo`` up.

        Args:
            rootless: use the rootless helper process (None: when not root).

        Returns:
            The new namespace.

        Raises:
            UnsupportedError: the kernel refuses (unprivileged user namespaces off).
        """
        if rootless is None:
            rootless = os.geteuid() != 0
        if rootless:
            try:
                factory = _Factory()
            except (SyscallError, OSError) as exc:
                raise UnsupportedError(
                    f"cannot start the rootless network helper: {exc}", feature="network.rootless"
                ) from exc
            try:
                fd = os.dup(factory.netns)
            except BaseException:
                factory.close()
                raise
            self = cls(fd, owned=True, factory=factory)
        else:
            try:
                fd = _new_netns_fd()
            except SyscallError as exc:
                raise _rootless_reason(exc) from exc
            self = cls(fd, owned=True)
        try:
            self.netlink().set_up("lo")
        except BaseException:
            self.close()
            raise
        return self

    @classmethod
    def current(cls) -> NetworkHost:
        """The caller's own network namespace (the real host, usually).

        Returns:
            A reference to it; closing it closes only the reference.
        """
        return cls(os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC), owned=False)

    def fileno(self) -> int:
        """Return the namespace fd.

        Returns:
            The fd.

        Raises:
            ValueError: closed.
        """
        if self._fd < 0:
            raise ValueError("the NetworkHost is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called.

        Returns:
            True once closed.
        """
        return self._fd < 0

    @property
    def rootless(self) -> bool:
        """Whether this namespace is served by the rootless helper process.

        Returns:
            True for a rootless host.
        """
        return self._factory is not None

    def userns_fd(self) -> int | None:
        """The user namespace sandboxes attached here must join (rootless), else None.

        Returns:
            An fd owned by this object, or None.
        """
        return None if self._factory is None else self._factory.userns

    def is_current(self) -> bool:
        """Whether this is the caller's own network namespace.

        Returns:
            True for the caller's namespace.
        """
        a, b = os.fstat(self.fileno()), os.stat("/proc/self/ns/net")
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def _socket_in(
        self, netns_fd: int | None, family: int, type: int, proto: int = 0
    ) -> socket.socket:
        """A socket in ``netns_fd`` (None: this namespace), by thread or by helper."""
        if self._factory is not None:
            return self._factory.socket(netns_fd, family, type, proto)
        fd = self.fileno() if netns_fd is None else netns_fd
        try:
            return _run_in_netns(
                fd, lambda: socket.socket(family, type | socket.SOCK_CLOEXEC, proto)
            )
        except SyscallError as exc:
            raise _rootless_reason(exc) from exc

    def netlink(self) -> NetlinkSocket:
        """An rtnetlink socket in this namespace (shared, thread-safe; closed with this).

        Returns:
            The socket.

        Raises:
            UnsupportedError: the namespace cannot be joined (not root).
        """
        with self._lock:
            if self._nl is None:
                if self._factory is None and self.is_current():
                    self._nl = NetlinkSocket()
                else:
                    self._nl = self.netlink_in(None)
            return self._nl

    def netlink_in(self, netns_fd: int | None) -> NetlinkSocket:
        """A new rtnetlink socket in another namespace (a sandbox's), made by this host.

        Args:
            netns_fd: the namespace (None: this one).

        Returns:
            The socket; the caller closes it.
        """
        sock = self._socket_in(netns_fd, socket.AF_NETLINK, socket.SOCK_RAW, 0)
        return NetlinkSocket._from_socket(sock)

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        """Create a socket that lives in this namespace.

        Args:
            family: the address family.
            type: the socket type.

        Returns:
            The socket (the caller owns it).
        """
        return self._socket_in(None, family, type)

    def close(self) -> None:
        """Close the reference (a private namespace then goes away with its links)."""
        with self._lock:
            nl, self._nl = self._nl, None
            fd, self._fd = self._fd, -1
            factory, self._factory = self._factory, None
        if nl is not None:
            nl.close()
        if fd >= 0:
            os.close(fd)
        if factory is not None:
            factory.close()

    def __enter__(self) -> NetworkHost:
        """Return self.

        Returns:
            This namespace.
        """
        return self

    def __exit__(self, *exc: object) -> None:
        """Close."""
        self.close()

    def __repr__(self) -> str:
        """Show the fd and whether it is private."""
        kind = "private" if self.owned else "shared"
        if self._factory is not None:
            kind += ", rootless"
        return f"<NetworkHost fd={self._fd} {kind}>"


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


def _host_end_name() -> str:
    """A fresh name for the host end of a veth pair: ``nscg`` + 10 hex digits (14 bytes)."""
    return "nscg" + secrets.token_hex(5)


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

        Args:
            pid: a process in the sandbox's new network namespace.

        Returns:
            The undo callable.

        Raises:
            UnsupportedError: not root.
            SyscallError: a netlink request failed (nothing is left behind).
        """
        if self.kind in ("none", "host"):
            return lambda: None
        leased: tuple[ipaddress.IPv4Address, ...] = ()
        if self.kind == "bridge":
            assert self.bridge is not None and self.address is not None
            leased = self.bridge._claim(self)
        host = self.bridge.host if self.bridge is not None else self.peer_ns
        own_host = host is None
        if host is None:
            host = NetworkHost.current()
        host_end = ""
        try:
            sandbox_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                hnl = host.netlink()
                for _attempt in range(5):
                    host_end = _host_end_name()
                    try:
                        hnl.add_veth(host_end, self.name, peer_netns_fd=sandbox_fd)
                        break
                    except SyscallError as exc:
                        if exc.errno != errno.EEXIST:
                            host_end = ""
                            raise
                        host_end = ""
                else:
                    raise SyscallError(errno.EEXIST, "netlink RTM_NEWLINK", "veth")
                hnl.set_mtu(host_end, self.mtu)
                if self.bridge is not None:
                    hnl.set_master(host_end, self.bridge.name)
                else:
                    assert self.peer_address is not None
                    hnl.add_address(host_end, self.peer_address)
                    if self.peer_address6 is not None:
                        hnl.add_address(host_end, self.peer_address6, nodad=True)
                hnl.set_up(host_end)
                with host.netlink_in(sandbox_fd) as snl:
                    self._configure_inside(snl)
            finally:
                os.close(sandbox_fd)
        except BaseException:
            if self.bridge is not None:
                self.bridge._deactivate(leased)
            _undo(host, host_end, own_host, self.bridge, leased)
            raise
        return lambda: _deferred_undo(host, host_end, own_host, self.bridge, leased)

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

    address: ipaddress.IPv4Interface = attrs.field(kw_only=True, converter=_iface4_set)
    peer_address: ipaddress.IPv4Interface = attrs.field(kw_only=True, converter=_iface4_set)


def _undo(
    host: NetworkHost,
    host_end: str,
    own_host: bool,
    bridge: Bridge | None,
    leased: tuple[ipaddress.IPv4Address, ...],
) -> None:
    """Delete the host end of the pair (the sandbox end goes with it), release leases."""
    try:
        if host_end and not host.closed:
            with contextlib.suppress(SyscallError):  # ENODEV: gone with the sandbox's netns
                host.netlink().delete_link(host_end)
    finally:
        if own_host:
            host.close()
        if bridge is not None:
            for ip in leased:
                bridge._release(ip)


@attrs.define
class _Pending:
    """A veth pair of an ended sandbox, waiting to disappear."""

    host: NetworkHost
    host_end: str
    own_host: bool
    bridge: Bridge | None
    leased: tuple[ipaddress.IPv4Address, ...]
    since: float


class _Janitor:
    """Removes the veth pairs of ended sandboxes off the caller's path.

    Deleting a veth (``RTM_DELLINK``) waits for RCU grace periods in the kernel:
    about 20 ms, which would triple the cost of a short sandbox. But once a
    sandbox has ended, its network namespace usually dies with it, and the kernel
    then removes ``eth0`` and its peer by itself (batched, in ``cleanup_net``).
    So the undo hands the pair to this thread, which waits up to :data:`GRACE`
    seconds for the host end to vanish, deletes it explicitly if it has not (the
    namespace is kept alive by someone else: a sidecar, an open fd), and only
    then returns the address lease. :func:`settle` waits for it.
    """

    GRACE = 0.5

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._thread: threading.Thread | None = None

    def add(self, item: _Pending) -> None:
        with self._cond:
            self._pending.append(item)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="nscg-net-janitor", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    self._thread = None
                    self._cond.notify_all()
                    return
                items = list(self._pending)
            done = [item for item in items if self._sweep(item)]
            with self._cond:
                for item in done:
                    self._pending.remove(item)
                self._cond.notify_all()
            if len(done) < len(items):
                time.sleep(0.005)

    def _sweep(self, item: _Pending) -> bool:
        """Check one pair; return True once it is gone and its resources released."""
        try:
            if item.host_end and not item.host.closed:
                nl = item.host.netlink()
                try:
                    nl.link(item.host_end)
                except SyscallError as exc:
                    if exc.errno != errno.ENODEV:
                        raise
                else:
                    if time.monotonic() - item.since < self.GRACE:
                        return False
                    with contextlib.suppress(SyscallError):
                        nl.delete_link(item.host_end)
        except Exception:  # a closed namespace took the pair with it
            pass
        _undo(item.host, "", item.own_host, item.bridge, item.leased)
        return True

    def settle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True


_janitor = _Janitor()


def settle(timeout: float | None = None) -> bool:
    """Wait until the veth pairs of ended sandboxes are gone and their addresses free.

    A sandbox's undo returns at once; its pair disappears with its network
    namespace (or is deleted within half a second if something else keeps that
    namespace alive). Call this to observe the end state, e.g. in a test.

    Args:
        timeout: seconds to wait at most (None: no limit).

    Returns:
        True if everything was cleaned up in time.
    """
    return _janitor.settle(timeout)


def _deferred_undo(
    host: NetworkHost,
    host_end: str,
    own_host: bool,
    bridge: Bridge | None,
    leased: tuple[ipaddress.IPv4Address, ...],
) -> None:
    """The undo after a sandbox ended: its address is free for a new spawn of the
    same spec now; the pair and the lease are handed to the janitor."""
    if bridge is not None:
        bridge._deactivate(leased)
    _janitor.add(_Pending(host, host_end, own_host, bridge, leased, time.monotonic()))


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


# -- port forwarding ----------------------------------------------------------------------


class PortForward:
    """Relay TCP connections from a local port to a port inside a sandbox.

    A small forwarder in the parent: a listening socket on ``listen`` (in the
    caller's namespace, or in ``listen_in``); for every connection, a socket is
    created inside the sandbox's network namespace (by a helper thread that has
    joined it) and connected to ``address:port`` there; two threads copy bytes
    both ways. No firewall rules, no ``iptables`` binary, nothing to clean up in
    the kernel but the sockets. As root the sockets inside are made by a helper
    thread that joins the namespace; rootless, by the helper process of a rootless
    :class:`NetworkHost` (``via``, or a rootless host as ``target``).

    Args:
        target: the sandbox (a :class:`nscg.Process` or a pid in it), or a
            :class:`NetworkHost`.
        port: the port inside.
        address: the address inside to connect to: ``127.0.0.1`` reaches a
            server bound to ``0.0.0.0`` or to loopback; give the sandbox's own
            address for a server bound only to it.
        listen: the local address to listen on.
        listen_port: the local port (0: a free one, see :attr:`port`).
        listen_in: listen in this namespace instead of the caller's.
        via: a rootless :class:`NetworkHost` whose helper makes the sockets in the
            target's namespace (the sandbox must be attached to it). Rootless, a
            simpler way is ``target=bridge.host`` and ``address=`` the sandbox's.

    Raises:
        SyscallError: the sandbox's namespace cannot be opened, or the port is taken.
    """

    def __init__(
        self,
        target: Process | int | NetworkHost,
        port: int,
        *,
        address: str = "127.0.0.1",
        listen: str = "127.0.0.1",
        listen_port: int = 0,
        listen_in: NetworkHost | None = None,
        via: NetworkHost | None = None,
    ) -> None:
        """Open the target namespace and start listening (see the class docstring)."""
        self._via: NetworkHost | None = None
        if isinstance(target, NetworkHost):
            self._netns = os.dup(target.fileno())
            self._via = target if target.rootless else None
        else:
            pid = target if isinstance(target, int) else target.pid
            try:
                self._netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise SyscallError(exc.errno or 0, "open", f"/proc/{pid}/ns/net") from exc
            self._via = via
        self.target = (address, port)
        self._family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        family = socket.AF_INET6 if ":" in listen else socket.AF_INET
        try:
            self._upstream().close()  # fail now, not at the first connection
            if listen_in is not None:
                lsock = listen_in.socket(family, socket.SOCK_STREAM)
            else:
                lsock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                lsock.bind((listen, listen_port))
                lsock.listen(128)
                lsock.settimeout(0.1)
            except OSError as exc:
                lsock.close()
                raise SyscallError(exc.errno or 0, "bind", f"{listen}:{listen_port}") from exc
        except BaseException:
            os.close(self._netns)
            raise
        self._listener = lsock
        #: The local port connections are accepted on.
        self.port: int = lsock.getsockname()[1]
        #: The local address.
        self.address: str = listen
        self._accepter = threading.Thread(
            target=self._accept_loop, name=f"nscg-forward-{self.port}", daemon=True
        )
        self._accepter.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = self._upstream()
                upstream.settimeout(10)
                upstream.connect(self.target)
                upstream.settimeout(None)
            except OSError:
                client.close()
                with contextlib.suppress(NameError):
                    upstream.close()
                continue
            client.settimeout(None)
            with self._lock:
                if self._stop.is_set():
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
                pair = [
                    threading.Thread(target=self._pump, args=(a, b), daemon=True)
                    for a, b in ((client, upstream), (upstream, client))
                ]
                self._threads = [t for t in self._threads if t.is_alive()] + pair
            for t in pair:
                t.start()

    def _upstream(self) -> socket.socket:
        """A new TCP socket in the target's network namespace."""
        if self._via is not None:
            return self._via._socket_in(self._netns, self._family, socket.SOCK_STREAM)
        try:
            return _run_in_netns(
                self._netns,
                lambda: socket.socket(self._family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC),
            )
        except SyscallError as exc:
            raise _rootless_reason(exc) from exc

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        # the second pump to finish closes both
        with self._lock:
            if src in self._conns and dst in self._conns:
                self._conns.discard(src)
                return
            self._conns.discard(dst)
            self._conns.discard(src)
        src.close()
        dst.close()

    def close(self) -> None:
        """Stop accepting, cut open connections, and close everything; idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._accepter.join()
        self._listener.close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
            threads = list(self._threads)
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(5)
        for s in conns:
            s.close()
        os.close(self._netns)

    def __enter__(self) -> PortForward:
        """Return self.

        Returns:
            This forwarder.
        """
        return self

    def __exit__(self, *exc: object) -> None:
        """Close."""
        self.close()

    def __repr__(self) -> str:
        """Show both ends."""
        return f"<PortForward {self.address}:{self.port} -> {self.target[0]}:{self.target[1]}>"

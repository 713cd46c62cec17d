"""A small typed rtnetlink client: links, addresses and routes, no ``ip`` binary.

Design note
-----------
nscg needs a handful of rtnetlink requests to wire a sandbox's network: list
links, bring a link up, set its MTU or name, create a veth pair or a bridge,
enslave a link to a bridge, move a link into another network namespace, add
addresses and routes, delete links. This module speaks rtnetlink itself over
``socket.AF_NETLINK`` / ``NETLINK_ROUTE`` with :mod:`struct` packing (a few hundred
lines) instead of depending on pyroute2:

* no dependency: nscg's only runtime dependencies are cffi and attrs, and the
  network setup sits on the spawn path, where every import is paid for by
  every sandbox; pyroute2 is a large package with its own event loop and
  netns machinery (it forks helper processes for some netns operations,
  which clashes with "no Python in a forked child" in DESIGN.md);
* typed: pyroute2 returns untyped nested message dicts, which ``mypy --strict``
  would see as ``Any`` all the way up; here every result is a frozen attrs
  class (:class:`Link`, :class:`Address`, :class:`Route`);
* errors are ours: a failing request raises :class:`nscg.SyscallError` with the
  errno, ``syscall="netlink RTM_NEWLINK"`` (etc.), the link name as
  ``filename`` and the kernel's extended-ack text (Linux >= 4.12) as detail.

Protocol: every request carries ``NLM_F_REQUEST | NLM_F_ACK`` and a sequence
number. Replies with another sequence number are ignored. A request ends at
the ``NLMSG_ERROR`` reply (error 0 is the ACK) or, for dumps, at
``NLMSG_DONE``; a dump interrupted by a concurrent change
(``NLM_F_DUMP_INTR``) is retried. One request is in flight per socket (a lock
makes the socket safe to share between threads).

Opening a socket inside another network namespace
-------------------------------------------------
A netlink socket talks to the network namespace it was *created* in, for its
whole life, whatever namespace the thread using it is in later. And
``setns(fd, CLONE_NEWNET)`` changes the namespace of the calling *thread* only;
unlike a user or mount namespace, a network namespace can be joined by one
thread of a multi-threaded process. So :meth:`NetlinkSocket.open_in_netns`
starts a short-lived helper thread that joins the target namespace
(``setns`` through nscg's extension, since ``os.setns`` needs Python 3.12), creates the
socket there, returns to its original namespace and exits. No process is
forked, no Python runs in a child, and the caller's threads never leave their
namespace. It needs ``CAP_SYS_ADMIN`` in the user namespace that owns the
target network namespace and in the caller's own user namespace.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import ipaddress
import itertools
import os
import socket
import struct
import threading
from collections.abc import Iterator
from typing import TypeAlias

import attrs

from nscg.errors import SpecError, SyscallError

__all__ = [
    "Address",
    "IPAddress",
    "IPInterface",
    "IPNetwork",
    "Link",
    "LinkFlags",
    "LinkRef",
    "NetlinkSocket",
    "Route",
]

# -- constants (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, ...) --------

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100  # on NLMSG_ERROR
NLM_F_ACK_TLVS = 0x200  # on NLMSG_ERROR

NLMSGERR_ATTR_MSG = 1

NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_SETLINK = 19
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26

_RTM_NAMES = {
    RTM_NEWLINK: "RTM_NEWLINK",
    RTM_DELLINK: "RTM_DELLINK",
    RTM_GETLINK: "RTM_GETLINK",
    RTM_SETLINK: "RTM_SETLINK",
    RTM_NEWADDR: "RTM_NEWADDR",
    RTM_DELADDR: "RTM_DELADDR",
    RTM_GETADDR: "RTM_GETADDR",
    RTM_NEWROUTE: "RTM_NEWROUTE",
    RTM_DELROUTE: "RTM_DELROUTE",
    RTM_GETROUTE: "RTM_GETROUTE",
}

IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_NET_NS_PID = 19
IFLA_NET_NS_FD = 28
IFLA_EXT_MASK = 29
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3

IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_LABEL = 3
IFA_FLAGS = 8
IFA_F_NODAD = 0x02

RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_TABLE = 15

RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254
RT_SCOPE_NOWHERE = 255
RTN_UNICAST = 1

_CLONE_NEWNET = 0x40000000
_IFNAMSIZ = 16

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family dst_len src_len tos table proto scope type flags
_RTATTR = struct.Struct("=HH")  # len, type
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")

_RECV_BUFSIZE = 1 << 18
_DUMP_RETRIES = 5
_TIMEOUT = 10.0


class LinkFlags(enum.IntFlag):
    """Interface flags (``IFF_*`` from ``linux/if.h``), as in ``ifi_flags``."""

    UP = 0x1
    BROADCAST = 0x2
    DEBUG = 0x4
    LOOPBACK = 0x8
    POINTOPOINT = 0x10
    NOTRAILERS = 0x20
    RUNNING = 0x40
    NOARP = 0x80
    PROMISC = 0x100
    ALLMULTI = 0x200
    MASTER = 0x400
    SLAVE = 0x800
    MULTICAST = 0x1000
    PORTSEL = 0x2000
    AUTOMEDIA = 0x4000
    DYNAMIC = 0x8000
    LOWER_UP = 0x10000
    DORMANT = 0x20000
    ECHO = 0x40000


LinkRef: TypeAlias = int | str
"""A link given by its index (``int``) or its name (``str``)."""

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface: TypeAlias = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.frozen
class Link:
    """A network interface, as ``RTM_GETLINK`` reports it.

    Attributes:
        index: the interface index.
        name: the interface name.
        flags: the ``IFF_*`` flags.
        mtu: the MTU in bytes.
        kind: the link type from ``IFLA_INFO_KIND`` (``"veth"``, ``"bridge"``,
            ...), or None for links without one (such as ``lo``).
        master: the index of the bridge (or bond) the link is attached to.
        address: the hardware address as ``"aa:bb:cc:dd:ee:ff"``, if any.
    """

    index: int
    name: str
    flags: LinkFlags
    mtu: int
    kind: str | None = None
    master: int | None = None
    address: str | None = None

    @property
    def is_up(self) -> bool:
        """Whether the link is administratively up (``IFF_UP``).

        Returns:
            True when ``IFF_UP`` is set.
        """
        return bool(self.flags & LinkFlags.UP)


@attrs.frozen
class Address:
    """An IP address on a link, as ``RTM_GETADDR`` reports it.

    Attributes:
        index: the index of the link.
        interface: the address with its prefix length, e.g. ``10.0.0.1/24``.
        flags: the ``IFA_F_*`` flags.
        scope: the ``RT_SCOPE_*`` scope.
        label: the IPv4 label (usually the link name), or None.
    """

    index: int
    interface: IPInterface
    flags: int = 0
    scope: int = RT_SCOPE_UNIVERSE
    label: str | None = None


@attrs.frozen
class Route:
    """A route, as ``RTM_GETROUTE`` reports it.

    Attributes:
        destination: the destination network (``0.0.0.0/0`` or ``::/0`` for
            a default route).
        gateway: the next hop, or None for a route on the link.
        oif: the index of the outgoing link, or None.
        table: the routing table (254 is ``main``).
        protocol: the ``RTPROT_*`` value.
        scope: the ``RT_SCOPE_*`` value.
        type: the ``RTN_*`` value.
        priority: the metric, or None.
    """

    destination: IPNetwork
    gateway: IPAddress | None = None
    oif: int | None = None
    table: int = RT_TABLE_MAIN
    protocol: int = RTPROT_BOOT
    scope: int = RT_SCOPE_UNIVERSE
    type: int = RTN_UNICAST
    priority: int | None = None

    @property
    def is_default(self) -> bool:
        """Whether this is a default route (prefix length 0).

        Returns:
            True for ``0.0.0.0/0`` and ``::/0``.
        """
        return self.destination.prefixlen == 0


# -- encoding -----------------------------------------------------------------------


def _align(n: int) -> int:
    """Round up to the 4-byte netlink alignment."""
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    """Encode one ``rtattr``, padded."""
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (_align(length) - length)


def _attr_u32(kind: int, value: int) -> bytes:
    """Encode a ``u32`` attribute."""
    return _attr(kind, _U32.pack(value))


def _attr_str(kind: int, value: str) -> bytes:
    """Encode a NUL-terminated string attribute."""
    return _attr(kind, value.encode() + b"\0")


def _nest(kind: int, *children: bytes) -> bytes:
    """Encode a nested attribute (with ``NLA_F_NESTED``)."""
    return _attr(kind | NLA_F_NESTED, b"".join(children))


def _ifinfomsg(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    """Encode a ``struct ifinfomsg`` (family ``AF_UNSPEC``)."""
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)


def _parse_attrs(data: bytes | memoryview, offset: int = 0) -> dict[int, bytes]:
    """Decode a run of ``rtattr``s; a repeated type keeps the last value."""
    out: dict[int, bytes] = {}
    view = memoryview(data)
    while offset + _RTATTR.size <= len(view):
        length, kind = _RTATTR.unpack_from(view, offset)
        if length < _RTATTR.size or offset + length > len(view):
            break
        out[kind & NLA_TYPE_MASK] = bytes(view[offset + _RTATTR.size : offset + length])
        offset += _align(length)
    return out


def _u32(data: bytes) -> int:
    """Decode a ``u32`` attribute payload."""
    return int(_U32.unpack_from(data)[0])


def _str(data: bytes) -> str:
    """Decode a NUL-terminated string attribute payload."""
    return data.split(b"\0", 1)[0].decode(errors="replace")


def _check_name(name: str) -> str:
    """Check an interface name the way the kernel's ``dev_valid_name`` does."""
    if not isinstance(name, str) or not name:
        raise SpecError(f"not an interface name: {name!r}")
    if len(name.encode()) >= _IFNAMSIZ:
        raise SpecError(f"interface name {name!r} is longer than {_IFNAMSIZ - 1} bytes")
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        raise SpecError(f"interface name {name!r} may not be '.'/'..' or hold '/', ':' or spaces")
    return name


def _link_attrs(link: LinkRef) -> tuple[int, bytes]:
    """Return (index, attributes) identifying ``link`` in an ``ifinfomsg`` request."""
    if isinstance(link, bool) or not isinstance(link, (int, str)):
        raise SpecError(f"a link is an index or a name, not {link!r}")
    if isinstance(link, int):
        if link <= 0:
            raise SpecError(f"not an interface index: {link}")
        return link, b""
    return 0, _attr_str(IFLA_IFNAME, _check_name(link))


def _interface(value: str | IPInterface) -> IPInterface:
    """Parse ``"10.0.0.1/24"`` (or an interface object)."""
    if isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return value
    try:
        return ipaddress.ip_interface(value)
    except ValueError as exc:
        raise SpecError(f"not an address with prefix: {value!r} ({exc})") from None


def _network(value: str | IPNetwork) -> IPNetwork:
    """Parse ``"10.0.0.0/24"`` (or a network object); host bits must be 0."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    try:
        return ipaddress.ip_network(value)
    except ValueError as exc:
        raise SpecError(f"not a network: {value!r} ({exc})") from None


def _address(value: str | IPAddress) -> IPAddress:
    """Parse an IP address (or pass an address object through)."""
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    try:
        return ipaddress.ip_address(value)
    except ValueError as exc:
        raise SpecError(f"not an IP address: {value!r} ({exc})") from None


def _family(version: int) -> int:
    """Map an IP version to its address family."""
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _ip_from_bytes(data: bytes) -> IPAddress:
    """Decode a 4- or 16-byte address attribute."""
    return ipaddress.ip_address(data)


# -- decoding replies ---------------------------------------------------------------


@attrs.frozen
class _Message:
    """One received netlink message: its type, flags and payload."""

    type: int
    flags: int
    payload: bytes


def _parse_link(payload: bytes) -> Link:
    """Decode an ``RTM_NEWLINK`` payload."""
    _fam, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
    attrs_ = _parse_attrs(payload, _IFINFOMSG.size)
    kind: str | None = None
    if IFLA_LINKINFO in attrs_:
        info = _parse_attrs(attrs_[IFLA_LINKINFO])
        if IFLA_INFO_KIND in info:
            kind = _str(info[IFLA_INFO_KIND])
    master = _u32(attrs_[IFLA_MASTER]) if IFLA_MASTER in attrs_ else None
    mac = attrs_.get(IFLA_ADDRESS)
    return Link(
        index=int(index),
        name=_str(attrs_.get(IFLA_IFNAME, b"")),
        flags=LinkFlags(int(flags)),
        mtu=_u32(attrs_[IFLA_MTU]) if IFLA_MTU in attrs_ else 0,
        kind=kind,
        master=master or None,
        address=":".join(f"{b:02x}" for b in mac) if mac else None,
    )


def _parse_address(payload: bytes) -> Address | None:
    """Decode an ``RTM_NEWADDR`` payload (None for a family other than IPv4/IPv6)."""
    family, prefixlen, flags, scope, index = _IFADDRMSG.unpack_from(payload)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs_ = _parse_attrs(payload, _IFADDRMSG.size)
    raw = attrs_.get(IFA_LOCAL, attrs_.get(IFA_ADDRESS))
    if raw is None:
        return None
    addr = _ip_from_bytes(raw)
    return Address(
        index=int(index),
        interface=ipaddress.ip_interface(f"{addr}/{prefixlen}"),
        flags=_u32(attrs_[IFA_FLAGS]) if IFA_FLAGS in attrs_ else int(flags),
        scope=int(scope),
        label=_str(attrs_[IFA_LABEL]) if IFA_LABEL in attrs_ else None,
    )


def _parse_route(payload: bytes) -> Route | None:
    """Decode an ``RTM_NEWROUTE`` payload (None for a family other than IPv4/IPv6)."""
    family, dst_len, _src, _tos, table, proto, scope, rtype, _flags = _RTMSG.unpack_from(payload)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs_ = _parse_attrs(payload, _RTMSG.size)
    if RTA_DST in attrs_:
        dst = _ip_from_bytes(attrs_[RTA_DST])
    else:
        dst = ipaddress.ip_address(0 if family == socket.AF_INET else "::")
    return Route(
        destination=ipaddress.ip_network(f"{dst}/{dst_len}", strict=False),
        gateway=_ip_from_bytes(attrs_[RTA_GATEWAY]) if RTA_GATEWAY in attrs_ else None,
        oif=_u32(attrs_[RTA_OIF]) if RTA_OIF in attrs_ else None,
        table=_u32(attrs_[RTA_TABLE]) if RTA_TABLE in attrs_ else int(table),
        protocol=int(proto),
        scope=int(scope),
        type=int(rtype),
        priority=_u32(attrs_[RTA_PRIORITY]) if RTA_PRIORITY in attrs_ else None,
    )


def _error_text(msg: _Message) -> str:
    """Extract the extended-ack message of an ``NLMSG_ERROR``, if the kernel sent one."""
    if not msg.flags & NLM_F_ACK_TLVS or len(msg.payload) < 4 + _NLMSGHDR.size:
        return ""
    offset = 4 + _NLMSGHDR.size
    if not msg.flags & NLM_F_CAPPED:
        orig_len = int(_NLMSGHDR.unpack_from(msg.payload, 4)[0])
        offset = 4 + _align(orig_len)
    tlvs = _parse_attrs(msg.payload, offset)
    return _str(tlvs[NLMSGERR_ATTR_MSG]) if NLMSGERR_ATTR_MSG in tlvs else ""


# -- namespaces ---------------------------------------------------------------------


def _setns(fd: int, nstype: int) -> None:
    """Call ``setns(2)`` for this thread (``os.setns`` needs Python 3.12)."""
    from nscg import _host

    _host.setns(fd, nstype, f"/proc/self/fd/{fd}")


def _raw_socket() -> socket.socket:
    """Create an rtnetlink socket in the calling thread's network namespace."""
    try:
        return socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE
        )
    except OSError as exc:
        raise SyscallError(exc.errno or 0, "socket(AF_NETLINK, NETLINK_ROUTE)") from exc


def _socket_in_netns(netns_fd: int) -> socket.socket:
    """Create an rtnetlink socket in the network namespace ``netns_fd``, from a helper thread."""
    results: list[socket.socket] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            home = os.open(
                f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC
            )
            try:
                _setns(netns_fd, _CLONE_NEWNET)
                try:
                    results.append(_raw_socket())
                finally:
                    # The thread ends right after, so this is hygiene, not safety.
                    _setns(home, _CLONE_NEWNET)
            finally:
                os.close(home)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work, name="nscg-netns-socket", daemon=True)
    thread.start()
    thread.join()
    if errors:
        for sock in results:
            sock.close()
        raise errors[0]
    return results[0]


# -- the socket -----------------------------------------------------------------------


class NetlinkSocket:
    """An rtnetlink socket bound to one network namespace.

    ``NetlinkSocket()`` talks to the caller's network namespace;
    :meth:`open_in_netns` to another one. Use it as a context manager, or call
    :meth:`close` (idempotent). Changing links, addresses or routes needs
    ``CAP_NET_ADMIN`` over the namespace; listing them needs nothing.

    Raises:
        SyscallError: the socket could not be created or bound.
    """

    def __init__(self) -> None:
        """Open an rtnetlink socket in the calling thread's network namespace.

        Raises:
            SyscallError: the socket could not be created or bound.
        """
        self._setup(_raw_socket())

    @classmethod
    def open_in_netns(cls, netns: int | str | os.PathLike[str]) -> NetlinkSocket:
        """Open an rtnetlink socket inside another network namespace.

        The socket is created by a short-lived helper thread that joins the
        namespace with ``setns(CLONE_NEWNET)`` and returns (see the module
        docstring); the calling thread never changes namespace.

        Args:
            netns: an open file descriptor of the namespace (for example of
                ``/proc/PID/ns/net``; it stays open and owned by the caller), or
                a path to such a file (``/proc/PID/ns/net``, ``/run/netns/NAME``).

        Returns:
            The socket; everything it does happens in that namespace.

        Raises:
            SyscallError: the namespace cannot be opened or joined (``EPERM``
                without ``CAP_SYS_ADMIN`` over it, ``EINVAL`` if the fd is not
                a network namespace).
        """
        if isinstance(netns, int):
            return cls._from_socket(_socket_in_netns(netns))
        path = os.fspath(netns)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SyscallError(exc.errno or 0, "open", path) from exc
        try:
            return cls._from_socket(_socket_in_netns(fd))
        finally:
            os.close(fd)

    @classmethod
    def _from_socket(cls, sock: socket.socket) -> NetlinkSocket:
        """Wrap an unbound rtnetlink socket."""
        self = cls.__new__(cls)
        self._setup(sock)
        return self

    def _setup(self, sock: socket.socket) -> None:
        """Configure and bind ``sock``, and initialise the instance."""
        self._sock: socket.socket | None = sock
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._buf = bytearray(_RECV_BUFSIZE)
        try:
            for option in (NETLINK_EXT_ACK, NETLINK_CAP_ACK):
                # Linux < 4.12 (EXT_ACK) / < 4.3 (CAP_ACK): plain errors, full echo.
                with contextlib.suppress(OSError):
                    sock.setsockopt(SOL_NETLINK, option, 1)
            sock.settimeout(_TIMEOUT)
            sock.bind((0, 0))
        except OSError as exc:
            sock.close()
            self._sock = None
            raise SyscallError(exc.errno or 0, "bind(AF_NETLINK)") from exc

    # -- lifetime ---

    def close(self) -> None:
        """Close the socket; calling it again does nothing."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called.

        Returns:
            True once closed.
        """
        return self._sock is None

    def fileno(self) -> int:
        """Return the socket's file descriptor.

        Returns:
            The fd.

        Raises:
            ValueError: the socket is closed.
        """
        return self._socket().fileno()

    def __enter__(self) -> NetlinkSocket:
        """Return self.

        Returns:
            This socket.
        """
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the socket."""
        self.close()

    def __repr__(self) -> str:
        """Show the fd, or that the socket is closed."""
        state = "closed" if self._sock is None else f"fd={self._sock.fileno()}"
        return f"<NetlinkSocket {state}>"

    def _socket(self) -> socket.socket:
        """Return the open socket, or raise ``ValueError`` if closed."""
        if self._sock is None:
            raise ValueError("I/O operation on a closed NetlinkSocket")
        return self._sock

    # -- transport ---

    def _request(
        self, msg_type: int, body: bytes, *, flags: int = 0, target: str | None = None
    ) -> list[_Message]:
        """Send one request and collect its replies until the ACK or ``NLMSG_DONE``."""
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        for _attempt in range(_DUMP_RETRIES if dump else 1):
            replies, interrupted = self._exchange(msg_type, body, flags, target)
            if not interrupted:
                return replies
        return replies

    def _exchange(
        self, msg_type: int, body: bytes, flags: int, target: str | None
    ) -> tuple[list[_Message], bool]:
        """One send and its receive loop; returns the replies and whether a dump was cut."""
        what = f"netlink {_RTM_NAMES.get(msg_type, str(msg_type))}"
        with self._lock:
            sock = self._socket()
            seq = next(self._seq) & 0xFFFFFFFF
            header = _NLMSGHDR.pack(
                _NLMSGHDR.size + len(body), msg_type, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0
            )
            try:
                sock.send(header + body)
            except OSError as exc:
                raise SyscallError(exc.errno or 0, what, target) from exc
            replies: list[_Message] = []
            interrupted = False
            while True:
                for msg in self._receive(sock, seq, what, target):
                    if msg.flags & NLM_F_DUMP_INTR:
                        interrupted = True
                    if msg.type == NLMSG_ERROR:
                        err = int(_I32.unpack_from(msg.payload)[0])
                        if err:
                            raise SyscallError(-err, what, target, detail=_error_text(msg))
                        return replies, interrupted
                    if msg.type == NLMSG_DONE:
                        if len(msg.payload) >= 4:
                            err = int(_I32.unpack_from(msg.payload)[0])
                            if err < 0:
                                raise SyscallError(-err, what, target)
                        return replies, interrupted
                    replies.append(msg)

    def _receive(
        self, sock: socket.socket, seq: int, what: str, target: str | None
    ) -> Iterator[_Message]:
        """Read one datagram and yield its messages that answer ``seq``."""
        try:
            size = sock.recv_into(self._buf, len(self._buf), socket.MSG_TRUNC)
        except TimeoutError as exc:
            raise SyscallError(
                errno.ETIMEDOUT, what, target, detail="no reply from the kernel"
            ) from exc
        except OSError as exc:
            raise SyscallError(exc.errno or 0, what, target) from exc
        if size > len(self._buf):
            raise SyscallError(
                errno.EMSGSIZE, what, target, detail=f"reply of {size} bytes truncated"
            )
        data = memoryview(self._buf)[:size]
        offset = 0
        while offset + _NLMSGHDR.size <= size:
            length, mtype, mflags, mseq, _pid = _NLMSGHDR.unpack_from(data, offset)
            if length < _NLMSGHDR.size or offset + length > size:
                break
            if mseq == seq and mtype != NLMSG_NOOP:
                if mtype == NLMSG_OVERRUN:
                    raise SyscallError(errno.ENOBUFS, what, target, detail="netlink overrun")
                yield _Message(
                    int(mtype), int(mflags), bytes(data[offset + _NLMSGHDR.size : offset + length])
                )
            offset += _align(length)

    # -- links ---

    def links(self) -> list[Link]:
        """List the links of the namespace.

        Returns:
            Every link, in the kernel's order (by index).

        Raises:
            SyscallError: the dump failed.
        """
        body = _ifinfomsg() + _attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        return [
            _parse_link(m.payload)
            for m in self._request(RTM_GETLINK, body, flags=NLM_F_DUMP)
            if m.type == RTM_NEWLINK
        ]

    def link(self, link: LinkRef) -> Link:
        """Look one link up.

        Args:
            link: its index or name.

        Returns:
            The link.

        Raises:
            SyscallError: ``ENODEV`` if there is no such link.
            SpecError: ``link`` is not an index or a valid name.
        """
        index, attrs_ = _link_attrs(link)
        body = _ifinfomsg(index) + attrs_ + _attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        for m in self._request(RTM_GETLINK, body, target=str(link)):
            if m.type == RTM_NEWLINK:
                return _parse_link(m.payload)
        raise SyscallError(errno.ENODEV, "netlink RTM_GETLINK", str(link))

    def index(self, link: LinkRef) -> int:
        """Return the index of a link.

        Args:
            link: its index (returned as is) or name.

        Returns:
            The index.

        Raises:
            SyscallError: ``ENODEV`` if there is no link by that name.
        """
        if isinstance(link, int) and not isinstance(link, bool):
            return link
        return self.link(link).index

    def _setlink(self, link: LinkRef, payload: bytes, *, flags: int = 0, change: int = 0) -> None:
        """Send ``RTM_SETLINK`` for ``link`` with extra attributes and flag changes."""
        index, ident = _link_attrs(link)
        body = _ifinfomsg(index, flags, change) + ident + payload
        self._request(RTM_SETLINK, body, target=str(link))

    def set_up(self, link: LinkRef) -> None:
        """Bring a link up (``IFF_UP``).

        Args:
            link: its index or name.

        Raises:
            SyscallError: the request failed (``ENODEV``: no such link).
        """
        self._setlink(link, b"", flags=LinkFlags.UP, change=LinkFlags.UP)

    def set_down(self, link: LinkRef) -> None:
        """Take a link down.

        Args:
            link: its index or name.

        Raises:
            SyscallError: the request failed.
        """
        self._setlink(link, b"", flags=0, change=LinkFlags.UP)

    def set_mtu(self, link: LinkRef, mtu: int) -> None:
        """Set a link's MTU.

        Args:
            link: its index or name.
            mtu: the MTU in bytes (68 or more for IPv4, 1280 or more for IPv6).

        Raises:
            SyscallError: the request failed (``EINVAL``: out of range for the link).
            SpecError: ``mtu`` is not a positive 32-bit integer.
        """
        if isinstance(mtu, bool) or not isinstance(mtu, int) or not 0 < mtu < 1 << 32:
            raise SpecError(f"not an MTU: {mtu!r}")
        self._setlink(link, _attr_u32(IFLA_MTU, mtu))

    def rename(self, link: LinkRef, new_name: str) -> None:
        """Rename a link (kernels before 6.x refuse, ``EBUSY``, to rename a link that is up).

        Args:
            link: its index or current name.
            new_name: the new name (at most 15 bytes).

        Raises:
            SyscallError: the request failed (``EEXIST``: the name is taken).
            SpecError: ``new_name`` is not a valid interface name.
        """
        _check_name(new_name)
        index = self.index(link)
        body = _ifinfomsg(index) + _attr_str(IFLA_IFNAME, new_name)
        self._request(RTM_SETLINK, body, target=str(link))

    def set_master(self, link: LinkRef, master: LinkRef | None) -> None:
        """Attach a link to a bridge (``IFLA_MASTER``), or detach it.

        Args:
            link: the port, by index or name.
            master: the bridge, by index or name; None detaches the link.

        Raises:
            SyscallError: the request failed.
        """
        master_index = 0 if master is None else self.index(master)
        self._setlink(link, _attr_u32(IFLA_MASTER, master_index))

    def move_to_netns(
        self, link: LinkRef, *, fd: int | None = None, pid: int | None = None
    ) -> None:
        """Move a link into another network namespace.

        The link disappears from this namespace, keeps its name (unless that
        name is taken there: ``EEXIST``) and is down in the new one; its
        addresses and routes are dropped.

        Args:
            link: its index or name.
            fd: a file descriptor of the target namespace (``IFLA_NET_NS_FD``).
            pid: a process whose namespace is the target (``IFLA_NET_NS_PID``).
                Give exactly one of ``fd`` and ``pid``.

        Raises:
            SyscallError: the request failed.
            SpecError: not exactly one of ``fd`` and ``pid`` was given.
        """
        if (fd is None) == (pid is None):
            raise SpecError("give exactly one of fd= and pid=")
        if fd is not None:
            payload = _attr_u32(IFLA_NET_NS_FD, fd)
        else:
            assert pid is not None
            payload = _attr_u32(IFLA_NET_NS_PID, pid)
        self._setlink(link, payload)

    def _newlink(self, name: str, kind: str, data: bytes = b"") -> None:
        """Create a link of type ``kind`` with ``IFLA_INFO_DATA`` ``data``."""
        info = _attr_str(IFLA_INFO_KIND, kind)
        if data:
            info += _nest(IFLA_INFO_DATA, data)
        body = _ifinfomsg() + _attr_str(IFLA_IFNAME, _check_name(name)) + _nest(IFLA_LINKINFO, info)
        self._request(RTM_NEWLINK, body, flags=NLM_F_CREATE | NLM_F_EXCL, target=name)

    def add_veth(self, name: str, peer: str, *, peer_netns_fd: int | None = None) -> None:
        """Create a veth pair.

        Args:
            name: the name of the end that stays in this namespace.
            peer: the name of the other end.
            peer_netns_fd: if given, a namespace fd to create the peer in
                directly (saves a :meth:`move_to_netns`).

        Raises:
            SyscallError: the request failed (``EEXIST``: a name is taken).
            SpecError: a name is invalid.
        """
        peer_attrs = _ifinfomsg() + _attr_str(IFLA_IFNAME, _check_name(peer))
        if peer_netns_fd is not None:
            peer_attrs += _attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
        self._newlink(name, "veth", _attr(VETH_INFO_PEER, peer_attrs))

    def add_bridge(self, name: str) -> None:
        """Create a bridge.

        Args:
            name: its name.

        Raises:
            SyscallError: the request failed (``EEXIST``: the name is taken).
            SpecError: the name is invalid.
        """
        self._newlink(name, "bridge")

    def delete_link(self, link: LinkRef) -> None:
        """Delete a link (deleting one end of a veth pair deletes both).

        Args:
            link: its index or name.

        Raises:
            SyscallError: the request failed (``ENODEV``: no such link).
        """
        index, ident = _link_attrs(link)
        self._request(RTM_DELLINK, _ifinfomsg(index) + ident, target=str(link))

    # -- addresses ---

    def _addr_request(
        self, msg_type: int, link: LinkRef, address: str | IPInterface, nodad: bool
    ) -> None:
        """Send ``RTM_NEWADDR`` or ``RTM_DELADDR``."""
        iface = _interface(address)
        index = self.index(link)
        flags = IFA_F_NODAD if nodad and iface.version == 6 else 0
        scope = RT_SCOPE_HOST if iface.ip.is_loopback else RT_SCOPE_UNIVERSE
        raw = iface.ip.packed
        body = _IFADDRMSG.pack(_family(iface.version), iface.network.prefixlen, flags, scope, index)
        body += _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw)
        if flags:
            body += _attr_u32(IFA_FLAGS, flags)
        create = NLM_F_CREATE | NLM_F_EXCL if msg_type == RTM_NEWADDR else 0
        self._request(msg_type, body, flags=create, target=str(link))

    def add_address(
        self, link: LinkRef, address: str | IPInterface, *, nodad: bool = False
    ) -> None:
        """Add an IPv4 or IPv6 address to a link.

        Args:
            link: its index or name.
            address: the address and prefix length, e.g. ``"10.0.0.1/24"``
                or ``"fd00::1/64"``.
            nodad: for IPv6, skip duplicate address detection
                (``IFA_F_NODAD``) so that the address is usable at once
                instead of "tentative" for a second or two.

        Raises:
            SyscallError: the request failed (``EEXIST``: already there).
            SpecError: ``address`` cannot be parsed.
        """
        self._addr_request(RTM_NEWADDR, link, address, nodad)

    def delete_address(self, link: LinkRef, address: str | IPInterface) -> None:
        """Remove an address from a link.

        Args:
            link: its index or name.
            address: the address and prefix length, as given to :meth:`add_address`.

        Raises:
            SyscallError: the request failed (``EADDRNOTAVAIL``: not there).
            SpecError: ``address`` cannot be parsed.
        """
        self._addr_request(RTM_DELADDR, link, address, False)

    def addresses(
        self, link: LinkRef | None = None, *, version: int | None = None
    ) -> list[Address]:
        """List addresses.

        Args:
            link: only those of this link (index or name); all by default.
            version: only IPv4 (4) or IPv6 (6); both by default.

        Returns:
            The addresses.

        Raises:
            SyscallError: the dump failed, or ``link`` does not exist.
        """
        family = socket.AF_UNSPEC if version is None else _family(version)
        index = None if link is None else self.index(link)
        body = _IFADDRMSG.pack(family, 0, 0, 0, 0)
        out: list[Address] = []
        for m in self._request(RTM_GETADDR, body, flags=NLM_F_DUMP):
            addr = _parse_address(m.payload) if m.type == RTM_NEWADDR else None
            if addr is not None and (index is None or addr.index == index):
                out.append(addr)
        return out

    # -- routes ---

    def _route_body(
        self,
        destination: str | IPNetwork | None,
        *,
        gateway: str | IPAddress | None,
        link: LinkRef | None,
        metric: int | None,
        table: int,
        delete: bool,
    ) -> tuple[bytes, str]:
        """Encode an ``rtmsg`` request; return it and a name for errors."""
        gw = None if gateway is None else _address(gateway)
        if destination is None:
            if gw is None:
                raise SpecError("a default route needs a gateway; or give destination='0.0.0.0/0'")
            dst = _network("0.0.0.0/0" if gw.version == 4 else "::/0")
        else:
            dst = _network(destination)
        if gw is not None and gw.version != dst.version:
            raise SpecError(f"gateway {gw} and destination {dst} are not the same IP version")
        if gw is None and link is None and not delete:
            raise SpecError("a route needs a gateway, a link, or both")
        if not 0 < table < 1 << 32:
            raise SpecError(f"not a routing table: {table!r}")
        if delete:
            proto, scope, rtype = 0, RT_SCOPE_NOWHERE, 0
        else:
            proto, rtype = RTPROT_BOOT, RTN_UNICAST
            scope = RT_SCOPE_UNIVERSE if gw is not None else RT_SCOPE_LINK
        rtm_table = table if table < 256 else 0  # RT_TABLE_UNSPEC + RTA_TABLE for big ids
        body = _RTMSG.pack(
            _family(dst.version), dst.prefixlen, 0, 0, rtm_table, proto, scope, rtype, 0
        )
        if dst.prefixlen:
            body += _attr(RTA_DST, dst.network_address.packed)
        if gw is not None:
            body += _attr(RTA_GATEWAY, gw.packed)
        if link is not None:
            body += _attr_u32(RTA_OIF, self.index(link))
        if metric is not None:
            body += _attr_u32(RTA_PRIORITY, metric)
        if table >= 256:
            body += _attr_u32(RTA_TABLE, table)
        return body, str(link) if link is not None else str(dst)

    def add_route(
        self,
        destination: str | IPNetwork | None = None,
        *,
        gateway: str | IPAddress | None = None,
        link: LinkRef | None = None,
        metric: int | None = None,
        table: int = RT_TABLE_MAIN,
    ) -> None:
        """Add an IPv4 or IPv6 route.

        ``add_route(gateway="10.0.0.1")`` adds a default route;
        ``add_route("10.1.0.0/16", link="eth0")`` a route on a link.

        Args:
            destination: the destination network; None for the default route
                of the gateway's IP version.
            gateway: the next hop; it must be reachable on a link already.
            link: the outgoing link (index or name).
            metric: the route's priority (lower wins).
            table: the routing table (254, ``main``, by default).

        Raises:
            SyscallError: the request failed (``EEXIST``: already there;
                ``ENETUNREACH``: the gateway is not on any link).
            SpecError: the arguments do not describe a route.
        """
        body, target = self._route_body(
            destination, gateway=gateway, link=link, metric=metric, table=table, delete=False
        )
        self._request(RTM_NEWROUTE, body, flags=NLM_F_CREATE | NLM_F_EXCL, target=target)

    def delete_route(
        self,
        destination: str | IPNetwork | None = None,
        *,
        gateway: str | IPAddress | None = None,
        link: LinkRef | None = None,
        metric: int | None = None,
        table: int = RT_TABLE_MAIN,
    ) -> None:
        """Delete a route; the arguments select it as in :meth:`add_route`.

        Args:
            destination: the destination network; None for the default route.
            gateway: the next hop to match, if any.
            link: the outgoing link to match, if any.
            metric: the priority to match, if any.
            table: the routing table.

        Raises:
            SyscallError: the request failed (``ESRCH``: no such route).
            SpecError: the arguments do not describe a route.
        """
        body, target = self._route_body(
            destination, gateway=gateway, link=link, metric=metric, table=table, delete=True
        )
        self._request(RTM_DELROUTE, body, target=target)

    def routes(
        self, *, version: int | None = None, table: int | None = RT_TABLE_MAIN
    ) -> list[Route]:
        """List routes.

        Args:
            version: only IPv4 (4) or IPv6 (6) routes; both by default.
            table: only this table (``main`` by default); None for all.

        Returns:
            The routes.

        Raises:
            SyscallError: the dump failed.
        """
        family = socket.AF_UNSPEC if version is None else _family(version)
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        out: list[Route] = []
        for m in self._request(RTM_GETROUTE, body, flags=NLM_F_DUMP):
            route = _parse_route(m.payload) if m.type == RTM_NEWROUTE else None
            if route is not None and (table is None or route.table == table):
                out.append(route)
        return out

"""The namespace that plays the host: :class:`NetworkHost`, and running code in another
network namespace (helper threads as root, a helper process when rootless).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

from nscg._netlink import NetlinkSocket, _setns
from nscg.errors import SyscallError, UnsupportedError

_CLONE_NEWNET = 0x40000000
_T = TypeVar("_T")


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

    __module__ = "nscg.network"  # documented and pickled under its public path

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

"""Port forwarding: :class:`PortForward` relays TCP from a local port into a sandbox."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import TYPE_CHECKING

from nscg.errors import SyscallError
from nscg.network._hosts import NetworkHost, _rootless_reason, _run_in_netns

if TYPE_CHECKING:
    from nscg.process import Process


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

    __module__ = "nscg.network"  # documented and pickled under its public path

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

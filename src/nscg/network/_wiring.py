"""The wiring: veth pairs, addresses and routes for a sandbox, and their undo.

The runtime side of :meth:`Network.attach`: rtnetlink from the parent while the sandbox's
first process waits; the undo hands ended pairs to a janitor thread (:func:`settle`).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from nscg.errors import SyscallError
from nscg.network._hosts import NetworkHost

if TYPE_CHECKING:
    from nscg.network._bridges import Bridge
    from nscg.network._spec import Network


def _host_end_name() -> str:
    """A fresh name for the host end of a veth pair: ``nscg`` + 10 hex digits (14 bytes)."""
    return "nscg" + secrets.token_hex(5)


def attach(net: Network, pid: int) -> Callable[[], None]:
    """Wire ``net`` for the waiting sandbox ``pid``: :meth:`Network.attach`'s work.

    Args:
        net: the network (a veth or bridge one does work).
    pid: a process in the sandbox's new network namespace.

    Returns:
        The undo callable.

    Raises:
        UnsupportedError: not root.
        SyscallError: a netlink request failed (nothing is left behind).
    """
    if net.kind in ("none", "host"):
        return lambda: None
    leased: tuple[ipaddress.IPv4Address, ...] = ()
    if net.kind == "bridge":
        assert net.bridge is not None and net.address is not None
        leased = net.bridge._claim(net)
    host = net.bridge.host if net.bridge is not None else net.peer_ns
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
                    hnl.add_veth(host_end, net.name, peer_netns_fd=sandbox_fd)
                    break
                except SyscallError as exc:
                    if exc.errno != errno.EEXIST:
                        host_end = ""
                        raise
                    host_end = ""
            else:
                raise SyscallError(errno.EEXIST, "netlink RTM_NEWLINK", "veth")
            hnl.set_mtu(host_end, net.mtu)
            if net.bridge is not None:
                hnl.set_master(host_end, net.bridge.name)
            else:
                assert net.peer_address is not None
                hnl.add_address(host_end, net.peer_address)
                if net.peer_address6 is not None:
                    hnl.add_address(host_end, net.peer_address6, nodad=True)
            hnl.set_up(host_end)
            with host.netlink_in(sandbox_fd) as snl:
                net._configure_inside(snl)
        finally:
            os.close(sandbox_fd)
    except BaseException:
        if net.bridge is not None:
            net.bridge._deactivate(leased)
        _undo(host, host_end, own_host, net.bridge, leased)
        raise
    return lambda: _deferred_undo(host, host_end, own_host, net.bridge, leased)


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

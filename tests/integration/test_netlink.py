"""Integration tests of nscg._netlink against the real kernel.

Everything that changes network state happens inside network namespaces the
tests create themselves: a helper thread ``unshare(CLONE_NEWNET)``s, opens its
``/proc/self/task/TID/ns/net`` (the fd keeps the namespace alive), and goes back
home. Closing the fd destroys the namespace with every link in it, so nothing is
left behind, not even a bind mount. The host's own namespace is only read, and a
module fixture checks that its links, addresses and routes did not change.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from nscg._netlink import (
    Link,
    LinkFlags,
    NetlinkSocket,
    _attr,
    _check_name,
    _parse_attrs,
)
from nscg.errors import SpecError, SyscallError

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
IS_ROOT = os.geteuid() == 0
root = pytest.mark.skipif(not IS_ROOT, reason="creating network namespaces needs root")
HAVE_NSENTER_IP = bool(shutil.which("nsenter") and shutil.which("ip"))

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def in_netns(netns_fd: int, func: Callable[[], T]) -> T:
    """Run ``func`` in a helper thread that has joined the network namespace ``netns_fd``."""
    out: list[T] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
            try:
                _check(_libc.setns(netns_fd, CLONE_NEWNET), "setns")
                try:
                    out.append(func())
                finally:
                    _check(_libc.setns(home, CLONE_NEWNET), "setns home")
            finally:
                os.close(home)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return out[0]


def new_netns() -> int:
    """Create an anonymous network namespace; return an O_CLOEXEC fd that keeps it alive."""
    result: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            tid = threading.get_native_id()
            home = os.open(f"/proc/self/task/{tid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
                try:
                    fd = os.open(f"/proc/self/task/{tid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                    result.append(fd)
                finally:
                    _check(_libc.setns(home, CLONE_NEWNET), "setns home")
            finally:
                os.close(home)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if errors:
        for fd in result:
            os.close(fd)
        raise errors[0]
    return result[0]


def ip_json(netns_fd: int, *args: str) -> list[dict[str, object]]:
    """Run ``ip -j ARGS`` inside the namespace (test-only cross-check)."""
    proc = subprocess.run(
        ["nsenter", f"--net=/proc/{os.getpid()}/fd/{netns_fd}", "ip", "-j", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    )
    data = json.loads(proc.stdout or "[]")
    assert isinstance(data, list)
    return data


def names(links: list[Link]) -> set[str]:
    return {link.name for link in links}


def host_state() -> tuple[object, ...]:
    """A read-only snapshot of the host namespace's network configuration."""
    with NetlinkSocket() as nl:
        links = tuple((x.index, x.name, int(x.flags), x.mtu, x.master) for x in nl.links())
        addrs = tuple(sorted(str(a.interface) for a in nl.addresses()))
        routes = tuple(sorted(repr(r) for r in nl.routes(table=None)))
    return links, addrs, routes


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture(scope="module", autouse=True)
def host_untouched() -> Iterator[None]:
    before = host_state()
    yield
    assert host_state() == before, "the host's network configuration changed"


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    fds = open_fds()
    yield
    assert open_fds() - fds == set(), "file descriptors leaked"


@pytest.fixture
def netns() -> Iterator[Callable[[], int]]:
    """Factory of throw-away network namespaces (fds), all closed at teardown."""
    created: list[int] = []

    def make() -> int:
        fd = new_netns()
        created.append(fd)
        return fd

    yield make
    for fd in created:
        os.close(fd)


# -- no privilege needed ------------------------------------------------------------


def test_attribute_encoding_round_trip() -> None:
    data = _attr(3, b"eth0\0") + _attr(4, b"\x00\x05\x00\x00")
    assert len(data) % 4 == 0
    assert _parse_attrs(data) == {3: b"eth0\0", 4: b"\x00\x05\x00\x00"}
    assert _parse_attrs(b"\x02\x00") == {}  # truncated header is ignored


@pytest.mark.parametrize("bad", ["", "a" * 16, "a/b", "a b", "a:b", ".", ".."])
def test_bad_interface_names(bad: str) -> None:
    with pytest.raises(SpecError):
        _check_name(bad)
    assert _check_name("a" * 15) == "a" * 15


def test_read_host_namespace_without_changing_it() -> None:
    with NetlinkSocket() as nl:
        links = nl.links()
        lo = nl.link("lo")
        assert lo in links
        assert lo.flags & LinkFlags.LOOPBACK
        assert nl.index("lo") == lo.index
        with pytest.raises(SyscallError) as info:
            nl.link("nscg-none0")
        assert info.value.errno == errno.ENODEV
        assert info.value.syscall == "netlink RTM_GETLINK"
        assert info.value.filename == "nscg-none0"


def test_close_is_idempotent_and_checked() -> None:
    nl = NetlinkSocket()
    assert nl.fileno() >= 0
    nl.close()
    nl.close()
    assert nl.closed
    assert "closed" in repr(nl)
    with pytest.raises(ValueError, match="closed"):
        nl.links()


def test_argument_errors_before_any_request() -> None:
    with NetlinkSocket() as nl:
        with pytest.raises(SpecError):
            nl.add_route("10.0.0.0/8")  # no gateway, no link
        with pytest.raises(SpecError):
            nl.add_route()
        with pytest.raises(SpecError):
            nl.add_route("10.0.0.0/8", gateway="fd00::1")
        with pytest.raises(SpecError):
            nl.add_address("lo", "10.0.0.1/33")
        with pytest.raises(SpecError):
            nl.move_to_netns("lo")
        with pytest.raises(SpecError):
            nl.set_mtu("lo", 0)


# -- inside throw-away namespaces --------------------------------------------------


@root
def test_fresh_namespace_has_only_lo(netns: Callable[[], int]) -> None:
    fd = netns()
    home = os.readlink("/proc/thread-self/ns/net")
    with NetlinkSocket.open_in_netns(fd) as nl:
        assert os.readlink("/proc/thread-self/ns/net") == home
        (lo,) = nl.links()
        assert lo.name == "lo"
        assert not lo.is_up
        nl.set_up("lo")
        assert nl.link("lo").is_up
        assert {str(a.interface) for a in nl.addresses("lo")} == {"127.0.0.1/8", "::1/128"}
    # By path, too.
    with NetlinkSocket.open_in_netns(f"/proc/self/fd/{fd}") as nl:
        assert names(nl.links()) == {"lo"}


@root
def test_open_in_netns_errors() -> None:
    with pytest.raises(SyscallError) as info:
        NetlinkSocket.open_in_netns("/nonexistent/ns")
    assert info.value.errno == errno.ENOENT
    r, w = os.pipe()
    try:
        with pytest.raises(SyscallError) as info:
            NetlinkSocket.open_in_netns(r)
        assert info.value.errno == errno.EINVAL
        assert info.value.syscall == "setns"
    finally:
        os.close(r)
        os.close(w)


@root
def test_links_bridge_veth_addresses_routes_and_netns_move(netns: Callable[[], int]) -> None:
    ns1, ns2 = netns(), netns()
    with NetlinkSocket.open_in_netns(ns1) as a, NetlinkSocket.open_in_netns(ns2) as b:
        a.set_up("lo")
        b.set_up("lo")

        # Bridge and veth pair, enslave, MTU, up.
        a.add_bridge("br0")
        a.add_veth("v0", "v1")
        br0, v0, v1 = a.link("br0"), a.link("v0"), a.link("v1")
        assert (br0.kind, v0.kind, v1.kind) == ("bridge", "veth", "veth")
        a.set_master("v0", "br0")
        a.set_mtu("v0", 1400)
        a.set_mtu(v1.index, 1400)
        for name in ("br0", "v0"):
            a.set_up(name)
        v0 = a.link("v0")
        assert v0.master == br0.index
        assert v0.mtu == 1400
        assert v0.is_up
        assert names(a.links()) == {"lo", "br0", "v0", "v1"}

        # Addresses on the bridge, both families.
        a.add_address("br0", "10.200.0.1/24")
        a.add_address("br0", "fd00:200::1/64", nodad=True)
        a.add_address("lo", "10.201.0.1/32")
        a.add_address("lo", "fd00:201::1/128", nodad=True)
        got = {str(x.interface) for x in a.addresses("br0")}
        assert {"10.200.0.1/24", "fd00:200::1/64"} <= got
        assert [str(x.interface) for x in a.addresses("br0", version=4)] == ["10.200.0.1/24"]

        # Move v1 into ns2 by fd; it vanishes from ns1.
        a.move_to_netns("v1", fd=ns2)
        assert names(a.links()) == {"lo", "br0", "v0"}
        assert names(b.links()) == {"lo", "v1"}
        assert b.link("v1").mtu == 1400

        # Configure the other end: addresses, default routes via the bridge.
        b.set_up("v1")
        b.add_address("v1", "10.200.0.2/24")
        b.add_address("v1", ipaddress.ip_interface("fd00:200::2/64"), nodad=True)
        b.add_route(gateway="10.200.0.1")
        b.add_route(gateway="fd00:200::1", link="v1", metric=100)
        b.add_route("10.202.0.0/16", link="v1")
        v1_index = b.index("v1")
        routes4 = b.routes(version=4)
        default4 = [r for r in routes4 if r.is_default]
        assert len(default4) == 1
        assert default4[0].gateway == ipaddress.ip_address("10.200.0.1")
        assert default4[0].oif == v1_index
        onlink = [r for r in routes4 if str(r.destination) == "10.202.0.0/16"]
        assert onlink[0].gateway is None
        assert onlink[0].oif == v1_index
        default6 = [r for r in b.routes(version=6) if r.is_default]
        assert [(str(r.gateway), r.priority) for r in default6] == [("fd00:200::1", 100)]

        # Cross-check with iproute2, run inside the namespaces only.
        if HAVE_NSENTER_IP:
            shown = {x["ifname"]: x for x in ip_json(ns2, "addr", "show", "dev", "v1")}
            infos = {(i["local"], i["prefixlen"]) for i in shown["v1"]["addr_info"]}  # type: ignore[attr-defined]  # JSON
            assert {("10.200.0.2", 24), ("fd00:200::2", 64)} <= infos
            assert any(
                r["dst"] == "default" and r.get("gateway") == "10.200.0.1"
                for r in ip_json(ns2, "route", "show")
            )
            bridged = ip_json(ns1, "link", "show", "master", "br0")
            assert [x["ifname"] for x in bridged] == ["v0"]

        # Real traffic, inside the test namespaces only: ns2 reaches ns1's lo
        # addresses through its default routes and the bridge.
        for family, listen_addr, target in (
            (socket.AF_INET, "10.201.0.1", "10.201.0.1"),
            (socket.AF_INET6, "fd00:201::1", "fd00:201::1"),
        ):
            make = functools.partial(socket.socket, family, socket.SOCK_STREAM)
            server = in_netns(ns1, make)
            client = in_netns(ns2, make)
            with server, client:
                server.bind((listen_addr, 0))
                server.listen(1)
                port = server.getsockname()[1]
                client.settimeout(10)
                client.connect((target, port))
                conn, peer = server.accept()
                with conn:
                    assert peer[0] in ("10.200.0.2", "fd00:200::2")

        # Delete routes and addresses, detach, delete links.
        b.delete_route(gateway="10.200.0.1")
        b.delete_route("10.202.0.0/16", link="v1")
        b.delete_route(gateway="fd00:200::1", link="v1", metric=100)
        assert not [r for r in b.routes() if r.is_default]
        a.delete_address("br0", "10.200.0.1/24")
        a.delete_address("br0", "fd00:200::1/64")
        assert not [x for x in a.addresses("br0") if not x.interface.is_link_local]
        a.set_master("v0", None)
        assert a.link("v0").master is None
        a.set_down("v0")
        assert not a.link("v0").is_up
        a.delete_link("v0")  # takes v1 in ns2 with it
        a.delete_link("br0")
        assert names(a.links()) == {"lo"}
        assert names(b.links()) == {"lo"}


@root
def test_veth_peer_created_in_other_namespace_and_rename(netns: Callable[[], int]) -> None:
    ns1, ns2 = netns(), netns()
    with NetlinkSocket.open_in_netns(ns1) as a, NetlinkSocket.open_in_netns(ns2) as b:
        a.add_veth("host0", "eth0", peer_netns_fd=ns2)
        assert names(a.links()) == {"lo", "host0"}
        assert names(b.links()) == {"lo", "eth0"}
        a.rename("host0", "host1")
        assert a.link("host1").kind == "veth"
        with pytest.raises(SyscallError) as info:
            a.link("host0")
        assert info.value.errno == errno.ENODEV
        a.delete_link("host1")
        assert names(b.links()) == {"lo"}


@root
def test_move_by_pid(netns: Callable[[], int]) -> None:
    if not shutil.which("nsenter"):
        pytest.skip("needs nsenter to start a process in the target namespace")
    ns1, ns2 = netns(), netns()
    holder = subprocess.Popen(
        ["nsenter", f"--net=/proc/{os.getpid()}/fd/{ns2}", "sleep", "60"],
        stdin=subprocess.DEVNULL,
    )
    try:
        with NetlinkSocket.open_in_netns(ns1) as a, NetlinkSocket.open_in_netns(ns2) as b:
            # Wait until nsenter has switched namespace (it execs sleep afterwards).
            target = os.readlink(f"/proc/self/fd/{ns2}")
            for _ in range(500):
                if os.readlink(f"/proc/{holder.pid}/ns/net") == target:
                    break
                threading.Event().wait(0.01)
            a.add_veth("va", "vb")
            a.move_to_netns("vb", pid=holder.pid)
            assert names(b.links()) == {"lo", "vb"}
            b.delete_link("vb")
            assert names(a.links()) == {"lo"}
    finally:
        holder.kill()
        holder.wait()


@root
def test_kernel_errors_are_syscall_errors(netns: Callable[[], int]) -> None:
    fd = netns()
    with NetlinkSocket.open_in_netns(fd) as nl:
        nl.add_bridge("br0")
        with pytest.raises(SyscallError) as info:
            nl.add_bridge("br0")
        err = info.value
        assert isinstance(err, OSError)
        assert err.errno == errno.EEXIST
        assert err.syscall == "netlink RTM_NEWLINK"
        assert err.filename == "br0"
        assert "netlink RTM_NEWLINK" in str(err)

        with pytest.raises(SyscallError) as info:
            nl.delete_link("nope0")
        assert info.value.errno == errno.ENODEV
        assert info.value.syscall == "netlink RTM_DELLINK"

        with pytest.raises(SyscallError) as info:
            nl.add_route(gateway="10.9.9.9")
        assert info.value.errno == errno.ENETUNREACH
        assert info.value.syscall == "netlink RTM_NEWROUTE"

        nl.set_up("br0")
        nl.add_address("br0", "10.9.0.1/24")
        with pytest.raises(SyscallError) as info:
            nl.add_address("br0", "10.9.0.1/24")
        assert info.value.errno == errno.EEXIST
        assert info.value.filename == "br0"
        with pytest.raises(SyscallError) as info:
            nl.delete_address("br0", "10.9.0.2/24")
        assert info.value.errno == errno.EADDRNOTAVAIL
        with pytest.raises(SyscallError) as info:
            nl.delete_route("10.99.0.0/16")
        assert info.value.errno == errno.ESRCH

        with pytest.raises(SyscallError) as info:
            nl.set_mtu("br0", 70000)  # above the bridge's maximum
        assert info.value.errno == errno.EINVAL
        assert info.value.syscall == "netlink RTM_SETLINK"

        nl.delete_link("br0")
        assert names(nl.links()) == {"lo"}


@root
def test_thread_safety_of_one_socket(netns: Callable[[], int]) -> None:
    fd = netns()
    with NetlinkSocket.open_in_netns(fd) as nl:
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                name = f"br{i}"
                nl.add_bridge(name)
                assert nl.link(name).kind == "bridge"
                nl.delete_link(name)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert names(nl.links()) == {"lo"}

"""Network specs: validation, the container's namespaces, /etc text; no privileges needed."""

from __future__ import annotations

import ipaddress
import threading

import pytest

import nscg
from nscg import Container, Namespace, Network
from nscg.network._bridges import _Pool


def test_veth_addresses_are_checked() -> None:
    net = Network.veth(
        "10.1.0.2/24", "10.1.0.1/24", address6="fd01::2/64", peer_address6="fd01::1/64"
    )
    assert net.kind == "veth" and net.name == "eth0" and net.mtu == 1500
    assert net.address == ipaddress.IPv4Interface("10.1.0.2/24")
    with pytest.raises(nscg.SpecError, match="same subnet"):
        Network.veth("10.1.0.2/24", "10.2.0.1/24")
    with pytest.raises(nscg.SpecError, match="both have"):
        Network.veth("10.1.0.2/24", "10.1.0.2/24")
    with pytest.raises(nscg.SpecError, match="both address6 and peer_address6"):
        Network.veth("10.1.0.2/24", "10.1.0.1/24", address6="fd01::2/64")
    with pytest.raises(nscg.SpecError, match="IPv4"):
        Network.veth("fd01::2/64", "fd01::1/64")
    with pytest.raises(nscg.SpecError, match="MTU"):
        Network.veth("10.1.0.2/24", "10.1.0.1/24", mtu=10)
    with pytest.raises(nscg.SpecError, match="longer than 15"):
        Network.veth("10.1.0.2/24", "10.1.0.1/24", name="a-very-long-ifname")


def test_with_network_sets_the_namespaces() -> None:
    assert Container().with_network(Network.none()) == Container()
    host = Container().with_network(Network.host())
    assert host.network is None and not host.namespaces & Namespace.NET
    assert host.with_network(None).namespaces & Namespace.NET
    with pytest.raises(nscg.SpecError, match=r"takes a nscg\.Network"):
        Container().with_network("host")  # type: ignore[arg-type]  # checked at run time


def test_a_wired_network_needs_a_new_network_namespace() -> None:
    import attrs

    net = Network.veth("10.1.0.2/24", "10.1.0.1/24", host=None)
    c = attrs.evolve(Container().with_namespaces("user,pid"), network=net)
    with pytest.raises(nscg.SpecError, match="needs a new network namespace"):
        c.validate()


def test_hosts_and_resolv_conf_text() -> None:
    net = Network.veth(
        "10.1.0.2/24", "10.1.0.1/24", address6="fd01::2/64", peer_address6="fd01::1/64"
    )
    hosts = net.hosts_entries("box")
    assert "127.0.0.1\tlocalhost\n" in hosts
    assert "10.1.0.2\tbox\n" in hosts and "fd01::2\tbox\n" in hosts
    assert "127.0.1.1\tbox\n" in Network.none().hosts_entries("box")
    assert net.resolv_conf(("10.1.0.1",)) == "nameserver 10.1.0.1\noptions ndots:0\n"


def test_the_pool_never_hands_out_an_address_twice() -> None:
    pool = _Pool(ipaddress.IPv4Network("10.0.0.0/26"), {int(ipaddress.IPv4Address("10.0.0.1"))})
    got: list[ipaddress.IPv4Address] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(6):
            ip = pool.lease()
            with lock:
                got.append(ip)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 60 == len(set(got))
    assert all(
        ipaddress.IPv4Address("10.0.0.2") <= ip <= ipaddress.IPv4Address("10.0.0.62") for ip in got
    )
    rest = pool.lease()  # the 61st host address: .1 is the gateway, .63 the broadcast
    assert rest not in got
    with pytest.raises(nscg.SpecError, match="no free address"):
        pool.lease()
    pool.release(got[0])
    assert pool.lease() == got[0]
    with pytest.raises(nscg.SpecError, match="in use"):
        pool.lease(got[1])
    with pytest.raises(nscg.SpecError, match="not a host address"):
        pool.lease(ipaddress.IPv4Address("10.0.0.63"))


def test_wired_networks_have_their_addresses() -> None:
    """Network.veth (and Bridge.link) give a WiredNetwork: address and peer never None."""
    from nscg.network import WiredNetwork

    n = Network.veth("10.0.0.2/24", "10.0.0.1/24")
    assert isinstance(n, WiredNetwork) and isinstance(n, Network)
    assert n.address.ip == ipaddress.IPv4Address("10.0.0.2")
    assert n.peer_address.ip == ipaddress.IPv4Address("10.0.0.1")
    with pytest.raises(nscg.SpecError, match="needs address and peer_address"):
        WiredNetwork("veth", address=None, peer_address="10.0.0.1/24")

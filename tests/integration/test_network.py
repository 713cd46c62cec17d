"""Sandbox networks against the real kernel: veth links, bridges, forwards, sidecars.

Every bridge and every host end of a veth pair lives in a private network
namespace the tests create (:meth:`nscg.NetworkHost.create`), never in the
host's own; all traffic stays on addresses inside those namespaces or on
loopback. A module fixture checks that the host's links, addresses, routes and
``ip netns`` list are the same after the tests as before.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

import nscg
from nscg import Bridge, Container, Network, NetworkHost, PortForward
from nscg._netlink import NetlinkSocket
from nscg.network import settle
from tests.conftest import run_as_nobody

IS_ROOT = os.geteuid() == 0
F = TypeVar("F", bound=Callable[..., object])


def root(test: F) -> F:
    """Mark a test as needing root (veth links, bridges, joining namespaces from the parent)."""
    skip = pytest.mark.skipif(not IS_ROOT, reason="veth links and bridges need root")
    marked: F = pytest.mark.root(skip(test))
    return marked


#: A tiny HTTP server: answers GET with "hello from ADDR", prints "ready" once listening.
#: (``python3 -m http.server`` would do, but it resolves its own address at start,
#: and the sandbox has no resolver to ask: it hangs for the resolver timeout.)
SERVER = r"""
import http.server, socketserver, sys
host, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from %s" % host).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    address_family = socketserver.socket.AF_INET6 if ":" in host else socketserver.socket.AF_INET
srv = S((host, port), H)
print("ready", flush=True)
srv.serve_forever()
"""

#: A client: GET http://ADDR:PORT/ and print the body, or print the error's errno.
CLIENT = r"""
import socket, sys, urllib.request
host, port = sys.argv[1], int(sys.argv[2])
url = "http://%s:%d/" % ("[%s]" % host if ":" in host else host, port)
try:
    print(urllib.request.urlopen(url, timeout=float(sys.argv[3])).read().decode())
except Exception as e:
    r = getattr(e, "reason", e)
    print("error", getattr(r, "errno", None) or type(r).__name__)
"""


def host_state() -> tuple[object, ...]:
    """The host namespace's links, addresses, routes and named namespaces (read only)."""
    with NetlinkSocket() as nl:
        links = tuple(sorted((x.name, x.kind or "") for x in nl.links()))
        addrs = tuple(sorted(str(a.interface) for a in nl.addresses()))
        routes = tuple(sorted(repr(r) for r in nl.routes(table=None)))
    netns = ""
    if shutil.which("ip"):
        netns = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=False
        ).stdout
    return links, addrs, routes, netns


@pytest.fixture(autouse=True, scope="module")
def _host_network_unchanged() -> Iterator[None]:
    before = host_state()
    yield
    deadline = time.monotonic() + 5  # a dying namespace's links go away asynchronously
    while host_state() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host_state() == before, "the host's network configuration changed"


@pytest.fixture
def private_host() -> Iterator[NetworkHost]:
    with NetworkHost.create() as h:
        yield h


def serve(net: Network, port: int = 8080) -> nscg.Process:
    """Start the HTTP server in a sandbox on ``net``; return once it listens."""
    assert net.address is not None
    proc = (
        Container()
        .with_network(net)
        .spawn(["python3", "-c", SERVER, str(net.address.ip), str(port)], stdout=nscg.PIPE)
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    assert ready and proc.stdout.readline() == b"ready\n", "the server did not start"
    return proc


def fetch(net: Network | None, host: str, port: int = 8080, timeout: float = 3) -> str:
    """Run the HTTP client in a sandbox on ``net``; return what it printed."""
    c = Container() if net is None else Container().with_network(net)
    r = c.run(
        ["python3", "-c", CLIENT, host, str(port), str(timeout)],
        capture_output=True,
        timeout=30,
        check=True,
    )
    return (r.stdout or b"").decode().strip()


def stop(proc: nscg.Process) -> None:
    proc.kill()
    proc.wait()
    proc.close()


# ----------------------------------------------------------------- specs, rootless


def test_none_and_host_choose_the_network_namespace() -> None:
    assert Container().with_network(Network.none()) == Container()
    assert Container().with_network(None).network is None
    shared = Container().with_network(Network.host())
    assert not shared.namespaces & nscg.Namespace.NET
    assert shared.with_network(Network.none()).namespaces & nscg.Namespace.NET
    r = shared.run(["readlink", "/proc/self/ns/net"], capture_output=True, check=True)
    assert (r.stdout or b"").decode().strip() == os.readlink("/proc/self/ns/net")
    r = Container().run(["readlink", "/proc/self/ns/net"], capture_output=True, check=True)
    assert (r.stdout or b"").decode().strip() != os.readlink("/proc/self/ns/net")


@pytest.mark.rootless
def test_rootless_none_and_host_work_and_a_veth_into_the_host_says_why_not() -> None:
    out = run_as_nobody(
        """
        import json, os, nscg
        c = nscg.Container()
        none = c.run(["cat", "/proc/net/dev"], capture_output=True, check=True).stdout.decode()
        host = c.with_network(nscg.Network.host()).run(
            ["readlink", "/proc/self/ns/net"], capture_output=True, check=True)
        try:
            c.with_network(nscg.Network.veth("10.0.0.2/24", "10.0.0.1/24"))
            err = None
        except nscg.UnsupportedError as e:
            err = str(e)
        print(json.dumps({
            "ifaces": sorted(l.split(":")[0].strip() for l in none.splitlines()[2:]),
            "host_ns": host.stdout.decode().strip() == os.readlink("/proc/self/ns/net"),
            "err": err,
        }))
        """
    )
    assert out["ifaces"] == ["lo"]
    assert out["host_ns"]
    assert out["err"] is not None and "needs root" in out["err"]


@pytest.mark.rootless
def test_rootless_bridge_two_sandboxes_forward_isolation_cleanup() -> None:
    out = run_as_nobody(
        f"""
        import json, select, socket, urllib.request, nscg
        from nscg.network import settle
        SERVER, CLIENT = {SERVER!r}, {CLIENT!r}
        res = {{}}
        with nscg.Bridge("10.244.0.0/24", "fd44::/64") as br, nscg.Bridge("10.245.0.0/24") as other:
            res["rootless"] = br.host.rootless
            net = br.link()
            ip = str(net.address.ip)
            server = nscg.Container().with_network(net).spawn(
                ["python3", "-c", SERVER, ip, "8080"], stdout=nscg.PIPE)
            select.select([server.stdout], [], [], 20)
            assert server.stdout.readline() == b"ready\\n"
            def fetch(b, host, timeout):
                r = nscg.Container().with_network(b.link()).run(
                    ["python3", "-c", CLIENT, host, "8080", str(timeout)],
                    capture_output=True, check=True)
                return r.stdout.decode().strip()
            res["same"] = fetch(br, ip, 3)
            res["other"] = fetch(other, ip, 1)
            with nscg.PortForward(br.host, 8080, address=ip) as fw:
                url = "http://127.0.0.1:%d/" % fw.port
                res["forward"] = urllib.request.urlopen(url, timeout=5).read().decode()
            with nscg.PortForward(server, 8080, address=ip, via=br.host) as fw:
                url = "http://127.0.0.1:%d/" % fw.port
                res["forward_via"] = urllib.request.urlopen(url, timeout=5).read().decode()
            res["ports_running"] = len(br.ports())
            server.kill(); server.wait(); server.close()
            res["settled"] = settle(5)
            res["ports_after"] = br.ports()
            res["leased_after"] = br.leased
        print(json.dumps(res))
        """
    )
    assert out["rootless"] is True
    assert out["same"] == "hello from 10.244.0.2"
    assert out["other"].startswith("error") and "hello" not in out["other"]
    assert out["forward"] == out["forward_via"] == "hello from 10.244.0.2"
    assert out["ports_running"] == 1
    assert out["settled"] and out["ports_after"] == [] and out["leased_after"] == 0


@root
def test_the_rootless_helper_mode_works_as_root_too() -> None:
    with NetworkHost.create(rootless=True) as h, Bridge("10.246.0.0/24", host=h) as br:
        assert h.rootless and h.userns_fd() is not None
        net = br.link()
        c = Container().with_network(net)
        assert not c.namespaces & nscg.Namespace.USER and len(c.join) == 1
        server = serve(net)
        try:
            assert fetch(br.link(), "10.246.0.2") == "hello from 10.246.0.2"
        finally:
            stop(server)
            for ref in c.join:
                ref.close()
        assert settle(5) and br.ports() == []


@pytest.mark.rootless
def test_rootless_sidecar_reaches_the_sandbox_over_loopback() -> None:
    out = run_as_nobody(
        f"""
        import json, select, nscg
        server = nscg.Container().spawn(
            ["python3", "-c", {SERVER!r}, "127.0.0.1", "8080"], stdout=nscg.PIPE)
        select.select([server.stdout], [], [], 20)
        assert server.stdout.readline() == b"ready\\n"
        side = nscg.Container().joining(server, kinds="user,net")
        r = side.run(["python3", "-c", {CLIENT!r}, "127.0.0.1", "8080", "3"],
                     capture_output=True, check=True)
        for ref in side.join:
            ref.close()
        alone = nscg.Container().run(["python3", "-c", {CLIENT!r}, "127.0.0.1", "8080", "3"],
                                     capture_output=True, check=True)
        server.kill(); server.wait()
        print(json.dumps([r.stdout.decode().strip(), alone.stdout.decode().strip()]))
        """
    )
    assert out == ["hello from 127.0.0.1", f"error {errno.ECONNREFUSED}"]


# ----------------------------------------------------------------- veth


@root
def test_veth_link_has_addresses_mtu_and_a_default_route(private_host: NetworkHost) -> None:
    net = Network.veth(
        "10.231.0.2/24",
        "10.231.0.1/24",
        address6="fd31::2/64",
        peer_address6="fd31::1/64",
        mtu=1400,
        host=private_host,
    )
    script = (
        "cat /sys/class/net/eth0/mtu; cat /proc/net/route; cat /proc/net/if_inet6; "
        "cat /proc/net/ipv6_route"
    )
    r = Container().with_network(net).run(["sh", "-c", script], capture_output=True, check=True)
    out = (r.stdout or b"").decode()
    lines = out.splitlines()
    assert lines[0] == "1400"
    # default route via 10.231.0.1 (0100E70A little-endian) on eth0
    assert any(ln.split()[:3] == ["eth0", "00000000", "0100E70A"] for ln in lines)
    assert "fd310000000000000000000000000002" in out
    # an IPv6 default route (::/0) via fd31::1
    assert any(
        ln.startswith("00000000000000000000000000000000 00")
        and "fd310000000000000000000000000001" in ln
        for ln in lines
    )
    # the pair is gone with the sandbox
    assert settle(5)
    nl = private_host.netlink()
    assert [x.name for x in nl.links()] == ["lo"]


@root
def test_veth_traffic_both_ways_stays_in_the_private_namespace(
    private_host: NetworkHost,
) -> None:
    net = Network.veth("10.232.0.2/30", "10.232.0.1/30", host=private_host)
    server = serve(net)
    try:
        # from the private host namespace (the veth's other end) to the sandbox
        sock = private_host.socket()
        with sock:
            sock.settimeout(5)
            sock.connect(("10.232.0.2", 8080))
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        assert data.endswith(b"hello from 10.232.0.2")
    finally:
        stop(server)


@root
def test_two_sandboxes_on_a_bridge_third_on_another_cannot_reach() -> None:
    with Bridge("10.233.0.0/24", "fd33::/64") as br, Bridge("10.234.0.0/24") as other:
        snet = br.link()
        assert str(snet.address) == "10.233.0.2/24" and str(snet.address6) == "fd33::2/64"
        server = serve(snet)
        try:
            assert len(br.ports()) == 1 and br.attached == 1
            client = br.link()
            assert fetch(client, "10.233.0.2") == "hello from 10.233.0.2"
            # the lease ended with the client sandbox
            assert br.attached == 1
            # IPv6 on the bridge too (the server listens on IPv4 only: refused, not unreachable)
            assert fetch(br.link(), "fd33::2") == f"error {errno.ECONNREFUSED}"
            # another bridge, in another private namespace: no route at all
            third = fetch(other.link(), "10.233.0.2", timeout=2)
            assert third in (
                f"error {errno.ENETUNREACH}",
                f"error {errno.EHOSTUNREACH}",
                "error TimeoutError",
            ), third
        finally:
            stop(server)
        assert br.attached == 0
        assert settle(5)
        assert br.ports() == [] and br.leased == 0


@root
def test_two_bridges_in_one_namespace_do_not_route_to_each_other(
    private_host: NetworkHost,
) -> None:
    with (
        Bridge("10.235.0.0/24", host=private_host) as a,
        Bridge("10.236.0.0/24", host=private_host) as b,
    ):
        server = serve(a.link())
        try:
            assert fetch(a.link(), "10.235.0.2") == "hello from 10.235.0.2"
            got = fetch(b.link(), "10.235.0.2", timeout=2)
            assert got != "hello from 10.235.0.2"
        finally:
            stop(server)


@root
def test_sandboxes_cannot_reach_the_hosts_addresses() -> None:
    with NetlinkSocket() as nl:
        host_ips = [
            str(a.interface.ip) for a in nl.addresses(version=4) if not a.interface.ip.is_loopback
        ]
    # a listener on the host's loopback: a sandbox's 127.0.0.1 is its own
    lsock = socket.socket()
    with lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        port = lsock.getsockname()[1]
        with Bridge("10.237.0.0/24") as br:
            net = br.link()
            assert fetch(net, "127.0.0.1", port) == f"error {errno.ECONNREFUSED}"
            for ip in host_ips[:2]:
                got = fetch(br.link(), ip, port, timeout=1)
                assert got != f"error {errno.ECONNREFUSED}" and not got.startswith("hello"), got
        lsock.settimeout(0)
        with pytest.raises(BlockingIOError):
            lsock.accept()


@root
def test_port_forward_from_host_loopback_into_a_sandbox() -> None:
    with Bridge("10.238.0.0/24") as br:
        net = br.link()
        assert net.address is not None
        server = serve(net)
        try:
            with PortForward(server, 8080, address=str(net.address.ip)) as fw:
                assert fw.address == "127.0.0.1" and fw.port > 0
                for _ in range(3):
                    url = f"http://127.0.0.1:{fw.port}/"
                    body = urllib.request.urlopen(url, timeout=5).read()
                    assert body == b"hello from 10.238.0.2"
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", fw.port), timeout=1).close()
        finally:
            stop(server)


@root
def test_port_forward_into_a_loopback_only_sandbox_and_from_a_private_namespace(
    private_host: NetworkHost,
) -> None:
    server = Container().spawn(["python3", "-c", SERVER, "127.0.0.1", "8080"], stdout=nscg.PIPE)
    try:
        assert server.stdout is not None
        select.select([server.stdout], [], [], 20)
        assert server.stdout.readline() == b"ready\n"
        with PortForward(server, 8080, listen_in=private_host) as fw:
            s = private_host.socket()
            with s:
                s.settimeout(5)
                s.connect(("127.0.0.1", fw.port))
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            assert data.endswith(b"hello from 127.0.0.1")
            # not on the host's own loopback
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", fw.port), timeout=1).close()
    finally:
        stop(server)


@root
def test_sidecar_joined_to_a_bridged_sandbox_reaches_it_over_loopback() -> None:
    with Bridge("10.239.0.0/24") as br:
        server = (
            Container()
            .with_network(br.link())
            .spawn(["python3", "-c", SERVER, "127.0.0.1", "8080"], stdout=nscg.PIPE)
        )
        try:
            assert server.stdout is not None
            select.select([server.stdout], [], [], 20)
            assert server.stdout.readline() == b"ready\n"
            side = Container().joining(server, kinds="user,net")
            try:
                r = side.run(
                    ["python3", "-c", CLIENT, "127.0.0.1", "8080", "3"],
                    capture_output=True,
                    check=True,
                )
            finally:
                for ref in side.join:
                    ref.close()
            assert (r.stdout or b"").decode().strip() == "hello from 127.0.0.1"
        finally:
            stop(server)


# ----------------------------------------------------------------- cleanup


@root
def test_links_are_removed_after_a_payload_crash() -> None:
    with Bridge("10.240.0.0/24") as br:
        proc = Container().with_network(br.link()).spawn(["sh", "-c", "kill -SEGV $$"])
        assert proc.wait() == -11
        assert br.attached == 0
        assert settle(5)
        assert br.ports() == []
        proc.close()
        proc = Container().with_network(br.link()).spawn(["sleep", "30"])
        assert len(br.ports()) == 1
        proc.kill()
        proc.wait()
        proc.close()
        assert settle(5)
        assert br.ports() == []
        assert br.leased == 0  # every lease came back


@root
def test_a_pair_kept_alive_by_its_namespace_is_deleted_after_the_sandbox_ends() -> None:
    with Bridge("10.243.0.0/24") as br:
        proc = Container().with_network(br.link()).spawn(["sleep", "30"])
        ref = nscg.NamespaceRef.of_pid(proc.pid, "net")  # keeps the sandbox's netns alive
        try:
            proc.kill()
            proc.wait()
            proc.close()
            time.sleep(0.1)
            assert len(br.ports()) == 1  # the namespace lives on, and so does the pair
            assert settle(5)
            assert br.ports() == [] and br.leased == 0
        finally:
            ref.close()


@root
def test_a_failure_mid_setup_leaves_nothing(
    private_host: NetworkHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Bridge("10.241.0.0/24", host=private_host) as br:
        before = [x.name for x in private_host.netlink().links()]

        def boom(self: Network, nl: NetlinkSocket) -> None:
            raise nscg.SyscallError(errno.EPERM, "netlink RTM_NEWADDR", "eth0")

        monkeypatch.setattr(Network, "_configure_inside", boom)
        with pytest.raises(nscg.SyscallError):
            Container().with_network(br.link()).run(["true"])
        monkeypatch.undo()
        # a real failure: the sandbox side cannot be named "lo" (it exists there)
        with pytest.raises(nscg.SyscallError) as ei:
            Container().with_network(br.link(name="lo")).run(["true"])
        assert ei.value.errno == errno.EEXIST
        assert [x.name for x in private_host.netlink().links()] == before
        assert br.attached == 0
        assert br.leased == 0  # both addresses handed to failed spawns came back


@root
def test_a_closed_private_namespace_takes_its_links_with_it() -> None:
    host = NetworkHost.create()
    br = Bridge("10.242.0.0/24", host=host)
    proc = Container().with_network(br.link()).spawn(["sleep", "30"])
    try:
        assert len(br.ports()) == 1
    finally:
        br.close()
        host.close()
        proc.kill()
        proc.wait()
        proc.close()


# ----------------------------------------------------------------- threads


@root
def test_sandboxes_spawned_from_many_threads_on_one_bridge() -> None:
    with Bridge("10.247.0.0/24") as br:
        out: list[str] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def worker() -> None:
            try:
                for _ in range(3):
                    net = br.link()
                    r = (
                        Container()
                        .with_network(net)
                        .run(["cat", "/proc/net/fib_trie"], capture_output=True, check=True)
                    )
                    assert net.address is not None
                    assert f"|-- {net.address.ip}\n" in (r.stdout or b"").decode()
                    with lock:
                        out.append(str(net.address.ip))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(out) == 24 == len(set(out))
        assert settle(5) and br.ports() == [] and br.leased == 0


@root
def test_the_rootless_helper_runs_this_interpreter_not_the_first_python3_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\nexit 99\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ.get('PATH', '')}")
    with NetworkHost.create(rootless=True) as h:
        factory = h._factory
        assert factory is not None
        with open(f"/proc/{factory.proc.pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert argv[:2] == [os.fsencode(sys.executable), b"-I"]
        assert os.path.samefile(os.readlink(f"/proc/{factory.proc.pid}/exe"), sys.executable)

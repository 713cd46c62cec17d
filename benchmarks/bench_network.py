"""What a network costs: spawn with a veth link vs loopback only; traffic over a bridge vs loopback.

    python benchmarks/bench_network.py [-n 100] [--requests 2000] [--json FILE]

Needs root (veth links and bridges). Everything happens in private network
namespaces made for the run: the bridge and the host ends of the veth pairs
live in a :class:`nscg.NetworkHost`, never in the host's own namespace; the
traffic stays on private addresses inside those namespaces, or on loopback.

1. Spawn cost, interleaved in shuffled rounds: ``true`` in a sandbox with only
   ``lo`` (the default), with a veth pair to a private namespace, with a port on
   a bridge, and with a port on a bridge of a rootless-mode host (sockets made by
   the helper process, the sandbox joins its user namespace); mean / median /
   p95 in ms and the ratio to loopback-only.
2. Traffic between two sandboxes: a server sandbox and a client sandbox on one
   bridge, vs the same client joined to the server's network namespace (a
   sidecar) talking over 127.0.0.1: round trips per second on one connection
   (64-byte request and reply), new connections per second (one round trip
   each), and bulk MB/s (64 MiB, one connection). The median of three client
   runs each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import statistics
import sys
import time
from collections.abc import Callable

import nscg

TRUE = shutil.which("true") or "/bin/true"

SERVER = r"""
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8080))
s.listen(256)
print("ready", flush=True)
def handle(c):
    with c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = c.makefile("rb")
        for line in f:
            if line.startswith(b"BULK"):
                n = int(line.split()[1]); buf = b"x" * 65536
                while n > 0:
                    c.sendall(buf[: min(n, 65536)]); n -= 65536
                return
            c.sendall(b"y" * 64)
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"""

CLIENT = r"""
import json, socket, sys, time
host, n = sys.argv[1], int(sys.argv[2])
def rtt(c):
    c.sendall(b"x" * 63 + b"\n"); got = 0
    while got < 64:
        got += len(c.recv(64 - got))
c = socket.create_connection((host, 8080)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
t = time.perf_counter()
for _ in range(n):
    rtt(c)
rps = n / (time.perf_counter() - t); c.close()
m = max(1, n // 4); t = time.perf_counter()
for _ in range(m):
    c = socket.create_connection((host, 8080)); rtt(c); c.close()
cps = m / (time.perf_counter() - t)
size = 64 << 20
c = socket.create_connection((host, 8080)); t = time.perf_counter()
c.sendall(b"BULK %d\n" % size); got = 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    got += len(b)
mbs = got / (time.perf_counter() - t) / 1e6; c.close()
assert got == size
print(json.dumps({"requests_per_s": rps, "connections_per_s": cps, "bulk_MB_per_s": mbs}))
"""


def _stats(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "mean_ms": statistics.fmean(s) * 1e3,
        "median_ms": statistics.median(s) * 1e3,
        "p95_ms": s[min(len(s) - 1, int(len(s) * 0.95))] * 1e3,
    }


def bench_spawn(rounds: int) -> dict[str, dict[str, float]]:
    """Spawn ``true`` with each network, shuffled rounds; stats per case."""
    with (
        nscg.NetworkHost.create() as host,
        nscg.Bridge("10.251.0.0/24") as br,
        nscg.NetworkHost.create(rootless=True) as rl_host,
        nscg.Bridge("10.253.0.0/24", host=rl_host) as rl_br,
    ):
        veth = nscg.Network.veth(
            "10.250.0.2/30", "10.250.0.1/30", host=host
        )  # one at a time: the pair goes away with the sandbox
        cases: dict[str, Callable[[], nscg.Container]] = {
            "loopback only": nscg.Container,
            "veth to a private namespace": lambda: nscg.Container().with_network(veth),
            "bridge port (leased address)": lambda: nscg.Container().with_network(br.link()),
            "bridge port, rootless-mode host": lambda: nscg.Container().with_network(rl_br.link()),
        }
        samples: dict[str, list[float]] = {k: [] for k in cases}
        for make in cases.values():  # warm up
            make().run([TRUE], check=True)
        for _ in range(rounds):
            order = list(cases.items())
            random.shuffle(order)
            for name, make in order:
                c = make()
                t = time.perf_counter()
                c.run([TRUE], check=True)
                samples[name].append(time.perf_counter() - t)
    out = {k: _stats(v) for k, v in samples.items()}
    base = out["loopback only"]["median_ms"]
    for v in out.values():
        v["ratio_to_loopback"] = v["median_ms"] / base
    return out


def _client(c: nscg.Container, host: str, n: int) -> dict[str, float]:
    runs = []
    for _ in range(3):
        r = c.run(
            ["python3", "-c", CLIENT, host, str(n)], capture_output=True, timeout=300, check=True
        )
        runs.append(json.loads((r.stdout or b"{}").decode()))
    return {k: statistics.median(x[k] for x in runs) for k in runs[0]}


def bench_traffic(n: int) -> dict[str, dict[str, float]]:
    """Client/server traffic over a bridge and over loopback in one namespace."""
    out: dict[str, dict[str, float]] = {}
    with nscg.Bridge("10.252.0.0/24") as br:
        snet = br.link()
        assert snet.address is not None
        ip = str(snet.address.ip)
        server = (
            nscg.Container()
            .with_network(snet)
            .spawn(["python3", "-c", SERVER, "0.0.0.0"], stdout=nscg.PIPE)
        )
        try:
            assert server.stdout is not None
            select.select([server.stdout], [], [], 20)
            if server.stdout.readline() != b"ready\n":
                raise RuntimeError("the server did not start")
            out["two sandboxes over the bridge"] = _client(
                nscg.Container().with_network(br.link()), ip, n
            )
            side = nscg.Container().joining(server, kinds="user,net")
            try:
                out["sidecar over loopback (one netns)"] = _client(side, "127.0.0.1", n)
            finally:
                for ref in side.join:
                    ref.close()
        finally:
            server.kill()
            server.wait()
            server.close()
    return out


def main() -> int:
    """Run both benchmarks and print a table (and JSON if asked)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=100, help="spawn rounds (default 100)")
    ap.add_argument("--requests", type=int, default=2000, help="round trips per client run")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_network needs root (veth links and bridges)", file=sys.stderr)
        return 2
    spawn = bench_spawn(args.n)
    print(f"spawn of 'true', {args.n} shuffled rounds")
    print(f"  {'case':32} {'mean':>8} {'median':>8} {'p95':>8}  ratio")
    for name, v in spawn.items():
        print(
            f"  {name:32} {v['mean_ms']:8.2f} {v['median_ms']:8.2f} {v['p95_ms']:8.2f}"
            f"  {v['ratio_to_loopback']:.2f}x"
        )
    traffic = bench_traffic(args.requests)
    print(f"traffic, median of 3 client runs ({args.requests} round trips each)")
    print(f"  {'path':36} {'req/s':>9} {'conn/s':>9} {'MB/s':>9}")
    for name, t in traffic.items():
        print(
            f"  {name:36} {t['requests_per_s']:9.0f} {t['connections_per_s']:9.0f}"
            f" {t['bulk_MB_per_s']:9.0f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"spawn": spawn, "traffic": traffic}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Spawn cost of nscg side by side with the floor and the peers, interleaved in one run.

    python benchmarks/bench_spawn.py [-n 200] [--json FILE]

Each round runs every case once, in a shuffled order, so drift of the machine
hits all cases alike. Printed: mean / median / p95 per case in milliseconds and
each case's ratio to ``subprocess.run``, ``unshare(1)`` and ``bwrap``. A peer
missing from the machine is reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import nscg

TRUE = shutil.which("true") or "/bin/true"
NS6 = "user,pid,mount,net,uts,ipc"


def _posix_spawn() -> None:
    pid = os.posix_spawn(TRUE, [TRUE], {})
    os.waitpid(pid, 0)


def _subprocess() -> None:
    subprocess.run([TRUE], check=True)


def _cmd(argv: list[str]) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)

    return run


def _nscg(c: nscg.Container) -> Callable[[], None]:
    def run() -> None:
        r = c.run([TRUE])
        if r.returncode:
            raise RuntimeError(r)

    return run


def _bwrap_ro_argv(bwrap: str) -> list[str]:
    """bwrap with the host's / read-only + /proc + /dev + a tmpfs /tmp (issue 3's peer)."""
    from run_all import _bwrap_argv  # the same command in both scripts

    argv: list[str] = _bwrap_argv(bwrap)
    return argv


def cases() -> dict[str, Callable[[], None] | str]:
    """The benchmark cases; a string value is the reason a case is skipped."""
    out: dict[str, Callable[[], None] | str] = {
        "floor: posix_spawn": _posix_spawn,
        "subprocess.run": _subprocess,
    }
    unshare = shutil.which("unshare")
    out["unshare(1) 6 ns"] = (
        _cmd(
            [
                unshare,
                "--user",
                "--map-root-user",
                "--pid",
                "--fork",
                "--mount",
                "--uts",
                "--ipc",
                "--net",
                TRUE,
            ]
        )
        if unshare
        else "unshare(1) not installed"
    )
    bwrap = shutil.which("bwrap")
    out["bwrap --unshare-all"] = (
        _cmd(
            [
                bwrap,
                "--unshare-all",
                "--ro-bind",
                "/usr",
                "/usr",
                "--symlink",
                "usr/bin",
                "/bin",
                "--symlink",
                "usr/lib",
                "/lib",
                "--symlink",
                "usr/lib64",
                "/lib64",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                TRUE,
            ]
        )
        if bwrap
        else "bwrap not installed (apt-get install bubblewrap)"
    )
    out["bwrap --unshare-all ro /"] = (
        _cmd(_bwrap_ro_argv(bwrap)) if bwrap else "bwrap not installed (apt-get install bubblewrap)"
    )
    # the levels of the spawn benchmark: isolation only, no capability or
    # seccomp changes (those are the "full" level's)
    base = nscg.Container().without_rootfs().with_capabilities("inherit").with_seccomp("unconfined")
    out["nscg no namespaces"] = _nscg(
        base.with_namespaces(nscg.Namespace.NONE).with_new_session(False)
    )
    out["nscg 6 ns"] = _nscg(base.with_namespaces(NS6))
    out["nscg 6 ns, no init"] = _nscg(base.with_namespaces(NS6).with_init(False))
    out["nscg 6 ns + RootFS.host()"] = _nscg(
        base.with_namespaces(NS6).with_rootfs(nscg.RootFS.host())
    )
    # the "full" level of issue 8: namespaces + RootFS.host() + no capabilities
    # + the default seccomp filter
    out["nscg full (ns+rootfs+caps+seccomp)"] = _nscg(
        nscg.Container().with_namespaces(NS6).with_rootfs(nscg.RootFS.host())
    )
    return out


def measure(n: int, warmup: int = 10) -> dict[str, list[float] | str]:
    """Time ``n`` rounds of every case, interleaved; return seconds per case."""
    todo = cases()
    results: dict[str, list[float] | str] = {
        k: (v if isinstance(v, str) else []) for k, v in todo.items()
    }
    runnable = [(k, v) for k, v in todo.items() if not isinstance(v, str)]
    for _ in range(warmup):
        for _k, fn in runnable:
            fn()
    for _ in range(n):
        random.shuffle(runnable)
        for k, fn in runnable:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            times = results[k]
            assert isinstance(times, list)
            times.append(dt)
    return results


def import_time(repeat: int = 5) -> float:
    """Median wall time of ``import nscg`` in a fresh interpreter, in seconds."""
    code = "import time; t=time.perf_counter(); import nscg; print(time.perf_counter()-t)"
    samples = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
        samples.append(float(out.stdout))
    return statistics.median(samples)


def report(results: dict[str, list[float] | str], imp: float) -> dict[str, object]:
    """Print a table and return the numbers as a dict."""
    stats: dict[str, dict[str, float]] = {}
    for k, v in results.items():
        if isinstance(v, str):
            continue
        s = sorted(v)
        stats[k] = {
            "mean_ms": statistics.fmean(s) * 1e3,
            "median_ms": statistics.median(s) * 1e3,
            "p95_ms": s[int(0.95 * (len(s) - 1))] * 1e3,
        }
    refs = ["subprocess.run", "unshare(1) 6 ns", "bwrap --unshare-all", "bwrap --unshare-all ro /"]
    head = f"{'case':28} {'mean':>8} {'median':>8} {'p95':>8}  " + "  ".join(
        f"{'/' + r.split()[0] + ('-ro/' if r.endswith('ro /') else ''):>12}" for r in refs
    )
    print(head)
    for k, v in results.items():
        if isinstance(v, str):
            print(f"{k:28} skipped: {v}")
            continue
        st = stats[k]
        ratios = []
        for r in refs:
            ratios.append(
                f"{st['median_ms'] / stats[r]['median_ms']:12.2f}" if r in stats else f"{'-':>12}"
            )
        print(
            f"{k:28} {st['mean_ms']:8.2f} {st['median_ms']:8.2f} {st['p95_ms']:8.2f}  "
            + "  ".join(ratios)
        )
    print(f"import nscg: {imp * 1e3:.1f} ms (median of 5 fresh interpreters)")
    print("times in ms per spawn+wait; ratios are of medians")
    return {
        "cases": stats,
        "skipped": {k: v for k, v in results.items() if isinstance(v, str)},
        "import_ms": imp * 1e3,
    }


def main() -> None:
    """Run the benchmark from the command line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=200, help="rounds (default 200)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()
    data = report(measure(args.n), import_time())
    data["n"] = args.n
    data["date"] = time.strftime("%Y-%m-%d")
    data["kernel"] = os.uname().release
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=2)


if __name__ == "__main__":
    main()

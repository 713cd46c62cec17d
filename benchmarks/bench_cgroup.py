"""The cost of a cgroup per sandbox (create + place + remove), on a pure cgroup v2 host.

    tools/vm/run-in-v2vm.sh --timeout 600 --share "$PWD" -- \\
        .venv/bin/python benchmarks/bench_cgroup.py -n 50

Interleaved rounds of the same spawn without and with ``with_cgroup()`` (and with
limits); prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import nscg


def _case(c: nscg.Container) -> Callable[[], None]:
    def run() -> None:
        c.run(["true"], check=True)

    return run


def main() -> None:
    """Run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=50)
    args = ap.parse_args()
    base = nscg.Container()
    cases = {
        "no cgroup": _case(base),
        "cgroup": _case(base.with_cgroup()),
        "cgroup + memory/pids/cpu limits": _case(base.with_limits(memory="64M", pids=64, cpus=0.5)),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():
        fn()
    items = list(cases.items())
    for _ in range(args.n):
        random.shuffle(items)
        for k, fn in items:
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    ref = statistics.median(times["no cgroup"])
    for k, v in times.items():
        m = statistics.median(v)
        print(f"{k:34} median {m * 1e3:7.2f} ms  ratio {m / ref:5.2f}")


if __name__ == "__main__":
    main()

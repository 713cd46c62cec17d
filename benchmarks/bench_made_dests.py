"""What a made destination costs a spawn (docs/rootfs.md, "Missing destinations").

    python benchmarks/bench_made_dests.py [-n 80]

Interleaved rounds of ``/bin/true`` in ``RootFS.host()`` and in the same root
with a tmpfs at a path that exists below a tmpfs (nothing made), at a missing
path below ``/`` (``/`` rebuilt) and below ``/usr/lib`` (``/usr/lib`` rebuilt).
"""

from __future__ import annotations

import argparse
import statistics
import time

import nscg


def main() -> None:
    """Print the median and the 10th percentile of each case, in milliseconds."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=80, help="rounds")
    n = ap.parse_args().n
    cases = {
        "host": nscg.RootFS.host(),
        "tmpfs /tmp/x (nothing made)": nscg.RootFS.host().tmpfs("/tmp/x"),
        "tmpfs /nscg-new (/ rebuilt)": nscg.RootFS.host().tmpfs("/nscg-new"),
        "tmpfs /usr/lib/nscg-new (/usr/lib rebuilt)": nscg.RootFS.host().tmpfs("/usr/lib/nscg-new"),
    }
    boxes = {k: nscg.Container().with_rootfs(v) for k, v in cases.items()}
    times: dict[str, list[float]] = {k: [] for k in boxes}
    for c in boxes.values():
        c.run(["true"])  # (warm)
    for _ in range(n):
        for k, c in boxes.items():
            t = time.perf_counter()
            if c.run(["true"]).returncode != 0:
                raise SystemExit(f"{k}: the sandbox failed")
            times[k].append(time.perf_counter() - t)
    for k, xs in times.items():
        xs.sort()
        med, p10 = statistics.median(xs) * 1e3, xs[len(xs) // 10] * 1e3
        print(f"{k}: median {med:.2f} ms, p10 {p10:.2f} ms")


if __name__ == "__main__":
    main()

"""Benchmark ``nscg-oci`` against runc: ``--version`` and ``run`` of a busybox bundle.

Builds a bundle whose root is a static busybox running ``/bin/true`` (runc's
default spec otherwise), then times each command as a fresh process, the
cases interleaved round by round so that load changes hit all of them alike.
Two floors are timed too: the interpreter alone (``python -I -c pass``) and
importing nscg's spawn machinery, the part of ``run`` before any work.

Run as root: ``python benchmarks/bench_oci.py [rounds]`` (needs runc on PATH
for the ratios; the .pyc files compiled, as an installed package has them).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nscg.oci.cli import default_spec


def _bundle(where: Path) -> Path:
    busybox = shutil.which("busybox") or "/bin/busybox"
    root = where / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    (root / "bin" / "true").symlink_to("busybox")
    for d in ("proc", "dev", "sys"):
        (root / d).mkdir()
    doc = default_spec()
    doc["process"]["args"] = ["/bin/true"]
    (where / "config.json").write_text(json.dumps(doc))
    return where


def main() -> int:
    """Time the cases and print medians and ratios.

    Returns:
        The exit status.
    """
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    oci = [sys.executable, "-m", "nscg.oci"]
    with tempfile.TemporaryDirectory(prefix="nscg-bench-oci-", dir="/var/tmp") as tmp:
        bundle = _bundle(Path(tmp))
        cases = {
            "python -I -c pass": [sys.executable, "-I", "-c", "pass"],
            "import nscg.oci.runner": [sys.executable, "-c", "import nscg.oci.runner"],
            "nscg-oci --version": [*oci, "--version"],
            "nscg-oci run": [*oci, "--root", f"{tmp}/s1", "run", "-b", str(bundle), "b"],
        }
        if shutil.which("runc"):
            cases["runc --version"] = ["runc", "--version"]
            cases["runc run"] = ["runc", "--root", f"{tmp}/s2", "run", "-b", str(bundle), "b"]
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(rounds):
            for name, argv in cases.items():
                t0 = time.perf_counter()
                r = subprocess.run(
                    argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
                )
                times[name].append(time.perf_counter() - t0)
                if r.returncode != 0:
                    print(f"{name} failed: {r.stderr.decode()}", file=sys.stderr)
                    return 1
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    for name, ms in med.items():
        q = statistics.quantiles(times[name], n=4)
        print(f"{name:24s} median {ms:7.1f} ms  [q1 {q[0] * 1e3:.1f}, q3 {q[2] * 1e3:.1f}]")
    for what in ("--version", "run"):
        if f"runc {what}" in med:
            ratio = med[f"nscg-oci {what}"] / med[f"runc {what}"]
            print(f"nscg-oci {what} / runc {what}: {ratio:.2f}")
    print(f"rounds {rounds}, load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The pytest plugin's isolated modes on the attrs suite: wall time and counts.

python benchmarks/bench_pytest_plugin.py [--fresh]

Downloads the sdist of the installed attrs version with pip, runs its whole test
suite plain and with ``--nscg-isolate-all --nscg-isolated-mode=zygote`` (and the
fresh mode with ``--fresh``: slow), and prints the wall time, the counts and the
overhead per test. Needs root (the project is bound read-only into the sandbox).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.test_pytest_zygote import _pytest, attrs_suite, counts


def main() -> int:
    """Run the modes and print a line each."""
    modes = {
        "plain": [],
        "zygote/module": ["--nscg-isolate-all", "--nscg-isolated-mode=zygote"],
        "zygote/session": [
            "--nscg-isolate-all",
            "--nscg-isolated-mode=zygote",
            "--nscg-zygote-scope=session",
        ],
    }
    if "--fresh" in sys.argv:
        modes["fresh"] = ["--nscg-isolate-all", "--nscg-isolated-mode=fresh"]
    with tempfile.TemporaryDirectory(dir="/var/tmp") as top:
        os.chmod(top, 0o755)
        tree = attrs_suite(Path(top))
        base = None
        for name, args in modes.items():
            t0 = time.perf_counter()
            out = _pytest(tree, *args)
            dt = time.perf_counter() - t0
            c = counts(out)
            n = sum(c.values())
            if base is None:
                base = dt
            extra = f", +{(dt - base) / n:.3f} s per test, {dt / base:.2f}x" if n else ""
            print(f"{name}: {dt:.1f} s, {c}{extra}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

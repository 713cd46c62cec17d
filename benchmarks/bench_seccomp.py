"""Benchmark nscg's seccomp compiler on Docker's default profile.

Prints the compile time (best of N, tables already loaded) and the number of BPF
instructions executed for a few syscalls, for nscg's filter and, when libseccomp is
installed, for libseccomp's filter of the same rules (both run in nscg's interpreter).

Run: ``PYTHONPATH=src python benchmarks/bench_seccomp.py``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from nscg.seccomp import Arch, Seccomp, _compiler, run_filter

ROOT = Path(__file__).resolve().parent.parent
CALLS = ("read", "write", "futex", "mmap", "kexec_load")


def main() -> int:
    """Run the benchmark and print a table.

    Returns:
        The exit status.
    """
    arch = Arch.X86_64
    start = time.perf_counter()
    spec = Seccomp.docker_default(arch=arch, kernel="6.1")
    load_ms = (time.perf_counter() - start) * 1e3
    spec.compile()
    times = []
    for _ in range(50):
        _compiler._compile.cache_clear()
        t0 = time.perf_counter()
        program = spec.compile()
        times.append(time.perf_counter() - t0)
    print(f"docker default profile: {len(spec.rules)} rules, load+parse {load_ms:.2f} ms (cold)")
    print(
        f"compile: best {min(times) * 1e3:.3f} ms, median "
        f"{sorted(times)[len(times) // 2] * 1e3:.3f} ms, {len(program) // 8} instructions"
    )
    theirs: bytes | None = None
    try:
        sys.path.insert(0, str(ROOT))
        from tests.unit.test_seccomp_oracle import LIB, libseccomp_compile

        if LIB is not None:
            theirs = libseccomp_compile(LIB, spec)
    except ImportError as exc:
        print(f"(libseccomp comparison unavailable: {exc})")
    if theirs is not None:
        print(f"libseccomp program: {len(theirs) // 8} instructions")
    print(f"{'syscall':<12} {'nscg':>6} {'libseccomp':>11}   (instructions executed)")
    for name in CALLS:
        ours_action, ours_steps = run_filter(program, name, (), arch)
        ref = f"{run_filter(theirs, name, (), arch)[1]:>11}" if theirs else f"{'-':>11}"
        print(f"{name:<12} {ours_steps:>6} {ref}   {ours_action}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""tools/gen_syscall_tables.py, the reproducible path to nscg's syscall tables.

The generator runs on small synthetic kernel trees in each of the three layouts it reads
(7.x: arm64's own table; 6.11-6.x: scripts/syscall.tbl; before: asm-generic/unistd.h), and
the shipped tables are checked for the facts the generator guarantees.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nscg import seccomp as sc
from nscg.seccomp import Arch

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "tools" / "gen_syscall_tables.py"

_TBL64 = """\
# comment
0\tcommon\tread\t\t\tsys_read
1\tcommon\twrite\t\t\tsys_write
13\t64\trt_sigaction\t\tsys_rt_sigaction
462 \tcommon  mseal\t\t\tsys_mseal
472\tcommon\tfchroot\t\t\tsys_fchroot
512\tx32\trt_sigaction\t\tcompat_sys_rt_sigaction
"""
_TBL32 = """\
3\ti386\tread\t\t\tsys_read
4\ti386\twrite\t\t\tsys_write
462\ti386\tmseal\t\t\tsys_mseal
"""
_GENERIC_TBL = """\
38\trenameat renameat\t\t\tsys_renameat
63\tcommon\tread\t\t\t\tsys_read
64\tcommon\twrite\t\t\t\tsys_write
79\tstat64\tfstatat64\t\t\tsys_fstatat64
79\t64\tnewfstatat\t\t\tsys_newfstatat
244\tarc\tcacheflush\t\t\tsys_cacheflush
447\tmemfd_secret\tmemfd_secret\t\tsys_memfd_secret
462\tcommon\tmseal\t\t\t\tsys_mseal
"""
_UNISTD_H = """\
#define __NR_read 63
#define __NR_write 64
#ifdef __ARCH_WANT_RENAMEAT
#define __NR_renameat 38
#endif
#if __BITS_PER_LONG == 64 && !defined(__SYSCALL_COMPAT)
#define __NR3264_fstatat 79
#define __NR_newfstatat __NR3264_fstatat
#else
#define __NR_fstatat64 79
#endif
#define __NR_mseal 462
"""


def _tree(root: Path, layout: str) -> Path:
    (root / "arch/x86/entry/syscalls").mkdir(parents=True)
    (root / "Makefile").write_text("VERSION = 7\nPATCHLEVEL = 3\nSUBLEVEL = 4\nEXTRAVERSION =\n")
    (root / "arch/x86/entry/syscalls/syscall_64.tbl").write_text(_TBL64)
    (root / "arch/x86/entry/syscalls/syscall_32.tbl").write_text(_TBL32)
    mk = root / "arch/arm64/kernel/Makefile.syscalls"
    if layout == "7.x":
        mk.parent.mkdir(parents=True)
        mk.write_text(
            "syscall_abis_64 += renameat rlimit memfd_secret\n"
            "syscalltbl = arch/arm64/tools/syscall_%.tbl\n"
        )
        (root / "arch/arm64/tools").mkdir(parents=True)
        (root / "arch/arm64/tools/syscall_64.tbl").write_text(_GENERIC_TBL)
    elif layout == "6.11":
        mk.parent.mkdir(parents=True)
        mk.write_text("syscall_abis_64 += renameat rlimit memfd_secret\n")
        (root / "scripts").mkdir()
        (root / "scripts/syscall.tbl").write_text(_GENERIC_TBL)
    else:
        (root / "arch/arm64/include/uapi/asm").mkdir(parents=True)
        (root / "arch/arm64/include/uapi/asm/unistd.h").write_text("#define __ARCH_WANT_RENAMEAT\n")
        (root / "include/uapi/asm-generic").mkdir(parents=True)
        (root / "include/uapi/asm-generic/unistd.h").write_text(_UNISTD_H)
    return root


def _generate(tree: Path, out: Path) -> dict[str, dict[str, object]]:
    subprocess.run(
        [sys.executable, str(GEN), str(tree), "--out", str(out), "--source", "synthetic"],
        check=True,
        capture_output=True,
    )
    return {
        a: json.loads((out / f"syscalls_{a}.json").read_text())
        for a in ("x86_64", "i386", "x32", "aarch64")
    }


@pytest.mark.parametrize("layout", ["7.x", "6.11", "unistd.h"])
def test_generator_reads_each_layout(tmp_path: Path, layout: str) -> None:
    """x86 tables by ABI, x32 with its bit, arm64 by the ABIs its Makefile selects."""
    tables = _generate(_tree(tmp_path / "linux", layout), tmp_path / "out")
    x86 = tables["x86_64"]
    assert x86["kernel_version"] == "7.3.4" and x86["source"] == "synthetic"
    assert x86["syscalls"] == {
        "read": 0,
        "write": 1,
        "rt_sigaction": 13,
        "mseal": 462,
        "fchroot": 472,
    }
    assert tables["i386"]["syscalls"] == {"read": 3, "write": 4, "mseal": 462}
    x32 = tables["x32"]["syscalls"]
    assert isinstance(x32, dict)
    assert x32["rt_sigaction"] == 0x40000000 | 512 and x32["read"] == 0x40000000
    arm = tables["aarch64"]["syscalls"]
    want = {"renameat": 38, "read": 63, "write": 64, "newfstatat": 79, "mseal": 462}
    if layout != "unistd.h":
        want["memfd_secret"] = 447  # selected by syscall_abis_64; cacheflush (arc) is not
    assert arm == want
    assert tables["aarch64"]["audit_arch"] == Arch.AARCH64.audit_arch


def test_generator_is_deterministic(tmp_path: Path) -> None:
    """The same tree gives byte-identical files (so a regenerated table diffs cleanly)."""
    tree = _tree(tmp_path / "linux", "7.x")
    _generate(tree, tmp_path / "a")
    _generate(tree, tmp_path / "b")
    for name in sorted(p.name for p in (tmp_path / "a").iterdir()):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_shipped_tables_are_consistent() -> None:
    """One kernel version and source for all; numbers unique; x32 all with the x32 bit."""
    raws = {
        a: json.loads((Path(sc.__file__).parent / "_data" / f"syscalls_{a}.json").read_text())
        for a in ("x86_64", "i386", "x32", "aarch64")
    }
    assert len({r["kernel_version"] for r in raws.values()}) == 1
    assert len({r["source"] for r in raws.values()}) == 1
    for arch, raw in raws.items():
        numbers = list(raw["syscalls"].values())
        assert len(numbers) == len(set(numbers)), arch
        assert raw["generator"] == "tools/gen_syscall_tables.py"
    assert all(nr & 0x40000000 for nr in raws["x32"]["syscalls"].values())
    assert not any(nr & 0x40000000 for nr in raws["x86_64"]["syscalls"].values())

"""The child's C code makes no system call through the C library.

Between clone and execve the child shares the caller's memory and thread-local
storage: glibc's wrappers report failures in errno, which the thread that
cloned (running Python meanwhile) and its other children write too. A child
reading errno acted on another's error now and then under load (seen: 1 spawn
in ~4000 with 4 threads failing with a foreign EINVAL/ENOENT; the same race
could skip a mask or a bounding-set drop). So child.c and mount.c call the
kernel through nscg_sys (child.h), which returns -errno. This compiles both
files and checks what they import from the C library.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parents[2] / "src" / "nscg" / "_native"

#: what the child may take from the C library: no system call wrapper except
#: clone, the fallback without clone3 (Linux < 5.3), whose errno it reads
ALLOWED = {
    "clone",
    "__errno_location",  # the clone fallback only
    "memcpy",
    "memmove",
    "memset",
    "strlen",
    "sigemptyset",  # no system call
    "sysconf",  # the page size, cached by the C library
    "__stack_chk_fail",
    # our own
    "nscg_clone3_run",
    "nscg_setup_mounts",
    "nscg_open_bind_sources",
    "nscg_fail",
}


@pytest.mark.parametrize("source", ["child.c", "mount.c"])
def test_child_code_calls_the_kernel_directly(source: str, tmp_path: Path) -> None:
    cc, nm = shutil.which("cc") or shutil.which("gcc"), shutil.which("nm")
    if not cc or not nm:
        pytest.skip("needs a C compiler and nm")
    obj = tmp_path / "x.o"
    subprocess.run(
        [cc, "-O2", "-D_GNU_SOURCE", f"-I{NATIVE}", "-c", str(NATIVE / source), "-o", str(obj)],
        check=True,
    )
    out = subprocess.run([nm, "-u", str(obj)], check=True, capture_output=True, text=True)
    imported = {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}
    assert imported <= ALLOWED, f"{source} calls into the C library: {sorted(imported - ALLOWED)}"

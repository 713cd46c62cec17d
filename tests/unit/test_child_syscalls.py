"""The child's C code makes no system call through the C library.

Between clone and execve the child shares the caller's memory and thread-local
storage: glibc's wrappers report failures in errno, which the thread that
cloned (running Python meanwhile) and its other children write too. A child
reading errno acted on another's error now and then under load (seen: 1 spawn
in ~4000 with 4 threads failing with a foreign EINVAL/ENOENT; the same race
could skip a mask or a bounding-set drop). So child.c and mount.c call the
kernel through nscg_sys (child.h), which returns -errno.

This builds the extension the way ``pip install`` does (build.py's cffi
builder, through setuptools), once with the compiler flags Python was built
with and once with the flags other distributions' compilers add by default
(Ubuntu's gcc: ``_FORTIFY_SOURCE=3``, which turns ``memcpy`` into
``__memcpy_chk``, the stack protector, stack-clash and CET protection), and
checks what the child's objects take from the C library. The child sources
build without fortification whatever the flags (child.h): see docs/design.md,
"C hygiene".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail

NATIVE = Path(__file__).resolve().parents[2] / "src" / "nscg" / "_native"

#: what the child may take from the C library: no system call wrapper except
#: clone, the fallback without clone3 (Linux < 5.3), whose errno it reads. No
#: fortified variant (__memcpy_chk...): their failure path is the C library's
#: abort, in a process that shares the caller's memory.
ALLOWED = {
    "clone",
    "__errno_location",  # the clone fallback only
    "memcpy",
    "memmove",
    "memset",
    "strlen",
    "sysconf",  # the page size, cached by the C library
    "__stack_chk_fail",  # a smashed stack: the canary is only read
    # our own
    "nscg_clone3_run",
    "nscg_setup_mounts",
    "nscg_open_bind_sources",
    "nscg_fail",
}

#: CFLAGS of a build: none (the flags Python was built with, as pip uses
#: them), and what Ubuntu's gcc turns on by default (plus dpkg-buildflags'
#: format checks), spelled out since this compiler may not default to them
FLAGS = {
    "python": None,
    "ubuntu": (
        "-g -O2 -D_FORTIFY_SOURCE=3 -fstack-protector-strong -fstack-clash-protection "
        "-fcf-protection -D_GLIBCXX_ASSERTIONS -Wformat -Werror=format-security"
    ),
    # Ubuntu's and Fedora's package builds add link-time optimisation (fat objects,
    # so that nm still sees each object's own code)
    "lto": "-O2 -flto=auto -ffat-lto-objects -D_FORTIFY_SOURCE=3 -fstack-protector-strong",
}


def _tools() -> tuple[str, str]:
    cc, nm = shutil.which("cc") or shutil.which("gcc"), shutil.which("nm")
    if not cc or not nm:
        skip_or_fail("cc", "needs a C compiler and nm (binutils)")
    assert cc and nm
    return cc, nm


def _undefined(nm: str, obj: Path) -> set[str]:
    out = subprocess.run([nm, "-u", str(obj)], check=True, capture_output=True, text=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


@pytest.fixture(scope="module", params=sorted(FLAGS))
def build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The extension built into a temp dir with one set of CFLAGS: its build dir."""
    _tools()
    flags = FLAGS[request.param]
    out = tmp_path_factory.mktemp(f"build-{request.param}")
    env = dict(os.environ)
    env.pop("CFLAGS", None)
    if flags is not None:
        env["CFLAGS"] = flags
    code = (
        "import runpy, sys\nrunpy.run_path(sys.argv[1])['ffibuilder'].compile(tmpdir=sys.argv[2])\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(NATIVE / "build.py"), str(out)],
        check=False,
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0 and "No module named 'setuptools'" in r.stderr:
        skip_or_fail("cc", "building the extension needs setuptools (pip install setuptools)")
    assert r.returncode == 0, r.stdout + r.stderr
    # builds cleanly: no warning in the sources we own
    warnings = [
        line
        for line in (r.stdout + r.stderr).splitlines()
        if "warning:" in line and "/_native/" in line
    ]
    assert not warnings, "\n".join(warnings)
    return out


def _object(build: Path, source: str) -> Path:
    found = [p for p in build.rglob(source.replace(".c", ".o")) if "_native" in p.parts]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("source", ["child.c", "mount.c"])
def test_child_code_calls_the_kernel_directly(source: str, build: Path) -> None:
    _, nm = _tools()
    imported = _undefined(nm, _object(build, source))
    assert imported <= ALLOWED, f"{source} calls into the C library: {sorted(imported - ALLOWED)}"


def test_the_flags_reach_the_build(build: Path) -> None:
    """The parent's code is built as given: fortified where the flags say so.

    (Else the test above could pass because the flags never reached the compiler.)
    """
    _, nm = _tools()
    parent = _undefined(nm, _object(build, "spawn.c"))
    fortified = {s for s in parent if s.startswith("__") and s.endswith("_chk")}
    if build.name.startswith(("build-ubuntu", "build-lto")):
        assert fortified, sorted(parent)


@pytest.mark.parametrize("first", ["<string.h>", '"nscg.h"'])
def test_child_sources_refuse_a_header_before_child_h(first: str, tmp_path: Path) -> None:
    """child.h must come first: a header before it would have fixed _FORTIFY_SOURCE."""
    cc, _ = _tools()
    src = tmp_path / "bad.c"
    src.write_text(f'#include {first}\n#include "child.h"\n')
    r = subprocess.run(
        [cc, "-O2", "-D_FORTIFY_SOURCE=2", f"-I{NATIVE}", "-c", str(src), "-o", os.devnull],
        check=False,
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0
    assert "child.h must be" in r.stderr or "without _FORTIFY_SOURCE" in r.stderr, r.stderr


def _setup_list(name: str) -> list[str]:
    """A list of strings setup.py assigns to ``name`` (read, not run)."""
    import ast

    tree = ast.parse((NATIVE.parents[2] / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            value = ast.literal_eval(node.value)
            assert isinstance(value, list)
            return [str(v) for v in value]
    raise AssertionError(f"setup.py has no {name}")


@pytest.mark.parametrize("flags", sorted(FLAGS))
def test_nscg_init_builds_libc_free_with_every_flag_set(flags: str, tmp_path: Path) -> None:
    """nscg-init, built as setup.py does (the distribution's CFLAGS, then setup.py's own,
    which win), links without a C library under every flag set: the stack protector,
    fortification and LTO of other distributions do not push it onto the ~800 KB glibc
    fallback (setup.py falls back silently, with a warning)."""
    cc, nm = _tools()
    obj, exe = tmp_path / "init.o", tmp_path / "nscg-init"
    cflags = (FLAGS[flags] or "").split()
    compile_cmd = [cc, *cflags, "-DNSCG_INIT_NOLIBC", *_setup_list("NOLIBC_CFLAGS")]
    subprocess.run([*compile_cmd, "-c", str(NATIVE / "init.c"), "-o", str(obj)], check=True)
    assert _undefined(nm, obj) == set()
    subprocess.run([cc, str(obj), *_setup_list("NOLIBC_LDFLAGS"), "-o", str(exe)], check=True)
    assert exe.stat().st_size < 64 * 1024
    assert b"__libc_start_main" not in exe.read_bytes()

"""One host-probe module and one FFI (issue 15 item 11): nscg/_host.py.

The modules ask ``_host`` what the host is (kernel version, /proc/self/status,
clone3) and make their plain system calls through the cffi extension: no module
imports ctypes (two programs nscg starts keep it in their own source text).
"""

from __future__ import annotations

import ast
import errno
import os
import re
from pathlib import Path

import pytest

import nscg
from nscg import _host
from nscg.errors import SyscallError

SRC = Path(nscg.__file__).resolve().parent
MODULES = sorted(p for p in SRC.rglob("*.py") if "_data" not in p.parts)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def test_no_module_imports_ctypes() -> None:
    found = []
    for path in MODULES:
        for node in ast.walk(_tree(path)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n == "ctypes" or n.startswith("ctypes.") for n in names):
                found.append(f"{path.relative_to(SRC)}:{getattr(node, 'lineno', 0)}")
    assert found == []


def test_the_host_is_asked_in_one_place() -> None:
    """No kernel release parsing, /proc/self/status read or clone3 probe outside _host."""
    found = []
    for path in MODULES:
        if path.name == "_host.py":
            continue
        for node in ast.walk(_tree(path)):
            where = f"{path.relative_to(SRC)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Constant) and node.value == "/proc/self/status":
                found.append(f"{where} reads /proc/self/status")
            if isinstance(node, ast.Attribute) and node.attr == "release":
                base = node.value
                if isinstance(base, ast.Name) and base.id == "platform":
                    found.append(f"{where} platform.release")
                if isinstance(base, ast.Call) and getattr(base.func, "attr", "") == "uname":
                    found.append(f"{where} os.uname().release")
    assert found == []


@pytest.mark.parametrize(
    ("release", "want"),
    [
        ("6.18.44-fc-v1272", (6, 18, 44)),
        ("5.15.0-91-generic", (5, 15, 0)),
        ("6.1.0-57-amd64", (6, 1, 0)),
        ("6.8", (6, 8)),
        ("4.19.0rc1", (4, 19, 0)),
        ("weird", ()),
    ],
)
def test_parse_release(release: str, want: tuple[int, ...]) -> None:
    assert _host.parse_release(release) == want


def test_kernel_version_is_this_kernel() -> None:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    assert m is not None
    assert _host.kernel_version() == (int(m.group(1)), int(m.group(2)))
    assert _host.kernel_release() == os.uname().release


def test_status_field_reads_proc_self_status() -> None:
    with open("/proc/self/status") as f:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    assert _host.status_field("Name") == fields["Name"].strip()
    assert _host.status_field("CapEff") == fields["CapEff"].strip()
    assert _host.status_field("NoSuchField") is None


def test_clone3_probe() -> None:
    assert _host.has_clone3() is (_host.kernel_version() >= (5, 3))
    assert nscg.features().clone3 is _host.has_clone3()


def test_system_calls_report_errno_as_syscall_error(tmp_path: Path) -> None:
    with pytest.raises(SyscallError) as e:
        _host.setns(-1, 0, "nothing")
    assert e.value.errno == errno.EBADF
    with pytest.raises(SyscallError) as e:
        _host.unshare(-1)
    assert e.value.errno == errno.EINVAL
    assert _host.prctl(23, 0) in (0, 1)  # PR_CAPBSET_READ of CAP_CHOWN
    fd = _host.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        f = tmp_path / "f"
        f.write_text("")
        assert _host.inotify_add_watch(fd, str(f), 0x2) >= 1  # IN_MODIFY
        f.write_text("x")
        assert os.read(fd, 4096)
        with pytest.raises(SyscallError) as e:
            _host.inotify_add_watch(fd, str(tmp_path / "missing"), 0x2)
        assert e.value.errno == errno.ENOENT
    finally:
        os.close(fd)

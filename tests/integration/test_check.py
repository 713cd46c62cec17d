"""``nscg check``'s rootless probe: it reports what the kernel says, not what uid 65534 can exec.

The probe runs as uid 65534. An interpreter that uid cannot run (a pyenv build
under a 0700 /root) used to be reported as "rootless: NO"; now the next program
that uid can run asks the kernel, or the check says it could not test and why.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import nscg
from nscg.check import _ROOTLESS_PROBE, _rootless_probe
from nscg.seccomp import Action, Seccomp
from tests.conftest import child_pythonpath, need_root

pytestmark = pytest.mark.root
NAME = "rootless user+pid+mount+net+uts+ipc namespaces (as uid 65534)"


@pytest.fixture
def private_python() -> Iterator[str]:
    """This interpreter behind a 0700 directory: root can run it, uid 65534 cannot."""
    need_root()
    d = tempfile.mkdtemp(prefix="nscg-private-", dir="/var/tmp")  # mode 0700
    link = os.path.join(d, "python3")
    os.symlink(os.path.realpath(sys.executable), link)
    try:
        yield link
    finally:
        shutil.rmtree(d)


def _probe(python: str) -> list[str]:
    return [python, "-I", "-S", "-c", _ROOTLESS_PROBE]


def test_an_interpreter_nobody_cannot_run_is_not_a_finding(private_python: str) -> None:
    check = _rootless_probe([_probe(private_python), _probe("python3")])
    assert (check.name, check.ok, check.detail) == (NAME, True, "works (probed with python3)")
    unshare = ["unshare", "--user", "--pid", "--mount", "--net", "--uts", "--ipc", "--fork"]
    check = _rootless_probe([_probe(private_python), [*unshare, "true"]])
    assert (check.ok, check.detail) == (True, "works (probed with unshare)")


def test_no_program_to_probe_with_says_could_not_test(private_python: str) -> None:
    check = _rootless_probe([_probe(private_python), ["no-such-probe-xyz"]])
    assert check.ok is None
    assert check.detail.startswith("could not test, because uid 65534 could run no probe: ")
    assert f"{private_python}: Permission denied" in check.detail
    assert "no-such-probe-xyz: No such file or directory" in check.detail


def test_the_cli_with_a_private_interpreter_reports_rootless_working(
    private_python: str,
) -> None:
    """The issue's case: ``nscg check`` run by an interpreter under a private home."""
    r = subprocess.run(
        [private_python, "-m", "nscg", "check", "--json"],
        env={**os.environ, "PYTHONPATH": child_pythonpath()},
        capture_output=True, timeout=120, check=False, cwd="/",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert checks[NAME]["ok"] is True, checks[NAME]
    assert checks[NAME]["detail"].startswith("works (probed with "), checks[NAME]


def test_a_refusal_by_the_kernel_is_still_reported_as_no() -> None:
    """Inside a sandbox whose seccomp filter fails unshare() with EPERM: "NO", with the errno."""
    need_root()
    deny = Seccomp.allow_all().add(Action.errno(errno.EPERM), "unshare")
    code = (
        "import json\n"
        "from nscg.check import _rootless_probe, _rootless_programs\n"
        "c = _rootless_probe(_rootless_programs())\n"
        "print(json.dumps([c.ok, c.detail]))\n"
    )
    box = (
        nscg.Container()
        .without_rootfs()
        .with_namespaces(nscg.Namespace.NONE)
        .with_capabilities("inherit")
        .with_seccomp(deny)
        .with_env({"PATH": "/usr/bin:/bin", "PYTHONPATH": child_pythonpath()})
    )
    r = box.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    ok, detail = json.loads(r.stdout or b"")
    assert ok is False
    # this interpreter asked (or python3, if uid 65534 cannot run this one): the kernel said no
    probes = {Path(sys.executable).name, "python3"}
    assert detail in {f"unshare(): Operation not permitted (probed with {p})" for p in probes}

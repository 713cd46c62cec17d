"""Shared test helpers: required environments, rootless runs, leak checks."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

try:  # CI (CI=true) runs the hypothesis suites on a fixed, reproducible set of examples
    from hypothesis import settings as _hyp_settings

    _hyp_settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        _hyp_settings.load_profile("ci")
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass


def required(what: str) -> bool:
    """Whether ``NSCG_REQUIRE`` (comma-separated) names ``what``: a skip becomes a failure.

    Keys: root, rootless, libseccomp, cgroup2, busybox, cc, images (umoci and
    skopeo, to build the image tests' images), systemd (the VM with systemd as
    PID 1), dbus (a dbus-daemon for the D-Bus client's tests).
    """
    return what in {w.strip() for w in os.environ.get("NSCG_REQUIRE", "").split(",")}


def skip_or_fail(what: str, reason: str) -> None:
    """Skip with ``reason``, or fail if the environment ``what`` is required."""
    if required(what):
        pytest.fail(f"required environment {what!r} is missing: {reason}")
    pytest.skip(reason)


def need_root() -> None:
    """Skip (or fail under NSCG_REQUIRE=root) unless running as root."""
    if os.geteuid() != 0:
        skip_or_fail("root", "needs root")


NOBODY = 65534


def child_pythonpath() -> str:
    """This interpreter's import path, as ``PYTHONPATH`` for a child Python.

    A child started with a minimal environment (dropped to uid 65534 by setpriv,
    or in a sandbox) then imports nscg, the test dependencies and ``tests`` from
    where this process found them: an installed package, a virtualenv, or a
    ``PYTHONPATH`` install (``pip install --target DIR``). Entries the child's own
    interpreter adds anyway are dropped again by its ``site`` (duplicates).
    """
    return os.pathsep.join(p for p in sys.path if os.path.isabs(p))


def _nobody_may(path: str, bit: int) -> bool:
    """Whether uid/gid 65534, in no other group, has permission ``bit`` (4 r, 1 x) on ``path``."""
    st = os.stat(path)
    if st.st_uid == NOBODY:
        return bool(st.st_mode >> 6 & bit)
    if st.st_gid == NOBODY:
        return bool(st.st_mode >> 3 & bit)
    return bool(st.st_mode & bit)


def _unreachable_for_nobody(path: str, bit: int) -> str | None:
    """The first component of ``path`` (as written and resolved) that uid 65534 cannot pass."""
    for p in dict.fromkeys([os.path.abspath(path), os.path.realpath(path)]):
        try:
            for d in reversed(Path(p).parents):
                if not _nobody_may(str(d), 1):
                    return f"{d} (mode {os.stat(d).st_mode & 0o7777:o})"
            if not _nobody_may(p, bit):
                return f"{p} (mode {os.stat(p).st_mode & 0o7777:o})"
        except OSError as e:
            return f"{p} ({e.strerror})"
    return None


def nobody_cannot_run_python() -> str | None:
    """Why uid 65534 cannot run this interpreter with nscg and ``tests`` importable, or None.

    A pyenv interpreter under a 0700 /root, or a virtualenv or ``--target`` install
    in a private home, cannot serve the rootless tests: they run this interpreter
    as that uid.
    """
    import nscg

    needs = {
        sys.executable: 5,  # the interpreter (and its stdlib, next to it)
        os.path.dirname(os.path.abspath(nscg.__file__)): 5,  # nscg as imported here
        str(ROOT / "tests"): 5,  # the helpers the rootless code imports
    }
    for path, bit in needs.items():
        where = _unreachable_for_nobody(path, bit)
        if where is not None:
            return (
                f"uid {NOBODY} cannot reach {path}: no access to {where}; run the suite with "
                "an interpreter, an install of nscg and a checkout that uid can read "
                "(e.g. /usr/bin/python3 with a venv or a `pip install --target` under /var/tmp)"
            )
    return None


def unprivileged_python() -> str:
    """A Python that any uid can run, for a stdlib-only probe that runs as a non-root host uid.

    This interpreter if it is reachable, else a ``python3`` on PATH or in /usr/bin;
    skips (or fails under NSCG_REQUIRE=rootless) when there is none.
    """
    found = [sys.executable, shutil.which("python3"), "/usr/bin/python3"]
    reasons = []
    for python in dict.fromkeys(p for p in found if p and os.path.exists(p)):
        where = _unreachable_for_nobody(python, 1)
        if where is None:
            return python
        reasons.append(f"{python}: no access to {where}")
    skip_or_fail("rootless", f"no Python an unprivileged uid can run ({'; '.join(reasons)})")
    raise AssertionError("unreachable")  # skip_or_fail raises


def need_nobody_python() -> None:
    """Skip (or fail under NSCG_REQUIRE=rootless) unless root can run Python as uid 65534."""
    need_root()
    if not _which("setpriv"):
        skip_or_fail("rootless", "setpriv(1) is missing (util-linux)")
    problem = nobody_cannot_run_python()
    if problem is not None:
        skip_or_fail("rootless", problem)


def run_as_nobody(code: str, timeout: float = 60) -> Any:
    """Run Python ``code`` as uid/gid 65534 and return the JSON it prints last.

    The code runs in a fresh interpreter (this one's), dropped to 65534 by
    setpriv(1), with this process's import path (:func:`child_pythonpath`); it
    must print one JSON document as its last line.
    """
    need_nobody_python()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": child_pythonpath(),
    }
    r = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "--",
            sys.executable,
            "-c",
            textwrap.dedent(code),
        ],
        capture_output=True,
        timeout=timeout,
        env=env,
        cwd="/",
        check=False,
    )
    if r.returncode != 0:
        raise AssertionError(
            f"rootless child failed ({r.returncode}):\n{r.stdout.decode()}\n{r.stderr.decode()}"
        )
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def _which(name: str) -> bool:
    return any(
        os.access(os.path.join(d, name), os.X_OK) for d in os.environ.get("PATH", "").split(":")
    )


def hidden_from_sandboxes() -> str | None:
    """Why this interpreter or nscg is invisible in a default sandbox, or None.

    ``RootFS.host()`` covers /home, /root and $HOME with an empty tmpfs: the many
    tests that run this interpreter inside a sandbox then fail to exec it.
    """
    import nscg

    homes = [os.path.realpath(h) for h in ("/home", "/root", os.environ.get("HOME") or "/root")]
    for what, path in (
        ("this interpreter", os.path.realpath(sys.executable)),
        ("nscg", os.path.realpath(os.path.dirname(nscg.__file__))),
    ):
        for home in homes:
            if home != "/" and path.startswith(home.rstrip("/") + "/"):
                return (
                    f"{what} ({path}) lies under {home}, which RootFS.host() hides: tests "
                    "that run it in a sandbox fail; use an interpreter and an install outside "
                    "the home directories (e.g. /usr/bin/python3 and a venv under /var/tmp)"
                )
    return None


def pytest_report_header() -> str | None:
    """Say up front when the suite runs from where sandboxes cannot see it."""
    problem = hidden_from_sandboxes()
    return f"WARNING: {problem}" if problem else None


# ------------------------------------------------------------------ busybox
def _has_interpreter(path: str) -> bool:
    """Whether the ELF file ``path`` names a program interpreter (is dynamically linked)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # not a 64-bit ELF: cannot tell, try it
            return False
        order = "<" if head[5] == 1 else ">"
        (phoff,) = struct.unpack_from(order + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return any(
        struct.unpack_from(order + "I", table, i * phentsize)[0] == pt_interp for i in range(phnum)
    )


def static_busybox() -> str:
    """A statically linked busybox: the only program of the tests' hand-made roots.

    Skips (with the reason) when there is none, or fails when ``NSCG_REQUIRE``
    names ``busybox``: Debian and Ubuntu ship it as ``busybox-static``.
    """
    seen = []
    for cand in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if cand is None or cand in seen or not os.path.exists(cand):
            continue
        seen.append(cand)
        if not _has_interpreter(cand):
            return cand
    why = f"{', '.join(seen)}: dynamically linked" if seen else "not installed"
    skip_or_fail(
        "busybox",
        f"needs a static busybox for a root without libraries ({why}; "
        "apt-get install busybox-static)",
    )
    raise AssertionError("unreachable")  # skip_or_fail raises


# ------------------------------------------------------------------ leaks
def open_fds() -> set[int]:
    """This process's open fds (excluding the one used to list them)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            os.fstat(fd)
        except OSError:
            continue
        fds.add(fd)
    return fds


def children() -> list[int]:
    """Direct children of this process (any thread), zombies included."""
    out: list[int] = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def mount_count() -> int:
    """Number of mounts in the host's mount namespace as this process sees it."""
    with open("/proc/self/mountinfo") as f:
        return sum(1 for _ in f)


@pytest.fixture(autouse=True, scope="module")
def _no_leaks_per_module() -> Iterator[None]:
    """After every test module: no new fd, child process, or mount."""
    import nscg._spawn as sp

    sp._own_pidfd()  # opened once per process, on purpose
    sp._init_fd()
    if os.geteuid() == 0:  # the user namespace of idmapped binds, also once
        from nscg import _idmap
        from nscg.namespaces import root_range

        rr = root_range()
        _idmap.userns_fd(rr.uid_map(), rr.gid_map())
    fds, kids, mounts = open_fds(), set(children()), mount_count()
    yield
    import gc
    import time

    gc.collect()
    deadline = time.monotonic() + 5
    while set(children()) - kids and time.monotonic() < deadline:
        time.sleep(0.05)
    left_kids = set(children()) - kids
    left_fds = open_fds() - fds
    assert not left_kids, f"child processes left behind: {left_kids}"
    assert not left_fds, f"fds left open: {sorted(left_fds)} " + str(
        {
            fd: os.readlink(f"/proc/self/fd/{fd}")
            for fd in left_fds
            if os.path.exists(f"/proc/self/fd/{fd}")
        }
    )
    assert mount_count() == mounts, "the host's mount table changed"

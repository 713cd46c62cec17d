"""Shared test helpers: required environments, rootless runs, leak checks."""

from __future__ import annotations

import json
import os
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
    """Whether ``NSCG_REQUIRE`` (comma-separated) names ``what``: a skip becomes a failure."""
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


def run_as_nobody(code: str, timeout: float = 60) -> Any:
    """Run Python ``code`` as uid/gid 65534 and return the JSON it prints last.

    The code runs in a fresh interpreter (this one's), dropped to 65534 by
    setpriv(1); it must print one JSON document as its last line.
    """
    need_root()
    if not _which("setpriv"):
        skip_or_fail("rootless", "setpriv(1) is missing (util-linux)")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    r = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
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

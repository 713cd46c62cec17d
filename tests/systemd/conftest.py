"""Fixtures for tests that need systemd as PID 1: the VM of ``nox -s vm_systemd``.

``tools/vm/run-in-v2vm.sh --systemd`` boots systemd (pure cgroup v2) with the
system bus and a lingering unprivileged user whose user manager runs, and runs
the tests as root in a system service. It sets ``NSCG_V2VM_SYSTEMD=1``,
``NSCG_V2VM_USER`` (the user's name) and ``NSCG_V2VM_AS_USER`` (a command that
runs its arguments as that user, with ``XDG_RUNTIME_DIR`` and
``DBUS_SESSION_BUS_ADDRESS`` set).

These tests start and stop units: they run only where ``NSCG_V2VM_SYSTEMD=1``
says the manager is a throw-away one, never against a development host's
systemd. Elsewhere they are skipped, or fail when ``NSCG_REQUIRE`` names
``systemd``.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

try:
    import nscg  # noqa: F401  (installed, or on PYTHONPATH)
except ModuleNotFoundError:  # a fresh clone in the VM: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from tests.conftest import child_pythonpath, skip_or_fail


def systemd_problem() -> str | None:
    """Say why this host cannot run the systemd tests, or None if it can."""
    if os.environ.get("NSCG_V2VM_SYSTEMD") != "1":
        return (
            "needs the throw-away VM with systemd as PID 1 (these tests start and stop "
            "units): run `nox -s vm_systemd`, or tools/vm/run-in-v2vm.sh --systemd "
            "--share $PWD -- python3 -m pytest -m systemd tests/systemd"
        )
    if not os.path.isdir("/run/systemd/system"):
        return "NSCG_V2VM_SYSTEMD=1 but systemd is not PID 1 (no /run/systemd/system)"
    if os.geteuid() != 0:
        return "needs root (the VM runs the tests as root)"
    if not os.environ.get("NSCG_V2VM_USER") or not os.environ.get("NSCG_V2VM_AS_USER"):
        return "NSCG_V2VM_USER / NSCG_V2VM_AS_USER are not set (the VM sets them)"
    return None


@pytest.fixture(autouse=True)
def _systemd_env() -> None:
    """Require the systemd VM."""
    problem = systemd_problem()
    if problem is not None:
        skip_or_fail("systemd", problem)


def vm_user() -> pwd.struct_passwd:
    """The VM's lingering unprivileged user."""
    return pwd.getpwnam(os.environ["NSCG_V2VM_USER"])


def run_as_user(code: str, timeout: float = 120) -> Any:
    """Run Python ``code`` as the VM's user (with its session bus) and return its last JSON line."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": child_pythonpath(),
    }
    r = subprocess.run(
        [os.environ["NSCG_V2VM_AS_USER"], sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        timeout=timeout,
        env=env,
        cwd="/",
        check=False,
    )
    if r.returncode != 0:
        raise AssertionError(
            f"child as the user failed ({r.returncode}):\n{r.stdout.decode()}\n{r.stderr.decode()}"
        )
    return json.loads(r.stdout.decode().strip().splitlines()[-1])

"""Every example in examples/ runs and does what it says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import child_pythonpath, need_nobody_python

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.py"))

EXPECT = {
    "isolated_command.py": [b"hostname: example", b"my pid: 2", b"network interfaces: lo\n"],
    "readonly_host.py": [b"writing /etc: refused", b"private /tmp: hello", b"dev: fd full null"],
    "pytest_fixture.py": [b"3 passed"],
    "ci_step.py": [b"step status: 0 (json status 0)", b"timed out: False", b"artifact: artifact"],
    "asyncio_wait.py": [b"statuses: [0, 1, 2]", b"concurrent: True"],
    "enter_running.py": [b"python: service state", b"cli: service"],
    "rootless.py": [b"uid outside: 65534", b"uid inside: 0", b"host writable: False"],
    "two_sandboxes_http.py": [
        b"server sandbox listening on 10.89.0.2:8080",
        b"client on the same bridge: hello from the server sandbox",
        b"client on another bridge: no answer:",
        b"host via 127.0.0.1 forward: hello from the server sandbox",
    ],
}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path: Path) -> None:
    if path.name == "rootless.py" and os.geteuid() == 0:  # it re-runs itself as uid 65534
        need_nobody_python()
    # the examples and the programs they start find nscg where this process did
    env = {**os.environ, "PYTHONPATH": child_pythonpath()}
    r = subprocess.run(
        [sys.executable, str(path)], capture_output=True, timeout=120, check=False, env=env
    )
    assert r.returncode == 0, r.stderr.decode()
    for needle in EXPECT.get(path.name, []):
        assert needle in r.stdout, (needle, r.stdout)


def test_every_example_has_expectations() -> None:
    assert {p.name for p in EXAMPLES} <= set(EXPECT)

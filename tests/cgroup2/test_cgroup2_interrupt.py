"""The lifetime rule with a cgroup (the test VM): an interrupted spawn leaves no
process and no cgroup (the conftest checks that no cgroup a test made remains)."""

from __future__ import annotations

import pytest

from nscg import Container
from tests.integration.test_interrupt import interrupt_spawns

pytestmark = pytest.mark.cgroup2


def test_interrupted_spawns_with_a_cgroup_leave_nothing() -> None:
    c = Container().with_limits(pids=64)

    def run() -> None:
        assert c.run(["/bin/true"]).returncode == 0

    interrupt_spawns(run, rounds=24)

"""Use the pytest plugin: the ``sandbox`` fixture, the ``nscg`` marker, isolated tests.

python examples/pytest_fixture.py     (runs pytest on this file)
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported by the plugin; importing it here first stops assert rewriting
    import nscg


def test_build_step_writes_only_its_directory(sandbox: nscg.Container, tmp_path: Path) -> None:
    """The fixture: host root read-only, tmp_path writable (and the cwd), no network."""
    r = sandbox.run(["sh", "-c", "echo built > out.txt; touch /etc/x"], capture_output=True)
    assert (tmp_path / "out.txt").read_text() == "built\n"
    assert b"Read-only file system" in (r.stderr or b"")


@pytest.mark.nscg(hostname="ci-box", env={"MODE": "test"})
def test_marker_sets_options(sandbox: nscg.Container) -> None:
    """Per-test options: each name=value calls Container.with_<name>(value)."""
    r = sandbox.run(["sh", "-c", "echo $(hostname) $MODE"], capture_output=True)
    assert r.stdout == b"ci-box test\n"


@pytest.mark.nscg_isolated
def test_this_code_opens_no_socket() -> None:
    """Runs in a fresh interpreter inside a sandbox: no network but lo."""
    with pytest.raises(OSError):
        socket.create_connection(("192.0.2.1", 80), timeout=2)


def main() -> int:
    """Run the tests of this file with pytest."""
    return pytest.main([__file__, "-q", "-p", "no:cacheprovider", "--strict-markers"])


if __name__ == "__main__":
    sys.exit(main())

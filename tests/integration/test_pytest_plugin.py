"""The pytest plugin: the sandbox fixture, the nscg marker, isolated tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

SUITE = textwrap.dedent(
    """
    import os, socket
    from pathlib import Path
    import pytest

    PORT = int(os.environ["NSCG_TEST_PORT"])

    def connect():
        socket.create_connection(("127.0.0.1", PORT), timeout=5).close()

    def write_home():
        Path(os.environ["HOME"], ".nscg-plugin-probe").write_text("x")

    def test_connect_outside():
        connect()

    @pytest.mark.nscg_isolated
    def test_connect_inside():
        connect()

    def test_home_outside():
        write_home()

    @pytest.mark.nscg_isolated
    def test_home_inside():
        # a private, empty home: the write lands there, never in the host's
        assert not Path(os.environ["HOME"], ".nscg-plugin-probe").exists()
        Path(os.environ["HOME"], ".nscg-plugin-probe-inside").write_text("x")
        Path("/etc/nscg-plugin-probe").write_text("x")  # the root stays read-only

    @pytest.mark.nscg_isolated
    @pytest.mark.nscg(hostname="iso")
    def test_passes_inside(tmp_path):
        assert socket.gethostname() == "iso"
        (tmp_path / "scratch").write_text("ok")

    @pytest.mark.nscg_isolated
    def test_skips_inside():
        pytest.skip("not here")

    def test_fixture(sandbox, tmp_path):
        r = sandbox.run(
            ["sh", "-c", "echo hi > out; touch /etc/x 2>/dev/null || echo ro; hostname; "
             "tail -n +3 /proc/net/dev | cut -d: -f1"],
            capture_output=True, timeout=30,
        )
        assert r.stdout.split() == [b"ro", b"nscg", b"lo"], r
        assert (tmp_path / "out").read_text() == "hi\\n"

    @pytest.mark.nscg(hostname="marked", env={"A": "1"})
    def test_marker(sandbox):
        r = sandbox.run(["sh", "-c", "hostname; echo $A"], capture_output=True, timeout=30)
        assert r.stdout == b"marked\\n1\\n"

    def test_leak_is_reported(sandbox):
        test_leak_is_reported.proc = sandbox.spawn(["sleep", "5"])  # never waited for
    """
)


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def test_plugin_must_hold(listener: int) -> None:
    # the project is bound read-only and not idmapped: as root, it must be
    # readable by others (a checkout usually is; pytest's tmp_path is not)
    proj = Path(tempfile.mkdtemp(prefix="nscg-proj-", dir="/var/tmp"))
    proj.chmod(0o755)
    try:
        _plugin_must_hold(proj, listener)
    finally:
        shutil.rmtree(proj)


def _plugin_must_hold(tmp_path: Path, listener: int) -> None:
    (tmp_path / "test_suite.py").write_text(SUITE)
    home = Path(tempfile.mkdtemp(prefix="nscg-home-", dir="/var/tmp"))
    try:
        env = {**os.environ, "NSCG_TEST_PORT": str(listener), "HOME": str(home)}
        env.pop("PYTEST_ADDOPTS", None)
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--strict-markers",
             "-rA", "-q", "test_suite.py"],
            cwd=tmp_path, env=env, capture_output=True, timeout=300, check=False,
        )  # fmt: skip
        out = r.stdout.decode()
        assert (home / ".nscg-plugin-probe").exists()  # outside: written
        assert not (home / ".nscg-plugin-probe-inside").exists()  # inside: hidden home
    finally:
        for p in home.iterdir():
            p.unlink()
        home.rmdir()
    lines = {ln.split(" - ")[0] for ln in out.splitlines()}
    assert "PASSED test_suite.py::test_connect_outside" in lines, out
    assert "FAILED test_suite.py::test_connect_inside" in lines, out
    assert "PASSED test_suite.py::test_home_outside" in lines, out
    assert "FAILED test_suite.py::test_home_inside" in lines, out
    assert "PASSED test_suite.py::test_passes_inside" in lines, out
    assert "PASSED test_suite.py::test_fixture" in lines, out
    assert "PASSED test_suite.py::test_marker" in lines, out
    assert any(ln.startswith("SKIPPED") and "not here" in ln for ln in out.splitlines()), out
    assert "ERROR test_suite.py::test_leak_is_reported" in lines, out
    assert "leaked: child processes" in out
    # (as root, the home directory, 0700 root, is not even reachable inside)
    assert ("Read-only file system" in out or "Permission denied" in out) and (
        "Connection refused" in out
    )
    assert "Traceback" not in r.stderr.decode()


def test_plugin_is_registered_and_harmless() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--markers", "-p", "no:cacheprovider"],
        capture_output=True, timeout=60, check=False, cwd="/",
    )  # fmt: skip
    assert b"@pytest.mark.nscg_isolated" in r.stdout
    assert b"@pytest.mark.nscg(" in r.stdout

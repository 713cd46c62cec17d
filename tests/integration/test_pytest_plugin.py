"""The pytest plugin: the sandbox fixture, the nscg marker, isolated tests."""

from __future__ import annotations

import os
import re
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


# ------------------------------------------------------------------ install-free runs
PYTHONPATH_SUITE = textwrap.dedent(
    """
    import os, socket
    import pytest

    @pytest.mark.nscg_isolated
    @pytest.mark.nscg(hostname="iso")
    def test_isolated(tmp_path):
        assert socket.gethostname() == "iso"
        assert not os.path.exists(os.environ["NSCG_PROBE_SECRET"])  # hidden home
        (tmp_path / "x").write_text("ok")

    @pytest.mark.nscg_isolated
    def test_isolated_fails():
        assert False, "inner failure"

    def test_fixture(sandbox):
        assert sandbox.run(["true"], timeout=30).returncode == 0
    """
)

#: what pytest and nscg import, found where this interpreter finds them
_DEPS = ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "py", "pygments",
         "cffi", "_cffi_backend", "pycparser", "attr", "attrs", "typing_extensions")  # fmt: skip


def _install_free_tree(top: Path) -> tuple[Path, Path]:
    """A venv ``top/venv`` with pytest but not nscg, and ``top/src/nscg``, a copy of nscg.

    The venv's site-packages has a ``.pth`` naming ``top/deps``, links to
    pytest's and nscg's dependencies (no distribution metadata: no entry
    point). Nothing is installed: the run sees nscg only through ``PYTHONPATH``.
    Returns the venv's python and ``top/src``.
    """
    import importlib.util

    import nscg

    deps, src = top / "deps", top / "src"
    deps.mkdir()
    for name in _DEPS:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        target = origin.parent if spec.submodule_search_locations else origin
        (deps / target.name).symlink_to(target)
    shutil.copytree(
        Path(nscg.__file__).parent, src / "nscg", ignore=shutil.ignore_patterns("__pycache__")
    )
    venv = top / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "deps.pth").write_text(f"{deps}\n")
    for p in [top, *top.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644 | (p.stat().st_mode & 0o111))
    return python, src


@pytest.mark.parametrize("who", ["root", "nobody"])
def test_plugin_through_pythonpath_only(who: str) -> None:
    """Item 6: nscg importable only through PYTHONPATH (relative, as a checkout's ``src``)."""
    from tests.conftest import NOBODY, need_nobody_python, need_root

    need_root()
    if who == "nobody":
        need_nobody_python()
    top = Path(tempfile.mkdtemp(prefix="nscg-nopip-", dir="/var/tmp"))
    try:
        python, _src = _install_free_tree(top)
        (top / "test_pp.py").write_text(PYTHONPATH_SUITE)
        secret = Path(tempfile.mkdtemp(prefix="nscg-home-", dir="/var/tmp")) / ".secret"
        secret.write_text("x")
        for p in (top, secret.parent, secret):
            p.chmod(0o755 if p.is_dir() else 0o644)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(secret.parent),
            "NSCG_PROBE_SECRET": str(secret),
            "PYTHONPATH": "src",  # relative: resolved against the cwd
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
        r = subprocess.run(
            [*(drop if who == "nobody" else []), python, "-m", "pytest",
             "-p", "nscg.pytest_plugin", "-p", "no:cacheprovider", "--strict-markers",
             "-rA", "-q", "test_pp.py"],
            cwd=top, env=env, capture_output=True, timeout=300, check=False,
        )  # fmt: skip
        out = r.stdout.decode() + r.stderr.decode()
    finally:
        shutil.rmtree(top)
        if "secret" in locals():
            shutil.rmtree(secret.parent)
    lines = {ln.split(" - ")[0] for ln in out.splitlines()}
    assert "PASSED test_pp.py::test_isolated" in lines, out
    assert "PASSED test_pp.py::test_fixture" in lines, out
    assert "FAILED test_pp.py::test_isolated_fails" in lines, out
    assert "inner failure" in out, out
    assert "not found in markers" not in out, out


# ------------------------------------------------------------------ the fixture's leak checks
LEAK_SUITE = textwrap.dedent(
    """
    import os, subprocess

    def test_clean(sandbox):
        assert sandbox.run(["true"], timeout=30).returncode == 0

    def test_child(sandbox):
        test_child.proc = sandbox.spawn(["sleep", "5"])  # never waited for

    def test_pidfd(sandbox):
        test_pidfd.fd = os.pidfd_open(os.getppid())  # never closed

    def test_mount(sandbox, tmp_path):
        (tmp_path / "m").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "leak", str(tmp_path / "m")], check=True)
    """
)


def test_each_leak_check_catches_its_leak(tmp_path: Path) -> None:
    """The sandbox fixture's checks (docs/pytest.md): a child, a pidfd, a mount each fail."""
    from tests.conftest import need_root

    need_root()
    (tmp_path / "test_leaks.py").write_text(LEAK_SUITE)
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    # a mount namespace of its own: the leaked mount never reaches the host
    r = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-m", "pytest",
         "-p", "no:cacheprovider", "-rA", "-q", "test_leaks.py"],
        cwd=tmp_path, env=env, capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    out = r.stdout.decode()
    errors = {
        ln.split(" - ")[0].split("::")[-1]: ln
        for ln in out.splitlines()
        if ln.startswith("ERROR test_leaks.py::")
    }
    assert "PASSED test_leaks.py::test_clean" in out, out
    assert set(errors) == {"test_child", "test_pidfd", "test_mount"}, out
    said = dict(re.findall(r"ERROR at teardown of (\w+) _+\n.*? leaked: (.*)", out))
    assert said["test_child"].startswith("child processes ["), out
    assert said["test_pidfd"].startswith("pidfds ["), out
    assert said["test_mount"].startswith("mounts ("), out
    assert re.search(r"new \['[^']*/test_mount0/m'\]", said["test_mount"]), out


def test_leak_report_names_cgroups() -> None:
    """A cgroup ``nscg-<pid>-...`` left behind is named (the check reads the delegated subtree;
    on a host without cgroup v2 limits nscg never makes one, so this checks the comparison)."""
    from nscg.pytest_plugin import _leaks, _Snapshot

    before = _Snapshot(set(), set(), ["1 0 0:1 / /"], set())
    after = _Snapshot(set(), set(), ["1 0 0:1 / /"], {"/sys/fs/cgroup/x/nscg/nscg-1-2-ab"})
    assert _leaks(before, before) == []
    assert _leaks(before, after) == ["cgroups ['/sys/fs/cgroup/x/nscg/nscg-1-2-ab']"]


# ------------------------------------------------------------------ cgroups unavailable: skip
CGROUP_SUITE = textwrap.dedent(
    """
    import pytest

    @pytest.mark.nscg(limits={"memory": "64M", "pids": 32})
    def test_limited(sandbox):
        assert sandbox.run(["true"], timeout=30).returncode == 0

    @pytest.mark.nscg_isolated
    @pytest.mark.nscg(limits={"memory": "64M", "pids": 32})
    def test_limited_isolated():
        pass

    def test_other_error(sandbox):
        import nscg
        raise nscg.UnsupportedError("not about cgroups", feature="userns")
    """
)


@pytest.mark.parametrize("how", ["option", "ini"])
def test_cgroups_unavailable_can_skip(tmp_path: Path, how: str) -> None:
    """Issue 18 item 4: with the option, a test needing limits skips here with the reason."""
    from nscg.pytest_plugin import _limits_allowed

    (tmp_path / "test_cg.py").write_text(CGROUP_SUITE)
    args = ["--nscg-cgroups-unavailable=skip"]
    if how == "ini":
        (tmp_path / "pytest.ini").write_text("[pytest]\nnscg_cgroups_unavailable = skip\n")
        args = []
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    outs = {}
    for mode, extra in (("skip", args), ("fail", ["--nscg-cgroups-unavailable=fail"])):
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q",
             *extra, "test_cg.py"],
            cwd=tmp_path, env=env, capture_output=True, timeout=300, check=False,
        )  # fmt: skip
        outs[mode] = r.stdout.decode()
    for mode, out in outs.items():
        assert "FAILED test_cg.py::test_other_error" in out, out  # other errors still fail
        for name in ("test_limited", "test_limited_isolated"):
            if _limits_allowed():  # a host with cgroup v2 limits to give: they apply
                assert f"PASSED test_cg.py::{name}" in out, out
            elif mode == "skip":
                assert re.search(r"SKIPPED \[\d\] \S+: cgroup limits unavailable here: \S", out)
                assert f"FAILED test_cg.py::{name}" not in out, out
            else:
                assert f"FAILED test_cg.py::{name}" in out, out
    if not _limits_allowed():
        assert "1 failed, 2 skipped" in outs["skip"], outs["skip"]
        assert "3 failed" in outs["fail"], outs["fail"]

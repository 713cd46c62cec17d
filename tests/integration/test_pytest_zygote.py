"""The pytest plugin's zygote mode: a sandboxed pytest that forks a clean child per test.

The attrs suite (an sdist from PyPI, the version installed here) runs plain and
in the zygote mode with the same pass/fail/skip/xfail counts; a subset of its
files here, the whole suite in benchmarks/bench_pytest_plugin.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need_root

SUITE = textwrap.dedent(
    """
    import os, signal, socket, time
    import pytest

    STATE = []

    @pytest.fixture(scope="module")
    def per_module():
        STATE.append("module")
        return len(STATE)

    def test_first(tmp_path, per_module):
        STATE.append("first")
        (tmp_path / "x").write_text("y")
        assert per_module == 1

    def test_second_is_clean(per_module):
        # a fresh child of the zygote: test_first's appends are not here
        assert STATE == ["module"] and per_module == 1

    def test_pid_namespace():
        assert os.getpid() < 50  # inside the sandbox's own pid namespace

    def test_no_network():
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", int(os.environ["NSCG_TEST_PORT"])), 5)

    def test_fails():
        assert 0, "fails inside"

    @pytest.mark.skip(reason="skipped outside")
    def test_skip_outside(): pass

    def test_skip_inside():
        pytest.skip("skipped inside")

    @pytest.mark.xfail(reason="expected")
    def test_xfail(): assert 0

    def test_child_crashes():
        os.kill(os.getpid(), signal.SIGKILL)

    @pytest.mark.nscg(hostname="other")
    def test_other_options():  # another sandbox: marker options differ
        assert socket.gethostname() == "other"

    @pytest.mark.nscg(timeout=2)
    def test_timeout():
        time.sleep(30)

    def test_after_timeout():  # a new zygote serves the rest
        pass
    """
)


@pytest.fixture
def listener() -> Iterator[int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def _project(text: str, name: str) -> Path:
    proj = Path(tempfile.mkdtemp(prefix="nscg-zygote-proj-", dir="/var/tmp"))
    proj.chmod(0o755)  # bound read-only into the sandbox: readable as root inside
    (proj / name).write_text(text)
    return proj


def _pytest(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    e = dict(os.environ if env is None else env)
    e.pop("PYTEST_ADDOPTS", None)
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", *args],
        cwd=cwd, env=e, capture_output=True, timeout=900, check=False,
    )  # fmt: skip
    return r.stdout.decode() + r.stderr.decode()


@pytest.mark.parametrize("scope", ["module", "session"])
def test_zygote_outcomes(listener: int, scope: str) -> None:
    need_root()
    proj = _project(SUITE, "test_zy.py")
    try:
        env = {**os.environ, "NSCG_TEST_PORT": str(listener)}
        out = _pytest(
            proj, "--nscg-isolate-all", "--nscg-isolated-mode=zygote",
            f"--nscg-zygote-scope={scope}", "test_zy.py", env=env,
        )  # fmt: skip
    finally:
        shutil.rmtree(proj)
    found = re.findall(r"^(PASSED|FAILED|SKIPPED|XFAIL|ERROR) test_zy.py::(\w+)", out, re.M)
    res = {name: status for status, name in found}
    for name in ("test_first", "test_second_is_clean", "test_pid_namespace", "test_no_network",
                 "test_other_options", "test_after_timeout"):  # fmt: skip
        assert res.get(name) == "PASSED", out
    for name in ("test_fails", "test_child_crashes", "test_timeout"):
        assert res.get(name) == "FAILED", out
    assert res.get("test_xfail") == "XFAIL", out
    assert "fails inside" in out and "skipped inside" in out and "skipped outside" in out, out
    assert "reported nothing (wait status 9)" in out, out  # the SIGKILLed child
    assert "isolated test timed out after 2 s" in out, out
    assert "3 failed, 6 passed, 2 skipped, 1 xfailed" in out, out


def test_marker_mode_overrides_the_default(listener: int) -> None:
    need_root()
    text = textwrap.dedent(
        """
        import os, pytest
        @pytest.mark.nscg_isolated(mode="zygote")
        def test_z():
            assert "NSCG_PYTEST_ZYGOTE" in os.environ and "NSCG_PYTEST_REPORT_FD" not in os.environ
        @pytest.mark.nscg_isolated
        def test_fresh():
            assert "NSCG_PYTEST_REPORT_FD" in os.environ
        """
    )
    proj = _project(text, "test_m.py")
    try:
        out = _pytest(proj, "test_m.py")
    finally:
        shutil.rmtree(proj)
    assert "2 passed" in out, out


# ------------------------------------------------------------------ the attrs suite
#: a subset of attrs' test files for CI (hypothesis, an xfail, a module-level skip,
#: the one test that fails with attrs 26.1 under Python 3.11 here); the benchmark runs all
ATTRS_SUBSET = ("test_setattr.py", "test_converters.py", "test_filters.py", "test_hooks.py",
                "test_funcs.py", "test_pyright.py", "test_3rd_party.py")  # fmt: skip


def attrs_suite(dest: Path) -> Path:
    """The attrs sdist of the installed attrs version, downloaded by pip and unpacked in ``dest``.

    ``--no-binary attrs``, not ``:all:``: the latter also builds attrs' build
    backend and its dependencies from source to read the sdist's metadata
    (12 minutes on this machine against 11 s).
    """
    import attrs

    version = attrs.__version__
    r = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", "attrs",
         "-d", str(dest), f"attrs=={version}"],
        capture_output=True, timeout=600, check=False,
    )  # fmt: skip
    sdist = dest / f"attrs-{version}.tar.gz"
    if r.returncode != 0 or not sdist.exists():
        why = f"pip download attrs=={version} failed: {r.stderr.decode()[-2000:]}"
        if os.environ.get("CI"):
            pytest.fail(why)  # CI reaches PyPI: never pass by skipping
        pytest.skip(why)
    with tarfile.open(sdist) as tf:  # (extractall's filter= needs Python >= 3.11.4)
        members = tf.getmembers()
        for m in members:
            parts = Path(m.name).parts
            assert not m.name.startswith("/") and ".." not in parts, m.name
            assert m.isfile() or m.isdir(), m.name
        tf.extractall(dest, members=members)
    tree = dest / f"attrs-{version}"
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return tree


def counts(out: str) -> dict[str, int]:
    """The final line's counts: ``{"passed": 1375, "failed": 1, ...}``."""
    last = [ln for ln in out.splitlines() if re.search(r"\d+ (passed|failed)", ln)][-1]
    return {k: int(n) for n, k in re.findall(r"(\d+) (\w+)", last) if not k.startswith("second")}


def test_attrs_suite_counts_match_in_zygote_mode() -> None:
    need_root()
    top = Path(tempfile.mkdtemp(prefix="nscg-attrs-", dir="/var/tmp"))
    try:
        tree = attrs_suite(top)
        files = [f"tests/{f}" for f in ATTRS_SUBSET if (tree / "tests" / f).exists()]
        plain = _pytest(tree, *files)
        zygote = _pytest(tree, "--nscg-isolate-all", "--nscg-isolated-mode=zygote", *files)
        session = _pytest(tree, "--nscg", *files)
    finally:
        shutil.rmtree(top)
    assert counts(plain) == counts(zygote), (plain[-3000:], zygote[-3000:])
    without_warnings = {k: v for k, v in counts(session).items() if not k.startswith("warning")}
    assert counts(plain) == without_warnings, (plain[-3000:], session[-3000:])
    assert counts(plain).get("passed", 0) > 100, plain[-3000:]


def test_session_inside_one_sandbox(listener: int) -> None:
    """``pytest --nscg``: the whole session runs inside one sandbox, its status is pytest's."""
    need_root()
    text = textwrap.dedent(
        """
        import os, socket, pytest
        PID = os.getpid()

        def test_inside():
            assert os.getpid() < 50 and os.environ["NSCG_PYTEST_INNER"] == "1"
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", int(os.environ["NSCG_TEST_PORT"])), 5)

        def test_same_process():
            assert os.getpid() == PID  # one session, not a process per test

        def test_fails():
            assert 0
        """
    )
    proj = _project(text, "test_s.py")
    try:
        env = {**os.environ, "NSCG_TEST_PORT": str(listener)}
        e = dict(env)
        e.pop("PYTEST_ADDOPTS", None)
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rA", "--nscg", "test_s.py"],
            cwd=proj, env=e, capture_output=True, timeout=300, check=False,
        )  # fmt: skip
    finally:
        shutil.rmtree(proj)
    out = r.stdout.decode()
    assert "1 failed, 2 passed" in out, out + r.stderr.decode()
    assert r.returncode == 1, out

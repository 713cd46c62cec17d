"""The working directory in a sandbox with a root of its own.

No cwd given: the caller's own if the same path is a directory in the new root
(as bubblewrap does), else ``/``. A given cwd must exist (CHDIR fails).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import nscg
from nscg import Container, Namespace, RootFS, Stage
from tests.conftest import hidden_from_sandboxes, need_root, run_as_nobody, static_busybox


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A directory the default root (the host's ``/`` read-only) shows: not under /tmp."""
    d = Path(tempfile.mkdtemp(prefix="nscg-cwd-", dir="/var/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.fixture
def busybox_root(tmp_path: Path) -> Path:
    """A root holding only a static busybox (and the links the tests use)."""
    bb = static_busybox()
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(bb, root / "bin" / "busybox")
    for name in ("sh", "pwd"):
        (root / "bin" / name).symlink_to("busybox")
    for d in ("proc", "dev"):
        (root / d).mkdir()
    return root


def _pwd(c: Container) -> str:
    r = c.run(["pwd"], capture_output=True, timeout=30)
    assert r.returncode == 0, r
    assert r.stdout is not None
    return r.stdout.decode().strip()


@pytest.fixture(autouse=True)
def _visible() -> None:
    problem = hidden_from_sandboxes()
    if problem:
        pytest.skip(problem)


def test_the_callers_cwd_is_kept_when_the_root_has_it(
    host_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_root()
    monkeypatch.chdir(host_dir)
    assert _pwd(Container()) == str(host_dir)
    assert _pwd(Container().with_init(False)) == str(host_dir)
    # a relative program path is the caller's, as the payload's cwd is
    script = host_dir / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from $(pwd)\n")
    script.chmod(0o755)
    r = Container().run(["./hello.sh"], capture_output=True, timeout=30)
    assert r.stdout == f"hello from {host_dir}\n".encode(), r
    # the explicit cwd wins, and must exist
    assert _pwd(Container().with_cwd("/usr")) == "/usr"
    with pytest.raises(nscg.SpawnError) as ei:
        Container().with_cwd(str(host_dir / "missing")).run(["true"])
    assert (ei.value.stage, ei.value.errno) == (Stage.CHDIR, errno.ENOENT)
    # without a root of its own the sandbox sees the caller's view: unchanged
    assert _pwd(Container().without_rootfs()) == str(host_dir)


def test_a_cwd_the_root_does_not_have_becomes_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_root()
    hidden = tmp_path / "sub"  # /tmp is a fresh tmpfs in RootFS.host()
    hidden.mkdir()
    monkeypatch.chdir(hidden)
    assert _pwd(Container()) == "/"
    monkeypatch.chdir("/proc/self")  # (the sandbox's /proc has another "self")
    assert _pwd(Container()) in {"/", os.path.realpath("/proc/self")}


def test_a_directory_root(
    busybox_root: Path, host_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_root()
    monkeypatch.chdir(host_dir)
    modes = {
        "pid ns": Container(),
        "no pid ns": Container().with_namespaces(Namespace.USER | Namespace.MOUNT),
    }
    for name, base in modes.items():
        pid_ns = bool(base.namespaces & Namespace.PID)
        root = RootFS.from_directory(busybox_root, proc=pid_ns)
        c = base.with_rootfs(root).with_env(PATH="/bin")
        assert _pwd(c) == "/", name  # the path does not exist there
        inside = busybox_root / str(host_dir).lstrip("/")
        inside.mkdir(parents=True)
        try:
            assert _pwd(c) == str(host_dir), name  # it does now
        finally:
            inside.rmdir()
        inside.parent.mkdir(parents=True, exist_ok=True)
        inside.write_text("a file, not a directory")
        try:
            assert _pwd(c) == "/", name
        finally:
            inside.unlink()


def test_rootless(host_dir: Path, busybox_root: Path) -> None:
    root = host_dir / "root"  # (where uid 65534 can reach it)
    shutil.copytree(busybox_root, root, symlinks=True)
    code = f"""
        import json, os
        from nscg import Container, RootFS
        out = {{}}
        os.chdir({str(host_dir)!r})
        pwd = lambda c: c.run(["pwd"], capture_output=True).stdout.decode().strip()
        out["host"] = pwd(Container())
        out["dir"] = pwd(Container().with_rootfs(RootFS.from_directory({str(root)!r}))
                         .with_env(PATH="/bin"))
        out["explicit"] = pwd(Container().with_cwd("/usr"))
        os.chdir("/proc/self/fdinfo")
        out["proc"] = pwd(Container())
        print(json.dumps(out))
    """
    doc = run_as_nobody(code)
    assert doc["host"] == str(host_dir)
    assert doc["dir"] == "/"
    assert doc["explicit"] == "/usr"
    assert doc["proc"] in {"/", "/proc/self/fdinfo"}

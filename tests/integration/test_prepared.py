"""The spawn fast paths, on a real kernel: prepared plans, vfork-style children,
pooled stacks, inherited stdio checked by the child, mount points made like
their source, and masks sharing one tmpfs."""

from __future__ import annotations

import errno
import gc
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import nscg
from nscg import Container, Namespace, RootFS, Stage
from nscg._native import lib
from nscg._spawn import _prepare, _prepared, spawn
from tests.conftest import children, need_root, open_fds, static_busybox

#: the payload starts vfork-style: no namespaces, nothing waits for the parent
PLAIN = Container().without_rootfs().with_namespaces(Namespace.NONE).with_new_session(False)

#: stages a plain (vfork-style) child can reach, and the syscall each names
PLAIN_STAGES = {
    Stage.CLONE: "clone3",
    Stage.SIGNALS: "sigaction",
    Stage.PDEATHSIG: "prctl",
    Stage.FDS: "fcntl",
    Stage.SETSID: "setsid",
    Stage.RLIMITS: "setrlimit",
    Stage.CHDIR: "chdir",
    Stage.NO_NEW_PRIVS: "prctl",
    Stage.SECCOMP: "seccomp",
    Stage.EXEC: "execve",
}


def _plain_spec() -> Container:
    return (
        PLAIN.with_new_session(True)
        .with_cwd("/tmp")
        .with_rlimit("nofile", 100)
        .with_capabilities("inherit")
    )


def test_plain_spec_is_vfork_style() -> None:
    assert _prepare(_plain_spec()).flags & lib.NSCG_F_VFORK
    # anything that makes the child wait for the parent is not
    assert not _prepare(Container()).flags & lib.NSCG_F_VFORK


@pytest.mark.parametrize("stage", list(PLAIN_STAGES), ids=lambda s: s.name)
def test_vfork_style_failure_at_each_stage(stage: Stage) -> None:
    fds, kids = open_fds(), set(children())
    with pytest.raises(nscg.SpawnError) as ei:
        spawn(_plain_spec(), ["true"], _fault=(stage, errno.EACCES, -1))
    e = ei.value
    assert (e.stage, e.errno, e.syscall) == (stage, errno.EACCES, PLAIN_STAGES[stage])
    assert open_fds() == fds
    assert set(children()) == kids


def test_vfork_style_real_failures(tmp_path: Path) -> None:
    fds, kids = open_fds(), set(children())
    # an absolute path that is missing, a directory, not executable: the
    # same errors as when it is looked up first (ENOENT; EACCES, as subprocess)
    plain_file = tmp_path / "data"
    plain_file.write_text("x")
    with pytest.raises(nscg.ExecutableNotFoundError):
        PLAIN.run(["/nonexistent/prog"])
    for prog in (str(tmp_path), str(plain_file)):
        with pytest.raises(nscg.ExecutablePermissionError) as pe:
            PLAIN.run([prog])
        assert isinstance(pe.value, PermissionError) and pe.value.errno == errno.EACCES
        assert pe.value.filename == prog
    # a script whose interpreter is missing: the exec stage, with the hint
    script = tmp_path / "s.sh"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    with pytest.raises(nscg.SpawnError) as ei:
        PLAIN.run([str(script)])
    assert (ei.value.stage, ei.value.errno) == (Stage.EXEC, errno.ENOENT)
    assert "interpreter" in str(ei.value)
    # a missing working directory
    with pytest.raises(nscg.SpawnError) as ei:
        PLAIN.with_cwd("/nonexistent-dir-xyz").run(["/bin/true"])
    assert (ei.value.stage, ei.value.errno) == (Stage.CHDIR, errno.ENOENT)
    assert open_fds() == fds
    assert set(children()) == kids


def test_inherited_stdio_that_is_closed_stays_closed() -> None:
    # in a fresh interpreter: this one's stdio belongs to pytest
    code = textwrap.dedent(
        """
        import fcntl, os, sys, nscg
        c = nscg.Container().without_rootfs().with_namespaces(nscg.Namespace.NONE)

        def probe(**kw):
            pipe = os.pipe()
            r, w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in pipe)
            for fd in pipe:
                os.close(fd)
            code = (
                "import os\\nok = []\\nfor f in (0, 1, 2):\\n"
                " try: os.fstat(f); ok.append(str(f))\\n except OSError: pass\\n"
                f"os.write({w}, ' '.join(ok).encode())"
            )
            c.spawn([sys.executable, "-I", "-S", "-c", code], pass_fds=[w], **kw).wait()
            os.close(w)
            seen = os.read(r, 100).decode().split()
            os.close(r)
            return seen

        os.close(0)
        print("stdin closed:", probe(), flush=True)
        os.close(1)
        # stdout closed: stderr=STDOUT follows it there, and the spawn still works
        os.write(2, f"stdout closed: {probe(stderr=nscg.STDOUT)}\\n".encode())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "stdin closed: ['1', '2']" in out.stdout
    assert "stdout closed: []" in out.stderr, out.stderr


def test_prepared_plan_is_reused_and_released_with_its_container() -> None:
    c = PLAIN.with_env({"A": "1"})
    assert c.run(["/bin/true"]).returncode == 0
    first = _prepared[id(c)][1]
    assert c.run(["/bin/true"]).returncode == 0
    assert _prepared[id(c)][1] is first
    # a container derived from it has a plan of its own
    d = c.with_env({"A": "2"})
    r = d.run(["/bin/sh", "-c", "echo $A"], capture_output=True)
    assert r.stdout == b"2\n"
    assert _prepared[id(d)][1] is not first
    key = id(c)
    del c, first
    gc.collect()
    assert key not in _prepared or _prepared[key][0]() is not None


def test_prepared_plan_is_made_again_after_fork() -> None:
    need_root()
    # a root of its own, with /etc files (written by the child into its scratch memory)
    c = Container().with_rootfs(RootFS.host()).with_hostname("forked")
    assert c.run(["/bin/true"]).returncode == 0  # prepared here, stacks pooled
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            out = c.run(["/bin/sh", "-c", "hostname; cat /etc/hosts"], capture_output=True)
            ok = out.returncode == 0 and b"forked" in (out.stdout or b"")
            code = 0 if ok and _prepared[id(c)][1].key[0] == os.getpid() else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(code)
    os.close(w)
    status = os.read(r, 1)
    os.close(r)
    _, st = os.waitpid(pid, 0)
    assert status == b"\x00" and os.waitstatus_to_exitcode(st) == 0
    assert c.run(["/bin/true"]).returncode == 0


def test_bind_mount_point_is_made_like_the_source_at_each_spawn(tmp_path: Path) -> None:
    need_root()
    root = tmp_path / "root"
    for d in ("bin", "proc", "dev", "tmp"):
        (root / d).mkdir(parents=True)
    shutil.copy2(static_busybox(), root / "bin/busybox")
    (root / "bin/sh").symlink_to("busybox")
    src = tmp_path / "src"
    src.mkdir()
    c = Container().with_rootfs(
        RootFS.from_directory(root, readonly=False).bind(str(src), "/new/thing")
    )
    probe = ["/bin/sh", "-c", "[ -d /new/thing ] && echo dir; [ -f /new/thing ] && echo file; true"]
    assert c.run(probe, capture_output=True, check=True).stdout == b"dir\n"
    shutil.rmtree(root / "new")
    src.rmdir()
    src.write_text("now a file\n")
    assert c.run(probe, capture_output=True, check=True).stdout == b"file\n"


def test_every_masked_directory_is_empty_and_read_only(tmp_path: Path) -> None:
    need_root()
    host = tmp_path / "host"
    for d in ("a", "b", "c"):
        (host / d).mkdir(parents=True)
        (host / d / "secret").write_text(d)
    (host / "f").write_text("file secret")
    c = Container().with_rootfs(
        RootFS.host()
        .ro_bind(str(host), "/tmp/h")
        .mask("/tmp/h/a")
        .mask("/tmp/h/b")
        .mask("/tmp/h/f")
        .mask("/tmp/h/c")
    )
    code = textwrap.dedent(
        """
        import errno, json, os
        out = {}
        for d in ("a", "b", "c"):
            p = "/tmp/h/" + d
            try:
                open(p + "/new", "w")
                w = "written"
            except OSError as e:
                w = errno.errorcode[e.errno]
            out[d] = [os.listdir(p), w]
        out["f"] = open("/tmp/h/f").read()
        print(json.dumps(out))
        """
    )
    r = c.run([sys.executable, "-c", code], capture_output=True, check=True)
    import json

    out = json.loads(r.stdout or b"{}")
    for d in ("a", "b", "c"):
        assert out[d] == [[], "EROFS"], out
    assert out["f"] == ""
    assert (host / "a" / "secret").read_text() == "a"  # the host's files are untouched


def test_one_prepared_plan_shared_by_many_threads() -> None:
    # one Container, one template: every thread's children read the same mount
    # plan and strings while the others run (and write errno, see child.h)
    import threading

    c = Container().with_rootfs(RootFS.host()).with_hostname("shared")
    out: list[bytes] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(40):
                r = c.run(
                    ["/bin/sh", "-c", "hostname; wc -c < /proc/timer_list"], capture_output=True
                )
                out.append((r.stdout or b"") + str(r.returncode).encode())
        except BaseException as e:
            errors.append(e)

    fds, kids = open_fds(), set(children())
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert out == [b"shared\n0\n0"] * 160  # and /proc/timer_list masked in every one
    assert open_fds() == fds
    assert set(children()) == kids


def test_etc_files_of_a_prepared_plan_are_written_in_each_sandbox() -> None:
    need_root()
    c = Container().with_rootfs(RootFS.host()).with_hostname("again")
    for _ in range(2):  # the second run reuses the prepared plan
        r = c.run(["/bin/sh", "-c", "grep again /etc/hosts"], capture_output=True, check=True)
        assert b"127.0.1.1" in (r.stdout or b"")
    assert _prepared[id(c)][1].etc  # (the files' content is in the plan, not on the host)


def test_a_killed_caller_leaves_no_etc_files_anywhere() -> None:
    need_root()
    code = textwrap.dedent(
        """
        import os, signal, nscg
        nscg.Container().with_rootfs(nscg.RootFS.host()).with_hostname("k").run(["/bin/true"])
        print(os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    killed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    pid = killed.stdout.strip()
    assert killed.returncode == -9 and pid
    for d in ("/dev/shm", "/tmp", "/var/tmp"):
        assert not [n for n in os.listdir(d) if n.startswith(f"nscg-etc-{pid}")]

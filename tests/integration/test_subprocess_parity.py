"""subprocess parity (issue 15 item 2): text mode, per-call env and cwd, input,
subprocess's exceptions, PermissionError; the typed results checked by mypy
(``assert_type``) as well as at run time."""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typing_extensions import assert_type

import nscg
from nscg import Container
from nscg._spawn import _per_call
from tests.conftest import children, open_fds

BOX = Container()


def test_capture_text_is_str() -> None:
    r = BOX.run(["echo", "héllo"], capture_output=True, text=True)
    assert_type(r, nscg.Result[str])
    assert_type(r.stdout, str)
    assert r.stdout == "héllo\n" and r.stderr == ""
    assert r.stdout.upper() == "HÉLLO\n"  # (mypy: no None to rule out)


def test_capture_binary_is_bytes() -> None:
    r = BOX.run(["echo", "x"], capture_output=True)
    assert_type(r, nscg.Result[bytes])
    assert_type(r.stdout, bytes)
    assert r.stdout == b"x\n"


def test_no_capture_is_optional() -> None:
    r = BOX.run(["true"])
    assert_type(r, nscg.Result[bytes | None])
    assert r.stdout is None and r.stderr is None
    t = BOX.run(["true"], text=True)
    assert_type(t, nscg.Result[str | None])
    assert t.stdout is None


def test_universal_newlines_and_encoding_and_errors() -> None:
    r = BOX.run(["printf", "a\\r\\nb\\rc\\n"], capture_output=True, universal_newlines=True)
    assert_type(r, nscg.Result[str])
    assert r.stdout == "a\nb\nc\n"  # \r\n and \r translated, as subprocess does
    r2 = BOX.run(["printf", "\\351t\\351"], capture_output=True, encoding="latin-1")
    assert_type(r2, nscg.Result[str])
    assert r2.stdout == "été"
    r3 = BOX.run(["printf", "a\\377b"], capture_output=True, errors="replace")
    assert_type(r3, nscg.Result[str])
    assert r3.stdout == "a\ufffdb"
    with pytest.raises(UnicodeDecodeError):  # strict, like subprocess
        BOX.run(["printf", "a\\377b"], capture_output=True, encoding="utf-8")
    assert (
        subprocess.run(["printf", "a\\r\\nb"], capture_output=True, text=True, check=True).stdout
        == BOX.run(["printf", "a\\r\\nb"], capture_output=True, text=True).stdout
    )


def test_input_text_and_binary() -> None:
    r = BOX.run(["cat"], input="é\n", capture_output=True, text=True)
    assert r.stdout == "é\n"
    rb = BOX.run(["cat"], input=bytearray(b"\x00\xff"), capture_output=True)
    assert rb.stdout == b"\x00\xff"
    rm = BOX.run(["cat"], input=memoryview(b"mv"), capture_output=True)
    assert rm.stdout == b"mv"


def test_input_checked_before_anything_runs() -> None:
    fds, kids = open_fds(), set(children())
    bad: list[dict[str, object]] = [
        {"input": "str in binary mode"},
        {"input": b"bytes in text mode", "text": True},
        {"input": 42},
        {"input": "\udcff", "text": True},  # cannot be encoded
        {"encoding": "no-such-codec"},
        {"errors": "no-such-handler"},
        {"text": True, "universal_newlines": False},
    ]
    for kwargs in bad:
        with pytest.raises(nscg.SpecError):
            BOX.run(["definitely-not-a-program-xyz"], **kwargs)  # type: ignore[call-overload]  # wrong on purpose
    assert open_fds() == fds and set(children()) == kids


def test_spawn_text_mode_pipes() -> None:
    with BOX.spawn(["cat"], stdin=nscg.PIPE, stdout=nscg.PIPE, text=True) as p:
        assert_type(p, nscg.Process[str])
        assert p.text_mode and p.encoding
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write("line one\n")
        p.stdin.flush()
        assert p.stdout.readline() == "line one\n"
        out, err = p.communicate("two\n")
        assert_type(out, str | None)
        assert out == "two\n" and err is None
    with BOX.spawn(["cat"], stdin=nscg.PIPE, stdout=nscg.PIPE) as b:
        assert_type(b, nscg.Process[bytes])
        out_b, _ = b.communicate(b"raw")
        assert_type(out_b, bytes | None)
        assert out_b == b"raw"
        assert not b.text_mode


def test_per_call_env_and_cwd_override_the_spec() -> None:
    spec = Container().with_env({"A": "spec"}).with_cwd("/tmp")
    r = spec.run(["sh", "-c", 'echo "$A $B"; pwd'], capture_output=True, text=True)
    assert r.stdout == "spec \n/tmp\n"
    r = spec.run(
        ["sh", "-c", 'echo "$A $B"; pwd'],
        capture_output=True,
        text=True,
        env={"A": "call", "B": "b", "PATH": "/usr/bin:/bin"},
        cwd="/usr",
    )
    assert r.stdout == "call b\n/usr\n"
    # the spec is unchanged, and a repeated call reuses one derived spec
    assert spec.env == (("A", "spec"),) and spec.cwd == "/tmp"
    before = len(_per_call)
    for _ in range(3):
        spec.run(["true"], cwd="/usr")
    assert len(_per_call) <= before + 1
    with pytest.raises(nscg.SpecError):
        spec.run(["true"], cwd="relative")
    with pytest.raises(nscg.SpecError):
        spec.run(["true"], env={"A=B": "x"})


def test_exec_and_run_inside_take_env_cwd_text() -> None:
    with Container().spawn(["sleep", "30"]) as box:
        r = box.run_inside(
            ["sh", "-c", 'echo "$X"; pwd'],
            capture_output=True,
            text=True,
            env={"X": "1"},
            cwd="/tmp",
        )
        assert_type(r, nscg.Result[str])
        assert r.stdout == "1\n/tmp\n"
        with box.exec(["echo", "hi"], stdout=nscg.PIPE, text=True) as p:
            assert_type(p, nscg.Process[str])
            assert p.communicate()[0] == "hi\n"
        box.kill()


def test_called_process_error_is_subprocess_s_and_decoded() -> None:
    with pytest.raises(subprocess.CalledProcessError) as ei:
        BOX.run(
            ["sh", "-c", "echo out; echo err >&2; exit 3"],
            capture_output=True,
            text=True,
            check=True,
        )
    e = ei.value
    assert isinstance(e, nscg.CalledProcessError) and isinstance(e, nscg.NscgError)
    assert (e.returncode, e.stdout, e.stderr) == (3, "out\n", "err\n")
    assert str(e) == f"Command '{e.cmd}' returned non-zero exit status 3."


def test_timeout_expired_is_subprocess_s() -> None:
    with pytest.raises(subprocess.TimeoutExpired) as ei:
        BOX.run(
            ["sh", "-c", "echo started; exec sleep 10"], capture_output=True, text=True, timeout=0.5
        )
    e = ei.value
    assert isinstance(e, nscg.TimeoutExpired) and isinstance(e, TimeoutError)
    assert e.output == "started\n"  # decoded, as subprocess.run does after the kill
    assert e.timeout == 0.5


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A directory the default sandbox sees too (its /tmp is private: not under it)."""
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="nscg-parity-") as d:
        yield Path(d)


def test_permission_error_for_a_file_that_is_not_executable(host_dir: Path) -> None:
    plain = host_dir / "data.sh"
    plain.write_text("#!/bin/sh\necho hi\n")
    plain.chmod(0o644)
    fds, kids = open_fds(), set(children())
    for c in (Container().without_rootfs(), Container()):
        # subprocess says PermissionError for the same file
        with pytest.raises(PermissionError):
            subprocess.run([str(plain)], check=False)
        with pytest.raises(PermissionError) as ei:
            c.run([str(plain)])
        assert isinstance(ei.value, nscg.ExecutablePermissionError)
        assert ei.value.errno == errno.EACCES and ei.value.filename == str(plain)
    assert open_fds() == fds and set(children()) == kids


def test_permission_error_for_a_directory_and_on_path(host_dir: Path) -> None:
    tmp_path = host_dir
    with pytest.raises(PermissionError):
        Container().run([str(tmp_path)])
    # on PATH: a non-executable candidate and nothing better is EACCES...
    (tmp_path / "tool").write_text("#!/bin/sh\necho hi\n")
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    with pytest.raises(nscg.ExecutablePermissionError):
        Container().run(["tool"], env=env)
    # ... but an executable one later on PATH wins, as for execvp
    (tmp_path / "true").write_text("not executable")
    assert Container().run(["true"], env=env).returncode == 0
    # and nothing at all is ENOENT
    with pytest.raises(nscg.ExecutableNotFoundError):
        Container().run(["definitely-not-a-program-xyz"], env=env)


def test_noexec_in_the_sandbox_stays_a_spawn_error(tmp_path: Path) -> None:
    """An execve refused inside the sandbox (a noexec mount of its own) is a SpawnError.

    The file is executable as the host sees it: the lookup before the clone
    passes, and the sandbox is set up when the kernel refuses the execve.
    """
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    root = nscg.RootFS.host().bind(str(script), "/tmp/s.sh", noexec=True)
    with pytest.raises(nscg.SpawnError) as ei:
        Container().with_rootfs(root).run(["/tmp/s.sh"])
    assert ei.value.stage == nscg.Stage.EXEC and ei.value.errno == errno.EACCES


def test_prepared_plan_cached_without_per_call_arguments() -> None:
    from nscg._spawn import _prepare

    spec = Container()
    spec.run(["true"])
    prep = _prepare(spec)
    spec.run(["true"], text=True)
    assert _prepare(spec) is prep
    os.environ.get("TERM")  # (the key of the cache includes it: unchanged here)


def test_per_call_cache_is_bounded_and_thread_safe() -> None:
    """Many threads deriving specs at once: no error, the cache stays bounded."""
    import threading

    from nscg._spawn import _PER_CALL_MAX, with_call

    spec = Container()
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(300):
                derived = with_call(spec, None, f"/d{t}-{i % 50}")
                assert derived.cwd == f"/d{t}-{i % 50}" and derived.env == spec.env
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(_per_call) <= _PER_CALL_MAX + len(threads)

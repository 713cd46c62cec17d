"""``nscg run`` speaks bubblewrap's options: each one side by side with bwrap 0.8.

Every test runs the same options through ``bwrap`` and ``nscg run`` with a
command that prints what it sees, and compares. bwrap starts from an empty
tmpfs; the common base (:data:`BWRAP_BASE`) gives it nscg's default root: the
host's ``/`` read-only, a new ``/proc`` and ``/dev``, a private ``/tmp``. As
root, and as uid 65534 (``rootless``: bwrap then makes a user namespace and is
told to be uid 0 inside, nscg's default).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import (
    NOBODY,
    child_pythonpath,
    need_nobody_python,
    need_root,
    skip_or_fail,
)

BWRAP_BASE = (
    "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc",
    "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp",
)  # fmt: skip

MODES = ["root", pytest.param("rootless", marks=pytest.mark.rootless)]


def _bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        skip_or_fail("bwrap", "bwrap (bubblewrap) is not installed")
    assert path is not None
    return path


def _as(mode: str) -> list[str]:
    if mode == "root":
        need_root()
        return []
    need_nobody_python()
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def _env(mode: str) -> dict[str, str]:
    env = dict(os.environ)
    if mode != "root":
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/"}
    env["PYTHONPATH"] = child_pythonpath()
    return env


def run_both(
    mode: str,
    opts: Sequence[str],
    script: str,
    *,
    bwrap_base: Sequence[str] = BWRAP_BASE,
    fds: Sequence[bytes] = (),
    pass_fds: Sequence[int] = (),
    nscg_opts: Sequence[str] = (),
) -> tuple[subprocess.CompletedProcess[bytes], subprocess.CompletedProcess[bytes]]:
    """(bwrap's result, nscg's) for ``opts`` and ``sh -c script``.

    ``fds``: for each run, a pipe holding each of these is passed, and its
    number replaces ``{0}``, ``{1}``... in ``opts`` (``--file {0} /tmp/f``).
    """
    bwrap = _bwrap()
    user = [] if mode == "root" else ["--unshare-user", "--uid", "0", "--gid", "0"]
    heads = [
        [*_as(mode), bwrap, *bwrap_base, *user],
        [*_as(mode), sys.executable, "-m", "nscg", "run", *nscg_opts],
    ]
    out = []
    for head in heads:
        with _pipes(fds) as nums:
            words = [o.format(*nums) for o in opts]
            argv = [*head, *words, "--", "sh", "-c", script]
            out.append(
                subprocess.run(
                    argv,
                    capture_output=True,
                    timeout=60,
                    check=False,
                    env=_env(mode),
                    pass_fds=[*nums, *pass_fds],
                )
            )
    return out[0], out[1]


@contextlib.contextmanager
def _pipes(contents: Sequence[bytes]) -> Iterator[list[int]]:
    """Read ends of pipes that hold ``contents`` (small: each fits its pipe)."""
    fds: list[int] = []
    try:
        for data in contents:
            r, w = os.pipe()
            fds.append(r)
            os.write(w, data)
            os.close(w)
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def same(
    mode: str, opts: Sequence[str], script: str, **kw: object
) -> subprocess.CompletedProcess[bytes]:
    """Assert bwrap and nscg print the same and exit alike; nscg's result."""
    b, n = run_both(mode, opts, script, **kw)  # type: ignore[arg-type]  # the keywords above
    assert b.returncode == 0, b.stderr
    assert (n.returncode, n.stdout.decode()) == (b.returncode, b.stdout.decode()), n.stderr
    return n


STAT = 'stat -c "%n %F %a %s" '


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory uid 65534 can reach (pytest's tmp_path lies below a 0700 one)."""
    d = Path(tempfile.mkdtemp(prefix="nscg-cli-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.mark.parametrize("mode", MODES)
def test_filesystem_ops_apply_in_command_line_order(mode: str) -> None:
    # a tmpfs, then things in it, then a tmpfs over one of them: bwrap's order
    opts = [
        "--tmpfs", "/tmp/t", "--ro-bind", "/usr/share/doc", "/tmp/t/doc", "--dir", "/tmp/t/d",
        "--symlink", "d", "/tmp/t/l", "--perms", "0700", "--size", "65536", "--tmpfs", "/tmp/t/d",
        "--dir", "/tmp/t/d/inner",
    ]  # fmt: skip
    same(
        mode, opts, "ls /tmp/t /tmp/t/d; " + STAT + "/tmp/t/d /tmp/t/l; test -e /tmp/t/doc/adduser"
    )


@pytest.mark.parametrize("mode", MODES)
def test_dir_perms_and_an_existing_dir(mode: str) -> None:
    opts = ["--dir", "/tmp/a/b", "--perms", "0750", "--dir", "/tmp/c", "--perms", "0700",
            "--dir", "/tmp"]  # fmt: skip
    same(mode, opts, STAT + "/tmp/a /tmp/a/b /tmp/c /tmp")


@pytest.mark.parametrize("mode", MODES)
def test_symlink(mode: str) -> None:
    same(mode, ["--symlink", "/etc/hostname", "/tmp/s", "--symlink", "rel/x", "/tmp/q/r"],
         "readlink /tmp/s /tmp/q/r; cat /tmp/s")  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_file_bind_data_ro_bind_data(mode: str) -> None:
    opts = [
        "--file", "{0}", "/tmp/f", "--perms", "0640", "--file", "{1}", "/tmp/g",
        "--bind-data", "{2}", "/tmp/bd", "--perms", "0644", "--ro-bind-data", "{3}",
        "/etc/hostname",
    ]  # fmt: skip
    script = (
        STAT + "/tmp/f /tmp/g /tmp/bd /etc/hostname; cat /tmp/f /tmp/g /tmp/bd /etc/hostname; "
        "echo x >> /tmp/bd && echo bd-writable; echo x >> /etc/hostname || echo robd-refused"
    )
    same(mode, opts, script, fds=[b"one\n", b"two\n", b"three\n", b"four\n"])


@pytest.mark.parametrize("mode", MODES)
def test_bind_try_variants_skip_a_missing_source(mode: str) -> None:
    opts = [
        "--bind-try", "/nonexistent/a", "/tmp/a", "--ro-bind-try", "/nonexistent/b", "/tmp/b",
        "--dev-bind-try", "/nonexistent/c", "/tmp/c", "--ro-bind-try", "/etc", "/tmp/etc",
    ]  # fmt: skip
    same(mode, opts, "ls /tmp; test -f /tmp/etc/hostname && echo bound")


@pytest.mark.parametrize("mode", MODES)
def test_dev_bind_allows_devices_and_bind_does_not(mode: str) -> None:
    opts = ["--dev-bind", "/dev/null", "/tmp/devnull", "--bind", "/dev/null", "/tmp/nodev"]
    script = (
        "echo x > /tmp/devnull && echo dev-ok; echo x > /tmp/nodev 2>/dev/null || echo nodev; "
        "grep -c nodev /proc/self/mountinfo >/dev/null; "
        "grep ' /tmp/nodev ' /proc/self/mountinfo | grep -o nosuid,nodev"
    )
    # (as root nscg's writable binds are idmapped, which devtmpfs refuses: ids as on the host)
    host_ids = ["--uid-map", "0:0:1", "--gid-map", "0:0:1"] if mode == "root" else []
    same(mode, opts, script, nscg_opts=host_ids)


@pytest.mark.parametrize("mode", MODES)
def test_bind_fd_and_ro_bind_fd(mode: str, open_dir: Path) -> None:
    d = open_dir / "d"
    d.mkdir()
    (d / "f").write_text("via fd\n")
    os.chmod(d, 0o777)
    # (bwrap closes each fd once bound: one each)
    fds = [os.open(d, os.O_RDONLY | os.O_DIRECTORY) for _ in range(4)]
    try:
        opts = ["--ro-bind-fd", "{0}", "/tmp/ro", "--bind-fd", "{1}", "/tmp/rw"]
        script = "cat /tmp/ro/f; touch /tmp/ro/x 2>/dev/null || echo ro; touch /tmp/rw/y && echo rw"
        b, n = run_both(mode, [o.format(*fds) for o in opts], script, pass_fds=fds[:2])
        assert b.returncode == 0, b.stderr
        assert b.stdout == b"via fd\nro\nrw\n"
        n = run_both(mode, [o.format(*fds[2:]) for o in opts], script, pass_fds=fds[2:])[1]
        assert (n.returncode, n.stdout) == (0, b.stdout), n.stderr
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.mark.parametrize("mode", MODES)
def test_remount_ro_leaves_the_mounts_below(mode: str) -> None:
    opts = ["--tmpfs", "/tmp/r", "--tmpfs", "/tmp/r/below", "--remount-ro", "/tmp/r"]
    script = (
        "touch /tmp/r/x 2>/dev/null || echo r-ro; touch /tmp/r/below/y && echo below-rw; "
        "grep -c ' /tmp/r ' /proc/self/mountinfo"
    )
    same(mode, opts, script)


def test_remount_ro_of_a_path_that_is_no_mount_point_fails_like_bwrap() -> None:
    b, n = run_both("root", ["--tmpfs", "/tmp/r", "--dir", "/tmp/r/d", "--remount-ro", "/tmp/r/d"],
                    "true")  # fmt: skip
    assert b.returncode != 0 and n.returncode == 125
    assert b"remount-ro /tmp/r/d" in n.stderr and b"Invalid argument" in n.stderr


@pytest.mark.parametrize("mode", MODES)
def test_proc_dev_mqueue_at_other_paths(mode: str) -> None:
    opts = ["--proc", "/tmp/p", "--dev", "/tmp/d", "--mqueue", "/tmp/mq"]
    script = (
        "ls /tmp/p/self/ns | head -3; ls /tmp/d | grep -v '^core$'; "
        "grep -o ' /tmp/mq [^ ]* [^ ]* - mqueue' /proc/self/mountinfo | cut -d' ' -f2,6-"
    )
    same(mode, opts, script)


@pytest.mark.parametrize("mode", MODES)
def test_tmpfs_size_and_perms(mode: str) -> None:
    opts = ["--size", "1048576", "--perms", "0701", "--tmpfs", "/tmp/s", "--tmpfs", "/tmp/n"]
    script = STAT + "/tmp/s /tmp/n; df -k /tmp/s | tail -1 | tr -s ' ' | cut -d' ' -f2"
    same(mode, opts, script)


@pytest.mark.parametrize("mode", MODES)
def test_chmod(mode: str) -> None:
    opts = ["--dir", "/tmp/c", "--chmod", "0711", "/tmp/c", "--symlink", "c", "/tmp/l",
            "--chmod", "0700", "/tmp/l"]  # fmt: skip
    same(mode, opts, STAT + "/tmp/c /tmp/l")


def test_chmod_of_a_missing_path_fails_like_bwrap() -> None:
    b, n = run_both("root", ["--chmod", "0700", "/tmp/missing"], "true")
    assert b.returncode != 0 and n.returncode == 125
    assert b"chmod /tmp/missing" in n.stderr and b"No such file" in n.stderr


@pytest.mark.parametrize("mode", MODES)
def test_setenv_unsetenv_clearenv_chdir(mode: str) -> None:
    opts = ["--setenv", "A", "1", "--setenv", "B", "2", "--unsetenv", "B", "--chdir", "/usr"]
    same(mode, opts, 'echo "A=$A B=${B-unset}"; pwd')
    # --clearenv: bwrap keeps PWD and what --setenv sets later; nscg PATH, HOME, TERM too
    opts = ["--setenv", "GONE", "x", "--clearenv", "--setenv", "C", "3"]
    same(mode, opts, 'echo "C=$C GONE=${GONE-unset}"')


@pytest.mark.parametrize("mode", MODES)
def test_args_fd(mode: str) -> None:
    words = b"--setenv\0FROM\0args\0--dir\0/tmp/from-args\0"
    same(mode, ["--args", "{0}", "--chdir", "/tmp"], 'echo "$FROM"; ls /tmp', fds=[words])


def test_version() -> None:
    r = subprocess.run([sys.executable, "-m", "nscg", "--version"], capture_output=True,
                       check=False)  # fmt: skip
    assert r.returncode == 0 and r.stdout.startswith(b"nscg ")


# ------------------------------------------------------------------ fds
def _both_argvs(mode: str, opts: Sequence[str], script: str) -> list[list[str]]:
    user = [] if mode == "root" else ["--unshare-user", "--uid", "0", "--gid", "0"]
    return [
        [*_as(mode), _bwrap(), *BWRAP_BASE, *user, *opts, "--", "sh", "-c", script],
        [*_as(mode), sys.executable, "-m", "nscg", "run", *opts, "--", "sh", "-c", script],
    ]


@pytest.mark.parametrize("which", [0, 1], ids=["bwrap", "nscg"])
@pytest.mark.parametrize("mode", MODES)
def test_info_fd_and_json_status_fd(mode: str, which: int) -> None:
    ir, iw = os.pipe()
    sr, sw = os.pipe()
    # (nscg reads the namespace ids once the command runs: it must not end at once)
    script = "sleep 0.3; exit 3"
    argv = _both_argvs(mode, ["--info-fd", str(iw), "--json-status-fd", str(sw)], script)[which]
    p = subprocess.Popen(argv, pass_fds=[iw, sw], env=_env(mode))
    os.close(iw)
    os.close(sw)
    with os.fdopen(ir, "rb") as info_r, os.fdopen(sr, "rb") as status_r:
        info = json.loads(info_r.read())  # (EOF: the info fd is closed once written)
        lines = [json.loads(x) for x in status_r.read().splitlines()]
    assert p.wait(30) == 3
    assert isinstance(info["child-pid"], int) and info["child-pid"] > 0
    # the namespaces both create (bwrap as root makes no user namespace)
    for kind in ("cgroup", "ipc", "mnt", "net", "pid", "uts"):
        assert info[f"{kind}-namespace"] != os.stat(f"/proc/self/ns/{kind}").st_ino
    assert lines[0]["child-pid"] == info["child-pid"]
    assert lines[-1] == {"exit-code": 3}


@pytest.mark.parametrize("which", [0, 1], ids=["bwrap", "nscg"])
@pytest.mark.parametrize("mode", MODES)
def test_json_status_exit_code_of_a_signal(mode: str, which: int) -> None:
    r, w = os.pipe()
    argv = _both_argvs(mode, ["--json-status-fd", str(w)], "kill -TERM $$")[which]
    p = subprocess.Popen(argv, pass_fds=[w], env=_env(mode))
    os.close(w)
    with os.fdopen(r, "rb") as f:
        lines = [json.loads(x) for x in f.read().splitlines()]
    assert p.wait(30) == 128 + 15
    assert lines[-1] == {"exit-code": 128 + 15}


@pytest.mark.parametrize("which", [0, 1], ids=["bwrap", "nscg"])
@pytest.mark.parametrize("mode", MODES)
def test_sync_fd_sees_eof_when_the_sandbox_ends(mode: str, which: int) -> None:
    r, w = os.pipe()
    argv = _both_argvs(mode, ["--sync-fd", str(w)], "sleep 0.5")[which]
    t0 = time.monotonic()
    p = subprocess.Popen(argv, pass_fds=[w], env=_env(mode))
    os.close(w)
    with os.fdopen(r, "rb") as f:
        assert f.read() == b""
    elapsed = time.monotonic() - t0
    assert p.wait(30) == 0
    assert elapsed >= 0.5


@pytest.mark.parametrize("which", [0, 1], ids=["bwrap", "nscg"])
@pytest.mark.parametrize("mode", MODES)
def test_block_fd_holds_the_command_until_data_comes(mode: str, which: int, open_dir: Path) -> None:
    os.chmod(open_dir, 0o777)
    marker = open_dir / "ran"
    r, w = os.pipe()
    argv = _both_argvs(mode, ["--block-fd", str(r), "--bind", str(open_dir), str(open_dir)],
                       f"touch {marker}")[which]  # fmt: skip
    p = subprocess.Popen(argv, pass_fds=[r], env=_env(mode))
    os.close(r)
    time.sleep(1.0)
    assert not marker.exists() and p.poll() is None
    os.write(w, b"x")
    os.close(w)
    assert p.wait(30) == 0
    assert marker.exists()


# ------------------------------------------------------------------ namespaces
@pytest.fixture
def target(mode: str) -> Iterator[int]:
    """A process in a user, pid and network namespace of its own (made by unshare(1))."""
    as_user = _as(mode)
    if shutil.which("unshare") is None:
        skip_or_fail("root", "unshare(1) is missing (util-linux)")
    p = subprocess.Popen([*as_user, "unshare", "--user", "--map-root-user", "--pid", "--net",
                          "--fork", "sleep", "60"])  # fmt: skip
    try:
        for _ in range(200):  # (the forked sleep is its child, in the new pid namespace)
            kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
            if kids:
                yield int(kids[0])
                break
            time.sleep(0.02)
        else:
            pytest.fail("unshare(1) did not start its child")
    finally:
        p.kill()
        p.wait()


def _ns(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


@pytest.mark.parametrize("kind", ["user", "net", "pid"])
@pytest.mark.parametrize("mode", MODES)
def test_userns_netns_pidns_fds(mode: str, kind: str, target: int) -> None:
    opt = {"user": "--userns", "net": "--netns", "pid": "--pidns"}[kind]
    fd = os.open(f"/proc/{target}/ns/{kind}", os.O_RDONLY)
    ufd = os.open(f"/proc/{target}/ns/user", os.O_RDONLY)
    # (unprivileged, joining its pid or network namespace takes its owner's too)
    user = ["--userns", str(ufd)] if mode != "root" and kind != "user" else []
    try:
        # nscg: the sandbox is in that namespace (and makes no new one of its kind)
        extra = ["--unshare", "mnt,uts,ipc"] if kind == "pid" else []
        r = subprocess.run(
            [*_as(mode), sys.executable, "-m", "nscg", "run", opt, str(fd), *user, *extra,
             "--root", "none", "--", "readlink", f"/proc/self/ns/{kind}"],
            pass_fds=[fd, ufd], capture_output=True, timeout=60, check=False, env=_env(mode),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode().strip() == _ns(target, kind)
        if kind == "net":
            return  # (bwrap 0.8 has no --netns)
        b = subprocess.run(
            [*_as(mode), _bwrap(), "--dev-bind", "/", "/", opt, str(fd), *user, "--",
             "readlink", f"/proc/self/ns/{kind}"],
            pass_fds=[fd, ufd], capture_output=True, timeout=60, check=False, env=_env(mode),
        )  # fmt: skip
        assert b.returncode == 0, b.stderr
        assert b.stdout == r.stdout
    finally:
        os.close(fd)
        os.close(ufd)


def test_a_namespace_fd_of_the_wrong_kind_is_refused() -> None:
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        r = subprocess.run([sys.executable, "-m", "nscg", "run", "--userns", str(fd), "--",
                            "true"], pass_fds=[fd], capture_output=True, check=False)  # fmt: skip
        assert r.returncode == 2 and b"not a user namespace" in r.stderr
    finally:
        os.close(fd)


# ------------------------------------------------------------------ missing destinations
def _bwrap_root_entries() -> list[str]:
    """bwrap options that rebuild / on its tmpfs: an ro-bind (or symlink) per entry."""
    out: list[str] = []
    for name in sorted(os.listdir("/")):
        if name in ("proc", "dev", "tmp"):
            continue
        path = f"/{name}"
        if os.path.islink(path):
            out += ["--symlink", os.readlink(path), path]
        else:
            out += ["--ro-bind", path, path]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_missing_destinations_as_bwrap_makes_them_on_its_tmpfs_root(mode: str) -> None:
    opts = ["--tmpfs", "/nscg-new/t", "--dir", "/nscg-d/e", "--symlink", "/usr", "/nscg-l",
            "--perms", "0700", "--dir", "/nscg-p/q"]  # fmt: skip
    script = (
        "ls / | grep nscg; " + STAT + "/nscg-new /nscg-new/t /nscg-d /nscg-d/e /nscg-p "
        "/nscg-p/q; readlink /nscg-l; ls / | grep -v nscg | wc -l"
    )
    # bwrap makes them only on its own tmpfs root: / rebuilt from an ro-bind per entry
    base = ["--unshare-all", "--die-with-parent", *_bwrap_root_entries(), "--proc", "/proc",
            "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]  # fmt: skip
    same(mode, opts, script, bwrap_base=base)
    # what differs, by design: nscg's rebuilt / is read-only again, bwrap's tmpfs is not
    _, n = run_both(mode, opts, "touch /x", bwrap_base=base)
    assert n.returncode != 0 and b"Read-only file system" in n.stderr
    for path in ("/nscg-new", "/nscg-d", "/nscg-l", "/nscg-p"):
        assert not os.path.lexists(path)  # the host is never written


@pytest.mark.parametrize("mode", MODES)
def test_missing_destinations_deeper_down(mode: str, open_dir: Path) -> None:
    # (bwrap cannot: its /usr is a read-only bind)
    src = open_dir / "src"
    src.mkdir(mode=0o755)
    (src / "f").write_text("bound\n")
    os.chmod(src / "f", 0o644)
    script = (
        STAT + "/usr/share/nscg-x; cat /usr/share/nscg-x/y/f; cat /tmp/n/file; "
        "test -f /usr/share/doc/adduser/copyright && echo siblings-kept; "
        "touch /usr/share/z 2>/dev/null || echo still-read-only"
    )
    with _pipes([b"data\n"]) as (fd,):
        r = subprocess.run(
            [*_as(mode), sys.executable, "-m", "nscg", "run", "--ro-bind", str(src),
             "/usr/share/nscg-x/y", "--bind-data", str(fd), "/tmp/n/file", "--",
             "sh", "-c", script],
            capture_output=True, timeout=60, check=False, env=_env(mode), pass_fds=[fd],
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == [
        "/usr/share/nscg-x directory 755 60", "bound", "data", "siblings-kept",
        "still-read-only",
    ]  # fmt: skip
    assert not os.path.lexists("/usr/share/nscg-x")

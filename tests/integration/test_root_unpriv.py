"""Root inside is not root on the host: a root caller's sandbox runs as an unprivileged range.

Each test attacks as the sandbox's root what host root could do, with the default
spec (``RootFS.host()``) and with ``without_rootfs()`` (the caller's view), and
checks the kernel refuses it; then that writable binds and the opt-in
``IdMap(0, 0, 1)`` ("root is host root") still work.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import nscg
from nscg import Container, IdMap, RootFS
from nscg import namespaces as ns_mod
from tests.conftest import need_root, run_as_nobody

OLD = Container().with_uid_map(IdMap(0, 0, 1)).with_gid_map(IdMap(0, 0, 1))

#: (name, spec) for both views: the default root and the caller's own; the
#: default root's masks over host sockets are off: these tests check the id map
VIEWS = [
    ("default", Container().with_rootfs(RootFS.host(hide_sockets=False))),
    ("without_rootfs", Container().without_rootfs()),
]


def _py(c: Container, code: str, **kw: object) -> dict[str, object]:
    """Run Python code in ``c``; it prints one JSON line."""
    r = c.run(["python3", "-c", code], capture_output=True, **kw)  # type: ignore[call-overload]  # kw: each caller's RunOptions
    assert r.returncode == 0, r.stderr
    out: dict[str, object] = json.loads((r.stdout or b"").decode().strip().splitlines()[-1])
    return out


TRY = """
import errno, json, os, socket, sys
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def write_same(path):
    def go():
        with open(path) as f:
            old = f.read()
        with open(path, "w") as f:  # the same value: harmless if it succeeds
            f.write(old)
    return go
def open_w(path):
    return lambda: os.close(os.open(path, os.O_WRONLY))
def read(path):
    return lambda: open(path, "rb").read(1)
def connect(path):
    def go():
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
        finally:
            s.close()
    return go
def create(path):
    return lambda: os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
out = {}
for name, path, how in json.loads(sys.argv[1]):
    out[name] = attempt({"write_same": write_same, "open_w": open_w, "read": read,
                         "connect": connect, "create": create}[how](path))
print(json.dumps(out))
"""


def _attempts(c: Container, checks: list[tuple[str, str, str]]) -> dict[str, str]:
    r = c.run(["python3", "-c", TRY, json.dumps(checks)], capture_output=True)
    assert r.returncode == 0, r.stderr
    out: dict[str, str] = json.loads((r.stdout or b"").decode().strip().splitlines()[-1])
    return out


@pytest.fixture()
def secrets() -> Iterator[Path]:
    """A world-traversable dir with a root-owned 0600 file, a 0600 socket and a 0755 dir."""
    need_root()
    d = Path(tempfile.mkdtemp(prefix="nscg-secrets-", dir="/var/tmp"))
    d.chmod(0o755)
    (d / "secret").write_text("s3cret")
    (d / "secret").chmod(0o600)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock"))
    sock.listen(8)
    (d / "sock").chmod(0o600)
    (d / "rootdir").mkdir(mode=0o755)
    try:
        yield d
    finally:
        sock.close()
        shutil.rmtree(d)


@pytest.mark.parametrize(("view", "c"), VIEWS, ids=[v for v, _ in VIEWS])
def test_root_only_host_files_sockets_and_dirs_are_refused(
    view: str, c: Container, secrets: Path
) -> None:
    checks = [
        ("secret", str(secrets / "secret"), "read"),
        ("shadow", "/etc/shadow", "read"),
        ("sock", str(secrets / "sock"), "connect"),
    ]
    if view == "without_rootfs":  # under RootFS.host() the host's / is read-only anyway
        checks.append(("rootdir", str(secrets / "rootdir" / "new"), "create"))
    got = _attempts(c, checks)
    assert got == {name: "EACCES" for name, _, _ in checks}
    assert not (secrets / "rootdir" / "new").exists()
    # the opt-in: root is host root again (the old behaviour)
    old = _attempts(OLD.with_rootfs(c.rootfs) if c.rootfs else OLD.without_rootfs(), checks)
    assert old == {name: "ok" for name, _, _ in checks}
    (secrets / "rootdir" / "new").unlink(missing_ok=True)


@pytest.mark.parametrize(("view", "c"), VIEWS, ids=[v for v, _ in VIEWS])
def test_root_only_sysctls_sys_and_devices_are_refused(view: str, c: Container) -> None:
    need_root()
    checks = [
        ("core_pattern", "/proc/sys/kernel/core_pattern", "write_same"),
        ("modprobe", "/proc/sys/kernel/modprobe", "write_same"),
        ("drop_caches", "/proc/sys/vm/drop_caches", "open_w"),
        ("power_state", "/sys/power/state", "open_w"),
        ("uevent_helper", "/sys/kernel/uevent_helper", "open_w"),
    ]
    if view == "without_rootfs" and os.path.exists("/dev/userfaultfd"):
        checks.append(("userfaultfd", "/dev/userfaultfd", "read"))
    checks = [ch for ch in checks if os.path.exists(ch[1])]
    got = _attempts(c, checks)
    # the default root: /proc/sys and /sys are read-only mounts (EROFS) and the
    # files are host root's (EACCES); the caller's view: host root's, EACCES
    allowed = {"EACCES", "EROFS"} if view == "default" else {"EACCES"}
    assert all(v in allowed for v in got.values()), got


def test_nproc_rlimit_applies_to_a_root_callers_sandbox() -> None:
    need_root()
    code = """
import errno, json, os, time
kids, err = [], None
for _ in range(30):
    try:
        pid = os.fork()
    except OSError as e:
        err = errno.errorcode[e.errno]
        break
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    kids.append(pid)
for k in kids:
    os.kill(k, 9)
    os.waitpid(k, 0)
print(json.dumps({"forked": len(kids), "err": err}))
"""
    for c in (Container(), Container().without_rootfs()):
        got = _py(c.with_rlimit("nproc", 8), code, timeout=60)
        assert got["err"] == "EAGAIN" and isinstance(got["forked"], int), got
        assert got["forked"] < 8, got  # the limit holds (the payload and init count too)
    # as host root the kernel exempts the payload: the old behaviour
    got = _py(OLD.with_rlimit("nproc", 8), code, timeout=60)
    assert got == {"forked": 30, "err": None}


def test_writable_bind_is_idmapped_to_the_caller(tmp_path: Path) -> None:
    need_root()
    tmp_path.chmod(0o755)
    (tmp_path / "mine").write_text("x")
    os.chown(tmp_path / "mine", 0, 0)
    (tmp_path / "u1000").mkdir()
    os.chown(tmp_path / "u1000", 1000, 1000)
    c = Container().with_rootfs(RootFS.host().bind(tmp_path, readonly=False))
    script = (
        f"cd {tmp_path} && stat -c '%u:%g' . mine u1000 && echo new > new && "
        f"mkdir newdir && stat -c '%u:%g' new newdir && cat /proc/self/uid_map"
    )
    r = c.run(["sh", "-c", script], capture_output=True, check=True)
    lines = (r.stdout or b"").decode().split("\n")
    # the caller's files are root's inside; host uid 1000's are uid 1000's
    assert lines[:3] == ["0:0", "0:0", "1000:1000"], r.stdout
    # ... while the sandbox's root is an unprivileged host range
    rr = ns_mod.root_range()
    assert lines[5].split() == ["0", str(rr.uid), "65536"]
    # and what it created belongs to the caller on the host
    for name in ("new", "newdir"):
        st = os.stat(tmp_path / name)
        assert (st.st_uid, st.st_gid) == (0, 0), name
    assert (tmp_path / "new").read_text() == "new\n"
    # a payload running as uid 1000 inside writes as host uid 1000
    r = c.with_user(1000, 1000).run(
        ["sh", "-c", f"touch {tmp_path}/u1000/f && touch {tmp_path}/f2"], capture_output=True
    )
    assert r.returncode == 1 and b"Permission denied" in (r.stderr or b"")  # f2: root's dir
    st = os.stat(tmp_path / "u1000" / "f")
    assert (st.st_uid, st.st_gid) == (1000, 1000)


def test_overlay_root_as_root(tmp_path: Path) -> None:
    """An overlay whose lowers keep their host owners (idmap_lowers=False, the host
    view's default) modifies its own files; root-only lower files stay unreadable.
    (Idmapped lowers: tests/integration/test_overlay_owners.py.)"""
    need_root()
    rr = ns_mod.root_range()
    lower = Path(tempfile.mkdtemp(prefix="nscg-lower-", dir="/var/tmp"))
    try:
        lower.chmod(0o755)
        (lower / "secret").write_text("s")
        (lower / "secret").chmod(0o600)
        (lower / "rootfile").write_text("r")
        (lower / "mine").write_text("m")
        os.chown(lower / "mine", rr.uid, rr.gid)
        c = Container().with_rootfs(
            RootFS.host().then(nscg.rootfs.Overlay((str(lower),), None, "/mnt", idmap=False))
        )
        script = (
            "cd /mnt; cat secret 2>/dev/null || echo secret-refused; echo more >> mine && "
            "echo mine-ok; echo x >> rootfile 2>/dev/null || echo root-refused; "
            "echo n > new && echo new-ok"
        )
        r = c.run(["sh", "-c", script], capture_output=True, check=True)
        assert (r.stdout or b"").decode().split() == [
            "secret-refused",
            "mine-ok",
            "root-refused",
            "new-ok",
        ]
        assert r.changes is not None
        assert r.changes.modified == {"/mnt/mine"} and r.changes.added == {"/mnt/new"}
        assert (lower / "mine").read_text() == "m"  # the lower is untouched
        # root is host root (the opt-in): it reads and modifies root's files
        old = "cd /mnt; cat secret; echo; echo x >> rootfile && echo root-ok"
        r = OLD.with_rootfs(c.rootfs).run(["sh", "-c", old], capture_output=True, check=True)
        assert (r.stdout or b"").decode().split() == ["s", "root-ok"]
    finally:
        shutil.rmtree(lower)


def test_subuid_entry_of_root_is_used_for_real(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_root()
    for name, text in (
        ("subuid", "root:3000000000:65536\n"),
        ("subgid", "root:3000065536:65536\n"),
    ):
        (tmp_path / name).write_text(text)
        monkeypatch.setitem(ns_mod.ID_FILES, name, str(tmp_path / name))
    r = Container().run(
        ["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map"], capture_output=True, check=True
    )
    assert (r.stdout or b"").decode().split() == [
        "0", "3000000000", "65536", "0", "3000065536", "65536",
    ]  # fmt: skip


def test_old_mapping_is_explicit_and_user_ids_outside_the_range_are_refused() -> None:
    need_root()
    r = OLD.run(["cat", "/proc/self/uid_map"], capture_output=True, check=True)
    assert (r.stdout or b"").split() == [b"0", b"0", b"1"]
    with pytest.raises(nscg.SpecError, match="outside the default map"):
        Container().with_user(70000).run(["true"])


@pytest.mark.rootless
def test_rootless_callers_keep_their_mapping() -> None:
    got = run_as_nobody(
        """
        import json, nscg
        r = nscg.Container().run(["cat", "/proc/self/uid_map"], capture_output=True)
        print(json.dumps(r.stdout.decode().split()))
        """
    )
    assert got == ["0", "65534", "1"]


def test_unidmappable_writable_bind_is_a_clear_error() -> None:
    need_root()
    # procfs cannot be idmapped: a writable bind of /proc/sys names itself
    c = Container().with_rootfs(RootFS.host().bind("/proc/sys", "/mnt", readonly=False))
    with pytest.raises(nscg.UnsupportedError, match=r"/proc/sys.*cannot be idmapped"):
        c.run(["true"])
    assert stat.S_ISDIR(os.stat("/proc/sys").st_mode)


def test_many_idmapped_binds_all_reach_the_sandbox(tmp_path: Path) -> None:
    """Every parent-made tree survives the child's fd clean-up, however many.

    The child kept the fds it moves above the payload's in a list of 69 slots
    and silently dropped what did not fit: past about 60 idmapped binds the
    last trees were closed before the mount plan used them.
    """
    need_root()
    tmp_path.chmod(0o755)
    n = 80
    root = RootFS.host()
    for i in range(n):
        d = tmp_path / f"d{i}"
        d.mkdir()
        (d / "f").write_text(str(i))
        root = root.bind(d, f"/tmp/b{i}", readonly=False)
    r = (
        Container()
        .with_rootfs(root)
        .run(
            ["sh", "-c", f"for i in $(seq 0 {n - 1}); do cat /tmp/b$i/f; echo; done"],
            capture_output=True,
            check=True,
        )
    )
    assert (r.stdout or b"").decode().split() == [str(i) for i in range(n)]

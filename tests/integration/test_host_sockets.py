"""No host unix socket, and no home directory, is reachable from a default sandbox.

A read-only bind of the host's ``/`` does not stop ``connect()`` on a path
socket: before ``RootFS.host()`` got its private ``/run``, home hiding and
socket masks, a sandbox reached every daemon's socket with the caller's
credentials. These tests make sockets where daemons put theirs (``/run``,
``/var/run``, ``/run/user/UID``, ``/var/tmp``, home directories, a directory
of their own, an abstract name), add every path socket the host lists in
``/proc/net/unix``, and connect to each from inside, as root and as uid 65534,
through the API, the CLI and the pytest fixture's preset. A control run with
the opt-outs connects to them, so a probe that cannot connect for another
reason would not pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nscg
from nscg.rootfs import host_socket_paths
from tests.conftest import need_root, run_as_nobody

#: Connects to each argument (a path, or @name for an abstract socket) as a
#: stream, datagram and seqpacket client; prints {arg: "connected" | errno name}
#: and the host paths (argv) this sandbox's /proc/net/unix lists.
PROBE = r"""
import errno, json, socket, sys
out = {}
for p in sys.argv[1:]:
    addr = "\0" + p[1:] if p.startswith("@") else p
    res = None
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET):
        s = socket.socket(socket.AF_UNIX, kind)
        try:
            s.connect(addr)
            res = "connected"
            break
        except OSError as e:
            if e.errno != errno.EPROTOTYPE or res is None:
                res = errno.errorcode.get(e.errno, str(e.errno))
        finally:
            s.close()
    out[p] = res
with open("/proc/net/unix") as f:
    listed = [ln.split(None, 7)[7].strip() for ln in f.readlines()[1:] if len(ln.split()) > 7]
print(json.dumps({"probe": out, "listed": sorted(set(listed) & set(sys.argv[1:]))}))
"""


def _listen(path: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
    with_dir = os.path.dirname(path)
    os.makedirs(with_dir, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, kind)
    s.bind(path)
    if kind != socket.SOCK_DGRAM:
        s.listen(8)
    os.chmod(path, 0o777)  # uid 65534 may connect wherever it can reach the path
    return s


class HostSockets:
    """Sockets listening on the host for one test, and the paths to probe."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.tag = tag
        self.socks: list[socket.socket] = []
        self.made_dirs: list[str] = []
        self.files: list[str] = []
        for uid in (0, 65534):  # /run/user/UID, made for the test when missing
            d = f"/run/user/{uid}"
            if not os.path.isdir(d):
                os.makedirs("/run/user", exist_ok=True)
                os.mkdir(d, 0o700)
                os.chown(d, uid, uid)
                self.made_dirs.append(d)
        # a home for 65534 under /home, and one outside /home ($HOME elsewhere)
        self.nobody_home = f"/home/nscg-test-{tag}"
        self.odd_home = f"/var/lib/nscg-test-home-{tag}"
        self.own_dir = f"/var/lib/nscg-test-{tag}"
        for d in (self.nobody_home, self.odd_home, self.own_dir):
            os.makedirs(d, 0o755)
            os.chown(d, 65534, 65534)
            self.made_dirs.append(d)
        self.paths = {
            "run": f"/run/nscg-test-{tag}.sock",
            "var_run": f"/var/run/nscg-test-{tag}-var.sock",
            "run_user_0": f"/run/user/0/nscg-test-{tag}.sock",
            "run_user_65534": f"/run/user/65534/nscg-test-{tag}.sock",
            "var_tmp": f"/var/tmp/nscg-test-{tag}.sock",
            "var_tmp_dgram": f"/var/tmp/nscg-test-{tag}-dgram.sock",
            "root_home": f"/root/nscg-test-{tag}.sock",
            "nobody_home": f"{self.nobody_home}/.ssh-agent.sock",
            "odd_home": f"{self.odd_home}/agent.sock",
            "own_dir": f"{self.own_dir}/deep/daemon.sock",
        }
        for name, p in self.paths.items():
            kind = socket.SOCK_DGRAM if name.endswith("dgram") else socket.SOCK_STREAM
            self.socks.append(_listen(p, kind))
            self.files.append(p)
        os.chmod(f"{self.own_dir}/deep", 0o755)
        self.abstract = f"@nscg-test-{tag}"
        a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        a.bind("\0" + self.abstract[1:])
        a.listen(8)
        self.socks.append(a)
        # every path socket the host has bound, daemons' included
        self.host_listed = sorted(
            p for p in set(host_socket_paths()) if p not in self.paths.values()
        )

    def world_reachable(self) -> set[str]:
        """The sockets any uid may reach (every directory above them is searchable by all):
        what a control run connects to, whatever ids root inside maps to."""
        private = ("root_home", "run_user_0", "run_user_65534")
        return {p for k, p in self.paths.items() if k not in private}

    def targets(self) -> list[str]:
        return [*self.paths.values(), self.abstract, *self.host_listed]

    def close(self) -> None:
        for s in self.socks:
            s.close()
        for p in self.files:
            with contextlib.suppress(OSError):
                os.unlink(p)
        for d in reversed(self.made_dirs):
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def host_sockets() -> Iterator[HostSockets]:
    need_root()
    h = HostSockets()
    try:
        yield h
    finally:
        h.close()


def _probe_result(stdout: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return doc


def _run(c: nscg.Container, targets: list[str]) -> dict[str, Any]:
    r = c.run([sys.executable, "-c", PROBE, *targets], capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout is not None, r.stderr
    return _probe_result(r.stdout)


def _connected(doc: dict[str, Any]) -> list[str]:
    return sorted(p for p, res in doc["probe"].items() if res == "connected")


# ------------------------------------------------------------------ as root
@pytest.mark.root
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: nscg.Container().with_rootfs(), id="with_rootfs()"),
        pytest.param(lambda: nscg.Container().with_rootfs(nscg.RootFS.host()), id="host"),
        pytest.param(lambda: nscg.Container().with_rootfs(nscg.RootFS.overlay()), id="overlay"),
    ],
)
def test_default_root_reaches_no_host_socket(host_sockets: HostSockets, make: Any) -> None:
    doc = _run(make(), host_sockets.targets())
    assert _connected(doc) == []
    assert doc["listed"] == []  # its own /proc/net/unix: its network namespace only
    # the abstract one is out of reach through the network namespace
    assert doc["probe"][host_sockets.abstract] == "ECONNREFUSED"


@pytest.mark.root
def test_opt_outs_reach_them_as_root(host_sockets: HostSockets) -> None:
    """The control: without the private /run, home hiding and masks, root connects."""
    root = nscg.RootFS.host(run=False, hide_home=False, hide_sockets=False)
    doc = _run(nscg.Container().with_rootfs(root), host_sockets.targets())
    assert set(_connected(doc)) >= host_sockets.world_reachable()


@pytest.mark.root
def test_bind_socket_exposes_exactly_that_socket(host_sockets: HostSockets) -> None:
    p = host_sockets.paths
    root = (
        nscg.RootFS.host()
        .bind_socket(p["var_run"])  # lands in the private /run through /var/run
        .bind_socket(p["var_tmp"])  # a masked one, exposed again
        .bind_socket(os.path.dirname(p["own_dir"]))  # a directory of sockets
    )
    doc = _run(nscg.Container().with_rootfs(root), host_sockets.targets())
    assert _connected(doc) == sorted([p["var_run"], p["var_tmp"], p["own_dir"]])


@pytest.mark.root
def test_cli_default_reaches_no_host_socket(host_sockets: HostSockets) -> None:
    argv = [sys.executable, "-m", "nscg", "run", "--"]
    r = subprocess.run(
        [*argv, sys.executable, "-c", PROBE, *host_sockets.targets()],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode()
    assert _connected(_probe_result(r.stdout)) == []
    one = host_sockets.paths["var_tmp"]
    r = subprocess.run(
        [
            *argv[:-1],
            "--bind-socket",
            one,
            "--",
            sys.executable,
            "-c",
            PROBE,
            *host_sockets.targets(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode()
    assert _connected(_probe_result(r.stdout)) == [one]


@pytest.mark.root
def test_pytest_fixture_preset_reaches_no_host_socket(
    host_sockets: HostSockets, tmp_path: Path
) -> None:
    from nscg.pytest_plugin import preset

    doc = _run(preset(tmp_path), host_sockets.targets())
    assert _connected(doc) == []


# ------------------------------------------------------------------ rootless
ROOTLESS = """
import json, os, subprocess, sys
import nscg
probe, targets, odd_home = {probe!r}, {targets!r}, {odd_home!r}
os.environ["HOME"] = odd_home  # a home outside /home: hide_home covers it too
def run(c):
    r = c.run([sys.executable, "-c", probe, *targets], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout.decode().strip().splitlines()[-1])
out = {{}}
out["default"] = run(nscg.Container().with_rootfs())
out["overlay"] = run(nscg.Container().with_rootfs(nscg.RootFS.overlay()))
out["control"] = run(nscg.Container().with_rootfs(
    nscg.RootFS.host(run=False, hide_home=False, hide_sockets=False)))
r = subprocess.run([sys.executable, "-m", "nscg", "run", "--", sys.executable, "-c", probe,
                    *targets], capture_output=True, timeout=120)
assert r.returncode == 0, r.stderr.decode()
out["cli"] = json.loads(r.stdout.decode().strip().splitlines()[-1])
print(json.dumps(out))
"""


@pytest.mark.rootless
def test_rootless_default_reaches_no_host_socket(host_sockets: HostSockets) -> None:
    targets = host_sockets.targets()
    out = run_as_nobody(
        ROOTLESS.format(probe=PROBE, targets=targets, odd_home=host_sockets.odd_home),
        timeout=240,
    )
    for name in ("default", "overlay", "cli"):
        assert _connected(out[name]) == [], name
        assert out[name]["listed"] == [], name
    # the control: uid 65534 reaches every socket it may traverse to (not /root's)
    reachable = host_sockets.world_reachable() | {host_sockets.paths["run_user_65534"]}
    assert set(_connected(out["control"])) >= reachable


# ------------------------------------------------------------------ secrets
@pytest.fixture
def secrets() -> Iterator[dict[str, str]]:
    need_root()
    tag = uuid.uuid4().hex[:10]
    home = f"/home/nscg-test-{tag}"
    os.makedirs(f"{home}/.ssh")
    os.makedirs(f"{home}/project")
    files = {
        "root": f"/root/.nscg-test-{tag}-token",
        "nobody": f"{home}/.ssh/id_ed25519",
        "project": f"{home}/project/README",
    }
    for f in files.values():
        Path(f).write_text("secret\n")
        os.chmod(f, 0o644)
    for d, _dirs, names in os.walk(home):
        os.chown(d, 65534, 65534)
        for n in names:  # readable by all: what counts here is whether the file is seen
            os.chown(os.path.join(d, n), 65534, 65534)
            os.chmod(os.path.join(d, n), 0o644)
    try:
        yield {**files, "home": home}
    finally:
        shutil.rmtree(home, ignore_errors=True)
        os.unlink(files["root"])


CAT = 'for f in "$@"; do if cat "$f" >/dev/null 2>&1; then echo "$f"; fi; done'


@pytest.mark.root
def test_home_directories_are_hidden_by_default(secrets: dict[str, str]) -> None:
    argv = ["sh", "-c", CAT, "sh", secrets["root"], secrets["nobody"]]
    r = nscg.Container().with_rootfs().run(argv, capture_output=True)
    assert r.stdout == b""
    shown = nscg.RootFS.host(hide_home=False)
    r = nscg.Container().with_rootfs(shown).run(argv, capture_output=True)
    # /root itself is 0700: whether root inside may enter it depends on its id mapping
    assert secrets["nobody"] in (r.stdout or b"").decode().split()


ROOTLESS_HOME = """
import json, os, subprocess, sys
import nscg
files, home = {files!r}, {home!r}
os.environ["HOME"] = home
cat = {cat!r}
argv = ["sh", "-c", cat, "sh", *files]
def seen(c):
    return c.run(argv, capture_output=True).stdout.decode().split()
project = os.path.join(home, "project")
out = {{
    "default": seen(nscg.Container().with_rootfs()),
    "shown": seen(nscg.Container().with_rootfs(nscg.RootFS.host(hide_home=False))),
    "project": seen(nscg.Container().with_rootfs(nscg.RootFS.host().ro_bind(project))),
}}
r = subprocess.run([sys.executable, "-m", "nscg", "run", "--", *argv], capture_output=True)
out["cli"] = r.stdout.decode().split()
r = subprocess.run([sys.executable, "-m", "nscg", "run", "--show-home", "--", *argv],
                   capture_output=True)
out["cli_shown"] = r.stdout.decode().split()
print(json.dumps(out))
"""


@pytest.mark.rootless
def test_rootless_home_is_hidden_and_a_bound_project_stays(secrets: dict[str, str]) -> None:
    files = [secrets["nobody"], secrets["project"]]
    out = run_as_nobody(ROOTLESS_HOME.format(files=files, home=secrets["home"], cat=CAT))
    assert out["default"] == [] and out["cli"] == []
    assert out["shown"] == files and out["cli_shown"] == files
    assert out["project"] == [secrets["project"]]  # the bind goes on top of the hidden home


# ------------------------------------------------------------------ the scan itself
def test_socket_masks_keep_only_sockets_the_root_alone_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan-time decision, on real socket files and a /proc/net/unix of our making.

    Masked: a listed path that is a socket now and that only the root bind
    shows (a name with a space included). Left alone: a path a later bind
    shows (the caller's choice), a listed path that is a directory (a host
    user could list "/usr/bin" from a namespace of its own), a stale path,
    abstract and relative names.
    """
    from nscg import rootfs

    shown = tmp_path / "shown"
    shown.mkdir()
    socks = [_listen(str(p)) for p in (tmp_path / "a.sock", tmp_path / "x y.sock")]
    socks.append(_listen(str(shown / "b.sock")))
    stale = tmp_path / "stale.sock"
    socks.append(_listen(str(stale)))
    stale.unlink()
    (tmp_path / "dir").mkdir()
    listed = [
        tmp_path / "a.sock",
        tmp_path / "x y.sock",
        shown / "b.sock",
        stale,
        tmp_path / "dir",
        "@abstract",
        "relative.sock",
    ]
    fake = tmp_path / "unix"
    rows = ["Num       RefCount Protocol Flags    Type St Inode Path"]
    rows += [
        f"0000000000000000: 00000002 00000000 00010000 0001 01 {i} {p}"
        for i, p in enumerate(listed)
    ]
    rows.append("0000000000000000: 00000003 00000000 00000000 0001 03 99")  # unbound
    fake.write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(rootfs, "PROC_NET_UNIX", str(fake))
    try:
        root = nscg.RootFS([rootfs.Bind("/", "/")], hide_sockets=True).ro_bind(shown)
        assert root.socket_masks() == (str(tmp_path / "a.sock"), str(tmp_path / "x y.sock"))
        masked = root.add_socket_masks().ops[len(root.ops) :]
        assert masked == tuple(rootfs.Mask(p) for p in root.socket_masks())
        assert root.with_hidden_sockets(False).socket_masks() == ()
        # a tmpfs over the directory hides them all without a mask
        covered = nscg.RootFS([rootfs.Bind("/", "/")], hide_sockets=True).tmpfs(str(tmp_path))
        assert covered.socket_masks() == ()
    finally:
        for s in socks:
            s.close()


@pytest.mark.root
def test_a_socket_made_after_the_first_spawn_is_masked_too(tmp_path: Path) -> None:
    """One Container spawned again: the host's sockets are read at every spawn.

    The spawn plan is prepared once per Container; the socket masks were part
    of it, so a socket that appeared after a Container's first spawn (a daemon
    started later, a long-lived pytest fixture) was reachable from the next ones.
    """
    need_root()
    c = nscg.Container()
    assert c.run(["true"]).returncode == 0  # the plan is prepared now
    path = f"/var/tmp/nscg-late-{uuid.uuid4().hex[:12]}.sock"
    s = _listen(path)
    try:
        doc = _run(c, [path])
        assert _connected(doc) == [], doc
    finally:
        s.close()
        os.unlink(path)
    assert _connected(_run(c, [path])) == []  # and gone again: nothing stale breaks


@pytest.mark.root
def test_host_sockets_coming_and_going_never_fail_a_spawn() -> None:
    """A socket listed at the scan may be gone when its mask is attached: skipped, not a
    SpawnError (move_mount onto an unlinked file is ENOENT). Before the fix about 1 spawn
    in 270 failed with two threads churning 50 sockets in /var/tmp; this run is a guard,
    not a proof."""
    need_root()
    import threading

    tag = uuid.uuid4().hex[:8]
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            p = f"/var/tmp/nscg-test-churn-{tag}-{i % 50}.sock"
            i += 1
            s = socket.socket(socket.AF_UNIX)
            with contextlib.suppress(OSError):
                s.bind(p)
                s.listen(1)
            s.close()
            with contextlib.suppress(OSError):
                os.unlink(p)

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        c = nscg.Container().with_rootfs(nscg.RootFS.host())
        for _ in range(300):
            assert c.run(["/bin/true"]).returncode == 0
    finally:
        stop.set()
        for t in threads:
            t.join()

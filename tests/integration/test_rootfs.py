"""RootFS on a real kernel: as root and as uid 65534 (the module's leak fixture
checks that the host's mount table is unchanged after every module)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nscg
from nscg import Container, RootFS
from tests.conftest import run_as_nobody, static_busybox

#: prints what the sandbox sees, as JSON
PROBE = r"""
import errno, json, os
out = {"ls_dev": sorted(os.listdir("/dev")),
       "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
       "cwd": os.getcwd(), "write": {}, "masked": {}}
for d in ("/", "/usr", "/etc", "/var", "/tmp", "/dev/shm"):
    try:
        with open(os.path.join(d, ".nscg-probe"), "w") as f:
            f.write("x")
        os.unlink(os.path.join(d, ".nscg-probe"))
        out["write"][d] = 0
    except OSError as e:
        out["write"][d] = errno.errorcode[e.errno]
for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"):
    try:
        if os.path.isdir(p):
            out["masked"][p] = len(os.listdir(p))
        else:
            with open(p, "rb") as f:
                out["masked"][p] = len(f.read(16))
    except OSError as e:
        out["masked"][p] = errno.errorcode[e.errno]
try:
    open("/proc/sys/kernel/hostname", "w").write("x")
    out["proc_sys"] = 0
except OSError as e:
    out["proc_sys"] = errno.errorcode[e.errno]
print(json.dumps(out))
"""

DEV = [
    "fd",
    "full",
    "null",
    "ptmx",
    "pts",
    "random",
    "shm",
    "stderr",
    "stdin",
    "stdout",
    "tty",
    "urandom",
    "zero",
]


def _check_host_probe(out: dict[str, Any], cwd: str = "/") -> None:
    assert out["ls_dev"] == DEV
    assert out["pids"] == [1, 2]  # nscg-init and the probe
    assert out["cwd"] == cwd  # the caller's (the root has it: see test_cwd.py)
    w = out["write"]
    assert w["/"] == w["/usr"] == w["/etc"] == w["/var"] == "EROFS"
    assert w["/tmp"] == 0 and w["/dev/shm"] == 0
    for p, v in out["masked"].items():
        assert v == 0 or isinstance(v, str), (p, v)
    assert out["proc_sys"] in ("EROFS", "EACCES")


def test_host_root_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/usr")
    r = Container().with_rootfs().run(["python3", "-c", PROBE], capture_output=True, check=True)
    _check_host_probe(json.loads(r.stdout or b""), cwd="/usr")


@pytest.mark.rootless
def test_host_root_rootless() -> None:
    out = run_as_nobody(
        f"""
        import json, nscg
        r = nscg.Container().with_rootfs().run(["python3", "-c", {PROBE!r}],
                                              capture_output=True, check=True)
        print((r.stdout or b"").decode().strip())
        """
    )
    _check_host_probe(out)


@pytest.fixture(scope="module")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bb = static_busybox()
    root = tmp_path_factory.mktemp("nscg-busybox")
    for d in ("bin", "proc", "dev", "tmp", "etc"):
        (root / d).mkdir()
    shutil.copy2(bb, root / "bin/busybox")
    for applet in ("sh", "ls", "cat", "echo", "mount"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc/marker").write_text("busybox root\n")
    os.chmod(root, 0o755)
    return root


def test_busybox_root(busybox_root: Path) -> None:
    c = Container().with_rootfs(RootFS.from_directory(busybox_root))
    r = c.run(
        ["/bin/sh", "-c", "ls /; cat /proc/1/cmdline; echo; cat /etc/marker"],
        capture_output=True,
        check=True,
    )
    lines = (r.stdout or b"").decode().split("\n")
    assert sorted((r.stdout or b"").decode().split("nscg-init")[0].split()) == [
        "bin",
        "dev",
        "etc",
        "proc",
        "tmp",
    ]
    assert "nscg-init" in (r.stdout or b"").decode()
    assert "busybox root" in lines


def test_symlink_in_root_cannot_lead_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/inside").write_text("in")
    # an absolute and a relative link that would leave the root if followed on the host
    (root / "abs").symlink_to("/etc")
    (root / "rel").symlink_to("../../../../../../../../etc")
    tmp_path.chmod(0o755)  # bound read-only below: readable by the sandbox's root
    spec = (
        RootFS.from_directory(root, readonly=False, proc=False, dev=False)
        .tmpfs("/abs")
        .ro_bind(str(tmp_path), "/rel/bound")
    )
    spec = spec.ro_bind(static_busybox(), "/busybox")
    c = Container().without_namespaces("pid").with_init(False).with_rootfs(spec)
    r = c.run(
        ["/busybox", "sh", "-c", "/busybox ls /etc; /busybox ls /etc/bound"],
        capture_output=True,
        check=True,
    )
    out = (r.stdout or b"").decode().split()
    # the tmpfs landed on the root's own /etc (hiding 'inside'), not on the host's /etc
    assert "inside" not in out and "bound" in out
    assert "root" in out  # /etc/bound is tmp_path: the bind landed inside the root
    assert os.path.exists("/etc/passwd")  # the host's /etc is untouched
    shutil.rmtree(root / "etc")  # the mount points made in the (rw) root


@pytest.fixture()
def playground() -> Iterator[Path]:
    d = Path("/tmp") / f"nscg-ovl-{os.getpid()}"
    shutil.rmtree(d, ignore_errors=True)
    for sub in ("a", "b/c", "gone"):
        (d / sub).mkdir(parents=True)
    (d / "a/mod").write_text("old")
    (d / "b/c/del").write_text("x")
    (d / "gone/f").write_text("x")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _overlay_script(d: Path) -> str:
    return (
        f"echo new > {d}/a/new && echo more >> {d}/a/mod && rm {d}/b/c/del && "
        f"rm -r {d}/gone && mkdir {d}/b/newdir && echo x > {d}/b/newdir/f"
    )


def _expected(d: Path) -> dict[str, list[str]]:
    return {
        "added": sorted([f"{d}/a/new", f"{d}/b/newdir", f"{d}/b/newdir/f"]),
        "modified": [f"{d}/a/mod"],
        "deleted": sorted([f"{d}/b/c/del", f"{d}/gone"]),
    }


def _host_untouched(d: Path) -> None:
    assert (d / "a/mod").read_text() == "old"
    assert sorted(os.listdir(d / "a")) == ["mod"]
    assert (d / "b/c/del").exists() and (d / "gone/f").exists()
    assert not (d / "b/newdir").exists()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith("nscg-overlay-")]


def test_overlay_change_report_as_root(playground: Path) -> None:
    # root inside is an unprivileged host range: the files it changes are its own
    rr = nscg.namespaces.root_range()
    subprocess.run(["chown", "-R", f"{rr.uid}:{rr.gid}", str(playground)], check=True)
    r = (
        Container()
        .with_rootfs(RootFS.overlay())
        .run(["sh", "-c", _overlay_script(playground)], capture_output=True, check=True)
    )
    ch = r.changes
    assert isinstance(ch, nscg.Changes)
    got = {
        "added": sorted(ch.added),
        "modified": sorted(ch.modified),
        "deleted": sorted(ch.deleted),
    }
    assert got == _expected(playground)
    _host_untouched(playground)


@pytest.mark.rootless
def test_overlay_change_report_rootless(playground: Path) -> None:
    subprocess.run(["chown", "-R", "65534:65534", str(playground)], check=True)
    got = run_as_nobody(
        f"""
        import json, nscg
        r = nscg.Container().with_rootfs(nscg.RootFS.overlay()).run(
            ["sh", "-c", {_overlay_script(playground)!r}], capture_output=True)
        ch = r.changes
        print(json.dumps({{"rc": r.returncode, "err": r.stderr.decode(),
                          "added": sorted(ch.added), "modified": sorted(ch.modified),
                          "deleted": sorted(ch.deleted)}}))
        """
    )
    assert got.pop("rc") == 0, got
    got.pop("err")
    assert got == _expected(playground)
    _host_untouched(playground)


def test_overlay_persistent_upper(tmp_path: Path, playground: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    c = (
        Container()
        .without_namespaces("user")
        .with_rootfs(RootFS.overlay([str(playground)], upper=str(upper), proc=False, dev=False))
    )
    c = c.with_rootfs(c.rootfs.bind(static_busybox(), "/busybox") if c.rootfs else None)
    r = c.run(["/busybox", "sh", "-c", "echo hi > /a/new"], capture_output=True, check=True)
    # the mount point the plan made for /busybox is in the upper too
    assert r.changes is not None and r.changes.added == {"/a/new", "/busybox"}
    assert (upper / "a/new").read_text() == "hi\n"
    assert [p for p in tmp_path.iterdir() if p.name.startswith("nscg-work-")] == []


def test_own_hostname_resolves_and_resolv_conf_names_no_unreachable_server() -> None:
    c = Container().with_rootfs(RootFS.host()).with_hostname("box-7")
    r = c.run(["sh", "-c", "getent hosts box-7; cat /etc/resolv.conf"], capture_output=True)
    assert r.returncode == 0, r.stderr
    lines = (r.stdout or b"").decode().splitlines()
    assert lines[0].split() == ["127.0.1.1", "box-7"]
    assert not any(line.startswith("nameserver") for line in lines)
    r = c.run(["sh", "-c", "echo x >> /etc/hosts"], capture_output=True)
    assert r.returncode != 0  # bound read-only (the file is shared by sandboxes)


def test_etc_files_are_removed_when_the_process_exits() -> None:
    code = (
        "import os, nscg\n"
        "nscg.Container().with_rootfs(nscg.RootFS.host()).run(['true'], check=True)\n"
        "print(os.getpid())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    pid = r.stdout.decode().strip()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"nscg-etc-{pid}-")]


def test_entering_a_sandbox_with_its_own_root_lands_in_that_root() -> None:
    script = "echo private > /tmp/marker; sleep 60"
    with Container().with_rootfs(RootFS.host()).spawn(["sh", "-c", script]) as box:
        deadline = time.monotonic() + 10
        r = box.run_inside(["cat", "/tmp/marker"], capture_output=True)
        while r.returncode != 0 and time.monotonic() < deadline:
            r = box.run_inside(["cat", "/tmp/marker"], capture_output=True)
        assert r.stdout == b"private\n", r
        script = "cat /proc/1/comm; ls /proc | grep -c '^[0-9]'; touch /etc/x"
        r = box.run_inside(["sh", "-c", script], capture_output=True)
        comm, count = (r.stdout or b"").split()[:2]
        assert comm == b"nscg-init"  # the sandbox's own /proc
        assert int(count) <= 8  # init, sh, sleep and this command's few
        assert b"Read-only file system" in (r.stderr or b"")
        assert b"Read-only file system" in (r.stderr or b"")
        box.kill()


def test_rootless_entering_a_sandbox_with_its_own_root() -> None:
    out = run_as_nobody(
        """
        import json, time, nscg
        c = nscg.Container().with_rootfs(nscg.RootFS.host())
        with c.spawn(["sh", "-c", "echo mine > /tmp/m; sleep 60"]) as box:
            for _ in range(100):
                r = box.run_inside(["cat", "/tmp/m"], capture_output=True)
                if r.returncode == 0:
                    break
                time.sleep(0.05)
            box.kill()
        print(json.dumps([r.returncode, r.stdout.decode()]))
        """
    )
    assert out == [0, "mine\n"]


def test_undecodable_hostname_is_a_spec_error() -> None:
    """A hostname with an undecodable byte (a surrogate escape) is refused as a SpecError.

    With a root filesystem by default, the hostname goes into the sandbox's
    /etc/hosts; encoding it strictly raised UnicodeEncodeError (found by the
    hypothesis suite). Host names are RFC 1123 names now (issue 15): refused
    when the spec is built, and a valid one reaches /etc/hosts.
    """
    with pytest.raises(nscg.SpecError, match="RFC 1123"):
        Container().with_hostname("h\udcff")
    r = (
        Container()
        .with_hostname("h-1.example")
        .run(["sh", "-c", "hostname; tail -n 1 /etc/hosts"], capture_output=True, check=True)
    )
    assert (r.stdout or b"").split(b"\n")[:2] == [b"h-1.example", b"127.0.1.1\th-1.example"]

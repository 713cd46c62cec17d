"""``nscg-oci run`` of busybox bundles against the real kernel, as root and rootless.

Each test builds a bundle whose root holds only a static busybox, runs a probe
script through the command line (``python -m nscg.oci``, the console script's
code) and checks what the process saw from inside. Where runc is installed and
can run on this host, the same bundle's output is compared with runc's.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nscg.oci.cli import default_spec
from tests.conftest import need_root, run_as_nobody, static_busybox

PROBE = r"""
id -u; id -g; id -G; hostname; pwd; echo "$FOO"; ulimit -n
grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status
grep -E '^NoNewPrivs' /proc/self/status
echo pid=$$
awk '{print $5, $6}' /proc/self/mountinfo
"""


@pytest.fixture
def bundle() -> Iterator[Path]:
    """A bundle (readable by uid 65534) whose root holds only a static busybox."""
    bb = static_busybox()
    d = Path(tempfile.mkdtemp(prefix="nscg-oci-", dir="/var/tmp"))
    d.chmod(0o755)
    root = d / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(bb, root / "bin" / "busybox")
    for name in ("sh", "id", "hostname", "pwd", "grep", "awk", "sort", "sleep", "cat", "true"):
        (root / "bin" / name).symlink_to("busybox")
    for sub in ("proc", "dev", "sys", "tmp", "work"):
        (root / sub).mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _write(bundle: Path, doc: dict[str, Any]) -> None:
    (bundle / "config.json").write_text(json.dumps(doc))


def _spec(args: list[str], *, rootless: bool = False) -> dict[str, Any]:
    doc = default_spec(rootless)
    doc["process"]["args"] = args
    doc["process"]["env"] += ["FOO=bar baz"]
    doc["process"]["cwd"] = "/work"
    doc["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 200, "hard": 300}]
    doc["hostname"] = "ocibox"
    return doc


def _oci(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nscg.oci", "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _fields(out: str) -> dict[str, str]:
    lines = out.splitlines()
    keys = ["uid", "gid", "groups", "hostname", "cwd", "foo", "nofile"]
    got = dict(zip(keys, lines[:7], strict=True))
    for line in lines[7:]:
        if ":" in line and line.startswith(("Cap", "NoNew")):
            k, v = line.split(":", 1)
            got[k] = v.strip()
        elif line.startswith("pid="):
            got["pid"] = line[4:]
    after = next((i for i, x in enumerate(lines) if x.startswith("pid=")), len(lines))
    got["mounts"] = "\n".join(lines[after + 1 :])
    return got


def test_run_as_root(bundle: Path, tmp_path: Path) -> None:
    need_root()
    doc = _spec(["sh", "-c", PROBE + "exit 3"])
    doc["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5, 7]}
    doc["process"]["capabilities"]["inheritable"] = ["CAP_KILL"]
    doc["process"]["capabilities"]["ambient"] = ["CAP_KILL"]
    _write(bundle, doc)
    pid_file = tmp_path / "pid"
    r = _oci(tmp_path / "state", "run", "-b", str(bundle), "--pid-file", str(pid_file), "c1")
    assert r.returncode == 3, r
    got = _fields(r.stdout)
    assert (got["uid"], got["gid"], got["groups"]) == ("1000", "1000", "1000 5 7")
    assert (got["hostname"], got["cwd"], got["foo"], got["nofile"]) == (
        "ocibox",
        "/work",
        "bar baz",
        "200",
    )
    # CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE; KILL ambient (hence permitted+effective)
    assert got["CapBnd"] == "0000000020000420"
    assert got["CapAmb"] == got["CapInh"] == "0000000000000020"
    assert got["CapEff"] == got["CapPrm"] == "0000000000000020"
    assert got["NoNewPrivs"] == "1"
    assert got["pid"] == "1"  # the process is the container's pid 1
    mounts = got["mounts"].splitlines()
    assert "/ ro,nodev,relatime" in mounts  # root.readonly, device rules: nodev
    assert "/proc rw,nosuid,nodev,noexec,relatime" in mounts
    assert "/sys ro,nosuid,nodev,noexec,relatime" in mounts
    assert any(m.startswith("/proc/keys ") for m in mounts)  # masked
    assert any(m.startswith("/proc/sys ro,") for m in mounts)
    assert pid_file.read_text().isdigit()  # the pid, no newline
    assert not (tmp_path / "state" / "c1").exists()  # run removes its state at the end


def test_exit_status_of_a_signal_and_errors(bundle: Path, tmp_path: Path) -> None:
    need_root()
    # (pid 1 of a pid namespace cannot kill itself: no pid namespace, and so no /proc)
    doc = _spec(["sh", "-c", "kill -9 $$"])
    doc["linux"]["namespaces"] = [{"type": t} for t in ("mount", "uts", "ipc")]
    doc["mounts"] = [m for m in doc["mounts"] if m["type"] != "proc"]
    doc["linux"]["maskedPaths"] = doc["linux"]["readonlyPaths"] = []
    _write(bundle, doc)
    assert _oci(tmp_path, "run", "-b", str(bundle), "c2").returncode == 128 + 9
    _write(bundle, _spec(["/bin/missing"]))
    r = _oci(tmp_path, "run", "-b", str(bundle), "c2")
    assert r.returncode == 1
    assert "level=error" in r.stderr
    assert (
        'nscg-oci run failed: unable to start container process: exec: \\"/bin/missing\\": '
        "stat /bin/missing: no such file or directory"
    ) in r.stderr
    _write(bundle, _spec(["missing"]))
    r = _oci(tmp_path, "run", "-b", str(bundle), "c2")
    assert 'exec: \\"missing\\": executable file not found in $PATH' in r.stderr
    doc = _spec(["true"])
    doc["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    _write(bundle, doc)
    r = _oci(
        tmp_path,
        "--log",
        str(tmp_path / "log"),
        "--log-format",
        "json",
        "run",
        "-b",
        str(bundle),
        "c2",
    )
    assert r.returncode == 1
    assert "linux.sysctl: nscg has no sysctl support yet" in r.stderr
    line = json.loads((tmp_path / "log").read_text().splitlines()[-1])
    assert line["level"] == "error" and "linux.sysctl" in line["msg"]
    doc = _spec(["true"])
    doc["linux"]["namespaces"][1] = {"type": "network", "path": "/run/netns/missing"}
    _write(bundle, doc)
    r = _oci(tmp_path, "run", "-b", str(bundle), "c2")
    assert r.returncode == 1
    assert "linux.namespaces: open: [Errno 2] No such file or directory" in r.stderr
    # --debug logs what was read and not applied
    r = _oci(tmp_path, "--debug", "run", "-b", str(bundle), "c2")
    assert "level=debug" in r.stderr and "mounts[1].options[1]: ignored" in r.stderr
    r = _oci(tmp_path, "run", "-d", "-b", str(bundle), "c2")
    assert r.returncode == 1 and "--detach is not supported yet" in r.stderr
    assert _oci(tmp_path, "create", "c2").returncode == 1
    assert list(tmp_path.iterdir()) == [tmp_path / "log"]  # no state left behind


def test_state_list_and_delete_while_running(bundle: Path, tmp_path: Path) -> None:
    need_root()
    _write(bundle, _spec(["sleep", "60"]))
    state = tmp_path / "state"
    run = subprocess.Popen(
        [sys.executable, "-m", "nscg.oci", "--root", str(state), "run", "-b", str(bundle), "c3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not (state / "c3" / "state.json").exists():
            assert time.monotonic() < deadline and run.poll() is None, run.stderr
            time.sleep(0.02)
        s = json.loads(_oci(state, "state", "c3").stdout)
        assert (s["id"], s["status"], s["bundle"]) == ("c3", "running", str(bundle))
        assert s["pid"] > 0 and s["rootfs"] == str(bundle / "rootfs")
        with open(f"/proc/{s['pid']}/cmdline", "rb") as f:
            assert f.read() == b"sleep\x0060\x00"
        assert _oci(state, "list", "-q").stdout == "c3\n"
        table = _oci(state, "list").stdout.splitlines()
        assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
        assert table[1].split()[:3] == ["c3", str(s["pid"]), "running"]
        assert json.loads(_oci(state, "list", "--format", "json").stdout)[0]["id"] == "c3"
        again = _oci(state, "run", "-b", str(bundle), "c3")
        assert "container with given ID already exists" in again.stderr
        r = _oci(state, "delete", "c3")
        assert r.returncode == 1 and "that is not stopped: running" in r.stderr
        assert _oci(state, "delete", "--force", "c3").returncode == 0
        assert run.wait(timeout=30) == 128 + 9
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        run.stdout.close()  # type: ignore[union-attr]  # PIPE
        run.stderr.close()  # type: ignore[union-attr]  # PIPE
    r = _oci(state, "state", "c3")
    assert r.returncode == 1 and 'msg="container does not exist"' in r.stderr
    assert _oci(state, "list", "--format", "json").stdout == "null\n"


def test_signals_are_forwarded(bundle: Path, tmp_path: Path) -> None:
    need_root()
    _write(bundle, _spec(["sh", "-c", "trap 'exit 42' TERM; while :; do sleep 0.05; done"]))
    pid_file = tmp_path / "pid"
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nscg.oci",
            "--root",
            str(tmp_path / "s"),
            "run",
            "-b",
            str(bundle),
            "--pid-file",
            str(pid_file),
            "c4",
        ],
    )
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)  # (the trap is set)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=30) == 42
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def test_spec_and_features(tmp_path: Path) -> None:
    r = _oci(tmp_path, "spec", "-b", str(tmp_path))
    assert r.returncode == 0, r
    doc = json.loads((tmp_path / "config.json").read_text())
    assert doc == default_spec()
    r = _oci(tmp_path, "spec", "-b", str(tmp_path))
    assert r.returncode == 1 and "File config.json exists. Remove it first." in r.stderr
    f = json.loads(_oci(tmp_path, "features").stdout)
    assert f["ociVersionMax"] == "1.2.0" and "CAP_SYS_ADMIN" in f["linux"]["capabilities"]
    assert "shared" not in f["mountOptions"] and f["hooks"] == []
    v = _oci(tmp_path, "--version").stdout
    assert v.startswith("nscg-oci version ")


def test_run_rootless(bundle: Path) -> None:
    doc = _spec(["sh", "-c", PROBE], rootless=True)
    doc["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 65534, "size": 1}]
    doc["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 65534, "size": 1}]
    doc["linux"]["resources"] = {}
    _write(bundle, doc)
    out = run_as_nobody(
        f"""
        import json, subprocess, sys, tempfile
        state = tempfile.mkdtemp()
        r = subprocess.run([sys.executable, "-m", "nscg.oci", "--root", state, "run", "-b",
                            {str(bundle)!r}, "r1"], capture_output=True, text=True)
        print(json.dumps([r.returncode, r.stdout, r.stderr, __import__("os").getuid()]))
        """
    )
    code, stdout, stderr, uid = out
    assert uid == 65534
    assert code == 0, stderr
    got = _fields(stdout)
    assert (got["uid"], got["gid"], got["hostname"], got["cwd"]) == ("0", "0", "ocibox", "/work")
    assert got["CapEff"] == "0000000020000420"
    assert got["nofile"] == "200"


def _runc_can_run(bundle: Path, tmp_path: Path) -> str | None:
    if shutil.which("runc") is None:
        return "runc is not installed"
    _write(bundle, _spec(["true"]))
    r = subprocess.run(
        ["runc", "--root", str(tmp_path / "runc"), "run", "-b", str(bundle), "probe"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return None if r.returncode == 0 else f"runc cannot run here: {r.stderr.strip()}"


def test_same_bundle_same_view_as_runc(bundle: Path, tmp_path: Path) -> None:
    need_root()
    why = _runc_can_run(bundle, tmp_path)
    if why:
        pytest.skip(why)
    doc = _spec(["sh", "-c", PROBE])
    doc["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5]}
    _write(bundle, doc)
    theirs = subprocess.run(
        ["runc", "--root", str(tmp_path / "runc"), "run", "-b", str(bundle), "cmp"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ours = _oci(tmp_path / "nscg", "run", "-b", str(bundle), "cmp")
    assert theirs.returncode == ours.returncode == 0, (theirs, ours)
    a, b = _fields(theirs.stdout), _fields(ours.stdout)
    for key in (
        "uid",
        "gid",
        "groups",
        "hostname",
        "cwd",
        "foo",
        "nofile",
        "pid",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
    ):
        assert a[key] == b[key], key
    # the same mount points (but the cgroup v1 hierarchies runc mounts on a hybrid host:
    # nscg mounts the cgroup2 view), each at least as restricted as runc's: nscg mounts
    # proc, /dev and the root (device rules deny all: nodev) with more flags than runc
    ma, mb = (_mount_flags(x["mounts"]) for x in (a, b))
    assert {m for m in ma if not m.startswith("/sys/fs/cgroup/")} <= set(mb)
    # (a masked file is /dev/null bound over it: nosuid, which runc's bind inherits from
    # its /dev, means nothing on a device file)
    files = {p for p in doc["linux"]["maskedPaths"] if "ro" not in ma.get(p, {"ro"})}
    for point, flags in ma.items():
        if point in mb and point not in files:
            assert flags & _SECURE <= mb[point], point


_SECURE = frozenset({"ro", "nosuid", "nodev", "noexec"})


def _mount_flags(text: str) -> dict[str, frozenset[str]]:
    """Mount point -> flags of the top mount there (mountinfo lists the later ones after)."""
    out = {}
    for line in text.splitlines():
        point, flags = line.split(" ", 1)
        out[point] = frozenset(flags.split(","))
    return out

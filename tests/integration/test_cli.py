"""The nscg command line: run, check, features."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs; test-only
import pytest

import nscg as api
from nscg.cgroups import CgroupMode, discover


def nscg(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "nscg", *args], capture_output=True, timeout=120, check=False
    )


def nscg_json(command: str, *args: str) -> tuple[subprocess.CompletedProcess[bytes], Any]:
    """Run ``nscg COMMAND --json fd:N ARGS`` (N: a temporary file); its result and document."""
    with tempfile.TemporaryFile() as f:
        fd = f.fileno()
        r = subprocess.run(
            [sys.executable, "-m", "nscg", command, "--json", f"fd:{fd}", *args],
            pass_fds=[fd], capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        f.seek(0)
        text = f.read()
    return r, valid(json.loads(text))


def test_run_shows_isolation_and_passes_the_status_through() -> None:
    r = nscg("run", "--hostname", "cli", "--", "sh", "-c", "hostname; echo $$; exit 3")
    assert r.returncode == 3
    assert r.stdout.split() == [b"cli", b"2"]
    r = nscg("run", "--", "sh", "-c", "kill -TERM $$; sleep 1")
    assert r.returncode == 128 + 15


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--bogus", "--", "true"],
        ["run"],
        ["nope"],
        ["run", "--timeout", "x", "--", "true"],
        ["run", "--timeout", "-1", "--", "true"],
        ["run", "--network", "bogus", "--", "true"],
        ["run", "--memory", "lots", "--", "true"],
        ["run", "--limit", "nonsense=1", "--", "true"],
        ["run", "--limit", "noequals", "--", "true"],
        ["run", "--cap-add", "NOT_A_CAP", "--", "true"],
        ["run", "--seccomp", "/nonexistent/profile.json", "--", "true"],
        ["run", "--root", "/nonexistent/root", "--", "true"],
        ["run", "--root", "host", "--keep-upper", "/tmp/x", "--", "true"],
        ["run", "--bind", "/nonexistent/src", "/mnt", "--", "true"],
        ["run", "--uid-map", "0:0", "--", "true"],
        ["run", "--rlimit", "nofile=many", "--", "true"],
        ["run", "--rlimit", "bogus=1", "--", "true"],
        ["run", "--json", "fd:999", "--", "true"],
        ["run", "--json", "-", "--", "true"],
        ["run", "--join", "999999999", "all", "--", "true"],
        ["run", "--unshare", "none", "--tmpfs", "/mnt", "--", "true"],
        ["run", "--share-net", "--network", "none", "--", "true"],
        ["run", "--bind-socket", "/nonexistent/agent.sock", "--", "true"],
        ["run", "--bind-socket", "/etc/hostname", "--", "true"],
        ["run", "--root", "none", "--bind-socket", "/run", "--", "true"],
        ["run", "--root", "none", "--show-home", "--", "true"],
        ["run", "--root", "/", "--show-home", "--", "true"],
        ["exec", "--", "true"],
        ["exec", "--pid", "999999999", "--", "true"],
    ],
)
def test_bad_options_exit_2_with_one_line(argv: list[str]) -> None:
    r = nscg(*argv)
    assert r.returncode == 2
    assert len(r.stderr.decode().strip().splitlines()) == 1, r.stderr
    assert b"Traceback" not in r.stderr


def test_missing_program_is_one_line() -> None:
    r = nscg("run", "--", "no-such-program-xyz")
    assert r.returncode != 0
    assert b"Traceback" not in r.stderr and b"no-such-program-xyz" in r.stderr


def test_check_json_reports_this_hosts_cgroups() -> None:
    r = nscg("check", "--json")
    assert r.returncode == 0, r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    mode = checks["cgroup v2 mode"]
    rep = discover()
    assert mode["detail"].startswith(rep.mode.value)
    if rep.mode == CgroupMode.HYBRID:
        assert mode["ok"] is False
        for ctl in rep.v1_controllers:
            assert ctl in mode["detail"]
    assert (
        checks[
            "namespace net"
            if "namespace net" in checks
            else "namespace net (with a user namespace)"
        ]["ok"]
        is True
    )
    assert checks["seccomp filters"]["ok"] is True


def test_check_table() -> None:
    r = nscg("check")
    assert r.returncode == 0
    assert b"cgroup v2 mode" in r.stdout and b"clone3" in r.stdout


SCHEMA = json.loads(
    resources.files("nscg").joinpath("_data/result.schema.json").read_text(encoding="utf-8")
)


def valid(doc: dict[str, Any]) -> dict[str, Any]:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)
    return doc


def test_the_default_root_is_the_host_read_only() -> None:
    r = nscg("run", "--", "sh", "-c", "test -d /usr/bin && ! touch /etc/nscg-x 2>/dev/null")
    assert r.returncode == 0, r.stderr


def test_json_validates_and_reports_the_exit_and_leaves_stdout_to_the_command() -> None:
    r, doc = nscg_json("run", "--", "sh", "-c", "printf 'no newline'; exit 7")
    assert r.returncode == 7
    assert r.stdout == b"no newline" and r.stderr == b""
    assert doc["status"] == 7 and doc["exit_code"] == 7 and doc["signal"] is None
    assert doc["usage"]["cpu_user"] >= 0 and doc["wall_time"] > 0 and doc["changes"] is None


def test_json_to_stdout_is_refused_before_anything_runs(tmp_path: Path) -> None:
    r = nscg("run", "--json", "-", "--", "touch", str(tmp_path / "ran"))
    assert r.returncode == 2 and r.stdout == b""
    assert b"--json -: stdout is the command's" in r.stderr and b"fd:" in r.stderr
    assert not (tmp_path / "ran").exists()


def test_json_to_a_file_and_an_fd(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    r = nscg("run", "--json", str(out), "--", "sh", "-c", "kill -KILL $$")
    assert r.returncode == 128 + 9
    doc = valid(json.loads(out.read_text()))
    assert doc["signal"] == 9 and doc["exit_code"] is None and doc["status"] == 137
    rfd, wfd = os.pipe()
    with os.fdopen(rfd, "rb") as reader:
        p = subprocess.run(
            [sys.executable, "-m", "nscg", "run", "--json", f"fd:{wfd}", "--", "true"],
            pass_fds=[wfd], capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        os.close(wfd)
        assert p.returncode == 0, p.stderr
        assert valid(json.loads(reader.read()))["status"] == 0


def test_timeout_kills_the_sandbox_and_exits_124() -> None:
    t0 = time.monotonic()
    r, doc = nscg_json("run", "--timeout", "0.5", "--", "sleep", "30")
    assert r.returncode == 124
    assert time.monotonic() - t0 < 20
    assert doc["timed_out"] is True and doc["signal"] == 9 and doc["status"] == 124
    assert b"timed out" in r.stderr


def test_setup_failure_is_status_125_with_an_error_document() -> None:
    r, doc = nscg_json("run", "--chmod", "0700", "/no-such-dir-xyz", "--", "true")
    assert r.returncode == 125
    assert doc["error"] and "/no-such-dir-xyz" in doc["error"] and doc["usage"] is None
    assert len(r.stderr.decode().strip().splitlines()) == 1


def test_bind_ro_bind_tmpfs_env_cwd_uid(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    os.chown(tmp_path / "w", 1000, 100)  # (as root the bind is idmapped: ids as on the host)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "f").write_text("ro\n")
    script = (
        "echo $FOO; cat /opt/f; touch /opt/x 2>/dev/null || echo ro-refused; "
        "echo w > /mnt/out; touch /srv/t && echo tmpfs-ok; pwd; id -u; id -g"
    )
    r = nscg(
        "run", "--bind", str(tmp_path / "w"), "/mnt", "--ro-bind", str(tmp_path / "r"), "/opt",
        "--perms", "1777", "--tmpfs", "/srv", "--env", "FOO=bar", "--cwd", "/mnt",
        "--uid", "1000", "--gid", "100",
        "--", "sh", "-c", script,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == ["bar", "ro", "ro-refused", "tmpfs-ok", "/mnt", "1000",
                                         "100"]  # fmt: skip
    assert (tmp_path / "w" / "out").read_text() == "w\n"


def test_network_none_and_host() -> None:
    ifaces = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"
    r = nscg("run", "--", "sh", "-c", ifaces)
    assert r.stdout.split() == [b"lo"]
    for opt in (["--network", "host"], ["--share-net"]):
        r = nscg("run", *opt, "--", "sh", "-c", ifaces)
        assert len(r.stdout.split()) > 1 or Path("/proc/net/dev").read_text().count(":") == 1


def test_cap_add_and_cap_drop() -> None:
    eff = "grep CapEff /proc/self/status"
    r = nscg("run", "--", "sh", "-c", eff)
    assert r.stdout.split()[1] == b"0000000000000000"
    r = nscg("run", "--cap-add", "NET_RAW", "--cap-add", "CHOWN", "--", "sh", "-c", eff)
    assert int(r.stdout.split()[1], 16) == (1 << 13) | (1 << 0)
    r = nscg("run", "--caps", "docker", "--cap-drop", "CHOWN", "--", "sh", "-c", eff)
    mask = int(r.stdout.split()[1], 16)
    assert mask and not mask & 1


def test_seccomp_profile_file(tmp_path: Path) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile))
    r = nscg("run", "--seccomp", str(path), "--", "sh", "-c", "mkdir /tmp/d")
    assert r.returncode != 0 and b"not permitted" in r.stderr
    r = nscg("run", "--seccomp", "unconfined", "--", "sh", "-c", "mkdir /tmp/d")
    assert r.returncode == 0, r.stderr


def test_keep_upper_keeps_the_writes_and_reports_changes() -> None:
    # (on another filesystem than the lower, the host's /: an upper inside it is refused)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        _keep_upper(Path(d) / "upper")


def test_keep_upper_inside_the_lower_is_refused(tmp_path: Path) -> None:
    r = nscg("run", "--keep-upper", str(tmp_path / "upper"), "--", "true")
    assert r.returncode != 0 and b"inside the lower layer" in r.stderr
    assert not (tmp_path / "upper").exists()


def _keep_upper(upper: Path) -> None:
    # (as root: the upper below a 0700 directory of root is out of reach of the
    # sandbox's root, an unprivileged range; root is host root here, docs/security.md)
    old = ["--uid-map", "0:0:1", "--gid-map", "0:0:1"] if os.geteuid() == 0 else []
    r, doc = nscg_json(
        "run", "--keep-upper", str(upper), *old, "--",
        "sh", "-c", "echo hi > /etc/nscg-cli-test; rm -f /etc/hostname",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert doc["changes"]["added"] == ["/etc/nscg-cli-test"]
    assert "/etc/hostname" in doc["changes"]["deleted"]
    assert (upper / "etc" / "nscg-cli-test").read_text() == "hi\n"
    assert not Path("/etc/nscg-cli-test").exists()


def test_no_init_and_hostname_and_rlimit() -> None:
    r = nscg("run", "--no-init", "--hostname", "h1", "--rlimit", "nofile=64", "--",
             "sh", "-c", "echo $$; hostname; ulimit -n")  # fmt: skip
    assert r.stdout.split() == [b"1", b"h1", b"64"], r.stderr


def test_limits_fail_clearly_on_a_host_without_cgroup_v2_controllers() -> None:
    if discover().mode == CgroupMode.UNIFIED:
        pytest.skip("pure cgroup v2 host: tests/cgroup2 covers the limits")
    r = nscg("run", "--memory", "64M", "--", "true")
    assert r.returncode == 125
    assert b"memory" in r.stderr and b"Traceback" not in r.stderr
    assert len(r.stderr.decode().strip().splitlines()) == 1


def test_exec_enters_a_running_sandbox(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    outer = subprocess.Popen(
        [sys.executable, "-m", "nscg", "run", "--hostname", "inner", "--pid-file", str(pidfile),
         "--", "sh", "-c", "echo sandboxed > /tmp/marker; sleep 60"],
    )  # fmt: skip
    try:
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text().endswith("\n"):
                break
            time.sleep(0.05)
        pid = pidfile.read_text().strip()
        for _ in range(100):  # the payload writes its marker
            r = nscg("exec", "--pid", pid, "--", "cat", "/tmp/marker")
            if r.returncode == 0:
                break
            time.sleep(0.05)
        assert r.stdout == b"sandboxed\n", r.stderr
        r, doc = nscg_json("exec", "--pid", pid, "--", "sh", "-c", "hostname; exit 4")
        assert r.returncode == 4 and doc["status"] == 4
        assert r.stdout == b"inner\n"
    finally:
        outer.terminate()
        outer.wait(30)
    assert not pidfile.exists()


NAMESPACES = ("user", "pid", "mnt", "net", "uts", "ipc", "cgroup")


def _ns_links(out: bytes) -> dict[str, str]:
    return dict(zip(NAMESPACES, out.decode().split(), strict=True))


def test_unshare_none_creates_no_namespace_and_keeps_the_callers_view() -> None:
    links = " ".join(f"/proc/self/ns/{k}" for k in NAMESPACES)
    host = {k: os.readlink(f"/proc/self/ns/{k}") for k in NAMESPACES}
    r = nscg("run", "--unshare", "none", "--", "sh", "-c", f"readlink {links}")
    assert r.returncode == 0, r.stderr
    assert _ns_links(r.stdout) == host
    # only net: the default root follows (no mount namespace, so none)
    script = f"readlink {links}; tail -n +3 /proc/net/dev | cut -d: -f1"
    r = nscg("run", "--unshare", "net", "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    inside = _ns_links(b" ".join(r.stdout.split()[: len(NAMESPACES)]))
    assert {k for k in NAMESPACES if inside[k] != host[k]} == {"net"}
    assert r.stdout.split()[len(NAMESPACES) :] == [b"lo"]
    # a mount option still needs the mount namespace, and says so
    r = nscg("run", "--unshare", "none", "--ro-bind", "/usr", "/usr", "--", "true")
    assert r.returncode == 2 and b"mount namespace" in r.stderr


def test_no_such_pid_is_one_status_and_one_message_for_join_and_exec() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that existed a moment ago (reuse within the test: not on this scale)
    for pid in (str(gone.pid), "999999999"):
        runs = [
            (f"--join {pid}", nscg("run", "--join", pid, "all", "--", "true")),
            (f"--join {pid}", nscg("run", "--join", pid, "net,uts", "--", "true")),
            (f"exec --pid {pid}", nscg("exec", "--pid", pid, "--", "true")),
        ]
        for option, r in runs:
            assert r.returncode == 2, (option, r.stderr)
            assert r.stderr.decode() == f"nscg: {option}: no such process\n"


@pytest.mark.parametrize(
    ("argv", "kwargs"),
    [
        (["--memory", "-5"], {"memory": -5}),
        (["--memory", "-5"], {"memory": "-5"}),
        (["--memory", "lots"], {"memory": "lots"}),
        (["--pids", "-5"], {"pids": -5}),
        (["--pids", "x"], {"pids": "x"}),
        (["--cpus", "-5"], {"cpus": -5}),
        (["--cpus", "0"], {"cpus": 0}),
        (["--limit", "memory_high=-5"], {"memory_high": -5}),
        (["--limit", "cpu_weight=0"], {"cpu_weight": 0}),
    ],
)
def test_cli_and_api_say_the_same_about_a_bad_value(
    argv: list[str], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(api.SpecError) as ei:
        api.Container().with_limits(**kwargs)
    r = nscg("run", *argv, "--", "true")
    assert r.returncode == 2
    assert r.stderr.decode() == f"nscg: {ei.value}\n"

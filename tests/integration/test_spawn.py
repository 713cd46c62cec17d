"""The spawn core against the real kernel: what the sandboxed process sees."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, cast

import pytest

import nscg
from nscg import Container, IdMap, Namespace
from tests.conftest import need_root, run_as_nobody, unprivileged_python

#: The probe's source, passed with -c: the checkout may not be readable inside.
PROBE_CODE = Path(__file__).with_name("probe.py").read_text()
PY = sys.executable
PROBE = [PY, "-c", PROBE_CODE]


def probe(c: Container, **kw: Any) -> dict[str, Any]:
    r = c.run(PROBE, capture_output=True, check=True, **kw)
    out: dict[str, Any] = json.loads(r.stdout or b"")
    return out


def host_ns(kind: str) -> int:
    return os.stat(f"/proc/self/ns/{kind}").st_ino


def test_default_sandbox_isolation() -> None:
    p = probe(Container())
    assert p["pid"] == 2  # pid 1 is the init
    assert p["ppid"] == 1
    assert p["hostname"] == "nscg"
    assert p["links"] == ["lo"]
    assert p["lo_up"] is True
    for kind in ("user", "pid", "mnt", "net", "uts", "ipc", "cgroup"):
        assert p["ns"][kind] != host_ns(kind), kind
    assert p["ns"]["time"] == host_ns("time")
    assert p["uid"] == 0 and p["gid"] == 0
    if os.geteuid() == 0:  # root is not host root: an unprivileged host range
        rr = nscg.namespaces.root_range()
        assert p["uid_map"] == ["0", str(rr.uid), "65536"]
    else:
        assert p["uid_map"] == ["0", str(os.geteuid()), "1"]
    assert p["nnp"] == "1"
    assert p["sid"] == p["pid"]  # a new session, led by the payload
    assert p["fds"][:3] == [0, 1, 2] and max(p["fds"]) <= 3  # 3: the probe's own listdir
    assert set(p["env"]) - {"LC_CTYPE"} == {"PATH", "HOME", "TERM"}  # LC_CTYPE: PEP 538


def test_payload_as_pid1_without_init() -> None:
    p = probe(Container().with_init(False))
    assert p["pid"] == 1


def test_hostname_and_domainname() -> None:
    p = probe(Container().with_hostname("box-1").with_domainname("example.test"))
    assert p["hostname"] == "box-1"
    assert p["domainname"] == "example.test"


def test_ipc_namespace_hides_host_sysv_objects() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x6E736367  # "nscg"
    shmid = libc.shmget(key, 4096, 0o1600)  # IPC_CREAT | 0600
    assert shmid >= 0
    try:
        r = Container().run(["cat", "/proc/sysvipc/shm"], capture_output=True, check=True)
        assert str(key) not in (r.stdout or b"").decode()
        r = (
            Container()
            .without_namespaces("ipc")
            .run(["cat", "/proc/sysvipc/shm"], capture_output=True)
        )
        assert str(key) in (r.stdout or b"").decode()
    finally:
        libc.shmctl(shmid, 0, None)  # IPC_RMID


def test_uid_gid_maps_as_root() -> None:
    need_root()
    c = Container().with_uid_map(IdMap(0, 100000, 65536)).with_gid_map(IdMap(0, 200000, 65536))
    # host uid 101000 runs the probe: an interpreter under a private home is out of its reach
    r = (
        c.without_rootfs()
        .with_user(1000, 1000)
        .run([unprivileged_python(), "-c", PROBE_CODE], capture_output=True, check=True)
    )
    p = json.loads(r.stdout or b"")
    assert p["uid_map"] == ["0", "100000", "65536"]
    assert p["gid_map"] == ["0", "200000", "65536"]
    assert (p["uid"], p["gid"]) == (1000, 1000)
    assert p["groups"] == []
    assert p["env"]["HOME"] == "/"


def test_several_ranges_as_root() -> None:
    need_root()
    c = Container().with_uid_map(IdMap(0, 0, 1), IdMap(1, 100000, 999))
    p = probe(c.with_gid_map(IdMap(0, 0, 1), IdMap(1, 100000, 999)))
    assert p["uid_map"] == ["0", "0", "1", "1", "100000", "999"]


def test_time_namespace_offsets() -> None:
    day = 86400.0
    before = time.clock_gettime(time.CLOCK_MONOTONIC)
    p = probe(Container().with_time_offsets(monotonic=3 * day, boottime=7 * day))
    after = time.clock_gettime(time.CLOCK_MONOTONIC)
    assert before + 3 * day <= p["monotonic"] <= after + 3 * day
    assert p["boottime"] - p["monotonic"] >= 4 * day - 5
    assert p["ns"]["time"] != host_ns("time")
    p = probe(Container().with_time_offsets(monotonic=3 * day).with_init(False))
    assert p["monotonic"] >= before + 3 * day


def test_environment_cwd_rlimit_user_env() -> None:
    c = (
        Container()
        .with_env({"A": "1", "PATH": "/usr/bin:/bin"})
        .with_cwd("/tmp")
        .with_rlimit("nofile", 64, 128)
    )
    p = probe(c)
    p["env"].pop("LC_CTYPE", None)
    assert p["env"] == {"A": "1", "PATH": "/usr/bin:/bin"}
    assert p["cwd"] == "/tmp"
    assert p["nofile"] == [64, 128]


def test_no_namespaces_behaves_like_subprocess() -> None:
    c = Container().without_rootfs().with_namespaces(Namespace.NONE)
    p = probe(c)
    for kind in ("user", "pid", "net", "mnt"):
        assert p["ns"][kind] == host_ns(kind)
    assert p["uid"] == os.getuid()
    r = c.run(["sh", "-c", "exit 3"])
    assert r.returncode == 3


def test_rootless_sandbox_sees_its_own_world() -> None:
    out = run_as_nobody(
        f"""
        import json, subprocess, nscg
        r = nscg.Container().with_hostname("rl").run({PROBE!r}, capture_output=True)
        assert r.returncode == 0, r
        p = json.loads(r.stdout or b"")
        p2 = json.loads(nscg.Container().with_user(65534, 65534).with_time_offsets(monotonic=1000)
            .run({PROBE!r}, capture_output=True, check=True).stdout)
        print(json.dumps([p, p2]))
        """
    )
    p, p2 = out
    assert p["pid"] == 2 and p["hostname"] == "rl"
    assert p["links"] == ["lo"] and p["lo_up"]
    assert p["uid_map"] == ["0", "65534", "1"] and p["gid_map"] == ["0", "65534", "1"]
    assert p["uid"] == 0
    assert p2["uid_map"] == ["65534", "65534", "1"] and p2["uid"] == 65534


def test_rootless_several_ranges_need_newuidmap() -> None:
    out = run_as_nobody(
        """
        import json, nscg
        try:
            nscg.Container().with_uid_map((0, 65534, 1), (1, 100000, 10)).run(["true"])
            print(json.dumps("ran"))
        except nscg.UnsupportedError as e:
            print(json.dumps(["unsupported", str(e)]))
        except nscg.SpawnError as e:
            print(json.dumps(["spawn", str(e)]))
        """
    )
    # newuidmap is installed here but 65534 has no /etc/subuid entry: either
    # way the caller gets a clear, typed error, and nothing ran.
    assert out != "ran"
    assert "newuidmap" in out[1]


def test_executable_not_found_before_clone() -> None:
    with pytest.raises(nscg.ExecutableNotFoundError) as ei:
        Container().run(["definitely-not-a-program-xyz"])
    assert isinstance(ei.value, FileNotFoundError)
    assert isinstance(ei.value, nscg.NscgError)


def test_signal_status_is_negative() -> None:
    assert Container().run(["sh", "-c", "kill -KILL $$"]).returncode == -9
    # without a pid namespace (a pid 1 ignores signals it has no handler for)
    r = Container().without_rootfs().without_namespaces("pid").run(["sh", "-c", "kill -SEGV $$"])
    assert r.returncode == -11 and r.signal == 11


def test_init_forwards_signals_and_reaps_orphans() -> None:
    script = (
        "trap 'echo got-usr1' USR1; trap 'echo got-term; exit 7' TERM; "
        "(sleep 0.05 &); echo ready; while :; do sleep 0.02; done"
    )
    with Container().spawn(["sh", "-c", script], stdout=nscg.PIPE) as proc:
        assert proc.stdout is not None
        assert proc.stdout.read(6) == b"ready\n"
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 7
    assert out is not None and b"got-usr1" in out and b"got-term" in out


def test_process_api() -> None:
    with Container().spawn(["cat"], stdin=nscg.PIPE, stdout=nscg.PIPE, stderr=nscg.DEVNULL) as p:
        assert p.poll() is None
        assert p.fileno() >= 0
        out, err = p.communicate(b"hello", timeout=10)
        assert out == b"hello" and err is None
        assert p.returncode == 0 and p.poll() == 0
        assert p.fileno() == -1
        assert p.usage is not None and p.usage.cpu_total >= 0
    with Container().spawn(["sleep", "10"]) as p:
        with pytest.raises(nscg.TimeoutExpired):
            p.wait(timeout=0.1)
        p.kill()
        assert p.wait() == -9
        p.kill()  # harmless once reaped


def test_run_result_and_check() -> None:
    r = Container().run(["sh", "-c", "echo out; echo err >&2; exit 4"], capture_output=True)
    assert (r.returncode, r.stdout, r.stderr) == (4, b"out\n", b"err\n")
    assert r.wall_time > 0 and r.usage.cpu_total >= 0
    with pytest.raises(nscg.CalledProcessError) as ei:
        Container().run(["false"], check=True)
    assert ei.value.returncode == 1
    r2 = Container().run(["sh", "-c", "echo x >&2"], stdout=nscg.PIPE, stderr=nscg.STDOUT)
    assert r2.stdout == b"x\n"


def test_timeout_kills_whole_sandbox_with_partial_output() -> None:
    marker = f"{os.getpid()}{time.time_ns() % 10**6}"
    script = f"echo partial; (setsid sleep 1000.{marker} &); sleep 1000.{marker}"
    t0 = time.monotonic()
    with pytest.raises(nscg.TimeoutExpired) as ei:
        Container().run(["sh", "-c", script], capture_output=True, timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert ei.value.stdout == b"partial\n"
    assert _wait_gone(marker)


def test_kill_kills_double_forked_daemon() -> None:
    marker = f"{os.getpid()}{time.time_ns() % 10**6}"
    script = f"(setsid sh -c 'sleep 1000.{marker}' &); echo up; sleep 1000.{marker}"
    with Container().spawn(["sh", "-c", script], stdout=nscg.PIPE) as p:
        assert p.stdout is not None and p.stdout.readline() == b"up\n"
        deadline = time.monotonic() + 5
        while len(_pids_with(marker)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(_pids_with(marker)) >= 3
        p.kill()
        p.wait()
    assert _wait_gone(marker)


def test_parent_death_kills_sandbox(tmp_path: Path) -> None:
    marker = f"{os.getpid()}{time.time_ns() % 10**6}"
    code = f"""
import nscg, sys, threading
keep = []
def go():
    p = nscg.Container().spawn(["sh", "-c", "(setsid sleep 1000.{marker} &); sleep 1000.{marker}"])
    keep.append(p)
    print(p.pid, flush=True)
t = threading.Thread(target=go); t.start(); t.join()  # the spawning thread is gone
sys.stdin.read()
"""
    import subprocess

    env = dict(os.environ)

    parent = subprocess.Popen(
        [PY, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip().isdigit()
        deadline = time.monotonic() + 20  # (a loaded machine: two suites at once)
        while len(_pids_with(marker)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(_pids_with(marker)) >= 3, "the sandbox did not survive its spawning thread"
        parent.kill()
        parent.wait()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        assert parent.stdin is not None and parent.stdout is not None
        parent.stdin.close()
        parent.stdout.close()
    assert _wait_gone(marker)


def test_die_with_parent_off_uses_callers_thread() -> None:
    r = Container().with_die_with_parent(False).run(["true"])
    assert r.returncode == 0


def test_clone_fallback_path() -> None:
    from nscg import _spawn

    flag = nscg._native.lib.NSCG_F_FORCE_CLONE_FALLBACK
    p = _spawn.spawn(Container(), PROBE, stdout=nscg.PIPE, _extra_flags=flag)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 0 and json.loads(out or b"")["pid"] == 2


def test_enter_running_sandbox() -> None:
    with Container().with_hostname("inner").spawn(["sleep", "30"]) as box:
        r = box.run_inside(PROBE, capture_output=True)
        assert r.returncode == 0, r.stderr
        p = json.loads(r.stdout or b"")
        assert p["hostname"] == "inner"
        assert p["links"] == ["lo"]
        assert p["pid"] > 2  # a member of the sandbox's pid namespace, not its pid 1
        assert p["ns"]["pid"] == os.stat(f"/proc/{box.pid}/ns/pid_for_children").st_ino
        assert p["ns"]["net"] == os.stat(f"/proc/{box.pid}/ns/net").st_ino
        assert p["uid"] == 0
        box.kill()


def test_join_some_namespaces_and_create_others() -> None:
    with Container().with_hostname("shared").spawn(["sleep", "30"]) as box:
        c = Container().with_hostname(None).joining(box, kinds="user,net,uts")
        try:
            p = probe(c.without_namespaces("uts"))
        finally:
            for r in c.join:
                r.close()
        assert p["hostname"] == "shared"
        assert p["ns"]["net"] == os.stat(f"/proc/{box.pid}/ns/net").st_ino
        assert p["ns"]["pid"] != os.stat(f"/proc/{box.pid}/ns/pid_for_children").st_ino
        assert p["pid"] == 2
        box.kill()


def test_rootless_enter_running_sandbox() -> None:
    out = run_as_nobody(
        f"""
        import json, nscg
        with nscg.Container().with_hostname("rlx").spawn(["sleep", "30"]) as box:
            r = box.run_inside({PROBE!r}, capture_output=True)
            box.kill()
        print(json.dumps([r.returncode, r.stderr.decode(), json.loads(r.stdout or b"null")]))
        """
    )
    rc, err, p = out
    assert rc == 0, err
    assert p["hostname"] == "rlx" and p["uid"] == 0 and p["links"] == ["lo"]


async def _wait_async() -> int:
    with Container().spawn(["sh", "-c", "sleep 0.2; exit 5"]) as p:
        return await p.wait_async()


def test_wait_async() -> None:
    import asyncio

    assert asyncio.run(_wait_async()) == 5


def _pids_with(marker: str) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    out.append(int(d))
        except OSError:
            pass
    return out


def _wait_gone(marker: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pids_with(marker):
            return True
        time.sleep(0.02)
    return False


class _RecordingHook:
    """A parent hook that records what it saw of the waiting child."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.seen: list[tuple[int, int]] = []
        self.undone = 0

    def attach(self, pid: int) -> Any:
        self.seen.append((pid, os.stat(f"/proc/{pid}/ns/net").st_ino))
        if self.fail:
            raise nscg.SyscallError(1, "netlink", "veth0")

        def undo() -> None:
            self.undone += 1

        return undo


def test_parent_hook_runs_while_the_child_waits_and_is_undone_after() -> None:
    import attrs

    hook = _RecordingHook()
    # (no root: a RootFS would ask the network for the sandbox's /etc/hosts)
    c = attrs.evolve(Container().without_rootfs(), network=cast(Any, hook))  # any ParentHook
    r = c.run(["sh", "-c", "readlink /proc/self/ns/net"], capture_output=True, check=True)
    assert len(hook.seen) == 1
    assert (r.stdout or b"").decode().strip() == f"net:[{hook.seen[0][1]}]"
    assert hook.seen[0][1] != host_ns("net")
    assert hook.undone == 1
    bad = _RecordingHook(fail=True)
    with pytest.raises(nscg.SyscallError):
        attrs.evolve(Container().without_rootfs(), network=cast(Any, bad)).run(["true"])
    assert bad.undone == 0 and len(bad.seen) == 1


def test_kill_from_another_thread_while_one_waits() -> None:
    import threading

    with Container().spawn(["sleep", "60"]) as p:
        results: list[int] = []
        waiter = threading.Thread(target=lambda: results.append(p.wait()))
        waiter.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        p.kill()  # must not wait for the waiter's lock
        waiter.join(10)
        assert not waiter.is_alive()
        assert results == [-9]
        assert time.monotonic() - t0 < 5


def test_signal_handler_may_kill_while_the_main_thread_waits() -> None:
    with Container().spawn(["sleep", "60"]) as p:
        old = signal.signal(signal.SIGALRM, lambda *_: p.kill())
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            assert p.wait(timeout=20) == -9
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def test_run_inside_leaves_no_fd() -> None:
    from tests.conftest import open_fds

    with Container().spawn(["sleep", "30"]) as box:
        before = open_fds()
        for _ in range(3):
            assert box.run_inside(["true"]).returncode == 0
        assert open_fds() == before
        box.kill()

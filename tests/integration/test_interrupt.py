"""The lifetime rule under interruption: an exception from a signal handler at
any point of a spawn leaves nothing behind.

From the clone on, nothing leaves a spawn (return, exception, signal) until
every task that shares the caller's memory has exec'd or exited, and every
process of a failed or abandoned spawn is killed and reaped (see
``_spawn._Flight`` and docs/design.md). These tests fire an interval timer
whose handler raises at many delays during spawns of every mode, with slow
and fast mount plans, and check right after each interrupted spawn (without
waiting) that no child, zombie, fd, mount, veth or temporary file remains,
and that the next spawn works.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

import nscg
from nscg import Bridge, Container, Namespace, NetworkHost, RootFS
from nscg import _spawn as sp
from nscg._native import lib
from tests.conftest import children, need_root, open_fds, run_as_nobody


class Boom(Exception):
    """What the test's signal handler raises."""


def _shm() -> set[str]:
    """nscg's temporary files of this process (other processes run suites too)."""
    mine = f"-{os.getpid()}-"
    return {n for n in os.listdir("/dev/shm") if n.startswith("nscg") and mine in n}


def _state() -> tuple[set[int], set[int], set[str]]:
    gc.collect()
    return set(children()), open_fds(), _shm()


def _mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return set(f)


def _no_new_mounts(before: set[str]) -> set[str]:
    """Mounts of the host that were not there before (waiting up to 5 s: other
    test suites on the machine may mount something for a moment)."""
    deadline = time.monotonic() + 5
    while (new := _mounts() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    return new


def slow_root(binds: int = 40) -> RootFS:
    """RootFS.host() and ``binds`` more binds: a mount plan of tens of ms."""
    root = RootFS.host(hide_sockets=False).tmpfs("/mnt")  # (host sockets come and go)
    for i in range(binds):
        root = root.ro_bind("/usr", f"/mnt/b{i}")
    return root


@pytest.fixture
def aborts_with_children(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the guard's aborts that found a child to kill (a test tested something)."""
    seen: list[int] = []
    real = sp._Flight.abort

    def spy(self: Any) -> None:
        if not self.out.settled and (self.out.pid > 0 or self.out.pidfd2 >= 0):
            seen.append(int(self.out.pid))
        real(self)

    monkeypatch.setattr(sp._Flight, "abort", spy)
    return seen


def interrupt_spawns(
    run: Callable[[], object], rounds: int = 24, check: Callable[[], None] | None = None
) -> tuple[int, int]:
    """Run ``run`` ``rounds`` times with a timer whose handler raises at spread delays.

    The delays go from 20 us to 1.5 times a spawn's duration. After each round
    (interrupted or not) the process's children, fds, mounts and /dev/shm
    entries are what they were before, at once. Returns (interrupted, completed).
    """
    run()  # warm: the prepared plan, nscg's own fds and /etc directory
    t0 = time.monotonic()
    run()
    took = time.monotonic() - t0
    before = _state()
    mounts = _mounts()

    def boom(*_: object) -> None:
        raise Boom

    old = signal.signal(signal.SIGALRM, boom)
    hit = done = 0
    try:
        for i in range(rounds):
            delay = 20e-6 + took * 1.5 * i / rounds
            try:
                try:
                    signal.setitimer(signal.ITIMER_REAL, delay)
                    run()
                    done += 1
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except Boom:
                hit += 1
                where = traceback.format_exc()
            else:
                where = "(not interrupted)"
            after = _state()
            at = f"at delay {delay}, interrupted at:\n{where}"
            assert after[0] == before[0], f"children left {after[0] - before[0]} {at}"
            assert after[1] == before[1], (
                "fds left "
                + str({fd: os.readlink(f"/proc/self/fd/{fd}") for fd in after[1] - before[1]})
                + at
            )
            assert after[2] == before[2], f"/dev/shm changed {at}"
            if check is not None:
                check()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    run()  # the next spawn works
    assert not _no_new_mounts(mounts), "mounts left on the host"
    assert hit, "no spawn was interrupted: the test did not test anything"
    return hit, done


def _true(c: Container) -> Callable[[], object]:
    def run() -> None:
        assert c.run(["/bin/true"]).returncode == 0

    return run


# ------------------------------------------------------------- the modes
def test_vfork_style(aborts_with_children: list[int]) -> None:
    c = Container().with_namespaces(Namespace.NONE).without_rootfs().with_new_session(False)
    assert sp._prepare(c).flags & lib.NSCG_F_VFORK
    interrupt_spawns(_true(c), rounds=40)


@pytest.mark.root
def test_pid_namespace_root_slow_plan(aborts_with_children: list[int]) -> None:
    need_root()
    c = Container().with_namespaces("mount,pid,uts,ipc,net").with_rootfs(slow_root())
    interrupt_spawns(_true(c))
    assert aborts_with_children, "no abort found a child to kill"


@pytest.mark.root
def test_pid_namespace_root_fast_plan(aborts_with_children: list[int]) -> None:
    need_root()
    c = Container().with_namespaces("mount,pid").with_rootfs(RootFS.host())
    interrupt_spawns(_true(c), rounds=40)
    assert aborts_with_children, "no abort found a child to kill"


def test_user_namespace_id_maps(aborts_with_children: list[int]) -> None:
    c = Container().with_rootfs(slow_root(20))  # every namespace, the id maps written in C
    interrupt_spawns(_true(c))
    assert aborts_with_children, "no abort found a child to kill"


def test_user_namespace_without_pid_namespace(aborts_with_children: list[int]) -> None:
    # the payload is the first child
    c = Container().with_namespaces("user,mount,net").without_rootfs()
    interrupt_spawns(_true(c), rounds=40)


@pytest.mark.root
def test_network_hooks_leave_no_veth(aborts_with_children: list[int]) -> None:
    need_root()
    with NetworkHost.create() as host, Bridge("10.247.0.0/24", host=host) as br:
        links = sorted(x.name for x in host.netlink().links())
        c = Container().with_network(br.link()).with_rootfs(slow_root(10))

        def no_veth() -> None:
            assert nscg.network.settle(5)  # (leases come back once the pair is gone)
            assert br.attached == 0 and br.leased == 0
            assert sorted(x.name for x in host.netlink().links()) == links
            assert br.ports() == []

        interrupt_spawns(_true(c), rounds=16, check=no_veth)
        assert aborts_with_children, "no abort found a child to kill"


def test_joining_a_running_sandbox(aborts_with_children: list[int]) -> None:
    with Container().spawn(["sleep", "60"]) as box:
        c = Container().entering(box)
        try:
            interrupt_spawns(_true(c), rounds=30)
            assert box.poll() is None  # the sandbox joined is left alone
        finally:
            for ref in c.join:
                ref.close()


def test_spawn_with_pipes(aborts_with_children: list[int]) -> None:
    c = Container().with_rootfs(RootFS.host())

    def run() -> None:
        r = c.run(["/bin/echo", "hi"], capture_output=True)
        assert r.stdout == b"hi\n"

    interrupt_spawns(run, rounds=30)


def test_a_handler_that_does_not_raise_lets_the_spawn_finish() -> None:
    # handlers run during the C wait (Ctrl-C during a slow mount plan) and,
    # when they do not raise, the spawn goes on: a 200 us interval timer
    hits: list[int] = []
    old = signal.signal(signal.SIGALRM, lambda *_: hits.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
        c = Container().with_rootfs(slow_root(20))
        for _ in range(5):
            assert c.run(["/bin/true"]).returncode == 0
        with pytest.raises(nscg.SpawnError) as ei:  # a failure is still reported
            sp.spawn(c, ["/bin/true"], _fault=(nscg.Stage.MOUNTS, 13, -1))
        assert ei.value.stage == nscg.Stage.MOUNTS
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
    assert len(hits) > 20


def test_keyboard_interrupt_during_a_slow_mount_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ctrl-C a third of the way through a slow mount plan: the C wait runs the
    # handler, kills and reaps the sandbox and returns; KeyboardInterrupt
    # comes from there (not after the plan), and nothing is left
    c = Container().with_rootfs(slow_root(300))
    c.run(["/bin/true"])  # (the plan is prepared at the first spawn)
    t0 = time.monotonic()
    c.run(["/bin/true"])
    took = time.monotonic() - t0
    before = _state()
    from_c_wait: list[int] = []
    real = sp._Flight.check_interrupted

    def spy(self: Any) -> None:
        from_c_wait.append(int(self.out.interrupted))
        real(self)

    monkeypatch.setattr(sp._Flight, "check_interrupted", spy)
    old = signal.signal(signal.SIGALRM, signal.default_int_handler)
    try:
        for _ in range(5):  # (a loaded machine may take the signal late)
            signal.setitimer(signal.ITIMER_REAL, took / 3)
            with pytest.raises(KeyboardInterrupt):
                c.run(["/bin/true"])
            if 1 in from_c_wait:
                break
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert 1 in from_c_wait, "the interrupt did not come from the C wait"
    assert _state() == before


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_abort_cut_short_is_finished_by_the_next_spawn(monkeypatch: pytest.MonkeyPatch) -> None:
    # a second handler's exception at the abort's first bytecode: the plan and
    # the stack stay alive (the registry of spawns in flight) while the first
    # child waits for the go-ahead on them; the next spawn kills and reaps it
    c = Container().with_rootfs(slow_root(5))
    c.run(["/bin/true"])
    before = _state()
    real = sp._Flight.abort

    def cut_short(self: Any) -> None:
        raise Boom

    monkeypatch.setattr(sp._Flight, "abort", cut_short)
    with pytest.raises(Boom):  # an id-map failure, on the Python side, after the clone
        sp.spawn(c, ["/bin/true"], _fault=(nscg.Stage.ID_MAPS, 1, -1))
    gc.collect()  # (the guard's __del__ is cut short too)
    assert set(children()) - before[0], "the first child should still wait"
    assert sp._in_flight
    monkeypatch.setattr(sp._Flight, "abort", real)
    assert c.run(["/bin/true"]).returncode == 0  # sweeps first
    assert not sp._in_flight
    assert _state() == before


# ---------------------------------------------------------- rootless
_ROOTLESS = """
import gc, json, os, signal, time
from nscg import Container, RootFS

def kids():
    out = []
    for t in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{t}/children") as f:
            out += [int(x) for x in f.read().split()]
    return sorted(out)

def fds():
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(name))
        except OSError:
            continue
        out.append(int(name))
    return sorted(out)

class Boom(Exception):
    pass

def boom(*_):
    raise Boom

root = RootFS.host().tmpfs("/mnt")
for i in range(15):
    root = root.ro_bind("/usr", f"/mnt/b{i}")
report = {}
for name, c in (("pidns", Container().with_rootfs(root)),
                ("nopidns", Container().with_namespaces("user,mount").without_rootfs()),
                ("fast", Container())):
    c.run(["/bin/true"])
    t0 = time.monotonic()
    c.run(["/bin/true"])
    took = time.monotonic() - t0
    gc.collect()
    fds0, kids0 = fds(), kids()
    signal.signal(signal.SIGALRM, boom)
    hit, bad = 0, []
    for i in range(24):
        delay = 20e-6 + took * 1.5 * i / 24
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, delay)
                c.run(["/bin/true"])
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except Boom:
            hit += 1
        gc.collect()
        if kids() != kids0 or fds() != fds0:
            bad.append([delay, kids(), fds(), fds0])
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    report[name] = {"hit": hit, "bad": bad, "next": c.run(["/bin/true"]).returncode}
print(json.dumps(report))
"""


@pytest.mark.rootless
def test_rootless_interrupted_spawns_leave_nothing() -> None:
    report = run_as_nobody(_ROOTLESS, timeout=240)
    for name, r in report.items():
        assert r["hit"], f"{name}: no spawn was interrupted"
        assert r["bad"] == [], f"{name}: left behind {r['bad']}"
        assert r["next"] == 0


# ------------------------------------------------------ worker threads
def test_signals_during_spawns_in_worker_threads_abort_nothing() -> None:
    # Python runs handlers in the main thread only: a worker's C wait that a
    # signal interrupts goes on; the main thread's handler raises there.
    c = Container().with_rootfs(slow_root(10))
    c.run(["/bin/true"])
    before = _state()
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker() -> None:
        try:
            while not stop.is_set():
                assert c.run(["/bin/true"]).returncode == 0
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    sleeping = [False]  # (raises only where the main thread catches it)

    def boom(*_: object) -> None:
        if sleeping[0]:
            raise Boom

    old = signal.signal(signal.SIGALRM, boom)
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    hit = 0
    try:
        # an interval timer: process-directed SIGALRMs land in every thread
        signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            sleeping[0] = True
            try:
                time.sleep(0.01)
            except Boom:
                hit += 1
            finally:
                sleeping[0] = False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, [str(e) for e in errors]
    assert hit
    assert _state() == before


def test_a_worker_thread_that_raises_after_spawning_leaves_it_owned() -> None:
    # thread exit: a Process outlives the thread that spawned it (the
    # spawner thread cloned it: the parent-death signal does not fire)
    procs: list[nscg.Process] = []

    def worker() -> None:
        procs.append(Container().spawn(["sleep", "60"]))
        raise Boom

    t = threading.Thread(target=worker)
    old_hook = threading.excepthook
    threading.excepthook = lambda args: None
    try:
        t.start()
        t.join(30)
    finally:
        threading.excepthook = old_hook
    with procs[0] as p:
        time.sleep(0.1)
        assert p.poll() is None
    assert p.returncode == -signal.SIGKILL


# ------------------------------------------------------------- asyncio
def test_cancelled_wait_async_leaves_the_sandbox_to_its_process() -> None:
    # like asyncio.subprocess: cancelling a wait does not kill; the Process
    # (here its with block) still owns the sandbox and ends it
    Container().run(["true"])  # (nscg's own fds and /etc directory, made once)
    before = _state()

    async def main() -> int | None:
        with Container().spawn(["sleep", "60"]) as p:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(p.wait_async(), 0.2)
            assert p.poll() is None
            rc = p.returncode
        assert p.returncode == -signal.SIGKILL
        return rc

    assert asyncio.run(main()) is None
    assert _state() == before


def test_cancelled_spawn_in_an_executor_leaves_nothing() -> None:
    # a spawn run in a thread cannot be interrupted; cancelling the task that
    # awaits it leaves run() to finish there: afterwards nothing remains
    c = Container().with_rootfs(slow_root(20))
    c.run(["/bin/true"])
    before = _state()

    async def main() -> int:
        loop = asyncio.get_running_loop()
        cancelled = 0
        for delay in (0.0, 0.001, 0.005, 0.01, 0.02, 0.05):
            fut = loop.run_in_executor(None, c.run, ["/bin/true"])
            try:
                await asyncio.wait_for(fut, delay)
            except asyncio.TimeoutError:
                cancelled += 1
        return cancelled

    assert asyncio.run(main())  # (asyncio.run waits for the executor's threads)
    assert _state() == before


_WAIT_PATH = {"_reap", "_wait_pidfd", "_hold_pidfd", "_let_go", "wait", "communicate"}


def _raise_at_line(n: int) -> Callable[..., Any]:
    """A tracer raising Boom at the ``n``-th line run in the wait path of Process."""
    seen = [0]

    def local(frame: Any, event: str, _arg: object) -> Any:
        if event == "line":
            seen[0] += 1
            if seen[0] == n:
                raise Boom
        return local

    def tracer(frame: Any, event: str, _arg: object) -> Any:
        code = frame.f_code
        ours = code.co_filename.endswith(os.path.join("nscg", "process.py"))
        return local if event == "call" and code.co_name in _WAIT_PATH and ours else None

    return tracer


def test_an_exception_at_any_line_of_a_wait_leaves_no_fd_once_closed() -> None:
    """Each line of Process.wait's path, in turn, raises (as a signal handler can,
    between any two lines): afterwards close() kills, reaps and closes everything.
    Found: an exception right after the pidfd's waiter count went up (as the
    ``with`` block that counted it ended) left the count up, and the pidfd open
    for good (test_interrupt's timer hit it now and then: "fds left {N: pidfd}")."""
    import sys

    c = Container().without_rootfs().with_namespaces("user,pid")
    c.run(["/bin/true"])
    before = _state()
    hits = 0
    for n in range(1, 400):
        proc = c.spawn(["/bin/sleep", "0.05"])
        try:
            sys.settrace(_raise_at_line(n))
            try:
                proc.wait()
            finally:
                sys.settrace(None)
        except Boom:
            hits += 1
            proc.close()
        else:
            proc.close()
            break
        after = _state()
        assert after[0] == before[0], f"children left at line {n}"
        assert after[1] == before[1], f"fds left at line {n}: " + str(
            {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in after[1] - before[1]}
        )
    assert hits >= 5  # the path was walked, line by line, to its end

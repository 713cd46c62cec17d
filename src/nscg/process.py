"""A running sandbox (:class:`Process`) and the outcome of a run (:class:`Result`)."""

from __future__ import annotations

import _thread
import atexit
import contextlib
import enum
import errno
import io
import os
import select
import selectors
import signal as _signal
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any, Generic, Literal, TypeAlias, cast, overload

import attrs

from nscg._native import ffi, lib
from nscg._textmode import checked_input
from nscg.errors import CalledProcessError, SyscallError, TimeoutExpired

if TYPE_CHECKING:
    from typing_extensions import TypeVar, Unpack

    from nscg.cgroups import CgroupUsage, CgroupV2
    from nscg.container import (
        BytesLike,
        Container,
        RunOptions,
        SpawnOptions,
        _CallOptions,
        _RunCallOptions,
    )
    from nscg.rootfs import Changes

    #: a Result's output: ``bytes | None`` unless text mode or capture say more
    _Out_co = TypeVar("_Out_co", bound="str | bytes | None", covariant=True, default="bytes | None")
    #: a Process's pipes: binary unless text mode was asked for
    _S_co = TypeVar("_S_co", str, bytes, covariant=True, default=bytes)
else:  # (typing_extensions costs ~3 ms to import; the defaults matter to type checkers only)
    from typing import TypeVar

    _Out_co = TypeVar("_Out_co", covariant=True)
    _S_co = TypeVar("_S_co", str, bytes, covariant=True)

__all__ = ["Process", "Result", "Stage", "Usage"]

#: a Process in either mode
AnyProcess: TypeAlias = "Process[str] | Process[bytes]"

_CLD_EXITED = 1
_CLD_KILLED = 2
_CLD_DUMPED = 3
_P_PIDFD = 3


class Stage(enum.IntEnum):
    """The setup stage a child failed in (see :class:`nscg.SpawnError`).

    In the order a spawn runs them (their numbers come from ``abi.h``).
    """

    NONE = lib.NSCG_STAGE_NONE
    CLONE = lib.NSCG_STAGE_CLONE
    SIGNALS = lib.NSCG_STAGE_SIGNALS
    PDEATHSIG = lib.NSCG_STAGE_PDEATHSIG
    FDS = lib.NSCG_STAGE_FDS
    ID_MAPS = lib.NSCG_STAGE_ID_MAPS
    WAIT_PARENT = lib.NSCG_STAGE_WAIT_PARENT
    SETNS = lib.NSCG_STAGE_SETNS
    UNSHARE = lib.NSCG_STAGE_UNSHARE
    FORK = lib.NSCG_STAGE_FORK
    HOSTNAME = lib.NSCG_STAGE_HOSTNAME
    DOMAINNAME = lib.NSCG_STAGE_DOMAINNAME
    LOOPBACK = lib.NSCG_STAGE_LOOPBACK
    TIMENS = lib.NSCG_STAGE_TIMENS
    MOUNTS = lib.NSCG_STAGE_MOUNTS
    PIVOT_ROOT = lib.NSCG_STAGE_PIVOT_ROOT
    SETSID = lib.NSCG_STAGE_SETSID
    RLIMITS = lib.NSCG_STAGE_RLIMITS
    CHDIR = lib.NSCG_STAGE_CHDIR
    SETGROUPS = lib.NSCG_STAGE_SETGROUPS
    SETGID = lib.NSCG_STAGE_SETGID
    SETUID = lib.NSCG_STAGE_SETUID
    CAPS = lib.NSCG_STAGE_CAPS
    NO_NEW_PRIVS = lib.NSCG_STAGE_NO_NEW_PRIVS
    SECCOMP = lib.NSCG_STAGE_SECCOMP
    EXEC = lib.NSCG_STAGE_EXEC


@attrs.frozen
class Usage:
    """Resources a finished sandbox used (from the kernel's rusage of the reaped child).

    With a cgroup, CPU time counts every process of the sandbox (daemons too),
    and the peaks come from the cgroup.

    ``max_rss`` is None when the kernel's figure cannot be told from the
    caller's own peak. Every process of a sandbox is started from the caller's
    memory (as ``vfork`` and ``posix_spawn`` start theirs), and at ``execve``
    Linux keeps the peak RSS of the memory the process leaves as a floor of its
    ``ru_maxrss`` (``exec_mmap``). So a reaped ``ru_maxrss`` above the caller's
    own peak when the payload exec'd is the sandbox's; one at or below it may
    be the caller's: ``true`` run from a program holding 300 MB would report
    300 MB. With a cgroup, ``memory_peak`` is the sandbox's own.

    Attributes:
        cpu_user: user CPU time in seconds (the payload and every descendant reaped
            inside the sandbox; the cgroup's ``cpu.stat`` when there is one).
        cpu_system: system CPU time in seconds.
        max_rss: peak resident set size in bytes of the largest process of the
            sandbox (the payload or a descendant), or None when it cannot be
            told from the caller's own peak (above).
        memory_peak: the cgroup's ``memory.peak`` in bytes (None without a cgroup,
            or before Linux 5.19).
        pids_peak: the cgroup's ``pids.peak`` (None without a cgroup, or before 6.13).
        oom_kills: processes the OOM killer killed in the sandbox's cgroup.
        cgroup: the cgroup's full :class:`nscg.cgroups.CgroupUsage` snapshot, or None.
    """

    cpu_user: float = 0.0
    cpu_system: float = 0.0
    max_rss: int | None = None
    memory_peak: int | None = None
    pids_peak: int | None = None
    oom_kills: int = 0
    cgroup: CgroupUsage | None = None

    @property
    def cpu_total(self) -> float:
        """User plus system CPU time, in seconds."""
        return self.cpu_user + self.cpu_system


@attrs.frozen
class Result(Generic[_Out_co]):
    """What :meth:`nscg.Container.run` returns: like :class:`subprocess.CompletedProcess`.

    Generic in its output's type, which follows ``run()``'s arguments:
    ``Result[str]`` for ``capture_output=True, text=True``, ``Result[bytes]``
    for ``capture_output=True``, ``Result[bytes | None]`` (the default) else.

    Attributes:
        args: the argv that ran.
        returncode: exit status, or ``-N`` when the payload was killed by signal N.
        stdout: captured standard output (bytes; str in text mode) or None.
        stderr: captured standard error (bytes; str in text mode) or None.
        wall_time: seconds from spawn to reaping.
        usage: CPU time and peak memory.
        oom_killed: whether the kernel's OOM killer ended the sandbox (cgroup only).
        changes: the filesystem change report (:class:`nscg.Changes`, overlay
            roots only), else None.
    """

    args: tuple[str, ...]
    returncode: int
    stdout: _Out_co = attrs.field(default=None)
    stderr: _Out_co = attrs.field(default=None)
    wall_time: float = 0.0
    usage: Usage = attrs.field(factory=Usage)
    oom_killed: bool = False
    changes: Changes | None = None

    @property
    def signal(self) -> int | None:
        """The signal that killed the payload, or None if it exited."""
        return -self.returncode if self.returncode < 0 else None

    def check_returncode(self) -> None:
        """Raise :class:`nscg.CalledProcessError` if the return code is non-zero."""
        if self.returncode:
            raise CalledProcessError(self.returncode, list(self.args), self.stdout, self.stderr)


#: KiB a reaped ru_maxrss must exceed the caller's peak by to be the sandbox's
#: own (Usage.max_rss): the kernel's RSS counters are per-CPU batched (a few
#: hundred KiB off), and a task on a copy of our memory (a joined pid
#: namespace) touches its own stack pages before its execve.
_RSS_SLACK_KB = 2048

_abandoned: list[AnyProcess] = []
_live: weakref.WeakSet[AnyProcess] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """At interpreter exit, end the sandboxes that die with this process anyway.

    Their kernel-side death is certain (PR_SET_PDEATHSIG); closing them here
    also runs their cleanups: temp dirs of overlay roots and /etc files,
    network links, cgroups.
    """
    for proc in [*_abandoned, *list(_live)]:
        if proc.container.die_with_parent and proc.returncode is None:
            with contextlib.suppress(Exception):
                proc.close()


def reap_abandoned() -> None:
    """Reap sandboxes whose Process object was dropped while they ran."""
    for proc in list(_abandoned):
        try:
            done = proc.poll() is not None
        except OSError:
            done = True
        if done:
            _abandoned.remove(proc)


def _shielded(fn: Any, track: Any = None) -> None:
    """Run ``fn`` where no Python signal handler can raise into it.

    From the main thread: on a thread of its own (handlers run in the main
    thread only), so that a step is never cut in two (a lock taken and not
    released, a lease neither kept nor returned, an fd opened and lost). If the
    wait for it is interrupted, ``fn`` still runs to its end there; ``track``
    gets a callable that waits for that end, for whoever must wait then. Its
    exception is raised here. (``_thread``, not ``threading``: its Event and
    start() are not safe against a handler raising inside them.)
    """
    if threading.get_ident() != threading.main_thread().ident:
        fn()
        return
    errors: list[BaseException] = []
    ended = [False]
    done = _thread.allocate_lock()
    done.acquire()

    def work() -> None:
        try:
            fn()
        except BaseException as e:
            errors.append(e)
        finally:
            ended[0] = True
            done.release()

    def wait_end() -> None:
        while not ended[0]:
            done.acquire(timeout=0.05)

    if track is not None:
        track(wait_end)
    _thread.start_new_thread(work, ())
    done.acquire()
    if errors:
        raise errors[0]


def _thread_key() -> tuple[str, int]:
    """The key of this thread's waits on a pidfd (see ``Process._waiting``)."""
    return ("thread", threading.get_ident())


class Process(Generic[_S_co]):
    """A running sandbox: owns the pidfd of its first process.

    Created by :meth:`nscg.Container.spawn`. The names follow
    :class:`subprocess.Popen` where the meaning is the same. ``kill()`` and
    timeouts end the *whole* sandbox: with a pid namespace, killing its pid 1
    makes the kernel kill every process in it.

    Generic in its pipes' type: a ``Process[str]`` in text mode (``text``,
    ``encoding``, ``errors`` or ``universal_newlines`` given to spawn: its
    pipes are text files and :meth:`communicate` takes and returns ``str``),
    a ``Process[bytes]`` else.

    Use it as a context manager: on exit the sandbox is killed if still running,
    reaped, and every fd closed.
    """

    def __init__(
        self,
        *,
        args: Sequence[str],
        pid: int,
        pidfd: int,
        shared: Any,
        container: Container,
        stdin: IO[bytes] | None,
        stdout: IO[bytes] | None,
        stderr: IO[bytes] | None,
        whole_sandbox_by_pid1: bool,
        process_group: int | None,
        cgroup: CgroupV2 | None = None,
    ) -> None:
        #: The exit status once reaped (negative for a signal), else None.
        self.returncode: int | None = None
        #: The argv.
        self.args: tuple[str, ...] = tuple(args)
        #: The pid of the sandbox's first process, as seen by the caller.
        self.pid = pid
        #: The spec this process was spawned from.
        self.container = container
        #: Pipe ends when PIPE was asked for, else None (text files in text mode).
        # (binary files here; text files once _text_mode wraps them: the
        # casts are to Any because mypy checks this body once for each mode)
        self.stdin: IO[_S_co] | None = cast(Any, stdin)
        self.stdout: IO[_S_co] | None = cast(Any, stdout)
        self.stderr: IO[_S_co] | None = cast(Any, stderr)
        #: Whether the pipes are text (``str``); the codec and error handler then.
        self.text_mode = False
        self.encoding: str | None = None
        self.errors: str | None = None
        #: Resource usage once reaped.
        self.usage: Usage | None = None
        # what the reaping call wrote: kept, so that a reap whose caller was
        # interrupted right after it (a signal handler raising) is not lost
        self._wout = ffi.new("struct nscg_wait_out *")
        self._pidfd = pidfd
        self._shared = shared
        self._lock = threading.RLock()  # re-entrant: signal handlers may call kill()
        #: the waits polling the pidfd (a thread's, or an asyncio task's) and how many
        #: of each: the pidfd stays open while there are any
        self._waiting: dict[object, int] = {}
        self._close_pending = False
        self._started = time.monotonic()  # (spawn() sets the time of its call)
        # the caller's peak RSS (KiB) once the payload had exec'd: the floor of
        # the payload's ru_maxrss (abi.h, nscg_spawn_out.caller_maxrss_kb)
        self._rss_floor_kb = 0
        self._ended: float | None = None
        self._pid1 = whole_sandbox_by_pid1
        self._pgroup = process_group
        self._cleanups: list[Any] = []
        self._cgroup: CgroupV2 | None = cgroup
        _live.add(self)
        self._changes: Changes | None = None
        self._chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        #: killed if dropped unclosed (run()'s own, lost to an exception)
        self._kill_if_dropped = False

    # ------------------------------------------------- for the spawn engine
    @classmethod
    def _from_spawn(
        cls,
        keep: Callable[[Process[Any]], None],
        *,
        args: Sequence[str],
        pid: int,
        pidfd: int,
        shared: Any,
        container: Container,
        files: tuple[IO[bytes] | None, IO[bytes] | None, IO[bytes] | None],
        whole_sandbox_by_pid1: bool,
        process_group: int | None,
        cgroup: CgroupV2 | None,
        cleanups: Sequence[Callable[[], None]],
        kill_if_dropped: bool,
        rss_floor_kb: int,
        started: float | None,
    ) -> Process[Any]:
        """The internal constructor: a spawn hands its sandbox over to a new Process.

        ``keep`` gets the object before it is initialized, so that the spawn's abort
        knows it at once (a signal may cut the initialization short).
        """
        proc: Process[Any] = cls.__new__(cls)
        keep(proc)
        proc.__init__(  # type: ignore[misc]  # (made first: see keep)
            args=args,
            pid=pid,
            pidfd=pidfd,
            shared=shared,
            container=container,
            stdin=files[0],
            stdout=files[1],
            stderr=files[2],
            whole_sandbox_by_pid1=whole_sandbox_by_pid1,
            process_group=process_group,
            cgroup=cgroup,
        )
        proc._cleanups.extend(cleanups)
        proc._kill_if_dropped = kill_if_dropped
        proc._rss_floor_kb = rss_floor_kb
        if started is not None:
            proc._started = started
        return proc

    def _add_cleanup(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the sandbox has been reaped (in the order added)."""
        self._cleanups.append(fn)

    def _set_changes(self, changes: Changes | None) -> None:
        """Record what the sandbox changed in its root (:attr:`Result.changes`)."""
        self._changes = changes

    # ---------------------------------------------------------------- basics
    def fileno(self) -> int:
        """The pidfd (readable once the process has exited); -1 once reaped and closed."""
        return self._pidfd

    @property
    def wall_time(self) -> float:
        """Seconds since spawn (until reaping, once reaped)."""
        end = self._ended if self._ended is not None else time.monotonic()
        return end - self._started

    def __repr__(self) -> str:
        return (
            f"<nscg.Process pid={self.pid} returncode={self.returncode} args={list(self.args)!r}>"
        )

    def _reap(self, block: bool) -> bool:
        """Reap if exited (waiting for it if ``block``); return whether a status is known.

        The lock is never held while blocking: another thread may ``kill()`` or
        ``poll()`` a process that one thread is waiting for (a watchdog), and a
        signal handler may call them too.
        """
        out = self._wout
        # (the reap is tried first: one short C call when the sandbox has
        # ended, as it has when run() gets here; a poll of the pidfd first
        # would be another release of the GIL)
        while True:
            with self._lock:
                if self.returncode is not None:
                    return True
                if self._pidfd < 0:
                    return False
                if out.pid == 0:
                    # (with a status page: read and unmapped by the same call)
                    page = self._shared if self._shared is not None else ffi.NULL
                    r = lib.nscg_reap(self._pidfd, os.WEXITED | os.WNOHANG, out, page)
                    if r == -errno.EINTR:
                        continue
                    if r < 0:
                        raise SyscallError(-r, "waitid", str(self.pid))
                if out.pid != 0:  # reaped (by this call, or one cut short after it)
                    self._finalize(out)
                    return True
                if not block:
                    return False
            self._wait_pidfd(None)

    def _hold_pidfd(self, key: object, *, unreaped: bool = True) -> int:
        """The pidfd, kept open for the wait ``key`` until :meth:`_let_go` (-1: none)."""
        with self._lock:
            if self._pidfd < 0 or (unreaped and self.returncode is not None):
                return -1
            self._waiting[key] = self._waiting.get(key, 0) + 1
            return self._pidfd

    def _let_go(self, key: object) -> None:
        """End a wait of ``key``; the last one closes the pidfd if :meth:`close` asked."""
        with self._lock:
            n = self._waiting.pop(key, 0) - 1
            if n > 0:
                self._waiting[key] = n
            if not self._waiting and self._close_pending:
                self._close_pidfd()

    def _close_or_defer(self) -> None:
        """Close the pidfd now, or when the last wait of another thread or task ends.

        Called with the lock held. This thread's own waits are over whatever
        they counted (a thread that is here is not polling): an exception from a
        signal handler can leave a wait's count up, when it hits between the
        count and the ``finally`` that ends it, and the pidfd then stayed open
        for good (tests/integration/test_interrupt.py, "at any line").
        """
        self._waiting.pop(_thread_key(), None)
        if self._waiting:
            self._close_pending = True
        else:
            self._close_pidfd()

    def _wait_pidfd(self, timeout: float | None) -> None:
        """Block until the pidfd is readable (the process exited) or ``timeout`` passes."""
        key = _thread_key()
        try:
            fd = self._hold_pidfd(key)
            if fd < 0:
                return
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1))
        finally:
            self._let_go(key)

    def _finalize(self, out: Any) -> None:
        """Record the status of the reaped first process; called with the lock held."""
        self._ended = time.monotonic()
        code, status = int(out.code), int(out.status)
        rc = -status if code in (_CLD_KILLED, _CLD_DUMPED) else status
        if self._shared is not None and out.has_status:
            rc = os.waitstatus_to_exitcode(int(out.payload_status))
        self._shared = None  # unmapped by nscg_reap
        maxrss_kb = int(out.maxrss_kb)
        self.usage = Usage(
            cpu_user=out.utime_usec / 1e6,
            cpu_system=out.stime_usec / 1e6,
            max_rss=maxrss_kb * 1024 if maxrss_kb > self._rss_floor_kb + _RSS_SLACK_KB else None,
        )
        try:
            if self._cgroup is not None or self._cleanups:
                ends: list[Any] = []
                try:
                    _shielded(self._end_steps, ends.append)
                except BaseException:
                    # a handler raised while we waited: the steps (on their
                    # own thread) end before the exception leaves the reap
                    if ends:
                        ends[0]()
                    raise
        finally:
            self.returncode = rc
            self._close_or_defer()

    def _end_steps(self) -> None:
        """The cgroup's end and the cleanups (network links, overlay dirs), in order."""
        if self._cgroup is not None:
            self._finish_cgroup()
        for fn in self._cleanups:  # in the order they were added
            try:
                fn()
            except Exception as e:  # cleanup must not hide the status
                warnings.warn(f"nscg: cleanup after {self.pid} failed: {e!r}", stacklevel=3)
        self._cleanups.clear()

    def _finish_cgroup(self) -> None:
        """After the first process is reaped: kill what is left, read usage, remove."""
        cg = self._cgroup
        assert cg is not None
        try:
            cg.kill()
            cu = cg.usage()
            assert self.usage is not None
            self.usage = Usage(
                cpu_user=cu.cpu_user_usec / 1e6,
                cpu_system=cu.cpu_system_usec / 1e6,
                max_rss=self.usage.max_rss,
                memory_peak=cu.memory_peak,
                pids_peak=cu.pids_peak,
                oom_kills=cu.oom_kill,
                cgroup=cu,
            )
        finally:
            cg.close()

    @property
    def cgroup(self) -> CgroupV2 | None:
        """The sandbox's :class:`nscg.cgroups.CgroupV2` (freeze, thaw, usage), or None."""
        return self._cgroup

    def _close_pidfd(self) -> None:
        fd, self._pidfd = self._pidfd, -1
        if fd >= 0:
            os.close(fd)
        page, self._shared = self._shared, None
        if page is not None and self._wout.pid == 0:  # (else unmapped by nscg_reap)
            lib.nscg_unmap_shared(page)

    def poll(self) -> int | None:
        """Return the exit status if the sandbox has ended, else None (never blocks)."""
        self._reap(block=False)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the sandbox's first process to end and return its status.

        Args:
            timeout: seconds to wait, or None for no limit.

        Raises:
            TimeoutExpired: the timeout passed; the sandbox keeps running.
        """
        if self.returncode is not None:
            return self.returncode
        if timeout is not None:
            deadline = time.monotonic() + timeout
            while not self._reap(block=False):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutExpired(list(self.args), timeout)
                self._wait_pidfd(left)
        else:
            self._reap(block=True)
        assert self.returncode is not None
        return self.returncode

    async def wait_async(self) -> int:
        """Wait on the running asyncio loop (through the pidfd) and return the status."""
        import asyncio

        if self.returncode is not None:
            return self.returncode
        loop = asyncio.get_running_loop()
        while not self._reap(block=False):
            fut: asyncio.Future[None] = loop.create_future()

            def ready(f: asyncio.Future[None] = fut) -> None:
                if not f.done():
                    f.set_result(None)

            token = object()  # (a task's: another may wait on this thread meanwhile)
            try:
                fd = self._hold_pidfd(token, unreaped=False)
                if fd < 0:
                    break
                try:
                    loop.add_reader(fd, ready)
                    await fut
                finally:
                    loop.remove_reader(fd)  # (not added: nothing happens)
            finally:
                self._let_go(token)
        assert self.returncode is not None
        return self.returncode

    # --------------------------------------------------------------- signals
    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the sandbox's first process (its init forwards it to the payload).

        Does nothing once the process has been reaped (never hits a recycled pid).
        """
        with self._lock:
            if self.returncode is not None or self._pidfd < 0:
                return
            r = lib.nscg_pidfd_send_signal(self._pidfd, int(sig))
        if r < 0 and r != -3:  # ESRCH: already exited
            raise SyscallError(-r, "pidfd_send_signal", str(self.pid))

    def terminate(self) -> None:
        """Send SIGTERM (forwarded to the payload by the sandbox's init)."""
        self.send_signal(_signal.SIGTERM)

    def kill(self) -> None:
        """Kill the whole sandbox with SIGKILL: every process in it, not just the first.

        With a cgroup, ``cgroup.kill`` kills every process in it; with a pid
        namespace, SIGKILL to its pid 1 makes the kernel kill all of its
        processes; without either, the payload's process group is killed too.
        """
        if self._cgroup is not None and self.returncode is None:
            # every process of the sandbox, even those that left its pid namespace's
            # view or its process group
            with contextlib.suppress(Exception):
                self._cgroup.kill()
        with self._lock:
            if self.returncode is not None or self._pidfd < 0:
                return
            if self._pgroup is not None and not self._pid1:
                # the payload's process group, while the payload (not reaped,
                # so its pid is not reused) is still in it
                with contextlib.suppress(OSError):
                    if os.getpgid(self.pid) == self._pgroup:
                        os.killpg(self._pgroup, _signal.SIGKILL)
            r = lib.nscg_pidfd_send_signal(self._pidfd, _signal.SIGKILL)
        if r < 0 and r != -3:
            raise SyscallError(-r, "pidfd_send_signal", str(self.pid))

    # ----------------------------------------------------------------- I/O
    def _text_mode(self, encoding: str, errors: str) -> None:
        """Make the pipes text files (``encoding``, ``errors``), as subprocess does.

        Called by the spawn, before the Process is handed out.
        """
        self.text_mode, self.encoding, self.errors = True, encoding, errors
        if self.stdin is not None:
            raw = cast("io.RawIOBase", self.stdin)
            self.stdin = cast(
                "IO[_S_co]",
                io.TextIOWrapper(io.BufferedWriter(raw), encoding, errors, write_through=True),
            )
        for name in ("stdout", "stderr"):
            raw = getattr(self, name)
            if raw is not None:
                setattr(self, name, io.TextIOWrapper(io.BufferedReader(raw), encoding, errors))

    def communicate(
        self, input: str | BytesLike | None = None, timeout: float | None = None
    ) -> tuple[_S_co | None, _S_co | None]:
        """Send ``input``, read stdout/stderr to EOF, wait; like ``Popen.communicate``.

        In text mode ``input`` is a ``str`` and the output is ``str`` (decoded,
        universal newlines: ``\\r\\n`` and ``\\r`` become ``\\n``); else bytes.

        Raises:
            SpecError: ``input`` of the wrong kind for the mode.
            TimeoutExpired: the timeout passed (the sandbox keeps running; the
                exception carries the output read so far, as bytes, and a later
                call goes on from there).
        """
        codec = (self.encoding or "", self.errors or "") if self.text_mode else None
        out, err = self._communicate(checked_input(input, codec), timeout)
        return self._decode(out, err)

    def _decode(self, out: bytes | None, err: bytes | None) -> tuple[_S_co | None, _S_co | None]:
        """The output as the caller gets it: decoded (universal newlines) in text mode."""
        if not self.text_mode:
            return cast(Any, out), cast(Any, err)  # (Any: see __init__)
        enc, errs = self.encoding or "", self.errors or ""

        def text(data: bytes | None) -> _S_co | None:
            if data is None:
                return None
            s: Any = data.decode(enc, errs).replace("\r\n", "\n").replace("\r", "\n")
            out: _S_co = s  # (a str: text mode; Any: see __init__)
            return out

        return text(out), text(err)

    def _decoded_if_possible(
        self, out: str | bytes | None, err: str | bytes | None
    ) -> tuple[str | bytes | None, str | bytes | None]:
        """Partial output for a TimeoutExpired: decoded, unless cut inside a character."""
        if isinstance(out, str) or isinstance(err, str):
            return out, err
        try:
            return self._decode(out, err)
        except UnicodeDecodeError:
            return out, err

    def _communicate(
        self, input: bytes | memoryview | None, timeout: float | None
    ) -> tuple[bytes | None, bytes | None]:
        """communicate() on bytes: what the payload wrote, undecoded."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not input and all(
            s is None or s.closed for s in (self.stdin, self.stdout, self.stderr)
        ):  # no pipe to serve: no selector (an epoll fd and objects per run)
            return self._wait_output(deadline, timeout)
        sel = selectors.DefaultSelector()
        inbuf = memoryview(input or b"")
        try:
            names = self._register_pipes(sel, bool(inbuf))
            while sel.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutExpired(list(self.args), timeout or 0.0, *self._output())
                for key, _ev in sel.select(left):
                    fd = int(key.fd)
                    if fd not in names:  # stdin
                        inbuf = self._feed(sel, fd, inbuf)
                        continue
                    data = os.read(fd, 65536)
                    if data:
                        self._chunks[names[fd]].append(data)
                    else:
                        sel.unregister(fd)
                        getattr(self, names[fd]).close()
        finally:
            sel.close()
        return self._wait_output(deadline, timeout)

    def _register_pipes(self, sel: Any, feed: bool) -> dict[int, str]:
        """Register the open pipes with ``sel``; return {fd: "stdout" or "stderr"}."""
        names: dict[int, str] = {}
        if self.stdin is not None and not self.stdin.closed:
            if feed:
                os.set_blocking(self.stdin.fileno(), False)
                sel.register(self.stdin.fileno(), selectors.EVENT_WRITE)
            else:
                self.stdin.close()
        for name in ("stdout", "stderr"):
            s = getattr(self, name)
            if s is not None and not s.closed:
                sel.register(s.fileno(), selectors.EVENT_READ)
                names[s.fileno()] = name
        return names

    def _feed(self, sel: Any, fd: int, inbuf: memoryview) -> memoryview:
        """Write what stdin takes of ``inbuf``; return the rest (stdin closed once all is sent)."""
        try:
            n = os.write(fd, inbuf[:65536])
        except BrokenPipeError:
            n = len(inbuf)
        inbuf = inbuf[n:]
        if not inbuf:
            sel.unregister(fd)
            assert self.stdin is not None
            self.stdin.close()
        return inbuf

    def _wait_output(
        self, deadline: float | None, timeout: float | None
    ) -> tuple[bytes | None, bytes | None]:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            self.wait(left)
        except TimeoutExpired:
            raise TimeoutExpired(list(self.args), timeout or 0.0, *self._output()) from None
        return self._output()

    def _output(self) -> tuple[bytes | None, bytes | None]:
        out = b"".join(self._chunks["stdout"]) if self.stdout is not None else None
        err = b"".join(self._chunks["stderr"]) if self.stderr is not None else None
        return out, err

    # ------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Kill the sandbox if it still runs, reap it, and close every fd. Idempotent."""
        if self.returncode is None and self._pidfd >= 0:
            self.kill()
            self._reap(block=True)
        for s in (self.stdin, self.stdout, self.stderr):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        with self._lock:
            self._close_or_defer()

    def __enter__(self) -> Process[_S_co]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _disown(self) -> None:
        """The spawn that made this object was aborted (see ``_spawn._Flight``).

        Its processes are killed and reaped, and its pidfd and status page
        released, by the spawn's abort: this object must not touch them.
        """
        self._pidfd = -1
        self._shared = None
        self._cgroup = None
        self._cleanups = []
        if getattr(self, "returncode", None) is None:  # (__init__ may have been cut short)
            self.returncode = -_signal.SIGKILL
        _live.discard(self)

    def __del__(self) -> None:
        if getattr(self, "_pidfd", -1) >= 0 and self.returncode is None:
            if getattr(self, "_kill_if_dropped", False):
                # run()'s own, lost between the spawn and its with: nobody
                # will wait for it. Killed and reaped here (or, if that is cut
                # short, at a following spawn)
                _abandoned.append(self)
                with contextlib.suppress(Exception):
                    self.close()
                if self.returncode is not None:
                    _abandoned.remove(self)
                return
            # Like subprocess.Popen: warn, keep the sandbox running, and reap
            # it later (at a following spawn) so it never stays a zombie.
            warnings.warn(
                f"nscg.Process {self.pid} was neither waited for nor closed; it keeps running",
                ResourceWarning,
                stacklevel=1,
            )
            _abandoned.append(self)

    # ------------------------------------------------------------- entering
    @overload
    def exec(
        self,
        argv: Sequence[str],
        *,
        text: Literal[True],
        encoding: str | None = None,
        errors: str | None = None,
        universal_newlines: bool | None = None,
        **options: Unpack[_CallOptions],
    ) -> Process[str]: ...
    @overload
    def exec(
        self,
        argv: Sequence[str],
        *,
        text: Literal[False] | None = None,
        encoding: None = None,
        errors: None = None,
        universal_newlines: Literal[False] | None = None,
        **options: Unpack[_CallOptions],
    ) -> Process[bytes]: ...
    @overload
    def exec(
        self, argv: Sequence[str], **options: Unpack[SpawnOptions]
    ) -> Process[str] | Process[bytes]: ...
    def exec(
        self, argv: Sequence[str], **options: Unpack[SpawnOptions]
    ) -> Process[str] | Process[bytes]:
        """Start another process inside this running sandbox (like ``docker exec``).

        It joins every namespace of the sandbox and keeps the sandbox's user,
        environment and working directory unless ``env``/``cwd`` are given;
        ``options`` are those of :meth:`nscg.Container.spawn`
        (:class:`nscg.SpawnOptions`).
        """
        spec = self.container.entering(self)
        try:
            return spec.spawn(argv, **options)
        finally:  # the child has its own copies of the namespace fds
            for ref in spec.join:
                ref.close()

    @overload
    def run_inside(
        self,
        argv: Sequence[str],
        *,
        capture_output: Literal[True],
        text: Literal[True],
        encoding: str | None = None,
        errors: str | None = None,
        universal_newlines: bool | None = None,
        input: str | None = None,
        **options: Unpack[_RunCallOptions],
    ) -> Result[str]: ...
    @overload
    def run_inside(
        self,
        argv: Sequence[str],
        *,
        capture_output: Literal[True],
        text: Literal[False] | None = None,
        encoding: None = None,
        errors: None = None,
        universal_newlines: Literal[False] | None = None,
        input: BytesLike | None = None,
        **options: Unpack[_RunCallOptions],
    ) -> Result[bytes]: ...
    @overload
    def run_inside(
        self, argv: Sequence[str], **options: Unpack[RunOptions]
    ) -> Result[str | bytes | None]: ...
    def run_inside(
        self, argv: Sequence[str], **options: Unpack[RunOptions]
    ) -> Result[str | bytes | None]:
        """Run a command inside this running sandbox and return its :class:`Result`.

        ``options`` are those of :meth:`nscg.Container.run` (:class:`nscg.RunOptions`).
        """
        spec = self.container.entering(self)
        try:
            return spec.run(argv, **options)
        finally:
            for ref in spec.join:
                ref.close()

    def _result(self, stdout: _S_co | None, stderr: _S_co | None) -> Result[_S_co | None]:
        assert self.returncode is not None
        return Result(
            args=self.args,
            returncode=self.returncode,
            stdout=stdout,
            stderr=stderr,
            wall_time=self.wall_time,
            usage=self.usage or Usage(),
            oom_killed=bool(self.usage and self.usage.oom_kills),
            changes=self._changes,
        )

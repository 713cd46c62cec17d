"""The post-clone protocol and the lifetime rule: what the parent does once the child
exists, per mode, and the guard (:class:`_Flight`) that owns everything of a spawn until
a Process does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from nscg import process as _process_mod
from nscg._native import ffi, lib
from nscg._spawn._errors import _decode_record, _raise_child_error, _read_record, _record_of
from nscg._spawn._hooks import _parent_hooks
from nscg._spawn._idmaps import _write_maps
from nscg._spawn._modes import Mode
from nscg._spawn._plan import _Plan
from nscg._spawn._resolve import _resolve_in_rootfs
from nscg._spawn._stdio import _Fds
from nscg.container import (
    Container,
)
from nscg.errors import (
    SpawnError,
)
from nscg.process import AnyProcess, Process, Stage, _shielded

if TYPE_CHECKING:
    from nscg._spawn import _Run


# ------------------------------------------------ after the clone, per mode
def _after_vfork(flight: _Flight, run: _Run) -> None:
    """VFORK: the clone returned once the payload exec'd; a failure's report is in memory."""
    ce = flight.out.child_err
    if ce.stage:
        if ce.stage == Stage.EXEC and not run.checked:
            # ExecutableNotFoundError if that is why (as if checked first)
            _resolve_in_rootfs(run.c, run.argv[0], run.prep.path_var, run.executable)
        _raise_child_error(_decode_record(ce), run.c, run.path, run.prep.joins)


def _after_in_c(flight: _Flight, run: _Run) -> None:
    """IN_C: the C call wrote the maps and the go-ahead and waited for the exec."""
    if run.flags & lib.NSCG_F_PARENT_MAPS:
        _maps_written(flight, run.c, run.path, run.prep.joins)
    _exec_result(flight, run)


def _after_python_steps(flight: _Flight, run: _Run) -> None:
    """PYTHON_STEPS: our steps while the first child waits, the go-ahead, the wait."""
    if run.flags & lib.NSCG_F_WAIT_PARENT:
        # the first child waits for the go-ahead (on its own stack, in our
        # memory), written here after our steps (from the main thread on a
        # thread of their own: no signal handler cuts a step in two; see
        # process._shielded)
        _shielded(lambda: _parent_steps(flight, run), flight.track_steps)
        flight.close_sync()
    lib.nscg_spawn_wait(flight.p.plan, flight.out)  # aborts the spawn itself if a handler raised
    flight.check_interrupted()
    _exec_result(flight, run)


_AFTER_CLONE: dict[Mode, Callable[[_Flight, _Run], None]] = {
    Mode.VFORK: _after_vfork,
    Mode.IN_C: _after_in_c,
    Mode.PYTHON_STEPS: _after_python_steps,
}


def _exec_result(flight: _Flight, run: _Run) -> None:
    """Raise the child's failure the C wait read, if any (EOF: the payload exec'd)."""
    out = flight.out
    if run.flags & lib.NSCG_F_FORK_PIDNS:
        if out.first_status != 0:
            _raise_child_error(_record_of(out), run.c, run.path, run.prep.joins)
        if out.pidfd2 < 0:
            raise SpawnError(-out.pidfd2, "pidfd_open", Stage.FORK, -1, str(out.pid2))
    rec = _record_of(out)
    if rec is not None:
        _raise_child_error(rec, run.c, run.path, run.prep.joins)


def _maps_written(flight: _Flight, c: Container, path: str, joins: Sequence[Any]) -> None:
    """Raise the failure of the id maps the C call wrote (NSCG_F_PARENT_MAPS), if any."""
    out = flight.out
    if out.maps_err:
        rec = _read_record(flight.err_r) if _child_exited(out.pidfd) else None
        if rec is not None:
            _raise_child_error(rec, c, path, joins)
        what = ("uid_map", "setgroups", "gid_map", "")[min(out.maps_file, 3)]
        where = f"/proc/{out.pid}/{what}" if what else "the go-ahead pipe"
        raise SpawnError(out.maps_err, "write", Stage.ID_MAPS, -1, where)


def _parent_steps(flight: _Flight, run: _Run) -> None:
    """What the caller does while the first child waits for the go-ahead."""
    out = flight.out
    c, path, joins, flags, maps, _fault = (
        run.c,
        run.path,
        run.prep.joins,
        run.flags,
        run.prep.maps,
        run.fault,
    )
    if run.prep.late:
        rec = _read_record(flight.err_r)
        if rec is None or rec[1] != lib.NSCG_STAGE_READY:
            _raise_child_error(rec, c, path, joins)
    try:
        if _fault is not None and _fault[0] == Stage.ID_MAPS:
            raise SpawnError(_fault[1], "write", Stage.ID_MAPS, -1, f"/proc/{out.pid}/uid_map")
        if maps is not None:
            _write_maps(out.pid, *maps)
        cgroup = flight.cgroup
        if cgroup is not None and (
            flags & lib.NSCG_F_FORCE_CLONE_FALLBACK
            or not lib.nscg_clone_features() & lib.NSCG_HAS_CLONE_INTO_CGROUP
        ):
            cgroup.add_pid(out.pid)  # no clone3: placed before it runs on
        for hook in _parent_hooks(c):
            flight.cleanups.append(hook.attach(out.pid))
        os.write(flight.sync_w, b"\x01")
    except OSError:
        # the child died before the go: its own report explains why
        rec = _read_record(flight.err_r) if _child_exited(out.pidfd) else None
        if rec is not None:
            _raise_child_error(rec, c, path, joins)
        raise


# ------------------------------------------------------- the lifetime rule
#: Spawns between their clone and their end (handed over or aborted), by
#: id(out): a guard's weak reference, the plan and out struct it keeps, the
#: pid that made it, and its fd slots.
#: The memory children may use stays alive here even if a guard's abort was
#: itself interrupted (a second signal handler raising at the wrong bytecode);
#: the next spawn aborts what such a dropped guard left (_sweep_flights).
_in_flight: dict[int, tuple[Any, _Plan, Any, int, Any]] = {}


class _Flight:
    """The one guard of a spawn: the lifetime rule, enforced in one place.

    From the clone on, nothing leaves the spawn until every task that shares
    our memory or stack has exec'd or exited, and every process of a failed
    or abandoned spawn is killed and reaped. The C waits abort the spawn
    themselves when a signal handler raises (so they never return while a
    child runs on the plan or a pooled stack); every other way out, any
    exception from the clone to the hand-over, goes through :meth:`abort`,
    which asks C to kill and reap (``nscg_spawn_abort``: pidfds, the pid-1
    pid the kernel stored in the status page) and then closes what Python
    holds. The plan and the stack stay alive (``p``, ``out``, and the
    registry) until then.
    """

    def __init__(self, p: _Plan) -> None:
        self.fds = _Fds()
        self.files: list[Any] = [None, None, None]
        self.cgroup: Any = None
        self.cleanups: list[Callable[[], None]] = []
        self.steps: Callable[[], None] | None = None
        self.proc: AnyProcess | None = None
        self.p = p
        self.pid = os.getpid()  # (a forked copy of this guard owns nothing)
        out = ffi.new("struct nscg_spawn_out *")
        out.pid = out.pidfd = out.pidfd2 = -1
        out.settled = 1  # (nothing to abort before the registration)
        self.out = out
        _in_flight[id(out)] = (weakref.ref(self), p, out, self.pid, self.fds.slot)
        out.settled = 0

    def check_interrupted(self) -> None:
        """Raise what a signal handler raised during a C wait (the spawn is aborted)."""
        if self.out.interrupted:
            exc = getattr(_raised, "exc", None)
            _raised.exc = None
            if exc is None:  # (its handler's exception was lost on the way)
                exc = SpawnError(errno.EINTR, "waitid", Stage.NONE, detail="spawn interrupted")
            raise exc

    @property
    def err_r(self) -> int:
        return int(self.fds.slot[_Fds.ERR_R])

    @property
    def sync_w(self) -> int:
        return int(self.fds.slot[_Fds.SYNC_W])

    def track_steps(self, wait_end: Callable[[], None]) -> None:
        self.steps = wait_end

    def close_sync(self) -> None:
        self.fds.close(_Fds.SYNC_W)

    def close_err(self) -> None:
        self.fds.close(_Fds.ERR_R)

    def process(
        self,
        argv: list[str],
        c: Container,
        pid_ns: bool,
        kill_if_dropped: bool,
        started: float | None = None,
    ) -> AnyProcess:
        """Hand the sandbox over to a new :class:`Process` (see :meth:`done`)."""
        out = self.out
        main_pid, main_fd = (out.pid2, out.pidfd2) if out.pidfd2 >= 0 else (out.pid, out.pidfd)
        shared = None if out.shared == ffi.NULL else out.shared

        def keep(proc: AnyProcess) -> None:  # (made first: abort() knows it at once)
            self.proc = proc

        return Process._from_spawn(
            keep,
            args=argv,
            pid=int(main_pid),
            pidfd=int(main_fd),
            shared=shared,
            container=c,
            files=(self.files[0], self.files[1], self.files[2]),
            whole_sandbox_by_pid1=pid_ns,
            process_group=int(main_pid) if c.new_session else None,
            cgroup=self.cgroup,
            cleanups=self.cleanups,
            kill_if_dropped=kill_if_dropped,
            rss_floor_kb=int(out.caller_maxrss_kb),
            started=started,
        )

    def done(self) -> None:
        """The Process owns the sandbox now: nothing to abort."""
        self.out.settled = 1
        _in_flight.pop(id(self.out), None)

    def abort(self) -> None:
        """Kill and reap every process of this spawn, then release what it holds."""
        out = self.out
        if out.settled or self.pid != os.getpid():
            return
        lib.nscg_spawn_abort(self.p.plan, out)  # children gone: stack and page released
        if self.proc is not None:
            self.proc._disown()
        if self.steps is not None:  # the parent steps' thread: its undos come after it
            self.steps()
        if out.err_closed:
            self.fds.slot[_Fds.ERR_W] = -1  # (closed by the C call)
        self.fds.close_all()
        for f in self.files:
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        _run_cleanups(self.cleanups)
        cgroup, self.cgroup = self.cgroup, None
        if cgroup is not None:
            with contextlib.suppress(Exception):
                cgroup.close()
        out.settled = 1
        _in_flight.pop(id(out), None)

    def __del__(self) -> None:
        # only if abort() itself was cut short, or never reached
        out = getattr(self, "out", None)
        if out is not None and not out.settled:
            self.abort()


def _sweep_flights() -> None:
    """Abort the spawns whose guard was dropped without settling (see _in_flight)."""
    for key, (ref, p, out, pid, slot) in list(_in_flight.items()):
        if ref() is None:
            if not out.settled and pid == os.getpid():
                lib.nscg_spawn_abort(p.plan, out)
                if out.err_closed:
                    slot[_Fds.ERR_W] = -1
                for i in range(_Fds.N):
                    lib.nscg_close(slot + i)
                out.settled = 1
            _in_flight.pop(key, None)


#: the exception a signal handler raised during a C wait, for the waiting thread
_raised = threading.local()


def _keep_raised(exc_type: Any, exc: BaseException | None, tb: Any) -> None:
    _raised.exc = exc


@ffi.def_extern(error=1, onerror=_keep_raised)
def nscg_signal_raised() -> int:
    """Run Python's signal handlers (at this call) for a C wait; 1 if one raised.

    Called by the C spawn when a wait returned EINTR. CPython runs pending
    handlers when a Python function starts, so a handler's exception is
    raised here, kept by ``_keep_raised``, and the C call aborts the spawn.
    """
    return 0


def _run_cleanups(cleanups: list[Callable[[], None]]) -> None:
    for fn in reversed(cleanups):
        with contextlib.suppress(Exception):
            fn()
    cleanups.clear()


def _child_exited(pidfd: int) -> bool:
    """Whether the child has exited (waits a little: it is on its way out)."""
    import select

    return bool(select.select([pidfd], [], [], 1.0)[0])


def _abandoned_pending() -> bool:
    return bool(_process_mod._abandoned)
